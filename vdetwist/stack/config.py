"""
A host stack's settings, and their parsing from the C{key=value} words of
a C{vdestack:} endpoint string, each error naming its key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from typing import Optional, Union

from vdetwist.slirp.config import MAX_MTU, MIN_MTU


class StackConfigError(ValueError):
    """
    A malformed setting; the message (one line) names the key.
    """


@dataclass(frozen=True)
class StackConfig:
    """
    One host: its MAC, IPv4 (static, DHCP or none), IPv6 (static
    addresses, and SLAAC from router advertisements unless C{slaac} is
    false), MTU and name servers (besides the ones DHCP gives).
    """

    mac: bytes
    ip4: Optional[IPv4Interface] = None
    dhcp: bool = False
    gateway4: Optional[IPv4Address] = None
    ip6: Optional[IPv6Interface] = None
    gateway6: Optional[IPv6Address] = None
    slaac: bool = True
    mtu: int = 1500
    dns: tuple[Union[IPv4Address, IPv6Address], ...] = ()


def randomMac() -> bytes:
    """
    A random locally administered unicast MAC.
    """
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)


def parseMac(text: str) -> bytes:
    parts = text.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != 6 or len(raw) != 6 or any(len(p) > 2 for p in parts):
        raise StackConfigError(f"mac={text!r} is not a MAC address (like 02:00:00:00:00:01)")
    if raw[0] & 1:
        raise StackConfigError(f"mac={text!r} is a multicast address: a host needs a unicast one")
    return raw


def parseStackOptions(ip: Optional[str] = None, ip6: Optional[str] = None,
                      gw: Optional[str] = None, mac: Optional[str] = None,
                      mtu: Optional[str] = None, dns: Optional[str] = None) -> StackConfig:
    """
    A L{StackConfig} from the endpoint words C{ip=A.B.C.D/N|dhcp},
    C{ip6=ADDR/N|slaac}, C{gw=} (an IPv4 and/or IPv6 gateway, comma
    separated), C{mac=}, C{mtu=}, C{dns=} (name servers, comma separated).

    @raise StackConfigError: one of them is malformed (the message names it).
    """
    ip4 = None
    dhcp = False
    if ip is not None:
        if ip == "dhcp":
            dhcp = True
        else:
            try:
                if "/" not in ip:
                    raise ValueError(ip)
                ip4 = IPv4Interface(ip)
            except ValueError:
                raise StackConfigError(
                    f"ip={ip!r} is not an IPv4 address with its prefix length"
                    " (A.B.C.D/N) or dhcp") from None
            if ip4.network.prefixlen >= 31 or ip4.ip in (ip4.network.network_address,
                                                          ip4.network.broadcast_address):
                raise StackConfigError(f"ip={ip!r} is not a host address of its network")
    address6 = None
    if ip6 is not None and ip6 != "slaac":
        try:
            if "/" not in ip6:
                raise ValueError(ip6)
            address6 = IPv6Interface(ip6)
        except ValueError:
            raise StackConfigError(
                f"ip6={ip6!r} is not an IPv6 address with its prefix length (ADDR/N)"
                " or slaac") from None
        if address6.ip.is_multicast or address6.ip.is_unspecified:
            raise StackConfigError(f"ip6={ip6!r} is not a unicast address")
    gateway4 = gateway6 = None
    for word in (gw.split(",") if gw else []):
        try:
            if ":" in word:
                gateway6 = IPv6Address(word)
            else:
                gateway4 = IPv4Address(word)
        except ValueError:
            raise StackConfigError(f"gw={gw!r}: {word!r} is not an IPv4 or IPv6 address") from None
    if gateway4 is not None and ip4 is not None and gateway4 not in ip4.network:
        raise StackConfigError(f"gw={gw!r} is not in ip={ip}'s network {ip4.network}")
    size = 1500
    if mtu is not None:
        try:
            size = int(mtu)
        except ValueError:
            size = -1
        if not MIN_MTU <= size <= MAX_MTU:
            raise StackConfigError(f"mtu={mtu!r} is not a number from {MIN_MTU} to {MAX_MTU}")
    servers = []
    for word in (dns.split(",") if dns is not None else []):
        try:
            servers.append(ip_address(word))
        except ValueError:
            raise StackConfigError(f"dns={dns!r}: {word!r} is not an IPv4 or IPv6 address") \
                from None
    return StackConfig(
        mac=randomMac() if mac is None else parseMac(mac),
        ip4=ip4, dhcp=dhcp, gateway4=gateway4, ip6=address6, gateway6=gateway6,
        mtu=size, dns=tuple(servers))
