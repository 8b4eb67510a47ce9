"""
The Internet checksum (RFC 1071), computed the fast way: a big-endian
integer is congruent, modulo 0xffff, to the sum of its 16-bit words
(2^16 = 1 mod 0xffff), so C{int.from_bytes(data) % 0xffff} is the folded
one's-complement sum, up to the representation of zero.
"""

from __future__ import annotations

import struct

_PSEUDO4 = struct.Struct("!4s4sxBH")
_PSEUDO6 = struct.Struct("!16s16sI3xB")


def residue(data: bytes) -> int:
    """
    The one's-complement sum of C{data}'s 16-bit words modulo 0xffff (an
    odd last byte is padded with zero).
    """
    if len(data) & 1:
        return (int.from_bytes(data, "big") << 8) % 0xFFFF
    return int.from_bytes(data, "big") % 0xFFFF


def finish(total: int) -> int:
    """
    The checksum field for a one's-complement sum (of any size): never 0,
    so it is also valid for UDP.
    """
    return 0xFFFF - total % 0xFFFF


def checksum(data: bytes, initial: int = 0) -> int:
    """
    The value to put in a checksum field (zeroed in C{data}); C{initial} is
    the residue of a pseudo-header.
    """
    return finish(residue(data) + initial)


def verify(data: bytes, initial: int = 0) -> bool:
    """
    Whether C{data}, checksum field included, sums to all ones.
    """
    return (residue(data) + initial) % 0xFFFF == 0


def pseudo4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """
    The residue of the IPv4 pseudo-header.
    """
    return int.from_bytes(_PSEUDO4.pack(src, dst, proto, length), "big") % 0xFFFF


def pseudo6(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """
    The residue of the IPv6 pseudo-header.
    """
    return int.from_bytes(_PSEUDO6.pack(src, dst, length, proto), "big") % 0xFFFF
