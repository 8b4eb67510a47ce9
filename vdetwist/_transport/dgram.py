"""
Plugs over a socket that carries one frame per datagram: AF_UNIX datagram
and seqpacket sockets, and UDP.

The reactor sees the plug itself as a reader/writer (see
L{vdetwist._transport.fdplug}): reads drain the socket in batches until it
would block; writes that would block are queued briefly (pausing the
registered producer) and dropped and counted beyond that, so a slow peer
never blocks the reactor.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from typing import Any, Callable

from twisted.internet.interfaces import IReactorFDSet
from zope.interface import implementer

from vdetwist._transport.fdplug import QueuedFdPlug
from vdetwist._transport.vnet import (
    SOFTWARE_OFFLOADS,
    VNET_FRAME_MAX,
    VNET_FRAME_MIN,
    enlargeBuffers,
    sendVnetFrame,
    DeliveryCache,
)
from vdetwist.interfaces import IVdePlug, IVnetPlug
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE
from vdetwist.wire.vnethdr import PLAIN

_libc = ctypes.CDLL(None, use_errno=True)


def disconnect(sock: socket.socket) -> None:
    """
    Dissolve a datagram socket's association (C{connect} with AF_UNSPEC),
    which Python's socket module cannot express.
    """
    unspec = ctypes.create_string_buffer(16)
    if _libc.connect(sock.fileno(), unspec, 16) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"disconnect: {errno.errorcode.get(err, err)}")


@implementer(IVdePlug)
class DatagramPlug(QueuedFdPlug):
    """
    A plug over a connected (or connect-on-first-send) datagram socket.

    @ivar peer: where to connect on the first send of an unconnected socket,
        as libvdeplug4's ptp and udp plugs do; C{None} for sockets that are
        connected already.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        sock: socket.socket,
        description: str,
        peer: Any = None,
    ) -> None:
        # The hot path of an already connected socket is the bare send.
        super().__init__(
            reactor, description, sock.fileno(), sock.recv,
            sock.send if peer is None else self._connectingSend,
        )
        self.socket = sock
        self.peer = peer
        self.connected = peer is None
        sock.setblocking(False)

    def _unusual(self, frame: bytes) -> bool:
        if frame:
            return super()._unusual(frame)
        self._emptyDatagram()
        return False

    def _emptyDatagram(self) -> None:
        """
        A zero-length datagram is libvdeplug4's "forget me" signal: drop the
        association so the next send reconnects.
        """
        if self.peer is not None and self.connected:
            disconnect(self.socket)
            self.connected = False

    def _connectingSend(self, frame: bytes) -> None:
        """
        Send, connecting to C{peer} first if the socket is not connected
        (yet, or any more).
        """
        try:
            self.socket.send(frame)
        except OSError as e:
            if self.connected or e.errno not in (errno.ENOTCONN, errno.EDESTADDRREQ):
                raise
            self.socket.connect(self.peer)
            self.connected = True
            self.socket.send(frame)

    def _canWait(self) -> bool:
        # An unconnected socket is always "writable", so waiting for
        # writability would spin: drop instead, as the C plugs do.
        return self.connected

    def _closeDescriptor(self, fd: int) -> None:
        self.socket.close()


@implementer(IVnetPlug)
class VnetDatagramPlug(DatagramPlug):
    """
    A L{DatagramPlug} whose every datagram, both ways, is a vnet frame:
    the link between two of our processes once they have agreed on it (see
    L{vdetwist.vde2.server}).  Super-frames cross it whole, so it accepts
    every offload that software segmentation can undo, and leaves that to
    whoever finally needs plain frames.  Combine it with a subclass of
    L{DatagramPlug} (C{class P(VnetDatagramPlug, ThatPlug)}).
    """

    offloads = SOFTWARE_OFFLOADS
    readSize = VNET_FRAME_MAX + 1
    minFrame = VNET_FRAME_MIN
    maxFrame = VNET_FRAME_MAX

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        enlargeBuffers(self.socket)
        self._deliveries = DeliveryCache(self._badSent)

    def _delivery(self) -> Callable[[bytes], None]:
        return self._deliveries(self.receiver)

    def send(self, frame: bytes, smallest: int = ETH_HDRLEN,
             largest: int = VDE_ETHBUFSIZE) -> None:
        if smallest <= len(frame) <= largest:
            self.sendCheckedVnet(PLAIN + frame)
        else:
            self.stats.dropped += 1

    def sendVnet(self, frame: bytes) -> None:
        sendVnetFrame(frame, self.offloads, self.sendCheckedVnet, self.send, self._badSent)

    def sendCheckedVnet(self, frame: bytes) -> None:
        """
        Send a vnet frame as it is, its header already checked
        (L{vdetwist.wire.gso.checkSuperFrame}) and needing no more than
        L{offloads}: what a node's port sends (L{vdetwist.node.node.Port}
        checked it at the ingress), so a super-frame is parsed once per
        process, not twice.
        """
        DatagramPlug.send(self, frame, VNET_FRAME_MIN, VNET_FRAME_MAX)
