"""
C{vde_plug -L}: note the IP addresses a user's machines take, once each, as
vdeplug4's iplog does (a trail for administrators of shared networks).
"""

from __future__ import annotations

import ipaddress
from typing import Callable


class IpLogger:
    """
    Inspects frames and reports each new source address, with its VLAN.

    Like the C tool, only plain headers are recognised: an IPv4 header whose
    first byte is exactly 0x45, an IPv6 one starting with 0x60, behind at
    most one 802.1Q tag.
    """

    def __init__(self, user: str, realAddress: str, emit: Callable[[str], None]) -> None:
        self.user = user
        self.realAddress = realAddress
        self.emit = emit
        self.seen: set[bytes] = set()

    def inspect(self, frame: bytes) -> None:
        ethertype = frame[12:14]
        offset, vlan = 14, 0
        if ethertype == b"\x81\x00" and len(frame) >= 18:
            vlan = int.from_bytes(frame[14:16], "big") & 0xFFF
            ethertype, offset = frame[16:18], 18
        if ethertype == b"\x08\x00" and frame[offset : offset + 1] == b"\x45":
            source, kind = frame[offset + 12 : offset + 16], "4"
        elif ethertype == b"\x86\xdd" and frame[offset : offset + 1] == b"\x60":
            source, kind = frame[offset + 8 : offset + 24], "6"
        else:
            return
        if len(source) not in (4, 16) or source in self.seen:
            return
        self.seen.add(source)
        self.emit(
            f"user {self.user} Real-IP {self.realAddress} has got VDE-IP{kind} "
            f"{ipaddress.ip_address(source)} on vlan {vlan}"
        )
