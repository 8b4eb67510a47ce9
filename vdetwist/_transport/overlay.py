"""
What the vxvde and vxlan plugs share: their common options' reference
text, the learning plug that sends to the group or a learned peer
(L{VxPlugBase}), and the backend that opens the sockets in a thread
(L{VxBackendBase}).
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from vdetwist._transport.fdplug import HARMLESS, READ_BATCH, FdReader
from vdetwist._transport.multicast import interfaceIndex
from vdetwist.errors import PlugLost
from vdetwist.node.mactable import MacTable
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, ReaderPlug
from vdetwist.reference import Option
from vdetwist.wire.vxlan import (
    DEFAULT_EXPIRETIME,
    DEFAULT_HASHSIZE,
    DEFAULT_TTL,
    DEFAULT_VNI,
    HEADER_SIZE,
    LEARN_VLAN,
    MAX_DATAGRAM,
    RejectCounter,
    Verdict,
    VxConfig,
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

#: The smallest datagram carrying a frame vxvde and vxlan accept (> 14 bytes).
MIN_FRAME_DATAGRAM = HEADER_SIZE + ETH_HDRLEN + 1


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
        self.readers: list[FdReader] = []
        #: Own multicast datagrams heard back and dropped.
        self.ownDropped = 0
        self._sockets: list[socket.socket] = []

    def watch(self, sock: socket.socket, handler: Callable[[], None]) -> None:
        """
        Read C{sock} with C{handler} (which drains it) while the plug
        receives; the socket is closed with the plug.
        """
        self._sockets.append(sock)
        self.readers.append(FdReader(sock.fileno(), handler, self.description, self._readerLost))

    def _readerLost(self, reason: Failure) -> None:
        self._lost(Failure(PlugLost(f"{self.description}: {reason.getErrorMessage()}")))

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

    def drain(self, receive: Callable[..., tuple], args: tuple, ownPort: int = -1) -> None:
        """
        Read one socket's datagrams, a batch at most: each carrying this
        plug's exact header and a frame is learned from and delivered, any
        other goes to L{unusual}.

        The one read loop of every socket of every vx plug (so its cost per
        frame is paid once): C{receive(*args)} is the socket's C{recvfrom}
        (C{(data, source)}) or C{recvmsg} (C{(data, ancillary, flags,
        source)}); a frame datagram from C{ownPort} is passed with its
        ancillary data to L{isOwn}, and dropped if it is this plug's own.
        """
        header = self.header
        stats = self.stats
        learn = self.learn
        now = self._seconds()
        for _ in range(READ_BATCH):
            try:
                got = receive(*args)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in HARMLESS:
                    continue
                self._receiveFailed(e)
                return
            data = got[0]
            source = got[-1]
            if MIN_FRAME_DATAGRAM <= len(data) <= MAX_DATAGRAM and data.startswith(header):
                if source[1] == ownPort and self.isOwn(source, got[1]):
                    self.ownDropped += 1
                    continue
                learn(data[14:20], source, now)
                stats.received += 1
                self.receiver.frameReceived(data[8:])
            else:
                self.unusual(data, source, now)
            if self.paused or self.closed:
                return

    def unusual(self, data: bytes, source: Any, now: float) -> None:
        """
        A datagram that is not a frame with this plug's exact header.
        """
        raise NotImplementedError()

    def isOwn(self, source: Any, ancillary: list) -> bool:
        """
        Whether a datagram from the plug's own port is its own, looped back.
        """
        return False

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
        for sock in self._sockets:
            sock.close()
        self.rejected.stop()


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
