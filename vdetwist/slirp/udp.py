"""
UDP NAT: each guest (address, port) gets host sockets (one per family it
talks to); replies from anywhere come back to it (full-cone), from the
address the guest sent to (C{10.0.2.3:53} for the DNS proxy, the gateway
for the host's loopback).  Flows expire after 240 s idle, 10 s when they
last talked to port 53.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from zope.interface import implementer

from vdetwist.slirp import packets as P
from vdetwist.slirp.flows import FlowTable
from vdetwist.slirp.hostapi import IDatagramHandler, IDatagramSocket
from vdetwist.slirp.icmp import hopLimitExpired, portUnreachable
from vdetwist.slirp.policy import family, pton

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext

IDLE_TIMEOUT = 240.0
DNS_TIMEOUT = 10.0
#: Flows at most; the least recently used one goes when a new one needs room.
MAX_FLOWS = 1024
#: Remembered (host address -> guest-visible address) translations per flow.
MAX_REVERSE = 64


@implementer(IDatagramHandler)
class UdpFlow:
    """
    The host side of one guest UDP endpoint.
    """

    def __init__(self, nat: "UdpNat", key: tuple) -> None:
        self.nat = nat
        self.key = key  # (guest address bytes, guest port)
        self.sockets: dict[int, IDatagramSocket] = {}
        #: Sockets this flow made (closed with it) vs. forward listeners.
        self.owned: set[int] = set()
        self.expires = 0.0
        self.timeout = IDLE_TIMEOUT
        #: (host address bytes, port) -> (guest-visible address bytes, port)
        self.reverse: OrderedDict[tuple, tuple] = OrderedDict()
        #: (guest-visible address bytes, port) -> (host address text, port),
        #: for the clients of UDP forwards.
        self.outMap: dict[tuple, tuple] = {}

    def remember(self, hostKey: tuple, visible: tuple) -> None:
        reverse = self.reverse
        if reverse.get(hostKey) != visible:
            reverse[hostKey] = visible
            if len(reverse) > MAX_REVERSE:
                reverse.popitem(last=False)

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        self.nat.fromHost(self, data, address)

    def close(self) -> None:
        for fam in self.owned:
            try:
                self.sockets[fam].close()
            except Exception:  # pragma: no cover - best effort
                pass
        self.sockets.clear()
        self.owned.clear()


@implementer(IDatagramHandler)
class _ForwardHandler:
    socket: IDatagramSocket  # set by UdpNat.listen once bound

    def __init__(self, nat: "UdpNat", forward) -> None:
        self.nat = nat
        self.forward = forward

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        self.nat.fromForward(self, data, address)


class UdpNat(FlowTable):
    def __init__(self, context: "LayerContext") -> None:
        self.context = context
        self.flows: OrderedDict[tuple, UdpFlow] = OrderedDict()
        self.listeners: list = []

    def input(self, packet: bytes, ihl: int) -> None:
        """
        A UDP datagram from the guest (already checked) to the outside.
        """
        context = self.context
        if packet[0] >> 4 == 6:
            source, destination = packet[8:24], packet[24:40]
        else:
            source, destination = packet[12:16], packet[16:20]
        sport, dport = P.U16.unpack_from(packet, ihl)[0], P.U16.unpack_from(packet, ihl + 2)[0]
        payload = packet[ihl + 8 :]
        key = (source, sport)
        flow = self.flows.get(key)
        target = None
        if flow is not None:
            target = flow.outMap.get((destination, dport))
        policy = context.policy
        if target is None:
            target = policy.mapOutbound(destination, dport, "udp")
        if target is None or target[0] in ("unix", "cmd"):
            context.stats["udp_refused"] += 1
            if destination in policy.local4 or destination in policy.local6:
                portUnreachable(context, packet)
            return
        if destination not in policy.local4 and destination not in policy.local6 and \
                destination != P.IP4_BROADCAST and hopLimitExpired(context, packet):
            return  # forwarded off the link: TTL 1 gets ICMP time exceeded
        host, port = target
        if flow is None:
            flow = self._newFlow(key)
        else:
            self.flows.move_to_end(key)
        fam = family(host)
        sock = flow.sockets.get(fam)
        if sock is None:
            try:
                sock = context.host.openUDP(fam, flow)
            except OSError:
                context.stats["udp_socket_failed"] += 1
                return
            flow.sockets[fam] = sock
            flow.owned.add(fam)
        flow.remember((pton(host), port), (destination, dport))
        flow.timeout = DNS_TIMEOUT if dport == 53 else IDLE_TIMEOUT
        flow.expires = context.now() + flow.timeout
        context.stats["udp_out"] += 1
        sock.sendto(payload, (host, port))

    def _newFlow(self, key: tuple) -> UdpFlow:
        if len(self.flows) >= MAX_FLOWS:
            _, old = self.flows.popitem(last=False)
            old.close()
            self.context.stats["udp_flows_evicted"] += 1
        flow = self.flows[key] = UdpFlow(self, key)
        self.context.ensureHousekeeping()
        return flow

    def fromHost(self, flow: UdpFlow, data: bytes, address: tuple) -> None:
        if self.flows.get(flow.key) is not flow:
            return
        host, port = address[0], address[1]
        try:
            hostBytes = pton(host)
        except OSError:
            return
        visible = flow.reverse.get((hostBytes, port))
        if visible is None:
            visible = (self.context.policy.mapInbound(hostBytes), port)
        guest, gport = flow.key
        if len(visible[0]) != len(guest):
            return  # an IPv4 source cannot reach an IPv6 guest, or back
        flow.expires = self.context.now() + flow.timeout
        self.context.stats["udp_in"] += 1
        packet = P.udpPacket(visible[0], guest, visible[1], gport, data)
        if len(guest) == 4:
            self.context.link.send4(guest, packet)
        else:
            self.context.link.send6(guest, packet)

    # -- forwards ------------------------------------------------------

    def listen(self, forward) -> _ForwardHandler:
        """
        Start a C{udpfwd}; returns its handler, for L{unlisten}.

        @raise OSError: the port cannot be bound.
        """
        handler = _ForwardHandler(self, forward)
        handler.socket = self.context.host.listenUDP(str(forward.hostAddr), forward.hostPort,
                                                    handler)
        self.listeners.append(handler)
        return handler

    def unlisten(self, handler: _ForwardHandler) -> None:
        """
        Stop a forward L{listen} started, and the flows answering through
        its socket (they could send no more).
        """
        self.listeners.remove(handler)
        sock = handler.socket
        for key in [k for k, f in self.flows.items() if sock in f.sockets.values()]:
            self.flows.pop(key).close()
        sock.close()

    def fromForward(self, handler: _ForwardHandler, data: bytes, address: tuple) -> None:
        context = self.context
        forward = handler.forward
        ends = context.policy.forwardEnds(forward, address[0])
        if ends is None:
            return
        guest, visible = ends
        key = (guest, forward.guestPort)
        fam = family(address[0])
        flow = self.flows.get(key)
        if flow is None or flow.sockets.get(fam) is not handler.socket:
            if flow is not None:
                flow.close()
                del self.flows[key]
            flow = self._newFlow(key)
            flow.sockets[fam] = handler.socket
        flow.outMap[(visible, address[1])] = (address[0], address[1])
        flow.remember((pton(address[0]), address[1]), (visible, address[1]))
        flow.expires = context.now() + IDLE_TIMEOUT
        packet = P.udpPacket(visible, guest, address[1], forward.guestPort, data)
        if len(guest) == 4:
            context.link.send4(guest, packet)
        else:
            context.link.send6(guest, packet)

    # -- housekeeping ----------------------------------------------------

    def close(self) -> None:
        super().close()
        for handler in self.listeners:
            handler.socket.close()
        self.listeners.clear()
