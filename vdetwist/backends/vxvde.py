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
from typing import Any, Callable, Optional, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.dgram import READ_BATCH
from vdetwist.errors import PlugLost, VdeError
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.node.mactable import MacTable
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, ReaderPlug
from vdetwist.reference import Option, SchemeReference
from vdetwist.vnl import VXVDE_OPTIONS
from vdetwist.vxlanwire import (
    DEFAULT_EXPIRETIME,
    DEFAULT_GROUP4,
    DEFAULT_GROUP6,
    DEFAULT_HASHSIZE,
    DEFAULT_TTL,
    DEFAULT_VNI,
    HEADER_SIZE,
    LEARN_VLAN,
    VXVDE_PORT,
    MAX_DATAGRAM,
    RECV_SIZE,
    RejectCounter,
    Verdict,
    VxConfig,
    applyGid,
    checkVxvde,
    isMulticast,
    parseVxvde,
)

log = Logger()

#: The options vxvde and vxlan share, by name (vxlan's page picks its own).
VX_OPTIONS = {
    "port": Option("port", "UDP port of the group (and, for vxlan, of every peer).", "PORT"),
    "vni": Option(
        "vni",
        "Virtual network identifier (24 bits): a number, a group name (its gid) "
        "or empty (the effective gid).",
        "VNI",
        f"{DEFAULT_VNI}, or the `grp` gid",
    ),
    "grp": Option(
        "grp",
        "A group name or number: its gid is the VNI (unless `vni` is given) and "
        "replaces the last 3 bytes of the group address.",
        "GROUP",
    ),
    "ttl": Option("ttl", "Time to live of the datagrams sent.", "TTL", str(DEFAULT_TTL)),
    "rcvbuf": Option(
        "rcvbuf", "Receive buffer (vxvde: of the unicast socket), with an optional k, m, g or t suffix.", "SIZE",
        "the system's",
    ),
    "v6": Option("v6", "IPv6 only (the default group becomes the IPv6 one)."),
    "v4": Option("v4", "IPv4 only."),
    "hashsize": Option(
        "hashsize", "Most peers' MAC addresses remembered.", "N", str(DEFAULT_HASHSIZE)
    ),
    "expiretime": Option(
        "expiretime", "Seconds a learned MAC address lasts (0 or less: the default).",
        "SECONDS", str(DEFAULT_EXPIRETIME),
    ),
    "if": Option("if", "The interface multicast goes through.", "IFNAME", "the kernel's choice"),
    "bind": Option("bind", "Local address of the unicast socket.", "ADDRESS", "any"),
}

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
_INT_MAX = (1 << 31) - 1
#: The smallest datagram carrying a frame vxvde accepts (> 14 bytes).
_MIN_FRAME_DATAGRAM = HEADER_SIZE + ETH_HDRLEN + 1
#: How often (seconds) the local IPv6 addresses may be re-read when a
#: multicast datagram from our own port comes from an unknown address.
_ADDRESS_REFRESH = 1.0

_Opened = TypeVar("_Opened")


# ---------------------------------------------------------------------------
# Socket setup (blocking: name resolution; run in a thread)


def interfaceIndex(config: VxConfig, description: str = "") -> int:
    """
    The index of the C{if} interface; 0 (any) when absent or unknown, as in
    C (an unknown name is logged).
    """
    if not config.interface:
        return 0
    try:
        return socket.if_nametoindex(config.interface)
    except OSError:
        log.warn(
            "{vnl}: no interface {name!r}: the kernel chooses one",
            vnl=description or config.group, name=config.interface,
        )
        return 0


def groupAddresses(config: VxConfig) -> list[tuple[int, Any]]:
    """
    The candidate C{(family, sockaddr)} of the group, in getaddrinfo order,
    with C{grp}'s gid applied.

    @raise VdeError: the group does not resolve.
    """
    try:
        infos = socket.getaddrinfo(
            config.group, config.port, config.family, socket.SOCK_DGRAM
        )
    except (OSError, UnicodeError) as e:
        raise VdeError(
            f"cannot resolve group {config.group!r}: {e}", errno.EINVAL
        ) from None
    result = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        if config.gid is not None:
            packed = applyGid(socket.inet_pton(family, sockaddr[0]), config.gid)
            sockaddr = (socket.inet_ntop(family, packed),) + tuple(sockaddr[1:])
        result.append((family, tuple(sockaddr)))
    return result


def _scoped(family: int, sockaddr: tuple, ifindex: int) -> tuple:
    """
    An IPv6 link-local group needs a scope: the C{if} interface's.
    """
    if family == socket.AF_INET6 and ifindex and not sockaddr[3]:
        packed = socket.inet_pton(family, sockaddr[0])
        if packed[1] & 0x0F in (1, 2):
            return (sockaddr[0], sockaddr[1], sockaddr[2], ifindex)
    return sockaddr


def requireMulticast(family: int, sockaddr: tuple) -> None:
    if not isMulticast(family, socket.inet_pton(family, sockaddr[0])):
        raise OSError(errno.EINVAL, f"{sockaddr[0]} is not a multicast address")


def joinGroup(sock: socket.socket, family: int, sockaddr: tuple, ifindex: int) -> None:
    packed = socket.inet_pton(family, sockaddr[0])
    if family == socket.AF_INET:
        mreqn = struct.pack("4s4si", packed, b"\0\0\0\0", ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    else:
        mreq = struct.pack("16sI", packed, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)


def setMulticastSending(
    sock: socket.socket, family: int, ttl: int, ifindex: int, unicastTTL: bool
) -> None:
    """
    TTL (hop limit) and outgoing interface of a socket that sends to the
    group; with C{unicastTTL} the IPv4 unicast TTL too (vxvde's C does).
    """
    if family == socket.AF_INET:
        if unicastTTL:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        if ifindex:
            mreqn = struct.pack("4s4si", b"\0" * 4, b"\0" * 4, ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        if ifindex:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)


def setReceiveBuffer(sock: socket.socket, size: Optional[int]) -> None:
    if size is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, min(size, _INT_MAX))


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
    group = _scoped(family, group, ifindex)
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


def openFirstGroupAddress(
    config: VxConfig,
    ifindex: Optional[int],
    make: Callable[[VxConfig, int, tuple, int], _Opened],
    failed: Callable[[OSError], str],
) -> _Opened:
    """
    C{make(config, family, group, ifindex)} for each of the group's
    addresses until one works, as the C plugins do.

    @param ifindex: the C{if} interface's index, if already looked up.
    @param failed: the message for the last failure, when none worked.
    @raise VdeError: nothing worked.
    """
    if ifindex is None:
        ifindex = interfaceIndex(config)
    failure: Optional[OSError] = None
    for family, group in groupAddresses(config):
        try:
            return make(config, family, group, ifindex)
        except OSError as e:
            failure = e
    if failure is None:
        raise VdeError(f"group {config.group!r}: no IPv4 or IPv6 address", errno.EINVAL)
    raise VdeError(failed(failure), failure.errno or errno.EIO)


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


@implementer(IReadDescriptor)
class SocketReader:
    """
    Lets the reactor watch one of a plug's sockets: readiness calls
    C{handler}, which drains the socket.
    """

    def __init__(self, plug: "VxPlugBase", sock: socket.socket, handler: Callable[[], None]) -> None:
        self.plug = plug
        self.socket = sock
        self.doRead = handler
        self._fileno = sock.fileno()

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return self.plug.description

    def connectionLost(self, reason: Failure) -> None:
        self._fileno = -1
        self.plug._lost(
            Failure(PlugLost(f"{self.plug.description}: {reason.getErrorMessage()}"))
        )


def _isTransient(error: OSError) -> bool:
    """
    Errors a datagram socket reports for an earlier send (ICMP errors) or a
    passing condition; they do not end the plug.
    """
    return error.errno in (
        errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
        errno.EAGAIN, errno.EINTR, errno.ENOBUFS, errno.ENOMEM,
    )


class VxPlugBase(ReaderPlug):
    """
    What vxvde and vxlan plugs share: the learning table, sending to the
    group or a learned peer, pausing, counting rejected datagrams.

    @ivar macs: the L{MacTable} of learned peers (MAC -> socket address,
        all on VLAN 1: vxvde/vxlan do not separate VLANs).
    @ivar rejected: the L{RejectCounter} of bad datagrams.
    @ivar sendSocket: the socket every datagram leaves from.
    """

    def __init__(self, reactor, description: str, config: VxConfig, group: tuple, sendSocket: socket.socket) -> None:
        super().__init__(reactor, description)
        self.config = config
        self.group = group
        self.sendSocket = sendSocket
        self.header = config.header
        self.macs = MacTable(
            reactor, hashsize=config.hashsize, expiretime=config.expiretime
        )
        self._learned = self.macs.vlanDict(LEARN_VLAN)
        self._seconds = reactor.seconds
        self.rejected = RejectCounter(reactor, self._reportRejects)
        self.readers: list[SocketReader] = []

    # -- sending

    def destination(self, frame: bytes) -> tuple:
        """
        Where C{frame} goes: its learned peer, or the group.
        """
        if frame[0] & 1:
            return self.group
        entry = self._learned.get(frame[:6])
        if entry is None or self._seconds() - entry.seen > self.config.expiretime:
            return self.group
        return entry.port

    def send(self, frame: bytes) -> None:
        size = len(frame)
        # (C discards short frames too, though its vde_send reports them
        # sent: here they are counted as what they are, dropped.)
        if not ETH_HDRLEN <= size <= VDE_ETHBUFSIZE or self.closed:
            self.stats.dropped += 1
            return
        try:
            self.sendSocket.sendto(self.header + frame, self.destination(frame))
        except OSError:
            # A full socket buffer (EAGAIN) or an unreachable peer: lost,
            # as on a wire.
            self.stats.dropped += 1
        else:
            self.stats.sent += 1

    # -- receiving

    def learn(self, mac: bytes, address: tuple, now: float) -> None:
        entry = self._learned.get(mac)
        if entry is not None and entry.port == address:
            entry.seen = now
        else:
            self.macs.learn(mac, LEARN_VLAN, address, now)

    def forget(self, address: tuple) -> int:
        """
        Forget every MAC learned from C{address} (its member said goodbye).
        """
        forgotten = 0
        for entry in self.macs.entries():
            if entry.port == address:
                forgotten += self.macs.purgePort(entry.port)
        return forgotten

    def reject(self, datagram: bytes, source: Any, verdict: Optional[Verdict] = None) -> None:
        if verdict is None:
            verdict = self.check(datagram)
        self.rejected.reject(verdict, source)

    def check(self, datagram: bytes) -> Verdict:
        raise NotImplementedError()

    def _reportRejects(self, counts: dict[Verdict, int], sample: str) -> None:
        detail = ", ".join(f"{n} {verdict.value}" for verdict, n in counts.items())
        first = self.rejected.total == sum(counts.values())
        log.warn(
            "{plug}: rejected {total} datagram(s) ({detail}); latest: {sample}{more}",
            plug=self.description,
            total=sum(counts.values()),
            detail=detail,
            sample=sample,
            more=(
                f" (more are summed up every {self.rejected.interval:g} s)"
                if first else ""
            ),
        )

    def _receiveFailed(self, error: OSError) -> None:
        """
        A socket error that is not a passing one ends the plug, with the
        reason (not a traceback in the reactor).
        """
        self._lost(
            Failure(PlugLost(f"{self.description}: receive failed: {error.strerror or error}"))
        )

    # -- flow control and lifetime

    def _release(self) -> None:
        for reader in self.readers:
            self.reactor.removeReader(reader)
            reader.socket.close()
        self.rejected.stop()


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
        self.readers = [
            SocketReader(self, sockets.multicast, self._readMulticast),
            SocketReader(self, sockets.unicast, self._readUnicast),
        ]
        if self.family == socket.AF_INET:
            self._ancillarySize = socket.CMSG_SPACE(_IN_PKTINFO.size)
        else:
            self._ancillarySize = socket.CMSG_SPACE(20)
        self._localAddresses: frozenset[str] = frozenset()
        self._addressesRead = float("-inf")
        #: Own multicast packets heard back and dropped.
        self.ownDropped = 0
        #: Goodbyes received.
        self.goodbyes = 0

    def check(self, datagram: bytes) -> Verdict:
        return checkVxvde(datagram, self.config.vni)

    def _readUnicast(self) -> None:
        recvfrom = self.unicastSocket.recvfrom
        header = self.header
        stats = self.stats
        now = self._seconds()
        for _ in range(READ_BATCH):
            try:
                data, source = recvfrom(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                if _isTransient(e):
                    continue
                self._receiveFailed(e)
                return
            size = len(data)
            if _MIN_FRAME_DATAGRAM <= size <= MAX_DATAGRAM and data.startswith(header):
                self.learn(data[14:20], source, now)
                stats.received += 1
                self.receiver.frameReceived(data[8:])
                if self.paused or self.closed:
                    return
            else:
                self._unusual(data, source)
                if self.closed:
                    return

    def _readMulticast(self) -> None:
        recvmsg = self.multicastSocket.recvmsg
        header = self.header
        stats = self.stats
        ownPort = self.ownPort
        ancillarySize = self._ancillarySize
        now = self._seconds()
        for _ in range(READ_BATCH):
            try:
                data, ancillary, flags, source = recvmsg(RECV_SIZE, ancillarySize)
            except BlockingIOError:
                return
            except OSError as e:
                if _isTransient(e):
                    continue
                self._receiveFailed(e)
                return
            size = len(data)
            if _MIN_FRAME_DATAGRAM <= size <= MAX_DATAGRAM and data.startswith(header):
                if source[1] == ownPort and self._isOwn(source, ancillary):
                    self.ownDropped += 1
                    continue
                self.learn(data[14:20], source, now)
                stats.received += 1
                self.receiver.frameReceived(data[8:])
                if self.paused or self.closed:
                    return
            else:
                self._unusual(data, source)
                if self.closed:
                    return

    def _unusual(self, data: bytes, source: Any) -> None:
        verdict = self.check(data)
        if verdict is Verdict.GOODBYE:
            self.goodbyes += 1
            self.forget(source)
        elif verdict is not Verdict.FRAME:
            self.reject(data, source, verdict)

    def _isOwn(self, source: tuple, ancillary: list) -> bool:
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


class VxBackendBase:
    """
    Opens vxvde and vxlan plugs: the VNL is parsed at once, so syntax errors
    are not deferred, and the sockets are made in the reactor's thread pool,
    as name resolution blocks.
    """

    def parse(self, vnl) -> VxConfig:
        raise NotImplementedError()

    def openSockets(self, config: VxConfig, ifindex: int) -> Any:
        raise NotImplementedError()

    def makePlug(self, reactor, description: str, config: VxConfig, opened: Any) -> VxPlugBase:
        raise NotImplementedError()

    def open(self, reactor, vnl, description, args, registry) -> Deferred:
        config = self.parse(vnl)
        ifindex = interfaceIndex(config, vnl.text)
        opening = deferToThreadPool(
            reactor, reactor.getThreadPool(), self.openSockets, config, ifindex
        )
        return opening.addCallback(
            lambda opened: self.makePlug(reactor, vnl.text, config, opened)
        )


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
