"""
C{seqpacket://FD}: an inherited descriptor, typically one end of a
C{socketpair(AF_UNIX, SOCK_SEQPACKET)} made by a parent process; one frame
per packet.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist._transport.dgram import DatagramPlug
from vdetwist.errors import PlugClosed, VdeError, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.reference import SchemeReference
from vdetwist.vnl import strtol

REFERENCE = SchemeReference(
    scheme="seqpacket",
    synopsis="seqpacket://FD",
    description=(
        "An inherited descriptor, usually one end of a `socketpair(AF_UNIX, "
        "SOCK_SEQPACKET)` made by a parent process: one frame per packet. FD is "
        "read as C's `strtol(FD, NULL, 0)` reads it (`0x10` is 16)."
    ),
    examples=(("seqpacket://3", "descriptor 3"),),
)

class SeqpacketPlug(DatagramPlug):
    def _emptyDatagram(self) -> None:
        # On a seqpacket socket an empty read is the peer hanging up.
        self._lost(Failure(PlugClosed(f"{self.description}: peer closed")))


@implementer(IPlugin, IVdeBackend)
class SeqpacketBackend:
    schemes = ("seqpacket",)
    summary = "an inherited SOCK_SEQPACKET (or datagram) descriptor, one frame per packet"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        fd = strtol(vnl.argument)[0]
        if fd < 0:
            raise VNLError(vnl.text, vnl.argument, "the descriptor number must not be negative")
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise VdeError(
                f"descriptor {fd} is not an open socket ({e.strerror})",
                e.errno or errno.EBADF,
            ) from None
        return succeed(SeqpacketPlug(reactor, sock, vnl.text))
