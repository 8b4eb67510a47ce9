"""
The guest-facing TCP: the engine terminates each guest connection and
relays its bytes to a host stream (a TCP connection, a UNIX socket, a
command), and the other way round.

What it does (RFC 793/9293 with RFC 7323 window scaling, RFC 6298
retransmission timer, RFC 5681 congestion control with fast retransmit and
NewReno-style recovery, RFC 1122 persist timer):

 - a guest SYN starts the host connect; the SYN-ACK goes out only when it
   succeeds (refused: RST; unreachable: ICMP unreachable); a retransmitted
   SYN meanwhile is ignored, so there is never a second host connection;
 - MSS from the MTU, honouring the guest's (smaller) MSS; window scaling
   when the guest offers it (and only after the SYN);
 - the advertised window is the free space of a bounded receive buffer that
   fills only while the host stream says it is full (producer/consumer), so
   a host peer that never reads stalls the guest instead of growing memory;
 - host data waits in a bounded send buffer (a deque of chunks and an
   offset); reading from the host pauses while it is full, so a guest that
   holds a zero window for hours costs a bounded amount of memory;
 - half-close both ways; RST both ways;
 - a SYN flood cannot lock the other guests out: connections not yet
   established have their own budget (a new one evicts the oldest) and
   deadline, and each guest address a share of the table (the config's
   C{tcp_*} limits);
 - nothing refers back to a connection strongly, so a closed one frees by
   reference counting alone (no garbage collection needed).
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional

from zope.interface import implementer

from vdetwist.slirp import packets as P
from vdetwist.wire.checksum import BytesLike, pseudo4, pseudo6, residue
from vdetwist.slirp.hostapi import IPendingConnect, IStream, IStreamHandler

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext

M32 = 0xFFFFFFFF

#: Bytes buffered per direction per connection.
RCVBUF = 256 * 1024
SNDBUF = 256 * 1024
#: The send buffer of a connection to an offloading guest link: more in
#: flight, as 64 KiB super-segments leave at a rate a 256 KiB pipe cannot
#: keep full.
SNDBUF_OFFLOAD = 1024 * 1024
#: Our window scale: a shift that lets RCVBUF fit 16 bits.
RCV_SHIFT = max(0, RCVBUF.bit_length() - 16)
INITIAL_RTO = 1.0
MIN_RTO = 0.2
MAX_RTO = 60.0
MAX_RETRIES = 15
MAX_SYN_RETRIES = 6
TIME_WAIT = 2.0
INITIAL_WINDOW_SEGMENTS = 10
MAX_OOO_SEGMENTS = 512
#: The most payload in one segment to guests that take TSO super-frames:
#: the IP packet stays within 64 KiB (a 16-bit length).
MAX_SUPER_PAYLOAD = 0xFFFF - 60

CONNECTING, SYN_SENT, SYN_RCVD, ESTABLISHED, CLOSED = range(5)
_STATE_NAMES = ("CONNECTING", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSED")

FIN, SYN, RST, PSH, ACK = P.TCP_FIN, P.TCP_SYN, P.TCP_RST, P.TCP_PSH, P.TCP_ACK

_ISS_STEP = 0x9E3779B1


def seqLT(a: int, b: int) -> bool:
    return 0 < ((b - a) & M32) < 0x80000000


def seqLE(a: int, b: int) -> bool:
    return ((b - a) & M32) < 0x80000000


def seqDiff(a: int, b: int) -> int:
    """
    C{a - b} in sequence space, as a signed number.
    """
    d = (a - b) & M32
    return d - 0x100000000 if d >= 0x80000000 else d


def parseOptions(data: bytes) -> tuple[Optional[int], Optional[int]]:
    """
    The MSS and window-scale options; malformed option lists end parsing
    (what was read before counts).
    """
    mss = wscale = None
    i, end = 0, len(data)
    while i < end:
        kind = data[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end:
            break
        length = data[i + 1]
        if length < 2 or i + length > end:
            break
        if kind == 2 and length == 4:
            mss = (data[i + 2] << 8) | data[i + 3]
        elif kind == 3 and length == 3:
            wscale = min(data[i + 2], 14)
        i += length
    return mss, wscale


def _weakTimeout(conn: "TcpConn") -> Callable[[], None]:
    """
    The callback of C{conn}'s timer: the engine's timer heap must not keep
    the connection alive (nor make a cycle with it).
    """
    ref = weakref.ref(conn)

    def fire() -> None:
        target = ref()
        if target is not None:
            target._timeout()

    return fire


# -- the parts of a connection -------------------------------------------------
#
# None of them refers back to its connection, so a closed connection frees by
# reference counting alone.  The sequence numbers both directions share
# (sndUna, sndNxt, sndMax, sndWnd, rcvNxt) and the state stay on the
# connection itself: every segment reads them, and one attribute lookup is
# cheaper than two.


class SendBuffer:
    """
    The host's bytes on their way to the guest, from the first one the
    guest has not acknowledged (C{sndUna}) on: the chunks as the host
    stream gave them and the bytes of the first already acknowledged, so
    nothing is copied until a segment is cut.  Bounded by C{limit} (the
    host stream's reading pauses beyond).  Also where the end of the host
    stream stands: queued (the host sent EOF), sent as our FIN,
    acknowledged.
    """

    __slots__ = ("chunks", "offset", "length", "limit", "finQueued", "finSent", "finAcked")

    def __init__(self, limit: int = SNDBUF) -> None:
        self.chunks: deque[bytes] = deque()
        #: the bytes held at most (the host stream's reading pauses beyond)
        self.limit = limit
        self.offset = 0
        self.length = 0
        self.finQueued = False
        self.finSent = False
        self.finAcked = False

    def append(self, data: bytes) -> None:
        self.chunks.append(data)
        self.length += len(data)

    def peek(self, offset: int, length: int, view: bool = False) -> BytesLike:
        """
        C{length} bytes from C{offset} (relative to C{sndUna}); with
        C{view}, within one chunk a C{memoryview} of it (no copy: a
        super-segment is copied once, into its frame).
        """
        offset += self.offset
        parts = []
        for chunk in self.chunks:
            size = len(chunk)
            if offset >= size:
                offset -= size
                continue
            piece = (memoryview(chunk) if view else chunk)[offset : offset + length]
            parts.append(piece)
            length -= len(piece)
            offset = 0
            if length <= 0:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def drop(self, count: int) -> None:
        """
        Forget the first C{count} bytes (acknowledged).
        """
        self.length -= count
        chunks = self.chunks
        count += self.offset
        while chunks and count >= len(chunks[0]):
            count -= len(chunks.popleft())
        self.offset = count


class Retransmission:
    """
    The retransmission timeout of RFC 6298 (smoothed round-trip time and
    its variation, from one timed segment at a time) and the backoffs: the
    retransmissions in a row without progress, and the zero-window probes
    in a row (RFC 1122 persist timer).
    """

    __slots__ = ("rto", "srtt", "rttvar", "rtSeq", "rtTime", "retries", "persistBackoff")

    def __init__(self) -> None:
        self.rto = INITIAL_RTO
        self.srtt: Optional[float] = None
        self.rttvar = 0.0
        #: the end of the segment being timed, and when it was sent
        self.rtSeq: Optional[int] = None
        self.rtTime = 0.0
        self.retries = 0
        self.persistBackoff = 0

    def sample(self, r: float) -> None:
        """
        A round-trip time C{r} was measured.
        """
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.rto = min(MAX_RTO, max(MIN_RTO, self.srtt + max(0.001, 4 * self.rttvar)))

    def backoff(self) -> None:
        """
        The timer expired: double the timeout (Karn: stop timing).
        """
        self.retries += 1
        self.rto = min(MAX_RTO, self.rto * 2)
        self.rtSeq = None

    def persistDelay(self) -> float:
        return min(MAX_RTO, max(self.rto, MIN_RTO) * (1 << min(self.persistBackoff, 10)))


class Congestion:
    """
    RFC 5681 congestion control with NewReno recovery (RFC 6582): the
    congestion window, the slow-start threshold, the duplicate ACKs seen,
    and the recovery point while recovering from a fast retransmit.
    """

    __slots__ = ("cwnd", "ssthresh", "dupAcks", "recover")

    def __init__(self) -> None:
        self.cwnd = 0
        self.ssthresh = 1 << 30
        self.dupAcks = 0
        self.recover: Optional[int] = None

    def start(self, mss: int) -> None:
        self.cwnd = INITIAL_WINDOW_SEGMENTS * mss

    def grow(self, acked: int, mss: int, burst: int) -> None:
        """
        New data acknowledged outside recovery: slow start or congestion
        avoidance.  An ACK counts for at most C{burst} bytes (the largest
        segment sent: one MSS, or a super-segment of many, which the guest
        acknowledges at once), so super-segments grow the window as fast
        as the MSS-sized segments they stand for.
        """
        self.dupAcks = 0
        cwnd = self.cwnd
        if cwnd < self.ssthresh:
            cwnd += min(acked, burst)
        else:
            cwnd += max(mss * min(max(acked, mss), burst) // cwnd, 1)
        self.cwnd = cwnd if cwnd <= 64 * SNDBUF else 64 * SNDBUF

    def fastRetransmit(self, flight: int, mss: int, recover: int) -> None:
        """
        Three duplicate ACKs: halve, and recover until C{recover} is acked.
        """
        self.ssthresh = max(flight // 2, 2 * mss)
        self.cwnd = self.ssthresh + 3 * mss
        self.recover = recover

    def partialAck(self, acked: int, mss: int) -> None:
        """
        In recovery, an ACK short of the recovery point (the next hole).
        """
        self.cwnd = max(self.cwnd - acked + mss, mss)
        self.dupAcks = 0

    def recovered(self, mss: int) -> None:
        self.recover = None
        self.cwnd = max(self.ssthresh, 2 * mss)
        self.dupAcks = 0

    def timedOut(self, flight: int, mss: int) -> None:
        """
        The retransmission timer expired: back to slow start from one
        segment.
        """
        self.ssthresh = max(flight // 2, 2 * mss)
        self.cwnd = mss
        self.recover = None
        self.dupAcks = 0


class Reassembly:
    """
    Guest segments that came in beyond a hole, kept (sorted by sequence
    number, C{[seq, data, fin]}) until the hole fills; bounded by
    L{MAX_OOO_SEGMENTS} segments and L{RCVBUF} bytes.
    """

    __slots__ = ("segments", "bytes")

    def __init__(self) -> None:
        self.segments: list[list] = []
        self.bytes = 0

    def store(self, seq: int, payload: bytes, fin: bool, rcvNxt: int) -> bool:
        """
        Keep a segment starting after C{rcvNxt}; C{False} if there was no
        room for it.
        """
        segments = self.segments
        if len(segments) >= MAX_OOO_SEGMENTS or self.bytes + len(payload) > RCVBUF:
            return False
        rel = seqDiff(seq, rcvNxt)
        i = 0
        while i < len(segments) and seqDiff(segments[i][0], rcvNxt) < rel:
            i += 1
        if i < len(segments) and segments[i][0] == seq and len(segments[i][1]) >= len(payload) \
                and (segments[i][2] or not fin):
            return True  # duplicate
        segments.insert(i, [seq, payload, fin])
        self.bytes += len(payload)
        return True

    def drain(self, rcvNxt: int) -> tuple[list[bytes], bool]:
        """
        The bytes now in order after C{rcvNxt}, and whether the guest's FIN
        follows them (then whatever else was kept is dropped).
        """
        segments = self.segments
        pieces = []
        fin = False
        while segments:
            seq, data, segFin = segments[0]
            offset = seqDiff(seq, rcvNxt)
            if offset > 0:
                break
            segments.pop(0)
            self.bytes -= len(data)
            if -offset < len(data):
                piece = data[-offset:]
                pieces.append(piece)
                rcvNxt = (rcvNxt + len(piece)) & M32
                if segFin:
                    fin = True
                    break
            elif -offset == len(data) and segFin:
                fin = True
                break
        if fin:
            segments.clear()
            self.bytes = 0
        return pieces, fin


class HostSide:
    """
    The host end of a connection: its pending connect, then its stream;
    the guest's bytes the stream has not taken yet (while it says it is
    full; bounded by the window we advertise, which shrinks by as much), an
    EOF waiting behind them; and whether we paused reading the stream (our
    send buffer is full).
    """

    __slots__ = ("stream", "pending", "lost", "queue", "queued", "paused", "eofPending",
                 "readPaused")

    def __init__(self) -> None:
        self.stream: Optional[IStream] = None
        #: The host connect while it is pending.
        self.pending: Optional[IPendingConnect] = None
        #: The stream is gone (its connectionLost came).
        self.lost = False
        self.queue: deque[BytesLike] = deque()
        self.queued = 0
        #: The stream asked us to stop writing (pauseWriting).
        self.paused = False
        self.eofPending = False
        self.readPaused = False

    def write(self, data: BytesLike) -> None:
        stream = self.stream
        if stream is None:
            return
        if self.paused or self.queue:
            self.queue.append(data)
            self.queued += len(data)
        else:
            stream.write(data)

    def writeEOF(self) -> None:
        if self.queue:
            self.eofPending = True
        elif self.stream is not None:
            self.stream.writeEOF()

    def drain(self, close: bool) -> None:
        """
        The stream takes bytes again: write what waited, then the EOF (and
        with C{close}, close the stream after it).
        """
        stream = self.stream
        assert stream is not None, "drained only while the stream is there"
        queue = self.queue
        while queue and not self.paused:
            data = queue.popleft()
            self.queued -= len(data)
            stream.write(data)
        if not queue and self.eofPending:
            self.eofPending = False
            stream.writeEOF()
            if close:
                stream.close()

    def discard(self) -> None:
        """
        Forget the bytes that can no longer be written.
        """
        self.queue.clear()
        self.queued = 0

    def pauseReading(self) -> None:
        if not self.readPaused and self.stream is not None:
            self.readPaused = True
            self.stream.pauseReading()

    def resumeReading(self) -> None:
        if self.readPaused and self.stream is not None:
            self.readPaused = False
            self.stream.resumeReading()

    def abort(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.abort()

    def release(self, clean: bool) -> None:
        """
        The connection is gone: cancel a pending connect, close the stream
        (abort it unless C{clean}).
        """
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()
        stream, self.stream = self.stream, None
        if stream is not None:
            if clean:
                stream.close()
            else:
                stream.abort()


@implementer(IStreamHandler)
class TcpConn:
    """
    One guest connection and its host stream: the state and the sequence
    numbers of both directions (the TCB), composed with its parts, a
    L{SendBuffer}, a L{Retransmission} timer state, a L{Congestion}
    window, a L{Reassembly} of out-of-order segments and the L{HostSide}.
    """

    def __init__(self, layer: "TcpLayer", key: tuple) -> None:
        self.layer = layer
        self.context = context = layer.context
        self.key = key
        guest, gport, remote, rport = key
        self.guest, self.gport, self.remote, self.rport = guest, gport, remote, rport
        self.v6 = len(guest) == 16
        #: the IPv4 connection's frame builder (None for IPv6)
        self.frames4 = None if self.v6 else P.Tcp4Frames(remote, guest, rport, gport)
        self.state = CONNECTING
        self.hostSide = HostSide()
        self.timer = context.timer(_weakTimeout(self))
        self.timerKind: Optional[str] = None
        # receive side (guest -> host)
        self.irs = 0
        self.rcvNxt = 0
        self.ooo = Reassembly()
        self.finRcvd = False
        self.lastAdvertised = 0
        self.ackPending = False
        self.wsOk = False
        self.sndShift = 0
        # send side (host -> guest)
        self.iss = layer.newIss()
        self.sndUna = self.iss
        self.sndNxt = self.iss
        self.sndMax = self.iss
        self.sndWnd = 0
        self.sndWl1 = 0
        self.sndWl2 = 0
        self.sndBuf = SendBuffer(SNDBUF_OFFLOAD if context.offload else SNDBUF)
        ourMss = context.config.mss6() if self.v6 else context.config.mss4()
        self.ourMss = ourMss
        self.mss = 1220 if self.v6 else 536
        self.cc = Congestion()
        self.rtx = Retransmission()
        #: When a connection not yet established is given up.
        self.openDeadline = 0.0

    def __repr__(self) -> str:
        return (f"<TcpConn {self.gport}->{self.rport} "
                f"{_STATE_NAMES[self.state]} una={self.sndUna} nxt={self.sndNxt}>")

    # -- helpers ---------------------------------------------------------

    def _window(self) -> int:
        free = RCVBUF - self.hostSide.queued
        return free if free > 0 else 0

    def _send(self, flags: int, seq: int, payload: BytesLike = b"", options: bytes = b"") -> None:
        wnd = self._window()
        if flags & SYN:
            win = min(wnd, 0xFFFF)
        elif self.wsOk:
            win = min(wnd >> RCV_SHIFT, 0xFFFF)
            wnd = win << RCV_SHIFT
        else:
            win = min(wnd, 0xFFFF)
            wnd = win
        ack = self.rcvNxt if flags & ACK else 0
        if flags & ACK:
            self.lastAdvertised = wnd
            if self.ackPending:
                self.ackPending = False
                self.layer.pendingAcks.discard(self)
        context = self.context
        context.stats["tcp_segments_out"] += 1
        if payload and context.offload and self._sendOffloaded(seq, ack, flags, win, payload):
            return
        frames = self.frames4
        if frames is not None and not options and \
                context.link.sendTcp4(frames, seq, ack, flags, win, payload):
            return
        segment = P.tcpSegment(self.remote, self.guest, self.rport, self.gport, seq, ack,
                               flags, win, options, payload)
        if self.v6:
            context.link.send6(self.guest, P.ipv6(self.remote, self.guest, P.PROTO_TCP, segment))
        else:
            context.link.send4(self.guest, P.ipv4(self.remote, self.guest, P.PROTO_TCP, segment))

    def _sendOffloaded(self, seq: int, ack: int, flags: int, win: int,
                       payload: BytesLike) -> bool:
        """
        Send a data segment of any size to an offloading guest link: the
        checksum left partial, segmented there in MSS pieces.  C{False} if
        it was not sent (the guest's MAC is not known).
        """
        remote, guest = self.remote, self.guest
        length = 20 + len(payload)
        tcp = P.tcpHeaderPartial(remote, guest, self.rport, self.gport, seq, ack, flags, win,
                                 len(payload))
        if self.v6:
            ip = P.IP6.pack(0x60000000, length, P.PROTO_TCP, 64, remote, guest)
        else:
            ip = P.ipv4Header(remote, guest, P.PROTO_TCP, length)
        return self.context.link.sendOffloaded(guest, ip + tcp, payload, self.mss)

    def _burst(self) -> int:
        """
        The most payload one segment carries: one MSS, or as many whole
        MSSs as fit a super-segment if the guests' link takes them.
        """
        mss = self.mss
        if self.context.offload:
            return MAX_SUPER_PAYLOAD // mss * mss
        return mss

    def sendAck(self) -> None:
        self._send(ACK, self.sndNxt)

    def _synOptions(self, offerScale: bool) -> bytes:
        options = P.U16.pack(0x0204) + P.U16.pack(self.ourMss)
        if offerScale:
            options += bytes((1, 3, 3, RCV_SHIFT))
        return options

    def _arm(self, kind: str, delay: float) -> None:
        self.timerKind = kind
        self.timer.reset(self.context.now() + delay)

    def _disarm(self) -> None:
        self.timerKind = None
        self.timer.cancel()

    # -- opening ---------------------------------------------------------

    def guestSyn(self, seq: int, window: int, options: bytes) -> None:
        """
        The guest's SYN opened this connection (state CONNECTING).
        """
        self.irs = seq
        self.rcvNxt = (seq + 1) & M32
        mss, wscale = parseOptions(options)
        self._peerOptions(mss, wscale)
        self.sndWnd = window
        self.sndWl1 = seq
        timeout = self.context.config.tcpHalfOpenTimeout
        self.openDeadline = self.context.now() + timeout
        self._arm("connect", timeout)

    def _peerOptions(self, mss: Optional[int], wscale: Optional[int]) -> None:
        if mss is not None:
            self.mss = max(1, min(mss, self.ourMss))
        else:
            self.mss = min(self.mss, self.ourMss)
        if wscale is not None:
            self.wsOk = True
            self.sndShift = wscale
        self.cc.start(self.mss)

    def connected(self, stream) -> None:
        """
        The host connect succeeded: now answer the guest's SYN.
        """
        if self.state != CONNECTING:
            stream.abort()
            return
        self.hostSide.pending = None
        self.hostSide.stream = stream
        self.state = SYN_RCVD
        self.sndNxt = self.sndMax = (self.iss + 1) & M32
        self.rtx.retries = 0
        self._sendSynAck()

    def _sendSynAck(self) -> None:
        self._send(SYN | ACK, self.iss, options=self._synOptions(self.wsOk))
        self._armOpening()

    def _armOpening(self) -> None:
        """
        The retransmission timer of a SYN or SYN-ACK, at the latest at the
        half-open deadline.
        """
        self._arm("rexmt", min(self.rtx.rto, self.openDeadline - self.context.now()))

    def connectFailed(self, errno: int) -> None:
        if self.state != CONNECTING:
            return
        self.hostSide.pending = None
        import errno as E

        if errno in (E.EHOSTUNREACH, E.ENETUNREACH, E.ETIMEDOUT, E.EHOSTDOWN):
            self.layer.unreachable(self)
        else:
            self._send(RST | ACK, 0)
        self.context.stats["tcp_connect_failed"] += 1
        self._remove()

    def openToGuest(self, stream) -> None:
        """
        A forwarded host connection: send the guest a SYN (state SYN_SENT).
        """
        self.hostSide.stream = stream
        self.state = SYN_SENT
        self.openDeadline = self.context.now() + self.context.config.tcpHalfOpenTimeout
        self.hostSide.pauseReading()
        self.sndNxt = self.sndMax = (self.iss + 1) & M32
        self._sendSyn()

    def _sendSyn(self) -> None:
        self._send(SYN, self.iss, options=self._synOptions(True))
        self._armOpening()

    def _established(self) -> None:
        self.state = ESTABLISHED
        self.layer.halfOpen.pop(self, None)
        self.sndUna = (self.iss + 1) & M32
        self.rtx.retries = 0
        self._disarm()
        if self.sndBuf.length < self.sndBuf.limit:
            self.hostSide.resumeReading()
        self.context.stats["tcp_established"] += 1

    # -- guest segments --------------------------------------------------

    def segment(self, seq: int, ack: int, flags: int, window: int, options: BytesLike,
                payload: BytesLike) -> None:
        state = self.state
        if state == CONNECTING:
            if flags & RST:
                self.context.stats["tcp_reset_by_guest"] += 1
                self._remove()
            # a retransmitted SYN (or anything else) waits for the host
            return
        if state == SYN_SENT:
            self._synSentSegment(seq, ack, flags, window, options)
            return
        if state == CLOSED:
            if flags & SYN and not flags & ACK:
                return
            # TIME-WAIT acknowledges a retransmitted FIN (or data), never a
            # bare ACK: two ends doing so would ACK each other forever
            if not flags & RST and (payload or flags & FIN):
                self.sendAck()
            return
        # SYN_RCVD and ESTABLISHED
        length = len(payload)
        if flags & RST:
            wnd = max(self.lastAdvertised, 1)
            if seqLE(self.rcvNxt, seq) and seqLT(seq, (self.rcvNxt + wnd) & M32):
                self.context.stats["tcp_reset_by_guest"] += 1
                self.hostSide.abort()
                self._remove()
            return
        if flags & SYN:
            if state == SYN_RCVD and seq == self.irs and not flags & ACK:
                self._sendSynAck()  # our SYN-ACK was lost
            else:
                self.sendAck()  # RFC 5961 challenge ACK
            return
        if not flags & ACK:
            return
        # acceptability (RFC 793 p. 69)
        wnd = self.lastAdvertised
        seglen = length + (1 if flags & FIN else 0)
        offset = seqDiff(seq, self.rcvNxt)
        if seglen == 0:
            acceptable = offset == 0 if wnd == 0 else 0 <= offset < wnd
        else:
            acceptable = wnd > 0 and offset < wnd and offset + seglen > 0
        if state == SYN_RCVD:
            if ack != self.sndNxt and not (seqLT(self.sndUna, ack) and seqLE(ack, self.sndMax)):
                self._send(RST, ack)
                return
            self._established()
            state = ESTABLISHED
            self.output()
        if not acceptable:
            self.sendAck()
            self._processAck(seq, ack, window, length, flags)
            return
        if length and self.hostSide.lost and self.hostSide.stream is None:
            # the host side is gone: these bytes can never be delivered
            self._send(RST | ACK, self.sndNxt)
            self.context.stats["tcp_reset_by_host"] += 1
            self._remove()
            return
        self._processAck(seq, ack, window, length, flags)
        if self.state == CLOSED:
            return
        if length or flags & FIN:
            self._receive(seq, payload, bool(flags & FIN))
        self._maybeFinished()

    def _synSentSegment(self, seq, ack, flags, window, options) -> None:
        if flags & ACK and ack != ((self.iss + 1) & M32):
            if not flags & RST:
                self._send(RST, ack)
            return
        if flags & RST:
            if flags & ACK:
                self.context.stats["tcp_reset_by_guest"] += 1
                self.hostSide.abort()
                self._remove()
            return
        if not flags & SYN:
            return
        self.irs = seq
        self.rcvNxt = (seq + 1) & M32
        mss, wscale = parseOptions(options)
        self._peerOptions(mss, wscale)
        if not flags & ACK:
            return  # simultaneous open: not for a forward
        self.sndWnd = window
        self.sndWl1, self.sndWl2 = seq, ack
        self._established()
        self.sendAck()
        self.output()

    def _processAck(self, seq: int, ack: int, window: int, length: int, flags: int) -> None:
        acked = seqDiff(ack, self.sndUna)
        if seqLT(self.sndMax, ack):
            self.sendAck()
            return
        scaled = window << self.sndShift if self.wsOk else window
        windowChanged = False
        if seqLT(self.sndWl1, seq) or (self.sndWl1 == seq and seqLE(self.sndWl2, ack)):
            windowChanged = scaled != self.sndWnd
            self.sndWnd = scaled
            self.sndWl1, self.sndWl2 = seq, ack
        if acked > 0:
            self._newAck(ack, acked)
        elif (acked == 0 and length == 0 and not windowChanged and not flags & (SYN | FIN)
              and self.sndNxt != self.sndUna):
            cc = self.cc
            cc.dupAcks += 1
            if cc.dupAcks == 3:
                self._fastRetransmit()
            elif cc.dupAcks > 3 and cc.recover is not None:
                cc.cwnd += self.mss
                self.output()
            return
        if windowChanged or acked > 0:
            if self.sndWnd > 0 and self.timerKind == "persist":
                self._disarm()
                self.rtx.persistBackoff = 0
            self.output()

    def _newAck(self, ack: int, acked: int) -> None:
        sndBuf = self.sndBuf
        dataAcked = min(acked, sndBuf.length)
        if dataAcked:
            sndBuf.drop(dataAcked)
            if sndBuf.length <= sndBuf.limit // 2 and self.hostSide.readPaused:
                self.hostSide.resumeReading()
        if acked > dataAcked and sndBuf.finSent:
            sndBuf.finAcked = True
        self.sndUna = ack
        if seqLT(self.sndNxt, ack):
            self.sndNxt = ack
        rtx = self.rtx
        rtx.retries = 0
        if rtx.rtSeq is not None and seqLE(rtx.rtSeq, ack):
            rtx.sample(self.context.now() - rtx.rtTime)
            rtx.rtSeq = None
        mss = self.mss
        cc = self.cc
        if cc.recover is not None:
            if seqLT(ack, cc.recover):
                cc.partialAck(acked, mss)
                self._retransmitFirst()
            else:
                cc.recovered(mss)
        else:
            cc.grow(acked, mss, self._burst())
        if self.sndNxt == self.sndUna:
            if self.timerKind == "rexmt":
                self._disarm()
        else:
            self._arm("rexmt", rtx.rto)

    def _fastRetransmit(self) -> None:
        self.context.stats["tcp_fast_retransmits"] += 1
        self.cc.fastRetransmit(seqDiff(self.sndNxt, self.sndUna), self.mss, self.sndMax)
        self.rtx.rtSeq = None
        self._retransmitFirst()

    def _retransmitFirst(self) -> None:
        # what was lost is a whole segment as sent, a super-segment too (in
        # the peer's window); never past what was sent (sndMax)
        sndBuf = self.sndBuf
        n = min(self._burst(), sndBuf.length, seqDiff(self.sndMax, self.sndUna),
                max(self.sndWnd, self.mss))
        if n > 0:
            flags = ACK
            if n == sndBuf.length and sndBuf.finSent:
                flags |= FIN
            self._send(flags | PSH, self.sndUna, sndBuf.peek(0, n, n > self.mss))
        elif sndBuf.finSent and not sndBuf.finAcked:
            self._send(FIN | ACK, self.sndUna)
        self._arm("rexmt", self.rtx.rto)

    def _receive(self, seq: int, payload: BytesLike, fin: bool) -> None:
        if self.finRcvd:
            self.sendAck()
            return
        offset = seqDiff(seq, self.rcvNxt)
        if offset < 0:
            payload = payload[-offset:]
            seq = self.rcvNxt
            offset = 0
        room = self.lastAdvertised - offset
        if len(payload) > room:
            payload = payload[: max(room, 0)]
            fin = False
        if offset > 0:
            if (payload or fin) and not self.ooo.store(seq, bytes(payload), fin, self.rcvNxt):
                self.context.stats["tcp_ooo_dropped"] += 1
            self.sendAck()  # duplicate ACK: tells the guest about the hole
            return
        if payload:
            self._deliver(payload)
        if self.ooo.segments:
            pieces, oooFin = self.ooo.drain(self.rcvNxt)
            for piece in pieces:
                self._deliver(piece)
            fin = oooFin or fin
        if fin:
            self._guestFin()
            self.sendAck()
            return
        if not self.ackPending:
            self.ackPending = True
            self.layer.pendingAcks.add(self)

    def _deliver(self, data: BytesLike) -> None:
        self.rcvNxt = (self.rcvNxt + len(data)) & M32
        self.context.stats["tcp_bytes_to_host"] += len(data)
        self.hostSide.write(data)

    def _guestFin(self) -> None:
        self.rcvNxt = (self.rcvNxt + 1) & M32
        self.finRcvd = True
        self.hostSide.writeEOF()

    def _maybeFinished(self) -> None:
        if self.finRcvd and self.sndBuf.finAcked and self.state == ESTABLISHED:
            self.state = CLOSED
            self._arm("timewait", TIME_WAIT)
            self.layer.closed(self)
            hostSide = self.hostSide
            if hostSide.stream is not None and not hostSide.queue:
                hostSide.stream.close()

    # -- host events -----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        sndBuf = self.sndBuf
        if sndBuf.finQueued or self.state == CLOSED or not data:
            return
        sndBuf.append(data)
        self.context.stats["tcp_bytes_to_guest"] += len(data)
        if sndBuf.length >= sndBuf.limit:
            self.hostSide.pauseReading()
        if self.state == ESTABLISHED:
            self.output()

    def readEOF(self) -> None:
        if self.sndBuf.finQueued:
            return
        self.sndBuf.finQueued = True
        if self.state == ESTABLISHED:
            self.output()

    def connectionLost(self, clean: bool) -> None:
        hostSide = self.hostSide
        hostSide.stream = None
        hostSide.lost = True
        if self.state == CLOSED:
            return
        if not clean or self.state in (SYN_SENT, SYN_RCVD, CONNECTING):
            if self.state != CONNECTING:
                self._send(RST | ACK, self.sndNxt)
            self.context.stats["tcp_reset_by_host"] += 1
            self._remove()
            return
        hostSide.discard()
        self.readEOF()

    def pauseWriting(self) -> None:
        self.hostSide.paused = True

    def resumeWriting(self) -> None:
        hostSide = self.hostSide
        hostSide.paused = False
        if hostSide.stream is None:
            return
        before = self.lastAdvertised
        hostSide.drain(close=self.state == CLOSED)
        if self.state == ESTABLISHED and not self.finRcvd:
            window = self._window()
            if before < 2 * self.mss * (1 << (RCV_SHIFT if self.wsOk else 0)) or \
                    window >= 2 * before:
                if window - before >= min(RCVBUF // 2, 2 * self.mss):
                    self.sendAck()

    # -- sending -----------------------------------------------------------

    def output(self) -> None:
        if self.state != ESTABLISHED:
            return
        context = self.context
        if not context.writable:
            self.layer.blocked.add(self)
            return
        mss = self.mss
        burst = self._burst()
        sndBuf = self.sndBuf
        cc = self.cc
        rtx = self.rtx
        while True:
            inFlight = seqDiff(self.sndNxt, self.sndUna)
            unsent = sndBuf.length - inFlight
            if unsent > 0:
                window = min(self.sndWnd, cc.cwnd)
                usable = window - inFlight
                if usable <= 0:
                    break
                n = min(burst, unsent, usable)
                if n < unsent:
                    if n < mss and inFlight > 0:
                        break  # sender-side silly window avoidance
                    if n > mss:
                        n -= n % mss  # a super-segment of whole MSSs
                elif mss < burst and n < burst and inFlight >= burst and not sndBuf.finQueued:
                    # to an offloading link, less than a super-segment while
                    # one is in flight waits for its ACK (the guest sends it
                    # at once) or more host data, to leave as one frame
                    # instead of several (as Linux defers TSO segments)
                    break
                data = sndBuf.peek(inFlight, n, burst > mss)
                flags = ACK
                if n == unsent:
                    flags |= PSH
                    if sndBuf.finQueued:
                        flags |= FIN
                seq = self.sndNxt
                self._send(flags, seq, data)
                end = (seq + n + (1 if flags & FIN else 0)) & M32
                if flags & FIN:
                    sndBuf.finSent = True
                if rtx.rtSeq is None and not seqLT(seq, self.sndMax):
                    rtx.rtSeq = end
                    rtx.rtTime = context.now()
                self.sndNxt = end
                if seqLT(self.sndMax, end):
                    self.sndMax = end
                if self.timerKind != "rexmt":
                    self._arm("rexmt", rtx.rto)
                if not context.writable:
                    self.layer.blocked.add(self)
                    return
                continue
            if unsent == 0 and sndBuf.finQueued and not sndBuf.finSent:
                seq = self.sndNxt
                self._send(FIN | ACK, seq)
                sndBuf.finSent = True
                self.sndNxt = (seq + 1) & M32
                if seqLT(self.sndMax, self.sndNxt):
                    self.sndMax = self.sndNxt
                if self.timerKind != "rexmt":
                    self._arm("rexmt", rtx.rto)
            break
        inFlight = seqDiff(self.sndNxt, self.sndUna)
        if (self.sndWnd == 0 and inFlight <= 0 and sndBuf.length > 0
                and self.timerKind != "persist"):
            self._arm("persist", rtx.persistDelay())

    # -- timers ------------------------------------------------------------

    def _timeout(self) -> None:
        kind, self.timerKind = self.timerKind, None
        if kind == "connect":
            if self.state == CONNECTING:
                self.layer.unreachable(self)
                self._remove()
        elif kind == "timewait":
            if self.hostSide.queue and self.hostSide.stream is not None:
                self._arm("timewait", TIME_WAIT)  # the host has not read it all yet
            else:
                self._remove()
        elif kind == "persist":
            self._probe()
        elif kind == "rexmt":
            self._retransmitTimeout()

    def _probe(self) -> None:
        if self.state != ESTABLISHED or self.sndWnd > 0:
            self.output()
            return
        self.context.stats["tcp_window_probes"] += 1
        inFlight = seqDiff(self.sndNxt, self.sndUna)
        if inFlight < self.sndBuf.length:
            self._send(ACK, self.sndNxt, self.sndBuf.peek(inFlight, 1))
            end = (self.sndNxt + 1) & M32
            if seqLT(self.sndMax, end):
                self.sndMax = end
        else:
            self.sendAck()
        self.rtx.persistBackoff += 1
        self._arm("persist", self.rtx.persistDelay())

    def _retransmitTimeout(self) -> None:
        context = self.context
        rtx = self.rtx
        rtx.backoff()
        context.stats["tcp_timeouts"] += 1
        if self.state in (SYN_RCVD, SYN_SENT):
            if rtx.retries > MAX_SYN_RETRIES or context.now() >= self.openDeadline:
                if self.state == SYN_RCVD:
                    self._send(RST | ACK, self.sndNxt)
                self.hostSide.abort()
                self._remove()
            elif self.state == SYN_RCVD:
                self._sendSynAck()
            else:
                self._sendSyn()
            return
        if self.state != ESTABLISHED or self.sndNxt == self.sndUna:
            return
        if rtx.retries > MAX_RETRIES:
            self._send(RST | ACK, self.sndNxt)
            self.hostSide.abort()
            self._remove()
            return
        self.cc.timedOut(seqDiff(self.sndNxt, self.sndUna), self.mss)
        # go back N: resend from the first unacknowledged byte
        self.sndNxt = self.sndUna
        if self.sndBuf.finSent and not self.sndBuf.finAcked:
            self.sndBuf.finSent = False
        self.output()
        if self.timerKind is None and self.sndNxt != self.sndUna:
            self._arm("rexmt", rtx.rto)

    # -- closing -----------------------------------------------------------

    def _remove(self) -> None:
        self.state = CLOSED
        self._disarm()
        self.layer.forget(self)
        self.hostSide.release(clean=self.finRcvd and self.sndBuf.finAcked)

    def evict(self) -> None:
        """
        Give up a half-open connection to make room for a new one: the
        host side is aborted, the guest told nothing (its SYN
        retransmission tries again).
        """
        self.context.stats["tcp_halfopen_evicted"] += 1
        self.hostSide.abort()
        self._remove()

    def reset(self) -> None:
        """
        Abort both sides (engine shutdown).
        """
        if self.state in (ESTABLISHED, SYN_RCVD):
            self._send(RST | ACK, self.sndNxt)
        self.hostSide.abort()
        self._remove()


class TcpLayer:
    def __init__(self, context: "LayerContext") -> None:
        self.context = context
        self.conns: dict[tuple, TcpConn] = {}
        #: The connections not yet established, oldest first (as a set).
        self.halfOpen: dict[TcpConn, None] = {}
        #: How many connections each guest address has in C{conns}, less
        #: those waiting out TIME-WAIT: a guest that opens and closes
        #: connections quickly (hundreds a second) is not refused for them.
        self.perGuest: dict[bytes, int] = {}
        #: The closed connections waiting out TIME-WAIT, oldest first (as a
        #: set): the first to go when the table is full.
        self.timeWait: dict[TcpConn, None] = {}
        self.pendingAcks: set[TcpConn] = set()
        self.blocked: set[TcpConn] = set()
        self.listeners: list = []
        self._iss = context.random.getrandbits(32)

    def newIss(self) -> int:
        self._iss = (self._iss + _ISS_STEP) & M32
        return self._iss

    def _add(self, conn: TcpConn) -> None:
        self.conns[conn.key] = conn
        self.halfOpen[conn] = None
        self.perGuest[conn.guest] = self.perGuest.get(conn.guest, 0) + 1

    def forget(self, conn: TcpConn) -> None:
        if self.conns.get(conn.key) is conn:
            del self.conns[conn.key]
            if conn in self.timeWait:
                del self.timeWait[conn]
            else:
                self._uncount(conn)
        self.halfOpen.pop(conn, None)
        self.pendingAcks.discard(conn)
        self.blocked.discard(conn)

    def _uncount(self, conn: TcpConn) -> None:
        count = self.perGuest.pop(conn.guest) - 1
        if count:
            self.perGuest[conn.guest] = count

    def closed(self, conn: TcpConn) -> None:
        """
        C{conn} is closed and waits out TIME-WAIT: it leaves its guest's
        share, and is the first to go when the table is full.
        """
        if conn not in self.timeWait and self.conns.get(conn.key) is conn:
            self._uncount(conn)
            self.timeWait[conn] = None

    def _admit(self, guest: bytes) -> bool:
        """
        Whether a new connection of C{guest} may have a table entry: not
        past its share; when the half-open budget is full, the oldest
        half-open connection makes room; when the table is, the oldest in
        TIME-WAIT, else the oldest half-open one.
        """
        config = self.context.config
        if self.perGuest.get(guest, 0) >= config.tcpPerGuest:
            self.context.stats["tcp_refused_guest_share"] += 1
            return False
        if len(self.halfOpen) >= config.tcpHalfOpen:
            next(iter(self.halfOpen)).evict()
        elif len(self.conns) >= config.tcpMax:
            if self.timeWait:
                self.context.stats["tcp_timewait_evicted"] += 1
                next(iter(self.timeWait))._remove()
            elif self.halfOpen:
                next(iter(self.halfOpen)).evict()
            else:
                self.context.stats["tcp_refused_table_full"] += 1
                return False
        return True

    def input(self, packet: BytesLike, ihl: int, trusted: bool = False) -> None:
        """
        A TCP segment from the guest (C{packet}: the whole IP packet,
        C{ihl}: its header length; 40 for IPv6), maybe of many MSSs (TSO);
        its checksum is not checked if C{trusted}.  A C{memoryview} packet's
        payload goes to the host as a view (no copy); nothing of it is kept
        beyond that but out-of-order data (copied).
        """
        context = self.context
        length = len(packet) - ihl
        if length < 20:
            return
        v6 = ihl == 40 and packet[0] >> 4 == 6
        # bytes (the same objects if the packet is bytes): kept as the key
        if v6:
            source, destination = bytes(packet[8:24]), bytes(packet[24:40])
            pseudo = pseudo6
        else:
            source, destination = bytes(packet[12:16]), bytes(packet[16:20])
            pseudo = pseudo4
        if not trusted and (residue(packet[ihl:])
                            + pseudo(source, destination, P.PROTO_TCP, length)) % 0xFFFF:
            context.stats["tcp_bad_checksum"] += 1
            return
        sport, dport, seq, ack, offset, flags, window, _, _ = P.TCP.unpack_from(packet, ihl)
        hlen = (offset >> 4) << 2
        if hlen < 20 or hlen > length:
            return
        if not sport or not dport:
            return
        flags &= 0x3F
        key = (source, sport, destination, dport)
        conn = self.conns.get(key)
        payload = packet[ihl + hlen:]
        if conn is not None:
            if conn.state == CLOSED and flags & SYN and not flags & ACK:
                conn._remove()  # a new connection reusing the pair after TIME-WAIT
            else:
                conn.segment(seq, ack, flags, window, packet[ihl + 20:ihl + hlen], payload)
                return
        if flags & RST:
            return
        if flags & ACK or not flags & SYN:
            self._reset(source, sport, destination, dport, seq, ack, flags, len(payload))
            return
        if flags & FIN:
            return
        self.passiveOpen(key, seq, ack, flags, window, bytes(packet[ihl + 20:ihl + hlen]),
                         len(payload))

    def passiveOpen(self, key: tuple, seq: int, ack: int, flags: int, window: int,
                    options: bytes, length: int) -> None:
        """
        A guest's SYN for no connection: connect to where the address
        policy maps it, and answer once that succeeds.  (A host stack,
        L{vdetwist.stack}, answers from its own listeners instead.)
        """
        context = self.context
        source, sport, destination, dport = key
        target = context.policy.mapOutbound(destination, dport, "tcp")
        if target is None or not self._admit(source):
            context.stats["tcp_refused"] += 1
            self._reset(source, sport, destination, dport, seq, ack, flags, length)
            return
        conn = TcpConn(self, key)
        self._add(conn)
        conn.guestSyn(seq, window, options)
        if target[0] != "unix" and target[0] != "cmd":
            target = ("tcp",) + tuple(target)
        pending = context.host.connect(target, conn)
        if conn.state == CONNECTING:  # not already reported
            conn.hostSide.pending = pending

    def _reset(self, source, sport, destination, dport, seq, ack, flags, length) -> None:
        if flags & ACK:
            rseq, rack, rflags = ack, 0, RST
        else:
            rseq = 0
            rack = (seq + length + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)) & M32
            rflags = RST | ACK
        segment = P.tcpSegment(destination, source, dport, sport, rseq, rack, rflags, 0)
        if len(source) == 16:
            self.context.link.send6(source, P.ipv6(destination, source, P.PROTO_TCP, segment))
        else:
            self.context.link.send4(source, P.ipv4(destination, source, P.PROTO_TCP, segment))

    def unreachable(self, conn: TcpConn) -> None:
        """
        Tell the guest its connect cannot reach the host (ICMP unreachable
        quoting a reconstruction of its SYN).
        """
        context = self.context
        syn = P.tcpSegment(conn.guest, conn.remote, conn.gport, conn.rport, conn.irs, 0, SYN,
                           0)
        if conn.v6:
            from vdetwist.slirp.ipv6 import unreachable6

            original = P.ipv6(conn.guest, conn.remote, P.PROTO_TCP, syn)
            context.link.send6(conn.guest, unreachable6(original, 3, conn.remote))
        else:
            from vdetwist.slirp.ipv4 import UNREACH_HOST, unreachable

            original = P.ipv4(conn.guest, conn.remote, P.PROTO_TCP, syn)
            context.link.send4(conn.guest, unreachable(original, UNREACH_HOST,
                                                      context.policy.host4))

    def flush(self) -> None:
        """
        Send the cumulative ACKs due after a batch of input.
        """
        pending = self.pendingAcks
        while pending:
            conn = pending.pop()
            if conn.ackPending:
                conn.ackPending = False
                if conn.state == ESTABLISHED:
                    conn.sendAck()

    def resume(self) -> None:
        """
        The link can take frames again: let blocked connections send.
        """
        blocked, self.blocked = self.blocked, set()
        for conn in blocked:
            if not self.context.writable:
                self.blocked.add(conn)
            elif conn.state == ESTABLISHED:
                conn.output()

    # -- forwards ------------------------------------------------------------

    def listen(self, forward):
        """
        Start a C{tcpfwd}; returns its listener, for L{unlisten}.

        @raise OSError: the port cannot be bound.
        """
        def onAccept(stream, peer):
            return self.accepted(forward, stream, peer)

        listener = self.context.host.listenTCP(str(forward.hostAddr), forward.hostPort,
                                               onAccept)
        self.listeners.append(listener)
        return listener

    def unlisten(self, listener) -> None:
        """
        Stop a forward L{listen} started; its connections carry on.
        """
        self.listeners.remove(listener)
        listener.close()

    def accepted(self, forward, stream, peer):
        context = self.context
        ends = context.policy.forwardEnds(forward, peer[0])
        if ends is None:
            return None
        guest, visible = ends
        key = (guest, forward.guestPort, visible, peer[1])
        if key in self.conns or not self._admit(guest):
            return None
        conn = TcpConn(self, key)
        self._add(conn)
        conn.openToGuest(stream)
        context.stats["tcp_forwarded"] += 1
        return conn

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        for conn in list(self.conns.values()):
            conn.reset()
        self.conns.clear()
        self.halfOpen.clear()
        self.perGuest.clear()
        self.timeWait.clear()
