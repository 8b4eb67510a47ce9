"""
Plugs over a descriptor that carries one frame per datagram: AF_UNIX
datagram and seqpacket sockets, UDP, and (later) tap devices.

The reactor sees the plug itself as a reader/writer.  Reads drain the socket
in batches until it would block, which matters for throughput; writes that
would block are queued briefly (pausing the registered producer) and
dropped and counted beyond that, so a slow peer never blocks the reactor.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from collections import deque
from typing import Any

from twisted.internet.interfaces import IReactorFDSet, IReadWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import PlugLost
from vdetwist.interfaces import IVdePlug
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, ReaderPlug

#: Read this many datagrams at most per readiness event, so that one busy
#: plug cannot starve the others.
READ_BATCH = 256

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


@implementer(IVdePlug, IReadWriteDescriptor)
class DatagramPlug(ReaderPlug):
    """
    A plug over a connected (or connect-on-first-send) datagram socket.

    @ivar peer: where to connect on the first send of an unconnected socket,
        as libvdeplug4's ptp and udp plugs do; C{None} for sockets that are
        connected already.
    @ivar queueLimit: how many frames may wait for a busy peer.
    """

    queueLimit = 64

    def __init__(
        self,
        reactor: IReactorFDSet,
        sock: socket.socket,
        description: str,
        peer: Any = None,
    ) -> None:
        super().__init__(reactor, description)
        self.socket = sock
        self.peer = peer
        self.connected = peer is None
        self._fileno = sock.fileno()
        self._queue: deque[bytes] = deque()
        # Whether a full queue paused the producer: it is resumed once the
        # queue drains, however many writability events that takes.
        self._throttled = False
        # The hot path of an already connected socket is the bare send.
        self._transmit = sock.send if peer is None else self._connectingSend
        sock.setblocking(False)

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return self.description

    def doRead(self) -> None:
        recv = self.socket.recv
        deliver = self.receiver.frameReceived
        received = 0
        try:
            for _ in range(READ_BATCH):
                try:
                    frame = recv(VDE_ETHBUFSIZE + 1)
                except BlockingIOError:
                    return
                except OSError as e:
                    self._receiveFailed(e)
                    return
                size = len(frame)
                if size < ETH_HDRLEN or size > VDE_ETHBUFSIZE:
                    if size == 0:
                        self._emptyDatagram()
                        if self.closed:
                            return
                    continue
                received += 1
                deliver(frame)
                if self.paused or self.closed:
                    return
        finally:
            self.stats.received += received

    def _receiveFailed(self, error: OSError) -> None:
        # ECONNREFUSED and friends report an earlier send to a gone peer;
        # they do not end the plug.  Anything else does, with the reason
        # logged by whoever receives plugClosed.
        if error.errno not in (errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE):
            self._lost(
                Failure(PlugLost(f"{self.description}: receive failed: {error.strerror}"))
            )

    def _emptyDatagram(self) -> None:
        """
        A zero-length datagram is libvdeplug4's "forget me" signal: drop the
        association so the next send reconnects.
        """
        if self.peer is not None and self.connected:
            disconnect(self.socket)
            self.connected = False

    def send(self, frame: bytes) -> None:
        # (Not an empty datagram either: that is libvdeplug4's "forget me",
        # and a seqpacket peer's end of connection.)
        if self._queue or not ETH_HDRLEN <= len(frame) <= VDE_ETHBUFSIZE:
            self._enqueue(frame)
            return
        try:
            self._transmit(frame)
        except BlockingIOError:
            self._enqueue(frame)
        except OSError as e:
            self._sendFailed(e)
        else:
            self.stats.sent += 1

    def _sendFailed(self, error: OSError) -> None:
        """
        A frame could not be sent (the peer is gone, or not there yet): it
        is dropped and counted.
        """
        self.stats.dropped += 1

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

    def _enqueue(self, frame: bytes) -> None:
        # An unconnected socket is always "writable", so waiting for
        # writability would spin: drop instead, as the C plugs do.
        if (
            len(self._queue) >= self.queueLimit
            or not self.connected
            or not ETH_HDRLEN <= len(frame) <= VDE_ETHBUFSIZE
        ):
            self.stats.dropped += 1
            return
        self._queue.append(frame)
        if len(self._queue) == 1:
            self.reactor.addWriter(self)
        if len(self._queue) == self.queueLimit and self.producer is not None:
            self._throttled = True
            self.producer.pauseProducing()

    def doWrite(self) -> None:
        queue = self._queue
        while queue:
            try:
                self._transmit(queue[0])
            except BlockingIOError:
                return
            except OSError as e:
                self._sendFailed(e)
                if self.closed:
                    return
            else:
                self.stats.sent += 1
            queue.popleft()
        self.reactor.removeWriter(self)
        if self._throttled:
            self._throttled = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor gave up on the descriptor (an error in doRead/doWrite).
        """
        self._lost(Failure(PlugLost(f"{self.description}: {reason.getErrorMessage()}")))

    def _release(self) -> None:
        self.reactor.removeReader(self)
        self.reactor.removeWriter(self)
        self._queue.clear()
        self.socket.close()
        self._fileno = -1

