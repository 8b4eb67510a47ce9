"""
C{vxvde://[GROUP][/OPTION...]}: a distributed virtual Ethernet over UDP
multicast with unicast to learned peers, byte-compatible with libvdeplug4's
vxvde plugin.

Every member sends from one unicast socket (bound to an ephemeral port):
broadcast, multicast and frames to unknown MACs go to the group
(C{239.0.0.1:14789} by default, C{ff05:56de::1} with C{v6}), frames to a
learned MAC go straight to the member it came from.  A second socket,
bound to the group address itself with C{SO_REUSEADDR} (so several members
can share a host), receives the group's traffic; packets a member hears
from itself (multicast loopback stays on) are recognised by their source
and dropped.  On close a member sends the bare header to the group and the
others forget it.

The learning table is a L{MacTable} (a real mapping holding at most
C{hashsize} live entries; a full table floods rather than evicts) instead of
C's direct-mapped array, where two MACs that collide evict each other.  The
difference never shows on the wire beyond fewer flooded frames.

Sockets are made with the C{socket} module (IPv6 group membership, packet
info and the interface options are beyond Twisted's UDP API) and read by
small reactor readers that drain each socket in batches.

Options (C{v} means C{vni}): C{port} (14789), C{vni} (1, or the C{grp} gid;
a number, a group name, or empty for the effective gid), C{grp} (gid into
the VNI and the last 3 bytes of the group address), C{ttl} (1; IPv4 unicast
too), C{rcvbuf} (unicast socket, k/m/g/t suffixes), C{v4}/C{v6},
C{hashsize} (1024), C{expiretime} (128 s), C{if} (interface for the group),
C{bind} (local address of the unicast socket).
"""

from __future__ import annotations

import errno
import socket
import struct
from functools import partial
from typing import Any, Optional

from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist._transport.multicast import (
    joinGroup,
    openFirstGroupAddress,
    requireMulticast,
    scoped,
    setMulticastSending,
    setReceiveBuffer,
)
from vdetwist._transport.overlay import (
    VX_OPTIONS,
    VxBackendBase,
    VxPlugBase,
)
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.reference import Option, SchemeReference
from vdetwist.wire.vxlan import (
    DEFAULT_GROUP4,
    DEFAULT_GROUP6,
    DEFAULT_VNI,
    RECV_SIZE,
    VNI_MASK,
    VXVDE_PORT,
    Verdict,
    VxConfig,
    checkVxvde,
    commonOptions,
    gidOption,
)

#: The options, in C's order: a key names the first entry it abbreviates
#: (C{v} is C{vni}).
VXVDE_OPTIONS = (
    "port", "vni", "grp", "ttl", "rcvbuf", "v6", "v4",
    "hashsize", "expiretime", "if", "bind",
)

REFERENCE = SchemeReference(
    scheme="vxvde",
    synopsis="vxvde://[GROUP][/OPTION...]",
    description=(
        "A distributed Ethernet with no switch: every member sends broadcast, "
        "multicast and frames to unknown addresses to the multicast GROUP "
        f"(`{DEFAULT_GROUP4}`, or `{DEFAULT_GROUP6}` with `v6`), and frames to a "
        "learned address straight to that member. Members on one host may share a "
        "network; the peers may be C or Python."
    ),
    grammar="slash",
    table=VXVDE_OPTIONS,
    options=tuple(
        Option(o.name, o.meaning, o.value, str(VXVDE_PORT)) if o.name == "port" else o
        for o in (VX_OPTIONS[name] for name in VXVDE_OPTIONS)
    ),
    examples=(
        ("vxvde://", f"the default network: `{DEFAULT_GROUP4}`, port {VXVDE_PORT}, VNI {DEFAULT_VNI}"),
        ("vxvde://239.1.2.3/vni=42", "VNI 42 on group 239.1.2.3"),
        ("vxvde://ff15::3/port=12345/v=42", "an IPv6 group; `v` is short for `vni`"),
        ("vxvde://239.1.2.3/grp=kvm", "the network of group kvm (VNI and address from its gid)"),
    ),
    differences=(
        "The learning table holds at most `hashsize` live addresses and floods when "
        "full, where C's direct-mapped table lets two colliding addresses evict "
        "each other: fewer flooded frames, nothing else changes on the wire.",
        "A malformed number (`port=x`, `ttl=300`) is an error naming the option; an "
        "unknown group name in `vni`/`grp` is ignored as in C, with a warning.",
    ),
    manual="libvdeplug_vxvde",
)

#: Linux's IP_PKTINFO (missing from Python's socket module).
IP_PKTINFO = 8
_IN_PKTINFO = struct.Struct("i4s4s")
#: How often (seconds) the local IPv6 addresses may be re-read when a
#: multicast datagram from our own port comes from an unknown address.
_ADDRESS_REFRESH = 1.0


def parseVxvde(vnl) -> VxConfig:
    """
    Parse C{vxvde://[GROUP][/OPTION...]} (options C{port, vni, grp, ttl,
    rcvbuf, v6, v4, hashsize, expiretime, if, bind}; C{v} is C{vni}).

    C{vni} and C{grp} take a number, a group name or nothing (the effective
    gid); C{grp} also puts the gid into the group address (see
    L{vdetwist.wire.vxlan.applyGid}) and is the VNI unless C{vni} is given.
    Anything else is refused (C ignores it; see
    L{vdetwist.wire.vxlan.gidOption}).

    @raise VNLError: an unknown option or a malformed value.
    """
    _, options, values = commonOptions(vnl, VXVDE_OPTIONS, VXVDE_PORT)
    vni = DEFAULT_VNI
    gid = None
    if "grp" in options:
        gid = gidOption(vnl.text, "grp", options["grp"]) & VNI_MASK
        vni = gid
    if "vni" in options:
        # The header has 24 bits for it; C keeps the low 24 bits too.
        vni = gidOption(vnl.text, "vni", options["vni"]) & VNI_MASK
    if options.get("bind"):
        values["bind"] = options["bind"]
    return VxConfig(vni=vni, gid=gid, **values)


# ---------------------------------------------------------------------------
# Socket setup (blocking: name resolution; run in a thread)


class VxvdeSockets:
    """
    What L{openVxvdeSockets} made: the group (receive) socket, the unicast
    (send and receive) socket, the group's socket address and family.
    """

    def __init__(self, multicast, unicast, group, family) -> None:
        self.multicast = multicast
        self.unicast = unicast
        self.group = group
        self.family = family

    def close(self) -> None:
        self.multicast.close()
        self.unicast.close()


def _localAddress(config: VxConfig, family: int) -> tuple:
    if not config.bind:
        return ("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0)
    try:
        return socket.getaddrinfo(
            config.bind, 0, family, socket.SOCK_DGRAM, 0, socket.AI_PASSIVE
        )[0][4]
    except (OSError, UnicodeError) as e:
        raise OSError(errno.EADDRNOTAVAIL, f"bind={config.bind}: {e}") from None


def _makeVxvdeSockets(config: VxConfig, family: int, group: tuple, ifindex: int) -> VxvdeSockets:
    requireMulticast(family, group)
    group = scoped(family, group, ifindex)
    multicast = socket.socket(family, socket.SOCK_DGRAM)
    unicast = None
    try:
        multicast.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET:
            multicast.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        else:
            multicast.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        multicast.bind(group)
        joinGroup(multicast, family, group, ifindex)
        unicast = socket.socket(family, socket.SOCK_DGRAM)
        setReceiveBuffer(unicast, config.rcvbuf)
        unicast.bind(_localAddress(config, family))
        setMulticastSending(unicast, family, config.ttl, ifindex, unicastTTL=True)
    except BaseException:
        multicast.close()
        if unicast is not None:
            unicast.close()
        raise
    multicast.setblocking(False)
    unicast.setblocking(False)
    return VxvdeSockets(multicast, unicast, group, family)


def openVxvdeSockets(config: VxConfig, ifindex: Optional[int] = None) -> VxvdeSockets:
    """
    Resolve the group and make the two sockets for the first address that
    works.

    @param ifindex: the C{if} interface's index, if already looked up.
    @raise VdeError: nothing worked; the message says why.
    """
    return openFirstGroupAddress(
        config, ifindex, _makeVxvdeSockets,
        lambda failure: (
            f"cannot join group {config.group} port {config.port}: "
            f"{failure.strerror or failure}"
        ),
    )


# ---------------------------------------------------------------------------
# The plug


@implementer(IVdePlug)
class VxvdePlug(VxPlugBase):
    """
    One vxvde member; see the module docstring.

    @ivar ownPort: the unicast socket's port, the source port of everything
        this member sends.
    """

    def __init__(self, reactor, description: str, config: VxConfig, sockets: VxvdeSockets) -> None:
        super().__init__(reactor, description, config, sockets.group, sockets.unicast)
        self.family = sockets.family
        self.multicastSocket = sockets.multicast
        self.unicastSocket = sockets.unicast
        self.ownPort = sockets.unicast.getsockname()[1]
        if self.family == socket.AF_INET:
            ancillarySize = socket.CMSG_SPACE(_IN_PKTINFO.size)
        else:
            ancillarySize = socket.CMSG_SPACE(20)
        self.watch(sockets.multicast, partial(
            self.drain, sockets.multicast.recvmsg, (RECV_SIZE, ancillarySize), self.ownPort
        ))
        self.watch(sockets.unicast, partial(self.drain, sockets.unicast.recvfrom, (RECV_SIZE,)))
        self._localAddresses: frozenset[str] = frozenset()
        self._addressesRead = float("-inf")
        #: Goodbyes received.
        self.goodbyes = 0

    def check(self, datagram: bytes) -> Verdict:
        return checkVxvde(datagram, self.config.vni)

    def unusual(self, data: bytes, source: Any, now: float) -> None:
        verdict = self.check(data)
        if verdict is Verdict.GOODBYE:
            self.goodbyes += 1
            self.forget(source)
        elif verdict is not Verdict.FRAME:
            self.reject(data, source, verdict)

    def isOwn(self, source: tuple, ancillary: list) -> bool:
        """
        Whether a multicast datagram from our own port is our own, looped
        back: IPv4 compares the source with the local address the packet
        arrived for (IP_PKTINFO's C{ipi_spec_dst}), IPv6 with this host's
        addresses, as C does.
        """
        if self.family == socket.AF_INET:
            for level, kind, data in ancillary:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    _, specDst, _ = _IN_PKTINFO.unpack_from(data)
                    return socket.inet_aton(source[0]) == specDst
            return False
        host = source[0].partition("%")[0]
        if host in self._localAddresses:
            return True
        now = self._seconds()
        if now - self._addressesRead >= _ADDRESS_REFRESH:
            self._addressesRead = now
            self._localAddresses = localIPv6Addresses()
            return host in self._localAddresses
        return False

    def _release(self) -> None:
        # "Goodbye": the bare header to the group; peers forget us.
        try:
            self.unicastSocket.sendto(self.header, self.group)
        except OSError:
            pass
        super()._release()


def localIPv6Addresses() -> frozenset[str]:
    """
    This network namespace's IPv6 addresses (C uses getifaddrs), in
    C{inet_ntop} form.
    """
    found = set()
    try:
        with open("/proc/net/if_inet6") as table:
            for line in table:
                hexaddr = line.split(maxsplit=1)[0]
                found.add(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexaddr)))
    except (OSError, ValueError):
        pass
    return frozenset(found)


@implementer(IPlugin, IVdeBackend)
class VxvdeBackend(VxBackendBase):
    schemes = ("vxvde",)
    summary = "distributed Ethernet over UDP multicast with unicast to learned peers"
    references = (REFERENCE,)

    def parse(self, vnl) -> VxConfig:
        return parseVxvde(vnl)

    def openSockets(self, config: VxConfig, ifindex: int) -> VxvdeSockets:
        return openVxvdeSockets(config, ifindex)

    def makePlug(self, reactor, description: str, config: VxConfig, opened: VxvdeSockets) -> VxvdePlug:
        return VxvdePlug(reactor, description, config, opened)
