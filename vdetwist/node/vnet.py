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

from typing import TYPE_CHECKING, Callable, Optional

from vdetwist.wire.gso import BadVnetFrame, checkSuperFrame, segment
from vdetwist.wire.vnethdr import NEEDS_CSUM, PLAIN, VNET_HDRLEN, VnetHeader, neededOffloads

if TYPE_CHECKING:
    from vdetwist.node.node import Port


def vnetIngress(inp: Callable, port: Port, frame: bytes) -> None:
    """
    C{port} received the vnet frame C{frame}: run the engine's input
    C{inp} on its Ethernet frame with a L{VnetDelivery}.
    """
    if frame.startswith(PLAIN):
        inp(port, frame[VNET_HDRLEN:])
        return
    if lies(frame):
        port.inDropped += 1
        return
    port.vnetIn += 1
    out = VnetDelivery(frame)
    inp(port, out.eth, out.deliver, out.flood)


def lies(frame: bytes) -> bool:
    """
    Whether the header of the vnet frame C{frame} (not plain) lies about the
    Ethernet frame after it.
    """
    header = VnetHeader.unpack(frame)
    if header.gsoType:
        try:
            checkSuperFrame(frame)
        except BadVnetFrame:
            return True
        return False
    return bool(header.flags & NEEDS_CSUM
                and header.csumStart + header.csumOffset + 2 > len(frame) - VNET_HDRLEN)


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

    @ivar eth: the Ethernet frame, what the engine is given.
    """

    __slots__ = ("header", "vframe", "eth", "needed", "_variants")

    def __init__(self, vframe: bytes) -> None:
        self.vframe = vframe
        self.header = vframe[:VNET_HDRLEN]
        self.eth = vframe[VNET_HDRLEN:]
        self.needed = neededOffloads(self.header)
        # The Ethernet frames the engine sent (the one it was given, the
        # same tagged or untagged), each with its vnet frame and, once a
        # port needed them, its segments.
        self._variants: list[list] = []

    def deliver(self, port: Port, frame: bytes, n: int) -> None:
        self._send(port, frame)

    def flood(self, ports, ingress: Optional[Port], frame: bytes, n: int) -> None:
        for p in ports:
            if p is not ingress:
                self._send(p, frame)

    def _variant(self, frame: bytes) -> list:
        for variant in self._variants:
            if variant[0] is frame:
                return variant
        if frame is self.eth:
            vframe = self.vframe
        else:
            vframe = retagged(self.header, len(frame) - len(self.eth)) + frame
        variant = [frame, vframe, None]
        self._variants.append(variant)
        return variant

    def _send(self, port: Port, frame: bytes) -> None:
        variant = self._variant(frame)
        needed = self.needed
        if port.offloads & needed == needed:
            port.outFrames += 1
            port.outBytes += len(frame)
            port.vnetOut += 1
            port.vnetOutput(variant[1])
            return
        segments = variant[2]
        if segments is None:
            try:
                segments = variant[2] = segment(variant[1])
            except BadVnetFrame:
                # The ingress checked the header; what segmentation still
                # refuses goes nowhere.
                segments = variant[2] = []
        output = port.output
        for one in segments:
            port.outFrames += 1
            port.outBytes += len(one)
            output(one)
