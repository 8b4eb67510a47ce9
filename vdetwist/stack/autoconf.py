"""
A host's address autoconfiguration: the DHCP client (RFC 2131: discover,
request, renewal at T1 from the server, rebinding at T2 by broadcast, a new
discovery when the lease ends) and SLAAC (RFC 4862: router solicitation,
addresses from the prefixes a router advertises, the default router).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Optional

from twisted.logger import Logger

from vdetwist.slirp import packets as P
from vdetwist.slirp.dhcp import (
    BOOTP, MAGIC, OPT_DNS, OPT_END, OPT_LEASE, OPT_NETMASK, OPT_REQUESTED, OPT_ROUTER, OPT_SERVER,
    OPT_SOURCE_LL, OPT_TYPE, ND_RS, parseOptions,
)
from vdetwist.slirp.ipv6 import ndOptions

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.stack.host import HostStack

log = Logger()

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK = 1, 2, 3, 4, 5, 6
#: Retransmission of discoveries and requests: doubling up to the last.
DHCP_RETRIES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: The lease assumed when the server names none, and the shortest renewal
#: interval (a server's 1-second lease does not make a storm).
DEFAULT_LEASE = 3600
MIN_RENEW = 1.0

INIT, SELECTING, REQUESTING, BOUND, RENEWING, REBINDING = range(6)
_STATES = ("INIT", "SELECTING", "REQUESTING", "BOUND", "RENEWING", "REBINDING")

#: Router solicitations sent (RFC 4861 10: 3, 4 s apart).
MAX_RTR_SOLICITATIONS = 3
RTR_SOLICITATION_INTERVAL = 4.0


def eui64(mac: bytes) -> bytes:
    """
    The modified EUI-64 interface identifier of C{mac} (RFC 4291 2.5.1).
    """
    return bytes((mac[0] ^ 0x02,)) + mac[1:3] + b"\xff\xfe" + mac[3:]


class DhcpClient:
    """
    The DHCP client of a L{HostStack}.

    @ivar lease: the leased address, its prefix length, router, server, and
        when it was granted and for how long (C{None} while unbound).
    """

    def __init__(self, stack: "HostStack") -> None:
        self.stack = stack
        self.state = INIT
        self.xid = 0
        self.tries = 0
        self.timer = stack.timer(self._timeout)
        self.offered: Optional[bytes] = None
        self.server: Optional[bytes] = None
        self.lease: Optional[tuple[bytes, int, Optional[bytes], bytes, float, int]] = None

    @property
    def stateName(self) -> str:
        return _STATES[self.state]

    def start(self) -> None:
        self._discover()

    def _discover(self) -> None:
        self.state = SELECTING
        self.xid = self.stack.random.getrandbits(32)
        self.tries = 0
        self.offered = self.server = None
        self._send(DISCOVER)

    def _send(self, kind: int) -> None:
        """
        Send a message of the current exchange and arm its retransmission.
        """
        stack = self.stack
        options = bytes((OPT_TYPE, 1, kind))
        ciaddr = P.IP4_ANY
        if self.state == REQUESTING:
            assert self.offered is not None and self.server is not None
            options += bytes((OPT_REQUESTED, 4)) + self.offered + bytes((OPT_SERVER, 4)) + \
                self.server
        elif self.state in (RENEWING, REBINDING):
            assert stack.address4 is not None
            ciaddr = stack.address4
        options += bytes((55, 4, OPT_NETMASK, OPT_ROUTER, OPT_DNS, OPT_LEASE, OPT_END))
        message = BOOTP.pack(1, 1, 6, 0, self.xid, 0, 0, ciaddr, P.IP4_ANY, P.IP4_ANY,
                             P.IP4_ANY, stack.mac + b"\0" * 10, b"", b"") + MAGIC + options
        if self.state == RENEWING and self.server is not None:
            stack.sendUDP(ciaddr, 68, self.server, 67, message)
        else:
            segment = P.udpSegment(ciaddr, P.IP4_BROADCAST, 68, 67, message)
            stack.link.send4(P.IP4_BROADCAST,
                             P.ipv4(ciaddr, P.IP4_BROADCAST, P.PROTO_UDP, segment))
        stack.stats["dhcp_out"] += 1
        if self.state in (SELECTING, REQUESTING):
            delay = DHCP_RETRIES[min(self.tries, len(DHCP_RETRIES) - 1)]
            self.tries += 1
            self.timer.reset(stack.now() + delay)

    def _timeout(self) -> None:
        state = self.state
        stack = self.stack
        if state == SELECTING:
            self._send(DISCOVER)
        elif state == REQUESTING:
            if self.tries >= len(DHCP_RETRIES):
                self._discover()
            else:
                self._send(REQUEST)
        elif self.lease is not None:
            _, _, _, _, granted, length = self.lease
            now = stack.now()
            if now >= granted + length:
                log.info("vdestack: DHCP lease of {address} ended", address=stack.address4)
                self.lease = None
                stack.setAddress4(None)
                self._discover()
                return
            t2 = granted + length * 7 / 8
            self.state = REBINDING if now >= t2 else RENEWING
            self._send(REQUEST)
            # ask again halfway to the next deadline (RFC 2131 4.4.5)
            deadline = granted + length if now >= t2 else t2
            self.timer.reset(now + max(MIN_RENEW, (deadline - now) / 2))

    def input(self, data: bytes) -> None:
        """
        A datagram to port 68.
        """
        stack = self.stack
        if len(data) < BOOTP.size + 4 or data[BOOTP.size : BOOTP.size + 4] != MAGIC:
            stack.stats["dhcp_bad"] += 1
            return
        fields = BOOTP.unpack_from(data)
        op, xid, yiaddr, chaddr = fields[0], fields[4], fields[8], fields[11]
        if op != 2 or xid != self.xid or chaddr[:6] != stack.mac:
            return
        options = parseOptions(data[BOOTP.size + 4 :])
        kind = options.get(OPT_TYPE, b"\0")[0]
        server = options.get(OPT_SERVER)
        if kind == OFFER and self.state == SELECTING and server is not None and len(server) == 4:
            self.offered, self.server = yiaddr, server
            self.state = REQUESTING
            self.tries = 0
            self._send(REQUEST)
        elif kind == ACK and self.state in (REQUESTING, RENEWING, REBINDING):
            self._bound(yiaddr, options, server)
        elif kind == NAK and self.state in (REQUESTING, RENEWING, REBINDING):
            log.info("vdestack: DHCP server refused {address}", address=yiaddr)
            self.lease = None
            stack.setAddress4(None)
            self._discover()

    def _bound(self, address: bytes, options: dict, server: Optional[bytes]) -> None:
        stack = self.stack
        mask = options.get(OPT_NETMASK, b"\xff\xff\xff\0")
        prefix = bin(struct.unpack("!I", mask.ljust(4, b"\0")[:4])[0]).count("1")
        router = options.get(OPT_ROUTER)
        gateway = router[:4] if router is not None and len(router) >= 4 else None
        lease = options.get(OPT_LEASE)
        length = struct.unpack("!I", lease)[0] if lease is not None and len(lease) == 4 else \
            DEFAULT_LEASE
        now = stack.now()
        if server is not None and len(server) == 4:
            self.server = server
        assert self.server is not None
        self.lease = (address, prefix, gateway, self.server, now, length)
        dns = options.get(OPT_DNS, b"")
        stack.dnsServers4 = [dns[i : i + 4] for i in range(0, len(dns) - 3, 4)]
        self.state = BOUND
        self.tries = 0
        if (stack.address4, stack.gateway4) != (address, gateway):
            stack.setAddress4(address, prefix, gateway)
            log.info("vdestack: DHCP lease of {address} for {seconds} s",
                     address=address, seconds=length)
        self.timer.reset(now + max(MIN_RENEW, length / 2))
        stack.stats["dhcp_bound"] += 1


class Slaac:
    """
    Router solicitation and the addresses, prefixes and default router of
    the advertisements.
    """

    def __init__(self, stack: "HostStack") -> None:
        self.stack = stack
        self.sent = 0
        self.timer = stack.timer(self._solicit)
        self.expiry = stack.timer(self._expire)

    def start(self) -> None:
        self._solicit()

    def _solicit(self) -> None:
        stack = self.stack
        if self.sent >= MAX_RTR_SOLICITATIONS or stack.gateway6 is not None:
            return
        self.sent += 1
        source = stack.linkLocal
        body = b"\0\0\0\0" + bytes((OPT_SOURCE_LL, 1)) + stack.mac
        message = P.icmp6(source, P.IP6_ALL_ROUTERS, ND_RS, 0, body)
        stack.link.send6(P.IP6_ALL_ROUTERS,
                         P.ipv6(source, P.IP6_ALL_ROUTERS, P.PROTO_ICMPV6, message, 255))
        self.timer.reset(stack.now() + RTR_SOLICITATION_INTERVAL)

    def advertised(self, packet: bytes, frameSource: bytes) -> None:
        """
        A router advertisement (hop limit, code and checksum checked).
        """
        stack = self.stack
        source = packet[8:24]
        if len(packet) < 56 or source[:2] != b"\xfe\x80":
            stack.stats["ra_bad"] += 1
            return
        options = ndOptions(packet[56:])
        if options is None:
            stack.stats["ra_bad"] += 1
            return
        now = stack.now()
        lifetime = (packet[46] << 8) | packet[47]
        mac = options.get(OPT_SOURCE_LL)
        stack.link.learn(source, mac[:6] if mac is not None and len(mac) >= 6 else frameSource)
        if lifetime:
            stack.gateway6, stack.gateway6Expires = source, now + lifetime
        elif stack.gateway6 == source:
            stack.gateway6 = stack.gateway6Expires = None
        # ndOptions keeps the first of each kind: the prefixes are read here
        i, data = 56, packet
        while i + 2 <= len(data) and data[i + 1]:
            kind, length = data[i], data[i + 1] * 8
            if kind == 3 and length == 32 and i + 32 <= len(data):
                prefixLength, flags = data[i + 2], data[i + 3]
                valid = struct.unpack_from("!I", data, i + 4)[0]
                prefix = data[i + 16 : i + 32]
                if prefixLength == 64 and prefix[:2] != b"\xfe\x80" and valid:
                    expires = None if valid == 0xFFFFFFFF else now + valid
                    if flags & 0x80:
                        stack.prefixes6[prefix[:8]] = expires
                    if flags & 0x40:
                        stack.addAddress6(prefix[:8] + eui64(stack.mac), expires)
            i += length
        self._armExpiry()

    def _armExpiry(self) -> None:
        stack = self.stack
        deadlines = [t for t in (*stack.addresses6.values(), *stack.prefixes6.values(),
                                 stack.gateway6Expires) if t is not None]
        if deadlines:
            self.expiry.reset(min(deadlines))

    def _expire(self) -> None:
        """
        Forget the addresses, prefixes and router whose lifetimes ended.
        """
        stack = self.stack
        now = stack.now()
        for address, expires in list(stack.addresses6.items()):
            if expires is not None and expires <= now:
                stack.removeAddress6(address)
        for prefix, expires in list(stack.prefixes6.items()):
            if expires is not None and expires <= now:
                del stack.prefixes6[prefix]
        if stack.gateway6Expires is not None and stack.gateway6Expires <= now:
            stack.gateway6 = stack.gateway6Expires = None
        self._armExpiry()
