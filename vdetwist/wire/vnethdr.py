"""
The virtio-net header (C{struct virtio_net_hdr}, C{<linux/virtio_net.h>})
that an offloading tap puts before every frame, and the C{TUN_F_*} offload
flags (C{<linux/if_tun.h>}).

A I{vnet frame} in vdetwist is these 10 bytes followed by the Ethernet frame,
kept as one C{bytes} so that a frame read from one tap is written to another
without a copy.  Fields are little-endian, as on x86 without
C{TUNSETVNETBE}.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

#: Length of C{struct virtio_net_hdr} (no C{num_buffers}).
VNET_HDRLEN = 10

# flags
NEEDS_CSUM = 0x01
DATA_VALID = 0x02

# gso_type
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

# TUNSETOFFLOAD flags: what a reader of the device accepts.
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

_HEADER = struct.Struct("<BBHHHH")

#: The header of a plain frame: complete checksum, no segmentation.
PLAIN = bytes(VNET_HDRLEN)


class VnetHeader(NamedTuple):
    flags: int = 0
    gsoType: int = GSO_NONE
    hdrLen: int = 0
    gsoSize: int = 0
    csumStart: int = 0
    csumOffset: int = 0

    def pack(self) -> bytes:
        return _HEADER.pack(*self)

    @classmethod
    def unpack(cls, frame: bytes) -> VnetHeader:
        """
        The header at the start of the vnet frame C{frame}.
        """
        return cls._make(_HEADER.unpack_from(frame))


def neededOffloads(header: bytes) -> int:
    """
    The C{TUN_F_*} flags a receiver must have accepted to be given a frame
    with this (packed) header as it is: 0 for a plain frame.
    """
    flags, gsoType = header[0], header[1]
    needs = TUN_F_CSUM if flags & NEEDS_CSUM else 0
    kind = gsoType & ~GSO_ECN
    if kind == GSO_NONE:
        return needs
    needs |= TUN_F_CSUM | _GSO_NEEDS.get(kind, 1 << 30)
    if gsoType & GSO_ECN:
        needs |= TUN_F_TSO_ECN
    return needs


_GSO_NEEDS = {
    GSO_TCPV4: TUN_F_TSO4,
    GSO_TCPV6: TUN_F_TSO6,
    GSO_UDP: TUN_F_UFO,
    GSO_UDP_L4: TUN_F_USO4 | TUN_F_USO6,
}


_VLAN_TYPES = (b"\x81\x00", b"\x88\xa8")
_IPV4 = b"\x08\x00"
_IPV6 = b"\x86\xdd"
_TCP = 6
_UDP = 17
#: What each GSO type segments: (the L3 ethertype it needs, or None for
#: either, the L4 protocol, the checksum field's offset in the L4 header).
_GSO_NEEDS_L4 = {
    GSO_TCPV4: (_IPV4, _TCP, 16),
    GSO_TCPV6: (_IPV6, _TCP, 16),
    GSO_UDP: (None, _UDP, 6),
    GSO_UDP_L4: (None, _UDP, 6),
}


def headerProblem(frame: bytes) -> str | None:
    """
    Why the header of the vnet frame C{frame} lies about the Ethernet frame
    after it, or C{None} if it tells the truth: a checksum to complete past
    the frame's end, an unknown GSO type, a segment size of 0, a GSO type
    that does not match the packet (TCPv4 on anything but TCP over IPv4),
    a checksum start elsewhere than the L4 header of a GSO frame.  VLAN
    tags (802.1Q, 802.1ad) may come before the L3 header.  It parses no
    further, so it is cheap enough for every super-frame a switch passes
    on as it is.
    """
    if len(frame) < VNET_HDRLEN + 14:
        return "shorter than a virtio-net and an Ethernet header"
    flags, gsoType, _, gsoSize, csumStart, csumOffset = _HEADER.unpack_from(frame)
    size = len(frame) - VNET_HDRLEN
    if flags & NEEDS_CSUM and csumStart + csumOffset + 2 > size:
        return f"checksum at {csumStart}+{csumOffset}, past the frame's {size} bytes"
    kind = gsoType & ~GSO_ECN
    if kind == GSO_NONE:
        return None
    needs = _GSO_NEEDS_L4.get(kind)
    if needs is None:
        return f"unknown GSO type {gsoType:#x}"
    if gsoSize == 0:
        return "GSO with a segment size of 0"
    l3 = VNET_HDRLEN + 12
    while frame[l3:l3 + 2] in _VLAN_TYPES:
        l3 += 4
    ethertype, l3 = frame[l3:l3 + 2], l3 + 2
    if ethertype == _IPV4 and len(frame) >= l3 + 20:
        protocol, l4 = frame[l3 + 9], l3 + (frame[l3] & 0x0F) * 4
    elif ethertype == _IPV6 and len(frame) >= l3 + 40:
        protocol, l4 = frame[l3 + 6], l3 + 40
    else:
        return f"GSO type {gsoType:#x} on a frame that is not IP"
    wantedType, wantedProtocol, wantedOffset = needs
    if (wantedType not in (None, ethertype) or protocol != wantedProtocol
            or len(frame) < l4 + wantedOffset + 2):
        return f"GSO type {gsoType:#x} on IP protocol {protocol}"
    if flags & NEEDS_CSUM and (csumStart != l4 - VNET_HDRLEN or csumOffset != wantedOffset):
        return f"checksum at {csumStart}+{csumOffset}, not in the L4 header"
    return None
