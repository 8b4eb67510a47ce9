"""
The slirp engine returns to its baseline after many short flows: the
engine runs in this process on the real reactor with real host sockets
(L{TwistedHost}), a synthetic guest opens and closes 1,000 TCP connections
to a server on 127.0.0.1 (reached as 10.0.2.2), then sends from 1,000 UDP
ports to an echo server there; afterwards the flow tables are empty, no
timer is left, and this process has as many open file descriptors as
before.
"""

from __future__ import annotations

import struct

from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.support import openFds, until
from vdetwist.slirp import packets as P
from vdetwist.slirp import udp as slirpudp
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.driver import Driver
from vdetwist.slirp.engine import SlirpEngine
from vdetwist.slirp.host import TwistedHost
from vdetwist.slirp.testing import GATEWAY, GUEST_IP, Guest, decode, describe

CONNECTIONS = 1000
#: Connections open at the same time.
WAVE = 100
UDP_FLOWS = 1000
UDP_WAVE = 100
FIRST_PORT = 20000
MSS_OPTION = struct.pack("!BBH", 2, 4, 1460)
M32 = 0xFFFFFFFF

#: How each connection ends (by the connection number modulo 3):
#: the guest sends its request with FIN; the guest sends FIN only after
#: the server's; the guest resets after the server's answer.
FIN_WITH_REQUEST, FIN_AFTER_SERVER, RESET = range(3)


@implementer(IHalfCloseableProtocol)
class Answer(Protocol):
    """
    Answers a request line with it reversed, then closes.
    """

    def connectionMade(self):
        self.buffer = b""
        self.factory.open += 1

    def dataReceived(self, data):
        self.buffer += data
        if self.buffer.endswith(b"\n"):
            self.transport.write(self.buffer[-2::-1] + b"\n")
            self.transport.loseConnection()

    def readConnectionLost(self):
        if not self.buffer.endswith(b"\n"):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.open -= 1


class UdpEcho(DatagramProtocol):
    def datagramReceived(self, data, addr):
        self.transport.write(data.upper(), addr)


class GuestConn:
    def __init__(self, number: int, sport: int, pattern: int) -> None:
        self.number = number
        self.sport = sport
        self.pattern = pattern
        self.iss = (number * 7919 + 12345) & M32
        self.sndNxt = (self.iss + 1) & M32
        self.rcvNxt = 0
        self.request = b"request %d\n" % number
        self.data = b""
        self.finReceived = False
        self.finSent = False
        self.finAcked = False
        self.reset = False
        self.done = defer.Deferred()

    def finish(self) -> None:
        if not self.done.called:
            self.done.callback(self)


class SyntheticGuest:
    """
    A guest at 10.0.2.15 whose TCP connections and UDP ports live here;
    frames from the engine come in through L{frame}, frames to it go
    through the driver's batched input (never re-entering the engine).
    """

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.g = Guest()
        self.conns: dict[int, GuestConn] = {}
        self.udpReplies: dict[int, bytes] = {}
        self.udpWaiting: dict[int, defer.Deferred] = {}
        self.unexpected: list[str] = []

    def send(self, frame: bytes) -> None:
        self.driver.input(frame)

    def tcp(self, conn: GuestConn, flags: int, payload: bytes = b"", seq=None,
            options: bytes = b"") -> None:
        self.send(self.g.tcp(GATEWAY, conn.sport, self.port, conn.sndNxt if seq is None else seq,
                             conn.rcvNxt if flags & P.TCP_ACK else 0, flags,
                             options=options, payload=payload))

    def connect(self, number: int, port: int, pattern: int) -> GuestConn:
        self.port = port
        conn = GuestConn(number, FIRST_PORT + number, pattern)
        self.conns[conn.sport] = conn
        self.tcp(conn, P.TCP_SYN, seq=conn.iss, options=MSS_OPTION)
        return conn

    def frame(self, frame: bytes) -> None:
        f = decode(frame)
        if f.proto == "arp":
            if f.op == 1 and f.tpa == GUEST_IP:
                self.send(self.g.arpReply(f.spa, f.sha))
            return
        if f.proto == "udp":
            self.udpReplies[f.dport] = f.payload
            waiting = self.udpWaiting.pop(f.dport, None)
            if waiting is not None:
                waiting.callback(f.payload)
            return
        if f.proto != "tcp":
            self.unexpected.append(describe(f))
            return
        conn = self.conns.get(f.dport)
        if conn is None:
            self.unexpected.append(describe(f))
            return
        self.segment(conn, f)

    def segment(self, conn: GuestConn, f) -> None:
        flags = f.flags
        if flags & P.TCP_RST:
            conn.reset = True
            conn.finish()
            return
        if flags & P.TCP_SYN:
            if not flags & P.TCP_ACK or f.ack != conn.sndNxt:
                self.unexpected.append(describe(f))
                return
            conn.rcvNxt = (f.seq + 1) & M32
            request = conn.request
            if conn.pattern == FIN_WITH_REQUEST:
                self.tcp(conn, P.TCP_ACK | P.TCP_PSH | P.TCP_FIN, request)
                conn.sndNxt = (conn.sndNxt + len(request) + 1) & M32
                conn.finSent = True
            else:
                self.tcp(conn, P.TCP_ACK | P.TCP_PSH, request)
                conn.sndNxt = (conn.sndNxt + len(request)) & M32
            return
        if flags & P.TCP_ACK and conn.finSent and f.ack == conn.sndNxt:
            conn.finAcked = True
        if f.seq == conn.rcvNxt and (f.payload or flags & P.TCP_FIN) and not conn.finReceived:
            conn.data += f.payload
            conn.rcvNxt = (conn.rcvNxt + len(f.payload)) & M32
            if flags & P.TCP_FIN:
                conn.rcvNxt = (conn.rcvNxt + 1) & M32
                conn.finReceived = True
            if conn.pattern == RESET and conn.data.endswith(b"\n"):
                self.tcp(conn, P.TCP_RST)
                conn.reset = True
                conn.finish()
                return
            if conn.finReceived and conn.pattern == FIN_AFTER_SERVER and not conn.finSent:
                self.tcp(conn, P.TCP_ACK | P.TCP_FIN)
                conn.sndNxt = (conn.sndNxt + 1) & M32
                conn.finSent = True
            else:
                self.tcp(conn, P.TCP_ACK)
        elif f.payload or flags & P.TCP_FIN:
            self.tcp(conn, P.TCP_ACK)  # a retransmission: acknowledge again
        if conn.finReceived and conn.finAcked:
            conn.finish()

    def udp(self, sport: int, port: int, payload: bytes) -> defer.Deferred:
        d = self.udpWaiting[sport] = defer.Deferred()
        self.send(self.g.udp(GATEWAY, sport, port, payload))
        return d


def baseline() -> defer.Deferred:
    """
    The number of open file descriptors once the reactor runs (starting it
    opens a few: the signal wakers).
    """
    return task.deferLater(reactor, 0.01, openFds)


def waitUntil(condition, timeout: float, what: str) -> defer.Deferred:
    return defer.ensureDeferred(until(condition, what, timeout, interval=0.02))


class BaselineTests(TestCase):
    timeout = 60

    def setUp(self):
        self.skew = 0.0  # added to the engine's clock to let UDP flows expire
        self.driver = Driver(reactor)
        self.guest = SyntheticGuest(self.driver)
        self.engine = SlirpEngine(SlirpConfig(resolvConf="/nonexistent/resolv.conf", ipv6=False),
                                  TwistedHost(reactor), self.guest.frame,
                                  clock=lambda: reactor.seconds() + self.skew,
                                  timerChanged=self.driver.timerChanged)
        self.driver.attach(self.engine)
        self.addCleanup(self.driver.stop)
        self.addCleanup(self.engine.close)
        self.engine.start()
        self.guest.send(self.guest.g.arpRequest(GATEWAY))

    def assertBaseline(self, fds: int) -> defer.Deferred:
        engine = self.engine
        d = waitUntil(lambda: not engine.tcp.conns and not engine.udp.flows
                      and openFds() == fds, 10,
                      "empty flow tables and the file descriptors' baseline")

        def check(_):
            self.assertEqual(engine.tcp.conns, {})
            self.assertEqual(engine.udp.flows, {})
            self.assertEqual(engine.tcp.pendingAcks, set())
            self.assertEqual(engine.tcp.blocked, set())
            self.assertIsNone(engine.nextDeadline())
            self.assertEqual(openFds(), fds)
            self.assertEqual(engine.stats["errors"], 0)
            self.assertEqual(self.guest.unexpected, [])

        def report(failure):
            failure.trap(AssertionError)
            self.fail(f"{failure.value}: {len(engine.tcp.conns)} TCP connections "
                      f"({list(engine.tcp.conns.values())[:3]}), {len(engine.udp.flows)} UDP "
                      f"flows, {openFds()} open fds against {fds} before")

        return d.addCallbacks(check, report)

    @defer.inlineCallbacks
    def test_shortTcpConnections(self):
        factory = Factory.forProtocol(Answer)
        factory.open = 0
        # a backlog for a whole wave (by default 50: more SYNs wait for a retry)
        port = reactor.listenTCP(0, factory, backlog=2 * WAVE, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        fds = yield baseline()
        conns = []
        for start in range(0, CONNECTIONS, WAVE):
            wave = [self.guest.connect(i, number, i % 3)
                    for i in range(start, min(start + WAVE, CONNECTIONS))]
            yield defer.gatherResults([c.done for c in wave])
            conns += wave
        for conn in conns:
            self.assertEqual(conn.data, conn.request[-2::-1] + b"\n", conn.number)
            self.assertEqual(conn.reset, conn.pattern == RESET, conn.number)
        self.assertEqual(self.engine.stats["tcp_established"], CONNECTIONS)
        # the connections closed normally linger for TIME_WAIT, then go
        yield self.assertBaseline(fds)
        self.assertEqual(factory.open, 0)

    @defer.inlineCallbacks
    def test_udpFlowsExpire(self):
        echo = reactor.listenUDP(0, UdpEcho(), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        number = echo.getHost().port
        fds = yield baseline()
        for start in range(0, UDP_FLOWS, UDP_WAVE):
            replies = yield defer.gatherResults([
                self.guest.udp(FIRST_PORT + i, number, b"flow %d" % i)
                for i in range(start, start + UDP_WAVE)])
            self.assertEqual(replies, [b"FLOW %d" % i for i in range(start, start + UDP_WAVE)])
            self.assertEqual(len(self.engine.udp.flows), UDP_WAVE)
            self.assertEqual(openFds(), fds + UDP_WAVE)  # one host socket per flow
            # idle for longer than the flows live: the housekeeping closes them
            self.skew += slirpudp.IDLE_TIMEOUT + 1
            self.engine.advance()
            yield self.assertBaseline(fds)
        self.assertEqual(self.engine.stats["udp_out"], UDP_FLOWS)
