"""
The address policy of a slirp engine: what the emulated addresses are (the
gateway, the DNS proxy, the guest forwards' addresses, the guest networks)
and where a guest packet to an address goes on the host, or which address
the guest sees for a host peer.  Pure: it answers questions and owns no
state beyond the configuration (and the host's name servers).
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network, IPv6Network
from typing import Optional, Union

from vdetwist.slirp import packets as P
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.dns import Resolvers

_LOOPBACK4 = "127.0.0.1"
_LOOPBACK6 = "::1"


def family(address: str) -> int:
    return 6 if ":" in address else 4


def pton(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


def ntop(address: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(address) == 16 else socket.AF_INET, address)


class _Network:
    """
    A network as a mask and a number: C{address in network} for packed
    addresses of its family (another family's are not in it).
    """

    __slots__ = ("net", "mask", "size")

    def __init__(self, network: Union[IPv4Network, IPv6Network]) -> None:
        self.net = int(network.network_address)
        self.mask = int(network.netmask)
        self.size = 4 if network.version == 4 else 16

    def __contains__(self, address: bytes) -> bool:
        return len(address) == self.size and \
            int.from_bytes(address, "big") & self.mask == self.net


class AddressPolicy:
    """
    The emulated addresses of a L{SlirpConfig} (packed) and the mapping
    between guest and host addresses.

    @ivar host4: the gateway (its packets come from the host's loopback).
    @ivar dns4: the DNS proxy (port 53 goes to the host's name server).
    @ivar local4: the addresses the engine answers for itself (gateway, DNS,
        guest forwards), never relayed.
    @ivar network4: the guest network (C{address in network4}).
    @ivar broadcast4: its directed broadcast address.
    @ivar resolvers: the host's name servers, for the DNS proxy.
    """

    def __init__(self, config: SlirpConfig, resolvers: Resolvers) -> None:
        self.config = config
        self.resolvers = resolvers
        self.host4 = config.host.packed
        self.dns4 = config.dns.packed
        self.network4 = _Network(config.network)
        self.broadcast4 = config.network.broadcast_address.packed
        self.host6 = config.host6.packed
        self.dns6 = config.dns6.packed
        self.network6 = _Network(config.network6)
        self.guestForwards = {(f.addr.packed, f.port): f for f in config.guestForwards}
        self.local4 = {self.host4, self.dns4} | {a for a, _ in self.guestForwards}
        self.local6 = {self.host6, self.dns6, P.IP6_ROUTER_LL}

    def mapOutbound(self, destination: bytes, port: int, proto: str):
        """
        Where a guest packet to C{destination:port} goes on the host:
        C{(host, port)}, a guest forward's C{("unix", path)} or
        C{("cmd", command)}, or C{None} (refused).
        """
        config = self.config
        if len(destination) == 4:
            if destination == self.host4:
                return None if config.disableHostLoopback else (_LOOPBACK4, port)
            if destination == self.dns4:
                if port == 53 and proto != "icmp" and not config.restricted:
                    server = self.resolvers.forFamily(4)
                    return None if server is None else (server, 53)
                return None
            if proto == "tcp":
                forward = self.guestForwards.get((destination, port))
                if forward is not None:
                    return (forward.kind, forward.target)
            if destination == P.IP4_BROADCAST:
                if proto == "udp" and not config.disableHostLoopback:
                    return (_LOOPBACK4, port)
                return None
            if destination in self.network4 or destination in self.local4:
                return None
            first = destination[0]
            if first == 0 or first == 127 or first >= 224:
                return None
            if config.restricted:
                return None
            return (ntop(destination), port)
        if destination == self.host6:
            return None if config.disableHostLoopback else (_LOOPBACK6, port)
        if destination == self.dns6:
            if port == 53 and proto != "icmp" and not config.restricted:
                server = self.resolvers.forFamily(6)
                return None if server is None else (server, 53)
            return None
        if destination in self.network6 or destination in self.local6:
            return None
        if destination[0] == 0xFF or destination[:2] == b"\xfe\x80" or \
                destination == P.IP6_LOOPBACK or destination == P.IP6_ANY:
            return None
        if destination[:12] == P.IP6_V4MAPPED:
            return None
        if config.restricted:
            return None
        return (ntop(destination), port)

    def mapInbound(self, address: bytes) -> bytes:
        """
        The address the guest sees for a host-side C{address}: the host's
        loopback appears as the gateway, anything else as itself.
        """
        if len(address) == 4:
            if address[0] == 127:
                return self.host4
            return address
        if address == P.IP6_LOOPBACK:
            return self.host6
        return address

    def forwardGuest(self, address) -> bytes:
        """
        The guest address of a forward (C{0.0.0.0}: the first DHCP address).
        """
        packed = address.packed
        if packed == P.IP4_ANY:
            return self.config.dhcpStart.packed
        return packed

    def forwardEnds(self, forward, client: str) -> Optional[tuple[bytes, bytes]]:
        """
        (guest, what the guest sees as the client) for a host-side client
        of C{forward} at address text C{client}, or C{None} when it cannot
        be relayed.  A client of the other family than the guest appears
        as the gateway of the guest's family.
        """
        try:
            address = pton(client)
        except OSError:
            return None
        if len(address) == 16 and address[:12] == P.IP6_V4MAPPED:
            address = address[12:]
        guest = self.forwardGuest(forward.guestAddr)
        config = self.config
        if not (config.ipv4 if len(guest) == 4 else config.ipv6):
            return None
        if len(address) != len(guest):
            return guest, self.host4 if len(guest) == 4 else self.host6
        return guest, self.mapInbound(address)
