"""
The sans-IO core of the slirp engine.

Frames from the guests go in through L{SlirpEngine.input}; frames for the guests
come out through the C{output} callback.  Time comes from the C{clock}
callable and advances through L{SlirpEngine.advance}; the engine tells its
driver when it next needs to run through C{timerChanged}.  Host sockets are
behind L{vdetwist.slirp.hostapi.IHost}.  L{vdetwist.slirp.driver.Driver}
runs an engine on a Twisted clock (the reactor, or
L{twisted.internet.task.Clock} in tests).

No exception raised while handling a guest frame leaves L{SlirpEngine.input}:
it is counted in C{stats["errors"]} and logged (with C{strict}, re-raised,
for tests).
"""

from __future__ import annotations

import errno
import time
from collections import deque
from typing import Callable, Optional

from vdetwist.slirp import packets as P
from vdetwist.slirp.config import GuestForward, HostForward, SlirpConfig
from vdetwist.slirp.core import MAX_OUTPUT_QUEUE, EngineCore
from vdetwist.slirp.dhcp import DHCP6_SERVER_PORT, DhcpServer, RouterAdvertiser, dhcp6Reply
from vdetwist.slirp.dns import Resolvers
from vdetwist.slirp.hostapi import IHost
from vdetwist.slirp.icmp import IcmpNat, reassemblyTimedOut
from vdetwist.slirp.ipv4 import ICMP_ECHO
from vdetwist.slirp.ipv4 import parse as parse4
from vdetwist.slirp.ipv6 import ICMP6_ECHO_REQUEST, Ndp, l4ok
from vdetwist.slirp.ipv6 import parse as parse6
from vdetwist.slirp.link import Link
from vdetwist.slirp.policy import AddressPolicy
from vdetwist.slirp.tcp import TcpLayer
from vdetwist.slirp.udp import UdpNat


def _notOffloading(frame: bytes) -> None:
    raise AssertionError("a vnet frame for guests that take plain frames only")


class SlirpEngine(EngineCore):
    """
    The demultiplexer of guest frames to the layers, and the
    L{vdetwist.slirp.context.LayerContext} the layers share: clock, timers,
    statistics, configuration, address policy, random numbers, the host and
    the way out to the guests.

    @param config: a L{SlirpConfig}.
    @param host: an L{vdetwist.slirp.hostapi.IHost}.
    @param output: called with each frame for the guests.
    @param clock: returns the current time in seconds.
    @param timerChanged: called with the new earliest deadline when a timer
        is set earlier than the last one announced.
    @param strict: re-raise exceptions from C{input} (tests).
    """

    name = "slirp"
    inputFailure = "slirp: handling a guest frame"

    def __init__(self, config: SlirpConfig, host: IHost, output: Callable[[bytes], None],
                 clock: Callable[[], float] = time.monotonic,
                 timerChanged: Optional[Callable[[float], None]] = None,
                 strict: bool = False, seed: Optional[int] = None) -> None:
        super().__init__(clock, timerChanged, strict, seed)
        self.config = config
        self.host = host
        self.output = output
        self.outputVnet: Callable[[bytes], None] = _notOffloading
        self.offload = False
        #: what waits for the link to be writable: (frame, is a vnet frame)
        self.outQueue: deque[tuple[bytes, bool]] = deque()

        self.policy = policy = AddressPolicy(config, Resolvers(config.resolvConf, clock))
        # the demux's per-frame address checks, bound here (no lookup through
        # the policy per frame)
        self.host4, self.broadcast4 = policy.host4, policy.broadcast4
        self.network4, self.local4 = policy.network4, policy.local4
        self.network6, self.local6 = policy.network6, policy.local6

        self.link = Link(self)
        self.dhcp = DhcpServer(self)
        self.ra = RouterAdvertiser(self)
        self.ndp = Ndp(self, self.ra.send)
        self.udp = UdpNat(self)
        self.tcp = TcpLayer(self)
        self.icmp = IcmpNat(self)
        self.tftp = None
        if config.tftpPath:
            from vdetwist.slirp.tftp import TftpServer

            self.tftp = TftpServer(self, config.tftpPath)
        #: The host forwards listening, by id: C{tcpfwd}/C{udpfwd}'s, then
        #: those added by L{addForward} (the API socket's).
        self.forwards: dict[int, HostForward] = {}
        self._forwardHandles: dict[int, tuple] = {}
        self._nextForwardId = 0

    # -- starting and stopping ----------------------------------------------

    def start(self) -> list[tuple[HostForward | GuestForward, int]]:
        """
        Start the periodic work and the host forwards; returns each forward
        with the result of setting it up (0, or the C{errno} of the
        failure), for C{verbose} and for refusing a forward that failed.
        """
        results: list[tuple[HostForward | GuestForward, int]] = []
        for forward in self.config.hostForwards:
            try:
                self.addForward(forward)
                results.append((forward, 0))
            except OSError as e:
                results.append((forward, e.errno or errno.EIO))
        for guestForward in self.config.guestForwards:
            results.append((guestForward, 0))
        if self.config.ipv6:
            self.ra.start()
        return results

    # -- the host forward table ---------------------------------------------

    def addForward(self, forward: HostForward) -> int:
        """
        Start a host forward; returns its id in L{forwards} (1, 2, ...,
        never reused).

        @raise OSError: its port cannot be bound.
        """
        layer = self.tcp if forward.proto == "tcp" else self.udp
        handle = layer.listen(forward)
        self._nextForwardId += 1
        self.forwards[self._nextForwardId] = forward
        self._forwardHandles[self._nextForwardId] = (layer, handle)
        return self._nextForwardId

    def removeForward(self, forwardId: int) -> HostForward:
        """
        Stop the host forward C{forwardId}: its port closes; connections it
        made carry on.

        @raise KeyError: there is no such forward.
        """
        forward = self.forwards.pop(forwardId)
        layer, handle = self._forwardHandles.pop(forwardId)
        layer.unlisten(handle)
        return forward

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.forwards.clear()
        self._forwardHandles.clear()
        self.timers.close()
        self.tcp.close()
        self.udp.close()
        self.icmp.close()
        if self.tftp is not None:
            self.tftp.close()
        self.link.clear()
        self.outQueue.clear()

    # -- timers ---------------------------------------------------------------

    def expire(self, now: float) -> bool:
        self.udp.expire(now)
        self.icmp.expire(now)
        return super().expire(now) or bool(self.udp.flows or self.icmp.flows)

    # -- output ---------------------------------------------------------------

    def emit(self, frame: bytes) -> None:
        if self.writable and not self.closed:
            self.stats["frames_out"] += 1
            self.output(frame)
        else:
            self._hold(frame, False)

    def emitVnet(self, frame: bytes) -> None:
        if self.writable and not self.closed:
            self.stats["frames_out"] += 1
            self.outputVnet(frame)
        else:
            self._hold(frame, True)

    def _hold(self, frame: bytes, vnet: bool) -> None:
        """
        Keep a frame (a vnet frame if C{vnet}) until the link is writable
        again (unless too many wait already, or the engine is closed).
        """
        if self.closed:
            return
        self.stats["frames_out"] += 1
        if len(self.outQueue) < MAX_OUTPUT_QUEUE:
            self.outQueue.append((frame, vnet))
        else:
            self.stats["frames_dropped"] += 1

    def offloadTo(self, outputVnet: Callable[[bytes], None]) -> None:
        """
        From now on send the guests' TCP data as vnet frames (virtio-net
        header, then the Ethernet frame: L{vdetwist.wire.vnethdr}) through
        C{outputVnet}: segments of up to 64 KiB with partial checksums,
        which the guests' link segments and completes.
        """
        self.outputVnet = outputVnet
        self.offload = True

    def pauseOutput(self) -> None:
        """
        The link cannot take more frames for now.
        """
        self.writable = False

    def resumeOutput(self) -> None:
        self.writable = True
        queue = self.outQueue
        while queue and self.writable:
            frame, vnet = queue.popleft()
            (self.outputVnet if vnet else self.output)(frame)
        if self.writable:
            self.tcp.resume()

    # -- address mapping -------------------------------------------------------

    def _reassemblyTimedOut(self, quote: bytes) -> None:
        reassemblyTimedOut(self, quote)

    # -- input ------------------------------------------------------------------

    def _input(self, frame: bytes, trusted: bool) -> None:
        """
        One frame from the guests (through L{EngineCore.input}).  It may be
        a C{memoryview} of a TCP segment (whose payload then reaches the host
        uncopied): what the engine keeps of it is copied.

        @param trusted: the frame's TCP or UDP checksum need not be checked
            (it may be partial): a guest's offloading link said so (its
            vnet header's C{NEEDS_CSUM} or C{DATA_VALID}; see
            L{vdetwist.slirp.vnet}).  The frame may then be a TCP segment
            of many MSSs (TSO), up to 64 KiB.
        """
        if self.closed or len(frame) < P.ETH_HLEN:
            return
        self.stats["frames_in"] += 1
        if not frame[0] & 1 and frame[:6] not in self.link.ownMacs:
            self.stats["frames_not_ours"] += 1
            return
        ethertype = (frame[12] << 8) | frame[13]
        if ethertype == P.ETH_IP:
            if self.config.ipv4:
                self._ip4(frame, trusted)
        elif ethertype == P.ETH_ARP:
            if self.config.ipv4:
                self.link.arpInput(frame)
        elif ethertype == P.ETH_IPV6:
            if self.config.ipv6:
                self._ip6(frame, trusted)

    def _ip4(self, frame: bytes, trusted: bool) -> None:
        parsed = parse4(frame[P.ETH_HLEN:])
        if parsed is None:
            self.stats["ip4_bad"] += 1
            return
        ihl, packet = parsed
        source, destination = packet[12:16], packet[16:20]
        if source in self.network4 and source not in self.local4 and source != self.broadcast4:
            if self.link.table4.get(source) != frame[6:12]:
                self.link.learn(bytes(source), bytes(frame[6:12]))
        elif source != P.IP4_ANY and (source[0] >= 224 or source[0] == 127):
            return
        if packet[6] & 0x3F or packet[7]:
            defragmented = self.defragment4(ihl, bytes(packet))
            if defragmented is None:
                return
            ihl, packet = defragmented
        proto = packet[9]
        if proto == P.PROTO_TCP:
            if destination[0] < 224 and destination != self.broadcast4:
                self.tcp.input(packet, ihl, trusted)
        elif proto == P.PROTO_UDP:
            self._udp4(packet, ihl, frame, trusted)
        elif proto == P.PROTO_ICMP:
            self._icmp4(packet, ihl)

    def _udp4(self, packet: bytes, ihl: int, frame: bytes, trusted: bool) -> None:
        if len(packet) < ihl + 8:
            return
        length = (packet[ihl + 4] << 8) | packet[ihl + 5]
        if length < 8 or ihl + length > len(packet):
            return
        if ihl + length < len(packet):
            packet = packet[: ihl + length]
        if (packet[ihl + 6] or packet[ihl + 7]) and not trusted:
            from vdetwist.wire.checksum import pseudo4, residue

            if (residue(packet[ihl:]) + pseudo4(packet[12:16], packet[16:20], P.PROTO_UDP,
                                                length)) % 0xFFFF:
                self.stats["udp_bad_checksum"] += 1
                return
        destination = packet[16:20]
        dport = (packet[ihl + 2] << 8) | packet[ihl + 3]
        if dport == 67 and (destination == P.IP4_BROADCAST or destination == self.host4):
            self.dhcp.input(packet, ihl, frame[6:12])
            return
        if dport == 69 and destination == self.host4 and self.tftp is not None:
            self.tftp.input(packet, ihl)
            return
        if destination == self.broadcast4 or (destination[0] >= 224 and destination
                                               != P.IP4_BROADCAST):
            return
        self.udp.input(packet, ihl)

    def _icmp4(self, packet: bytes, ihl: int) -> None:
        message = packet[ihl:]
        if len(message) < 8:
            return
        from vdetwist.wire.checksum import residue

        if residue(message) != 0:
            self.stats["icmp_bad_checksum"] += 1
            return
        if message[0] != ICMP_ECHO:
            return
        destination = packet[16:20]
        if destination in self.local4:
            self.icmp.echoLocal4(packet, ihl)
        elif destination[0] < 224 and destination not in self.network4:
            self.icmp.output(packet[12:16], destination, message, packet)

    def _ip6(self, frame: bytes, trusted: bool) -> None:
        packet = parse6(frame[P.ETH_HLEN:])
        if packet is None:
            self.stats["ip6_bad"] += 1
            return
        source, destination = packet[8:24], packet[24:40]
        if source[0] == 0xFF:
            return
        if source != P.IP6_ANY and (source in self.network6 or source[:2] == b"\xfe\x80") \
                and source not in self.local6:
            if self.link.table6.get(source) != frame[6:12]:
                self.link.learn(bytes(source), bytes(frame[6:12]))
        if packet[6] == P.PROTO_FRAG6:
            packet = self.defragment6(bytes(packet))
            if packet is None:
                return
        nextHeader = packet[6]
        if nextHeader == P.PROTO_ICMPV6:
            if len(packet) < 44 or not l4ok(packet, P.PROTO_ICMPV6):
                return
            if self.ndp.input(packet, frame[6:12]):
                return
            if packet[40] != ICMP6_ECHO_REQUEST or len(packet) < 48:
                return
            if destination in self.local6:
                self.icmp.echoLocal6(packet)
            elif destination[0] != 0xFF:
                self.icmp.output(source, destination, packet[40:], packet)
        elif nextHeader == P.PROTO_UDP:
            if len(packet) < 48 or not (trusted or l4ok(packet, P.PROTO_UDP)):
                return
            length = (packet[44] << 8) | packet[45]
            if length < 8 or 40 + length > len(packet):
                return
            packet = packet[: 40 + length]
            dport = (packet[42] << 8) | packet[43]
            if dport == DHCP6_SERVER_PORT and destination[0] == 0xFF:
                sport = (packet[40] << 8) | packet[41]
                dhcp6Reply(self, source, sport, packet[48:])
                return
            if destination[0] == 0xFF:
                return
            self.udp.input(packet, 40)
        elif nextHeader == P.PROTO_TCP:
            if destination[0] != 0xFF:
                self.tcp.input(packet, 40, trusted)
