"""
The host stack's TCP: slirp's engine (L{vdetwist.slirp.tcp}) turned round.

Slirp terminates a guest's connection and relays it to a host socket; a
host stack terminates a peer's connection and hands it to a local
application.  The connection machinery is the same (state, windows,
retransmission, congestion, reassembly, FIN/RST, TIME-WAIT, the SYN-flood
bounds of the table), so it is reused whole: the slirp "guest" is the peer
on the network, the slirp "host stream" is the application's side.  What
differs is only how connections start:

 - a peer's SYN is answered from the stack's own listeners
   (L{StackTcp.passiveOpen}: a SYN-ACK at once, or a RST for a closed port),
   not by connecting somewhere first;
 - the application opens connections itself (L{StackTcp.connect}), the
   active open slirp uses for its host forwards;
 - the application hears when the handshake completes
   (L{IStackStream.established}), so a SYN flood builds no protocols.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, cast

from vdetwist.slirp.hostapi import IStream
from vdetwist.slirp.tcp import (
    ACK, ESTABLISHED, M32, RST, SYN_RCVD, SYN_SENT, TcpConn, TcpLayer, seqDiff,
)
from vdetwist.wire.checksum import BytesLike

#: Linux's keepalive defaults (tcp_keepalive_time, _intvl, _probes): the
#: interval is kept in this proportion to the idle time when that is set.
KEEPALIVE_IDLE = 7200.0
KEEPALIVE_INTERVAL = 75.0
KEEPALIVE_PROBES = 9

#: The ephemeral ports of active opens (Linux's default range).
EPHEMERAL_LOW = 32768
EPHEMERAL_HIGH = 60999


class IStackStream(IStream):
    """
    The application end of a host stack connection: an L{IStream} (what the
    peer sends is C{write}ten to it, its FIN is C{writeEOF}, the end is
    C{close} or C{abort}) that also hears the handshake complete.
    """

    def established() -> None:
        """
        The three-way handshake completed: the connection carries data.
        """


#: What a listener makes for each connection a peer opens: given the
#: connection, its application end (or C{None}: refuse it with a RST).
Acceptor = Callable[["StackConn"], Optional[IStackStream]]


class StackConn(TcpConn):
    """
    A slirp connection whose application end hears the handshake complete.
    """

    stream: Optional[IStackStream] = None
    #: Why the stack gave the connection up: "refused" or "unreachable" (an
    #: ICMP error to its opening), "keepalive" (a dead peer).
    why: Optional[str] = None
    #: Keepalive (L{setKeepAlive}): its timer, when the peer was last
    #: heard from, the probes sent since.
    keepTimer: Any = None
    heard = 0.0
    probes = 0

    # -- Nagle (RFC 896), when the application turns TCP_NODELAY off ------

    def setNagle(self, enabled: bool) -> None:
        """
        Hold data short of a segment while some is unacknowledged (the
        instance's C{output} is swapped, so connections without it do no
        extra work per segment).
        """
        if enabled:
            self.output = self._nagleOutput  # type: ignore[method-assign]
        else:
            self.__dict__.pop("output", None)

    def _nagleOutput(self) -> None:
        sndBuf = self.sndBuf
        inFlight = seqDiff(self.sndNxt, self.sndUna)
        if inFlight > 0 and not sndBuf.finQueued and sndBuf.length - inFlight < self.mss:
            return  # the ACK of what is in flight sends it (with what joins it)
        TcpConn.output(self)

    # -- keepalive ---------------------------------------------------------

    def setKeepAlive(self, enabled: bool) -> None:
        """
        Probe an idle peer (after the layer's C{keepAliveIdle} seconds
        without a segment from it, every C{idle * 75 / 7200} seconds, as
        Linux's defaults); after L{KEEPALIVE_PROBES} unanswered ones the
        connection ends (C{why} "keepalive").  Heard segments are noted
        only while it is on (the instance's C{segment} is swapped).
        """
        if not enabled:
            self.__dict__.pop("segment", None)
            if self.keepTimer is not None:
                self.keepTimer.cancel()
            return
        self.segment = self._heardSegment  # type: ignore[method-assign]
        if self.keepTimer is None:
            self.keepTimer = self.context.timer(self._keepAlive)
        self.heard = self.context.now()
        self.probes = 0
        self.keepTimer.reset(self.heard + cast(StackTcp, self.layer).keepAliveIdle)

    def _heardSegment(self, seq: int, ack: int, flags: int, window: int, options: BytesLike,
                      payload: BytesLike) -> None:
        self.heard = self.context.now()
        self.probes = 0
        TcpConn.segment(self, seq, ack, flags, window, options, payload)

    def _keepAlive(self) -> None:
        if self.state != ESTABLISHED:
            return
        now = self.context.now()
        idle = cast(StackTcp, self.layer).keepAliveIdle
        interval = idle * KEEPALIVE_INTERVAL / KEEPALIVE_IDLE
        due = self.heard + idle
        if self.probes == 0 and now < due:
            self.keepTimer.reset(due)  # heard from since it was armed
            return
        if self.sndNxt != self.sndUna:
            # data in flight: retransmission watches the peer
            self.keepTimer.reset(now + interval)
            return
        stats = self.context.stats
        if self.probes >= KEEPALIVE_PROBES:
            stats["tcp_keepalive_dead"] += 1
            self.why = "keepalive"
            self._send(RST | ACK, self.sndNxt)
            self.hostSide.abort()
            self._remove()
            return
        stats["tcp_keepalive_probes"] += 1
        self._send(ACK, (self.sndUna - 1) & M32)  # an old byte: the peer ACKs it
        self.probes += 1
        self.keepTimer.reset(now + interval)

    def _remove(self) -> None:
        if self.keepTimer is not None:
            self.keepTimer.cancel()
        super()._remove()

    def _established(self) -> None:
        super()._established()
        stream = self.stream
        if stream is not None:
            stream.established()

    @property
    def local(self) -> tuple[bytes, int]:
        return self.remote, self.rport

    @property
    def peer(self) -> tuple[bytes, int]:
        return self.guest, self.gport


class StackTcp(TcpLayer):
    """
    The connection table of a host stack and its listeners.

    @ivar acceptors: the acceptors by (local address, port); the address
        C{None} listens on all of the stack's addresses.
    """

    def __init__(self, context) -> None:
        super().__init__(context)
        self.acceptors: dict[tuple[Optional[bytes], int], Acceptor] = {}
        #: Seconds of silence before keepalive probes (Linux's default).
        self.keepAliveIdle = KEEPALIVE_IDLE

    def addAcceptor(self, address: Optional[bytes], port: int, acceptor: Acceptor) -> None:
        """
        Accept connections to C{port} (of C{address}, or any).

        @raise OSError: the port is taken.
        """
        import errno

        if (address, port) in self.acceptors or (None, port) in self.acceptors or (
                address is None and any(p == port for _, p in self.acceptors)):
            raise OSError(errno.EADDRINUSE, f"TCP port {port} is already listened on")
        self.acceptors[(address, port)] = acceptor

    def removeAcceptor(self, address: Optional[bytes], port: int) -> None:
        self.acceptors.pop((address, port), None)

    def passiveOpen(self, key: tuple, seq: int, ack: int, flags: int, window: int,
                    options: bytes, length: int) -> None:
        peer, peerPort, local, port = key
        acceptor = self.acceptors.get((local, port)) or self.acceptors.get((None, port))
        stats = self.context.stats
        if acceptor is None:
            stats["tcp_closed_port"] += 1
            self._reset(peer, peerPort, local, port, seq, ack, flags, length)
            return
        if not self._admit(peer):
            # as a kernel with a full backlog: the SYN is dropped, the peer
            # retransmits it
            stats["tcp_refused"] += 1
            return
        conn = StackConn(self, key)
        stream = acceptor(conn)
        if stream is None:
            stats["tcp_refused"] += 1
            self._reset(peer, peerPort, local, port, seq, ack, flags, length)
            return
        self._add(conn)
        conn.guestSyn(seq, window, options)
        conn.stream = stream
        conn.connected(stream)

    def ephemeralPort(self, local: bytes, peer: bytes, peerPort: int) -> int:
        """
        A free local port for a connection from C{local} to the peer.

        @raise OSError: every ephemeral port is in use to that peer.
        """
        import errno

        random = self.context.random
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        start = random.randrange(span)
        for i in range(span):
            port = EPHEMERAL_LOW + (start + i) % span
            if (peer, peerPort, local, port) not in self.conns and \
                    (None, port) not in self.acceptors and (local, port) not in self.acceptors:
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free local TCP port")

    def connect(self, local: bytes, peer: bytes, peerPort: int,
                stream: IStackStream) -> StackConn:
        """
        Open a connection from C{local} to C{peer}:C{peerPort}: a SYN goes
        out; C{stream} hears C{established}, or C{abort} if it is refused
        (RST) or times out.

        @raise OSError: no local port is free.
        """
        port = self.ephemeralPort(local, peer, peerPort)
        conn = StackConn(self, (peer, peerPort, local, port))
        conn.stream = stream
        self._add(conn)
        conn.openToGuest(stream)
        return conn

    def icmpError(self, local: bytes, port: int, peer: bytes, peerPort: int, seq: int,
                  refused: bool) -> None:
        """
        An ICMP error quoting a segment we sent with sequence number
        C{seq}.  As Linux: a connection opening (its SYN or SYN-ACK quoted)
        is given up, the application told why (an active open fails with
        it); an established one only counts it (a soft error).
        """
        conn = self.conns.get((peer, peerPort, local, port))
        stats = self.context.stats
        if not isinstance(conn, StackConn) or seq != conn.iss or \
                conn.state not in (SYN_SENT, SYN_RCVD):
            stats["tcp_icmp_soft_errors"] += 1
            return
        stats["tcp_icmp_aborted"] += 1
        conn.why = "refused" if refused else "unreachable"
        conn.hostSide.abort()
        conn._remove()

    def established(self) -> list[StackConn]:
        """
        The connections carrying data (for status and tests).
        """
        return [c for c in self.conns.values()
                if isinstance(c, StackConn) and c.state == ESTABLISHED]
