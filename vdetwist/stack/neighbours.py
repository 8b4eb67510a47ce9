"""
A host's neighbour tables (ARP for IPv4, neighbour discovery for IPv6) and
its IP output: the next hop of a destination (on-link, or the gateway),
its MAC (resolved, queued while resolving), fragments past the MTU.

Entries expire as a kernel's do (RFC 4861 7.3, Linux's ARP): an entry is
used as it is for L{REACHABLE} seconds after it was confirmed, then (stale)
still used while a unicast probe asks again, and forgotten if
L{PROBE_GRACE} seconds pass with no answer; the next packet resolves it
anew by broadcast.  Tables and queues are bounded.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Optional

from twisted.logger import Logger

from vdetwist.slirp import packets as P
from vdetwist.slirp.dhcp import ND_NA, ND_NS, OPT_SOURCE_LL, OPT_TARGET_LL
from vdetwist.wire.checksum import BytesLike

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.stack.host import HostStack

#: Seconds an entry is trusted after confirmation, then the grace for a
#: probe's answer before it is forgotten.
REACHABLE = 30.0
PROBE_GRACE = 5.0
PROBE_INTERVAL = 1.0
MAX_NEIGHBOURS = 1024
MAX_QUEUED_PER_ADDRESS = 32
MAX_PENDING_ADDRESSES = 64
RESOLVE_TRIES = 3
RESOLVE_INTERVAL = 1.0
#: RFC 5227's DEFEND_INTERVAL: an address conflict is answered (and logged)
#: at most this often.
DEFEND_INTERVAL = 10.0

log = Logger()


class Entry:
    __slots__ = ("mac", "confirmed", "probed")

    def __init__(self, mac: bytes, confirmed: float) -> None:
        self.mac = mac
        self.confirmed = confirmed
        self.probed = 0.0


class _Pending:
    __slots__ = ("frames", "tries", "timer")

    def __init__(self, timer) -> None:
        self.frames: deque[bytes] = deque()
        self.tries = 0
        self.timer = timer


class Neighbours:
    """
    The link layer of a L{vdetwist.stack.host.HostStack}: what the TCP
    engine calls C{link} (C{send4}, C{send6}), the neighbour tables, ARP
    and neighbour solicitation.
    """

    def __init__(self, stack: "HostStack") -> None:
        self.stack = stack
        self.mac = stack.mac
        self.emit = stack.emit
        self.table: OrderedDict[bytes, Entry] = OrderedDict()
        self.pending: dict[bytes, _Pending] = {}
        self.fragmentIdent = 0
        self.routerMac6 = stack.mac  # the LinkSender protocol's; we are no router
        self.defended = float("-inf")

    # -- the tables ---------------------------------------------------------

    def learn(self, address: bytes, mac: bytes, confirmed: bool = True) -> None:
        """
        C{address} is at C{mac} (an answer, or a peer's request naming
        itself); send what waited for it.
        """
        if mac[0] & 1 or mac == P.ZERO_MAC:
            return
        table = self.table
        entry = table.get(address)
        now = self.stack.now()
        if entry is None:
            # unconfirmed (a peer's solicitation naming itself): stale at
            # once, so its first use probes it
            table[address] = Entry(mac, now if confirmed else now - REACHABLE)
            if len(table) > MAX_NEIGHBOURS:
                table.popitem(last=False)
        else:
            entry.mac = mac
            if confirmed:
                entry.confirmed = now
            table.move_to_end(address)
        waiting = self.pending.pop(address, None)
        if waiting is not None:
            waiting.timer.cancel()
            for frame in waiting.frames:
                self.emit(mac + frame[6:])

    def lookup(self, address: bytes) -> Optional[bytes]:
        """
        The MAC to send to C{address} now, or C{None} (resolve it); a stale
        entry is probed.
        """
        entry = self.table.get(address)
        if entry is None:
            return None
        now = self.stack.now()
        age = now - entry.confirmed
        if age < REACHABLE:
            return entry.mac
        if age > REACHABLE + PROBE_GRACE:
            del self.table[address]
            return None
        if now - entry.probed >= PROBE_INTERVAL:
            entry.probed = now
            self._solicit(address, entry.mac)
        return entry.mac

    def entries(self) -> dict[bytes, tuple[bytes, float]]:
        """
        Each address's MAC and the seconds since it was confirmed.
        """
        now = self.stack.now()
        return {a: (e.mac, now - e.confirmed) for a, e in self.table.items()}

    def forget(self, address: bytes) -> None:
        self.table.pop(address, None)

    # -- output ---------------------------------------------------------------

    def sendTcp4(self, frames: P.Tcp4Frames, seq: int, ack: int, flags: int, window: int,
                 payload: BytesLike) -> bool:
        """
        C{False}: the stack routes each packet (L{send4}), so it sends no
        frame built ahead for one neighbour.
        """
        return False

    def send4(self, destination: bytes, packet: bytes) -> None:
        """
        An IPv4 packet to C{destination}, through the gateway when it is not
        on-link, in fragments past the MTU.
        """
        stack = self.stack
        if len(packet) > stack.mtu:
            from vdetwist.slirp.ipv4 import fragment

            for piece in fragment(packet, stack.mtu):
                self.send4(destination, piece)
            return
        if destination == P.IP4_BROADCAST or destination == stack.broadcast4:
            self.emit(P.ETH.pack(P.BROADCAST_MAC, self.mac, P.ETH_IP) + packet)
            return
        if destination == stack.address4:
            stack.loop(P.ETH.pack(self.mac, self.mac, P.ETH_IP) + packet)
            return
        hop = stack.nextHop4(destination)
        if hop is None:
            stack.stats["ip4_no_route"] += 1
            return
        self._sendTo(hop, P.ETH.pack(P.BROADCAST_MAC, self.mac, P.ETH_IP) + packet)

    def send6(self, destination: bytes, packet: bytes) -> None:
        stack = self.stack
        if len(packet) > stack.mtu:
            from vdetwist.slirp.ipv6 import fragment6

            self.fragmentIdent = (self.fragmentIdent + 1) & 0xFFFFFFFF
            for piece in fragment6(packet, stack.mtu, self.fragmentIdent):
                self.send6(destination, piece)
            return
        if destination[0] == 0xFF:
            self.emit(P.ETH.pack(P.multicastMac6(destination), self.mac, P.ETH_IPV6) + packet)
            return
        if destination in stack.addresses6:
            stack.loop(P.ETH.pack(self.mac, self.mac, P.ETH_IPV6) + packet)
            return
        hop = stack.nextHop6(destination)
        if hop is None:
            stack.stats["ip6_no_route"] += 1
            return
        self._sendTo(hop, P.ETH.pack(P.BROADCAST_MAC, self.mac, P.ETH_IPV6) + packet)

    def sourceMac6(self, source: bytes) -> bytes:
        return self.mac

    def _sendTo(self, hop: bytes, frame: bytes) -> None:
        mac = self.lookup(hop)
        if mac is not None:
            self.emit(mac + frame[6:])
            return
        waiting = self.pending.get(hop)
        stats = self.stack.stats
        if waiting is None:
            if len(self.pending) >= MAX_PENDING_ADDRESSES:
                stats["dropped_unresolved"] += 1
                return
            timer = self.stack.timer(lambda: self._retry(hop))
            waiting = self.pending[hop] = _Pending(timer)
            waiting.tries = 1
            self._solicit(hop)
            timer.reset(self.stack.now() + RESOLVE_INTERVAL)
        if len(waiting.frames) >= MAX_QUEUED_PER_ADDRESS:
            waiting.frames.popleft()
            stats["dropped_unresolved"] += 1
        waiting.frames.append(frame)

    def _retry(self, hop: bytes) -> None:
        waiting = self.pending.get(hop)
        if waiting is None:
            return
        if waiting.tries >= RESOLVE_TRIES:
            del self.pending[hop]
            self.stack.stats["dropped_unresolved"] += len(waiting.frames)
            self.stack.unresolved(hop)
            return
        waiting.tries += 1
        self._solicit(hop)
        waiting.timer.reset(self.stack.now() + RESOLVE_INTERVAL)

    def _solicit(self, address: bytes, unicast: Optional[bytes] = None) -> None:
        """
        Ask who has C{address}: by broadcast (multicast), or C{unicast} to
        the MAC a stale entry has.
        """
        stack = self.stack
        if len(address) == 4:
            own = stack.address4 or P.IP4_ANY
            request = P.ARP.pack(1, P.ETH_IP, 6, 4, 1, self.mac, own, P.ZERO_MAC, address)
            self.emit(P.ETH.pack(unicast or P.BROADCAST_MAC, self.mac, P.ETH_ARP) + request)
            return
        source = stack.source6(address)
        destination = address if unicast else P.solicitedNode(address)
        body = b"\0\0\0\0" + address + bytes((OPT_SOURCE_LL, 1)) + self.mac
        message = P.icmp6(source, destination, ND_NS, 0, body)
        packet = P.ipv6(source, destination, P.PROTO_ICMPV6, message, 255)
        self.emit(P.ETH.pack(unicast or P.multicastMac6(destination), self.mac, P.ETH_IPV6)
                  + packet)

    def solicitDuplicate(self, address: bytes) -> None:
        """
        The duplicate address detection solicitation for tentative
        C{address} (RFC 4862 5.4.2: from the unspecified address, without
        our link-layer address).
        """
        destination = P.solicitedNode(address)
        message = P.icmp6(P.IP6_ANY, destination, ND_NS, 0, b"\0\0\0\0" + address)
        packet = P.ipv6(P.IP6_ANY, destination, P.PROTO_ICMPV6, message, 255)
        self.emit(P.ETH.pack(P.multicastMac6(destination), self.mac, P.ETH_IPV6) + packet)

    def probe4(self) -> None:
        """
        An ARP probe for our IPv4 address (RFC 5227: from 0.0.0.0), then an
        announcement: a node that has it answers the probe, and
        L{arpInput} reports the conflict.
        """
        own = self.stack.address4
        assert own is not None
        probe = P.ARP.pack(1, P.ETH_IP, 6, 4, 1, self.mac, P.IP4_ANY, P.ZERO_MAC, own)
        self.emit(P.ETH.pack(P.BROADCAST_MAC, self.mac, P.ETH_ARP) + probe)
        self._solicit(own)

    def _conflict4(self, own: bytes, mac: bytes) -> None:
        """
        Another node (C{mac}) uses our IPv4 address: say so and defend it
        with an announcement, at most every L{DEFEND_INTERVAL} (RFC 5227
        2.4(c): a static address is kept).
        """
        stack = self.stack
        stack.stats["arp_conflicts"] += 1
        now = stack.now()
        if now - self.defended < DEFEND_INTERVAL:
            return
        self.defended = now
        log.warn("vdestack: {address} is also used by {mac} on the network (address conflict):"
                 " defending it", address=".".join(map(str, own)), mac=mac.hex(":"))
        self._solicit(own)

    # -- input ----------------------------------------------------------------

    def arpInput(self, frame: bytes) -> None:
        """
        An ARP frame: answer requests for our address, learn the asker
        (RFC 826: a request for us updates or adds its sender) and answers.
        """
        if len(frame) < P.ETH_HLEN + P.ARP.size:
            self.stack.stats["arp_bad"] += 1
            return
        htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = P.ARP.unpack_from(frame, P.ETH_HLEN)
        if htype != 1 or ptype != P.ETH_IP or hlen != 6 or plen != 4:
            self.stack.stats["arp_bad"] += 1
            return
        own = self.stack.address4
        if own is None:
            return
        if spa == own:
            if sha != self.mac:
                self._conflict4(own, sha)
            return
        forUs = tpa == own
        if spa != P.IP4_ANY and (forUs or spa in self.table or spa in self.pending):
            self.learn(spa, sha, confirmed=op == 2 or forUs)
        if op == 1 and forUs:
            reply = P.ARP.pack(1, P.ETH_IP, 6, 4, 2, self.mac, own, sha, spa)
            self.emit(P.ETH.pack(sha, self.mac, P.ETH_ARP) + reply)

    def ndInput(self, packet: bytes, frameSource: bytes) -> None:
        """
        A neighbour solicitation or advertisement (hop limit 255, code 0
        and checksum already checked).
        """
        from vdetwist.slirp.ipv6 import ndOptions

        kind = packet[40]
        if len(packet) < 64:
            return
        target = packet[48:64]
        options = ndOptions(packet[64:])
        if options is None or target[0] == 0xFF:
            return
        source = packet[8:24]
        stack = self.stack
        if target in stack.tentative6:
            # RFC 4862 5.4.3, 5.4.4: an advertisement for it, or another
            # node's detection for it (never our own solicitation, echoed)
            if (kind == ND_NA or source == P.IP6_ANY) and frameSource != self.mac:
                stack.duplicate6(target)
            return
        if kind == ND_NS:
            if target not in stack.addresses6:
                return
            mac = options.get(OPT_SOURCE_LL)
            if source == P.IP6_ANY:
                destination = P.IP6_ALL_NODES  # a duplicate address detection
            else:
                destination = source
                if mac is not None and len(mac) >= 6:
                    self.learn(source, mac[:6], confirmed=False)
            flags = 0x20000000 | (0x40000000 if source != P.IP6_ANY else 0)
            body = struct.pack("!I", flags) + target + bytes((OPT_TARGET_LL, 1)) + self.mac
            message = P.icmp6(target, destination, ND_NA, 0, body)
            reply = P.ipv6(target, destination, P.PROTO_ICMPV6, message, 255)
            if destination[0] == 0xFF:
                self.emit(P.ETH.pack(P.multicastMac6(destination), self.mac, P.ETH_IPV6) + reply)
            else:
                frameDest = mac[:6] if mac is not None and len(mac) >= 6 else frameSource
                self.emit(P.ETH.pack(frameDest, self.mac, P.ETH_IPV6) + reply)
        elif kind == ND_NA:
            mac = options.get(OPT_TARGET_LL)
            if mac is None or len(mac) < 6:
                mac = frameSource
            if target in self.table or target in self.pending:
                self.learn(target, mac[:6], confirmed=bool(packet[44] & 0x40))

    def clear(self) -> None:
        for waiting in self.pending.values():
            waiting.timer.cancel()
        self.pending.clear()
        self.table.clear()
