"""
slirp with offloads (issue 11), on synthetic frames with a task.Clock and
the in-memory host: TSO super-segments and partial checksums from an
offloading guest link go into the engine without a checksum check, headers
that lie are dropped and counted; toward a guest link that takes vnet
frames, TCP data leaves in segments of many MSSs with partial checksums
(completed here as the guest's kernel would, then checked), in the guest's
window and MSS, and retransmission stays right with them.  The namespace
guest is in L{tests.interop.test_slirp_offload_netns}.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.unit.test_slirp_tcp import Peer, mssOption, wsOption
from vdetwist.backends.slirp import SlirpPlug
from vdetwist.interfaces import IVnetPlug, IVnetReceiver
from vdetwist.slirp import packets as P
from vdetwist.slirp import tcp as T
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.memhost import MemoryHost
from vdetwist.slirp.testing import GATEWAY, Guest, Harness, decode, describe
from vdetwist.wire.checksum import finish, pseudo4, residue
from vdetwist.wire.vnethdr import (
    DATA_VALID, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NEEDS_CSUM, PLAIN, TUN_F_TSO4,
    TUN_F_TSO6, VNET_HDRLEN, VnetHeader,
)

SYN, ACK, FIN, PSH = P.TCP_SYN, P.TCP_ACK, P.TCP_FIN, P.TCP_PSH
M32 = 0xFFFFFFFF
GATEWAY6 = bytes.fromhex("fd000000000000000000000000000002")


def complete(vframe: bytes) -> tuple[VnetHeader, bytes]:
    """
    What a receiving kernel does with a C{NEEDS_CSUM} vnet frame: the
    checksum field holds the pseudo-header's sum; add the bytes from
    csum_start on, fold, store.  Returns the header and the plain frame.
    """
    header = VnetHeader.unpack(vframe)
    frame = bytearray(vframe[VNET_HDRLEN:])
    if header.flags & NEEDS_CSUM:
        at = header.csumStart + header.csumOffset
        frame[at : at + 2] = finish(residue(bytes(frame[header.csumStart:]))).to_bytes(2, "big")
    return header, bytes(frame)


def partialTcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
               payload: bytes, window: int = 65535) -> bytes:
    """
    A TCP segment as an offloading guest kernel hands it over: the checksum
    field holds the pseudo-header's sum only.
    """
    return P.tcpHeaderPartial(src, dst, sport, dport, seq, ack, flags, window,
                              len(payload)) + payload


class OffloadHarness(Harness):
    """
    A L{Harness} whose engine offloads: every frame it emits is a vnet
    frame (plain ones behind L{PLAIN}); they are completed as a kernel
    would, their headers kept in C{headers} and the frames in C{frames}.
    """

    def __init__(self, config: SlirpConfig) -> None:
        super().__init__(config)
        self.headers: list[VnetHeader] = []
        self.engine.output = lambda frame: self.receive(PLAIN + frame)
        self.engine.offloadTo(self.receive)

    def receive(self, vframe: bytes) -> None:
        header, frame = complete(vframe)
        self.headers.append(header)
        self.frames.append(frame)


class OffloadOutputTests(TestCase):
    """
    Host data toward an offloading guest link.
    """

    def setUp(self):
        self.h = OffloadHarness(SlirpConfig(resolvConf="/none"))
        self.g = Guest()
        self.h.send(self.g.arpRequest(GATEWAY))
        self.h.take()
        self.p = Peer(self.h, self.g)
        self.h.headers.clear()

    def tearDown(self):
        self.assertEqual(self.h.engine.stats["errors"], 0)

    def transfer(self, size: int, mss: int = 1460, window: int = 0xFFFF,
                 shift: int = 7) -> tuple[list, list[VnetHeader]]:
        """
        Open a connection with the guest's C{mss} and C{window} (scaled by
        C{shift}), have the host send C{size} bytes, and play the guest
        acknowledging each burst until all arrived.  Returns the data frames
        and their vnet headers.
        """
        self.p.window = window
        stream, _ = self.p.open(mssOption(mss) + wsOption(shift))
        data = random.Random(5).randbytes(size)
        stream.send(data)
        frames = []
        for _ in range(1000):
            burst = self.p.tcpFrames()
            if not burst:
                break
            frames += burst
            self.p.absorb(burst)
            self.p.segment(ACK)
        headers = [h for h in self.h.headers if h.flags & NEEDS_CSUM]
        self.assertEqual(bytes(self.p.received), data)
        return [f for f in frames if f.payload], headers

    def test_superSegments(self):
        """
        Host data leaves in super-segments of whole MSSs (the last may be
        short) with the pseudo-header sum in the checksum field: the
        headers say TSO over IPv4 at the guest's MSS, the TCP checksum
        starting after the IP header; completed, every checksum is right
        and the bytes arrive in order.
        """
        frames, headers = self.transfer(300_000)
        self.assertEqual(len(frames), len(headers))
        self.assertGreater(max(len(f.payload) for f in frames), 32 * 1460)
        for f, header in zip(frames, headers):
            size = len(f.payload)
            self.assertLessEqual(size, T.MAX_SUPER_PAYLOAD)
            self.assertEqual((header.csumStart, header.csumOffset, header.hdrLen),
                             (34, 16, 54))
            if size > 1460:
                self.assertEqual((header.gsoType, header.gsoSize), (GSO_TCPV4, 1460))
            else:
                self.assertEqual((header.gsoType, header.gsoSize), (GSO_NONE, 0))
        for f in frames[:-1]:
            self.assertEqual(len(f.payload) % 1460, 0, describe(f))

    def test_partialChecksumIsPseudoHeaderSum(self):
        """
        The checksum field of a segment sent offloaded holds the folded sum
        of the IPv4 pseudo-header for the whole segment's length.
        """
        stream, _ = self.p.open()
        self.h.headers.clear()
        received = []
        self.h.engine.offloadTo(received.append)
        stream.send(b"x" * 5000)
        (vframe,) = received
        packet = vframe[VNET_HDRLEN + 14:]
        segment = packet[20:]
        self.assertEqual(int.from_bytes(segment[16:18], "big"),
                         pseudo4(packet[12:16], packet[16:20], P.PROTO_TCP, len(segment)))

    def test_unresolvedGuest(self):
        """
        To a guest whose MAC is not known (any more), data goes the plain
        way: complete checksum, after the address resolves.
        """
        stream, _ = self.p.open()
        self.h.engine.link.table4.clear()
        self.h.headers.clear()
        stream.send(b"q" * 1000)
        (request,) = self.h.take()
        self.assertEqual((request.proto, request.tpa), ("arp", self.g.ip))
        self.h.send(self.g.arpReply(request.spa, request.sha))
        (f,) = self.p.tcpFrames()
        self.assertEqual(f.payload, b"q" * 1000)
        self.assertEqual(self.h.headers[-1], VnetHeader())

    def test_sendBuffer(self):
        """
        To an offloading link a connection holds up to L{T.SNDBUF_OFFLOAD}
        bytes of the host's before its reading pauses (more in flight).
        """
        stream, _ = self.p.open()
        stream.send(bytes(T.SNDBUF + 1))
        self.assertFalse(stream.readingPaused)
        stream.send(bytes(T.SNDBUF_OFFLOAD - T.SNDBUF))
        self.assertTrue(stream.readingPaused)

    def test_guestMss(self):
        """
        A guest's smaller MSS is the segment size of the super-segments.
        """
        frames, headers = self.transfer(100_000, mss=1000)
        self.assertTrue(any(h.gsoType == GSO_TCPV4 for h in headers))
        for f, header in zip(frames, headers):
            if header.gsoType:
                self.assertEqual(header.gsoSize, 1000)
        for f in frames[:-1]:
            self.assertEqual(len(f.payload) % 1000, 0)

    def test_windowRespected(self):
        """
        A guest's window (here 20,000 bytes, not scaled) bounds what is in
        flight, super-segments included.
        """
        stream, _ = self.p.open(mssOption(1460))
        self.p.window = 20_000
        self.p.segment(ACK)
        stream.send(bytes(200_000))
        for _ in range(100):
            burst = [f for f in self.p.tcpFrames() if f.payload]
            if not burst:
                break
            self.assertLessEqual(sum(len(f.payload) for f in burst), 20_000)
            self.p.absorb(burst)
            self.p.segment(ACK)
        self.assertEqual(len(self.p.received), 200_000)

    def test_ipv6(self):
        """
        Over IPv6 the super-segments are TSO over IPv6, the checksum after
        the 40-byte header, the segment size the IPv6 MSS.
        """
        self.h.send(self.g.icmp6(GATEWAY6, 135, bytes(4) + GATEWAY6
                                 + bytes((1, 1)) + self.g.mac))
        self.h.take()
        self.h.headers.clear()
        self.p.dst = GATEWAY6
        self.g.tcp = self.g.tcp6
        frames, headers = self.transfer(200_000, mss=1440)
        supers = [h for h in headers if h.gsoType]
        self.assertTrue(supers)
        for header in supers:
            self.assertEqual((header.gsoType, header.gsoSize, header.csumStart, header.hdrLen),
                             (GSO_TCPV6, 1440, 54, 74))

    def test_fastRetransmitOfSuperSegment(self):
        """
        A lost super-segment (the tap drops whole frames) is resent whole
        after three duplicate ACKs, from the first byte not acknowledged, in
        a super-segment (which may carry more of what followed it: the
        engine keeps no segment boundaries).
        """
        self.transfer(300_000)  # the congestion window opens
        stream = self.h.host.streams[-1]
        for _ in range(4):
            stream.send(bytes(20_000))
        burst = [f for f in self.p.tcpFrames() if f.payload]
        self.assertGreaterEqual(len(burst), 4, [describe(f) for f in burst])
        lost = burst[0]
        self.assertGreater(len(lost.payload), 1460)
        for _ in range(3):
            self.p.segment(ACK)  # duplicate: the hole at lost.seq
        (again,) = [f for f in self.p.tcpFrames() if f.payload]
        self.assertEqual(again.seq, lost.seq)
        self.assertEqual(again.payload[:len(lost.payload)], lost.payload)
        self.assertEqual(self.h.headers[-1].gsoType, GSO_TCPV4)
        self.assertEqual(self.h.engine.stats["tcp_fast_retransmits"], 1)

    def test_smallReadsJoin(self):
        """
        While a super-segment is in flight, host data short of another one
        (a tail of a read that was not a whole number of MSSs, small
        reads) waits for its ACK, then leaves as one frame; the host's EOF
        sends what waits at once, with the FIN.
        """
        self.transfer(300_000)  # the congestion window opens
        stream = self.h.host.streams[-1]
        stream.send(bytes(65536))
        (first,) = [f for f in self.p.tcpFrames() if f.payload]
        self.assertEqual(len(first.payload), 44 * 1460)
        for _ in range(3):
            stream.send(bytes(10_000))
        self.assertEqual(self.p.tcpFrames(), [])
        self.p.absorb([first])
        self.p.segment(ACK)
        (joined,) = [f for f in self.p.tcpFrames() if f.payload]
        self.assertEqual((joined.seq, len(joined.payload)),
                         ((first.seq + 44 * 1460) & M32, 65536 - 44 * 1460 + 30_000))
        stream.send(bytes(65536))
        (full,) = [f for f in self.p.tcpFrames() if f.payload]
        stream.sendEOF()
        (last,) = [f for f in self.p.tcpFrames() if f.payload]
        self.assertEqual((len(full.payload), len(last.payload), last.flags & FIN),
                         (44 * 1460, 65536 - 44 * 1460, FIN))

    def test_timeoutRetransmission(self):
        """
        When everything sent is lost, the timer resends from the first byte
        not acknowledged, one MSS (the window restarts from one segment);
        then the window opens again in super-segments.
        """
        stream, _ = self.p.open()
        stream.send(bytes(100_000))
        first = [f for f in self.p.tcpFrames() if f.payload]
        self.h.advance(1.1)
        (again,) = [f for f in self.p.tcpFrames() if f.payload]
        self.assertEqual((again.seq, len(again.payload)), (first[0].seq, 1460))
        self.p.absorb([again])
        self.p.segment(ACK)
        (nxt,) = [f for f in self.p.tcpFrames() if f.payload]
        self.assertEqual(len(nxt.payload), 2 * 1460)

    def test_lossyTransfer(self):
        """
        With a fifth of the frames lost each way, 1 MB arrives byte-exact,
        and the engine recovers with retransmitted super-segments.
        """
        rng = random.Random(11)
        stream, _ = self.p.open()
        data = rng.randbytes(1_000_000)
        stream.send(data)
        for _ in range(5000):
            if len(self.p.received) == len(data):
                break
            burst = [f for f in self.p.tcpFrames() if rng.random() > 0.2]
            self.p.absorb(sorted(burst, key=lambda f: (f.seq - self.p.ack) & M32))
            if rng.random() > 0.2:
                self.p.segment(ACK)
            self.h.advance(0.3)
        self.assertEqual(bytes(self.p.received), data)
        stats = self.h.engine.stats
        self.assertGreater(stats["tcp_timeouts"] + stats["tcp_fast_retransmits"], 0)


@implementer(IVnetReceiver)
class VnetCollector:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def vnetFrameReceived(self, frame: bytes) -> None:
        self.frames.append(frame)

    def frameReceived(self, frame: bytes) -> None:
        raise AssertionError("a plain frame given to a vnet receiver")

    def plugClosed(self, reason) -> None:
        pass


def vnet(frame: bytes, flags: int = NEEDS_CSUM, gsoType: int = GSO_NONE, gsoSize: int = 0,
         csumStart: int = 34, csumOffset: int = 16) -> bytes:
    return VnetHeader(flags, gsoType, 54, gsoSize, csumStart, csumOffset).pack() + frame


class OffloadInputTests(TestCase):
    """
    Guest frames with vnet headers through the plug, on a L{Clock} and the
    in-memory host.
    """

    def setUp(self):
        self.clock = Clock()
        self.host = MemoryHost(autoAccept=True)
        self.plug = SlirpPlug(self.clock, SlirpConfig(resolvConf="/none"), "slirp://",
                              self.host)
        self.addCleanup(self.plug.close)
        self.received = VnetCollector()
        self.plug.startReceiving(self.received)
        self.g = Guest()
        self.send(self.g.arpRequest(GATEWAY))
        self.stats = self.plug.engine.stats

    def tearDown(self):
        self.assertEqual(self.stats["errors"], 0)

    def send(self, frame: bytes) -> None:
        self.plug.sendVnet(PLAIN + frame)
        self.clock.advance(0)

    def sendVnet(self, vframe: bytes) -> None:
        self.plug.sendVnet(vframe)
        self.clock.advance(0)

    def take(self) -> list:
        frames, self.received.frames[:] = list(self.received.frames), []
        return [decode(complete(f)[1]) for f in frames]

    def open(self, sport: int = 40000):
        """
        A connection from the guest to the gateway's port 80; returns its
        host stream and the sequence numbers (guest's next, ours next).
        """
        self.send(self.g.tcp(GATEWAY, sport, 80, 1000, 0, SYN, options=mssOption(1460)))
        (synack,) = [f for f in self.take() if f.proto == "tcp"]
        self.send(self.g.tcp(GATEWAY, sport, 80, 1001, synack.seq + 1, ACK))
        return self.host.streams[-1], 1001, synack.seq + 1

    def test_interfaces(self):
        verifyObject(IVnetPlug, self.plug)
        self.assertEqual(self.plug.offloads & (TUN_F_TSO4 | TUN_F_TSO6), TUN_F_TSO4 | TUN_F_TSO6)
        # plain frames (the ARP reply) reach a vnet receiver behind a plain header
        (vframe,) = self.received.frames
        self.assertEqual(vframe[:VNET_HDRLEN], PLAIN)
        self.assertEqual(decode(vframe[VNET_HDRLEN:]).proto, "arp")

    def tso(self, seq: int, ack: int, payload: bytes, gsoType: int = GSO_TCPV4,
            gsoSize: int = 1460, **kw) -> bytes:
        segment = partialTcp(self.g.ip, GATEWAY, 40000, 80, seq, ack, ACK | PSH, payload)
        frame = self.g.ether(P.ETH_IP, self.g.ipPacket(GATEWAY, P.PROTO_TCP, segment))
        return vnet(frame, gsoType=gsoType, gsoSize=gsoSize, **kw)

    def test_tsoSuperSegment(self):
        """
        A 64 KiB TSO super-segment with a partial checksum goes to the host
        whole, and is acknowledged at once.
        """
        stream, seq, ack = self.open()
        data = random.Random(1).randbytes(44 * 1460)
        self.sendVnet(self.tso(seq, ack, data))
        self.assertEqual(bytes(stream.written), data)
        acks = [f for f in self.take() if f.proto == "tcp"]
        self.assertEqual(acks[-1].ack, seq + len(data))
        self.assertEqual((self.stats["tcp_bad_checksum"], self.stats["tcp_super_in"]), (0, 1))

    def test_tsoPayloadUncopied(self):
        """
        A super-segment's payload reaches the host stream as a view of the
        guest's frame (not copied); one that arrives out of order is kept
        as bytes of its own and delivered, in order, once the hole fills.
        """
        stream, seq, ack = self.open()
        writes = []
        write = stream.write
        stream.write = lambda data: (writes.append(type(data)), write(data))
        first, second = b"a" * (20 * 1460), b"b" * (20 * 1460)
        self.sendVnet(self.tso(seq + len(first), ack, second))  # out of order
        self.assertEqual((writes, self.stats["tcp_super_in"]), ([], 1))
        (kept,) = self.plug.engine.tcp.conns[(self.g.ip, 40000, GATEWAY, 80)].ooo.segments
        self.assertIs(type(kept[1]), bytes)
        self.sendVnet(self.tso(seq, ack, first))
        self.assertEqual(bytes(stream.written), first + second)
        self.assertEqual(writes, [memoryview, bytes])

    def test_tsoWithoutConnection(self):
        """
        A super-segment of no connection is answered with a reset, as a
        plain segment would be (the addresses it is made from are bytes).
        """
        self.sendVnet(self.tso(5000, 7000, b"x" * 3000))
        (reset,) = [f for f in self.take() if f.proto == "tcp"]
        self.assertEqual((reset.flags, reset.seq, reset.ipdst), (P.TCP_RST, 7000, self.g.ip))
        self.assertEqual(self.plug.engine.tcp.conns, {})

    def test_tsoIpv6(self):
        self.send(self.g.icmp6(GATEWAY6, 135, bytes(4) + GATEWAY6 + bytes((1, 1)) + self.g.mac))
        self.send(self.g.tcp6(GATEWAY6, 40001, 80, 1000, 0, SYN, options=mssOption(1440)))
        (synack,) = [f for f in self.take() if f.proto == "tcp"]
        self.send(self.g.tcp6(GATEWAY6, 40001, 80, 1001, synack.seq + 1, ACK))
        data = bytes(range(256)) * 200
        segment = partialTcp(self.g.ip6, GATEWAY6, 40001, 80, 1001, synack.seq + 1, ACK, data)
        self.sendVnet(vnet(self.g.ether6(self.g.ip6packet(GATEWAY6, P.PROTO_TCP, segment)),
                           gsoType=GSO_TCPV6, gsoSize=1440, csumStart=54))
        self.assertEqual(bytes(self.host.streams[-1].written), data)

    def test_dataValid(self):
        """
        C{DATA_VALID}: the checksum was checked already, and is not again.
        """
        stream, seq, ack = self.open()
        frame = bytearray(self.g.tcp(GATEWAY, 40000, 80, seq, ack, ACK, payload=b"hello"))
        frame[14 + 20 + 16] ^= 0xFF  # a wrong checksum
        self.sendVnet(vnet(bytes(frame), flags=DATA_VALID))
        self.assertEqual(bytes(stream.written), b"hello")

    def test_plainHeaderChecked(self):
        """
        Without offload flags the checksum is checked as ever.
        """
        stream, seq, ack = self.open()
        frame = bytearray(self.g.tcp(GATEWAY, 40000, 80, seq, ack, ACK, payload=b"hello"))
        frame[14 + 20 + 16] ^= 0xFF
        self.send(bytes(frame))
        self.assertEqual(bytes(stream.written), b"")
        self.assertEqual(self.stats["tcp_bad_checksum"], 1)

    def test_partialUdp(self):
        """
        A UDP datagram with a partial checksum reaches the host.
        """
        payload = b"datagram"
        header = P.UDP.pack(5000, 7, 8 + len(payload),
                            pseudo4(self.g.ip, GATEWAY, P.PROTO_UDP, 8 + len(payload)))
        frame = self.g.ether(P.ETH_IP, self.g.ipPacket(GATEWAY, P.PROTO_UDP, header + payload))
        self.sendVnet(vnet(frame, csumOffset=6))
        (sock,) = self.host.udpSockets
        self.assertEqual(sock.sent, [(payload, ("127.0.0.1", 7))])

    def test_partialIcmpCompleted(self):
        """
        A partial checksum where the engine does not skip checks (an ICMP
        echo) is completed in software first.
        """
        message = bytes((8, 0, 0, 0)) + b"\0\x07\0\x01abcdefgh"
        frame = self.g.ether(P.ETH_IP, self.g.ipPacket(GATEWAY, P.PROTO_ICMP, message))
        self.sendVnet(vnet(frame, csumOffset=2))
        (reply,) = [f for f in self.take() if f.proto == "icmp"]
        self.assertEqual((reply.icmptype, reply.data), (0, b"abcdefgh"))

    def test_lyingHeaders(self):
        """
        Headers that lie about their frame are dropped and counted, never
        reach the host, never raise.
        """
        stream, seq, ack = self.open()
        udp = self.g.udp(GATEWAY, 5000, 7, b"x" * 3000)
        v6 = self.g.tcp6(GATEWAY6, 40000, 80, seq, ack, ACK, payload=b"x" * 3000)
        bad = [
            self.tso(seq, ack, b"x" * 3000, gsoSize=0),                     # gso_size 0
            vnet(udp, gsoType=GSO_TCPV4, gsoSize=1460),                     # TCPv4 on UDP
            vnet(v6, gsoType=GSO_TCPV4, gsoSize=1460, csumStart=54),        # TCPv4 on IPv6
            self.tso(seq, ack, b"x" * 3000, csumStart=30),                  # checksum elsewhere
            vnet(udp, csumStart=5000, csumOffset=6)[:200],                  # past the frame
            vnet(udp, gsoType=0x33, gsoSize=1460),                          # unknown GSO type
        ]
        dropped = self.plug.stats.dropped
        for frame in bad:
            self.sendVnet(frame)
        self.assertEqual(bytes(stream.written), b"")
        self.assertEqual(self.plug.stats.dropped - dropped, len(bad))
        self.assertEqual(self.stats["vnet_bad"], len(bad))

    def test_usoSegmented(self):
        """
        A USO super-datagram (not among the plug's offloads) is segmented in
        software: each piece is a datagram to the host.
        """
        payload = b"u" * 3000
        length = 8 + len(payload)
        header = P.UDP.pack(5000, 7, length, pseudo4(self.g.ip, GATEWAY, P.PROTO_UDP, length))
        frame = self.g.ether(P.ETH_IP, self.g.ipPacket(GATEWAY, P.PROTO_UDP, header + payload))
        self.sendVnet(vnet(frame, gsoType=GSO_UDP_L4, gsoSize=1000, csumOffset=6))
        (sock,) = self.host.udpSockets
        self.assertEqual([data for data, _ in sock.sent], [b"u" * 1000] * 3)

    def test_superSegmentsOut(self):
        """
        Through the plug, host data reaches a vnet receiver in
        super-segments.
        """
        stream, seq, ack = self.open()
        stream.send(bytes(50_000))
        self.clock.advance(0)
        headers = [VnetHeader.unpack(f) for f in self.received.frames]
        self.assertIn(GSO_TCPV4, [h.gsoType for h in headers])
        self.assertEqual(self.stats["tcp_super_out"], 1)
        self.assertEqual(sum(len(f.payload) for f in self.take() if f.proto == "tcp"),
                         10 * 1460)

