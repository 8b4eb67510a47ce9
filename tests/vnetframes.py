"""
Vnet frames for tests: TCP super-frames over IPv4 and IPv6 as an
offloading tap hands them over (checksum left partial: the pseudo-header
sum in the TCP checksum field), and a check of the plain frames made from
them.
"""

from __future__ import annotations

import struct
from typing import Optional, Sequence

from vdetwist.wire.checksum import checksum, pseudo4, pseudo6, verify
from vdetwist.wire.vnethdr import (
    GSO_TCPV4,
    GSO_TCPV6,
    NEEDS_CSUM,
    VNET_HDRLEN,
    VnetHeader,
)

SRC4, DST4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SRC6 = bytes.fromhex("fd000000000000000000000000000001")
DST6 = bytes.fromhex("fd000000000000000000000000000002")


def payloadOf(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(size))


def tcpSuperFrame(dst: bytes, src: bytes, payload: bytes, mss: Optional[int] = None, *,
                  ipv6: bool = False, vlan: Optional[int] = None, seq: int = 1000,
                  ipid: int = 7) -> bytes:
    """
    A vnet frame holding one TCP super-frame (PSH|ACK) of C{payload}, to be
    cut into segments of C{mss} bytes (default: 1514-byte frames); its
    checksum is partial.
    """
    if mss is None:
        mss = 1440 if ipv6 else 1460
    eth = dst + src
    if vlan is not None:
        eth += b"\x81\x00" + vlan.to_bytes(2, "big")
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1, 5 << 4, 0x18, 65535, 0, 0)
    length = len(tcp) + len(payload)
    if ipv6:
        eth += b"\x86\xdd"
        ip = struct.pack("!IHBB16s16s", 6 << 28, length, 6, 64, SRC6, DST6)
        partial = pseudo6(SRC6, DST6, 6, length)
        gsoType = GSO_TCPV6
    else:
        eth += b"\x08\x00"
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, ipid, 0x4000, 64, 6, 0,
                         SRC4, DST4)
        ip = ip[:10] + checksum(ip).to_bytes(2, "big") + ip[12:]
        partial = pseudo4(SRC4, DST4, 6, length)
        gsoType = GSO_TCPV4
    # Partial: the folded pseudo-header sum, not complemented.
    tcp = tcp[:16] + (partial or 0xFFFF).to_bytes(2, "big") + tcp[18:]
    start = len(eth) + len(ip)
    header = VnetHeader(NEEDS_CSUM, gsoType, start + len(tcp), mss, start, 16)
    return header.pack() + eth + ip + tcp + payload


def withHeader(vframe: bytes, **fields) -> bytes:
    """
    C{vframe} with some header fields replaced (a lying header).
    """
    return VnetHeader.unpack(vframe)._replace(**fields).pack() + vframe[VNET_HDRLEN:]


def tcpPayloads(frames: Sequence[bytes], test) -> bytes:
    """
    The TCP payloads of the plain frames C{frames}, joined, after checking
    with C{test} that every IPv4 header checksum and TCP checksum is
    complete and right and that no frame is above 1518 bytes.
    """
    data = b""
    for frame in frames:
        test.assertLessEqual(len(frame), 1518)
        l3 = 18 if frame[12:14] == b"\x81\x00" else 14
        ethertype = frame[l3 - 2:l3]
        if ethertype == b"\x08\x00":
            ihl = (frame[l3] & 0x0F) * 4
            total = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
            test.assertTrue(verify(frame[l3:l3 + ihl]), "IPv4 header checksum")
            src, dst, l4 = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20], l3 + ihl
            end = l3 + total
            initial = pseudo4(src, dst, 6, end - l4)
        else:
            test.assertEqual(ethertype, b"\x86\xdd")
            end = l3 + 40 + int.from_bytes(frame[l3 + 4:l3 + 6], "big")
            src, dst, l4 = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40], l3 + 40
            initial = pseudo6(src, dst, 6, end - l4)
        test.assertTrue(verify(frame[l4:end], initial), "TCP checksum")
        data += frame[l4 + (frame[l4 + 12] >> 4) * 4:end]
    return data
