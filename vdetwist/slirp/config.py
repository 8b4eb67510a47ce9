"""
The C{slirp://} options, their defaults (those of libslirp as configured by
libvdeplug_slirp) and the C{verbose} configuration table.

L{fromOptions} turns the option dictionary L{vdetwist.vnl.parseSlash}
returns into a L{SlirpConfig}; L{SlirpConfig.table} is the text C{verbose}
prints, line for line as the C plugin prints it.

Beyond libslirp's options, four limit the TCP connection table so that a
SYN flood (or one greedy guest) cannot lock the other guests out:
C{tcp_max=N} (connections at most, default 4096), C{tcp_per_guest=N} (per
guest address, default 1024), C{tcp_halfopen=N} (connections not yet
established, default 256: a new one evicts the oldest, whose guest simply
retransmits its SYN) and C{tcp_halfopen_timeout=SECONDS} (how long one may
stay half-open, default 20).  C{api=PATH} serves slirp4netns's API socket
(L{vdetwist.slirp.api}).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Mapping, Optional

from vdetwist.errors import VdeError

DEFAULT_ADDR = IPv4Address("10.0.2.2")
DEFAULT_PREFIX = 24
DEFAULT_DHCP = IPv4Address("10.0.2.15")
DEFAULT_DNS = IPv4Address("10.0.2.3")
#: The host part cmdfwd/unixfwd addresses default to (network + .2.4).
DEFAULT_FWD = IPv4Address("10.0.2.4")
DEFAULT_ADDR6 = IPv6Address("fd00::2")
DEFAULT_PREFIX6 = 64
DEFAULT_DNS6 = IPv6Address("fd00::3")
DEFAULT_MTU = 1500
MIN_MTU = 68
MAX_MTU = 65521
#: Where the DNS proxy finds the host's name servers unless told otherwise.
RESOLV_CONF = "/etc/resolv.conf"
#: Environment variable naming another resolv.conf (tests, containers).
RESOLV_CONF_ENV = "VDETWIST_RESOLV_CONF"
#: TCP connection limits (vdetwist options; libslirp has none): the table,
#: one guest address's share of it, the half-open budget (guest SYN seen,
#: not yet established) and how long a connection may stay half-open.
TCP_MAX = 4096
TCP_PER_GUEST = 1024
TCP_HALFOPEN = 256
TCP_HALFOPEN_TIMEOUT = 20
#: The largest value any of these options takes.
TCP_LIMIT_MAX = 1 << 20


@dataclass(frozen=True)
class HostForward:
    """
    A C{tcpfwd}/C{udpfwd} entry: the host listens on C{hostAddr:hostPort}
    and relays to C{guestAddr:guestPort} (C{0.0.0.0}: the first DHCP
    address).  Either address may be IPv6 (a vdetwist extension).
    """

    proto: str
    hostAddr: IPv4Address | IPv6Address
    hostPort: int
    guestAddr: IPv4Address | IPv6Address
    guestPort: int


@dataclass(frozen=True)
class GuestForward:
    """
    A C{unixfwd}/C{cmdfwd} entry: guest connections to C{addr:port} are
    relayed to the UNIX socket or command C{target}.
    """

    kind: str
    addr: IPv4Address
    port: int
    target: str


@dataclass
class SlirpConfig:
    """
    Everything the engine needs to know, defaults as in libslirp.
    """

    ipv4: bool = True
    ipv6: bool = True
    restricted: bool = False
    network: IPv4Network = IPv4Network("10.0.2.0/24")
    host: IPv4Address = DEFAULT_ADDR
    dhcpStart: IPv4Address = DEFAULT_DHCP
    dns: IPv4Address = DEFAULT_DNS
    network6: IPv6Network = IPv6Network("fd00::/64")
    host6: IPv6Address = DEFAULT_ADDR6
    dns6: IPv6Address = DEFAULT_DNS6
    hostname: Optional[str] = "slirp"
    tftpServerName: Optional[str] = None
    tftpPath: Optional[str] = None
    bootfile: Optional[str] = None
    dnsSearch: tuple[str, ...] = ()
    domainName: Optional[str] = None
    #: As given: 0 means the default (1500).
    mtuOption: int = 0
    mruOption: int = 0
    disableHostLoopback: bool = False
    verbose: bool = False
    hostForwards: list[HostForward] = field(default_factory=list)
    guestForwards: list[GuestForward] = field(default_factory=list)
    resolvConf: str = RESOLV_CONF
    #: Number of DHCP leases (libslirp: 16).
    leases: int = 16
    leaseTime: int = 86400
    #: C{tcp_max}, C{tcp_per_guest}, C{tcp_halfopen}: connections at most in
    #: the table, per guest address, and half-open (when full, a new one
    #: evicts the oldest half-open one), so that a SYN flood cannot lock
    #: the other guests out.
    tcpMax: int = TCP_MAX
    tcpPerGuest: int = TCP_PER_GUEST
    tcpHalfOpen: int = TCP_HALFOPEN
    #: C{tcp_halfopen_timeout}: seconds from a guest's SYN (or a forward's
    #: SYN to the guest) to giving the connection up if not established.
    tcpHalfOpenTimeout: float = TCP_HALFOPEN_TIMEOUT
    #: C{api}: the path of the API socket (L{vdetwist.slirp.api}), or C{None}.
    apiSocket: Optional[str] = None

    @property
    def mtu(self) -> int:
        return self.mtuOption or DEFAULT_MTU

    @property
    def mru(self) -> int:
        return self.mruOption or DEFAULT_MTU

    @property
    def netmask(self) -> IPv4Address:
        return self.network.netmask

    def mss4(self) -> int:
        return min(self.mtu, self.mru) - 40

    def mss6(self) -> int:
        return min(self.mtu, self.mru) - 60

    def table(self) -> str:
        """
        The configuration as C{verbose} prints it (one trailing newline).
        """

        def s(value: Optional[str]) -> str:
            return "(null)" if value is None else value

        lines = [
            "SLIRP configuration",
            "version       1",
            f"ipv4-enable   {int(self.ipv4)}",
            f"ipv4-network  {self.network.network_address}",
            f"ipv4-netmask  {self.network.netmask}",
            f"ipv4-host     {self.host}",
            f"ipv6-enabled  {int(self.ipv6)}",
            f"ipv6-prefix   {self.network6.network_address}",
            f"ipv6-preflen  {self.network6.prefixlen}",
            f"ipv6-host     {self.host6}",
            f"hostname      {s(self.hostname)}",
            f"tftp-servname {s(self.tftpServerName)}",
            f"tftp-path     {s(self.tftpPath)}",
            f"bootfile      {s(self.bootfile)}",
            f"dhcp-start    {self.dhcpStart}",
            f"ipv4-vDNS     {self.dns}",
            f"ipv6-vDNS     {self.dns6}",
            "vDNS-search   " + "".join(d + " " for d in self.dnsSearch),
            f"vdomainname   {s(self.domainName)}",
            f"MTU(0=def)    {self.mtuOption}",
            f"MRU(0=def)    {self.mruOption}",
            f"disable-lback {int(self.disableHostLoopback)}",
            "enable-emu    0",
        ]
        return "\n".join(lines) + "\n"


def forwardLine(forward, error: int = 0) -> str:
    """
    The line C{verbose} prints for a forward, ending with the C{strerror}
    text of setting it up (C{error} 0: C{Success}).
    """
    result = os.strerror(error)
    if isinstance(forward, HostForward):
        return (
            f"{forward.proto}fwd host   {forward.hostAddr} {forward.hostPort} "
            f"-> guest {forward.guestAddr} {forward.guestPort}: {result}\n"
        )
    if forward.kind == "unix":
        return (
            f"unixfwd       gw {forward.addr} {forward.port} -> host "
            f"{forward.target}: {result}\n"
        )
    return (
        f"cmdfwd        gw {forward.addr} {forward.port} -> "
        f"'{forward.target}': {result}\n"
    )


def _fail(vnl: str, message: str) -> VdeError:
    return VdeError(message, errno.EINVAL, vnl)


def _ipv4(text: str) -> Optional[IPv4Address]:
    """
    C{inet_pton}'s IPv4 dotted quad, or C{None}.
    """
    try:
        return IPv4Address(text)
    except ValueError:
        return None


def _port(text: str) -> Optional[int]:
    if not text.isdigit():
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def _rebase(network, address):
    """
    C{address}'s host part moved into C{network}.
    """
    hostmask = int(network.hostmask)
    return type(address)(int(network.network_address) | (int(address) & hostmask))


def _prefixed4(vnl: str, key: str, value: str) -> tuple[IPv4Address, int]:
    text, slash, prefix = value.partition("/")
    address = _ipv4(text)
    if address is None:
        raise _fail(vnl, f"{key}={value}: not an IPv4 address")
    if not slash:
        return address, DEFAULT_PREFIX
    if not prefix.isdigit() or not 0 < int(prefix) <= 30:
        raise _fail(vnl, f"{key}={value}: the prefix length must be 1 to 30")
    return address, int(prefix)


def _prefixed6(vnl: str, key: str, value: str) -> tuple[IPv6Address, int]:
    text, slash, prefix = value.partition("/")
    try:
        address = IPv6Address(text)
    except ValueError:
        raise _fail(vnl, f"{key}={value}: not an IPv6 address") from None
    if not slash:
        return address, DEFAULT_PREFIX6
    if not prefix.isdigit() or not 0 < int(prefix) <= 126:
        raise _fail(vnl, f"{key}={value}: the prefix length must be 1 to 126")
    return address, int(prefix)


def _mtu(vnl: str, key: str, value: str) -> int:
    if not value.isdigit():
        raise _fail(vnl, f"{key}={value}: not a number")
    number = int(value)
    if number and not MIN_MTU <= number <= MAX_MTU:
        raise _fail(vnl, f"{key}={value}: must be 0 (default) or {MIN_MTU} to {MAX_MTU}")
    return number


def _count(vnl: str, key: str, value: str, high: int = TCP_LIMIT_MAX) -> int:
    """
    The value of a numeric limit option, 1 to C{high}.
    """
    if not value.isdigit() or not 1 <= int(value) <= high:
        raise _fail(vnl, f"{key}={value}: must be a whole number from 1 to {high}")
    return int(value)


#: The TCP limit options: attribute, and the largest value.
_TCP_LIMITS = {
    "tcp_max": ("tcpMax", TCP_LIMIT_MAX),
    "tcp_per_guest": ("tcpPerGuest", TCP_LIMIT_MAX),
    "tcp_halfopen": ("tcpHalfOpen", TCP_LIMIT_MAX),
    "tcp_halfopen_timeout": ("tcpHalfOpenTimeout", 3600),
}


def _forwardAddress(text: str) -> Optional[IPv4Address | IPv6Address]:
    """
    A dotted quad, or an IPv6 address in brackets (C{[::1]}); else C{None}.
    """
    if text.startswith("[") and text.endswith("]"):
        try:
            return IPv6Address(text[1:-1])
        except ValueError:
            return None
    return _ipv4(text)


def _forwardFields(entry: str) -> list[str]:
    """
    C{entry} split at the colons outside brackets.
    """
    fields, current, depth = [], "", 0
    for c in entry:
        if c == ":" and not depth:
            fields.append(current)
            current = ""
            continue
        depth += {"[": 1, "]": -1}.get(c, 0)
        current += c
    return fields + [current]


#: The form of each entry of C{tcpfwd}/C{udpfwd} and C{unixfwd}/C{cmdfwd}.
HOST_FORWARD_FORM = "[HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT, e.g. 8080:10.0.2.15:80"
GUEST_FORWARD_FORM = "[SLIRPIP:]SLIRPPORT:TARGET, e.g. 5555:/tmp/x.sock"


def _badForward(vnl: str, key: str, entry: str, why: str, form: str) -> VdeError:
    return _fail(vnl, f"{key}={entry}: {why}; expected {form}")


def parseHostForwards(
    proto: str, value: str, vnl: str = "slirp://"
) -> list[HostForward]:
    """
    C{[HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT[,...]}.  A guest address of
    C{0.0.0.0} is kept as given (the engine maps it to the first DHCP
    address when it connects).

    Unlike libslirp's, either address may be IPv6 in brackets:
    C{[::]:2222:10.0.2.15:22} listens on the host's IPv6 (and, dual-stack,
    IPv4) addresses, C{2222:[fd00::5054:ff:fe12:3456]:22} reaches a guest
    over IPv6.

    Unlike the C plugin, which skips a malformed entry (or crashes on a
    three-field one), a malformed entry is refused: a forward the user asked
    for and silently does not get is worse than an error.  Empty entries
    (a trailing comma) are ignored.

    @raise VdeError: (EINVAL) naming the entry and the form expected.
    """
    key = proto + "fwd"
    found = []
    for entry in value.split(","):
        if not entry:
            continue
        fields = _forwardFields(entry)
        if len(fields) == 3:
            fields.insert(0, "")
        if len(fields) != 4:
            why = f"{len(fields)} fields, not 3 or 4"
            raise _badForward(vnl, key, entry, why, HOST_FORWARD_FORM)
        hostText, hostPort, guestText, guestPort = fields
        hostAddr = IPv4Address("0.0.0.0") if hostText == "" else _forwardAddress(hostText)
        guestAddr = _forwardAddress(guestText)
        if hostAddr is None or guestAddr is None:
            text = hostText if hostAddr is None else guestText
            why = f"{text!r} is not an IPv4 address or an IPv6 one in brackets"
            raise _badForward(vnl, key, entry, why, HOST_FORWARD_FORM)
        if guestAddr == IPv6Address("::"):
            raise _badForward(vnl, key, entry, "[::] is no guest address", HOST_FORWARD_FORM)
        hp, gp = _port(hostPort), _port(guestPort)
        if hp is None or gp is None:
            text = hostPort if hp is None else guestPort
            why = f"{text!r} is not a port (1 to 65535)"
            raise _badForward(vnl, key, entry, why, HOST_FORWARD_FORM)
        found.append(HostForward(proto, hostAddr, hp, guestAddr, gp))
    return found


def parseGuestForwards(
    kind: str, value: str, network: IPv4Network, vnl: str = "slirp://"
) -> list[GuestForward]:
    """
    C{[SLIRPIP:]SLIRPPORT:TARGET[,...]}; a missing or C{0.0.0.0} SLIRPIP is
    the network's C{.2.4} address.  A malformed entry is refused, as for
    L{parseHostForwards}.

    @raise VdeError: (EINVAL) naming the entry and the form expected.
    """
    key = kind + "fwd"
    found = []
    default = _rebase(network, DEFAULT_FWD)
    for entry in value.split(","):
        if not entry:
            continue
        first, sep, rest = entry.partition(":")
        address = _ipv4(first) if sep else None
        if address is not None:
            portText, sep, target = rest.partition(":")
        else:
            address, portText, target = default, first, rest
        port = _port(portText)
        if port is None:
            why = f"{portText!r} is not a port (1 to 65535)"
            raise _badForward(vnl, key, entry, why, GUEST_FORWARD_FORM)
        if not sep or not target:
            raise _badForward(vnl, key, entry, "no target", GUEST_FORWARD_FORM)
        if address == IPv4Address("0.0.0.0"):
            address = default
        found.append(GuestForward(kind, address, port, target))
    return found


#: The options of C{slirp://}, libvdeplug_slirp's in C's order (a key names
#: the first entry it abbreviates), then vdetwist's own, after C's so that no
#: abbreviation changes meaning.
SLIRP_OPTIONS = (
    "restricted", "v4", "v6", "host", "addr", "host6", "addr6", "hostname",
    "tftp_server_name", "tftp_path", "bootfile", "dhcp", "vnameserver",
    "vnameserver6", "vdnssearch", "vdomainname", "mtu", "mru",
    "disable_host_loopback", "tcpfwd", "udpfwd", "unixfwd", "cmdfwd",
    "verbose",
    "tcp_max", "tcp_per_guest", "tcp_halfopen", "tcp_halfopen_timeout", "api",
)


def fromOptions(
    options: Mapping[str, str],
    vnl: str = "slirp://",
    environ: Optional[Mapping[str, str]] = None,
) -> SlirpConfig:
    """
    Build the configuration from parsed C{slirp://} options (full names, as
    L{vdetwist.vnl.parseSlash} returns them).

    @raise VdeError: (EINVAL) for a value that cannot be used.
    """
    environ = os.environ if environ is None else environ
    config = SlirpConfig()
    config.resolvConf = environ.get(RESOLV_CONF_ENV) or RESOLV_CONF
    has = options.__contains__
    if has("v4") or has("v6"):
        config.ipv4 = has("v4")
        config.ipv6 = has("v6")
    config.restricted = has("restricted")
    config.disableHostLoopback = has("disable_host_loopback")
    config.verbose = has("verbose")
    # host= and addr= are one option; addr (later in the table) wins.
    for key in ("host", "addr"):
        if key in options:
            address, prefix = _prefixed4(vnl, key, options[key])
            network = IPv4Network((int(address), prefix), strict=False)
            if address in (network.network_address, network.broadcast_address):
                raise _fail(vnl, f"{key}={options[key]}: not a host address")
            config.host = address
            config.network = network
            config.dhcpStart = _rebase(network, DEFAULT_DHCP)
            config.dns = _rebase(network, DEFAULT_DNS)
    for key in ("host6", "addr6"):
        if key in options:
            address6, prefix = _prefixed6(vnl, key, options[key])
            network6 = IPv6Network((int(address6), prefix), strict=False)
            config.host6 = address6
            config.network6 = network6
            config.dns6 = _rebase(network6, DEFAULT_DNS6)
    if "hostname" in options:
        config.hostname = options["hostname"]
    for key, attr in (
        ("tftp_server_name", "tftpServerName"),
        ("tftp_path", "tftpPath"),
        ("bootfile", "bootfile"),
        ("vdomainname", "domainName"),
    ):
        if key in options:
            setattr(config, attr, options[key])
    if "dhcp" in options:
        dhcpStart = _ipv4(options["dhcp"])
        if dhcpStart is None or dhcpStart not in config.network:
            raise _fail(vnl, f"dhcp={options['dhcp']}: not an address in {config.network}")
        config.dhcpStart = dhcpStart
    if "vnameserver" in options:
        dns = _ipv4(options["vnameserver"])
        if dns is None or dns not in config.network:
            raise _fail(
                vnl, f"vnameserver={options['vnameserver']}: not an address in {config.network}"
            )
        config.dns = dns
    if "vnameserver6" in options:
        try:
            config.dns6 = IPv6Address(options["vnameserver6"])
        except ValueError:
            raise _fail(vnl, f"vnameserver6={options['vnameserver6']}: not an IPv6 address") from None
    if "vdnssearch" in options:
        config.dnsSearch = tuple(d for d in options["vdnssearch"].split(",") if d)
    for key, attr in (("mtu", "mtuOption"), ("mru", "mruOption")):
        if key in options:
            setattr(config, attr, _mtu(vnl, key, options[key]))
    for key, (attr, high) in _TCP_LIMITS.items():
        if key in options:
            setattr(config, attr, _count(vnl, key, options[key], high))
    if "api" in options:
        if not options["api"]:
            raise _fail(vnl, "api=: give the path of the API socket, e.g. api=/tmp/slirp.sock")
        config.apiSocket = options["api"]
    for proto in ("tcp", "udp"):
        key = proto + "fwd"
        if key in options:
            config.hostForwards += parseHostForwards(proto, options[key], vnl)
    for kind in ("unix", "cmd"):
        key = kind + "fwd"
        if key in options:
            config.guestForwards += parseGuestForwards(kind, options[key], config.network, vnl)
    return config


def fromVNL(vnl, environ: Optional[Mapping[str, str]] = None) -> SlirpConfig:
    """
    The configuration a C{slirp://} L{vdetwist.vnl.VNL} asks for.
    """
    _, options = vnl.parseSlash(SLIRP_OPTIONS)
    return fromOptions(options, vnl.text, environ)


__all__ = [
    "SLIRP_OPTIONS",
    "SlirpConfig",
    "HostForward",
    "GuestForward",
    "fromOptions",
    "fromVNL",
    "forwardLine",
]
