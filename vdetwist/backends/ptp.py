"""
C{ptp://PATH}: a point-to-point cable over an AF_UNIX datagram pair, wire
compatible with libvdeplug4 4.0.1 (the installed C version).

Both ends open the same VNL.  The first binds PATH and sends to PATH+, the
second connects to PATH and binds PATH+.  A zero-length datagram dissolves
the association so the next send reconnects.
"""

from __future__ import annotations

import errno
import os
import socket

from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist._transport.dgram import DatagramPlug
from vdetwist.errors import VdeError, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.reference import SchemeReference
from vdetwist._transport.sockets import removeStale, setOwnership, unlinkQuietly

REFERENCE = SchemeReference(
    scheme="ptp",
    synopsis="ptp://PATH",
    description=(
        "A point-to-point cable over AF_UNIX datagram sockets, wire compatible with "
        "libvdeplug4 4.0.1: both ends open the same VNL; the first binds PATH, the "
        "second binds PATH+ and connects to PATH. PATH is taken as written."
    ),
    examples=(
        ("vde_plug ptp:///tmp/cable switch:///tmp/sw", "(a command) one end, on a switch"),
    ),
    manual="libvdeplug_ptp",
)


class PtpPlug(DatagramPlug):
    def __init__(self, reactor, sock, description, peer, ownPath):
        super().__init__(reactor, sock, description, peer)
        self.ownPath = ownPath

    def _release(self) -> None:
        super()._release()
        unlinkQuietly(self.ownPath)


def _bindFirst(sock: socket.socket, path: str) -> None:
    removeStale(path)
    sock.bind(path)


def _bindSecond(sock: socket.socket, path: str) -> None:
    sock.connect(path)
    removeStale(path + "+")
    sock.bind(path + "+")


def openPtp(reactor, path: str, description: str, mode: int, group) -> PtpPlug:
    """
    Take the first free role of the pair at C{path}.
    """
    failures = []
    for bind, peer, own in (
        (_bindFirst, path + "+", path),
        (_bindSecond, path, path + "+"),
    ):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            bind(sock, path)
        except (OSError, VdeError) as e:
            sock.close()
            failures.append(e.errno or errno.EIO)
            continue
        setOwnership(own, mode, group)
        plug = PtpPlug(reactor, sock, description, peer, own)
        # The second end is connected from the start (C does the same); the
        # first connects to PATH+ on its first send.
        plug.connected = bind is _bindSecond
        return plug
    if failures[0] == errno.EADDRINUSE:
        raise VdeError(f"both ends of {path} are taken", errno.EADDRINUSE)
    raise VdeError(f"cannot bind {path}: {os.strerror(failures[0])}", failures[0])


@implementer(IPlugin, IVdeBackend)
class PtpBackend:
    schemes = ("ptp",)
    summary = "point-to-point cable over an AF_UNIX datagram socket pair (vdeplug4 4.0.1)"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        if not vnl.argument:
            raise VNLError(vnl.text, "", "ptp:// needs a socket path, e.g. ptp:///tmp/cable")
        return succeed(openPtp(reactor, vnl.argument, vnl.text, args.mode, args.group))
