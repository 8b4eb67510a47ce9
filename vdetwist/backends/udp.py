"""
C{udp://[SRC:]SPORT->DST:DPORT}: a point-to-point cable, one raw frame per
UDP datagram, IPv4 or IPv6, as libvdeplug4's udp plug.

The socket accepts datagrams from anybody until its first send connects it
to DST; from then on the kernel only delivers DST's datagrams.  IPv6
literals may be written bare (C{::1:6000}, split at the last colon, as in C)
or, more readably, in brackets (C{[::1]:6000}), which the C plug rejects.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet.threads import deferToThreadPool
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist._transport.dgram import DatagramPlug
from vdetwist.errors import VdeError, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.reference import SchemeReference

REFERENCE = SchemeReference(
    scheme="udp",
    synopsis="udp://[SRC:]SPORT->DST:DPORT",
    description=(
        "A point-to-point cable, one frame per UDP datagram, IPv4 or IPv6: bound "
        "to SRC:SPORT (SRC empty: any), sending to DST:DPORT. Until its first send the "
        "socket takes datagrams from anybody; from then on only DST's. Quote the "
        "`>` in a shell."
    ),
    examples=(
        ("udp://5000->10.0.0.2:5000", "one end; the other is `udp://5000->10.0.0.1:5000`"),
        ("udp://[::1]:6000->[::1]:6001", "IPv6 literals in brackets"),
    ),
    differences=(
        "IPv6 literals may be bracketed (`[::1]:6000`), which C rejects; bare ones "
        "(`::1:6000`, split at the last colon) work as in C.",
    ),
    manual="libvdeplug_udp",
)


def _splitHostPort(text: str) -> tuple[str, str]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def parseUdp(vnl) -> tuple[str, str, str, str]:
    """
    C{(srcHost, srcPort, dstHost, dstPort)}; an empty source host means the
    wildcard address.
    """
    source, arrow, destination = vnl.argument.partition("->")
    if not arrow:
        raise VNLError(vnl.text, vnl.argument, "expected udp://[SRC:]SPORT->DST:DPORT")
    if ":" not in destination:
        raise VNLError(vnl.text, destination, "the destination needs HOST:PORT")
    dstHost, dstPort = _splitHostPort(destination)
    srcHost, srcPort = _splitHostPort(source) if ":" in source else ("", source)
    return srcHost, srcPort, dstHost, dstPort


def openUdp(vnl) -> tuple[socket.socket, tuple]:
    """
    Resolve and bind (blocking: runs in a thread), as the C plug does with
    getaddrinfo; any failure is ECONNABORTED, with the reason in the message.
    """
    srcHost, srcPort, dstHost, dstPort = parseUdp(vnl)
    try:
        family, _, _, _, dst = socket.getaddrinfo(
            dstHost, dstPort, type=socket.SOCK_DGRAM
        )[0]
        # (host, port, ...): the families resolved here are IPv4 and IPv6.
        local: tuple = socket.getaddrinfo(
            srcHost or None, srcPort or "0", family, socket.SOCK_DGRAM,
            flags=socket.AI_PASSIVE,
        )[0][4]
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as e:
        raise VdeError(f"cannot resolve: {e}", errno.ECONNABORTED) from None
    try:
        sock.bind(local)
    except OSError as e:
        sock.close()
        raise VdeError(
            f"cannot bind {local[0]} port {local[1]}: {e.strerror}",
            errno.ECONNABORTED,
        ) from None
    return sock, dst


@implementer(IPlugin, IVdeBackend)
class UdpBackend:
    schemes = ("udp",)
    summary = "point-to-point cable over UDP, one frame per datagram (IPv4/IPv6)"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        parseUdp(vnl)  # syntax errors are reported at once, not from a thread
        opening = deferToThreadPool(reactor, reactor.getThreadPool(), openUdp, vnl)
        return opening.addCallback(
            lambda opened: DatagramPlug(reactor, opened[0], vnl.text, peer=opened[1])
        )
