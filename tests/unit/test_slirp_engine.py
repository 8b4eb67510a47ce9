"""
The slirp engine below TCP, on synthetic frames with a task.Clock and the
in-memory host: Ethernet and ARP, IPv4 checks and reassembly, ICMP echo,
DHCPv4, UDP NAT and the DNS proxy, IPv6 (RA, NDP, DAD, DHCPv6), TFTP.
"""

from __future__ import annotations

import os
import struct
import tempfile

from twisted.trial.unittest import TestCase

from vdetwist.slirp import packets as P
from vdetwist.slirp import tcp as T
from vdetwist.wire.checksum import checksum, residue, verify
from vdetwist.slirp.config import SlirpConfig, fromOptions
from vdetwist.slirp.dhcp import ACK, DISCOVER, NAK, OFFER, RELEASE, REQUEST
from vdetwist.slirp.testing import (
    DNS, GATEWAY, GATEWAY_MAC, GUEST_IP, GUEST_MAC, Guest, Harness, decodeDhcp, ip4,
)

#: What the C plugin (libslirp 4.7) answers to Guest().arpRequest(GATEWAY)
#: and to Guest().dhcp(DISCOVER), recorded with /usr/bin/vde_plug slirp://.
C_ARP_REPLY = bytes.fromhex(
    "02000000000152550a0002020806000108000604000252550a0002020a000202"
    "0200000000010a00020f" + "00" * 22)
C_OFFER_HEAD = bytes.fromhex(
    "ffffffffffff52550a0002020800451002400000000040116c9c0a000202ffffffff"
    "00430044022c4b9e020106000000123400000000000000000a00020f0a000202"
    "00000000020000000001")
C_OFFER_OPTIONS = bytes.fromhex(
    "6382536335010236040a0002020104ffffff0003040a00020206040a0002033304"
    "000151800c05736c697270ff")


def resolvConf(testCase: TestCase, *servers: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".resolv.conf")
    with os.fdopen(fd, "w") as f:
        f.write("# test\nsearch example\n")
        for server in servers:
            f.write(f"nameserver {server}\n")
    testCase.addCleanup(os.unlink, path)
    return path


class ChecksumTests(TestCase):
    def test_knownValue(self):
        # RFC 1071's example words
        data = bytes.fromhex("0001f203f4f5f6f7")
        self.assertEqual(checksum(data), 0xFFFF - 0xDDF2)

    def test_matchesByteLoop(self):
        import random

        rng = random.Random(3)
        # past 4096 bytes the sum is taken in chunks: both sides of it, odd
        # and even, and a tail of one byte
        for length in list(range(0, 40)) + [1479, 1480, 4095, 4096, 4097, 4098, 4609, 9000,
                                            9001, 65535]:
            data = bytes(rng.getrandbits(8) for _ in range(length))
            padded = data + b"\0" * (length & 1)
            total = sum(struct.unpack(f"!{len(padded) // 2}H", padded))
            while total >> 16:
                total = (total & 0xFFFF) + (total >> 16)
            expected = ~total & 0xFFFF
            got = checksum(data)
            # 0x0000 and 0xffff are the same one's-complement number
            self.assertEqual(got % 0xFFFF, expected % 0xFFFF, length)
            self.assertNotEqual(got, 0)
            if length % 2 == 0 and length:
                self.assertTrue(verify(data + P.U16.pack(got)))

    def test_residueOdd(self):
        self.assertEqual(residue(b"\x01"), 0x0100)


class LinkTests(TestCase):
    def setUp(self):
        self.h = Harness()
        self.g = Guest()

    def test_arpGatewayLikeC(self):
        self.h.send(self.g.arpRequest(GATEWAY))
        self.assertEqual(self.h.frames, [C_ARP_REPLY])

    def test_arpDns(self):
        self.h.send(self.g.arpRequest(DNS))
        f = self.h.takeOne()
        self.assertEqual((f.op, f.spa, f.sha), (2, DNS, bytes.fromhex("52550a000203")))

    def test_arpOtherAddressesUnanswered(self):
        for target in (ip4("10.0.2.16"), ip4("10.0.2.15"), ip4("8.8.8.8")):
            self.h.send(self.g.arpRequest(target))
        self.assertEqual(self.h.frames, [])

    def test_arpLearnsSender(self):
        self.h.send(self.g.arpRequest(GATEWAY))
        self.assertEqual(self.h.engine.link.lookup(GUEST_IP), GUEST_MAC)

    def test_truncatedArp(self):
        self.h.send(self.g.arpRequest(GATEWAY)[:30])
        self.assertEqual(self.h.frames, [])

    def test_otherGuestsFramesIgnored(self):
        """
        A hub delivers frames between other guests: not for us.
        """
        frame = self.g.ping(GATEWAY, dstMac=bytes.fromhex("020000000099"))
        self.h.send(frame)
        self.assertEqual(self.h.frames, [])
        self.assertEqual(self.h.engine.stats["frames_not_ours"], 1)

    def test_resolutionQueue(self):
        """
        A frame for a guest whose MAC is unknown waits for ARP; it is sent
        when the reply comes.
        """
        engine = self.h.engine
        packet = P.udpPacket(GATEWAY, GUEST_IP, 5, 6, b"x")
        engine.link.send4(GUEST_IP, packet)
        request = self.h.takeOne()
        self.assertEqual((request.proto, request.op, request.tpa, request.spa),
                         ("arp", 1, GUEST_IP, GATEWAY))
        self.h.send(self.g.arpReply(GATEWAY, GATEWAY_MAC))
        f = self.h.takeOne()
        self.assertEqual((f.dst, f.proto, f.payload), (GUEST_MAC, "udp", b"x"))

    def test_resolutionGivesUp(self):
        engine = self.h.engine
        engine.link.send4(GUEST_IP, P.udpPacket(GATEWAY, GUEST_IP, 5, 6, b"x"))
        self.h.advance(10, step=0.5)
        requests = [f for f in self.h.take() if f.proto == "arp"]
        self.assertEqual(len(requests), 3)
        self.assertEqual(engine.link.pending, {})
        self.assertEqual(engine.stats["dropped_unresolved"], 1)

    def test_pausedOutputIsQueued(self):
        engine = self.h.engine
        engine.pauseOutput()
        self.h.send(self.g.arpRequest(GATEWAY))
        self.assertEqual(self.h.frames, [])
        engine.resumeOutput()
        self.assertEqual(self.h.frames, [C_ARP_REPLY])


class IPv4Tests(TestCase):
    def setUp(self):
        self.h = Harness()
        self.g = Guest()

    def test_echoGateway(self):
        self.h.send(self.g.ping(GATEWAY, ident=0x1234, seq=9, data=b"hello"))
        f = self.h.takeOne()
        self.assertEqual((f.src, f.dst), (GATEWAY_MAC, GUEST_MAC))
        self.assertEqual((f.ipsrc, f.ipdst, f.icmptype, f.id, f.seq, f.data),
                         (GATEWAY, GUEST_IP, 0, 0x1234, 9, b"hello"))

    def test_echoDns(self):
        self.h.send(self.g.ping(DNS))
        self.assertEqual(self.h.takeOne().ipsrc, DNS)

    def test_ethernetPadding(self):
        """
        Bytes after the IP total length (Ethernet padding) are ignored.
        """
        frame = self.g.ping(GATEWAY, data=b"ab") + b"\0" * 20
        self.h.send(frame)
        self.assertEqual(self.h.takeOne().data, b"ab")

    def test_badHeaderChecksum(self):
        frame = bytearray(self.g.ping(GATEWAY))
        frame[14 + 10] ^= 0xFF
        self.h.send(bytes(frame))
        self.assertEqual(self.h.frames, [])
        self.assertEqual(self.h.engine.stats["ip4_bad"], 1)

    def test_badIcmpChecksum(self):
        frame = bytearray(self.g.ping(GATEWAY))
        frame[-1] ^= 0xFF
        self.h.send(bytes(frame))
        self.assertEqual(self.h.frames, [])

    def test_truncatedAndBogus(self):
        good = self.g.ping(GATEWAY)
        for frame in (good[:30], good[:14 + 19], good[:14] + b"\x46" + good[15:],
                      good[:14] + b"\x65" + good[15:]):
            self.h.send(frame)
        self.assertEqual(self.h.frames, [])

    def fragments(self, payload: bytes, size: int, ident: int = 77):
        packets = []
        for offset in range(0, len(payload), size):
            piece = payload[offset:offset + size]
            more = offset + size < len(payload)
            packets.append(self.g.ether(P.ETH_IP, self.g.ipPacket(
                GATEWAY, P.PROTO_ICMP, piece, ident=ident,
                fragment=(0x2000 if more else 0) | (offset >> 3))))
        return packets

    def test_reassemblyOutOfOrder(self):
        message = P.icmp4(8, 0, struct.pack("!HH", 1, 2) + bytes(range(256)) * 8)
        frames = self.fragments(message, 512)
        frames.reverse()
        self.h.send(*frames)
        # the 2076-byte reply goes back in fragments too
        from vdetwist.slirp.ipv4 import Reassembler

        replies = self.h.take()
        self.assertEqual([f.proto for f in replies], ["fragment", "fragment"])
        r = Reassembler()
        whole = [r.add(20, f.ip, 0) for f in replies][-1]
        self.assertEqual(whole[20 + 8:], bytes(range(256)) * 8)
        self.assertEqual(whole[20], 0)

    def test_reassemblyDuplicatesAndOverlap(self):
        message = P.icmp4(8, 0, struct.pack("!HH", 1, 2) + b"z" * 2000)
        frames = self.fragments(message, 512)
        # an overlapping fragment spoils the datagram
        overlap = self.g.ether(P.ETH_IP, self.g.ipPacket(
            GATEWAY, P.PROTO_ICMP, b"q" * 16, ident=77, fragment=0x2000 | 1))
        self.h.send(frames[0], overlap, *frames[1:])
        self.assertEqual(self.h.frames, [])
        self.assertEqual(self.h.engine.reassembler.held, 0)

    def test_reassemblyTimeout(self):
        message = P.icmp4(8, 0, struct.pack("!HH", 1, 2) + b"z" * 2000)
        frames = self.fragments(message, 512)
        self.h.send(*frames[:-1])
        self.assertEqual(len(self.h.engine.reassembler.queues), 1)
        self.h.advance(31, step=1)
        self.assertEqual(len(self.h.engine.reassembler.queues), 0)
        self.assertEqual(self.h.engine.reassembler.held, 0)
        # fragment zero came in: ICMP time exceeded, reassembly (code 1),
        # quoting its header and first 8 bytes
        f = self.h.takeOne()
        self.assertEqual((f.icmptype, f.icmpcode, f.ipsrc, f.ipdst), (11, 1, GATEWAY, GUEST_IP))
        self.assertEqual(f.data, frames[0][14:14 + 28])
        self.h.send(frames[-1])
        self.assertEqual(self.h.frames, [])

    def test_reassemblyTooLarge(self):
        """
        Fragments claiming to go past 65535 bytes are refused.
        """
        piece = b"a" * 1400
        frame = self.g.ether(P.ETH_IP, self.g.ipPacket(
            GATEWAY, P.PROTO_ICMP, piece, ident=5, fragment=0x2000 | (65000 >> 3)))
        self.h.send(frame)
        self.assertEqual(self.h.engine.reassembler.held, 0)

    def test_reassemblyBounded(self):
        """
        Many incomplete datagrams: the number of queues stays bounded.
        """
        from vdetwist.slirp.ipv4 import MAX_QUEUES

        for ident in range(300):
            frame = self.g.ether(P.ETH_IP, self.g.ipPacket(
                GATEWAY, P.PROTO_ICMP, b"x" * 8, ident=ident, fragment=0x2000))
            self.h.send(frame)
        self.assertLessEqual(len(self.h.engine.reassembler.queues), MAX_QUEUES)


class DhcpTests(TestCase):
    def setUp(self):
        self.h = Harness()
        self.g = Guest(ip=P.IP4_ANY)

    def test_offerLikeC(self):
        self.h.send(self.g.dhcp(DISCOVER))
        (frame,) = self.h.frames
        self.assertEqual(len(frame), 590)
        self.assertEqual(frame[:len(C_OFFER_HEAD)], C_OFFER_HEAD)
        options = frame[14 + 20 + 8 + 236:]
        self.assertEqual(options[:len(C_OFFER_OPTIONS)], C_OFFER_OPTIONS)
        self.assertEqual(options[len(C_OFFER_OPTIONS):], b"\0" * (len(options)
                                                                   - len(C_OFFER_OPTIONS)))

    def exchange(self, guest: Guest, xid: int = 1):
        self.h.send(guest.dhcp(DISCOVER, xid))
        offer = decodeDhcp(self.h.takeOne())
        if offer.type != OFFER:
            return offer, None
        self.h.send(guest.dhcp(REQUEST, xid, requested=offer.yiaddr))
        return offer, decodeDhcp(self.h.takeOne())

    def test_requestAck(self):
        offer, ack = self.exchange(self.g)
        self.assertEqual((ack.type, ack.yiaddr, ack.xid), (ACK, GUEST_IP, 1))
        self.assertEqual(ack.options[51], struct.pack("!I", 86400))
        self.assertEqual(self.h.engine.link.lookup(GUEST_IP), GUEST_MAC)

    def test_sameClientSameAddress(self):
        self.exchange(self.g)
        offer, ack = self.exchange(self.g, 2)
        self.assertEqual(ack.yiaddr, GUEST_IP)

    def test_sixteenLeasesAndTheSeventeenthClient(self):
        addresses = []
        for n in range(16):
            guest = Guest(mac=bytes([2, 0, 0, 0, 1, n]), ip=P.IP4_ANY)
            offer, ack = self.exchange(guest, n)
            self.assertEqual(ack.type, ACK)
            addresses.append(ack.yiaddr)
        self.assertEqual(addresses, [ip4(f"10.0.2.{15 + n}") for n in range(16)])
        late = Guest(mac=bytes([2, 0, 0, 0, 2, 0]), ip=P.IP4_ANY)
        self.h.send(late.dhcp(DISCOVER))
        self.assertEqual(self.h.frames, [])
        self.assertEqual(self.h.engine.stats["dhcp_exhausted"], 1)
        # a REQUEST for a taken address is refused
        self.h.send(late.dhcp(REQUEST, requested=ip4("10.0.2.20")))
        self.assertEqual(decodeDhcp(self.h.takeOne()).type, NAK)
        # once a client releases its address, the 17th gets it
        first = Guest(mac=bytes([2, 0, 0, 0, 1, 3]), ip=P.IP4_ANY)
        self.h.send(first.dhcp(RELEASE))
        offer, ack = self.exchange(late, 99)
        self.assertEqual(ack.yiaddr, ip4("10.0.2.18"))

    def test_leasesExpire(self):
        self.h = Harness(SlirpConfig(resolvConf="/none", ipv6=False))
        for n in range(16):
            self.exchange(Guest(mac=bytes([2, 0, 0, 0, 1, n]), ip=P.IP4_ANY), n)
        self.h.clock.advance(86401)
        offer, ack = self.exchange(Guest(mac=bytes([2, 0, 0, 0, 2, 0]), ip=P.IP4_ANY))
        self.assertEqual(ack.type, ACK)

    def test_requestOutsidePool(self):
        self.h.send(self.g.dhcp(REQUEST, requested=ip4("10.0.2.200")))
        self.assertEqual(decodeDhcp(self.h.takeOne()).type, NAK)

    def test_options(self):
        config = fromOptions({"tftp_server_name": "ts", "bootfile": "pxe.0",
                              "vdnssearch": "a.com,b.org", "vdomainname": "x.org",
                              "hostname": "vm"}, environ={})
        h = Harness(config)
        h.send(self.g.dhcp(DISCOVER))
        offer = decodeDhcp(h.takeOne())
        self.assertEqual(offer.options[12], b"vm")
        self.assertEqual(offer.options[15], b"x.org")
        self.assertEqual(offer.options[66], b"ts")
        self.assertEqual(offer.options[67], b"pxe.0")
        self.assertEqual(offer.options[119], b"\x01a\x03com\x00\x01b\x03org\x00")
        self.assertEqual(offer.file, b"pxe.0")

    def test_movedNetwork(self):
        config = fromOptions({"addr": "192.168.5.1/16"}, environ={})
        h = Harness(config)
        h.send(self.g.dhcp(DISCOVER))
        offer = decodeDhcp(h.takeOne())
        self.assertEqual(offer.yiaddr, ip4("192.168.2.15"))
        self.assertEqual(offer.options[6], ip4("192.168.2.3"))
        self.assertEqual(offer.options[1], ip4("255.255.0.0"))
        self.assertEqual(offer.options[3], ip4("192.168.5.1"))

    def test_garbage(self):
        frame = self.g.udp(P.IP4_BROADCAST, 68, 67, b"\x01\x01\x06" + b"\xff" * 30,
                           src=P.IP4_ANY, dstMac=P.BROADCAST_MAC)
        self.h.send(frame)
        self.assertEqual(self.h.frames, [])


class UdpTests(TestCase):
    def setUp(self):
        self.conf = resolvConf(self, "127.0.0.53", "::1")
        self.h = Harness(SlirpConfig(resolvConf=self.conf))
        self.g = Guest()
        self.h.send(self.g.arpRequest(GATEWAY))
        self.h.take()

    def test_outboundAndReply(self):
        self.h.send(self.g.udp(ip4("192.0.2.7"), 4000, 9999, b"ping"))
        (sock,) = self.h.host.udpSockets
        self.assertEqual(sock.sent, [(b"ping", ("192.0.2.7", 9999))])
        sock.deliver(b"pong", ("192.0.2.7", 9999))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.sport, f.ipdst, f.dport, f.payload),
                         (ip4("192.0.2.7"), 9999, GUEST_IP, 4000, b"pong"))
        # same guest port, another destination: the same socket
        self.h.send(self.g.udp(ip4("192.0.2.8"), 4000, 9999, b"again"))
        self.assertEqual(len(self.h.host.udpSockets), 1)

    def test_flowTableBounded(self):
        """
        Past the flow limit, each new guest port evicts the least recently
        used flow (its socket closed), counted in the stats.
        """
        from vdetwist.slirp.udp import MAX_FLOWS

        for port in range(1000, 1000 + MAX_FLOWS + 50):
            self.h.send(self.g.udp(ip4("192.0.2.7"), port, 9999, b"x"))
        engine = self.h.engine
        self.assertEqual(len(engine.udp.flows), MAX_FLOWS)
        self.assertEqual(engine.stats["udp_flows_evicted"], 50)
        sockets = self.h.host.udpSockets
        self.assertEqual([s.closed for s in sockets], [True] * 50 + [False] * MAX_FLOWS)

    def test_gatewayIsHostLoopback(self):
        self.h.send(self.g.udp(GATEWAY, 4000, 7777, b"hi"))
        (sock,) = self.h.host.udpSockets
        self.assertEqual(sock.sent, [(b"hi", ("127.0.0.1", 7777))])
        sock.deliver(b"back", ("127.0.0.1", 7777))
        self.assertEqual(self.h.takeOne().ipsrc, GATEWAY)

    def test_disableHostLoopback(self):
        h = Harness(SlirpConfig(resolvConf=self.conf, disableHostLoopback=True))
        h.send(self.g.udp(GATEWAY, 4000, 7777, b"hi"))
        self.assertEqual(h.host.udpSockets, [])

    def test_restricted(self):
        h = Harness(SlirpConfig(resolvConf=self.conf, restricted=True))
        h.send(self.g.udp(ip4("192.0.2.7"), 4000, 9999, b"ping"))
        h.send(self.g.udp(DNS, 4001, 53, b"query"))
        self.assertEqual(h.host.udpSockets, [])

    def test_dnsProxy(self):
        self.h.send(self.g.udp(DNS, 5353, 53, b"query"))
        (sock,) = self.h.host.udpSockets
        self.assertEqual(sock.sent, [(b"query", ("127.0.0.53", 53))])
        sock.deliver(b"answer", ("127.0.0.53", 53))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.sport, f.payload), (DNS, 53, b"answer"))

    def test_dnsProxyFollowsResolvConf(self):
        with open(self.conf, "w") as f:
            f.write("nameserver 127.0.0.99\n")
        self.h.clock.advance(2)
        self.h.send(self.g.udp(DNS, 5353, 53, b"query"))
        self.assertEqual(self.h.host.udpSockets[0].sent[0][1], ("127.0.0.99", 53))

    def test_largeReplyFragmented(self):
        from vdetwist.slirp.ipv4 import Reassembler

        self.h.send(self.g.udp(ip4("192.0.2.7"), 4000, 9999, b"big?"))
        payload = bytes(range(256)) * 16
        self.h.host.udpSockets[0].deliver(payload, ("192.0.2.7", 9999))
        frames = self.h.take()
        self.assertEqual(len(frames), 3)
        self.assertTrue(all(len(f.ip) <= 1500 for f in frames))
        r = Reassembler()
        whole = None
        for f in frames:
            whole = r.add(20, f.ip, 0) or whole
        self.assertEqual(whole[28:], payload)

    def test_largeReplyFragmented6(self):
        h = Harness(SlirpConfig(resolvConf=self.conf))
        g6 = Guest(ip6=bytes.fromhex("fd000000000000000000000000000015"))
        h6 = bytes.fromhex("fd000000000000000000000000000002")
        h.send(g6.udp6(h6, 4000, 7000, b"big?"))
        h.take()
        payload = b"q" * 3000
        h.host.udpSockets[0].deliver(payload, ("::1", 7000))
        frames = h.take()
        self.assertEqual(len(frames), 3)
        self.assertTrue(all(len(f.ip) <= 1500 and f.ipproto == 44 for f in frames))
        body = b"".join(f.ip[48:] for f in frames)
        self.assertEqual(body[8:], payload)

    def test_closedPortOfEmulatedAddress(self):
        self.h.send(self.g.udp(DNS, 4000, 5353, b"x"))
        f = self.h.takeOne()
        self.assertEqual((f.proto, f.icmptype, f.icmpcode, f.ipsrc), ("icmp", 3, 3, DNS))
        self.assertEqual(f.l4[8 + 12:8 + 20], GUEST_IP + DNS)
        self.assertEqual(self.h.host.udpSockets, [])

    def test_noResolver(self):
        h = Harness(SlirpConfig(resolvConf="/nonexistent"))
        h.send(self.g.udp(DNS, 5353, 53, b"query"))
        self.assertEqual(h.host.udpSockets, [])

    def test_expiry(self):
        self.h.send(self.g.udp(ip4("192.0.2.7"), 4000, 9999, b"x"))
        self.h.send(self.g.udp(DNS, 4001, 53, b"q"))
        socks = self.h.host.udpSockets
        self.h.advance(12, step=1)
        self.assertEqual([s.closed for s in socks], [False, True])
        self.assertEqual(len(self.h.engine.udp.flows), 1)
        self.h.advance(240, step=1)
        self.assertEqual([s.closed for s in socks], [True, True])
        self.assertEqual(self.h.engine.udp.flows, {})
        # nothing left to wake up for
        self.assertIsNone(self.h.engine.nextDeadline() if not self.h.engine.config.ipv6
                          else None)

    def test_activityKeepsFlow(self):
        self.h.send(self.g.udp(ip4("192.0.2.7"), 4000, 9999, b"x"))
        for _ in range(5):
            self.h.advance(200, step=1)
            self.h.send(self.g.udp(ip4("192.0.2.7"), 4000, 9999, b"x"))
        self.assertEqual(len(self.h.host.udpSockets), 1)
        self.assertFalse(self.h.host.udpSockets[0].closed)

    def test_badChecksumDropped(self):
        frame = bytearray(self.g.udp(ip4("192.0.2.7"), 4000, 9999, b"ping"))
        frame[-1] ^= 1
        self.h.send(bytes(frame))
        self.assertEqual(self.h.host.udpSockets, [])

    def test_socketFailure(self):
        self.h.host.failSockets = True
        self.h.send(self.g.udp(ip4("192.0.2.7"), 4000, 9999, b"x"))
        self.assertEqual(self.h.engine.stats["udp_socket_failed"], 1)

    def test_udpForward(self):
        config = fromOptions({"udpfwd": "5353:0.0.0.0:53"}, environ={})
        h = Harness(config)
        h.send(self.g.arpRequest(GATEWAY))
        h.take()
        listener = h.host.listeners[("udp", "0.0.0.0", 5353)]
        listener.deliver(b"question", ("192.0.2.50", 40000))
        f = h.takeOne()
        self.assertEqual((f.ipsrc, f.sport, f.ipdst, f.dport, f.payload),
                         (ip4("192.0.2.50"), 40000, GUEST_IP, 53, b"question"))
        # the guest's reply leaves through the forward's socket
        h.send(self.g.udp(ip4("192.0.2.50"), 53, 40000, b"answer"))
        self.assertEqual(listener.sent, [(b"answer", ("192.0.2.50", 40000))])
        self.assertEqual(h.host.udpSockets, [])
        # a loopback client appears as the gateway
        listener.deliver(b"q2", ("127.0.0.1", 40001))
        self.assertEqual(h.takeOne().ipsrc, GATEWAY)
        h.send(self.g.udp(GATEWAY, 53, 40001, b"a2"))
        self.assertEqual(listener.sent[-1], (b"a2", ("127.0.0.1", 40001)))


class IcmpNatTests(TestCase):
    def setUp(self):
        self.h = Harness()
        self.g = Guest()
        self.h.send(self.g.arpRequest(GATEWAY))
        self.h.take()

    def test_pingSocketRemap(self):
        self.h.send(self.g.ping(ip4("192.0.2.9"), ident=0x77, seq=3, data=b"data"))
        (sock,) = self.h.host.icmpSockets
        ((message, address),) = sock.sent
        self.assertEqual(address, ("192.0.2.9", 0))
        self.assertEqual(message[0], 8)
        self.assertEqual(message[8:], b"data")
        # the kernel replaces the identifier with the socket's port
        reply = P.icmp4(0, 0, struct.pack("!HH", 40123, 3) + b"data")
        sock.deliver(reply, ("192.0.2.9", 0))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.icmptype, f.id, f.seq, f.data),
                         (ip4("192.0.2.9"), 0, 0x77, 3, b"data"))

    def test_rawSocketIdentifiers(self):
        self.h.host.pingRewrites = False
        self.h.send(self.g.ping(ip4("192.0.2.9"), ident=1))
        other = Guest(mac=bytes.fromhex("020000000002"), ip=ip4("10.0.2.16"))
        self.h.send(other.ping(ip4("192.0.2.9"), ident=1))
        socks = self.h.host.icmpSockets
        ids = [struct.unpack_from("!H", s.sent[0][0], 4)[0] for s in socks]
        self.assertNotEqual(ids[0], ids[1])
        # a raw socket sees every reply: only its own identifier counts
        socks[0].deliver(P.icmp4(0, 0, struct.pack("!HH", ids[1], 1) + b"abcdefgh"),
                         ("192.0.2.9", 0))
        self.assertEqual(self.h.frames, [])
        socks[0].deliver(P.icmp4(0, 0, struct.pack("!HH", ids[0], 1) + b"abcdefgh"),
                         ("192.0.2.9", 0))
        f = self.h.takeOne()
        self.assertEqual((f.ipdst, f.id), (GUEST_IP, 1))

    def test_flowTableBounded(self):
        """
        Past the flow limit, a new echo identifier evicts the flow that
        expires first (its socket closed), counted in the stats.
        """
        from vdetwist.slirp.icmp import MAX_FLOWS

        for ident in range(MAX_FLOWS + 5):
            self.h.send(self.g.ping(ip4("192.0.2.9"), ident=ident))
            self.h.clock.advance(0.01)
        self.assertEqual(len(self.h.engine.icmp.flows), MAX_FLOWS)
        self.assertEqual(self.h.engine.stats["icmp_flows_evicted"], 5)
        self.assertEqual([s.closed for s in self.h.host.icmpSockets],
                         [True] * 5 + [False] * MAX_FLOWS)

    def test_noSocket(self):
        self.h.host.failSockets = True
        self.h.send(self.g.ping(ip4("192.0.2.9")))
        self.assertEqual(self.h.engine.stats["icmp_socket_failed"], 1)

    def test_expiry(self):
        self.h.send(self.g.ping(ip4("192.0.2.9")))
        self.h.advance(40, step=1)
        self.assertTrue(self.h.host.icmpSockets[0].closed)


GUEST6 = bytes.fromhex("fd000000000000000000000000000015")
GUEST_LL = bytes.fromhex("fe800000000000000000000000000015")
HOST6 = bytes.fromhex("fd000000000000000000000000000002")
DNS6 = bytes.fromhex("fd000000000000000000000000000003")


class IPv6Tests(TestCase):
    def setUp(self):
        self.conf = resolvConf(self, "127.0.0.1")
        self.h = Harness(SlirpConfig(resolvConf=self.conf))
        self.g = Guest(ip6=GUEST6)

    def test_routerSolicitation(self):
        rs = self.g.icmp6(P.IP6_ALL_ROUTERS, 133, b"\0\0\0\0\x01\x01" + GUEST_MAC,
                          src=GUEST_LL)
        self.h.send(rs)
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst, f.ttl, f.icmptype), (P.IP6_ROUTER_LL,
                                                                 P.IP6_ALL_NODES, 255, 134))
        self.assertEqual(f.dst, bytes.fromhex("333300000001"))
        body = f.l4[4:]
        hop, flags, lifetime = struct.unpack_from("!BBH", body)
        self.assertEqual((hop, flags, lifetime), (64, 0, 1800))
        self.assertIn(bytes((1, 1)) + bytes.fromhex("525600000002"), body)
        prefix = body.index(bytes((3, 4)))
        self.assertEqual(body[prefix + 2:prefix + 4], bytes((64, 0xC0)))
        self.assertEqual(struct.unpack_from("!II", body, prefix + 4), (86400, 14400))
        self.assertEqual(body[prefix + 16:prefix + 32], bytes.fromhex("fd00" + "00" * 14))
        self.assertNotIn(bytes((25, 3)), body)  # no IPv6 name server on the host

    def test_rdnssWithIPv6Resolver(self):
        h = Harness(SlirpConfig(resolvConf=resolvConf(self, "::1")))
        h.send(self.g.icmp6(P.IP6_ALL_ROUTERS, 133, b"\0\0\0\0", src=GUEST_LL))
        body = h.takeOne().l4[4:]
        index = body.index(bytes((25, 3)))
        self.assertEqual(body[index + 8:index + 24], DNS6)

    def test_periodicAdvertisements(self):
        self.h.advance(1300, step=10)
        ras = [f for f in self.h.take() if f.proto == "icmp" and f.icmptype == 134]
        self.assertGreaterEqual(len(ras), 2)
        self.assertLessEqual(len(ras), 7)

    def ns(self, target: bytes, src: bytes = GUEST6, withMac: bool = True) -> bytes:
        body = b"\0\0\0\0" + target + (bytes((1, 1)) + GUEST_MAC if withMac else b"")
        return self.g.icmp6(P.solicitedNode(target), 135, body, src=src)

    def test_neighbourSolicitation(self):
        for target in (HOST6, DNS6, P.IP6_ROUTER_LL):
            self.h.send(self.ns(target))
            f = self.h.takeOne()
            self.assertEqual((f.icmptype, f.ipsrc, f.ipdst, f.dst), (136, target, GUEST6,
                                                                      GUEST_MAC))
            self.assertEqual(f.l4[4] & 0x60, 0x60)  # solicited, override
            self.assertEqual(f.l4[8:24], target)

    def test_otherTargetsUnanswered(self):
        self.h.send(self.ns(bytes.fromhex("fd000000000000000000000000000099")))
        self.assertEqual(self.h.frames, [])

    def test_duplicateAddressDetection(self):
        """
        A guest's DAD probe for its own address gets no answer; a probe for
        one of ours is answered to all nodes.
        """
        self.h.send(self.ns(GUEST6, src=P.IP6_ANY, withMac=False))
        self.assertEqual(self.h.frames, [])
        self.h.send(self.ns(HOST6, src=P.IP6_ANY, withMac=False))
        f = self.h.takeOne()
        self.assertEqual((f.ipdst, f.l4[4] & 0x40), (P.IP6_ALL_NODES, 0))
        self.assertEqual(self.h.engine.link.lookup(P.IP6_ANY), None)

    def test_hopLimitChecked(self):
        body = b"\0\0\0\0" + HOST6 + bytes((1, 1)) + GUEST_MAC
        self.h.send(self.g.icmp6(P.solicitedNode(HOST6), 135, body, hopLimit=64))
        self.assertEqual(self.h.frames, [])

    def test_pingHost(self):
        self.h.send(self.ns(HOST6))
        self.h.take()
        self.h.send(self.g.icmp6(HOST6, 128, struct.pack("!HH", 5, 6) + b"six", hopLimit=64))
        f = self.h.takeOne()
        self.assertEqual((f.icmptype, f.id, f.seq, f.data, f.ipsrc), (129, 5, 6, b"six", HOST6))

    def test_dhcp6Information(self):
        request = bytes((11, 1, 2, 3)) + struct.pack("!HH", 1, 10) + b"\0\x03\0\x01" + GUEST_MAC
        self.h.send(self.g.udp6(bytes.fromhex("ff020000000000000000000000010002"), 546, 547,
                                request, src=GUEST_LL))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst, f.sport, f.dport), (P.IP6_ROUTER_LL, GUEST_LL,
                                                                547, 546))
        self.assertEqual(f.payload[:4], bytes((7, 1, 2, 3)))
        self.assertIn(struct.pack("!HH", 23, 16) + DNS6, f.payload)
        self.assertIn(struct.pack("!HH", 1, 10) + b"\0\x03\0\x01" + GUEST_MAC, f.payload)

    def test_dhcp6SolicitIgnored(self):
        request = bytes((1, 1, 2, 3))
        self.h.send(self.g.udp6(bytes.fromhex("ff020000000000000000000000010002"), 546, 547,
                                request, src=GUEST_LL))
        self.assertEqual(self.h.frames, [])

    def test_udpToHostLoopback(self):
        self.h.send(self.ns(HOST6))
        self.h.take()
        self.h.send(self.g.udp6(HOST6, 4000, 7000, b"v6"))
        (sock,) = self.h.host.udpSockets
        self.assertEqual(sock.sent, [(b"v6", ("::1", 7000))])
        sock.deliver(b"back", ("::1", 7000))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.payload, f.dst), (HOST6, b"back", GUEST_MAC))

    def test_dns6FallsBackToIPv4Resolver(self):
        self.h.send(self.g.udp6(DNS6, 4000, 53, b"q"))
        (sock,) = self.h.host.udpSockets
        self.assertEqual(sock.sent, [(b"q", ("127.0.0.1", 53))])
        sock.deliver(b"a", ("127.0.0.1", 53))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.sport), (DNS6, 53))

    def test_ipv6Disabled(self):
        h = Harness(SlirpConfig(resolvConf=self.conf, ipv6=False))
        h.send(self.ns(HOST6))
        self.assertEqual(h.frames, [])
        h.advance(1000, step=100)
        self.assertEqual(h.frames, [])


class TftpTests(TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, self.root)
        self.content = bytes(range(256)) * 5  # 1280 bytes: 3 blocks
        with open(os.path.join(self.root, "boot.img"), "wb") as f:
            f.write(self.content)
        self.h = Harness(SlirpConfig(resolvConf="/none", tftpPath=self.root))
        self.g = Guest()
        self.h.send(self.g.arpRequest(GATEWAY))
        self.h.take()

    def rrq(self, name: bytes, *options: bytes) -> bytes:
        return self.g.udp(GATEWAY, 3000, 69, b"\0\x01" + name + b"\0octet\0"
                          + b"".join(o + b"\0" for o in options))

    def ack(self, block: int) -> bytes:
        return self.g.udp(GATEWAY, 3000, 69, struct.pack("!HH", 4, block))

    def test_download(self):
        self.h.send(self.rrq(b"boot.img"))
        received = b""
        block = 1
        while True:
            f = self.h.takeOne()
            self.assertEqual((f.sport, f.dport), (69, 3000))
            opcode, number = struct.unpack_from("!HH", f.payload)
            self.assertEqual((opcode, number), (3, block))
            received += f.payload[4:]
            self.h.send(self.ack(block))
            if len(f.payload) - 4 < 512:
                break
            block += 1
        self.assertEqual(received, self.content)
        self.assertEqual(self.h.engine.tftp.sessions, {})

    def test_options(self):
        self.h.send(self.rrq(b"boot.img", b"blksize", b"1024", b"tsize", b"0"))
        f = self.h.takeOne()
        self.assertEqual(f.payload, b"\0\x06blksize\x001024\x00tsize\x001280\x00")
        self.h.send(self.ack(0))
        self.assertEqual(len(self.h.takeOne().payload), 4 + 1024)

    def test_retransmission(self):
        self.h.send(self.rrq(b"boot.img"))
        first = self.h.takeOne().payload
        self.h.advance(5.5, step=0.5)
        self.assertEqual(self.h.takeOne().payload, first)
        self.h.advance(60, step=1)
        self.assertEqual(self.h.engine.tftp.sessions, {})

    def test_escapes(self):
        for name in (b"../etc/passwd", b"/../../etc/passwd", b"a/../../x"):
            self.h.send(self.rrq(name))
            f = self.h.takeOne()
            self.assertEqual(f.payload[:4], b"\0\x05\0\x02")

    def test_missing(self):
        self.h.send(self.rrq(b"nothere"))
        self.assertEqual(self.h.takeOne().payload[:4], b"\0\x05\0\x01")

    def test_write(self):
        self.h.send(self.g.udp(GATEWAY, 3000, 69, b"\0\x02x\0octet\0"))
        self.assertEqual(self.h.takeOne().payload[:4], b"\0\x05\0\x02")


class IPv6ForwardTests(TestCase):
    """
    tcpfwd/udpfwd with IPv6 on either side (a vdetwist extension: libslirp
    forwards IPv4 only).  A client of the guest's family keeps its address
    (loopback as the gateway); one of the other family appears as the
    gateway of the guest's family.
    """

    def setUp(self):
        config = fromOptions({
            "udpfwd": "[::1]:5353:[fd00::15]:53,5354:[fd00::15]:54,[::]:5355:0.0.0.0:55",
            "tcpfwd": "[::]:8080:[fd00::15]:80,[::]:8081:10.0.2.15:81",
        }, environ={})
        config.resolvConf = "/none"
        self.h = Harness(config)
        self.g = Guest(ip6=GUEST6)
        # The engine learns the guest's MACs from its ARP and NDP.
        self.h.send(self.g.arpRequest(GATEWAY))
        body = b"\0\0\0\0" + HOST6 + bytes((1, 1)) + GUEST_MAC
        self.h.send(self.g.icmp6(P.solicitedNode(HOST6), 135, body))
        self.h.take()

    def listener(self, proto: str, address: str, port: int):
        return self.h.host.listeners[(proto, address, port)]

    def test_udpIPv6(self):
        listener = self.listener("udp", "::1", 5353)
        listener.deliver(b"question", ("::1", 40000))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.sport, f.ipdst, f.dport, f.payload),
                         (HOST6, 40000, GUEST6, 53, b"question"))
        self.h.send(self.g.udp6(HOST6, 53, 40000, b"answer"))
        self.assertEqual(listener.sent, [(b"answer", ("::1", 40000))])

    def test_udpIPv4ClientToIPv6Guest(self):
        listener = self.listener("udp", "0.0.0.0", 5354)
        listener.deliver(b"q", ("192.0.2.50", 40000))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst, f.dport), (HOST6, GUEST6, 54))
        self.h.send(self.g.udp6(HOST6, 54, 40000, b"a"))
        self.assertEqual(listener.sent, [(b"a", ("192.0.2.50", 40000))])

    def test_udpIPv6ClientToIPv4Guest(self):
        listener = self.listener("udp", "::", 5355)
        listener.deliver(b"q", ("2001:db8::5", 40000))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst, f.dport), (GATEWAY, GUEST_IP, 55))
        self.h.send(self.g.udp(GATEWAY, 55, 40000, b"a"))
        self.assertEqual(listener.sent, [(b"a", ("2001:db8::5", 40000))])
        # an IPv4 client of the dual-stack socket keeps its address
        listener.deliver(b"q4", ("::ffff:192.0.2.50", 40001))
        f = self.h.takeOne()
        self.assertEqual((f.ipsrc, f.ipdst), (ip4("192.0.2.50"), GUEST_IP))
        self.h.send(self.g.udp(ip4("192.0.2.50"), 55, 40001, b"a4"))
        self.assertEqual(listener.sent[-1], (b"a4", ("::ffff:192.0.2.50", 40001)))

    def test_tcp(self):
        stream, conn = self.listener("tcp", "::", 8080).connectFrom(("2001:db8::5", 45678))
        self.assertIsNotNone(conn)
        syn = self.h.takeOne()
        self.assertEqual((syn.flags, syn.ipsrc, syn.sport, syn.ipdst, syn.dport),
                         (T.SYN, bytes.fromhex("20010db8" + "00" * 11 + "05"), 45678,
                          GUEST6, 80))
        stream, conn = self.listener("tcp", "::", 8081).connectFrom(("2001:db8::5", 45679))
        syn = self.h.takeOne()
        self.assertEqual((syn.flags, syn.ipsrc, syn.sport, syn.ipdst, syn.dport),
                         (T.SYN, GATEWAY, 45679, GUEST_IP, 81))

    def test_guestFamilyDisabled(self):
        """
        With IPv6 off, a forward to an IPv6 guest refuses its clients.
        """
        config = fromOptions({"v4": "", "tcpfwd": "8080:[fd00::15]:80"}, environ={})
        h = Harness(config)
        stream, conn = h.host.listeners[("tcp", "0.0.0.0", 8080)].connectFrom(
            ("192.0.2.50", 1234))
        self.assertIsNone(conn)
        self.assertEqual(h.frames, [])
