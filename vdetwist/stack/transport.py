"""
The Twisted transports of a host stack: L{StackTCPTransport}, a real
C{ITCPTransport} over one of the engine's connections, and L{StackUDPPort},
a UDP port in the style of C{IReactorUDP.listenUDP}'s.
"""

from __future__ import annotations

from ipaddress import IPv4Address as _IPv4, IPv6Address as _IPv6
from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IConsumer, IHalfCloseableProtocol, IListeningPort, IPushProducer, ITCPTransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.stack.tcp import KEEPALIVE_PROBES, IStackStream, StackConn
from vdetwist.wire.checksum import BytesLike

#: Seconds a connection the application closed waits for the peer's FIN
#: (Linux's tcp_fin_timeout), then it is reset.
FIN_TIMEOUT = 60.0

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.stack.api import VdeStack


def ntop(address: bytes) -> str:
    return str(_IPv4(address) if len(address) == 4 else _IPv6(address))


def twistedAddress(kind: str, address: bytes, port: int) -> IPv4Address | IPv6Address:
    if len(address) == 4:
        return IPv4Address(kind, ntop(address), port)  # type: ignore[arg-type]
    return IPv6Address(kind, ntop(address), port)  # type: ignore[arg-type]


@implementer(ITCPTransport, IConsumer, IPushProducer)
class StackTCPTransport:
    """
    One TCP connection of a stack, as a Twisted transport.

    The engine delivers what the peer sends (C{write}, C{writeEOF}) and
    says when its send buffer is full (C{pauseReading}: a registered
    producer is paused); the application's writes go to the engine's send
    buffer, and pausing this transport (C{pauseProducing}) stops delivery,
    so the window advertised to the peer closes.

    @param onEstablished: called with the transport when the handshake
        completes; returns the protocol (or C{None}: reset it).
    @param onFailed: called with a L{Failure} if it never completes (a
        refused or timed-out connect).
    @param onConnected: called with the protocol once it is connected.
    """

    disconnecting = False
    disconnected = False
    connected = False

    def __init__(self, stack: "VdeStack", onEstablished: Callable[["StackTCPTransport"], Any],
                 onFailed: Callable[[Failure], None] = lambda failure: None,
                 onConnected: Callable[[Any], None] = lambda protocol: None) -> None:
        self.stack = stack
        self.onEstablished = onEstablished
        self.onFailed = onFailed
        self.onConnected = onConnected
        self.conn: Optional[StackConn] = None
        self.protocol: Any = None
        self.producer: Any = None
        self.streamingProducer = False
        self.sendPaused = False
        self._pull: Any = None
        self._finTimer: Any = None
        self.noDelay = True
        self.keepAlive = False

    def __repr__(self) -> str:
        return f"<StackTCPTransport {self.conn!r}>"

    # -- the engine's side (through L{EngineSide}) --------------------------------

    def established(self) -> None:
        self.connected = True
        protocol = self.onEstablished(self)
        if protocol is None:
            self.abortConnection()
            return
        self.protocol = protocol
        self.stack.hold()
        protocol.makeConnection(self)
        self.onConnected(protocol)

    def peerEOF(self) -> None:
        protocol = self.protocol
        if protocol is None or self.disconnected:
            return
        if IHalfCloseableProtocol.providedBy(protocol):
            protocol.readConnectionLost()
        else:
            self.loseConnection()

    def finished(self) -> None:
        self._lost(Failure(error.ConnectionDone()))

    def reset(self) -> None:
        if not self.connected:
            conn = self.conn
            if conn is not None and conn.why == "unreachable":
                reason: Exception = error.NoRouteError(
                    string=f"ICMP unreachable from the way to {ntop(conn.peer[0])}")
            elif conn is not None and conn.why == "refused":
                reason = error.ConnectionRefusedError(
                    string=f"ICMP port unreachable from {ntop(conn.peer[0])}")
            elif conn is not None and conn.rtx.retries:
                reason = error.TCPTimedOutError(string="no answer to SYN")
            else:
                reason = error.ConnectionRefusedError()
            self.disconnected = True
            self.onFailed(Failure(reason))
            return
        if self.conn is not None and self.conn.why == "keepalive":
            self._lost(Failure(error.TimeoutError(
                string=f"the peer did not answer {KEEPALIVE_PROBES} keepalive probes")))
        else:
            self._lost(Failure(error.ConnectionLost("connection reset by peer")))

    def sendBufferFull(self) -> None:
        self.sendPaused = True
        if self.producer is not None and self.streamingProducer:
            self.producer.pauseProducing()

    def sendBufferDrained(self) -> None:
        self.sendPaused = False
        if self.producer is not None:
            if self.streamingProducer:
                self.producer.resumeProducing()
            else:
                self._schedulePull()

    # -- ITCPTransport: the application's side -----------------------------------

    def write(self, data: bytes) -> None:
        conn = self.conn
        if self.disconnecting or self.disconnected or conn is None or not data:
            return
        conn.dataReceived(bytes(data))
        if self.producer is not None and not self.streamingProducer and not self.sendPaused:
            self._schedulePull()

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        if self.conn is not None:
            self.conn.readEOF()
            self._finTimer = self.stack.reactor.callLater(FIN_TIMEOUT, self._finTimedOut)

    def _finTimedOut(self) -> None:
        self._finTimer = None
        if not self.disconnected and self.conn is not None:
            self.conn.connectionLost(clean=False)
            self._lost(Failure(error.ConnectionDone(
                f"the peer did not close in {FIN_TIMEOUT:g} s: reset")))

    def loseWriteConnection(self) -> None:
        if self.conn is not None and not self.disconnected:
            self.conn.readEOF()

    def abortConnection(self) -> None:
        if self.disconnected:
            return
        conn = self.conn
        if conn is not None:
            conn.connectionLost(clean=False)
        self._lost(Failure(error.ConnectionAborted()))

    def getHost(self) -> IPv4Address | IPv6Address:
        assert self.conn is not None
        return twistedAddress("TCP", *self.conn.local)

    def getPeer(self) -> IPv4Address | IPv6Address:
        assert self.conn is not None
        return twistedAddress("TCP", *self.conn.peer)

    def getTcpNoDelay(self) -> bool:
        return self.noDelay

    def setTcpNoDelay(self, enabled: bool) -> None:
        """
        With C{False}, small writes wait while data is unacknowledged and
        leave together (Nagle); C{True} (the default) sends them at once.
        """
        self.noDelay = bool(enabled)
        if self.conn is not None:
            self.conn.setNagle(not enabled)

    def getTcpKeepAlive(self) -> bool:
        return self.keepAlive

    def setTcpKeepAlive(self, enabled: bool) -> None:
        """
        Probe the peer when the connection has been idle (the stack's
        C{keepAliveIdle}, Linux's 2 hours by default); a dead peer ends the
        connection with C{TimeoutError}.
        """
        self.keepAlive = bool(enabled)
        if self.conn is not None:
            self.conn.setKeepAlive(self.keepAlive)

    # -- IConsumer ---------------------------------------------------------------

    def registerProducer(self, producer, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(f"Cannot register producer {producer}, because producer "
                               f"{self.producer} was never unregistered.")
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = bool(streaming)
        if not streaming:
            self._schedulePull()
        elif self.sendPaused:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self.producer = None
        if self._pull is not None and self._pull.active():
            self._pull.cancel()
        self._pull = None

    def _schedulePull(self) -> None:
        if self._pull is None or not self._pull.active():
            self._pull = self.stack.reactor.callLater(0, self._pullOnce)

    def _pullOnce(self) -> None:
        self._pull = None
        if self.producer is not None and not self.streamingProducer and not self.sendPaused:
            self.producer.resumeProducing()

    # -- IPushProducer: pausing delivery to the application -----------------------

    def pauseProducing(self) -> None:
        if self.conn is not None:
            self.conn.pauseWriting()

    def resumeProducing(self) -> None:
        if self.conn is not None and not self.disconnected:
            self.conn.resumeWriting()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- the end -----------------------------------------------------------------

    def _lost(self, reason: Failure) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.connected = False
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        for call in (self._pull, self._finTimer):
            if call is not None and call.active():
                call.cancel()
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            try:
                protocol.connectionLost(reason)
            finally:
                self.stack.release()


@implementer(IStackStream)
class EngineSide:
    """
    What the engine's connection holds of a L{StackTCPTransport}: the
    stream it writes the peer's bytes to.  The transport's own C{write} is
    the application's (C{ITransport}), so the two are different objects.
    """

    __slots__ = ("transport",)

    def __init__(self, transport: StackTCPTransport) -> None:
        self.transport = transport

    def write(self, data: BytesLike) -> None:
        transport = self.transport
        protocol = transport.protocol
        if protocol is not None and not transport.disconnected:
            protocol.dataReceived(bytes(data))  # (the same bytes: the stack's are)

    def writeEOF(self) -> None:
        self.transport.peerEOF()

    def close(self) -> None:
        self.transport.finished()

    def abort(self) -> None:
        self.transport.reset()

    def pauseReading(self) -> None:
        self.transport.sendBufferFull()

    def resumeReading(self) -> None:
        self.transport.sendBufferDrained()

    def established(self) -> None:
        self.transport.established()


@implementer(IListeningPort)
class StackPort:
    """
    A TCP port a stack listens on.
    """

    def __init__(self, stack: "VdeStack", address: Optional[bytes], port: int, factory) -> None:
        self.stack = stack
        self.address = address
        self.port = port
        self.factory = factory
        self.listening = False

    def __repr__(self) -> str:
        return f"<StackPort {self.getHost()}>"

    def startListening(self) -> None:
        if self.listening:
            return
        self.stack.host.tcp.addAcceptor(self.address, self.port, self._accept)
        self.listening = True
        self.stack.hold()
        self.factory.doStart()

    def _accept(self, conn: StackConn) -> IStackStream:
        transport = StackTCPTransport(self.stack, self._build)
        transport.conn = conn
        return EngineSide(transport)

    def _build(self, transport: StackTCPTransport):
        return self.factory.buildProtocol(transport.getPeer())

    def stopListening(self):
        from twisted.internet.defer import succeed

        if self.listening:
            self.listening = False
            self.stack.host.tcp.removeAcceptor(self.address, self.port)
            self.factory.doStop()
            self.stack.release()
        return succeed(None)

    loseConnection = stopListening

    def getHost(self) -> IPv4Address | IPv6Address:
        if self.address is None:
            own = self.stack.host.address4
            return twistedAddress("TCP", own or b"\0\0\0\0", self.port)
        return twistedAddress("TCP", self.address, self.port)


@implementer(IListeningPort)
class StackUDPPort:
    """
    A UDP port of a stack, as C{IReactorUDP.listenUDP} gives: its protocol
    (a C{DatagramProtocol}) hears C{datagramReceived(data, (host, port))}
    and writes with C{transport.write(data, (host, port))}.

    @param family: 4 or 6 (of C{interface}, or 4 by default).
    """

    def __init__(self, stack: "VdeStack", family: int, address: Optional[bytes], port: int,
                 protocol, maxPacketSize: int) -> None:
        self.stack = stack
        self.family = family
        self.address = address
        self.port = port
        self.protocol = protocol
        self.maxPacketSize = maxPacketSize
        self.listening = False

    #: The peer of a connected port (L{connect}): packed address, port.
    connected: Optional[tuple[bytes, int]] = None

    def startListening(self) -> None:
        self.port = self.stack.host.bindUDP(self.family, self.address, self.port, self._received,
                                            self._refused)
        self.listening = True
        self.stack.hold()
        self.protocol.makeConnection(self)

    def _received(self, data: bytes, source: bytes, port: int) -> None:
        connected = self.connected
        if connected is not None and (source, port) != connected:
            return
        if len(data) <= self.maxPacketSize:
            self.protocol.datagramReceived(data, (ntop(source), port))

    def _refused(self, destination: bytes, port: int) -> None:
        # as a kernel: only a connected socket hears of its datagrams' ICMP
        # port unreachables
        if (destination, port) == self.connected:
            self.protocol.connectionRefused()

    def connect(self, host: str, port: int) -> None:
        """
        Talk to C{host}:C{port} only (as C{IUDPTransport.connect}): only its
        datagrams are received, C{write} needs no address, and an ICMP port
        unreachable for one it was sent calls the protocol's
        C{connectionRefused}.

        @raise error.InvalidAddressError: C{host} is not an IP address of
            the port's family.
        @raise RuntimeError: the port is connected already.
        """
        from ipaddress import ip_address

        if self.connected is not None:
            raise RuntimeError("already connected, reconnecting is not currently supported")
        try:
            peer = ip_address(host).packed
        except ValueError:
            peer = b""
        if len(peer) != (4 if self.family == 4 else 16):
            raise error.InvalidAddressError(host, f"not an IPv{self.family} address")
        self.connected = (peer, port)

    def write(self, datagram: bytes, addr: Optional[tuple[str, int]] = None) -> None:
        """
        Send C{datagram} to C{addr}, a (literal address, port) pair (or,
        connected, to the peer).

        @raise ValueError: the address is not an IP address literal.
        """
        from ipaddress import ip_address

        connected = self.connected
        if addr is None:
            if connected is None:
                raise error.InvalidAddressError(None, "write needs an address when not connected")
            destination, port = connected
        else:
            destination, port = ip_address(addr[0]).packed, addr[1]
            if connected is not None and (destination, port) != connected:
                raise error.InvalidAddressError(addr[0], f"connected to {ntop(connected[0])}")
        self.stack.host.sendUDP(self.address, self.port, destination, port, datagram)

    def writeSequence(self, seq, addr: Optional[tuple[str, int]] = None) -> None:
        self.write(b"".join(seq), addr)

    def stopListening(self):
        from twisted.internet.defer import succeed

        if self.listening:
            self.listening = False
            self.stack.host.unbindUDP(self.family, self.port)
            self.protocol.doStop()
            self.stack.release()
        return succeed(None)

    loseConnection = stopListening

    def getHost(self) -> IPv4Address | IPv6Address:
        own = self.address or (self.stack.host.address4 if self.family == 4 else None)
        if own is None:
            own = b"\0" * (4 if self.family == 4 else 16)
        return twistedAddress("UDP", own, self.port)
