"""
Test helpers for the slirp engine: a L{Harness} running an engine on a
L{twisted.internet.task.Clock} with a L{MemoryHost}, a L{Guest} that builds
the frames a guest would send, and L{decode}, which parses (and checks the
checksums of) the frames the engine emits.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Optional

from twisted.internet.task import Clock

from vdetwist.slirp import packets as P
from vdetwist.wire.checksum import pseudo4, pseudo6, residue
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.dhcp import BOOTP, MAGIC, parseOptions
from vdetwist.slirp.driver import Driver
from vdetwist.slirp.engine import SlirpEngine
from vdetwist.slirp.memhost import MemoryHost

GUEST_MAC = bytes.fromhex("020000000001")
GUEST_IP = bytes([10, 0, 2, 15])
GATEWAY = bytes([10, 0, 2, 2])
DNS = bytes([10, 0, 2, 3])
GATEWAY_MAC = bytes.fromhex("52550a000202")


def ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


class ChecksumError(AssertionError):
    pass


def decode(frame: bytes) -> SimpleNamespace:
    """
    The fields of a frame the engine emitted; checksums are verified
    (L{ChecksumError} otherwise).
    """
    f = SimpleNamespace(frame=frame, dst=frame[:6], src=frame[6:12],
                        type=(frame[12] << 8) | frame[13], proto=None)
    body = frame[14:]
    if f.type == P.ETH_ARP:
        (_, _, _, _, f.op, f.sha, f.spa, f.tha, f.tpa) = P.ARP.unpack_from(body)
        f.proto = "arp"
        return f
    if f.type == P.ETH_IP:
        ihl = (body[0] & 15) * 4
        total = (body[2] << 8) | body[3]
        packet = body[:total]
        if residue(packet[:ihl]):
            raise ChecksumError("IPv4 header")
        f.ip = packet
        f.ipsrc, f.ipdst, f.ttl, f.ipproto = packet[12:16], packet[16:20], packet[8], packet[9]
        f.tos, f.ident, f.fragment = packet[1], (packet[4] << 8) | packet[5], packet[6:8]
        l4 = packet[ihl:]
        if packet[6] & 0x3F or packet[7]:
            f.proto = "fragment"
            f.l4 = l4
            return f
        pseudo = pseudo4(f.ipsrc, f.ipdst, f.ipproto, len(l4))
    elif f.type == P.ETH_IPV6:
        packet = body[: 40 + ((body[4] << 8) | body[5])]
        f.ip = packet
        f.ipsrc, f.ipdst, f.ttl, f.ipproto = packet[8:24], packet[24:40], packet[7], packet[6]
        l4 = packet[40:]
        pseudo = pseudo6(f.ipsrc, f.ipdst, f.ipproto, len(l4))
    else:
        return f
    f.l4 = l4
    if f.ipproto == P.PROTO_TCP:
        if (residue(l4) + pseudo) % 0xFFFF:
            raise ChecksumError("TCP")
        (f.sport, f.dport, f.seq, f.ack, off, f.flags, f.window, _, _) = P.TCP.unpack_from(l4)
        f.options = l4[20 : (off >> 4) * 4]
        f.payload = l4[(off >> 4) * 4 :]
        f.proto = "tcp"
    elif f.ipproto == P.PROTO_UDP:
        if (residue(l4) + pseudo) % 0xFFFF:
            raise ChecksumError("UDP")
        f.sport, f.dport, length, _ = P.UDP.unpack_from(l4)
        f.payload = l4[8:length]
        f.proto = "udp"
    elif f.ipproto in (P.PROTO_ICMP, P.PROTO_ICMPV6):
        if f.ipproto == P.PROTO_ICMP and residue(l4):
            raise ChecksumError("ICMP")
        if f.ipproto == P.PROTO_ICMPV6 and (residue(l4) + pseudo) % 0xFFFF:
            raise ChecksumError("ICMPv6")
        f.icmptype, f.icmpcode = l4[0], l4[1]
        f.id, f.seq = struct.unpack_from("!HH", l4, 4) if len(l4) >= 8 else (None, None)
        f.data = l4[8:]
        f.proto = "icmp"
    return f


def describe(f: SimpleNamespace) -> str:
    """
    A short text for a decoded frame, for assertion messages.
    """
    if f.proto == "tcp":
        return (f"tcp {f.sport}->{f.dport} seq={f.seq} ack={f.ack} flags={f.flags:#x} "
                f"win={f.window} len={len(f.payload)}")
    if f.proto == "udp":
        return f"udp {f.sport}->{f.dport} len={len(f.payload)}"
    if f.proto == "icmp":
        return f"icmp type={f.icmptype} code={f.icmpcode}"
    if f.proto == "arp":
        return f"arp op={f.op} {f.spa.hex()}->{f.tpa.hex()}"
    if f.proto == "fragment":
        return f"fragment proto={f.ipproto} len={len(f.l4)}"
    return f"ethertype {f.type:#x} len={len(f.frame)}"


def decodeDhcp(f: SimpleNamespace) -> SimpleNamespace:
    payload = f.payload
    (op, _, _, _, xid, _, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file) = \
        BOOTP.unpack_from(payload)
    assert payload[BOOTP.size : BOOTP.size + 4] == MAGIC
    options = parseOptions(payload[BOOTP.size + 4 :])
    return SimpleNamespace(op=op, xid=xid, flags=flags, ciaddr=ciaddr, yiaddr=yiaddr,
                           siaddr=siaddr, chaddr=chaddr[:6], file=file.rstrip(b"\0"),
                           options=options, type=options.get(53, b"\0")[0])


class Guest:
    """
    Builds frames as a guest at C{mac}/C{ip} would send them.
    """

    def __init__(self, mac: bytes = GUEST_MAC, ip: bytes = GUEST_IP,
                 ip6: Optional[bytes] = None, gatewayMac: bytes = GATEWAY_MAC) -> None:
        self.mac = mac
        self.ip = ip
        self.ip6 = ip6 if ip6 is not None else bytes.fromhex("fd000000000000000000000000000015")
        self.gatewayMac = gatewayMac
        self.ident = 0

    def ether(self, ethertype: int, payload: bytes, dst: Optional[bytes] = None) -> bytes:
        return P.ETH.pack(dst or self.gatewayMac, self.mac, ethertype) + payload

    def arpRequest(self, target: bytes, sender: Optional[bytes] = None) -> bytes:
        arp = P.ARP.pack(1, P.ETH_IP, 6, 4, 1, self.mac, self.ip if sender is None else sender,
                         P.ZERO_MAC, target)
        return self.ether(P.ETH_ARP, arp, P.BROADCAST_MAC)

    def arpReply(self, to: bytes, toMac: bytes) -> bytes:
        arp = P.ARP.pack(1, P.ETH_IP, 6, 4, 2, self.mac, self.ip, toMac, to)
        return self.ether(P.ETH_ARP, arp, toMac)

    def ipPacket(self, dst: bytes, proto: int, payload: bytes, src: Optional[bytes] = None,
                 ident: Optional[int] = None, fragment: int = 0, ttl: int = 64) -> bytes:
        src = self.ip if src is None else src
        self.ident += 1
        header = P.IP4.pack(0x45, 0, 20 + len(payload), self.ident if ident is None else ident,
                            fragment, ttl, proto, 0, src, dst)
        from vdetwist.wire.checksum import checksum

        header = header[:10] + P.U16.pack(checksum(header)) + header[12:]
        return header + payload

    def udp(self, dst: bytes, sport: int, dport: int, payload: bytes,
            src: Optional[bytes] = None, dstMac: Optional[bytes] = None) -> bytes:
        src = self.ip if src is None else src
        segment = P.udpSegment(src, dst, sport, dport, payload)
        return self.ether(P.ETH_IP, self.ipPacket(dst, P.PROTO_UDP, segment, src=src), dstMac)

    def dhcp(self, kind: int, xid: int = 0x1234, requested: Optional[bytes] = None,
             ciaddr: bytes = P.IP4_ANY) -> bytes:
        bootp = BOOTP.pack(1, 1, 6, 0, xid, 0, 0x8000, ciaddr, P.IP4_ANY, P.IP4_ANY,
                           P.IP4_ANY, self.mac + b"\0" * 10, b"", b"")
        options = bytes((53, 1, kind))
        if requested is not None:
            options += bytes((50, 4)) + requested
        options += bytes((255,))
        return self.udp(P.IP4_BROADCAST, 68, 67, bootp + MAGIC + options, src=P.IP4_ANY,
                        dstMac=P.BROADCAST_MAC)

    def ping(self, dst: bytes, ident: int = 7, seq: int = 1, data: bytes = b"abcdefgh",
             dstMac: Optional[bytes] = None) -> bytes:
        message = P.icmp4(8, 0, struct.pack("!HH", ident, seq) + data)
        return self.ether(P.ETH_IP, self.ipPacket(dst, P.PROTO_ICMP, message), dstMac)

    def tcp(self, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
            window: int = 65535, options: bytes = b"", payload: bytes = b"") -> bytes:
        segment = P.tcpSegment(self.ip, dst, sport, dport, seq, ack, flags, window, options,
                               payload)
        return self.ether(P.ETH_IP, self.ipPacket(dst, P.PROTO_TCP, segment))

    # IPv6
    def ip6packet(self, dst: bytes, nextHeader: int, payload: bytes,
                  src: Optional[bytes] = None, hopLimit: int = 64) -> bytes:
        return P.ipv6(self.ip6 if src is None else src, dst, nextHeader, payload, hopLimit)

    def ether6(self, packet: bytes, dstMac: Optional[bytes] = None) -> bytes:
        dst = packet[24:40]
        if dstMac is None:
            dstMac = P.multicastMac6(dst) if dst[0] == 0xFF else bytes.fromhex("525600000002")
        return P.ETH.pack(dstMac, self.mac, P.ETH_IPV6) + packet

    def icmp6(self, dst: bytes, kind: int, body: bytes, src: Optional[bytes] = None,
              hopLimit: int = 255) -> bytes:
        src = self.ip6 if src is None else src
        message = P.icmp6(src, dst, kind, 0, body)
        return self.ether6(self.ip6packet(dst, P.PROTO_ICMPV6, message, src, hopLimit))

    def udp6(self, dst: bytes, sport: int, dport: int, payload: bytes,
             src: Optional[bytes] = None) -> bytes:
        src = self.ip6 if src is None else src
        segment = P.udpSegment(src, dst, sport, dport, payload)
        return self.ether6(self.ip6packet(dst, P.PROTO_UDP, segment, src))

    def tcp6(self, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
             window: int = 65535, options: bytes = b"", payload: bytes = b"") -> bytes:
        segment = P.tcpSegment(self.ip6, dst, sport, dport, seq, ack, flags, window, options,
                               payload)
        return self.ether6(self.ip6packet(dst, P.PROTO_TCP, segment))


class Harness:
    """
    An engine on a L{Clock} with a L{MemoryHost}; frames it emits collect
    in C{frames}.
    """

    def __init__(self, config: Optional[SlirpConfig] = None, autoAccept: bool = False,
                 seed: int = 1, start: bool = True) -> None:
        self.clock = Clock()
        self.host = MemoryHost(autoAccept)
        self.frames: list[bytes] = []
        self.driver = Driver(self.clock)
        self.config = config or SlirpConfig(resolvConf="/nonexistent/resolv.conf")
        self.engine = SlirpEngine(self.config, self.host, self.frames.append,
                                  clock=self.clock.seconds, timerChanged=self.driver.timerChanged,
                                  strict=True, seed=seed)
        self.driver.attach(self.engine)
        self.forwardResults = self.engine.start() if start else []

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            self.engine.input(frame)
        self.engine.flush()

    def take(self) -> list[SimpleNamespace]:
        frames, self.frames[:] = list(self.frames), []
        return [decode(f) for f in frames]

    def takeOne(self) -> SimpleNamespace:
        frames = self.take()
        assert len(frames) == 1, (
            f"expected one frame, got {len(frames)}: {[describe(f) for f in frames]}")
        return frames[0]

    def advance(self, seconds: float, step: Optional[float] = None) -> None:
        if step is None:
            self.clock.advance(seconds)
            return
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))
