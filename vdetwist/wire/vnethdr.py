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
