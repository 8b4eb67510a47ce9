"""
Header formats, constants and builders for the frames the engine emits.

Addresses inside the engine are C{bytes} (4 for IPv4, 16 for IPv6, 6 for
MACs): they are what the headers hold, hash fast and need no conversion on
the hot path.
"""

from __future__ import annotations

import struct

from vdetwist.wire.checksum import BytesLike, checksum, finish, pseudo4, pseudo6, residue

ETH_HLEN = 14
ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\0" * 6

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_FRAG6 = 44

IP4_ANY = b"\0\0\0\0"
IP4_BROADCAST = b"\xff\xff\xff\xff"
IP4_LOOPBACK = b"\x7f\0\0\x01"
IP6_ANY = b"\0" * 16
IP6_LOOPBACK = b"\0" * 15 + b"\x01"
#: ::ffff:0:0/96, IPv4 addresses as IPv6 (a dual-stack socket's IPv4 peers).
IP6_V4MAPPED = b"\0" * 10 + b"\xff\xff"
IP6_ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
IP6_ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
#: The router's link-local address (fe80::2).
IP6_ROUTER_LL = bytes.fromhex("fe800000000000000000000000000002")

ETH = struct.Struct("!6s6sH")
IP4 = struct.Struct("!BBHHHBBH4s4s")
IP6 = struct.Struct("!IHBB16s16s")
UDP = struct.Struct("!HHHH")
TCP = struct.Struct("!HHIIBBHHH")
ARP = struct.Struct("!HHBBH6s4s6s4s")
ICMP_ECHO = struct.Struct("!BBHHH")
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20


def mac4(address: bytes) -> bytes:
    """
    The MAC of an emulated IPv4 host: 52:55 and the address.
    """
    return b"\x52\x55" + address


def mac6(address: bytes) -> bytes:
    """
    The MAC of an emulated IPv6 host: 52:56 and the last 4 address bytes.
    """
    return b"\x52\x56" + address[12:]


def multicastMac6(address: bytes) -> bytes:
    return b"\x33\x33" + address[12:]


def solicitedNode(address: bytes) -> bytes:
    return bytes.fromhex("ff0200000000000000000001ff") + address[13:]


def ether(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return ETH.pack(dst, src, ethertype) + payload


class IdentCounter:
    """
    IPv4 identification numbers.
    """

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value = (self.value + 1) & 0xFFFF
        return self.value


_ident = IdentCounter()


def ipv4Header(src: bytes, dst: bytes, proto: int, length: int, ttl: int = 64,
               ident: int | None = None, dontFragment: bool = False) -> bytes:
    """
    The 20-byte IPv4 header of a packet carrying C{length} bytes.
    """
    header = IP4.pack(
        0x45, 0, 20 + length, _ident.next() if ident is None else ident,
        0x4000 if dontFragment else 0, ttl, proto, 0, src, dst,
    )
    return header[:10] + U16.pack(checksum(header)) + header[12:]


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = 64,
         ident: int | None = None, dontFragment: bool = False) -> bytes:
    """
    An IPv4 packet around C{payload}.
    """
    return ipv4Header(src, dst, proto, len(payload), ttl, ident, dontFragment) + payload


def ipv6(src: bytes, dst: bytes, nextHeader: int, payload: bytes,
         hopLimit: int = 64) -> bytes:
    return IP6.pack(0x60000000, len(payload), nextHeader, hopLimit, src, dst) + payload


def l4checksum4(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    return finish(residue(segment) + pseudo4(src, dst, proto, len(segment)))


def l4checksum6(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    return finish(residue(segment) + pseudo6(src, dst, proto, len(segment)))


def udpSegment(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """
    A UDP header and payload with the checksum for C{src}/C{dst} (4 or 16
    bytes).
    """
    length = 8 + len(payload)
    segment = UDP.pack(sport, dport, length, 0) + payload
    if len(src) == 4:
        csum = l4checksum4(src, dst, PROTO_UDP, segment)
    else:
        csum = l4checksum6(src, dst, PROTO_UDP, segment)
    return segment[:6] + U16.pack(csum) + segment[8:]


def udpPacket(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    segment = udpSegment(src, dst, sport, dport, payload)
    if len(src) == 4:
        return ipv4(src, dst, PROTO_UDP, segment)
    return ipv6(src, dst, PROTO_UDP, segment)


def icmp4(kind: int, code: int, body: bytes) -> bytes:
    """
    An ICMPv4 message (type, code, checksum, then C{body}).
    """
    message = bytes((kind, code, 0, 0)) + body
    return message[:2] + U16.pack(checksum(message)) + message[4:]


def icmp6(src: bytes, dst: bytes, kind: int, code: int, body: bytes) -> bytes:
    message = bytes((kind, code, 0, 0)) + body
    csum = l4checksum6(src, dst, PROTO_ICMPV6, message)
    return message[:2] + U16.pack(csum) + message[4:]


def tcpSegment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
               flags: int, window: int, options: bytes = b"", payload: BytesLike = b"") -> bytes:
    """
    A TCP header (with C{options}, padded to 32 bits) and payload.
    """
    if len(options) & 3:
        options += b"\0" * (4 - (len(options) & 3))
    offset = (20 + len(options)) << 2
    header = TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset, flags,
                      window, 0, 0) + options
    length = len(header) + len(payload)
    if len(src) == 4:
        pseudo = pseudo4(src, dst, PROTO_TCP, length)
    else:
        pseudo = pseudo6(src, dst, PROTO_TCP, length)
    csum = finish(residue(header) + residue(payload) + pseudo) if not (len(header) & 1) else None
    if csum is None:  # pragma: no cover - headers are always even
        csum = finish(residue(header + payload) + pseudo)
    return header[:16] + U16.pack(csum) + header[18:] + payload


def tcpHeaderPartial(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
                     flags: int, window: int, payloadLength: int) -> bytes:
    """
    A 20-byte TCP header whose checksum field holds only the pseudo-header's
    sum (for C{payloadLength} bytes after it), as a sender leaves it for a
    receiver that completes it (virtio-net's C{NEEDS_CSUM}): no byte of the
    payload is read.
    """
    length = 20 + payloadLength
    if len(src) == 4:
        pseudo = pseudo4(src, dst, PROTO_TCP, length)
    else:
        pseudo = pseudo6(src, dst, PROTO_TCP, length)
    return TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, window,
                    pseudo, 0)


#: Ethernet, a 20-byte IPv4 header and a 20-byte TCP header, in one pack.
_TCP4_FRAME = struct.Struct("!6s6sHBBHHHBBH4s4sHHIIBBHHH")


def _words(data: bytes) -> int:
    """
    The plain sum of C{data}'s big-endian 16-bit words (C{data} even).
    """
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


class Tcp4Frames:
    """
    The Ethernet frames of one IPv4 TCP connection toward a guest (no TCP
    options, TTL 64): the sums of the fields that never change are taken
    once, so a segment costs one C{pack}, a few additions and the sum of
    its payload, and its frame is one concatenation (instead of a TCP
    segment, an IP packet and a frame built around one another).  The
    bytes are those of L{ether}(L{ipv4}(L{tcpSegment})).
    """

    __slots__ = ("src", "dst", "sport", "dport", "ipBase", "tcpBase")

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int) -> None:
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        addresses = _words(src) + _words(dst)
        # version/IHL and TOS, TTL and protocol; then the total length and
        # identification per packet
        self.ipBase = 0x4500 + (64 << 8 | PROTO_TCP) + addresses
        # the pseudo-header (without the length), the ports, the data offset
        self.tcpBase = addresses + PROTO_TCP + sport + dport + 0x5000

    def frame(self, dstMac: bytes, srcMac: bytes, seq: int, ack: int, flags: int, window: int,
              payload: BytesLike = b"") -> bytes:
        length = 20 + len(payload)
        ident = _ident.next()
        seq &= 0xFFFFFFFF
        ack &= 0xFFFFFFFF
        tcpSum = (self.tcpBase + length + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16)
                  + (ack & 0xFFFF) + flags + window)
        if payload:
            tcpSum += residue(payload)
        return _TCP4_FRAME.pack(
            dstMac, srcMac, ETH_IP,
            0x45, 0, 20 + length, ident, 0, 64, PROTO_TCP,
            0xFFFF - (self.ipBase + 20 + length + ident) % 0xFFFF, self.src, self.dst,
            self.sport, self.dport, seq, ack, 0x50, flags, window, 0xFFFF - tcpSum % 0xFFFF, 0,
        ) + payload


def ipNetwork(address: bytes, mask: bytes) -> bytes:
    return bytes(a & m for a, m in zip(address, mask))
