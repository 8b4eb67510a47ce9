"""
Software segmentation and checksum offload: turn a vnet frame (virtio-net
header + Ethernet frame, L{vdetwist.wire.vnethdr}) into the plain frames the
Linux kernel would put on a wire that offloads nothing.

This is what a super-frame becomes on its way to a port that cannot take it
(a C peer, a stream cable, pcap, a tap without offloads).  The rules follow
the kernel's C{skb_checksum_help}, C{tcp_gso_segment}, C{__udp_gso_segment},
C{udp4_ufo_fragment} and C{inet_gso_segment}/C{ipv6_gso_segment}:

 - every segment copies the L2/L3/L4 headers;
 - IPv4: total length and header checksum rewritten; the identification
   increments per segment (TCP, USO) or stays (UFO fragments, which get
   their fragment offset and more-fragments flag instead);
 - IPv6: payload length rewritten;
 - TCP: the sequence number advances by the payload before it; FIN and PSH
   stay only on the last segment, CWR only on the first;
 - UDP (USO): each segment is a datagram with its own length;
 - every L4 checksum is computed in full, once per segment.

Checksums use the big-integer residue of L{vdetwist.wire.checksum}: each
segment's payload is summed once, by C, from a slice of one memoryview.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vdetwist.wire.checksum import finish, residue
from vdetwist.wire.vnethdr import (
    GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, NEEDS_CSUM,
    VNET_HDRLEN,
)

__all__ = ["BadVnetFrame", "checkSuperFrame", "completeChecksum", "segment"]


class BadVnetFrame(ValueError):
    """
    A vnet frame whose virtio-net header does not fit the frame behind it;
    the message is one line naming the problem.
    """


_HEADER = struct.Struct("<BBHHHH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

_VLAN_TYPES = (0x8100, 0x88A8)
_IPV4 = 0x0800
_IPV6 = 0x86DD
#: IPv6 extension headers whose length is (byte 1 + 1) * 8: hop-by-hop,
#: routing, destination options.
_IPV6_EXTENSIONS = (0, 43, 60)
_TCP = 6
_UDP = 17

_FIN = 0x01
_PSH = 0x08
_CWR = 0x80
_MORE_FRAGMENTS = 0x2000

_GSO_NAMES = {GSO_TCPV4: "TCPv4", GSO_TCPV6: "TCPv6", GSO_UDP: "UFO", GSO_UDP_L4: "USO"}


def segment(vframe: bytes) -> list[bytes]:
    """
    The plain Ethernet frames (no vnet header, every checksum complete) that
    the vnet frame C{vframe} stands for: itself for a plain frame, itself
    with its checksum completed for a C{NEEDS_CSUM} one, its segments for a
    TSO/USO/UFO super-frame.

    @raise BadVnetFrame: the header lies about the frame.
    """
    if len(vframe) < VNET_HDRLEN or vframe[1]:
        return _segmentGso(vframe)
    if vframe[0] & NEEDS_CSUM:
        return [completeChecksum(vframe)]
    return [vframe[VNET_HDRLEN:]]


def completeChecksum(vframe: bytes) -> bytes:
    """
    The Ethernet frame of the C{NEEDS_CSUM} vnet frame C{vframe} (not a
    super-frame) with its partial checksum completed: the one's-complement
    sum from C{csum_start} to the end, stored at C{csum_start +
    csum_offset}.

    @raise BadVnetFrame: the checksum field lies past the frame.
    """
    _, _, _, _, start, offset = _HEADER.unpack_from(vframe)
    field = start + offset
    size = len(vframe) - VNET_HDRLEN
    if field + 2 > size:
        raise BadVnetFrame(
            f"checksum field at csum_start {start} + csum_offset {offset} is"
            f" past the end of the {size}-byte frame"
        )
    view = memoryview(vframe)[VNET_HDRLEN:]
    value = finish(residue(view[start:]))
    return b"".join((view[:field], _U16.pack(value), view[field + 2:]))


def checkSuperFrame(vframe: bytes) -> None:
    """
    Check what L{segment} would check of the vnet frame C{vframe} whose
    C{gso_type} is set, without segmenting it: before a super-frame is
    passed on as it is.

    @raise BadVnetFrame: the header lies about the frame.
    """
    _parseGso(vframe)


class _Layout(NamedTuple):
    """
    Where a super-frame's headers are, as L{_parseGso} found them.
    """

    frame: memoryview
    kind: int
    ipv4: bool
    l3: int
    l4: int
    payloadStart: int
    mss: int
    #: The residue of the pseudo-header without its length.
    base: int


def _segmentGso(vframe: bytes) -> list[bytes]:
    """
    L{segment} for a frame whose C{gso_type} is set.
    """
    layout = _parseGso(vframe)
    if layout.kind == GSO_UDP:
        return _fragmentUdp(layout)
    return _segmentL4(layout)


def _parseGso(vframe: bytes) -> _Layout:
    """
    Find the headers of a super-frame and check them against its vnet
    header.

    @raise BadVnetFrame: the header lies about the frame.
    """
    if len(vframe) < VNET_HDRLEN:
        raise BadVnetFrame(
            f"a {len(vframe)}-byte vnet frame is shorter than its"
            f" {VNET_HDRLEN}-byte virtio-net header"
        )
    flags, gsoType, _, mss, csumStart, csumOffset = _HEADER.unpack_from(vframe)
    kind = gsoType & ~GSO_ECN
    name = _GSO_NAMES.get(kind)
    if name is None:
        raise BadVnetFrame(f"unknown GSO type 0x{gsoType:02x}")
    if mss == 0:
        raise BadVnetFrame(f"{name} super-frame with gso_size 0")
    frame = memoryview(vframe)[VNET_HDRLEN:]
    size = len(frame)
    l3 = 12
    if size < l3 + 2:
        raise BadVnetFrame(f"{name} super-frame of {size} bytes has no Ethernet header")
    etherType = frame[l3] << 8 | frame[l3 + 1]
    while etherType in _VLAN_TYPES and size >= l3 + 6:
        l3 += 4
        etherType = frame[l3] << 8 | frame[l3 + 1]
    l3 += 2
    ipv4 = etherType == _IPV4
    if ipv4:
        if size < l3 + 20 or frame[l3] >> 4 != 4 or frame[l3] & 15 < 5:
            raise BadVnetFrame(f"{name} super-frame with a truncated or invalid IPv4 header")
        l4 = l3 + (frame[l3] & 15) * 4
        proto = frame[l3 + 9]
        addresses = frame[l3 + 12:l3 + 20]
    elif etherType == _IPV6:
        if size < l3 + 40 or frame[l3] >> 4 != 6:
            raise BadVnetFrame(f"{name} super-frame with a truncated or invalid IPv6 header")
        l4 = l3 + 40
        proto = frame[l3 + 6]
        while proto in _IPV6_EXTENSIONS and size >= l4 + 8:
            proto = frame[l4]
            l4 += (frame[l4 + 1] + 1) * 8
        addresses = frame[l3 + 8:l3 + 40]
    else:
        raise BadVnetFrame(f"{name} super-frame carries ethertype 0x{etherType:04x}, not IP")
    tcp = kind in (GSO_TCPV4, GSO_TCPV6)
    if tcp:
        wanted, family, wantedOffset = _TCP, kind == GSO_TCPV4, 16
    elif kind == GSO_UDP and not ipv4:
        raise BadVnetFrame("legacy UFO super-frame over IPv6: not segmented in software")
    else:
        wanted, family, wantedOffset = _UDP, ipv4, 6
    if proto != wanted or family != ipv4:
        raise BadVnetFrame(
            f"{name} super-frame carries IPv{4 if ipv4 else 6} protocol {proto}"
        )
    if flags & NEEDS_CSUM and (csumStart != l4 or csumOffset != wantedOffset):
        raise BadVnetFrame(
            f"{name} super-frame with csum_start {csumStart} and csum_offset"
            f" {csumOffset}, not {l4} and {wantedOffset}"
        )
    l4Header = (frame[l4 + 12] >> 4) * 4 if tcp and size >= l4 + 20 else 8
    if size < l4 + l4Header or l4Header < 20 and tcp:
        raise BadVnetFrame(f"{name} super-frame with a truncated {'TCP' if tcp else 'UDP'} header")
    base = int.from_bytes(addresses, "big") % 0xFFFF + proto
    return _Layout(frame, kind, ipv4, l3, l4, l4 + l4Header, mss, base)


def _segmentL4(layout: _Layout) -> list[bytes]:
    """
    Cut a TSO or USO super-frame into segments of C{mss} payload bytes.

    The header fields that change per segment are zeroed in a copy of the
    headers, whose sums are taken once: each segment then adds its own
    values to them, and sums only its payload.
    """
    frame, kind, ipv4, l3, l4, payloadStart, mss, base = layout
    tcp = kind != GSO_UDP_L4
    size = len(frame)
    header = bytearray(frame[:payloadStart])
    l4Header = payloadStart - l4
    check = l4 + (16 if tcp else 6)
    ident = _U16.unpack_from(header, l3 + 4)[0]
    if ipv4:
        header[l3 + 2:l3 + 6] = b"\0\0\0\0"
        header[l3 + 10:l3 + 12] = b"\0\0"
        ipSum = residue(header[l3:l4])
    if tcp:
        seq = _U32.unpack_from(header, l4 + 4)[0]
        tcpFlags = header[l4 + 13]
        header[l4 + 4:l4 + 8] = b"\0\0\0\0"
        header[l4 + 13] = 0
    else:
        header[l4 + 4:l4 + 6] = b"\0\0"
    header[check:check + 2] = b"\0\0"
    l4Sum = base + residue(header[l4:])
    starts = range(payloadStart, size, mss) or range(payloadStart, payloadStart + 1)
    last = starts[-1]
    segments = []
    for start in starts:
        end = min(start + mss, size)
        l4Length = l4Header + end - start
        if ipv4:
            length = l4 - l3 + l4Length
            _U16.pack_into(header, l3 + 2, length)
            _U16.pack_into(header, l3 + 4, ident)
            _U16.pack_into(header, l3 + 10, -(ipSum + length + ident) % 0xFFFF)
            ident = (ident + 1) & 0xFFFF
        else:
            _U16.pack_into(header, l3 + 4, l4 - l3 - 40 + l4Length)
        total = l4Sum + l4Length + residue(frame[start:end])
        if tcp:
            sequence = (seq + start - payloadStart) & 0xFFFFFFFF
            _U32.pack_into(header, l4 + 4, sequence)
            flags = tcpFlags
            if start != payloadStart:
                flags &= ~_CWR
            if start != last:
                flags &= ~(_FIN | _PSH)
            header[l4 + 13] = flags
            value = -(total + (sequence >> 16) + (sequence & 0xFFFF) + flags) % 0xFFFF
        else:
            _U16.pack_into(header, l4 + 4, l4Length)
            value = finish(total + l4Length)
        _U16.pack_into(header, check, value)
        segments.append(bytes(header) + frame[start:end])
    return segments


def _fragmentUdp(layout: _Layout) -> list[bytes]:
    """
    Legacy UFO: checksum the whole IPv4 UDP datagram, then cut it into IP
    fragments of C{mss} bytes of IP payload, all with the same
    identification.
    """
    frame, _, _, l3, l4, _, mss, base = layout
    size = len(frame)
    datagram = bytearray(frame[l4:])
    datagram[6:8] = b"\0\0"
    _U16.pack_into(datagram, 6, finish(base + len(datagram) + residue(datagram)))
    if len(datagram) <= mss:
        return [bytes(frame[:l4]) + datagram]
    if mss % 8:
        raise BadVnetFrame(f"UFO super-frame with gso_size {mss}, not a multiple of 8")
    header = bytearray(frame[:l4])
    segments = []
    for offset in range(0, size - l4, mss):
        piece = datagram[offset:offset + mss]
        more = _MORE_FRAGMENTS if offset + mss < len(datagram) else 0
        _U16.pack_into(header, l3 + 2, l4 - l3 + len(piece))
        _U16.pack_into(header, l3 + 6, offset >> 3 | more)
        header[l3 + 10:l3 + 12] = b"\0\0"
        _U16.pack_into(header, l3 + 10, -residue(header[l3:l4]) % 0xFFFF)
        segments.append(bytes(header) + piece)
    return segments
