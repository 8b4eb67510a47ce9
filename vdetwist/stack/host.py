"""
A host on an Ethernet, sans-IO: L{HostStack} takes frames in (C{input},
then C{flush} after a batch), sends its own through an C{output} callback,
and runs on an injected clock (C{advance} when L{HostStack.nextDeadline}
comes).  The Twisted side (L{vdetwist.stack.api}) joins it to a plug and to
applications.

One interface, one MAC; IPv4 static or by DHCP, IPv6 link-local, static
and by SLAAC; ARP and neighbour discovery answered and resolved
(L{vdetwist.stack.neighbours}); ICMP echo answered and sent (C{ping}), port
and protocol unreachable sent as a host does; TCP by slirp's engine
(L{vdetwist.stack.tcp}); UDP ports.  What is malformed (a bad checksum, a
truncated header) is counted in C{stats} and dropped.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, cast

from twisted.logger import Logger

from vdetwist.slirp import packets as P
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.core import MAX_OUTPUT_QUEUE, EngineCore
from vdetwist.slirp.dhcp import ND_NA, ND_NS, ND_RA
from vdetwist.slirp.ipv4 import (
    ICMP_ECHO, ICMP_ECHO_REPLY, ICMP_TIME_EXCEEDED, ICMP_UNREACH, UNREACH_PORT, UNREACH_PROTOCOL,
    unreachable,
)
from vdetwist.slirp.ipv4 import parse as parse4
from vdetwist.slirp.ipv6 import (
    ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST, ICMP6_TIME_EXCEEDED, ICMP6_UNREACH,
    UNREACH6_PORT, l4ok, unreachable6,
)
from vdetwist.slirp.ipv6 import parse as parse6
from vdetwist.stack.autoconf import DhcpClient, Slaac, eui64
from vdetwist.stack.config import StackConfig
from vdetwist.stack.neighbours import Neighbours
from vdetwist.stack.tcp import StackTcp
from vdetwist.wire.checksum import pseudo4, residue

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext

log = Logger()

#: How long an IPv6 address stays tentative after its duplicate address
#: detection solicitation (RFC 4861 RetransTimer, one transmission).
DAD_WAIT = 1.0
#: Addresses found duplicate, remembered so re-advertisements do not retry.
MAX_DUPLICATES = 64
LINK_LOCAL = bytes.fromhex("fe80000000000000")
ALL_NODES = P.IP6_ALL_NODES


def ntop6(address: bytes) -> str:
    return str(IPv6Address(address))


class DatagramReceiver(Protocol):
    def __call__(self, data: bytes, source: bytes, port: int) -> None:
        ...


#: What a UDP port hears of an ICMP port unreachable quoting one of its
#: datagrams: called with the datagram's destination address and port.
Refused = Callable[[bytes, int], None]


class HostStack(EngineCore):
    """
    One host's IP stack on one Ethernet interface.

    @param settings: its L{StackConfig}.
    @param output: called with each frame it sends.
    @param clock: the current time in seconds.
    @param timerChanged: called with the earliest deadline when one is set
        earlier than the last announced (the driver's wake-up).
    @param strict: re-raise exceptions from C{input} (tests).
    @ivar config: what the TCP engine reads of a slirp engine's
        configuration (the MSS and the connection table's limits).
    @ivar stats: counters of what was received, sent and dropped.
    @ivar addressChanged: called when an address is configured or lost.
    """

    name = "vdestack"
    inputFailure = "vdestack: handling a frame"

    def __init__(self, settings: StackConfig, output: Callable[[bytes], None],
                 clock: Callable[[], float] = time.monotonic,
                 timerChanged: Optional[Callable[[float], None]] = None,
                 strict: bool = False, seed: Optional[int] = None) -> None:
        super().__init__(clock, timerChanged, strict, seed)
        self.settings = config = settings
        self.config = SlirpConfig(mtuOption=config.mtu)
        self.output = output
        #: TCP sends plain MSS-sized segments (the slirp engine's offloads,
        #: L{vdetwist.slirp.context.LayerContext.offload}, are not the stack's)
        self.offload = False
        self.outQueue: deque[bytes] = deque()
        self.mac = config.mac
        self.mtu = config.mtu
        self.addressChanged: Callable[[], None] = lambda: None
        # IPv4
        self.address4: Optional[bytes] = None
        self.mask4 = P.IP4_ANY
        self.network4 = P.IP4_ANY
        self.broadcast4: Optional[bytes] = None
        self.gateway4: Optional[bytes] = None
        #: the name servers DHCP gave
        self.dnsServers4: list[bytes] = []
        # IPv6: every address we answer for, and the on-link prefixes (/64s)
        self.linkLocal = LINK_LOCAL + eui64(self.mac)
        self.addresses6: dict[bytes, Optional[float]] = {self.linkLocal: None}
        self.prefixes6: dict[bytes, Optional[float]] = {}
        self.gateway6: Optional[bytes] = None
        self.gateway6Expires: Optional[float] = None
        #: addresses under duplicate address detection: their lifetimes
        #: and DAD timers
        self.tentative6: dict[bytes, tuple[Optional[float], Any]] = {}
        self.duplicates6: set[bytes] = set()
        self._multicast6: set[bytes] = set()
        self._multicastChanged()

        self.link = Neighbours(self)
        self.tcp = StackTcp(cast("LayerContext", self))
        self.udp: dict[tuple[int, int], tuple[Optional[bytes], DatagramReceiver]] = {}
        self.udpRefused: dict[tuple[int, int], Refused] = {}
        #: frames to our own addresses, taken in at the next turn (not
        #: inside the send that made them)
        self.looped: deque[bytes] = deque()
        self.loopback = self.timer(self._takeLooped)
        self.pings: dict[tuple[int, int], Callable[[bytes], None]] = {}
        self._pingIdent = self.random.getrandbits(16)

        self.dhcp = DhcpClient(self) if config.dhcp else None
        self.slaac = Slaac(self) if config.slaac else None
        if config.ip4 is not None:
            self.setAddress4(config.ip4.ip.packed, config.ip4.network.prefixlen,
                             config.gateway4.packed if config.gateway4 else None)
        if config.ip6 is not None and config.ip6.network.prefixlen == 64:
            self.prefixes6[config.ip6.ip.packed[:8]] = None
        if config.gateway6 is not None:
            self.gateway6 = config.gateway6.packed

    # -- starting and stopping ------------------------------------------------

    def start(self) -> None:
        """
        Start autoconfiguration (DHCP, router solicitation) and announce
        our addresses.
        """
        if self.dhcp is not None:
            self.dhcp.start()
        if self.slaac is not None:
            self.slaac.start()
        if self.settings.ip6 is not None:
            self.addAddress6(self.settings.ip6.ip.packed, None)
        if self.address4 is not None:
            self.link.probe4()

    def close(self) -> None:
        if self.closed:
            return
        self.tcp.close()
        self.closed = True
        self.timers.close()
        self.link.clear()
        self.udp.clear()
        self.pings.clear()
        self.tentative6.clear()
        self.outQueue.clear()
        self.looped.clear()

    # -- addresses ------------------------------------------------------------

    def setAddress4(self, address: Optional[bytes], prefix: int = 0,
                    gateway: Optional[bytes] = None) -> None:
        """
        Configure (or, with C{None}, remove) the IPv4 address.
        """
        self.address4 = address
        if address is None:
            self.mask4 = self.network4 = P.IP4_ANY
            self.broadcast4 = self.gateway4 = None
        else:
            mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
            self.mask4 = struct.pack("!I", mask)
            value = struct.unpack("!I", address)[0]
            self.network4 = struct.pack("!I", value & mask)
            self.broadcast4 = struct.pack("!I", (value & mask) | (~mask & 0xFFFFFFFF))
            self.gateway4 = gateway
        self.addressChanged()

    def addAddress6(self, address: bytes, expires: Optional[float]) -> None:
        """
        Configure an IPv6 address, or renew its lifetime: a new one is
        tentative while duplicate address detection runs (RFC 4862 5.4).
        """
        if address in self.addresses6:
            self.addresses6[address] = expires
            return
        if address in self.duplicates6:
            return
        tentative = self.tentative6.get(address)
        if tentative is not None:
            self.tentative6[address] = (expires, tentative[1])
            return
        timer = self.timer(lambda: self._dadDone(address))
        self.tentative6[address] = (expires, timer)
        self._multicastChanged()
        self.link.solicitDuplicate(address)
        timer.reset(self.now() + DAD_WAIT)

    def _dadDone(self, address: bytes) -> None:
        expires, _ = self.tentative6.pop(address)
        self.addresses6[address] = expires
        self._multicastChanged()
        self.addressChanged()

    def duplicate6(self, address: bytes) -> None:
        """
        Another node has (or is claiming) tentative C{address}: it is not
        used.
        """
        _, timer = self.tentative6.pop(address)
        timer.cancel()
        if len(self.duplicates6) < MAX_DUPLICATES:
            self.duplicates6.add(address)
        self._multicastChanged()
        self.stats["dad_duplicates"] += 1
        log.warn("vdestack: {address} is in use by another node on the network (duplicate"
                 " address detection): not configured", address=ntop6(address))

    def removeAddress6(self, address: bytes) -> None:
        """
        Forget an IPv6 address (its lifetime ended); never the link-local one.
        """
        if address in self.addresses6 and address != self.linkLocal:
            del self.addresses6[address]
            self._multicastChanged()
            self.addressChanged()

    def _multicastChanged(self) -> None:
        self._multicast6 = {ALL_NODES} | {P.solicitedNode(a) for a in self.addresses6} | {
            P.solicitedNode(a) for a in self.tentative6}

    def onLink4(self, address: bytes) -> bool:
        mask = self.mask4
        return bytes(a & m for a, m in zip(address, mask)) == self.network4

    def nextHop4(self, destination: bytes) -> Optional[bytes]:
        if self.address4 is None:
            return None
        if self.onLink4(destination):
            return destination
        return self.gateway4

    def nextHop6(self, destination: bytes) -> Optional[bytes]:
        if destination[:8] == LINK_LOCAL or destination[:8] in self.prefixes6:
            return destination
        if self.gateway6 is not None and (self.gateway6Expires is None
                                          or self.gateway6Expires > self.now()):
            return self.gateway6
        return None

    def source6(self, destination: bytes) -> bytes:
        """
        Our address to send to C{destination} from (RFC 6724, simply: a
        link-local one for link-local destinations, else a global one).
        """
        if destination[:8] == LINK_LOCAL or destination[0] == 0xFF and destination[1] & 0x0F == 2:
            return self.linkLocal
        for address in self.addresses6:
            if address[:8] == destination[:8]:
                return address
        for address in self.addresses6:
            if address[:8] != LINK_LOCAL:
                return address
        return self.linkLocal

    def source(self, destination: bytes) -> Optional[bytes]:
        """
        Our address to reach C{destination} (4 or 16 bytes) from, or
        C{None} if we have none of its family or no route.
        """
        if len(destination) == 4:
            if self.nextHop4(destination) is None:
                return None
            return self.address4
        if self.nextHop6(destination) is None:
            return None
        return self.source6(destination)

    def nameServers(self) -> list[bytes]:
        """
        The name servers to ask: the configured ones, else DHCP's.
        """
        return [a.packed for a in self.settings.dns] or list(self.dnsServers4)

    # -- timers ---------------------------------------------------------------

    # -- output ---------------------------------------------------------------

    def emit(self, frame: bytes) -> None:
        if self.closed:
            return
        self.stats["frames_out"] += 1
        if self.writable:
            self.output(frame)
        elif len(self.outQueue) < MAX_OUTPUT_QUEUE:
            self.outQueue.append(frame)
        else:
            self.stats["frames_dropped"] += 1

    def pauseOutput(self) -> None:
        self.writable = False

    def resumeOutput(self) -> None:
        self.writable = True
        queue = self.outQueue
        while queue and self.writable:
            self.output(queue.popleft())
        if self.writable:
            self.tcp.resume()

    def loop(self, frame: bytes) -> None:
        """
        A frame to one of our own addresses: received at the next turn.
        """
        if len(self.looped) >= MAX_OUTPUT_QUEUE:
            self.stats["loopback_dropped"] += 1
            return
        self.looped.append(frame)
        if not self.loopback.active:
            self.loopback.reset(self.now())

    def _takeLooped(self) -> None:
        looped, self.looped = self.looped, deque()
        for frame in looped:
            self.input(frame)

    def unresolved(self, address: bytes) -> None:
        """
        C{address} did not answer resolution: its frames were dropped.
        """
        self.stats["unresolved"] += 1

    # -- sending --------------------------------------------------------------

    def sendIP(self, source: bytes, destination: bytes, proto: int, payload: bytes) -> None:
        if len(destination) == 4:
            self.link.send4(destination, P.ipv4(source, destination, proto, payload))
        else:
            self.link.send6(destination, P.ipv6(source, destination, proto, payload))

    def sendUDP(self, source: Optional[bytes], sport: int, destination: bytes, dport: int,
                data: bytes) -> None:
        """
        A datagram to C{destination}:C{dport} (from our address if
        C{source} is C{None}); dropped (and counted) without a route.
        """
        if source is None:
            source = self.source(destination)
            if source is None:
                self.stats["udp_no_route"] += 1
                return
        segment = P.udpSegment(source, destination, sport, dport, data)
        self.sendIP(source, destination, P.PROTO_UDP, segment)

    def ping(self, destination: bytes, seq: int, payload: bytes,
             answered: Callable[[bytes], None]) -> bool:
        """
        Send an echo request; C{answered(payload)} on its reply (until
        L{forgetPing}).  C{False} without a route.
        """
        source = self.source(destination)
        if source is None:
            return False
        key = (self._pingIdent, seq)
        self.pings[key] = answered
        body = struct.pack("!HH", *key) + payload
        if len(destination) == 4:
            self.sendIP(source, destination, P.PROTO_ICMP, P.icmp4(ICMP_ECHO, 0, body))
        else:
            message = P.icmp6(source, destination, ICMP6_ECHO_REQUEST, 0, body)
            self.sendIP(source, destination, P.PROTO_ICMPV6, message)
        return True

    def forgetPing(self, seq: int) -> None:
        self.pings.pop((self._pingIdent, seq), None)

    # -- UDP ports ------------------------------------------------------------

    def bindUDP(self, family: int, address: Optional[bytes], port: int,
                receiver: DatagramReceiver, refused: Optional[Refused] = None) -> int:
        """
        Deliver datagrams to C{port} (0: an ephemeral one) of C{address}
        (or any of ours), and ICMP port unreachables quoting the port's
        datagrams to C{refused}; returns the port.

        @raise OSError: the port is taken.
        """
        import errno

        if port == 0:
            for _ in range(1000):
                port = self.random.randint(32768, 60999)
                if (family, port) not in self.udp:
                    break
        if (family, port) in self.udp:
            raise OSError(errno.EADDRINUSE, f"UDP port {port} is already bound")
        self.udp[(family, port)] = (address, receiver)
        if refused is not None:
            self.udpRefused[(family, port)] = refused
        return port

    def unbindUDP(self, family: int, port: int) -> None:
        self.udp.pop((family, port), None)
        self.udpRefused.pop((family, port), None)

    # -- input ----------------------------------------------------------------

    def _input(self, frame: bytes, trusted: bool) -> None:
        # (Every checksum is checked here: C{trusted} is for slirp's guests.)
        if self.closed or len(frame) < P.ETH_HLEN:
            return
        if not frame[0] & 1 and frame[:6] != self.mac:
            return
        self.stats["frames_in"] += 1
        ethertype = (frame[12] << 8) | frame[13]
        if ethertype == P.ETH_IP:
            self._ip4(frame)
        elif ethertype == P.ETH_ARP:
            self.link.arpInput(frame)
        elif ethertype == P.ETH_IPV6:
            self._ip6(frame)

    def _ip4(self, frame: bytes) -> None:
        parsed = parse4(frame[P.ETH_HLEN:])
        if parsed is None:
            self.stats["ip4_bad"] += 1
            return
        ihl, packet = parsed
        destination = packet[16:20]
        own = self.address4
        if destination == own:
            broadcast = False
        elif destination == P.IP4_BROADCAST or destination == self.broadcast4 or (
                own is None and self.dhcp is not None):
            broadcast = True
        else:
            self.stats["ip4_not_ours"] += 1
            return
        if packet[6] & 0x3F or packet[7]:
            defragmented = self.defragment4(ihl, packet)
            if defragmented is None:
                return
            ihl, packet = defragmented
        proto = packet[9]
        if proto == P.PROTO_UDP:
            self._udp4(packet, ihl, broadcast)
        elif broadcast:
            return
        elif proto == P.PROTO_TCP:
            self.tcp.input(packet, ihl)
        elif proto == P.PROTO_ICMP:
            self._icmp4(packet, ihl)
        else:
            self.stats["ip4_unknown_protocol"] += 1
            self.link.send4(packet[12:16], unreachable(packet, UNREACH_PROTOCOL, destination))

    def _udp4(self, packet: bytes, ihl: int, broadcast: bool) -> None:
        if len(packet) < ihl + 8:
            self.stats["udp_bad"] += 1
            return
        length = (packet[ihl + 4] << 8) | packet[ihl + 5]
        if length < 8 or ihl + length > len(packet):
            self.stats["udp_bad"] += 1
            return
        if packet[ihl + 6] or packet[ihl + 7]:
            if (residue(packet[ihl : ihl + length]) + pseudo4(
                    packet[12:16], packet[16:20], P.PROTO_UDP, length)) % 0xFFFF:
                self.stats["udp_bad_checksum"] += 1
                return
        sport = (packet[ihl] << 8) | packet[ihl + 1]
        dport = (packet[ihl + 2] << 8) | packet[ihl + 3]
        data = packet[ihl + 8 : ihl + length]
        if dport == 68 and self.dhcp is not None:
            self.dhcp.input(data)
            return
        if self.address4 is None:
            return
        self._deliverUDP(4, packet[16:20], packet[12:16], sport, dport, data, packet, broadcast)

    def _deliverUDP(self, family: int, destination: bytes, source: bytes, sport: int,
                    dport: int, data: bytes, packet: bytes, multicast: bool) -> None:
        bound = self.udp.get((family, dport))
        if bound is not None and (bound[0] is None or bound[0] == destination or multicast):
            self.stats["udp_in"] += 1
            bound[1](data, source, sport)
            return
        self.stats["udp_closed_port"] += 1
        if multicast:
            return
        if family == 4:
            self.link.send4(source, unreachable(packet, UNREACH_PORT, destination))
        else:
            self.link.send6(source, unreachable6(packet, UNREACH6_PORT, destination))

    def _icmp4(self, packet: bytes, ihl: int) -> None:
        message = packet[ihl:]
        if len(message) < 8:
            self.stats["icmp_bad"] += 1
            return
        if residue(message) != 0:
            self.stats["icmp_bad_checksum"] += 1
            return
        kind = message[0]
        if kind == ICMP_ECHO and message[1] == 0:
            self.stats["icmp_echo_answered"] += 1
            reply = P.icmp4(ICMP_ECHO_REPLY, 0, message[4:])
            self.link.send4(packet[12:16], P.ipv4(packet[16:20], packet[12:16], P.PROTO_ICMP,
                                                  reply))
        elif kind == ICMP_ECHO_REPLY:
            self._echoReply(message)
        elif kind == ICMP_UNREACH or kind == ICMP_TIME_EXCEEDED:
            code = message[1] if kind == ICMP_UNREACH else -1
            self._icmpError(message[8:], code in (UNREACH_PROTOCOL, UNREACH_PORT),
                            code == UNREACH_PORT)

    def _echoReply(self, message: bytes) -> None:
        ident, seq = struct.unpack_from("!HH", message, 4)
        answered = self.pings.pop((ident, seq), None)
        if answered is not None:
            answered(message[8:])

    def _ip6(self, frame: bytes) -> None:
        packet = parse6(frame[P.ETH_HLEN:])
        if packet is None:
            self.stats["ip6_bad"] += 1
            return
        source, destination = packet[8:24], packet[24:40]
        multicast = destination[0] == 0xFF
        if multicast:
            if destination not in self._multicast6:
                return
        elif destination not in self.addresses6:
            self.stats["ip6_not_ours"] += 1
            return
        if source[0] == 0xFF:
            return
        if packet[6] == P.PROTO_FRAG6:
            defragmented = self.defragment6(packet)
            if defragmented is None:
                return
            packet = defragmented
        nextHeader = packet[6]
        if nextHeader == P.PROTO_ICMPV6:
            self._icmp6(packet, frame[6:12], multicast)
        elif nextHeader == P.PROTO_UDP:
            if len(packet) < 48 or not l4ok(packet, P.PROTO_UDP):
                self.stats["udp_bad_checksum"] += 1
                return
            length = (packet[44] << 8) | packet[45]
            if length < 8 or 40 + length > len(packet):
                self.stats["udp_bad"] += 1
                return
            sport = (packet[40] << 8) | packet[41]
            dport = (packet[42] << 8) | packet[43]
            self._deliverUDP(6, destination, source, sport, dport, packet[48 : 40 + length],
                             packet, multicast)
        elif nextHeader == P.PROTO_TCP:
            if not multicast:
                self.tcp.input(packet, 40)

    def _icmp6(self, packet: bytes, frameSource: bytes, multicast: bool) -> None:
        if len(packet) < 48 or not l4ok(packet, P.PROTO_ICMPV6):
            self.stats["icmp_bad_checksum"] += 1
            return
        kind = packet[40]
        if kind in (ND_NS, ND_NA, ND_RA):
            # RFC 4861: hop limit 255 and code 0, or it came from off-link
            if packet[7] != 255 or packet[41] != 0:
                return
            if kind == ND_RA:
                if self.slaac is not None:
                    self.slaac.advertised(packet, frameSource)
            else:
                self.link.ndInput(packet, frameSource)
        elif kind == ICMP6_ECHO_REQUEST and not multicast:
            source, destination = packet[8:24], packet[24:40]
            self.stats["icmp_echo_answered"] += 1
            reply = P.icmp6(destination, source, ICMP6_ECHO_REPLY, 0, packet[44:])
            self.link.send6(source, P.ipv6(destination, source, P.PROTO_ICMPV6, reply))
        elif kind == ICMP6_ECHO_REPLY:
            self._echoReply(packet[40:])
        elif kind == ICMP6_UNREACH or kind == ICMP6_TIME_EXCEEDED:
            port = kind == ICMP6_UNREACH and packet[41] == UNREACH6_PORT
            self._icmpError(packet[48:], port, port)

    def _icmpError(self, quote: bytes, refused: bool, portUnreachable: bool) -> None:
        """
        An ICMP error quoting a packet we sent, as a kernel takes it: to a
        TCP connection still opening it is fatal (C{refused}: the port or
        protocol is closed; else the host is unreachable), to an
        established one it is a soft error and ignored (RFC 1122 4.2.3.9);
        a port unreachable reaches a connected UDP port.
        """
        if len(quote) < 20:
            self.stats["icmp_bad"] += 1
            return
        if quote[0] >> 4 == 4:
            ihl = (quote[0] & 0x0F) << 2
            proto, source, destination = quote[9], quote[12:16], quote[16:20]
            ours = source == self.address4
        else:
            ihl = 40
            proto, source, destination = quote[6], quote[8:24], quote[24:40]
            ours = source in self.addresses6
        if not ours or len(quote) < ihl + 8:
            self.stats["icmp_bad"] += 1
            return
        self.stats["icmp_errors_in"] += 1
        sport = (quote[ihl] << 8) | quote[ihl + 1]
        dport = (quote[ihl + 2] << 8) | quote[ihl + 3]
        if proto == P.PROTO_TCP:
            seq = struct.unpack_from("!I", quote, ihl + 4)[0]
            self.tcp.icmpError(source, sport, destination, dport, seq, refused)
        elif proto == P.PROTO_UDP and portUnreachable:
            hook = self.udpRefused.get((4 if len(source) == 4 else 6, sport))
            if hook is not None:
                hook(destination, dport)

    def _reassemblyTimedOut(self, quote: bytes) -> None:
        """
        A datagram to us whose first fragment came was not completed in
        time: ICMP time exceeded, code 1, to its (unicast) source.
        """
        self.stats["reassembly_timeouts"] += 1
        if quote[0] >> 4 == 4:
            source, destination = quote[12:16], quote[16:20]
            if destination == self.address4 and source[0] < 224 and source != P.IP4_ANY:
                self.link.send4(source, unreachable(quote, 1, destination, ICMP_TIME_EXCEEDED))
        else:
            source, destination = quote[8:24], quote[24:40]
            if destination in self.addresses6 and source[0] != 0xFF and source != P.IP6_ANY:
                self.link.send6(source, unreachable6(quote, 1, destination, ICMP6_TIME_EXCEEDED))

