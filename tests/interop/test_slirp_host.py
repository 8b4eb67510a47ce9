"""
The Twisted host side of the slirp engine, on the real reactor and the
host's loopback: TCP connects (success, refusal), half-close both ways,
abort as a reset, write back-pressure, UNIX sockets, commands, UDP sockets,
ICMP echo sockets (ping or raw), listeners; then the engine with this host
and a synthetic guest, end to end through a real TCP server.
"""

from __future__ import annotations

import errno
import gc
import os
import resource
import socket
import struct
import tempfile
import weakref

from twisted.internet import defer, reactor, task, tcp
from twisted.internet.task import deferLater
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support import openFds, rssBytes, until
from vdetwist.slirp import packets as P
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.driver import Driver
from vdetwist.slirp.engine import SlirpEngine
from vdetwist.slirp.host import TwistedHost
from vdetwist.slirp.hostapi import IPendingConnect, IStreamHandler
from vdetwist.slirp.testing import GATEWAY, Guest, decode
from vdetwist.slirp.timers import MIN_HEAP_SWEEP


@implementer(IStreamHandler)
class Recorder:
    def __init__(self):
        self.events = []
        self.data = b""
        self.stream = None
        self.done = defer.Deferred()
        self.connectedD = defer.Deferred()
        self.paused = 0
        self.resumed = 0

    def connected(self, stream):
        self.stream = stream
        self.events.append("connected")
        self.connectedD.callback(stream)

    def connectFailed(self, code):
        self.events.append(("failed", code))
        self.connectedD.errback(OSError(code, os.strerror(code)))

    def dataReceived(self, data):
        self.data += data

    def readEOF(self):
        self.events.append("eof")

    def connectionLost(self, clean):
        self.events.append(("lost", clean))
        self.done.callback(clean)

    def pauseWriting(self):
        self.paused += 1

    def resumeWriting(self):
        self.resumed += 1


class Echo(Protocol):
    """
    Echoes, and half-closes after the peer's EOF.
    """

    def connectionMade(self):
        from twisted.internet.interfaces import IHalfCloseableProtocol
        from zope.interface import directlyProvides

        directlyProvides(self, IHalfCloseableProtocol)

    def dataReceived(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        pass


class Sink(Protocol):
    """
    Never reads (paused from the start).
    """

    def connectionMade(self):
        self.transport.pauseProducing()
        self.factory.connected.callback(self)


def wait(condition, timeout=5.0):
    return defer.ensureDeferred(until(condition, "the condition", timeout))


@defer.inlineCallbacks
def echoThenClose(stream, recorder: Recorder, data: bytes):
    """
    Write C{data} on C{stream} (to an echo server), wait until C{recorder}
    has it back, then close the stream and wait for its end.
    """
    stream.write(data)
    yield wait(lambda: recorder.data == data)
    stream.close()
    yield recorder.done


class StreamTests(TestCase):
    timeout = 30

    def setUp(self):
        self.host = TwistedHost(reactor)

    def listen(self, factory):
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_connectHalfCloseEcho(self):
        port = self.listen(Factory.forProtocol(Echo))
        r = Recorder()
        self.host.connect(("tcp", "127.0.0.1", port), r)
        stream = yield r.connectedD
        stream.write(b"hello")
        stream.writeEOF()
        yield wait(lambda: "eof" in r.events)
        # both halves are shut: Twisted leaves closing to the protocol (the
        # engine closes once both FINs are acknowledged)
        stream.close()
        clean = yield r.done
        self.assertTrue(clean)
        self.assertEqual(r.data, b"hello")
        self.assertEqual(r.events, ["connected", "eof", ("lost", True)])

    @defer.inlineCallbacks
    def test_refused(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        r = Recorder()
        self.host.connect(("tcp", "127.0.0.1", port), r)
        with self.assertRaises(OSError) as e:
            yield r.connectedD
        self.assertEqual(e.exception.errno, errno.ECONNREFUSED)

    @defer.inlineCallbacks
    def test_cancelPendingConnect(self):
        """
        A cancelled connect never reaches the server and is not reported;
        cancelling one already reported changes nothing.
        """
        factory = Factory.forProtocol(Echo)
        factory.accepted = 0

        def buildProtocol(addr):
            factory.accepted += 1
            return Echo()

        factory.buildProtocol = buildProtocol
        port = self.listen(factory)
        r = Recorder()
        fds = openFds(collect=False)
        pending = self.host.connect(("tcp", "127.0.0.1", port), r)
        verifyObject(IPendingConnect, pending)
        self.assertEqual(openFds(collect=False), fds + 1)
        pending.cancel()
        self.assertEqual(openFds(collect=False), fds)  # its socket closed at once
        yield deferLater(reactor, 0.2)
        self.assertEqual((r.events, factory.accepted), ([], 0))
        done = Recorder()
        pending = self.host.connect(("tcp", "127.0.0.1", port), done)
        stream = yield done.connectedD
        pending.cancel()
        yield echoThenClose(stream, done, b"still here")

    @defer.inlineCallbacks
    def test_ipv6Loopback(self):
        try:
            port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="::1")
        except Exception:
            raise SkipTest("no IPv6 loopback")
        self.addCleanup(port.stopListening)
        r = Recorder()
        self.host.connect(("tcp", "::1", port.getHost().port), r)
        stream = yield r.connectedD
        stream.write(b"six")
        stream.writeEOF()
        yield wait(lambda: "eof" in r.events)
        stream.close()
        yield r.done
        self.assertEqual(r.data, b"six")

    @defer.inlineCallbacks
    def test_abortResets(self):
        accepted = defer.Deferred()

        class Watch(Protocol):
            def connectionMade(self):
                accepted.callback(self)

            def connectionLost(self, reason):
                self.reason = reason

        port = self.listen(Factory.forProtocol(Watch))
        r = Recorder()
        self.host.connect(("tcp", "127.0.0.1", port), r)
        stream = yield r.connectedD
        peer = yield accepted
        stream.abort()
        yield wait(lambda: hasattr(peer, "reason"))
        from twisted.internet.error import ConnectionLost

        self.assertTrue(peer.reason.check(ConnectionLost), peer.reason)

    @defer.inlineCallbacks
    def test_backPressure(self):
        factory = Factory.forProtocol(Sink)
        factory.connected = defer.Deferred()
        port = self.listen(factory)
        r = Recorder()
        self.host.connect(("tcp", "127.0.0.1", port), r)
        stream = yield r.connectedD
        sink = yield factory.connected
        chunk = b"b" * 65536
        for _ in range(200):
            if r.paused:
                break
            stream.write(chunk)
            yield task.deferLater(reactor, 0.001, lambda: None)
        self.assertEqual(r.paused, 1)
        sink.transport.resumeProducing()
        yield wait(lambda: r.resumed)
        stream.abort()

    @defer.inlineCallbacks
    def test_writesInOrderAtOnceAndBuffered(self):
        """
        A write with nothing buffered goes to the socket at once (nothing
        left in the transport's buffer); once the socket is full, the rest
        waits in the buffer, and every byte arrives, in order.
        """
        factory = Factory.forProtocol(Sink)
        factory.connected = defer.Deferred()
        port = self.listen(factory)
        r = Recorder()
        self.host.connect(("tcp", "127.0.0.1", port), r)
        stream = yield r.connectedD
        sink = yield factory.connected
        transport = stream.transport
        stream.write(b"first")
        self.assertEqual((transport._tempDataBuffer, len(transport.dataBuffer)), ([], 0))
        received = bytearray()
        sink.dataReceived = received.extend
        chunks = []
        while not transport._tempDataBuffer and len(chunks) < 1000:  # until the socket is full
            chunks.append(bytes([len(chunks) % 251 + 1]) * 65536)
            stream.write(chunks[-1])
        self.assertTrue(transport._tempDataBuffer)
        for _ in range(3):  # behind what waits
            chunks.append(bytes([len(chunks) % 251 + 1]) * 65536)
            stream.write(chunks[-1])
        sink.transport.resumeProducing()
        expected = b"first" + b"".join(chunks)
        yield wait(lambda: len(received) >= len(expected), 20)
        self.assertEqual(bytes(received), expected)
        stream.abort()

    @defer.inlineCallbacks
    def test_eofAfterBackPressure(self):
        """
        A half-close asked for while the write buffer is full (producer
        paused) still happens once the peer reads everything.
        """
        factory = Factory.forProtocol(Sink)
        factory.connected = defer.Deferred()
        port = self.listen(factory)
        r = Recorder()
        self.host.connect(("tcp", "127.0.0.1", port), r)
        stream = yield r.connectedD
        sink = yield factory.connected
        received = []
        sink.dataReceived = received.append
        ended = defer.Deferred()
        sink.connectionLost = lambda reason: ended.callback(None)
        total = 0
        while not r.paused:
            stream.write(b"e" * 65536)
            total += 65536
            yield task.deferLater(reactor, 0.001, lambda: None)
        stream.writeEOF()
        sink.transport.resumeProducing()
        yield ended
        self.assertEqual(sum(map(len, received)), total)
        stream.abort()

    @defer.inlineCallbacks
    def test_unixSocket(self):
        path = tempfile.mktemp(suffix=".sock")
        port = reactor.listenUNIX(path, Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        r = Recorder()
        self.host.connect(("unix", path), r)
        stream = yield r.connectedD
        yield echoThenClose(stream, r, b"unix")

    @defer.inlineCallbacks
    def test_command(self):
        r = Recorder()
        self.host.connect(("cmd", "tr a-z A-Z"), r)
        stream = yield r.connectedD
        stream.write(b"shout")
        stream.writeEOF()
        yield r.done
        self.assertEqual(r.data, b"SHOUT")
        self.assertIn("eof", r.events)


class DatagramTests(TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_udp(self):
        host = TwistedHost(reactor)
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        echo.bind(("127.0.0.1", 0))
        self.addCleanup(echo.close)
        got = []

        class H:
            def datagramReceived(self, data, address):
                got.append((data, address))

        sock = host.openUDP(4, H())
        self.addCleanup(sock.close)
        sock.sendto(b"ping", echo.getsockname())
        echo.settimeout(5)
        data, addr = yield defer.maybeDeferred(echo.recvfrom, 100)
        echo.sendto(b"pong", addr)
        yield wait(lambda: got)
        self.assertEqual(got, [(b"pong", echo.getsockname())])

    @defer.inlineCallbacks
    def test_icmpEchoLoopback(self):
        host = TwistedHost(reactor)
        got = []

        class H:
            def datagramReceived(self, data, address):
                if data[0] == 0:
                    got.append((data, address))

        try:
            sock = host.openICMP(4, H())
        except OSError as e:
            raise SkipTest(f"no ICMP socket ({e.strerror}): needs root, or a group of this"
                           f" user's in sysctl net.ipv4.ping_group_range")
        self.addCleanup(sock.close)
        message = P.icmp4(8, 0, struct.pack("!HH", 0x4321, 1) + b"payload")
        sock.sendto(message, ("127.0.0.1", 0))
        yield wait(lambda: got)
        data, address = got[0]
        self.assertEqual(address, ("127.0.0.1", 0))
        self.assertEqual(data[8:], b"payload")
        if not sock.rewritesIdentifier:
            self.assertEqual(struct.unpack("!H", data[4:6])[0], 0x4321)

    def test_listenBusy(self):
        host = TwistedHost(reactor)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        self.addCleanup(s.close)
        with self.assertRaises(OSError) as e:
            host.listenTCP("127.0.0.1", s.getsockname()[1], lambda *a: None)
        self.assertEqual(e.exception.errno, errno.EADDRINUSE)


class EngineWithRealHostTests(TestCase):
    """
    A synthetic guest talks through the engine to a real TCP server on
    127.0.0.1 (reached as 10.0.2.2).
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_connectThroughGateway(self):
        port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        frames = []
        got = defer.Deferred()

        def output(frame):
            frames.append(frame)
            f = decode(frame)
            if f.proto == "tcp" and f.flags & P.TCP_SYN and not got.called:
                got.callback(f)

        driver = Driver(reactor)
        engine = SlirpEngine(SlirpConfig(resolvConf="/none", ipv6=False), TwistedHost(reactor),
                             output, clock=reactor.seconds, timerChanged=driver.timerChanged,
                             strict=True)
        driver.attach(engine)
        self.addCleanup(driver.stop)
        self.addCleanup(engine.close)
        g = Guest()
        engine.receive(g.arpRequest(GATEWAY))
        dport = port.getHost().port
        engine.receive(g.tcp(GATEWAY, 40000, dport, 100, 0, P.TCP_SYN))
        synack = yield got
        self.assertEqual(synack.flags, P.TCP_SYN | P.TCP_ACK)
        frames.clear()
        engine.receive(g.tcp(GATEWAY, 40000, dport, 101, synack.seq + 1,
                             P.TCP_ACK | P.TCP_PSH | P.TCP_FIN, payload=b"echo me"))
        yield wait(lambda: any(decode(f).flags & P.TCP_FIN for f in frames
                               if decode(f).proto == "tcp"))
        data = b"".join(decode(f).payload for f in frames if decode(f).proto == "tcp")
        self.assertEqual(data, b"echo me")


class Served(Protocol):
    """
    Echoes; with C{factory.closeAfterEcho}, closes after the first echo.
    """

    def connectionMade(self):
        self.factory.live.add(self)

    def dataReceived(self, data):
        self.transport.write(data)
        if self.factory.closeAfterEcho:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.live.discard(self)


class EngineUnderLoadTests(TestCase):
    """
    The engine on real sockets under load: a SYN flood from spoofed guest
    addresses, and thousands of connections with the collector off.
    """

    timeout = 120

    def setUp(self):
        # Each live connection holds two descriptors (slirp's host socket and
        # the server's): room for the test's thousands, up to the hard
        # limit, which a non-root user's soft limit of 1024 is far below.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        self.maxLive = min(3000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - openFds() - 64) // 2)
        self.factory = Factory.forProtocol(Served)
        self.factory.live = set()
        self.factory.closeAfterEcho = False
        # a backlog that does not drop the test's own bursts of connects
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1", backlog=1024)
        self.dport = port.getHost().port
        self.onFrame = lambda f: None
        self.opened = 0
        self.driver = Driver(reactor)
        self.engine = SlirpEngine(SlirpConfig(resolvConf="/none", ipv6=False), TwistedHost(reactor),
                                  lambda frame: self.onFrame(decode(frame)), clock=reactor.seconds,
                                  timerChanged=self.driver.timerChanged, strict=True)
        self.driver.attach(self.engine)
        self.addCleanup(port.stopListening)
        self.addCleanup(self.settle)

    async def settleAsync(self):
        self.engine.close()
        self.driver.stop()
        await until(lambda: not self.factory.live, "the server's connections to close")
        await deferLater(reactor, 0.05)  # the aborted clients' last calls

    def settle(self):
        return defer.ensureDeferred(self.settleAsync())

    @defer.inlineCallbacks
    def test_synFloodThenNewGuest(self):
        """
        10,000 SYNs from 150 spoofed guest addresses (the host accepts,
        the guests never answer): the half-open connections, the host
        sockets and the timer heap stay bounded, and then another guest's
        connection is answered and carries data within a second.
        """
        engine = self.engine
        guest = Guest(mac=bytes.fromhex("020000000014"), ip=bytes([10, 0, 2, 20]))
        toGuest = []
        self.onFrame = lambda f: toGuest.append(f) if f.proto == "tcp" and \
            f.ipdst == guest.ip else None
        engine.receive(guest.arpRequest(GATEWAY))
        fds = openFds(collect=False)
        most = 0
        for i in range(10000):
            spoof = Guest(mac=bytes.fromhex("0200000100") + bytes((i % 150,)),
                          ip=bytes([10, 0, 2, 100 + i % 150]))
            self.driver.input(spoof.tcp(GATEWAY, 1024 + i // 150, self.dport, i, 0, P.TCP_SYN))
            if i % 500 == 499:
                yield deferLater(reactor, 0)
                most = max(most, openFds(collect=False) - fds)
        yield deferLater(reactor, 0)
        self.assertLessEqual(len(engine.tcp.conns), 256)
        stats = engine.stats
        self.assertEqual(stats["tcp_halfopen_evicted"] + stats["tcp_connect_failed"],
                         10000 - len(engine.tcp.conns))
        self.assertEqual(stats["tcp_refused"], 0)
        self.assertLess(most, 1000)  # two per half-open connection, and closing ones
        self.assertLess(len(engine.timers), 2 * 256 + MIN_HEAP_SWEEP + 1)
        start = reactor.seconds()
        self.driver.input(guest.tcp(GATEWAY, 50000, self.dport, 500, 0, P.TCP_SYN))
        yield wait(lambda: toGuest)
        synack = toGuest.pop()
        self.assertEqual(synack.flags, P.TCP_SYN | P.TCP_ACK)
        self.driver.input(guest.tcp(GATEWAY, 50000, self.dport, 501, synack.seq + 1,
                                    P.TCP_ACK | P.TCP_PSH, payload=b"hello"))
        yield wait(lambda: any(f.payload for f in toGuest))
        self.assertEqual(b"".join(f.payload for f in toGuest), b"hello")
        self.assertLess(reactor.seconds() - start, 1.0)

    async def connectMany(self, count: int, guests: list) -> list:
        """
        C{count} connections from C{guests} in turn: each sends a byte,
        the server echoes it and closes, the guest closes; returns weak
        references to the engine's connections.
        """
        engine, driver = self.engine, self.driver
        refs = []

        def answer(f):
            if f.proto != "tcp":
                return
            g = byAddress[f.ipdst]
            if f.flags & P.TCP_SYN:
                reply = (101, f.seq + 1, P.TCP_ACK | P.TCP_PSH, b"x")
            elif f.flags & P.TCP_FIN:
                reply = (102, f.seq + len(f.payload) + 1, P.TCP_ACK | P.TCP_FIN, b"")
            elif f.payload:
                reply = (102, f.seq + len(f.payload), P.TCP_ACK, b"")
            else:
                return
            seq, ack, flags, payload = reply
            driver.input(g.tcp(GATEWAY, f.dport, self.dport, seq, ack & 0xFFFFFFFF, flags,
                               payload=payload))

        byAddress = {g.ip: g for g in guests}
        self.onFrame = answer
        for g in guests:
            engine.receive(g.arpRequest(GATEWAY))
        for n in range(count):
            g = guests[n % len(guests)]
            sport = 10000 + (self.opened + n) // len(guests) % 50000
            engine.input(g.tcp(GATEWAY, sport, self.dport, 100, 0, P.TCP_SYN))
            refs.append(weakref.ref(engine.tcp.conns[(g.ip, sport, GATEWAY, self.dport)]))
            if n % 100 == 99:
                engine.flush()
                while len(engine.tcp.halfOpen) > 100 or len(engine.tcp.conns) > self.maxLive:
                    await deferLater(reactor, 0.005)
        self.opened += count
        await until(lambda: not engine.tcp.conns, "every connection to end", timeout=60)
        self.assertEqual(engine.stats["tcp_established"], self.opened)
        return refs

    @defer.inlineCallbacks
    def test_connectionsFreeWithoutCollector(self):
        """
        6,000 connections opened and closed with the garbage collector off:
        every connection object and its host side free by reference
        counting, and the memory stays flat.
        """
        from vdetwist.slirp import host as H
        from vdetwist.slirp.tcp import TcpConn

        guests = [Guest(mac=bytes((2, 0, 0, 0, 0, 15 + i)), ip=bytes([10, 0, 2, 15 + i]))
                  for i in range(4)]
        self.factory.closeAfterEcho = True
        kinds = (TcpConn, H._StreamProtocol, H._TransportStream, H._ConnectFactory,
                 H._PendingConnect, tcp.Client, tcp.Connector)
        yield defer.ensureDeferred(self.connectMany(3000, guests))  # warm-up to the peak
        gc.collect()
        # other tests' objects, still referred to by their test cases
        existing = [o for o in gc.get_objects() if isinstance(o, kinds)]
        known = {id(o) for o in existing}
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)
        before = rssBytes()
        refs = yield defer.ensureDeferred(self.connectMany(6000, guests))
        grown = rssBytes() - before
        self.assertEqual([r for r in refs if r() is not None], [])
        self.assertEqual([o for o in gc.get_objects()
                          if isinstance(o, kinds) and id(o) not in known], [])
        self.assertLess(grown, 8 << 20)


class PlugTests(TestCase):
    """
    The slirp:// plug: frames in, answers to the receiver, pausing holds
    output back, closing stops every timer.
    """

    def setUp(self):
        from vdetwist.backends.slirp import SlirpPlug
        from vdetwist.slirp.memhost import MemoryHost
        from vdetwist.testing import FrameCollector

        self.clock = task.Clock()
        self.plug = SlirpPlug(self.clock, SlirpConfig(resolvConf="/none"), "slirp://",
                              host=MemoryHost())
        self.collector = FrameCollector()
        self.g = Guest()

    def test_answers(self):
        self.plug.send(self.g.arpRequest(GATEWAY))
        self.clock.advance(0)
        self.assertEqual(self.plug.stats.dropped, 1)  # nobody listening yet
        self.plug.startReceiving(self.collector)
        self.plug.send(self.g.arpRequest(GATEWAY))
        self.plug.send(self.g.ping(GATEWAY))
        self.assertEqual(self.collector.frames, [])  # handled as a batch, later
        self.clock.advance(0)
        self.assertEqual([decode(f).proto for f in self.collector.frames], ["arp", "icmp"])
        self.assertEqual((self.plug.stats.sent, self.plug.stats.received), (3, 2))

    def test_pause(self):
        self.plug.startReceiving(self.collector)
        self.plug.pauseProducing()
        self.plug.send(self.g.arpRequest(GATEWAY))
        self.clock.advance(0)
        self.assertEqual(self.collector.frames, [])
        self.plug.resumeProducing()
        self.assertEqual(len(self.collector.frames), 1)

    def test_close(self):
        from vdetwist.errors import PlugClosed

        self.plug.startReceiving(self.collector)
        self.plug.send(self.g.arpRequest(GATEWAY))
        self.assertTrue(self.clock.getDelayedCalls())
        self.plug.close()
        self.assertTrue(self.collector.reason.check(PlugClosed))
        self.assertTrue(self.plug.engine.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.plug.send(self.g.arpRequest(GATEWAY))
        self.assertEqual(self.plug.stats.dropped, 1)
