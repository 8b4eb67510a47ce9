"""
What the slirp engine makes of a vnet frame (virtio-net header, then the
Ethernet frame: L{vdetwist.wire.vnethdr}) from an offloading guest link,
such as a tap whose kernel leaves TCP and UDP checksums partial and sends
TSO super-segments of up to 64 KiB.

The engine ends the guests' TCP connections itself, so a TSO super-segment
goes into it whole, as one segment (no segmentation), and a checksum the
header says was left partial (C{NEEDS_CSUM}) or already checked
(C{DATA_VALID}) is not checked again: the per-byte work leaves the upload
path.  Anything else (USO, UFO, a partial checksum where the engine does not
look for one) is made plain by L{vdetwist.wire.gso.segment}.  A header that
lies about its frame raises L{BadVnetFrame}.
"""

from __future__ import annotations

import struct

from vdetwist.slirp import packets as P
from vdetwist.wire.gso import BadVnetFrame
from vdetwist.wire.vnethdr import GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM, VNET_HDRLEN

#: The frame is plain: checksums are checked as usual.
VERIFY = 0
#: Its TCP or UDP checksum need not be checked; it may be a TSO super-segment.
TRUSTED = 1
#: It must go through L{vdetwist.wire.gso.segment} first.
SOFTWARE = 2

_HEADER = struct.Struct("<BBHHHH")
#: Where the Ethernet frame's IP header starts in a vnet frame.
_L3 = VNET_HDRLEN + P.ETH_HLEN
#: Where each L4 protocol keeps its checksum (a vnet header's csum_offset).
_CSUM_OFFSETS = {P.PROTO_TCP: 16, P.PROTO_UDP: 6}
_GSO_FAMILY = {GSO_TCPV4: (P.ETH_IP, "TCPv4"), GSO_TCPV6: (P.ETH_IPV6, "TCPv6")}


def classify(frame: bytes) -> int:
    """
    L{VERIFY}, L{TRUSTED} or L{SOFTWARE}: what the vnet frame C{frame} (at
    least C{VNET_HDRLEN + ETH_HLEN} bytes) needs before the engine takes
    its Ethernet frame.

    @raise BadVnetFrame: a TSO header on a frame that is not a whole TCP
        segment of the header's family, or with a partial checksum that is
        not the TCP checksum.
    """
    flags, gsoType, _, gsoSize, start, offset = _HEADER.unpack_from(frame)
    if not flags and not gsoType:
        return VERIFY
    ethertype = (frame[_L3 - 2] << 8) | frame[_L3 - 1]
    size = len(frame)
    l4 = proto = 0
    if ethertype == P.ETH_IP and size >= _L3 + 20:
        l4 = _L3 + ((frame[_L3] & 0x0F) << 2)
        proto = frame[_L3 + 9]
    elif ethertype == P.ETH_IPV6 and size >= _L3 + 40:
        l4 = _L3 + 40
        proto = frame[_L3 + 6]
    csumAt = _CSUM_OFFSETS.get(proto, 0)
    whole = csumAt > 0 and size >= l4 + (20 if proto == P.PROTO_TCP else 8)
    partialOk = not flags & NEEDS_CSUM or (start == l4 - VNET_HDRLEN and offset == csumAt)
    kind = gsoType & ~GSO_ECN
    if kind == GSO_NONE:
        return TRUSTED if whole and partialOk else SOFTWARE
    family = _GSO_FAMILY.get(kind)
    if family is None:
        return SOFTWARE  # USO, UFO, or unknown (which segment() refuses)
    if ethertype != family[0] or proto != P.PROTO_TCP or not whole:
        raise BadVnetFrame(f"{family[1]} super-frame that is not a whole TCP segment over "
                           f"{'IPv4' if family[0] == P.ETH_IP else 'IPv6'}")
    if not gsoSize:
        raise BadVnetFrame(f"{family[1]} super-frame with gso_size 0")
    if not partialOk:
        raise BadVnetFrame(f"{family[1]} super-frame whose partial checksum at "
                           f"{start}+{offset} is not the TCP checksum")
    return TRUSTED
