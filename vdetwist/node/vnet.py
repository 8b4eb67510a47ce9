"""
Vnet frames through a node.

A port whose plug reads vnet frames (L{vdetwist.interfaces.IVnetPlug}: a
tap with offloads, one of our own clients over the vde2 protocol) hands the
node a virtio-net header and an Ethernet frame, which may be a 64 KiB
super-frame.  The engine sees only the Ethernet frame: it learns, filters
VLANs and adds or strips tags as for any frame (see
L{vdetwist.node.engines}), and sends through a L{VnetDelivery} instead of
the plain C{deliver} and C{flood}.  Towards each port that delivery:

  - sends the vnet frame as it is when the port's plugs accept what its
    header needs (L{Port.offloads} covers
    L{vdetwist.wire.vnethdr.neededOffloads}), with its checksum start and
    header length moved by 4 when a tag was added or stripped;
  - else sends its segments (L{vdetwist.wire.gso.segment}: plain frames,
    checksums complete), made once per frame and per tagging, whatever
    the number of ports a flood reaches.

A vnet frame whose header is plain (all zero) takes the plain path at
once, and one whose header lies (L{vdetwist.wire.gso.checkSuperFrame} for a
super-frame; a checksum field past the end for the others) is dropped and
counted in the ingress port's C{inDropped}: it never reaches another port.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, Optional

from vdetwist.wire.gso import BadVnetFrame, checkSuperFrame, segment
from vdetwist.wire.vnethdr import (
    NEEDS_CSUM, PLAIN, TUN_F_CSUM, VNET_HDRLEN, VnetHeader, neededOffloads,
)

if TYPE_CHECKING:
    from vdetwist.node.node import Port


def vnetIngress(inp: Callable, port: Port, frame: bytes) -> None:
    """
    C{port} received the vnet frame C{frame}: run the engine's input
    C{inp} on its Ethernet frame with a L{VnetDelivery}.

    A frame without GSO (a checksum-only one: UDP, ACKs from an offloading
    tap) is checked here with one unpack, no header object: it is the
    common frame, at most one MTU.  A super-frame's engine sees only its
    first L{ENGINE_HEAD} bytes (see L{VnetDelivery}), not a 64 KiB copy.
    """
    if frame.startswith(PLAIN):
        inp(port, frame[VNET_HDRLEN:])
        return
    if frame[1]:
        try:
            checkSuperFrame(frame)
        except BadVnetFrame:
            port.inDropped += 1
            return
        needed, head = neededOffloads(frame), ENGINE_HEAD
    elif frame[0] & NEEDS_CSUM:
        start, offset = _CSUM_FIELDS.unpack_from(frame, 6)
        if start + offset + 2 > len(frame) - VNET_HDRLEN:
            port.inDropped += 1
            return
        needed, head = TUN_F_CSUM, 0
    else:
        needed = head = 0
    port.vnetIn += 1
    out = VnetDelivery(frame, needed, head)
    if head:
        # The engine counts the bytes it is given.
        port.inBytes += len(frame) - VNET_HDRLEN - len(out.eth)
    inp(port, out.eth, out.deliver, out.flood)


#: C{csum_start} and C{csum_offset}, at offset 6 of the header.
_CSUM_FIELDS = struct.Struct("<HH")

#: How much of a super-frame's Ethernet frame its engine is given: enough
#: for what engines read and rewrite (addresses, two VLAN tags).
ENGINE_HEAD = 64


def retagged(header: bytes, shift: int) -> bytes:
    """
    C{header} for its frame with C{shift} bytes (a tag: +4 or -4) inserted
    or removed before the L3 header: the checksum start and the header
    length move with it.
    """
    h = VnetHeader.unpack(header)
    return h._replace(
        csumStart=h.csumStart + shift if h.flags & NEEDS_CSUM else h.csumStart,
        hdrLen=h.hdrLen + shift if h.hdrLen else 0,
    ).pack()


class VnetDelivery:
    """
    The C{deliver} and C{flood} an engine sends one vnet frame with.

    @ivar eth: what the engine is given: the Ethernet frame, or with
        C{head} its first C{head} bytes (engines read addresses and tags,
        and add or strip a tag before byte 16, so what they send is that
        head, changed or not, followed by the rest of the frame).
    """

    __slots__ = ("vframe", "eth", "needed", "_segments", "_variants")

    def __init__(self, vframe: bytes, needed: int, head: int = 0) -> None:
        self.vframe = vframe
        self.eth = vframe[VNET_HDRLEN:VNET_HDRLEN + head] if head else vframe[VNET_HDRLEN:]
        #: What a port must take to be sent C{vframe} as it is
        #: (L{neededOffloads}).
        self.needed = needed
        # The segments of the frame as given, once a port needed them; the
        # other Ethernet frames the engine sent (the same tagged or
        # untagged), each with its vnet frame and segments.
        self._segments: Optional[list[bytes]] = None
        self._variants: Optional[list[list]] = None

    def deliver(self, port: Port, frame: bytes, n: int) -> None:
        self._send(port, frame)

    def flood(self, ports, ingress: Optional[Port], frame: bytes, n: int) -> None:
        for p in ports:
            if p is not ingress:
                self._send(p, frame)

    def _send(self, port: Port, frame: bytes) -> None:
        needed = self.needed
        if frame is self.eth:
            if port.offloads & needed == needed:
                port.outFrames += 1
                port.outBytes += len(self.vframe) - VNET_HDRLEN
                port.vnetOut += 1
                port.vnetOutput(self.vframe)
                return
            segments = self._segments
            if segments is None:
                segments = self._segments = _segmented(self.vframe)
        else:
            variant = self._variant(frame)
            if port.offloads & needed == needed:
                port.outFrames += 1
                port.outBytes += len(variant[1]) - VNET_HDRLEN
                port.vnetOut += 1
                port.vnetOutput(variant[1])
                return
            segments = variant[2]
            if segments is None:
                segments = variant[2] = _segmented(variant[1])
        output = port.output
        for one in segments:
            port.outFrames += 1
            port.outBytes += len(one)
            output(one)

    def _variant(self, frame: bytes) -> list:
        """
        [C{frame}, its vnet frame, its segments or C{None}] for an Ethernet
        frame the engine made from L{eth} (a tag added or stripped).
        """
        variants = self._variants
        if variants is None:
            variants = self._variants = []
        for variant in variants:
            if variant[0] is frame:
                return variant
        vframe = b"".join((retagged(self.vframe[:VNET_HDRLEN], len(frame) - len(self.eth)),
                           frame, memoryview(self.vframe)[VNET_HDRLEN + len(self.eth):]))
        variant = [frame, vframe, None]
        variants.append(variant)
        return variant


def _segmented(vframe: bytes) -> list[bytes]:
    """
    L{segment}, or nothing for a frame it refuses (the ingress checked the
    header; what segmentation still refuses goes nowhere).
    """
    try:
        return segment(vframe)
    except BadVnetFrame:
        return []
