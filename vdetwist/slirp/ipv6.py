"""
IPv6 input checks and neighbour discovery (RFC 4861) for the router
(fe80::2), the host address (fd00::2) and the DNS address (fd00::3).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, Optional

from vdetwist.slirp import packets as P
from vdetwist.wire.checksum import pseudo6, residue
from vdetwist.slirp.dhcp import (
    ND_NA, ND_NS, ND_RA, ND_RS, OPT_SOURCE_LL, OPT_TARGET_LL,
)
from vdetwist.slirp.ipv4 import Reassembler

#: RFC 8200 4.5: reassembly is abandoned 60 s after the first fragment.
REASSEMBLY_TIMEOUT6 = 60.0
#: The IPv6 header and a fragment header right after it.
FRAGMENT_HLEN = 48

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext

ICMP6_UNREACH = 1
ICMP6_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
UNREACH6_ADDRESS = 3
UNREACH6_PORT = 4


def parse(data: bytes) -> Optional[bytes]:
    """
    Check an IPv6 packet (Ethernet payload, maybe padded); returns it cut to
    its length, or C{None}.
    """
    if len(data) < 40 or data[0] >> 4 != 6:
        return None
    length = ((data[4] << 8) | data[5]) + 40
    if length > len(data):
        return None
    return data if length == len(data) else data[:length]


def l4ok(packet: bytes, proto: int) -> bool:
    """
    Whether the upper-layer checksum of an IPv6 packet (no extension
    headers) is right.
    """
    segment = packet[40:]
    return (residue(segment) + pseudo6(packet[8:24], packet[24:40], proto, len(segment))) \
        % 0xFFFF == 0


def ndOptions(data: bytes) -> Optional[dict[int, bytes]]:
    """
    Neighbour discovery options; C{None} if one has length 0 or overruns.
    """
    options: dict[int, bytes] = {}
    i = 0
    while i + 2 <= len(data):
        kind, length = data[i], data[i + 1] * 8
        if length == 0 or i + length > len(data):
            return None
        options.setdefault(kind, data[i + 2 : i + length])
        i += length
    return options


def unreachable6(packet: bytes, code: int, source: bytes, kind: int = ICMP6_UNREACH,
                 mtu: int = 0) -> bytes:
    quoted = packet[: 1280 - 48]
    body = struct.pack("!I", mtu) + quoted
    message = P.icmp6(source, packet[8:24], kind, code, body)
    return P.ipv6(source, packet[8:24], P.PROTO_ICMPV6, message)


def fragment6(packet: bytes, mtu: int, ident: int) -> list[bytes]:
    """
    C{packet} (no extension headers) cut into fragments of at most C{mtu}
    bytes with fragment headers (RFC 8200 4.5).
    """
    if len(packet) <= mtu:
        return [packet]
    nextHeader = packet[6]
    payload = packet[40:]
    step = (mtu - 48) & ~7
    pieces = []
    for offset in range(0, len(payload), step):
        piece = payload[offset : offset + step]
        more = 1 if offset + step < len(payload) else 0
        fragmentHeader = struct.pack("!BBHI", nextHeader, 0, offset | more, ident)
        pieces.append(packet[:4] + struct.pack("!HB", 8 + len(piece), 44) + packet[7:40]
                      + fragmentHeader + piece)
    return pieces


class Reassembler6(Reassembler):
    """
    IPv6 reassembly (RFC 8200 4.5) with the bounds of the IPv4 one, for
    fragment headers right after the IPv6 header (C{ihl} is 48): fragments
    are keyed by source, destination and identification; the reassembled
    packet is the first fragment's IPv6 header with the fragment header's
    next header.  Atomic fragments (offset 0, no more) are handled on
    their own (RFC 6946).
    """

    timeout = REASSEMBLY_TIMEOUT6
    #: The payload length field counts only what follows the fixed header.
    headerRoom = 0

    def locate(self, ihl: int, packet: bytes) -> tuple[tuple, int, bool]:
        word = (packet[42] << 8) | packet[43]
        return (packet[8:24], packet[24:40], packet[44:48]), word & 0xFFF8, bool(word & 1)

    def rebuild(self, header: bytes, body: bytes) -> bytes:
        return header[:4] + struct.pack("!HB", len(body), header[40]) + header[7:40] + body

    def quote(self, header: bytes, first: bytes) -> bytes:
        # RFC 4443 2.4(c): as much as fits in a minimum-MTU packet.
        return (header + first)[: 1280 - 48]

    def add(self, ihl: int, packet: bytes, now: float) -> Optional[bytes]:
        if not ((packet[42] << 8) | packet[43]) & 0xFFF9:
            return self.rebuild(packet[:ihl], packet[ihl:])
        return super().add(ihl, packet, now)


class Ndp:
    """
    Answers solicitations for the emulated addresses and learns guests'
    addresses (the link layer sends the solicitations).

    @param routerSolicited: called when a guest asks for a router
        advertisement.
    """

    def __init__(self, context: "LayerContext", routerSolicited: Callable[[], None]) -> None:
        self.context = context
        self.routerSolicited = routerSolicited

    def input(self, packet: bytes, frameSource: bytes) -> bool:
        """
        Handle an ICMPv6 neighbour discovery message; C{False} if it is not
        one (for the caller to handle).
        """
        kind = packet[40]
        if kind not in (ND_RS, ND_NS, ND_NA, ND_RA):
            return False
        # RFC 4861: hop limit 255 and code 0, or it came from off-link.
        if packet[7] != 255 or packet[41] != 0:
            return True
        source = packet[8:24]
        context = self.context
        link = context.link
        if kind == ND_RS:
            if len(packet) < 48:
                return True
            options = ndOptions(packet[48:])
            if options is None:
                return True
            mac = options.get(OPT_SOURCE_LL)
            if source != P.IP6_ANY and mac is not None and len(mac) >= 6:
                link.learn(source, mac[:6])
            self.routerSolicited()
        elif kind == ND_NS:
            if len(packet) < 64:
                return True
            target = packet[48:64]
            options = ndOptions(packet[64:])
            if options is None or target[0] == 0xFF:
                return True
            mac = options.get(OPT_SOURCE_LL)
            if source == P.IP6_ANY:
                if mac is not None:
                    return True  # RFC 4861 7.1.1: no source LL option in DAD
            elif mac is not None and len(mac) >= 6:
                link.learn(source, mac[:6])
            if target in context.policy.local6:
                self._advertise(target, source, solicited=source != P.IP6_ANY)
        elif kind == ND_NA:
            if len(packet) < 64:
                return True
            target = packet[48:64]
            options = ndOptions(packet[64:])
            if options is None:
                return True
            mac = options.get(OPT_TARGET_LL)
            if mac is not None and len(mac) >= 6 and target not in context.policy.local6:
                link.learn(target, mac[:6])
        return True

    def _advertise(self, target: bytes, to: bytes, solicited: bool) -> None:
        flags = 0x80000000 | 0x20000000  # router, override
        if solicited:
            flags |= 0x40000000
        destination = to if solicited else P.IP6_ALL_NODES
        mac = P.mac6(target) if target != P.IP6_ROUTER_LL else self.context.link.routerMac6
        body = struct.pack("!I", flags) + target + bytes((OPT_TARGET_LL, 1)) + mac
        message = P.icmp6(target, destination, ND_NA, 0, body)
        packet = P.ipv6(target, destination, P.PROTO_ICMPV6, message, 255)
        frameDest = P.multicastMac6(destination) if destination[0] == 0xFF else \
            self.context.link.lookup(destination)
        if frameDest is None:
            return
        self.context.emit(P.ETH.pack(frameDest, mac, P.ETH_IPV6) + packet)
