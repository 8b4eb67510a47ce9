"""
An in-memory L{vdetwist.slirp.hostapi.IHost} for tests: every connect,
socket and listener is recorded, and the test plays the host's side.
"""

from __future__ import annotations

import errno
from typing import Optional

from zope.interface import implementer

from vdetwist.slirp.hostapi import (
    IDatagramSocket, IHost, IListening, IPendingConnect, IStream,
)
from vdetwist.wire.checksum import BytesLike


@implementer(IStream, IPendingConnect)
class MemoryStream:
    """
    A host connection the test drives (and, for the engine, the pending
    connect that becomes it).

    @ivar written: the bytes the engine wrote.
    @ivar bufferLimit: when set, writes beyond this many unread bytes make
        the stream call the handler's C{pauseWriting}; L{consume} reads and
        resumes.
    """

    def __init__(self, host: "MemoryHost", target: tuple, handler) -> None:
        self.host = host
        self.target = target
        self.handler = handler
        self.written = bytearray()
        self.unread = 0
        self.bufferLimit: Optional[int] = None
        self.writePaused = False
        self.eof = False
        self.closed = False
        self.aborted = False
        self.readingPaused = False
        self.lost = False
        self.cancelled = False

    # IStream (called by the engine)
    def write(self, data: BytesLike) -> None:
        assert not self.eof and not self.closed and not self.aborted, "write after close"
        self.written += data
        self.unread += len(data)
        if (self.bufferLimit is not None and self.unread > self.bufferLimit
                and not self.writePaused):
            self.writePaused = True
            self.handler.pauseWriting()

    def writeEOF(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pauseReading(self) -> None:
        self.readingPaused = True

    def resumeReading(self) -> None:
        self.readingPaused = False

    # IPendingConnect
    def cancel(self) -> None:
        self.cancelled = True

    # the test's side
    def accept(self) -> None:
        self.handler.connected(self)

    def refuse(self, code: int = errno.ECONNREFUSED) -> None:
        self.handler.connectFailed(code)

    def send(self, data: bytes) -> None:
        self.handler.dataReceived(data)

    def sendEOF(self) -> None:
        self.handler.readEOF()

    def lose(self, clean: bool = True) -> None:
        self.lost = True
        self.handler.connectionLost(clean)

    def consume(self, count: Optional[int] = None) -> None:
        """
        The host peer reads C{count} (default: all) bytes.
        """
        self.unread -= self.unread if count is None else min(count, self.unread)
        if self.writePaused and (self.bufferLimit is None or self.unread <= self.bufferLimit // 2):
            self.writePaused = False
            self.handler.resumeWriting()


@implementer(IDatagramSocket)
class MemoryDatagramSocket:
    def __init__(self, host: "MemoryHost", family: int, handler, bound=None,
                 rewritesIdentifier: bool = False) -> None:
        self.host = host
        self.family = family
        self.handler = handler
        self.bound = bound
        self.rewritesIdentifier = rewritesIdentifier
        self.sent: list[tuple[bytes, tuple]] = []
        self.closed = False

    def sendto(self, data: bytes, address: tuple) -> None:
        assert not self.closed
        self.sent.append((bytes(data), tuple(address)))

    def close(self) -> None:
        self.closed = True

    def deliver(self, data: bytes, address: tuple) -> None:
        self.handler.datagramReceived(data, address)


@implementer(IListening)
class MemoryListener:
    def __init__(self, host: "MemoryHost", key: tuple, onAccept) -> None:
        self.host = host
        self.key = key
        self.onAccept = onAccept
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def connectFrom(self, peer: tuple) -> tuple[MemoryStream, object]:
        """
        A client at C{peer} connects: returns its stream and the handler
        the engine gave it (C{None}: refused).
        """
        stream = MemoryStream(self.host, ("accepted",) + self.key, None)
        handler = self.onAccept(stream, peer)
        stream.handler = handler
        return stream, handler


@implementer(IHost)
class MemoryHost:
    """
    @ivar autoAccept: connects succeed at once.
    @ivar pingRewrites: ICMP sockets behave as datagram ping sockets.
    """

    def __init__(self, autoAccept: bool = False) -> None:
        self.autoAccept = autoAccept
        self.pingRewrites = True
        self.streams: list[MemoryStream] = []
        self.udpSockets: list[MemoryDatagramSocket] = []
        self.icmpSockets: list[MemoryDatagramSocket] = []
        self.listeners: dict[tuple, object] = {}
        self.busy: set[tuple] = set()
        self.failSockets = False

    def connect(self, target: tuple, handler) -> MemoryStream:
        stream = MemoryStream(self, target, handler)
        self.streams.append(stream)
        if self.autoAccept:
            stream.accept()
        return stream

    def openUDP(self, family: int, handler) -> MemoryDatagramSocket:
        if self.failSockets:
            raise OSError(errno.EMFILE, "too many open files")
        sock = MemoryDatagramSocket(self, family, handler)
        self.udpSockets.append(sock)
        return sock

    def openICMP(self, family: int, handler) -> MemoryDatagramSocket:
        if self.failSockets:
            raise OSError(errno.EPERM, "not permitted")
        sock = MemoryDatagramSocket(self, family, handler, rewritesIdentifier=self.pingRewrites)
        self.icmpSockets.append(sock)
        return sock

    def listenTCP(self, address: str, port: int, onAccept) -> MemoryListener:
        key = ("tcp", address, port)
        if key in self.busy:
            raise OSError(errno.EADDRINUSE, "address in use")
        listener = MemoryListener(self, key, onAccept)
        self.listeners[key] = listener
        return listener

    def listenUDP(self, address: str, port: int, handler) -> MemoryDatagramSocket:
        key = ("udp", address, port)
        if key in self.busy:
            raise OSError(errno.EADDRINUSE, "address in use")
        sock = MemoryDatagramSocket(self, 4, handler, bound=(address, port))
        self.listeners[key] = sock
        return sock
