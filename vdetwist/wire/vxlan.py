"""
The VXLAN encapsulation shared by C{vxvde://} and C{vxlan://}, without I/O.

Both schemes carry one Ethernet frame per UDP datagram behind the 8-byte
VXLAN header (RFC 7348)::

    byte 0     flags, 0x08 (the "I" flag: the VNI is valid)
    bytes 1-3  reserved, 0
    bytes 4-6  VNI, 24 bits big-endian
    byte 7     reserved, 0

followed by the frame (destination MAC first, no FCS, no padding).  A
datagram that is the header alone is vxvde's "goodbye": its sender leaves.

This module builds and checks headers, parses the options the two schemes
share (the slash grammar of L{vdetwist.vnl}) into configurations, and
counts rejected datagrams with rate-limited reporting.  The backends in
L{vdetwist.backends.vxvde} and L{vdetwist.backends.vxlan} hold their option
tables, parse their own options and do the I/O.
"""

from __future__ import annotations

import enum
import grp
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable, Optional

from vdetwist.errors import VNLError
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE

#: Length of the VXLAN header.
HEADER_SIZE = 8
#: The "I" flag: the VNI field is valid.  The only flag vxvde and vxlan use.
FLAG_VNI = 0x08
#: VNIs are 24 bits.
VNI_MASK = 0xFFFFFF
#: Largest datagram accepted: header + the largest VDE frame (jumbo).
MAX_DATAGRAM = HEADER_SIZE + VDE_ETHBUFSIZE
#: Receive buffer size: one byte more than accepted, to notice oversize.
RECV_SIZE = MAX_DATAGRAM + 1

VXVDE_PORT = 14789
#: The IANA VXLAN port (the Linux kernel's default is the legacy 8472).
VXLAN_PORT = 4789
DEFAULT_GROUP4 = "239.0.0.1"
DEFAULT_GROUP6 = "ff05:56de::1"
DEFAULT_VNI = 1
DEFAULT_TTL = 1
DEFAULT_HASHSIZE = 1024
DEFAULT_EXPIRETIME = 128
#: vxvde and vxlan learn every MAC on this one VLAN (C: a constant 1).
LEARN_VLAN = 1


def packHeader(vni: int) -> bytes:
    """
    The 8-byte header for C{vni}: C{08 00 00 00 VV VV VV 00}.

    @raise ValueError: C{vni} does not fit in 24 bits.
    """
    if not 0 <= vni <= VNI_MASK:
        raise ValueError(f"VNI {vni} does not fit in 24 bits")
    return b"\x08\x00\x00\x00" + vni.to_bytes(3, "big") + b"\x00"


@dataclass(frozen=True)
class Header:
    """
    A parsed header.

    @ivar reserved: the four reserved bytes (1, 2, 3 and 7) in order.
    """

    flags: int
    vni: int
    reserved: bytes

    @property
    def valid(self) -> bool:
        """
        The I flag alone is set and the reserved bytes are zero.
        """
        return self.flags == FLAG_VNI and self.reserved == b"\0\0\0\0"


def parseHeader(datagram: bytes) -> Header:
    """
    Read the header at the start of C{datagram}.

    @raise ValueError: the datagram is shorter than a header.
    """
    if len(datagram) < HEADER_SIZE:
        raise ValueError(
            f"{len(datagram)}-byte datagram is shorter than the VXLAN header"
        )
    return Header(
        datagram[0],
        int.from_bytes(datagram[4:7], "big"),
        bytes(datagram[1:4]) + bytes(datagram[7:8]),
    )


class Verdict(enum.Enum):
    """
    What a received datagram is.  L{FRAME} and L{GOODBYE} are accepted,
    the others are rejected and counted.
    """

    FRAME = "frame"
    GOODBYE = "goodbye"
    TRUNCATED = "truncated"
    OVERSIZED = "oversized"
    BAD_FLAGS = "bad flags"
    BAD_RESERVED = "reserved bits set"
    WRONG_VNI = "wrong VNI"

    @property
    def accepted(self) -> bool:
        return self in (Verdict.FRAME, Verdict.GOODBYE)


def _headerFault(datagram: bytes, vni: int) -> Optional[Verdict]:
    h = parseHeader(datagram)
    if h.flags != FLAG_VNI:
        return Verdict.BAD_FLAGS
    if h.vni != vni:
        return Verdict.WRONG_VNI
    if h.reserved != b"\0\0\0\0":
        return Verdict.BAD_RESERVED
    return None


def checkVxvde(datagram: bytes, vni: int) -> Verdict:
    """
    Judge a datagram as C vxvde does: the header must be exactly the local
    one (flags 0x08, VNI, zero reserved bytes) and the frame longer than
    an Ethernet header (a bare 14-byte header is rejected too); a header
    alone is a goodbye.
    """
    size = len(datagram)
    if size < HEADER_SIZE:
        return Verdict.TRUNCATED
    if size > MAX_DATAGRAM:
        return Verdict.OVERSIZED
    fault = _headerFault(datagram, vni)
    if fault is not None:
        return fault
    if size == HEADER_SIZE:
        return Verdict.GOODBYE
    if size - HEADER_SIZE <= ETH_HDRLEN:
        return Verdict.TRUNCATED
    return Verdict.FRAME


def checkVxlan(datagram: bytes, vni: int) -> Verdict:
    """
    Judge a datagram as C vxlan does: flags exactly 0x08 and the VNI must
    match, the reserved bytes are ignored (RFC 7348 says receivers ignore
    them), the frame must be longer than 14 bytes.  There is no goodbye.
    """
    size = len(datagram)
    if size - HEADER_SIZE <= ETH_HDRLEN:
        return Verdict.TRUNCATED
    if size > MAX_DATAGRAM:
        return Verdict.OVERSIZED
    if datagram[0] != FLAG_VNI:
        return Verdict.BAD_FLAGS
    if int.from_bytes(datagram[4:7], "big") != vni:
        return Verdict.WRONG_VNI
    return Verdict.FRAME


class RejectCounter:
    """
    Counts rejected datagrams by L{Verdict} and reports them without
    flooding the log: the first rejection is reported at once, later ones
    are summed into one report per C{interval} seconds.

    @ivar counts: rejections by verdict since the plug opened.
    @ivar total: their sum.
    @param report: called with C{(counts, sample)}: the rejections by
        verdict since the last report, and a text describing the latest
        one (its source and verdict).
    """

    def __init__(
        self,
        clock,
        report: Callable[[dict[Verdict, int], str], None],
        interval: float = 10.0,
    ) -> None:
        self.clock = clock
        self.report = report
        self.interval = interval
        self.counts: dict[Verdict, int] = {}
        self.total = 0
        self._pending: dict[Verdict, int] = {}
        self._sample = ""
        self._timer: Any = None

    def reject(self, verdict: Verdict, source: Any) -> None:
        self.counts[verdict] = self.counts.get(verdict, 0) + 1
        self.total += 1
        self._pending[verdict] = self._pending.get(verdict, 0) + 1
        self._sample = f"{verdict.value} from {_formatAddress(source)}"
        if self._timer is None:
            self._flush()

    def _flush(self) -> None:
        self._timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self.report(pending, self._sample)
        self._timer = self.clock.callLater(self.interval, self._flush)

    def stop(self) -> None:
        """
        Report what is pending and stop the timer (the plug closes).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._pending:
            pending, self._pending = self._pending, {}
            self.report(pending, self._sample)


def _formatAddress(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in str(host) else f"{host}:{address[1]}"
    return str(address)


# ---------------------------------------------------------------------------
# Options

_INTEGER = re.compile(r"\s*[+-]?[0-9]+", re.ASCII)
_SIZE = re.compile(r"\s*\+?([0-9]+)([kKmMgGtT]?)", re.ASCII)
_SUFFIX = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def integerOption(vnl: str, key: str, value: str, low: int, high: int) -> int:
    """
    A decimal option value.  The C plugins read these with C{atoi}, which
    turns garbage (or nothing) into 0 and ignores trailing text; that would
    silently misread a typo, so anything but a number in range is refused.
    """
    if not _INTEGER.fullmatch(value):
        raise VNLError(vnl, key, f"{key}={value}: not a decimal number")
    number = int(value)
    if not low <= number <= high:
        raise VNLError(vnl, key, f"{key}={value}: out of range {low}..{high}")
    return number


def parseSize(vnl: str, key: str, value: str) -> int:
    """
    C{rcvbuf}: a byte count with an optional suffix k, m, g or t (either
    case, powers of 1024).
    """
    match = _SIZE.fullmatch(value)
    if match is None:
        raise VNLError(
            vnl, key, f"{key}={value}: expected a size such as 212992, 512k or 4M"
        )
    return int(match.group(1)) << _SUFFIX[match.group(2).lower()]


def gidFromText(value: str) -> Optional[int]:
    """
    libvdeplug4's reading of a vxvde C{vni}/C{grp} value: empty means the
    process' effective gid, a number is itself, anything else is a group
    name; C{None} for an unknown group (the option then counts as absent).
    """
    if value == "":
        return os.getegid()
    if value.isascii() and value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except (KeyError, UnicodeError, ValueError):
        return None


def _family(options: dict[str, str]) -> int:
    v4, v6 = "v4" in options, "v6" in options
    if v4 and not v6:
        return socket.AF_INET
    if v6 and not v4:
        return socket.AF_INET6
    return socket.AF_UNSPEC


@dataclass(frozen=True)
class VxConfig:
    """
    A parsed C{vxvde://} or C{vxlan://} VNL.

    @ivar group: the group as written (name or literal), defaults applied.
    @ivar family: C{AF_UNSPEC}, or the family C{v4}/C{v6} restrict to.
    @ivar gid: vxvde's C{grp}: overwrite the group's last 3 bytes with it.
    @ivar interface: the C{if} name, C{None} for the kernel's choice.
    @ivar bind: vxvde's local address for the unicast socket.
    """

    group: str
    port: int
    vni: int
    ttl: int = DEFAULT_TTL
    rcvbuf: Optional[int] = None
    family: int = socket.AF_UNSPEC
    hashsize: int = DEFAULT_HASHSIZE
    expiretime: int = DEFAULT_EXPIRETIME
    interface: Optional[str] = None
    gid: Optional[int] = None
    bind: Optional[str] = None

    @property
    def header(self) -> bytes:
        return packHeader(self.vni)


def commonOptions(vnl, table, defaultPort: int) -> tuple[str, dict[str, str], dict[str, Any]]:
    """
    Parse C{vnl} (a L{vdetwist.vnl.VNL}) as C{[GROUP][/OPTION...]} with a
    scheme's C{table}: the group, the options, and the L{VxConfig} fields of
    the options both schemes share.
    """
    text = vnl.text
    address, options = vnl.parseSlash(table)
    if not address:
        address = DEFAULT_GROUP6 if "v6" in options else DEFAULT_GROUP4
    values: dict[str, Any] = {"group": address, "family": _family(options)}
    values["port"] = (
        integerOption(text, "port", options["port"], 1, 65535)
        if "port" in options
        else defaultPort
    )
    if "ttl" in options:
        values["ttl"] = integerOption(text, "ttl", options["ttl"], 0, 255)
    if "rcvbuf" in options:
        values["rcvbuf"] = parseSize(text, "rcvbuf", options["rcvbuf"])
    if "hashsize" in options:
        values["hashsize"] = integerOption(text, "hashsize", options["hashsize"], 1, 1 << 24)
    if "expiretime" in options:
        expiretime = integerOption(text, "expiretime", options["expiretime"], -(1 << 31), 1 << 31)
        values["expiretime"] = expiretime if expiretime > 0 else DEFAULT_EXPIRETIME
    if options.get("if"):
        values["interface"] = options["if"]
    return address, options, values


def gidOption(vnl: str, key: str, value: str) -> int:
    """
    A vxvde C{vni}/C{grp} value (see L{gidFromText}).  C reads a value that
    is neither a number nor a group name as absent, so a typo silently
    joins the default network (VNI 1); here it is refused, as the other
    numeric options are.
    """
    gid = gidFromText(value)
    if gid is None:
        raise VNLError(
            vnl, key,
            f"{key}={value}: neither a number nor the name of a group; give a number,"
            f" a group name, or nothing (your own group)",
        )
    return gid


def applyGid(address: bytes, gid: int) -> bytes:
    """
    vxvde's C{grp}: the packed group address with its last 3 bytes replaced
    by the gid, big-endian (C{239.1.2.3} with gid 66000 -> C{239.1.1.208}).
    """
    return address[:-3] + (gid & VNI_MASK).to_bytes(3, "big")


def isMulticast(family: int, packed: bytes) -> bool:
    if family == socket.AF_INET:
        return packed[0] & 0xF0 == 0xE0
    return packed[0] == 0xFF

