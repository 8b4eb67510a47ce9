"""
ICMP echo: answered locally for the emulated addresses, NATed to the host
for the others through an ICMP datagram ("ping") socket when the host's
C{net.ipv4.ping_group_range} allows it, else a raw socket.

A ping socket's kernel replaces the echo identifier with the socket's port;
a raw socket keeps it, so each flow sends with an identifier of its own.
Either way the guest's identifier is put back on the replies.
"""

from __future__ import annotations

import itertools
import struct
from typing import TYPE_CHECKING, Optional

from zope.interface import implementer

from vdetwist.slirp import packets as P
from vdetwist.slirp.flows import FlowTable
from vdetwist.slirp.hostapi import IDatagramHandler, IDatagramSocket
from vdetwist.slirp.ipv4 import ICMP_TIME_EXCEEDED, UNREACH_PORT, unreachable
from vdetwist.slirp.ipv6 import ICMP6_TIME_EXCEEDED, UNREACH6_PORT, unreachable6
from vdetwist.slirp.policy import AddressPolicy, pton

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext

ECHO_REPLY4, ECHO4 = 0, 8
ECHO_REQUEST6, ECHO_REPLY6 = 128, 129
IDLE_TIMEOUT = 30.0
MAX_FLOWS = 64
ECHO = struct.Struct("!BBHHH")


@implementer(IDatagramHandler)
class EchoFlow:
    def __init__(self, nat: "IcmpNat", key: tuple, ident: int) -> None:
        self.nat = nat
        self.key = key  # (guest address, guest identifier)
        self.ident = ident
        #: Set once opened; C{None} again once closed (no cycle left).
        self.socket: Optional[IDatagramSocket] = None
        self.expires = 0.0
        #: host address bytes -> guest-visible address bytes
        self.visible: dict[bytes, bytes] = {}

    def datagramReceived(self, data: bytes, address: tuple) -> None:
        self.nat.fromHost(self, data, address)

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None


class IcmpNat(FlowTable):
    def __init__(self, context: "LayerContext") -> None:
        self.context = context
        self.flows: dict[tuple, EchoFlow] = {}
        self._idents = itertools.count(0x4000)

    def echoLocal4(self, packet: bytes, ihl: int) -> None:
        """
        Answer an echo request to an emulated address.
        """
        message = packet[ihl:]
        reply = P.icmp4(ECHO_REPLY4, 0, message[4:])
        self.context.link.send4(packet[12:16], P.ipv4(packet[16:20], packet[12:16],
                                                     P.PROTO_ICMP, reply, ttl=255))

    def echoLocal6(self, packet: bytes) -> None:
        source, destination = packet[24:40], packet[8:24]
        reply = P.icmp6(source, destination, ECHO_REPLY6, 0, packet[44:])
        self.context.link.send6(destination, P.ipv6(source, destination, P.PROTO_ICMPV6, reply,
                                                   255))

    def output(self, guest: bytes, destination: bytes, message: bytes,
               packet: Optional[bytes] = None) -> None:
        """
        Send the guest's echo request C{message} (ICMP header and data) to
        C{destination} through a host socket.  With C{packet} (the guest's
        IP packet), a TTL or hop limit of 1 or less gets an ICMP time
        exceeded instead.
        """
        context = self.context
        if len(message) < 8:
            return
        target = context.policy.mapOutbound(destination, 0, "icmp")
        if target is None:
            return
        if packet is not None and hopLimitExpired(context, packet):
            return
        host = target[0]
        _, _, _, gid, seq = ECHO.unpack_from(message)
        key = (guest, gid)
        flow = self.flows.get(key)
        if flow is None:
            if len(self.flows) >= MAX_FLOWS:
                oldest = min(self.flows.values(), key=lambda f: f.expires)
                self.flows.pop(oldest.key).close()
                context.stats["icmp_flows_evicted"] += 1
            flow = EchoFlow(self, key, next(self._idents) & 0xFFFF)
            try:
                flow.socket = context.host.openICMP(6 if ":" in host else 4, flow)
            except OSError:
                context.stats["icmp_socket_failed"] += 1
                return
            self.flows[key] = flow
            context.ensureHousekeeping()
        flow.expires = context.now() + IDLE_TIMEOUT
        flow.visible[pton(host)] = destination
        kind = ECHO4 if ":" not in host else ECHO_REQUEST6
        body = struct.pack("!HH", flow.ident, seq) + message[8:]
        if kind == ECHO4:
            request = P.icmp4(kind, 0, body)
        else:
            # The kernel fills in the ICMPv6 checksum (it needs the source).
            request = bytes((kind, 0, 0, 0)) + body
        context.stats["icmp_out"] += 1
        assert flow.socket is not None, "a flow in the table is open"
        flow.socket.sendto(request, (host, 0))

    def fromHost(self, flow: EchoFlow, data: bytes, address: tuple) -> None:
        context = self.context
        if self.flows.get(flow.key) is not flow or len(data) < 8:
            return
        kind, code, _, ident, seq = ECHO.unpack_from(data)
        if kind not in (ECHO_REPLY4, ECHO_REPLY6) or code != 0:
            return
        assert flow.socket is not None, "a flow in the table is open"
        if not flow.socket.rewritesIdentifier and ident != flow.ident:
            return
        try:
            hostBytes = pton(address[0])
        except OSError:
            return
        visible = flow.visible.get(hostBytes)
        if visible is None:
            return
        guest, gid = flow.key
        body = struct.pack("!HH", gid, seq) + data[8:]
        if len(guest) == 4:
            if len(visible) != 4:
                return
            reply = P.icmp4(ECHO_REPLY4, 0, body)
            context.link.send4(guest, P.ipv4(visible, guest, P.PROTO_ICMP, reply))
        else:
            if len(visible) != 16:
                return
            reply = P.icmp6(visible, guest, ECHO_REPLY6, 0, body)
            context.link.send6(guest, P.ipv6(visible, guest, P.PROTO_ICMPV6, reply))
        context.stats["icmp_in"] += 1


# -- ICMP errors the engine sends the guests -----------------------------------


def errorTarget(policy: AddressPolicy, packet: bytes) -> Optional[bytes]:
    """
    The source of a guest packet if an ICMP error may answer it (not an
    unspecified, multicast or broadcast address), else C{None}.
    """
    if packet[0] >> 4 == 4:
        source = packet[12:16]
        if source == P.IP4_ANY or source[0] >= 224 or source == policy.broadcast4:
            return None
        return source
    source = packet[8:24]
    if source == P.IP6_ANY or source[0] == 0xFF:
        return None
    return source


def portUnreachable(context: LayerContext, packet: bytes) -> None:
    """
    Answer a guest packet sent to a port of an emulated address that
    nothing serves with an ICMP port unreachable.
    """
    if packet[0] >> 4 == 4:
        context.link.send4(packet[12:16], unreachable(packet, UNREACH_PORT, packet[16:20]))
    else:
        context.link.send6(packet[8:24], unreachable6(packet, UNREACH6_PORT, packet[24:40]))


def hopLimitExpired(context: LayerContext, packet: bytes) -> bool:
    """
    Whether a guest packet the engine is about to forward to the host
    has a TTL (hop limit) of 1 or less; if so it is answered, like a
    router would, with an ICMP time exceeded (code 0) from the gateway
    and must not be forwarded.
    """
    if packet[0] >> 4 == 4:
        if packet[8] > 1:
            return False
        context.stats["ttl_exceeded"] += 1
        target = errorTarget(context.policy, packet)
        if target is not None:
            context.link.send4(target, unreachable(packet, 0, context.policy.host4,
                                                   ICMP_TIME_EXCEEDED))
        return True
    if packet[7] > 1:
        return False
    context.stats["ttl_exceeded"] += 1
    target = errorTarget(context.policy, packet)
    if target is not None:
        source = P.IP6_ROUTER_LL if target[:2] == b"\xfe\x80" else context.policy.host6
        context.link.send6(target, unreachable6(packet, 0, source, ICMP6_TIME_EXCEEDED))
    return True


def reassemblyTimedOut(context: LayerContext, quote: bytes) -> None:
    """
    A datagram whose first fragment (C{quote}: its start) came in was not
    completed in time: ICMP time exceeded, code 1 (RFC 792, RFC 8200 4.5),
    from the datagram's destination when that is unicast.
    """
    context.stats["reassembly_timeouts"] += 1
    policy = context.policy
    target = errorTarget(policy, quote)
    if target is None:
        return
    if quote[0] >> 4 == 4:
        source = quote[16:20]
        if source[0] >= 224 or source == policy.broadcast4 or source == P.IP4_BROADCAST \
                or source == P.IP4_ANY:
            source = policy.host4
        context.link.send4(target, unreachable(quote, 1, source, ICMP_TIME_EXCEEDED))
    else:
        source = quote[24:40]
        if source[0] == 0xFF or source == P.IP6_ANY:
            source = policy.host6
        context.link.send6(target, unreachable6(quote, 1, source, ICMP6_TIME_EXCEEDED))
