"""
The host side of the slirp engine on a Twisted reactor: TCP/UNIX
connections and commands as streams with producer/consumer flow control
both ways, UDP ports, ICMP echo sockets, and the listeners of the forwards.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Optional

from twisted.internet.abstract import FileDescriptor
from twisted.internet import error as terror
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol, connectionDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist._transport.fdplug import HARMLESS, READ_BATCH, FdReader
from vdetwist.slirp.hostapi import (
    IDatagramSocket, IHost, IListening, IPendingConnect, IStream, IStreamHandler,
)
from vdetwist.wire.checksum import BytesLike

log = Logger()

CONNECT_TIMEOUT = 75


def _errno(reason) -> int:
    value = reason.value
    if isinstance(value, terror.ConnectionRefusedError):
        return errno.ECONNREFUSED
    if isinstance(value, terror.NoRouteError):
        return errno.EHOSTUNREACH
    if isinstance(value, (terror.TCPTimedOutError, terror.TimeoutError)):
        return errno.ETIMEDOUT
    code = getattr(value, "osError", None)
    if isinstance(code, int):
        return code
    code = getattr(value, "errno", None)
    if isinstance(code, int):
        return code
    return errno.ECONNREFUSED


class _Stream:
    """
    What the L{IStream}s over a transport share: writing and reading
    flow control go straight to it.
    """

    def __init__(self, transport) -> None:
        self.transport = transport

    def write(self, data: BytesLike) -> None:
        self.transport.write(bytes(data))  # Twisted's buffers take bytes only

    def pauseReading(self) -> None:
        self.transport.pauseProducing()

    def resumeReading(self) -> None:
        self.transport.resumeProducing()


class _HandlerProducer:
    """
    An L{IPushProducer} that relays a transport's write-buffer flow control
    to C{self.handler}, the engine's stream handler (C{None} once gone).
    """

    handler: Optional[IStreamHandler]

    def pauseProducing(self) -> None:
        if self.handler is not None:
            self.handler.pauseWriting()

    def resumeProducing(self) -> None:
        if self.handler is not None:
            self.handler.resumeWriting()

    def stopProducing(self) -> None:
        pass


@implementer(IStream)
class _TransportStream(_Stream):
    """
    An L{IStream} over a Twisted TCP or UNIX transport.
    """

    def __init__(self, transport, tcp: bool) -> None:
        super().__init__(transport)
        self.tcp = tcp

    def write(self, data: BytesLike) -> None:
        # Twisted buffers every write until the socket's next writability
        # event (an epoll registration and removal and a reactor turn per
        # write, and a join): with nothing buffered ahead of it, the data
        # goes out at once, and only what the socket does not take waits.
        transport = self.transport
        if _DIRECT_WRITES and transport.connected and not transport.disconnecting and \
                not transport._tempDataBuffer and transport.offset >= len(transport.dataBuffer):
            sent = transport.writeSomeData(data)
            if isinstance(sent, int) and sent > 0:
                if sent >= len(data):
                    return
                data = data[sent:]
        transport.write(bytes(data))  # (a view of a guest's frame: kept, so copied)

    def writeEOF(self) -> None:
        # Twisted resumes a paused producer instead of shutting down when
        # the buffer drains: nothing more is written, so unregister first.
        self.transport.unregisterProducer()
        self.transport.loseWriteConnection()

    def close(self) -> None:
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def abort(self) -> None:
        if self.tcp:
            try:  # a zero linger time makes close() send a reset
                self.transport.getHandle().setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, AttributeError):
                pass
        self.transport.abortConnection()


@implementer(IHalfCloseableProtocol, IPushProducer)
class _StreamProtocol(_HandlerProducer, Protocol):
    """
    Relays a transport's events to an engine stream handler; registered as
    the transport's producer, so a full write buffer pauses the guest.
    """

    # A TCP or UNIX connection: an ITCPTransport that is also the
    # IConsumer and IPushProducer the stream drives (no one interface).
    transport: Any

    def __init__(self, handler: Optional[IStreamHandler] = None, onAccept=None,
                 tcp: bool = True) -> None:
        self.handler = handler
        self.onAccept = onAccept
        self.tcp = tcp
        self.stream: Optional[_TransportStream] = None

    def connectionMade(self) -> None:
        self.stream = _TransportStream(self.transport, self.tcp)
        self.transport.registerProducer(self, True)
        if self.onAccept is not None:
            peer = self.transport.getPeer()
            self.handler = self.onAccept(self.stream, (peer.host, peer.port))
        if self.handler is None:  # refused, or the connect was cancelled
            self.transport.abortConnection()
        elif self.onAccept is None:
            self.handler.connected(self.stream)

    def dataReceived(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.dataReceived(data)

    def readConnectionLost(self) -> None:
        if self.handler is not None:
            self.handler.readEOF()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.connectionLost(bool(reason.check(terror.ConnectionDone)))


class _ConnectFactory(ClientFactory):
    """
    Reports one connect to its handler, then forgets it: nothing here or
    in the connector keeps a closed connection's objects alive (they must
    free by reference counting, without a garbage collection).
    """

    def __init__(self, handler, tcp: bool) -> None:
        self.handler = handler
        self.tcp = tcp

    def buildProtocol(self, addr):
        handler, self.handler = self.handler, None
        return _StreamProtocol(handler, tcp=self.tcp)

    def clientConnectionFailed(self, connector, reason) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.connectFailed(_errno(reason))

    def clientConnectionLost(self, connector, reason) -> None:
        # The connector and its transport refer to each other; Twisted
        # leaves that cycle to the collector once the connection is lost.
        connector.transport = None


@implementer(IPendingConnect)
class _PendingConnect:
    """
    A TCP or UNIX connect: cancelling it closes its socket (the engine
    gives up half-open connections to make room for new ones).
    """

    def __init__(self, connector, factory: _ConnectFactory) -> None:
        self.connector = connector
        self.factory = factory

    def cancel(self) -> None:
        self.factory.handler = None
        if self.connector.state == "connecting":
            self.connector.stopConnecting()


@implementer(IPendingConnect)
class _Reported:
    """
    A connect whose outcome is already reported (a command runs at once).
    """

    def cancel(self) -> None:
        pass


@implementer(IStream)
class _ProcessStream(_Stream):
    def _unregister(self) -> None:
        stdin = self.transport.pipes.get(0)
        if stdin is not None:
            stdin.unregisterProducer()

    def writeEOF(self) -> None:
        self._unregister()
        self.transport.closeStdin()

    # Closing a command's stream is closing its stdin: it ends by itself.
    close = writeEOF

    def abort(self) -> None:
        self.transport.loseConnection()
        try:
            self.transport.signalProcess("KILL")
        except (OSError, terror.ProcessExitedAlready):
            pass


@implementer(IPushProducer)
class _CommandProtocol(_HandlerProducer, ProcessProtocol):
    """
    A C{cmdfwd} command: its stdin and stdout are the stream.
    """

    # twisted.internet.process.Process: its pipes are no part of
    # IProcessTransport.
    transport: Any

    def __init__(self, handler: IStreamHandler) -> None:
        self.handler = handler

    def connectionMade(self) -> None:
        stdin = self.transport.pipes.get(0)
        if stdin is not None:
            stdin.registerProducer(self, True)
        assert self.handler is not None, "set until the command ends"
        self.handler.connected(_ProcessStream(self.transport))

    def outReceived(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.dataReceived(data)

    def outConnectionLost(self) -> None:
        if self.handler is not None:
            self.handler.readEOF()

    def processEnded(self, reason) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.readEOF()
            handler.connectionLost(True)


class _Datagrams(DatagramProtocol):
    def __init__(self, handler) -> None:
        self.handler = handler

    def datagramReceived(self, data: bytes, addr) -> None:
        self.handler.datagramReceived(data, (addr[0], addr[1]))


@implementer(IDatagramSocket)
class _UdpSocket:
    rewritesIdentifier = False

    def __init__(self, port, family: int) -> None:
        self.port = port
        self.family = family

    def sendto(self, data: bytes, address: tuple) -> None:
        try:
            self.port.write(data, address)
        except (OSError, terror.MessageLengthError):
            pass

    def close(self) -> None:
        self.port.stopListening()


@implementer(IDatagramSocket)
class _IcmpSocket:
    """
    A ping (or raw ICMP) socket read by the reactor.
    """

    def __init__(self, reactor, sock: socket.socket, family: int, raw: bool, handler) -> None:
        self.reactor = reactor
        self.sock = sock
        self.family = family
        self.raw = raw
        self.rewritesIdentifier = not raw
        self.handler = handler
        self._reader = FdReader(sock.fileno(), self._drain, "slirp-icmp")
        reactor.addReader(self._reader)

    def _drain(self) -> None:
        for _ in range(READ_BATCH):
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            except OSError as e:
                # An ICMP socket's errors end nothing: the next read goes on
                # after a harmless one, the next readiness after any other.
                if e.errno in HARMLESS:
                    continue
                return
            if self.raw and self.family == 4 and data:
                data = data[(data[0] & 0x0F) * 4 :]
            self.handler.datagramReceived(data, (addr[0], 0))

    def sendto(self, data: bytes, address: tuple) -> None:
        try:
            self.sock.sendto(data, address)
        except OSError:
            pass

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.reactor.removeReader(self._reader)
            self.sock.close()


@implementer(IListening)
class _Listening:
    def __init__(self, port) -> None:
        self.port = port

    def close(self) -> None:
        self.port.stopListening()


class _AcceptFactory(Factory):
    def __init__(self, onAccept) -> None:
        self.onAccept = onAccept

    def buildProtocol(self, addr):
        return _StreamProtocol(onAccept=self.onAccept)


@implementer(IHost)
class TwistedHost:
    """
    Host sockets on C{reactor}.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor

    def connect(self, target: tuple, handler) -> IPendingConnect:
        kind = target[0]
        if kind == "tcp":
            _, host, port = target
            factory = _ConnectFactory(handler, True)
            return _PendingConnect(
                self.reactor.connectTCP(host, port, factory, timeout=CONNECT_TIMEOUT), factory)
        if kind == "unix":
            factory = _ConnectFactory(handler, False)
            return _PendingConnect(
                self.reactor.connectUNIX(target[1], factory, timeout=CONNECT_TIMEOUT), factory)
        if kind == "cmd":
            try:
                self.reactor.spawnProcess(_CommandProtocol(handler), "/bin/sh",
                                          ["/bin/sh", "-c", target[1]], env=None,
                                          childFDs={0: "w", 1: "r", 2: 2})
            except OSError as e:
                handler.connectFailed(e.errno or errno.ENOENT)
        else:  # pragma: no cover
            handler.connectFailed(errno.EINVAL)
        return _Reported()

    def openUDP(self, family: int, handler) -> _UdpSocket:
        interface = "::" if family == 6 else "0.0.0.0"
        try:
            port = self.reactor.listenUDP(0, _Datagrams(handler), interface=interface)
        except terror.CannotListenError as e:
            raise OSError(getattr(e.socketError, "errno", errno.EIO), str(e)) from None
        return _UdpSocket(port, family)

    def listenUDP(self, address: str, port: int, handler) -> _UdpSocket:
        try:
            listening = self.reactor.listenUDP(port, _Datagrams(handler), interface=address)
        except terror.CannotListenError as e:
            raise OSError(getattr(e.socketError, "errno", errno.EIO),
                          getattr(e.socketError, "strerror", str(e))) from None
        return _UdpSocket(listening, 6 if ":" in address else 4)

    def listenTCP(self, address: str, port: int, onAccept) -> _Listening:
        try:
            listening = self.reactor.listenTCP(port, _AcceptFactory(onAccept), interface=address)
        except terror.CannotListenError as e:
            raise OSError(getattr(e.socketError, "errno", errno.EIO),
                          getattr(e.socketError, "strerror", str(e))) from None
        return _Listening(listening)

    def openICMP(self, family: int, handler) -> _IcmpSocket:
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        proto = socket.IPPROTO_ICMPV6 if family == 6 else socket.IPPROTO_ICMP
        try:
            sock = socket.socket(af, socket.SOCK_DGRAM, proto)
            raw = False
        except OSError:
            sock = socket.socket(af, socket.SOCK_RAW, proto)
            raw = True
        sock.setblocking(False)
        return _IcmpSocket(self.reactor, sock, family, raw, handler)


def _canWriteDirectly() -> bool:
    """
    Whether Twisted's transports keep their write buffer as this module's
    direct write expects (C{_tempDataBuffer}, C{dataBuffer}, C{offset} and
    C{writeSomeData} of L{twisted.internet.abstract.FileDescriptor}, which
    are internal): checked once at import, so another Twisted falls back to
    C{transport.write}.
    """
    try:
        probe = FileDescriptor.__new__(FileDescriptor)
        FileDescriptor.__init__(probe, reactor=object())  # type: ignore[arg-type]
    except Exception:
        return False
    return (isinstance(getattr(probe, "_tempDataBuffer", None), list)
            and isinstance(getattr(probe, "dataBuffer", None), bytes)
            and isinstance(getattr(probe, "offset", None), int)
            and callable(getattr(FileDescriptor, "writeSomeData", None)))


_DIRECT_WRITES = _canWriteDirectly()
