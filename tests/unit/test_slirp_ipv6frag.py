"""
The slirp engine's IPv6 reassembly (RFC 8200 4.5, with the bounds of the
IPv4 one) and its TTL / hop limit check on what it forwards to the host
(a TTL of 1 or less gets ICMP time exceeded, like a router), on synthetic
frames with a task.Clock and the in-memory host.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import TestCase

from vdetwist.slirp import packets as P
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.ipv4 import MAX_QUEUES
from vdetwist.slirp.ipv6 import Reassembler6
from vdetwist.slirp.testing import GATEWAY, GUEST_IP, Guest, Harness, ip4

from tests.unit.test_slirp_engine import resolvConf

GUEST6 = bytes.fromhex("fd000000000000000000000000000015")
HOST6 = bytes.fromhex("fd000000000000000000000000000002")
DNS6 = bytes.fromhex("fd000000000000000000000000000003")
OUTSIDE6 = bytes.fromhex("20010db8000000000000000000000001")
OUTSIDE4 = ip4("192.0.2.7")


def fragment6(g: Guest, dst: bytes, nextHeader: int, body: bytes, offset: int, more: bool,
              ident: int = 0x1234, hopLimit: int = 64) -> bytes:
    """
    A guest frame carrying C{body}, the piece at C{offset} of a datagram,
    after an IPv6 fragment header.
    """
    header = struct.pack("!BBHI", nextHeader, 0, offset | int(more), ident)
    return g.ether6(g.ip6packet(dst, P.PROTO_FRAG6, header + body, hopLimit=hopLimit))


def split6(g: Guest, dst: bytes, nextHeader: int, payload: bytes, size: int,
           ident: int = 0x1234) -> list[bytes]:
    """
    C{payload} (an upper-layer message) in fragments of C{size} bytes.
    """
    return [fragment6(g, dst, nextHeader, payload[offset:offset + size], offset,
                      offset + size < len(payload), ident)
            for offset in range(0, len(payload), size)]


class IPv6ReassemblyTests(TestCase):
    def setUp(self):
        self.conf = resolvConf(self, "::1")
        self.h = Harness(SlirpConfig(resolvConf=self.conf))
        self.g = Guest(ip6=GUEST6)
        self.data = bytes(range(256)) * 4

    def echo(self, data=None) -> bytes:
        return P.icmp6(GUEST6, HOST6, 128, 0, struct.pack("!HH", 5, 6)
                       + (self.data if data is None else data))

    def assertEchoReply(self):
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst, f.icmptype, f.id, f.seq, f.data),
                         (HOST6, GUEST6, 129, 5, 6, self.data))

    def test_inOrder(self):
        frames = split6(self.g, HOST6, P.PROTO_ICMPV6, self.echo(), 400)
        self.assertEqual(len(frames), 3)
        self.h.send(*frames[:-1])
        self.assertEqual(self.h.frames, [])
        self.assertEqual(len(self.h.engine.reassembler6.queues), 1)
        self.h.send(frames[-1])
        self.assertEchoReply()
        self.assertEqual(self.h.engine.reassembler6.queues, {})
        self.assertEqual(self.h.engine.reassembler6.held, 0)

    def test_outOfOrder(self):
        frames = split6(self.g, HOST6, P.PROTO_ICMPV6, self.echo(), 240)
        self.h.send(frames[2], frames[4], frames[0], frames[3], frames[1])
        self.assertEchoReply()

    def test_duplicate(self):
        """
        An exact duplicate is dropped on its own; the datagram completes.
        """
        frames = split6(self.g, HOST6, P.PROTO_ICMPV6, self.echo(), 400)
        self.h.send(frames[0], frames[1], frames[1], frames[0], frames[2])
        self.assertEchoReply()

    def test_overlapSpoils(self):
        frames = split6(self.g, HOST6, P.PROTO_ICMPV6, self.echo(), 400)
        overlap = fragment6(self.g, HOST6, P.PROTO_ICMPV6, b"q" * 16, 392, True)
        self.h.send(frames[0], overlap, *frames[1:])
        self.assertEqual(self.h.frames, [])
        self.assertEqual(self.h.engine.reassembler6.held, 0)
        # a spoiled datagram times out silently
        self.h.advance(61, step=1)
        self.assertEqual(self.h.frames, [])
        self.assertEqual(self.h.engine.reassembler6.queues, {})

    def test_sameOffsetOtherDataSpoils(self):
        frames = split6(self.g, HOST6, P.PROTO_ICMPV6, self.echo(), 400)
        other = fragment6(self.g, HOST6, P.PROTO_ICMPV6, b"q" * 400, 400, True)
        self.h.send(frames[0], frames[1], other, frames[2])
        self.assertEqual(self.h.frames, [])

    def test_timeout(self):
        """
        After 60 s (not IPv4's 30), a datagram whose first fragment came in
        is dropped with an ICMPv6 time exceeded (code 1) quoting that
        fragment.
        """
        frames = split6(self.g, HOST6, P.PROTO_ICMPV6, self.echo(), 400)
        self.h.send(*frames[:-1])
        self.h.advance(45, step=1)
        self.assertEqual(self.h.frames, [])
        self.assertEqual(len(self.h.engine.reassembler6.queues), 1)
        self.h.advance(16, step=1)
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst, f.icmptype, f.icmpcode), (HOST6, GUEST6, 3, 1))
        self.assertEqual(f.l4[4:8], b"\0\0\0\0")
        self.assertEqual(f.data, frames[0][14:])
        self.assertEqual(self.h.engine.reassembler6.queues, {})
        self.assertEqual(self.h.engine.reassembler6.held, 0)
        self.assertEqual(self.h.engine.stats["reassembly_timeouts"], 1)
        # the late last fragment starts a queue of its own, never completed
        self.h.send(frames[-1])
        self.assertEqual(self.h.frames, [])

    def test_timeoutWithoutFirstFragment(self):
        frames = split6(self.g, HOST6, P.PROTO_ICMPV6, self.echo(), 400)
        self.h.send(*frames[1:])
        self.h.advance(61, step=1)
        self.assertEqual(self.h.frames, [])
        self.assertEqual(self.h.engine.reassembler6.queues, {})

    def test_tooLarge(self):
        """
        Fragments going past 65535 bytes of payload are refused.
        """
        frame = fragment6(self.g, HOST6, P.PROTO_ICMPV6, b"a" * 1400, 65000 & ~7, True)
        self.h.send(frame)
        self.assertEqual(self.h.engine.reassembler6.held, 0)
        frame = fragment6(self.g, HOST6, P.PROTO_ICMPV6, b"a" * 536, 65000 & ~7, False,
                          ident=9)
        self.h.send(frame)
        self.assertEqual(self.h.engine.reassembler6.held, 0)

    def test_bounded(self):
        """
        Many incomplete datagrams: queues and bytes held stay bounded.
        """
        for ident in range(300):
            self.h.send(fragment6(self.g, HOST6, P.PROTO_ICMPV6, b"x" * 1000, 0, True,
                                  ident=ident))
        r = self.h.engine.reassembler6
        self.assertLessEqual(len(r.queues), MAX_QUEUES)
        self.assertLessEqual(r.held, MAX_QUEUES * 1000)
        self.assertGreater(r.dropped, 0)

    def test_fragmentedDnsQuery(self):
        query = b"\x12\x34\x01\x00\x00\x01" + b"d" * 1500
        segment = P.udpSegment(GUEST6, DNS6, 5353, 53, query)
        self.h.send(*split6(self.g, DNS6, P.PROTO_UDP, segment, 600))
        (sock,) = self.h.host.udpSockets
        self.assertEqual(sock.sent, [(query, ("::1", 53))])
        sock.deliver(b"answer", ("::1", 53))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.sport, f.dport, f.payload), (DNS6, 53, 5353, b"answer"))

    def test_badChecksumAfterReassembly(self):
        segment = bytearray(P.udpSegment(GUEST6, DNS6, 5353, 53, b"q" * 1000))
        segment[-1] ^= 0xFF
        self.h.send(*split6(self.g, DNS6, P.PROTO_UDP, bytes(segment), 504))
        self.assertEqual(self.h.host.udpSockets, [])

    def test_fragmentedTcpSyn(self):
        segment = P.tcpSegment(GUEST6, HOST6, 40000, 22, 1000, 0, P.TCP_SYN, 65535,
                               b"\x02\x04\x05\xa0\x01\x03\x03\x07")
        self.h.send(*split6(self.g, HOST6, P.PROTO_TCP, segment, 16))
        (stream,) = self.h.host.streams
        self.assertEqual(stream.target, ("tcp", "::1", 22))

    def test_atomicFragment(self):
        """
        Offset 0 with no more fragments (RFC 6946) is handled on its own.
        """
        self.h.send(fragment6(self.g, HOST6, P.PROTO_ICMPV6, self.echo(), 0, False))
        self.assertEchoReply()
        self.assertEqual(self.h.engine.reassembler6.queues, {})

    def test_truncatedFragmentHeader(self):
        packet = self.g.ip6packet(HOST6, P.PROTO_FRAG6, b"\x3a\0\0")
        self.h.send(self.g.ether6(packet))
        self.assertEqual(self.h.frames, [])

    def test_reassemblerRebuilds(self):
        """
        L{Reassembler6} undoes L{vdetwist.slirp.ipv6.fragment6}.
        """
        from vdetwist.slirp.ipv6 import fragment6 as cut

        packet = P.udpPacket(HOST6, GUEST6, 53, 5353, bytes(range(256)) * 12)
        pieces = cut(packet, 1280, 77)
        self.assertGreater(len(pieces), 2)
        r = Reassembler6()
        results = [r.add(48, piece, 0.0) for piece in reversed(pieces)]
        self.assertEqual(results[-1], packet)
        self.assertEqual(results[:-1], [None] * (len(pieces) - 1))


class HopLimitTests(TestCase):
    """
    Guest packets the engine would forward to the host with a TTL / hop
    limit of 1 or less are answered with ICMP time exceeded (code 0) and
    not forwarded; packets for the emulated addresses are not affected.
    """

    def setUp(self):
        self.conf = resolvConf(self, "127.0.0.53", "::1")
        self.h = Harness(SlirpConfig(resolvConf=self.conf))
        self.g = Guest(ip6=GUEST6)

    def udp4(self, dst: bytes, ttl: int, dport: int = 9999, payload: bytes = b"ping") -> bytes:
        segment = P.udpSegment(GUEST_IP, dst, 4000, dport, payload)
        return self.g.ether(P.ETH_IP, self.g.ipPacket(dst, P.PROTO_UDP, segment, ttl=ttl))

    def udp6(self, dst: bytes, hopLimit: int, dport: int = 9999) -> bytes:
        segment = P.udpSegment(GUEST6, dst, 4000, dport, b"ping")
        return self.g.ether6(self.g.ip6packet(dst, P.PROTO_UDP, segment, hopLimit=hopLimit))

    def ping4(self, dst: bytes, ttl: int) -> bytes:
        message = P.icmp4(8, 0, struct.pack("!HH", 7, 1) + b"abcdefgh")
        return self.g.ether(P.ETH_IP, self.g.ipPacket(dst, P.PROTO_ICMP, message, ttl=ttl))

    def ping6(self, dst: bytes, hopLimit: int) -> bytes:
        message = P.icmp6(GUEST6, dst, 128, 0, struct.pack("!HH", 7, 1) + b"abcdefgh")
        return self.g.ether6(self.g.ip6packet(dst, P.PROTO_ICMPV6, message, hopLimit=hopLimit))

    def assertTimeExceeded4(self, frame: bytes):
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst, f.icmptype, f.icmpcode), (GATEWAY, GUEST_IP, 11, 0))
        self.assertEqual(f.data, frame[14:14 + 28])

    def assertTimeExceeded6(self, frame: bytes):
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst, f.icmptype, f.icmpcode), (HOST6, GUEST6, 3, 0))
        self.assertEqual(f.data, frame[14:])

    def test_udp4(self):
        for ttl in (1, 0):
            frame = self.udp4(OUTSIDE4, ttl)
            self.h.send(frame)
            self.assertTimeExceeded4(frame)
        self.assertEqual(self.h.host.udpSockets, [])
        self.assertEqual(self.h.engine.stats["ttl_exceeded"], 2)
        self.h.send(self.udp4(OUTSIDE4, 2))
        (sock,) = self.h.host.udpSockets
        self.assertEqual(sock.sent, [(b"ping", ("192.0.2.7", 9999))])
        self.assertEqual(self.h.frames, [])

    def test_udp6(self):
        frame = self.udp6(OUTSIDE6, 1)
        self.h.send(frame)
        self.assertTimeExceeded6(frame)
        self.assertEqual(self.h.host.udpSockets, [])
        self.h.send(self.udp6(OUTSIDE6, 2))
        self.assertEqual(self.h.host.udpSockets[0].sent, [(b"ping", ("2001:db8::1", 9999))])

    def test_ping4(self):
        frame = self.ping4(ip4("192.0.2.9"), 1)
        self.h.send(frame)
        self.assertTimeExceeded4(frame)
        self.assertEqual(self.h.host.icmpSockets, [])

    def test_ping6(self):
        frame = self.ping6(OUTSIDE6, 1)
        self.h.send(frame)
        self.assertTimeExceeded6(frame)
        self.assertEqual(self.h.host.icmpSockets, [])
        self.h.send(self.ping6(OUTSIDE6, 2))
        self.assertEqual(len(self.h.host.icmpSockets[0].sent), 1)

    def test_localUnaffected(self):
        """
        The gateway, the DNS proxy and broadcasts are answered whatever the
        TTL.
        """
        self.h.send(self.ping4(GATEWAY, 1))
        self.assertEqual(self.h.takeOne().icmptype, 0)
        self.h.send(self.ping6(HOST6, 1))
        self.assertEqual(self.h.takeOne().icmptype, 129)
        self.h.send(self.udp4(ip4("10.0.2.3"), 1, dport=53))
        self.h.send(self.udp4(GATEWAY, 1, dport=7777))
        self.h.send(self.udp4(P.IP4_BROADCAST, 1, dport=7778))
        self.h.send(self.udp6(DNS6, 1, dport=53))
        sent = [s.sent[0][1] for s in self.h.host.udpSockets]
        self.assertEqual(sent, [("127.0.0.53", 53), ("::1", 53)])
        sent = [m[1] for m in self.h.host.udpSockets[0].sent]
        self.assertEqual(sent, [("127.0.0.53", 53), ("127.0.0.1", 7777), ("127.0.0.1", 7778)])
        self.assertEqual(self.h.frames, [])
        self.assertEqual(self.h.engine.stats["ttl_exceeded"], 0)

    def test_notForwardedAnyway(self):
        """
        With C{restricted}, nothing goes out, so there is no error either.
        """
        h = Harness(SlirpConfig(resolvConf=self.conf, restricted=True))
        h.send(self.udp4(OUTSIDE4, 1), self.ping4(ip4("192.0.2.9"), 1))
        self.assertEqual(h.frames, [])
        self.assertEqual(h.engine.stats["ttl_exceeded"], 0)

    def test_fragmentedTtl1(self):
        """
        The reassembled datagram's TTL counts.
        """
        segment = P.udpSegment(GUEST_IP, OUTSIDE4, 4000, 9999, b"z" * 1000)
        first = self.g.ipPacket(OUTSIDE4, P.PROTO_UDP, segment[:504], ident=3,
                                fragment=0x2000, ttl=1)
        last = self.g.ipPacket(OUTSIDE4, P.PROTO_UDP, segment[504:], ident=3,
                               fragment=504 >> 3, ttl=1)
        self.h.send(self.g.ether(P.ETH_IP, last), self.g.ether(P.ETH_IP, first))
        f = self.h.takeOne()
        self.assertEqual((f.icmptype, f.icmpcode), (11, 0))
        self.assertEqual(self.h.host.udpSockets, [])
