"""
Fuzzing the slirp engine with hypothesis: random and mutated frames, mixed
with host events and time passing, never make an exception escape
C{Engine.input} (the harness runs the engine in strict mode, so any
exception fails the test), and the engine's tables stay bounded.

Set C{VDETWIST_FUZZ_EXAMPLES} to run longer (e.g. 20000 for minutes).
"""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from vdetwist.slirp import packets as P
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.dhcp import DISCOVER, REQUEST
from vdetwist.slirp.testing import DNS, GATEWAY, GUEST_IP, Guest, Harness, ip4

EXAMPLES = int(os.environ.get("VDETWIST_FUZZ_EXAMPLES", "300"))

GUEST = Guest()
HOST6 = bytes.fromhex("fd000000000000000000000000000002")
SEEDS = [
    GUEST.arpRequest(GATEWAY),
    GUEST.dhcp(DISCOVER),
    GUEST.dhcp(REQUEST, requested=GUEST_IP),
    GUEST.ping(GATEWAY),
    GUEST.ping(ip4("192.0.2.1")),
    GUEST.udp(DNS, 1000, 53, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"),
    GUEST.udp(ip4("192.0.2.1"), 1000, 2000, b"payload"),
    GUEST.udp(GATEWAY, 1000, 69, b"\0\x01file\0octet\0blksize\0" + b"1024\0"),
    GUEST.tcp(GATEWAY, 40000, 80, 1000, 0, P.TCP_SYN, options=b"\x02\x04\x05\xb4\x01\x03\x03\x07"),
    GUEST.tcp(GATEWAY, 40000, 80, 1001, 1, P.TCP_ACK | P.TCP_PSH, payload=b"GET / HTTP/1.0\r\n"),
    GUEST.tcp(GATEWAY, 40000, 80, 1001, 1, P.TCP_ACK | P.TCP_FIN),
    GUEST.tcp(GATEWAY, 40000, 80, 1001, 1, P.TCP_RST),
    GUEST.ether(P.ETH_IP, GUEST.ipPacket(GATEWAY, P.PROTO_ICMP, b"\x08\0" + b"x" * 30,
                                         ident=9, fragment=0x2000)),
    GUEST.ether(P.ETH_IP, GUEST.ipPacket(GATEWAY, P.PROTO_ICMP, b"y" * 16, ident=9,
                                         fragment=4)),
    GUEST.icmp6(P.IP6_ALL_ROUTERS, 133, b"\0\0\0\0\x01\x01" + GUEST.mac),
    GUEST.icmp6(P.solicitedNode(HOST6), 135, b"\0\0\0\0" + HOST6 + b"\x01\x01" + GUEST.mac),
    GUEST.icmp6(HOST6, 128, b"\0\1\0\2abcd", hopLimit=64),
    GUEST.udp6(bytes.fromhex("ff020000000000000000000000010002"), 546, 547,
               b"\x0b\x01\x02\x03\x00\x01\x00\x04abcd"),
    GUEST.tcp6(HOST6, 40001, 22, 5, 0, P.TCP_SYN),
    # IPv6 fragments (first and last of one echo request), TTL / hop limit 1
    GUEST.ether6(GUEST.ip6packet(HOST6, P.PROTO_FRAG6, struct.pack("!BBHI", 58, 0, 1, 9)
                                 + P.icmp6(GUEST.ip6, HOST6, 128, 0,
                                           b"\0\1\0\2" + b"x" * 36)[:16])),
    GUEST.ether6(GUEST.ip6packet(HOST6, P.PROTO_FRAG6, struct.pack("!BBHI", 58, 0, 16, 9)
                                 + b"x" * 28)),
    GUEST.ether(P.ETH_IP, GUEST.ipPacket(ip4("192.0.2.1"), P.PROTO_UDP, P.udpSegment(
        GUEST_IP, ip4("192.0.2.1"), 1000, 2000, b"ttl"), ttl=1)),
    GUEST.ether6(GUEST.ip6packet(bytes.fromhex("20010db8000000000000000000000001"),
                                 P.PROTO_UDP, P.udpSegment(
        GUEST.ip6, bytes.fromhex("20010db8000000000000000000000001"), 1000, 2000, b"hop"),
        hopLimit=1)),
]


def mutate(data: st.DataObject) -> bytes:
    frame = bytearray(data.draw(st.sampled_from(SEEDS)))
    for _ in range(data.draw(st.integers(0, 4))):
        kind = data.draw(st.integers(0, 3))
        if kind == 0 and frame:
            index = data.draw(st.integers(0, len(frame) - 1))
            frame[index] = data.draw(st.integers(0, 255))
        elif kind == 1:
            frame = frame[: data.draw(st.integers(0, len(frame)))]
        elif kind == 2:
            frame += data.draw(st.binary(max_size=64))
        elif kind == 3 and len(frame) > 40:
            # keep the checksums plausible by fixing up the IPv4 header sum
            if frame[12:14] == b"\x08\x00":
                frame[24:26] = b"\0\0"
                from vdetwist.wire.checksum import checksum

                ihl = (frame[14] & 15) * 4
                if ihl >= 20:
                    frame[24:26] = struct.pack("!H", checksum(bytes(frame[14:14 + ihl])))
    return bytes(frame)


class FuzzTests(TestCase):
    def setUp(self):
        import tempfile

        self.root = tempfile.mkdtemp()
        with open(os.path.join(self.root, "file"), "wb") as f:
            f.write(b"z" * 3000)
        self.addCleanup(__import__("shutil").rmtree, self.root)

    def harness(self) -> Harness:
        config = SlirpConfig(resolvConf="/nonexistent", tftpPath=self.root)
        h = Harness(config, autoAccept=True)
        return h

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def test_mutatedFrames(self, data):
        h = self.harness()
        for _ in range(data.draw(st.integers(1, 30))):
            choice = data.draw(st.integers(0, 9))
            if choice < 7:
                h.engine.input(mutate(data))
            elif choice == 7:
                h.engine.input(data.draw(st.binary(max_size=200)))
            elif choice == 8:
                h.clock.advance(data.draw(st.floats(0, 100)))
            else:
                for stream in h.host.streams:
                    if not stream.aborted and not stream.lost:
                        action = data.draw(st.integers(0, 3))
                        if action == 0:
                            stream.send(data.draw(st.binary(min_size=1, max_size=3000)))
                        elif action == 1:
                            stream.sendEOF()
                        elif action == 2:
                            stream.lose(data.draw(st.booleans()))
            h.engine.flush()
            h.frames.clear()
        self.assertEqual(h.engine.stats["errors"], 0)
        h.engine.close()

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.binary(min_size=0, max_size=1600), max_size=20))
    def test_randomFrames(self, frames):
        h = self.harness()
        for frame in frames:
            h.engine.input(frame)
            # make the random bytes at least reach the IP layers sometimes
            h.engine.input(b"\x52\x55\x0a\x00\x02\x02" + GUEST.mac + b"\x08\x00" + frame)
            h.engine.input(b"\x33\x33\x00\x00\x00\x01" + GUEST.mac + b"\x86\xdd" + frame)
        h.engine.flush()
        self.assertEqual(h.engine.stats["errors"], 0)
