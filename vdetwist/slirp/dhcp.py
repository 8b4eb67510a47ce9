"""
Address configuration: the DHCPv4 (BOOTP) server on the gateway, DHCPv6
information replies, and IPv6 router advertisements.
"""

from __future__ import annotations

import random
import struct
from typing import TYPE_CHECKING, Optional

from vdetwist.slirp import packets as P

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext

BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
MAGIC = b"\x63\x82\x53\x63"
#: BOOTP message length libslirp sends (236 fixed + 312 options).
BOOTP_LENGTH = 548

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)

OPT_PAD = 0
OPT_NETMASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN = 15
OPT_REQUESTED = 50
OPT_LEASE = 51
OPT_TYPE = 53
OPT_SERVER = 54
OPT_MESSAGE = 56
OPT_TFTP_SERVER = 66
OPT_BOOTFILE = 67
OPT_SEARCH = 119
OPT_END = 255


def parseOptions(data: bytes) -> dict[int, bytes]:
    """
    DHCP options as a dictionary (the first occurrence of each wins);
    parsing stops at END or at a truncated option.
    """
    options: dict[int, bytes] = {}
    i, end = 0, len(data)
    while i < end:
        kind = data[i]
        if kind == OPT_END:
            break
        if kind == OPT_PAD:
            i += 1
            continue
        if i + 1 >= end:
            break
        length = data[i + 1]
        if i + 2 + length > end:
            break
        options.setdefault(kind, data[i + 2 : i + 2 + length])
        i += 2 + length
    return options


def encodeSearch(domains) -> bytes:
    """
    A domain search list in DNS wire format (RFC 3397), uncompressed.
    """
    out = bytearray()
    for domain in domains:
        for label in domain.strip(".").split("."):
            raw = label.encode("idna" if not label.isascii() else "ascii")[:63]
            if raw:
                out.append(len(raw))
                out += raw
        out.append(0)
    return bytes(out)


def _option(kind: int, value: bytes) -> bytes:
    out = bytearray()
    # Values longer than 255 bytes are split over several options (RFC 3396).
    for start in range(0, max(len(value), 1), 255):
        chunk = value[start : start + 255]
        out += bytes((kind, len(chunk))) + chunk
    return bytes(out)


class Lease:
    __slots__ = ("mac", "expires")

    def __init__(self, mac: bytes, expires: float) -> None:
        self.mac = mac
        self.expires = expires


class DhcpServer:
    """
    libslirp's BOOTP/DHCP server: C{config.leases} addresses from
    C{dhcpStart}, one per client MAC.
    """

    def __init__(self, context: "LayerContext") -> None:
        self.context = context
        self.config = context.config
        self.start = int.from_bytes(self.config.dhcpStart.packed, "big")
        self.leases: list[Optional[Lease]] = [None] * self.config.leases

    def address(self, index: int) -> bytes:
        return (self.start + index).to_bytes(4, "big")

    def _index(self, address: bytes) -> Optional[int]:
        index = int.from_bytes(address, "big") - self.start
        if 0 <= index < len(self.leases):
            return index
        return None

    def _free(self, index: int, now: float) -> bool:
        lease = self.leases[index]
        return lease is None or lease.expires <= now

    def _byMac(self, mac: bytes, now: float) -> Optional[int]:
        for index, lease in enumerate(self.leases):
            if lease is not None and lease.mac == mac and lease.expires > now:
                return index
        return None

    def _allocate(self, mac: bytes, now: float) -> Optional[int]:
        found = self._byMac(mac, now)
        if found is not None:
            return found
        # A client keeps its old (expired) address when nobody took it.
        for index, lease in enumerate(self.leases):
            if lease is not None and lease.mac == mac:
                return index
        for index in range(len(self.leases)):
            if self._free(index, now):
                return index
        return None

    def input(self, packet: bytes, ihl: int, frameSource: bytes) -> None:
        """
        A UDP datagram to port 67 (C{packet} is the whole IP packet).
        """
        payload = packet[ihl + 8 :]
        if len(payload) < BOOTP.size + 4:
            return
        (op, htype, hlen, _, xid, _, flags, ciaddr, _, _, giaddr, chaddr, _, _) = \
            BOOTP.unpack_from(payload)
        if op != 1 or htype != 1 or hlen != 6:
            return
        if payload[BOOTP.size : BOOTP.size + 4] != MAGIC:
            return
        mac = chaddr[:6]
        options = parseOptions(payload[BOOTP.size + 4 :])
        typeOption = options.get(OPT_TYPE, b"\0")[:1]
        kind = typeOption[0] if typeOption else 0
        now = self.context.now()
        if kind == 0:
            kind = DISCOVER  # plain BOOTP: answer like a DHCP offer
        index: Optional[int] = None
        if kind == DISCOVER:
            index = self._allocate(mac, now)
            if index is None:
                self.context.stats["dhcp_exhausted"] += 1
                return
            self.leases[index] = Lease(mac, now + 60.0) if self._free(index, now) \
                else self.leases[index]
            reply = OFFER
        elif kind == REQUEST:
            wanted = options.get(OPT_REQUESTED)
            if wanted is None or len(wanted) != 4:
                wanted = ciaddr if ciaddr != P.IP4_ANY else None
            if wanted is None:
                index = self._byMac(mac, now)
            else:
                index = self._index(wanted)
                held = None if index is None or self._free(index, now) else self.leases[index]
                if held is not None and held.mac != mac:
                    index = None
            if index is None:
                reply = NAK
            else:
                self.leases[index] = Lease(mac, now + self.config.leaseTime)
                self.context.link.learn(self.address(index), mac)
                reply = ACK
        elif kind == RELEASE:
            index = self._byMac(mac, now)
            if index is not None:
                self.leases[index] = None
            return
        elif kind == INFORM:
            reply = ACK
        else:
            return
        self._reply(reply, xid, mac, index, ciaddr if kind == INFORM else None)

    def _reply(self, kind: int, xid: int, mac: bytes, index: Optional[int],
               informAddress: Optional[bytes]) -> None:
        config = self.config
        context = self.context
        gateway = context.policy.host4
        yiaddr = self.address(index) if index is not None and kind != NAK else P.IP4_ANY
        body = BOOTP.pack(
            2, 1, 6, 0, xid, 0, 0, informAddress or P.IP4_ANY, yiaddr, gateway,
            P.IP4_ANY, mac + b"\0" * 10, b"",
            (config.bootfile or "").encode()[:127],
        )
        opts = bytearray(MAGIC)
        opts += bytes((OPT_TYPE, 1, kind))
        opts += _option(OPT_SERVER, gateway)
        if kind == NAK:
            opts += _option(OPT_MESSAGE, b"requested address not available")
        else:
            opts += _option(OPT_NETMASK, config.network.netmask.packed)
            opts += _option(OPT_ROUTER, gateway)
            opts += _option(OPT_DNS, context.policy.dns4)
            if informAddress is None:
                opts += _option(OPT_LEASE, struct.pack("!I", config.leaseTime))
            if config.hostname:
                opts += _option(OPT_HOSTNAME, config.hostname.encode()[:255])
            if config.domainName:
                opts += _option(OPT_DOMAIN, config.domainName.encode())
            if config.tftpServerName:
                opts += _option(OPT_TFTP_SERVER, config.tftpServerName.encode())
            if config.bootfile:
                opts += _option(OPT_BOOTFILE, config.bootfile.encode())
            if config.dnsSearch:
                opts += _option(OPT_SEARCH, encodeSearch(config.dnsSearch))
        opts.append(OPT_END)
        message = (body + bytes(opts)).ljust(BOOTP_LENGTH, b"\0")
        segment = P.udpSegment(gateway, P.IP4_BROADCAST, 67, 68, message)
        packet = P.IP4.pack(0x45, 0x10, 20 + len(segment), 0, 0, 64, P.PROTO_UDP, 0,
                            gateway, P.IP4_BROADCAST)
        from vdetwist.wire.checksum import checksum

        packet = packet[:10] + P.U16.pack(checksum(packet)) + packet[12:] + segment
        context.emit(P.ETH.pack(P.BROADCAST_MAC, P.mac4(gateway), P.ETH_IP) + packet)


# -- IPv6 ------------------------------------------------------------------

ND_RS = 133
ND_RA = 134
ND_NS = 135
ND_NA = 136
OPT_SOURCE_LL = 1
OPT_TARGET_LL = 2
OPT_PREFIX = 3
OPT_MTU = 5
OPT_RDNSS = 25

RA_MIN_INTERVAL = 200.0
RA_MAX_INTERVAL = 600.0
ROUTER_LIFETIME = 1800
VALID_LIFETIME = 86400
PREFERRED_LIFETIME = 14400

DHCP6_CLIENT_PORT = 546
DHCP6_SERVER_PORT = 547
DHCP6_INFO_REQUEST = 11
DHCP6_REPLY = 7
D6_CLIENTID = 1
D6_SERVERID = 2
D6_DNS = 23
D6_DOMAINS = 24
D6_BOOTFILE_URL = 59


def routerAdvertisement(context: "LayerContext") -> bytes:
    """
    The ICMPv6 router advertisement body (after type, code, checksum).
    """
    config = context.config
    body = bytearray(struct.pack("!BBHII", 64, 0, ROUTER_LIFETIME, 0, 0))
    body += bytes((OPT_SOURCE_LL, 1)) + context.link.routerMac6
    if config.mtuOption:
        body += struct.pack("!BBHI", OPT_MTU, 1, 0, config.mtu)
    body += struct.pack("!BBBBII4x", OPT_PREFIX, 4, config.network6.prefixlen, 0xC0,
                        VALID_LIFETIME, PREFERRED_LIFETIME)
    body += config.network6.network_address.packed
    if context.policy.resolvers.has6():
        body += struct.pack("!BBHI", OPT_RDNSS, 3, 0, ROUTER_LIFETIME) + context.policy.dns6
    return bytes(body)


class RouterAdvertiser:
    """
    Sends router advertisements in answer to solicitations and every
    200 to 600 seconds.
    """

    def __init__(self, context: "LayerContext") -> None:
        self.context = context
        self.timer = context.timer(self.periodic)
        self.random = random.Random()

    def start(self) -> None:
        self.timer.reset(self.context.now() + self.random.uniform(RA_MIN_INTERVAL, RA_MAX_INTERVAL))

    def periodic(self) -> None:
        self.send()
        self.start()

    def send(self) -> None:
        context = self.context
        message = P.icmp6(P.IP6_ROUTER_LL, P.IP6_ALL_NODES, ND_RA, 0, routerAdvertisement(context))
        packet = P.ipv6(P.IP6_ROUTER_LL, P.IP6_ALL_NODES, P.PROTO_ICMPV6, message, 255)
        context.link.send6(P.IP6_ALL_NODES, packet)


def parseOptions6(data: bytes) -> Optional[dict[int, bytes]]:
    options: dict[int, bytes] = {}
    i = 0
    while i + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, i)
        if i + 4 + length > len(data):
            return None
        options.setdefault(code, data[i + 4 : i + 4 + length])
        i += 4 + length
    return options


def dhcp6Reply(context: "LayerContext", source: bytes, sport: int, payload: bytes) -> None:
    """
    Answer a DHCPv6 information-request (anything else is ignored: there
    are no stateful leases).
    """
    if len(payload) < 4 or payload[0] != DHCP6_INFO_REQUEST:
        return
    options = parseOptions6(payload[4:])
    if options is None:
        return
    config = context.config
    out = bytearray(bytes((DHCP6_REPLY,)) + payload[1:4])
    if D6_CLIENTID in options:
        client = options[D6_CLIENTID]
        out += struct.pack("!HH", D6_CLIENTID, len(client)) + client
    duid = struct.pack("!HH", 3, 1) + context.link.routerMac6
    out += struct.pack("!HH", D6_SERVERID, len(duid)) + duid
    out += struct.pack("!HH", D6_DNS, 16) + context.policy.dns6
    if config.dnsSearch:
        domains = encodeSearch(config.dnsSearch)
        out += struct.pack("!HH", D6_DOMAINS, len(domains)) + domains
    if config.tftpServerName and config.bootfile:
        url = f"tftp://{config.tftpServerName}/{config.bootfile}".encode()
        out += struct.pack("!HH", D6_BOOTFILE_URL, len(url)) + url
    source6 = P.IP6_ROUTER_LL
    packet = P.udpPacket(source6, source, DHCP6_SERVER_PORT, sport, bytes(out))
    context.link.send6(source, packet)
