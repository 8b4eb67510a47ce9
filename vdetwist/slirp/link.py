"""
The link layer: which MACs belong to which guest addresses (ARP for IPv4,
neighbour discovery for IPv6), the frames waiting for an address to
resolve, and ARP answers for the emulated hosts.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from vdetwist.slirp import packets as P
from vdetwist.slirp.dhcp import ND_NS, OPT_SOURCE_LL
from vdetwist.wire.checksum import BytesLike
from vdetwist.wire.vnethdr import GSO_NONE, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM, VnetHeader

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext
    from vdetwist.slirp.timers import Timer

#: Neighbour table entries kept per family (oldest forgotten first).
MAX_NEIGHBOURS = 1024
#: Frames waiting for one address to resolve, and addresses waited for.
MAX_QUEUED_PER_ADDRESS = 32
MAX_PENDING_ADDRESSES = 64
#: Resolution requests sent before the waiting frames are dropped.
RESOLVE_TRIES = 3
RESOLVE_INTERVAL = 1.0
#: ARP replies are padded to this length, as libslirp pads them.
ARP_FRAME_LENGTH = 64
#: Where the checksum is in a TCP header (a vnet header's C{csum_offset}).
TCP_CSUM_OFFSET = 16


class _Pending:
    __slots__ = ("frames", "tries", "timer")

    def __init__(self, timer: Timer) -> None:
        self.frames: deque[bytes] = deque()
        self.tries = 0
        self.timer = timer


class Link:
    """
    Neighbour tables and the resolution queue for both families.
    """

    def __init__(self, context: "LayerContext") -> None:
        self.context = context
        self.config = context.config
        self.policy = policy = context.policy
        #: bound once: every frame to the guests goes through it
        self.emit = context.emit
        self.broadcast4 = policy.broadcast4
        self.local6 = policy.local6
        self.table4: OrderedDict[bytes, bytes] = OrderedDict()
        self.table6: OrderedDict[bytes, bytes] = OrderedDict()
        self.pending: dict[bytes, _Pending] = {}
        self.gatewayMac = P.mac4(policy.host4)
        self.routerMac6 = P.mac6(P.IP6_ROUTER_LL)
        self.mtu = self.config.mtu
        self.fragmentIdent = 0
        #: the unicast MACs of the emulated hosts, for the destination filter
        self.ownMacs = frozenset(
            [P.mac4(a) for a in policy.local4] + [P.mac6(a) for a in policy.local6])

    # -- tables ---------------------------------------------------------

    def learn(self, address: bytes, mac: bytes) -> None:
        """
        C{address} (4 or 16 bytes) is at C{mac}; send what waited for it.
        """
        if mac[0] & 1 or mac == P.ZERO_MAC:
            return
        table = self.table4 if len(address) == 4 else self.table6
        if table.get(address) != mac:
            table[address] = mac
            table.move_to_end(address)
            if len(table) > MAX_NEIGHBOURS:
                table.popitem(last=False)
        waiting = self.pending.pop(address, None)
        if waiting is not None:
            waiting.timer.cancel()
            for frame in waiting.frames:
                self.emit(mac + frame[6:])

    def lookup(self, address: bytes):
        table = self.table4 if len(address) == 4 else self.table6
        return table.get(address)

    # -- sending --------------------------------------------------------

    def sourceMac4(self, source: bytes) -> bytes:
        # libslirp sends every IPv4 frame from the gateway's MAC (only ARP
        # replies carry the MAC of the address asked for)
        return self.gatewayMac

    def sourceMac6(self, source: bytes) -> bytes:
        if source in self.local6:
            return P.mac6(source)
        return self.routerMac6

    def send4(self, destination: bytes, packet: bytes) -> None:
        """
        Send an IPv4 packet to the guest at C{destination} (broadcast
        addresses go to the broadcast MAC), in fragments if it is larger
        than the MTU.
        """
        if len(packet) > self.mtu:
            from vdetwist.slirp.ipv4 import fragment

            for piece in fragment(packet, self.mtu):
                self.send4(destination, piece)
            return
        source = self.sourceMac4(packet[12:16])
        if destination == P.IP4_BROADCAST or destination == self.broadcast4:
            self.emit(P.ETH.pack(P.BROADCAST_MAC, source, P.ETH_IP) + packet)
            return
        mac = self.table4.get(destination)
        frame = P.ETH.pack(mac or P.BROADCAST_MAC, source, P.ETH_IP) + packet
        if mac is not None:
            self.emit(frame)
        else:
            self._queue(destination, frame)

    def send6(self, destination: bytes, packet: bytes) -> None:
        if len(packet) > self.mtu:
            from vdetwist.slirp.ipv6 import fragment6

            self.fragmentIdent = (self.fragmentIdent + 1) & 0xFFFFFFFF
            for piece in fragment6(packet, self.mtu, self.fragmentIdent):
                self.send6(destination, piece)
            return
        source = self.sourceMac6(packet[8:24])
        if destination[0] == 0xFF:
            mac = P.multicastMac6(destination)
            self.emit(P.ETH.pack(mac, source, P.ETH_IPV6) + packet)
            return
        known = self.table6.get(destination)
        frame = P.ETH.pack(known or P.BROADCAST_MAC, source, P.ETH_IPV6) + packet
        if known is not None:
            self.emit(frame)
        else:
            self._queue(destination, frame)

    def sendTcp4(self, frames: P.Tcp4Frames, seq: int, ack: int, flags: int, window: int,
                 payload: BytesLike) -> bool:
        """
        Send a TCP segment without options to a guest at a known MAC, built
        by C{frames} in one piece; C{False} (nothing sent) otherwise, for
        the ordinary way.
        """
        mac = self.table4.get(frames.dst)
        if mac is None or len(payload) > self.mtu - 40:
            return False
        self.emit(frames.frame(mac, self.gatewayMac, seq, ack, flags, window, payload))
        return True

    def sendOffloaded(self, destination: bytes, headers: bytes, payload: BytesLike,
                      segmentSize: int) -> bool:
        """
        Send a guest at a known MAC a TCP segment of any size as one vnet
        frame (L{vdetwist.wire.vnethdr}): C{headers} (IP and a 20-byte TCP
        header whose checksum holds the pseudo-header's sum, see
        L{P.tcpHeaderPartial}), then C{payload}, marked C{NEEDS_CSUM} and,
        when it is longer than C{segmentSize}, for segmentation in pieces of
        C{segmentSize} bytes (TSO).  The receiver completes the checksum or
        segments: no byte of the payload is read here.

        @return: C{False} (nothing sent) if the guest's MAC is not known:
            the caller sends the segment the ordinary way (which waits for
            the address to resolve).
        """
        if len(destination) == 4:
            mac = self.table4.get(destination)
            if mac is None:
                return False
            ethernet = P.ETH.pack(mac, self.gatewayMac, P.ETH_IP)
            start, kind = P.ETH_HLEN + 20, GSO_TCPV4
        else:
            mac = self.table6.get(destination)
            if mac is None:
                return False
            ethernet = P.ETH.pack(mac, self.sourceMac6(headers[8:24]), P.ETH_IPV6)
            start, kind = P.ETH_HLEN + 40, GSO_TCPV6
        if len(payload) <= segmentSize:
            kind = segmentSize = GSO_NONE
        else:
            self.context.stats["tcp_super_out"] += 1
        header = VnetHeader(NEEDS_CSUM, kind, P.ETH_HLEN + len(headers), segmentSize, start,
                            TCP_CSUM_OFFSET).pack()
        self.context.emitVnet(b"".join((header, ethernet, headers, payload)))
        return True

    def _queue(self, destination: bytes, frame: bytes) -> None:
        waiting = self.pending.get(destination)
        if waiting is None:
            if len(self.pending) >= MAX_PENDING_ADDRESSES:
                self.context.stats["dropped_unresolved"] += 1
                return
            timer = self.context.timer(lambda: self._retry(destination))
            waiting = self.pending[destination] = _Pending(timer)
            self._solicit(destination)
            waiting.tries = 1
            waiting.timer.reset(self.context.now() + RESOLVE_INTERVAL)
        if len(waiting.frames) >= MAX_QUEUED_PER_ADDRESS:
            waiting.frames.popleft()
            self.context.stats["dropped_unresolved"] += 1
        waiting.frames.append(frame)

    def _retry(self, destination: bytes) -> None:
        waiting = self.pending.get(destination)
        if waiting is None:
            return
        if waiting.tries >= RESOLVE_TRIES:
            del self.pending[destination]
            self.context.stats["dropped_unresolved"] += len(waiting.frames)
            return
        waiting.tries += 1
        self._solicit(destination)
        waiting.timer.reset(self.context.now() + RESOLVE_INTERVAL)

    def _solicit(self, destination: bytes) -> None:
        if len(destination) == 4:
            request = P.ARP.pack(1, P.ETH_IP, 6, 4, 1, self.gatewayMac,
                                 self.policy.host4, P.ZERO_MAC, destination)
            # unpadded, as libslirp sends its requests (its replies are padded)
            self.emit(P.ETH.pack(P.BROADCAST_MAC, self.gatewayMac, P.ETH_ARP) + request)
        else:
            source = P.IP6_ROUTER_LL if destination[:2] == b"\xfe\x80" else self.policy.host6
            multicast = P.solicitedNode(destination)
            mac = self.sourceMac6(source)
            body = b"\0\0\0\0" + destination + bytes((OPT_SOURCE_LL, 1)) + mac
            message = P.icmp6(source, multicast, ND_NS, 0, body)
            packet = P.ipv6(source, multicast, P.PROTO_ICMPV6, message, 255)
            self.emit(P.ETH.pack(P.multicastMac6(multicast), mac, P.ETH_IPV6) + packet)

    def clear(self) -> None:
        for waiting in self.pending.values():
            waiting.timer.cancel()
        self.pending.clear()

    # -- ARP input ------------------------------------------------------

    def arpInput(self, frame: bytes) -> None:
        if len(frame) < P.ETH_HLEN + P.ARP.size:
            return
        (htype, ptype, hlen, plen, op, sha, spa, tha, tpa) = P.ARP.unpack_from(frame, P.ETH_HLEN)
        if htype != 1 or ptype != P.ETH_IP or hlen != 6 or plen != 4:
            return
        policy = self.policy
        if spa != P.IP4_ANY and spa in policy.network4 and spa not in policy.local4:
            self.learn(spa, sha)
        if op == 1 and tpa in policy.local4 and tpa != spa:
            mac = P.mac4(tpa)
            reply = P.ARP.pack(1, P.ETH_IP, 6, 4, 2, mac, tpa, sha, spa)
            self.emit(P.ETH.pack(frame[6:12], mac, P.ETH_ARP)
                        + reply.ljust(ARP_FRAME_LENGTH - P.ETH_HLEN, b"\0"))
