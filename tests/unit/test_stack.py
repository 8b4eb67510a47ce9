"""
The host stack (vdetwist.stack) without sockets: stacks on in-memory plugs
(vdetwist.testing) and a Clock, talking to each other and to hand-made
frames; and the vdestack: endpoint strings.
"""

from __future__ import annotations

import os
import struct
from ipaddress import IPv4Interface

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import clientFromString, quoteStringArgument, serverFromString
from twisted.internet.interfaces import (
    IConsumer, IHalfCloseableProtocol, IListeningPort, IPushProducer, ITCPTransport,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from vdetwist.slirp import packets as P
from vdetwist.slirp.config import TCP_HALFOPEN, SlirpConfig
from vdetwist.stack.api import VdeStack
from vdetwist.stack.config import StackConfig, StackConfigError, parseStackOptions
from vdetwist.stack.host import DAD_WAIT, HostStack
from vdetwist.stack.neighbours import PROBE_GRACE, REACHABLE
from vdetwist.testing import plugPair

MAC_A = b"\x02\0\0\0\0\x0a"
MAC_B = b"\x02\0\0\0\0\x0b"
A4, B4 = "10.5.0.1", "10.5.0.2"
A6, B6 = "fd05::1", "fd05::2"


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """
    Records what it receives and how it ends; half-closeable.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.reason = None
        self.readClosed = False
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def readConnectionLost(self) -> None:
        self.readClosed = True

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason) -> None:
        self.reason = reason

    def received(self) -> bytes:
        return b"".join(self.data)


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Keep(DatagramProtocol):
    """
    Keeps every datagram it receives, with its sender.
    """

    def __init__(self) -> None:
        self.got: list = []

    def datagramReceived(self, data, addr) -> None:
        self.got.append((data, addr))


class Network:
    """
    Two stacks joined by an in-memory cable, on one Clock.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.clock = Clock()
        left, right = plugPair("a", "b", capacity=4096)
        self.a = VdeStack(self.clock, left, StackConfig(
            mac=MAC_A, ip4=IPv4Interface(f"{A4}/24"), ip6=_iface6(A6)))
        self.b = VdeStack(self.clock, right, StackConfig(
            mac=MAC_B, ip4=IPv4Interface(f"{B4}/24"), ip6=_iface6(B6)))
        self.a.host.strict = self.b.host.strict = True
        test.addCleanup(self.close)

    def run(self, seconds: float = 1.0, step: float = 0.01) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def until(self, predicate, what: str, seconds: float = 30.0) -> None:
        for _ in range(int(seconds / 0.01)):
            if predicate():
                return
            self.clock.advance(0.01)
        raise AssertionError(f"timed out waiting for {what}")

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.run(0.1)


def _iface6(text: str):
    from ipaddress import IPv6Interface

    return IPv6Interface(f"{text}/64")


def result(d):
    box: list = []
    d.addBoth(box.append)
    return box


class TCPTests(SynchronousTestCase):
    def connect(self, net: Network, host: str, port: int = 80, server=Recorder):
        servers: list = []

        def build():
            p = server()
            servers.append(p)
            return p

        net.b.listenTCP(port, Factory.forProtocol(build))
        client = result(net.a.connectTCP(host, port, Factory.forProtocol(Recorder)))
        net.until(lambda: client and servers, "the connection")
        self.assertIsInstance(client[0], Recorder)
        return client[0], servers[0]

    def test_transferBothFamilies(self) -> None:
        """
        A megabyte each way over IPv4 and IPv6, byte-exact, through real
        ITCPTransports whose addresses are Twisted's.
        """
        for host, kind in ((B4, IPv4Address), (B6, IPv6Address)):
            net = Network(self)
            client, server = self.connect(net, host)
            transport = client.transport
            verifyObject(ITCPTransport, transport)
            verifyObject(IConsumer, transport)
            verifyObject(IPushProducer, transport)
            self.assertIsInstance(transport.getPeer(), kind)
            self.assertEqual((transport.getPeer().host, transport.getPeer().port), (host, 80))
            self.assertEqual(server.transport.getHost().port, 80)
            self.assertEqual(server.transport.getPeer(), transport.getHost())
            data = os.urandom(1 << 20)
            client.transport.write(data)
            server.transport.writeSequence([data[:1000], data[1000:]])
            net.until(lambda: len(server.received()) == len(data) and
                      len(client.received()) == len(data), "the transfer")
            self.assertEqual(server.received(), data)
            self.assertEqual(client.received(), data)
            client.transport.loseConnection()
            net.until(lambda: server.readClosed, "the client's FIN")
            server.transport.loseConnection()
            net.until(lambda: client.reason and server.reason, "both ends closed")
            client.reason.trap(error.ConnectionDone)
            server.reason.trap(error.ConnectionDone)

    def test_toItself(self) -> None:
        """
        A stack's client reaches its own server at its own addresses, as a
        kernel's loopback does: nothing goes on the wire.
        """
        for host in (A4, A6):
            net = Network(self)
            servers: list = []
            net.a.listenTCP(80, Factory.forProtocol(lambda: servers.append(Echo()) or servers[-1]))
            net.run(DAD_WAIT + 0.1)  # A6 is tentative until then: not yet its own
            before = net.b.host.stats["frames_in"]  # a's announcements
            client = result(net.a.connectTCP(host, 80, Factory.forProtocol(Recorder)))
            net.until(lambda: client, "the connection")
            client[0].transport.write(b"to myself")
            net.until(lambda: client[0].received() == b"to myself", "the echo")
            self.assertEqual(net.b.host.stats["frames_in"], before)

    def test_halfClose(self) -> None:
        """
        After the client's FIN (loseWriteConnection), the server still
        sends; a half-closeable protocol hears readConnectionLost.
        """
        net = Network(self)
        client, server = self.connect(net, B4)
        client.transport.write(b"request")
        client.transport.loseWriteConnection()
        net.until(lambda: server.readClosed, "the FIN")
        self.assertEqual(server.received(), b"request")
        server.transport.write(b"answer")
        server.transport.loseConnection()
        net.until(lambda: client.reason is not None, "the end")
        self.assertEqual(client.received(), b"answer")

    def test_notHalfCloseable(self) -> None:
        """
        A protocol that is not half-closeable is closed (after what it wrote
        is sent) when the peer sends FIN, as Twisted's TCP does.
        """
        net = Network(self)
        client, server = self.connect(net, B4, server=Echo)
        client.transport.write(b"ping")
        client.transport.loseWriteConnection()
        net.until(lambda: client.reason is not None, "the server's close")
        self.assertEqual(client.received(), b"ping")
        client.reason.trap(error.ConnectionDone)

    def test_finTimeout(self) -> None:
        """
        A connection the application closed whose peer never sends its FIN
        is reset after FIN_TIMEOUT, as a kernel's FIN-WAIT-2 times out.
        """
        from vdetwist.stack.transport import FIN_TIMEOUT

        net = Network(self)
        client, server = self.connect(net, B4)
        client.transport.loseConnection()
        net.until(lambda: server.readClosed, "the FIN")
        net.run(FIN_TIMEOUT - 1)
        self.assertIsNone(client.reason)
        net.run(2)
        client.reason.trap(error.ConnectionDone)
        net.until(lambda: server.reason is not None, "the reset")
        server.reason.trap(error.ConnectionLost)

    def test_abort(self) -> None:
        """
        abortConnection resets: the peer's connectionLost is not clean.
        """
        net = Network(self)
        client, server = self.connect(net, B4)
        client.transport.abortConnection()
        client.reason.trap(error.ConnectionAborted)
        net.until(lambda: server.reason is not None, "the reset")
        server.reason.trap(error.ConnectionLost)
        self.assertEqual(net.a.host.tcp.conns, {})
        self.assertEqual(net.b.host.tcp.conns, {})

    def test_refused(self) -> None:
        """
        A connect to a closed port fails with ConnectionRefusedError (the
        peer answers RST).
        """
        net = Network(self)
        client = result(net.a.connectTCP(B4, 81, Factory.forProtocol(Recorder)))
        net.until(lambda: client, "the refusal")
        client[0].trap(error.ConnectionRefusedError)
        self.assertEqual(net.b.host.stats["tcp_closed_port"], 1)

    def test_timeout(self) -> None:
        """
        A connect to an address nobody answers fails after its timeout.
        """
        net = Network(self)
        client = result(net.a.connectTCP("10.5.0.99", 80, Factory.forProtocol(Recorder),
                                         timeout=5))
        net.until(lambda: client, "the timeout", seconds=10)
        client[0].trap(error.TCPTimedOutError)

    def test_flowControl(self) -> None:
        """
        A paused transport stops delivery (the peer's window closes, its
        send buffer fills and its producer is paused); resumed, all comes.
        """
        net = Network(self)
        client, server = self.connect(net, B4)
        server.transport.pauseProducing()

        @implementer(IPushProducer)
        class Producer:
            paused = False

            def pauseProducing(self):
                self.paused = True

            def resumeProducing(self):
                self.paused = False

            def stopProducing(self):
                pass

        producer = Producer()
        client.transport.registerProducer(producer, True)
        data = os.urandom(2 << 20)
        client.transport.write(data)
        net.run(5)
        self.assertTrue(producer.paused)
        self.assertEqual(server.received(), b"")
        server.transport.resumeProducing()
        net.until(lambda: len(server.received()) == len(data), "the data")
        self.assertFalse(producer.paused)
        self.assertEqual(server.received(), data)
        client.transport.unregisterProducer()

    def test_listeningPort(self) -> None:
        """
        listenTCP gives an IListeningPort; the port is refused twice, and
        free again once it stops.
        """
        net = Network(self)
        port = net.b.listenTCP(80, Factory.forProtocol(Recorder))
        verifyObject(IListeningPort, port)
        self.assertEqual(port.getHost(), IPv4Address("TCP", B4, 80))
        self.assertRaises(error.CannotListenError, net.b.listenTCP, 80,
                          Factory.forProtocol(Recorder))
        port.stopListening()
        net.b.listenTCP(80, Factory.forProtocol(Recorder)).stopListening()


class HostTests(SynchronousTestCase):
    def test_ping(self) -> None:
        """
        Both families are answered; the tables then hold the peer.
        """
        net = Network(self)
        for address in (B4, B6):
            rtt = result(net.a.ping(address))
            net.until(lambda: rtt, "the echo reply")
            self.assertIsInstance(rtt[0], float)
        table = net.a.neighbours()
        self.assertEqual(table[B4][0], MAC_B.hex(":"))
        self.assertEqual(table[B6][0], MAC_B.hex(":"))

    def test_pingTimeout(self) -> None:
        from vdetwist.stack.api import PingTimeout

        net = Network(self)
        rtt = result(net.a.ping("10.5.0.77", timeout=2))
        net.run(3)
        rtt[0].trap(PingTimeout)

    def test_neighbourExpiry(self) -> None:
        """
        An entry is probed once stale and kept while the peer answers; once
        the peer is gone it is forgotten after the grace period.
        """
        net = Network(self)
        first = result(net.a.ping(B4))
        net.until(lambda: first, "a ping")
        net.run(REACHABLE + 1)
        rtt = result(net.a.ping(B4))
        net.until(lambda: rtt, "a ping after the entry went stale")
        self.assertLess(net.a.neighbours()[B4][1], REACHABLE)
        net.b.close()
        net.run(REACHABLE + PROBE_GRACE + 1)
        net.a.ping(B4, timeout=1)
        net.run(0.1)
        self.assertNotIn(B4, net.a.neighbours())

    def test_udp(self) -> None:
        """
        listenUDP ports exchange datagrams both ways; a datagram to a
        closed port is answered with ICMP port unreachable.
        """
        net = Network(self)

        server, client = Keep(), Keep()
        port = net.b.listenUDP(53, server)
        verifyObject(IListeningPort, port)
        net.a.listenUDP(0, client)
        client.transport.write(b"query", (B4, 53))
        net.until(lambda: server.got, "the datagram")
        data, addr = server.got[0]
        self.assertEqual((data, addr[0]), (b"query", A4))
        server.transport.write(b"answer", addr)
        net.until(lambda: client.got, "the answer")
        self.assertEqual(client.got[0], (b"answer", (B4, 53)))
        client.transport.write(b"x", (B4, 54))
        net.run(0.1)
        self.assertEqual(net.b.host.stats["udp_closed_port"], 1)


class BadInputTests(SynchronousTestCase):
    """
    Hand-made frames to one stack: dropped and counted, or answered as a
    kernel would; memory stays bounded.
    """

    def setUp(self) -> None:
        self.time = 0.0
        self.out: list[bytes] = []
        self.host = HostStack(StackConfig(mac=MAC_B, ip4=IPv4Interface(f"{B4}/24")),
                              self.out.append, lambda: self.time, strict=True)
        self.host.tcp.addAcceptor(None, 80, self.accept)
        self.accepted = 0
        # the peer's MAC is known: answers go straight out
        self.host.link.learn(bytes([10, 5, 0, 1]), MAC_A)

    def accept(self, conn):
        self.accepted += 1
        from vdetwist.stack.transport import EngineSide, StackTCPTransport

        return EngineSide(StackTCPTransport(None, lambda t: None))  # type: ignore[arg-type]

    def segment(self, flags: int, seq: int = 1000, ack: int = 0, sport: int = 40000,
                payload: bytes = b"", source: bytes = bytes([10, 5, 0, 1])) -> bytes:
        tcp = P.tcpSegment(source, bytes([10, 5, 0, 2]), sport, 80, seq, ack, flags, 65535,
                           payload=payload)
        return P.ETH.pack(MAC_B, MAC_A, P.ETH_IP) + P.ipv4(source, bytes([10, 5, 0, 2]),
                                                           P.PROTO_TCP, tcp)

    def replies(self) -> list:
        out, self.out[:] = list(self.out), []
        return [P.TCP.unpack_from(f, 34) for f in out if f[23] == P.PROTO_TCP]

    def test_badChecksum(self) -> None:
        frame = bytearray(self.segment(P.TCP_SYN))
        frame[-1] ^= 0xFF  # the urgent pointer's low byte: the checksum no longer matches
        self.host.receive(bytes(frame))
        self.assertEqual(self.host.stats["tcp_bad_checksum"], 1)
        self.assertEqual(self.replies(), [])

    def test_truncated(self) -> None:
        """
        Frames cut anywhere (Ethernet, IP, TCP header) are dropped.
        """
        frame = self.segment(P.TCP_SYN)
        for length in range(0, len(frame)):
            self.host.receive(frame[:length])
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.host.tcp.conns, {})
        self.assertGreater(self.host.stats["ip4_bad"], 0)

    def test_outOfWindowReset(self) -> None:
        """
        A RST outside the window is ignored; in it, it ends the connection.
        """
        self.host.receive(self.segment(P.TCP_SYN, seq=1000))
        (synAck,) = self.replies()
        iss = synAck[2]
        self.host.receive(self.segment(P.TCP_ACK, seq=1001, ack=iss + 1))
        self.assertEqual(len(self.host.tcp.established()), 1)
        self.host.receive(self.segment(P.TCP_RST, seq=1001 + 10_000_000))
        self.assertEqual(len(self.host.tcp.established()), 1)
        self.host.receive(self.segment(P.TCP_RST, seq=1001))
        self.assertEqual(self.host.tcp.established(), [])

    def test_synFlood(self) -> None:
        """
        Tens of thousands of SYNs from spoofed ports: the half-open table
        stays within its bound, nothing is accepted into the application
        beyond it, and a real client still connects.
        """
        for i in range(20000):
            self.host.receive(self.segment(P.TCP_SYN, sport=1024 + i, seq=i))
        self.assertLessEqual(len(self.host.tcp.halfOpen), TCP_HALFOPEN)
        self.assertLessEqual(len(self.host.tcp.conns), TCP_HALFOPEN)
        self.assertLessEqual(len(self.host.timers), 4 * TCP_HALFOPEN + 2048)
        self.out.clear()
        self.host.receive(self.segment(P.TCP_SYN, sport=50000, seq=7))
        (synAck,) = self.replies()
        self.host.receive(self.segment(P.TCP_ACK, sport=50000, seq=8, ack=synAck[2] + 1))
        self.assertEqual(len(self.host.tcp.established()), 1)

    def test_notOurs(self) -> None:
        """
        Unicast frames to another MAC, packets to another address, and ARP
        for another address get nothing.
        """
        frame = self.segment(P.TCP_SYN)
        self.host.receive(b"\x02\0\0\0\0\x99" + frame[6:])
        other = frame[:30] + bytes([10, 5, 0, 3]) + frame[34:]
        self.host.receive(other)
        arp = P.ARP.pack(1, P.ETH_IP, 6, 4, 1, MAC_A, bytes([10, 5, 0, 1]), P.ZERO_MAC,
                         bytes([10, 5, 0, 3]))
        self.host.receive(P.ETH.pack(P.BROADCAST_MAC, MAC_A, P.ETH_ARP) + arp)
        self.assertEqual(self.out, [])

    def test_unknownProtocol(self) -> None:
        """
        An IP protocol nothing handles is answered with ICMP protocol
        unreachable.
        """
        packet = P.ipv4(bytes([10, 5, 0, 1]), bytes([10, 5, 0, 2]), 132, b"sctp?")
        self.host.receive(P.ETH.pack(MAC_B, MAC_A, P.ETH_IP) + packet)
        (reply,) = self.out
        self.assertEqual((reply[23], reply[34], reply[35]), (P.PROTO_ICMP, 3, 2))


class ConfigTests(SynchronousTestCase):
    def test_parse(self) -> None:
        config = parseStackOptions(ip="10.0.0.2/24", ip6="fd00::2/64",
                                   gw="10.0.0.1,fd00::1", mac="02:00:00:00:00:01")
        self.assertEqual(config.mac, b"\x02\0\0\0\0\x01")
        self.assertEqual(str(config.ip4), "10.0.0.2/24")
        self.assertEqual(str(config.gateway6), "fd00::1")
        self.assertTrue(parseStackOptions(ip="dhcp").dhcp)
        mac = parseStackOptions(ip="dhcp").mac
        self.assertEqual(mac[0] & 3, 2)  # locally administered, unicast

    def test_errorsNameTheKey(self) -> None:
        for kwargs, key in [({"ip": "10.0.0.300/24"}, "ip="), ({"ip": "10.0.0.2"}, "ip="),
                            ({"ip6": "fd00::zz/64"}, "ip6="), ({"mac": "01:00:00:00:00:01"},
                                                               "mac="),
                            ({"mac": "nope"}, "mac="), ({"gw": "x"}, "gw="),
                            ({"ip": "10.0.0.2/24", "gw": "10.1.0.1"}, "gw="),
                            ({"mtu": "9"}, "mtu=")]:
            with self.assertRaises(StackConfigError) as caught:
                parseStackOptions(**kwargs)
            message = str(caught.exception)
            self.assertIn(key, message)
            self.assertNotIn("\n", message)


class EndpointStringTests(SynchronousTestCase):
    def test_parsed(self) -> None:
        """
        The plugin's server and client strings give stack endpoints.
        """
        from vdetwist.stack.endpoints import StackClientEndpoint, StackServerEndpoint

        vnl = quoteStringArgument("vde:///tmp/sw")
        server = serverFromString(Clock(), f"vdestack:vnl={vnl}:ip=10.0.0.2/24:port=80")
        self.assertIsInstance(server, StackServerEndpoint)
        self.assertEqual((server.vnl, server.port), ("vde:///tmp/sw", 80))
        client = clientFromString(
            Clock(), f"vdestack:vnl={vnl}:ip=dhcp:host={quoteStringArgument('fd00::1')}:port=8")
        self.assertIsInstance(client, StackClientEndpoint)
        self.assertEqual(client.host, "fd00::1")

    def test_malformed(self) -> None:
        vnl = quoteStringArgument("vde:///tmp/sw")
        for text, key in [(f"vdestack:vnl={vnl}:ip=10.0.0.2:port=80", "ip="),
                          (f"vdestack:vnl={vnl}:ip=10.0.0.2/24:port=http", "port="),
                          (f"vdestack:vnl={vnl}:ip=10.0.0.2/24:port=80:colour=red", "colour"),
                          ("vdestack:ip=10.0.0.2/24:port=80", "vnl="),
                          (f"vdestack:vnl={vnl}:port=80", "ip="),
                          (f"vdestack:vnl={vnl}:ip=dhcp:mac=zz:port=80", "mac=")]:
            with self.assertRaises(ValueError) as caught:
                serverFromString(Clock(), text)
            self.assertIn(key, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            clientFromString(Clock(), f"vdestack:vnl={vnl}:ip=dhcp:host=exa mple:port=80")
        self.assertIn("host=", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            clientFromString(Clock(), f"vdestack:vnl={vnl}:ip=dhcp:dns=ns:host=a.test:port=80")
        self.assertIn("dns='ns'", str(caught.exception))
        named = clientFromString(Clock(), f"vdestack:vnl={vnl}:ip=dhcp:host=web.test.:port=80")
        self.assertEqual(named.host, "web.test.")


class AutoconfTests(SynchronousTestCase):
    """
    DHCP and SLAAC against slirp's engine (its DHCP server and router
    advertisements), both sans-IO on one clock.
    """

    def setUp(self) -> None:
        from vdetwist.slirp.engine import SlirpEngine
        from vdetwist.slirp.memhost import MemoryHost

        self.time = 0.0
        self.wire: list[tuple[str, bytes]] = []
        self.serverUp = True
        clock = lambda: self.time  # noqa: E731
        config = SlirpConfig(leaseTime=60)
        self.slirp = SlirpEngine(config, MemoryHost(), lambda f: self.wire.append(("s", f)),
                                 clock=clock, strict=True)
        self.host = HostStack(parseStackOptions(ip="dhcp", mac="02:00:00:00:00:0c"),
                              lambda f: self.wire.append(("h", f)), clock, strict=True)
        self.addCleanup(self.slirp.close)
        self.addCleanup(self.host.close)
        self.slirp.start()
        self.host.start()

    def elapse(self, seconds: float) -> None:
        end = self.time + seconds
        while True:
            while self.wire:
                side, frame = self.wire.pop(0)
                if side == "h":
                    if self.serverUp:
                        self.slirp.receive(frame)
                else:
                    self.host.receive(frame)
            if self.time >= end:
                return
            self.time = min(end, self.time + 0.25)
            self.slirp.advance(self.time)
            self.host.advance(self.time)

    def test_leaseRenewedAndLost(self) -> None:
        """
        The lease is bound, renewed from the server at T1 (half of its 60
        s), and lost when it ends with the server gone: then discovery
        starts again.
        """
        self.elapse(5)
        self.assertEqual(self.host.address4, bytes([10, 0, 2, 15]))
        self.assertEqual(self.host.gateway4, bytes([10, 0, 2, 2]))
        self.assertEqual(self.host.stats["dhcp_bound"], 1)
        self.elapse(30)
        self.assertEqual(self.host.stats["dhcp_bound"], 2)  # renewed
        self.assertEqual(self.host.dhcp.stateName, "BOUND")
        self.serverUp = False
        self.elapse(70)
        self.assertIsNone(self.host.address4)
        self.assertEqual(self.host.dhcp.stateName, "SELECTING")
        self.serverUp = True
        self.elapse(40)
        self.assertEqual(self.host.address4, bytes([10, 0, 2, 15]))

    def test_slaac(self) -> None:
        """
        Slirp's router advertisement gives an address in fd00::/64 from the
        MAC, and the default router.
        """
        self.elapse(5)
        self.assertIn(bytes.fromhex("fd000000000000000000000000000000")[:8]
                      + bytes.fromhex("0000:00ff:fe00:000c".replace(":", "")),
                      self.host.addresses6)
        self.assertEqual(self.host.gateway6, P.IP6_ROUTER_LL)


ROUTER_LL = bytes.fromhex("fe800000000000000000000000000001")
SLAAC_PREFIX = bytes.fromhex("fd990000000000000000000000000000")
#: The address L{slaacHost} forms from L{SLAAC_PREFIX}.
SLAAC_ADDRESS = SLAAC_PREFIX[:8] + bytes.fromhex("000000fffe00000d")


def slaacHost(now: list[float]) -> HostStack:
    """
    A strict host stack with C{ip6=slaac} (MAC 02:00:00:00:00:0d) whose
    clock reads C{now[0]}.
    """
    return HostStack(parseStackOptions(ip6="slaac", mac="02:00:00:00:00:0d"),
                     lambda f: None, lambda: now[0], strict=True)


def routerAdvert(valid: int, preferred: int, routerLifetime: int) -> bytes:
    """
    The frame of L{ROUTER_LL}'s router advertisement (from C{MAC_A}) of
    L{SLAAC_PREFIX}/64, on-link and autonomous, with these lifetimes.
    """
    from vdetwist.slirp.dhcp import ND_RA, OPT_SOURCE_LL

    option = struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, valid, preferred, 0, SLAAC_PREFIX)
    body = struct.pack("!BBHII", 64, 0, routerLifetime, 0, 0) + option + \
        bytes((OPT_SOURCE_LL, 1)) + MAC_A
    message = P.icmp6(ROUTER_LL, P.IP6_ALL_NODES, ND_RA, 0, body)
    return P.ETH.pack(P.multicastMac6(P.IP6_ALL_NODES), MAC_A, P.ETH_IPV6) + \
        P.ipv6(ROUTER_LL, P.IP6_ALL_NODES, P.PROTO_ICMPV6, message, 255)


class SlaacLifetimeTests(SynchronousTestCase):
    def test_expiry(self) -> None:
        """
        An advertised prefix's address and the router are forgotten when
        their lifetimes end.
        """
        now = [0.0]
        host = slaacHost(now)
        router = ROUTER_LL
        host.receive(routerAdvert(valid=10, preferred=5, routerLifetime=20))
        address = SLAAC_ADDRESS
        self.assertIn(address, host.tentative6)
        now[0] = DAD_WAIT
        host.advance()
        self.assertIn(address, host.addresses6)
        self.assertEqual(host.gateway6, router)
        now[0] = 11.0
        host.advance()
        self.assertNotIn(address, host.addresses6)
        self.assertEqual(host.prefixes6, {})
        self.assertEqual(host.gateway6, router)  # 20 s
        now[0] = 21.0
        host.advance()
        self.assertIsNone(host.gateway6)
        self.assertIn(host.linkLocal, host.addresses6)


class MemoryRegistry:
    """
    Opens every VNL as one end of an in-memory cable (the other end kept
    in C{peers}), as L{vdetwist.registry.Registry.open} does.
    """

    def __init__(self) -> None:
        self.peers: list = []
        self.opened = 0

    def open(self, reactor, vnl, description, args):
        from twisted.internet.defer import succeed

        self.opened += 1
        mine, theirs = plugPair("stack", "peer", capacity=4096)
        self.peers.append(theirs)
        return succeed(mine)


class SharedStackTests(SynchronousTestCase):
    def open(self, clock, registry, **settings):
        from vdetwist.stack.api import sharedStack

        got = result(sharedStack(clock, "vde:///tmp/sw", registry=registry, **settings))
        self.assertEqual(len(got), 1)
        return got[0]

    def test_sameSettingsShare(self) -> None:
        """
        Endpoints naming one network and address share a stack whether they
        repeat its settings (spelt differently) or leave them out.
        """
        clock, registry = Clock(), MemoryRegistry()
        first = self.open(clock, registry, ip="10.0.0.2/24", gw="10.0.0.1",
                          mac="02:00:00:00:00:0A", ip6="fd00::2/64")
        self.addCleanup(first.close)
        self.assertIsInstance(first, VdeStack)
        for settings in [{}, {"gw": "10.0.0.1"}, {"mac": "2:0:0:0:0:a"},
                         {"ip6": "fd00:0::2/64", "mtu": None}]:
            self.assertIs(self.open(clock, registry, ip="10.0.0.2/24", **settings), first)
        self.assertEqual(registry.opened, 1)

    def test_conflictNamesKeyAndValues(self) -> None:
        """
        A setting given differently from the one the shared stack was
        opened with (or that it was opened without) fails in one line
        naming the key and both values; the stack is left as it was.
        """
        clock, registry = Clock(), MemoryRegistry()
        first = self.open(clock, registry, ip="10.0.0.2/24", gw="10.0.0.1", mtu="1500")
        self.addCleanup(first.close)
        for settings, words in [({"gw": "10.0.0.254"}, ["gw='10.0.0.254'", "gw='10.0.0.1'"]),
                                ({"mtu": "9000"}, ["mtu='9000'", "mtu='1500'"]),
                                ({"mac": "02:00:00:00:00:01"}, ["mac='02:00:00:00:00:01'",
                                                                "without mac="])]:
            failure = self.open(clock, registry, ip="10.0.0.2/24", **settings)
            self.assertIsInstance(failure.value, StackConfigError)
            message = str(failure.value)
            self.assertNotIn("\n", message)
            for word in words:
                self.assertIn(word, message)
        self.assertEqual(registry.opened, 1)
        self.assertEqual(first.host.gateway4, bytes([10, 0, 0, 1]))

    def test_conflictWhileOpening(self) -> None:
        """
        The check holds while the shared stack is still opening (waiting
        for its DHCP lease).
        """
        from vdetwist.stack.api import sharedStack

        clock, registry = Clock(), MemoryRegistry()
        pending = result(sharedStack(clock, "vde:///tmp/sw", ip="dhcp", mtu="1400",
                                     registry=registry))
        self.assertEqual(pending, [])
        failure = self.open(clock, registry, ip="dhcp", mtu="1500")
        self.assertIn("mtu='1500' conflicts with mtu='1400'", str(failure.value))
        clock.advance(31)  # no lease: the first fails, the stack closes
        self.assertEqual(len(pending), 1)


class Router:
    """
    A stack at A4/A6 whose peer is a hand-driven router at C4/C6 (MAC_C):
    the test reads what the stack sends and answers with its own frames.
    """

    C4, C6 = "10.5.0.9", "fd05::9"

    def __init__(self, test: SynchronousTestCase) -> None:
        from ipaddress import ip_address

        from vdetwist.testing import FrameCollector

        self.clock = Clock()
        left, self.plug = plugPair("stack", "router", capacity=4096)
        self.stack = VdeStack(self.clock, left, StackConfig(
            mac=MAC_A, ip4=IPv4Interface(f"{A4}/24"), ip6=_iface6(A6)))
        self.stack.host.strict = True
        self.seen = FrameCollector()
        self.plug.startReceiving(self.seen)
        for address in (self.C4, self.C6):
            self.stack.host.link.learn(ip_address(address).packed, MAC_C)
        test.addCleanup(self.stack.close)

    def sent(self, proto: int) -> bytes:
        """
        The last IP packet of protocol C{proto} the stack sent.
        """
        for frame in reversed(self.seen.frames):
            packet = frame[P.ETH_HLEN:]
            if (packet[9] if packet[0] >> 4 == 4 else packet[6]) == proto:
                return packet
        raise AssertionError(f"no packet of protocol {proto} was sent")

    def answer(self, kind: int, code: int, packet: bytes) -> None:
        """
        An ICMP error of C{kind} and C{code} quoting C{packet}, from the
        router.
        """
        from vdetwist.slirp.ipv4 import unreachable
        from vdetwist.slirp.ipv6 import unreachable6

        if packet[0] >> 4 == 4:
            error = unreachable(packet, code, bytes([10, 5, 0, 9]), kind)
            frame = P.ETH.pack(MAC_A, MAC_C, P.ETH_IP) + error
        else:
            from ipaddress import ip_address

            error = unreachable6(packet, code, ip_address(self.C6).packed, kind)
            frame = P.ETH.pack(MAC_A, MAC_C, P.ETH_IPV6) + error
        self.plug.send(frame)
        self.clock.advance(0)


MAC_C = b"\x02\0\0\0\0\x0c"


class IcmpErrorTests(SynchronousTestCase):
    """
    ICMP errors reach sockets as a kernel delivers them.
    """

    def connecting(self, router: Router, host: str):
        got = result(router.stack.connectTCP(host, 80, Factory.forProtocol(Recorder)))
        router.clock.advance(0)
        self.assertEqual(got, [])
        return got

    def test_connectRefused(self) -> None:
        """
        A SYN answered with ICMP port (or protocol) unreachable fails the
        connect with ConnectionRefusedError at once, both families.
        """
        cases = ((Router.C4, 3, 3), (Router.C4, 3, 2), (Router.C6, 1, 4))
        for router, reason in self.answeredConnects(cases, error.ConnectionRefusedError):
            self.assertIn("unreachable", str(reason))
            self.assertEqual(router.stack.host.tcp.conns, {})

    def answeredConnects(self, cases, expected: type) -> list:
        """
        For each C{(host, ICMP type, code)}: a connect to C{host} whose SYN
        is answered so, which must fail at once with C{expected}:
        C{(router, the exception)} each.
        """
        answered = []
        for host, kind, code in cases:
            router = Router(self)
            got = self.connecting(router, host)
            router.answer(kind, code, router.sent(P.PROTO_TCP))
            self.assertEqual(len(got), 1)
            got[0].trap(expected)
            answered.append((router, got[0].value))
        return answered

    def test_connectUnreachable(self) -> None:
        """
        A SYN answered with host or network unreachable, or time exceeded,
        fails the connect with NoRouteError in one line.
        """
        cases = ((Router.C4, 3, 1), (Router.C4, 3, 0), (Router.C4, 11, 0),
                 (Router.C6, 1, 3), (Router.C6, 3, 0))
        for _, reason in self.answeredConnects(cases, error.NoRouteError):
            self.assertNotIn("\n", str(reason))

    def test_forgedQuoteIgnored(self) -> None:
        """
        An error quoting a sequence number the SYN did not carry (a blind
        attacker's guess) changes nothing.
        """
        router = Router(self)
        got = self.connecting(router, Router.C4)
        syn = bytearray(router.sent(P.PROTO_TCP))
        seq = int.from_bytes(syn[24:28], "big")
        syn[24:28] = ((seq + 1) & 0xFFFFFFFF).to_bytes(4, "big")
        router.answer(3, 3, bytes(syn))
        self.assertEqual(got, [])
        self.assertEqual(router.stack.host.stats["tcp_icmp_soft_errors"], 1)

    def test_establishedIgnoresErrors(self) -> None:
        """
        An established connection takes ICMP errors quoting its segments
        as soft errors: it carries on (RFC 1122 4.2.3.9, Linux without
        IP_RECVERR).
        """
        net = Network(self)
        servers: list = []
        net.b.listenTCP(80, Factory.forProtocol(lambda: servers.append(Recorder()) or servers[-1]))
        client = result(net.a.connectTCP(B4, 80, Factory.forProtocol(Recorder)))
        net.until(lambda: client and servers, "the connection")
        conn = next(iter(net.a.host.tcp.conns.values()))
        segment = P.tcpSegment(bytes([10, 5, 0, 1]), bytes([10, 5, 0, 2]), conn.rport,
                               conn.gport, conn.sndUna, 0, 0x10, 1000)
        quoted = P.ipv4(bytes([10, 5, 0, 1]), bytes([10, 5, 0, 2]), P.PROTO_TCP, segment)
        from vdetwist.slirp.ipv4 import unreachable

        for code in (1, 3):
            net.b.plug.send(P.ETH.pack(MAC_A, MAC_B, P.ETH_IP)
                            + unreachable(quoted, code, bytes([10, 5, 0, 2])))
        net.run(0.1)
        self.assertEqual(net.a.host.stats["tcp_icmp_soft_errors"], 2)
        client[0].transport.write(b"still here")
        net.until(lambda: servers[0].received() == b"still here", "the data")
        self.assertIsNone(client[0].reason)

    def test_connectedUdpRefused(self) -> None:
        """
        A port unreachable for a datagram a connected UDP port sent calls
        its protocol's connectionRefused; an unconnected port hears
        nothing (as a kernel's sockets).
        """
        for host, kind, code in ((Router.C4, 3, 3), (Router.C6, 1, 4)):
            router = Router(self)

            class Refusable(DatagramProtocol):
                refused = 0

                def connectionRefused(self) -> None:
                    self.refused += 1

            connected, loose = Refusable(), Refusable()
            interface = "::" if ":" in host else ""
            router.stack.listenUDP(0, connected, interface).connect(host, 53)
            router.stack.listenUDP(0, loose, interface)
            connected.transport.write(b"query")
            router.clock.advance(0)
            router.answer(kind, code, router.sent(P.PROTO_UDP))
            loose.transport.write(b"query", (host, 53))
            router.clock.advance(0)
            router.answer(kind, code, router.sent(P.PROTO_UDP))
            self.assertEqual((connected.refused, loose.refused), (1, 0))

    def test_udpConnect(self) -> None:
        """
        A connected UDP port receives only its peer's datagrams and writes
        without an address; bad connects are refused as Twisted's are.
        """
        net = Network(self)

        mine, peer, stranger = Keep(), Keep(), Keep()
        port = net.a.listenUDP(0, mine)
        net.b.listenUDP(53, peer)
        net.b.listenUDP(54, stranger)
        port.connect(B4, 53)
        with self.assertRaises(RuntimeError):
            port.connect(B4, 54)
        with self.assertRaises(error.InvalidAddressError):
            net.a.listenUDP(0, Keep()).connect("example.com", 53)
        with self.assertRaises(error.InvalidAddressError):
            port.write(b"elsewhere", (B4, 54))
        mine.transport.write(b"hello")
        net.until(lambda: peer.got, "the datagram")
        stranger.transport.write(b"spam", (A4, port.getHost().port))
        peer.transport.write(b"answer", peer.got[0][1])
        net.until(lambda: mine.got, "the answer")
        net.run(0.1)
        self.assertEqual(mine.got, [(b"answer", (B4, 53))])

    def test_reassemblyTimeExceeded(self) -> None:
        """
        A datagram whose first fragment came but not the rest is answered,
        once reassembly gives up, with ICMP time exceeded (code 1)
        quoting it.
        """
        router = Router(self)
        payload = P.udpSegment(bytes([10, 5, 0, 9]), bytes([10, 5, 0, 1]), 9, 9, b"x" * 64)
        packet = bytearray(P.ipv4(bytes([10, 5, 0, 9]), bytes([10, 5, 0, 1]), P.PROTO_UDP,
                                  payload))
        packet[6] = 0x20  # more fragments
        packet[10:12] = b"\0\0"
        from vdetwist.wire.checksum import checksum

        packet[10:12] = checksum(bytes(packet[:20])).to_bytes(2, "big")
        router.plug.send(P.ETH.pack(MAC_A, MAC_C, P.ETH_IP) + bytes(packet))
        router.clock.advance(0)
        router.clock.pump([1.0] * 70)
        icmp = router.sent(P.PROTO_ICMP)
        self.assertEqual((icmp[20], icmp[21]), (11, 1))
        self.assertEqual(icmp[28 + 12 : 28 + 20], bytes([10, 5, 0, 9, 10, 5, 0, 1]))


class ResolveTests(SynchronousTestCase):
    """
    Names resolved with twisted.names over the stack's own UDP: stack B
    runs a twisted.names server from a hosts file.
    """

    def setUp(self) -> None:
        from twisted.names import dns, hosts, server

        self.net = Network(self)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"{B4} web.vdetwist.test\n{B6} web.vdetwist.test\n")
        factory = server.DNSServerFactory(clients=[hosts.Resolver(file=path)])
        self.net.b.listenUDP(53, dns.DNSDatagramProtocol(factory))
        self.net.b.listenUDP(53, dns.DNSDatagramProtocol(factory), "::")

    def test_connectByName(self) -> None:
        """
        connectTCP and the client endpoint take a name, resolved with the
        name server the stack was given.
        """
        net = self.net
        net.a.host.dnsServers4 = [bytes([10, 5, 0, 2])]  # as DHCP gives it
        servers: list = []
        net.b.listenTCP(80, Factory.forProtocol(lambda: servers.append(Recorder())
                                                or servers[-1]))
        client = result(net.a.clientEndpoint("web.vdetwist.test", 80)
                        .connect(Factory.forProtocol(Recorder)))
        net.until(lambda: client and servers, "the connection")
        self.assertEqual(client[0].transport.getPeer(), IPv4Address("TCP", B4, 80))
        self.assertEqual(net.a.host.stats["udp_in"], 1)  # the answer

    def test_ipv6Only(self) -> None:
        """
        A stack without IPv4 asks for AAAA records, of an IPv6 name server
        (C{dns=}).
        """
        from ipaddress import IPv6Address as Address

        net = self.net
        net.a.host.setAddress4(None)
        net.a.host.settings = StackConfig(mac=MAC_A, dns=(Address(B6),))
        got = result(net.a.resolve("web.vdetwist.test"))
        net.until(lambda: got, "the answer")
        self.assertEqual(got, [B6])

    def test_overTCP(self) -> None:
        """
        The resolver asks over the stack's TCP when it must (a truncated
        answer); a name server it cannot reach fails the query.
        """
        from twisted.names import dns, hosts, server

        net = self.net
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"{B4} web.vdetwist.test\n")
        net.b.listenTCP(53, server.DNSServerFactory(clients=[hosts.Resolver(file=path)]))
        net.a.host.dnsServers4 = [bytes([10, 5, 0, 2])]
        got = result(net.a.resolver().queryTCP([dns.Query(b"web.vdetwist.test", dns.A)]))
        net.until(lambda: got, "the answer over TCP")
        self.assertEqual(got[0].answers[0].payload.dottedQuad(), B4)
        net.b.close()
        net.run(0.1)
        refused = result(net.a.resolver().queryTCP([dns.Query(b"web.vdetwist.test", dns.A)]))
        net.until(lambda: refused, "the failure", seconds=60)
        self.assertIsInstance(refused[0].value, error.ConnectError)

    def test_unknownName(self) -> None:
        """
        A name that does not resolve fails in one line naming it; so does
        any name without a name server.
        """
        net = self.net
        got = result(net.a.connectTCP("web.vdetwist.test", 80, Factory.forProtocol(Recorder)))
        got[0].trap(error.DNSLookupError)
        self.assertIn("'web.vdetwist.test'", str(got[0].value))
        self.assertIn("dns=", str(got[0].value))
        net.a.host.dnsServers4 = [bytes([10, 5, 0, 2])]
        got = result(net.a.connectTCP("nowhere.vdetwist.test", 80,
                                      Factory.forProtocol(Recorder)))
        net.until(lambda: got, "the answer")
        got[0].trap(error.DNSLookupError)
        message = str(got[0].value)
        self.assertIn("'nowhere.vdetwist.test' does not resolve", message)
        self.assertNotIn("\n", message)
        self.assertEqual(result(net.a.resolve(B6)), [B6])

    def test_silentServer(self) -> None:
        """
        A name server that does not answer: the lookup fails once its
        retries are spent, naming the server.
        """
        net = self.net
        net.a.host.dnsServers4 = [bytes([10, 5, 0, 77])]
        got = result(net.a.resolve("web.vdetwist.test", timeout=6))
        net.until(lambda: got, "the lookup to give up", seconds=20)
        got[0].trap(error.DNSLookupError)
        self.assertIn("no answer from 10.5.0.77", str(got[0].value))


class SocketOptionTests(SynchronousTestCase):
    """
    setTcpKeepAlive and setTcpNoDelay act as a kernel's socket options.
    """

    connect = TCPTests.connect

    def test_keepAliveAnswered(self) -> None:
        """
        With keepalive on, an idle connection is probed after the stack's
        idle time and every idle * 75 / 7200 s while it stays idle; a live
        peer answers and the connection stays.
        """
        net = Network(self)
        net.a.host.tcp.keepAliveIdle = 72.0  # probes every 0.75 s
        client, server = self.connect(net, B4)
        self.assertFalse(client.transport.getTcpKeepAlive())
        client.transport.setTcpKeepAlive(1)
        self.assertTrue(client.transport.getTcpKeepAlive())
        net.run(71)
        self.assertEqual(net.a.host.stats["tcp_keepalive_probes"], 0)
        net.run(2)
        self.assertEqual(net.a.host.stats["tcp_keepalive_probes"], 1)
        net.run(72 * 3)
        self.assertEqual(net.a.host.stats["tcp_keepalive_probes"], 4)  # one per idle period
        self.assertIsNone(client.reason)
        client.transport.write(b"alive")
        net.until(lambda: server.received() == b"alive", "the data")
        client.transport.setTcpKeepAlive(0)
        net.run(200)
        self.assertEqual(net.a.host.stats["tcp_keepalive_probes"], 4)

    def test_keepAliveDeadPeer(self) -> None:
        """
        A peer that stops answering gets 9 probes, 0.75 s apart (idle 72 s
        scaled as Linux's 7200/75), then the connection ends with
        TimeoutError; without keepalive it would have stayed.
        """
        net = Network(self)
        net.a.host.tcp.keepAliveIdle = 72.0
        client, server = self.connect(net, B4)
        client.transport.setTcpKeepAlive(True)
        net.a.plug.peer = net.b.plug.peer = None  # the cable is cut
        net.run(72 + 9 * 0.75 - 0.1)
        self.assertIsNone(client.reason)
        self.assertEqual(net.a.host.stats["tcp_keepalive_probes"], 9)
        net.run(1)
        client.reason.trap(error.TimeoutError)
        self.assertIn("keepalive", str(client.reason.value))
        self.assertEqual(net.a.host.tcp.conns, {})
        self.assertIsNone(server.reason)  # the peer never heard

    def test_nagle(self) -> None:
        """
        With TCP_NODELAY off, small writes made while data is
        unacknowledged leave together once it is acknowledged; with it on
        (the default) each goes at once.
        """
        for noDelay, segments in ((True, 20), (False, 2)):
            net = Network(self)
            client, server = self.connect(net, B4)
            self.assertTrue(client.transport.getTcpNoDelay())
            client.transport.setTcpNoDelay(noDelay)
            self.assertEqual(client.transport.getTcpNoDelay(), noDelay)
            before = net.a.host.stats["tcp_segments_out"]
            for i in range(20):
                client.transport.write(b"%02d" % i)
            expected = b"".join(b"%02d" % i for i in range(20))
            net.until(lambda: server.received() == expected, "the data")
            # (the server sends no data: the client's segments all carry some)
            self.assertEqual(net.a.host.stats["tcp_segments_out"] - before, segments)

    def test_nagleFullSegments(self) -> None:
        """
        Nagle never holds back a full segment, nor the FIN's data.
        """
        net = Network(self)
        client, server = self.connect(net, B4)
        client.transport.setTcpNoDelay(False)
        client.transport.write(b"x")
        client.transport.write(b"y" * 100000)
        client.transport.write(b"z")
        client.transport.loseConnection()
        net.until(lambda: server.readClosed, "the FIN")
        self.assertEqual(server.received(), b"x" + b"y" * 100000 + b"z")


def logged(test: SynchronousTestCase) -> list:
    """
    The log events emitted during C{test}.
    """
    from twisted.logger import globalLogPublisher

    events: list = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class DuplicateAddressTests(SynchronousTestCase):
    """
    IPv6 addresses, static and SLAAC, go through duplicate address
    detection (RFC 4862 5.4) before they are used.
    """

    def test_staticDuplicate(self) -> None:
        """
        A stack whose static IPv6 address another node already has (it
        answers the detection's solicitation) does not use it and says so
        in one log line; the other keeps it.
        """
        from twisted.logger import formatEvent

        from vdetwist.testing import FrameCollector

        events = logged(self)
        clock = Clock()
        left, right = plugPair("a", "b", capacity=4096)
        right.startReceiving(FrameCollector())  # what a sends before b is there
        a = VdeStack(clock, left, StackConfig(mac=MAC_A, ip6=_iface6(A6)))
        self.addCleanup(a.close)
        self.assertNotIn(f"{A6}/64", a.addresses())  # tentative
        clock.pump([0.1] * 11)
        self.assertIn(f"{A6}/64", a.addresses())
        b = VdeStack(clock, right, StackConfig(mac=MAC_B, ip6=_iface6(A6)))
        self.addCleanup(b.close)
        clock.pump([0.1] * 20)
        self.assertNotIn(f"{A6}/64", b.addresses())
        self.assertIn(f"{A6}/64", a.addresses())
        self.assertEqual(b.host.stats["dad_duplicates"], 1)
        self.assertEqual(a.host.stats["dad_duplicates"], 0)
        lines = [formatEvent(e) for e in events if "duplicate" in formatEvent(e)]
        self.assertEqual(lines, [f"vdestack: {A6} is in use by another node on the network"
                                 " (duplicate address detection): not configured"])
        # the address is a's: b's packets to it go to a, not to itself
        rtt = result(b.ping(A6))
        clock.pump([0.1] * 5)
        self.assertIsInstance(rtt[0], float)
        self.assertEqual(a.host.stats["icmp_echo_answered"], 1)

    def test_tentativeNotAnswered(self) -> None:
        """
        While tentative, an address is not answered for, nor taken as a
        destination; once detection passes it is.
        """
        net = Network(self)
        self.assertNotIn(bytes.fromhex("fd050000000000000000000000000002"),
                         net.b.host.addresses6)
        rtt = result(net.a.ping(B6, timeout=10))
        net.until(lambda: rtt, "the echo reply once B6 is configured")
        self.assertIsInstance(rtt[0], float)
        self.assertGreater(net.clock.seconds(), DAD_WAIT - 0.05)

    def test_slaacDuplicate(self) -> None:
        """
        A SLAAC address another node advertises during detection is not
        configured, and is not tried again when the prefix is advertised
        again.
        """
        from vdetwist.slirp.dhcp import ND_NA, OPT_TARGET_LL

        now = [0.0]
        host = slaacHost(now)
        ra = routerAdvert(valid=600, preferred=300, routerLifetime=1800)
        host.receive(ra)
        address = SLAAC_ADDRESS
        self.assertIn(address, host.tentative6)
        advert = P.icmp6(address, P.IP6_ALL_NODES, ND_NA, 0, struct.pack("!I", 0x20000000)
                         + address + bytes((OPT_TARGET_LL, 1)) + MAC_A)
        host.receive(P.ETH.pack(P.multicastMac6(P.IP6_ALL_NODES), MAC_A, P.ETH_IPV6)
                     + P.ipv6(address, P.IP6_ALL_NODES, P.PROTO_ICMPV6, advert, 255))
        now[0] = 2.0
        host.advance()
        host.receive(ra)
        now[0] = 4.0
        host.advance()
        self.assertNotIn(address, host.addresses6)
        self.assertEqual(host.tentative6, {})
        self.assertEqual(host.stats["dad_duplicates"], 1)


class AddressConflictTests(SynchronousTestCase):
    """
    IPv4 address conflicts (RFC 5227, briefly): a static address is probed
    at start, and a node using it is reported and defended against.
    """

    def test_conflict(self) -> None:
        """
        Two stacks given one static IPv4 address: each hears the other's
        probe answer or announcement, logs one line naming the address and
        the other MAC, and defends it at most every 10 s.
        """
        from twisted.logger import formatEvent

        from vdetwist.stack.neighbours import DEFEND_INTERVAL

        events = logged(self)
        clock = Clock()
        left, right = plugPair("a", "b", capacity=4096)
        a = VdeStack(clock, left, StackConfig(mac=MAC_A, ip4=IPv4Interface(f"{A4}/24")))
        b = VdeStack(clock, right, StackConfig(mac=MAC_B, ip4=IPv4Interface(f"{A4}/24")))
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        clock.pump([0.1] * 10)
        lines = [formatEvent(e) for e in events if "conflict" in formatEvent(e)]
        self.assertEqual(sorted(lines), [
            f"vdestack: {A4} is also used by {mac.hex(':')} on the network (address"
            " conflict): defending it" for mac in (MAC_A, MAC_B)])
        self.assertGreater(a.host.stats["arp_conflicts"], 1)  # rate limited
        clock.pump([0.5] * int(DEFEND_INTERVAL * 2))
        self.assertEqual(len([e for e in events if "conflict" in formatEvent(e)]), 2)

    def test_noConflict(self) -> None:
        """
        A stack alone with its address probes it once and hears nothing.
        """
        net = Network(self)
        net.run(1)
        self.assertEqual(net.a.host.stats["arp_conflicts"], 0)
        self.assertEqual(net.b.host.stats["arp_conflicts"], 0)
