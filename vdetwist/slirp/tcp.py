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
from vdetwist.slirp.checksum import pseudo4, pseudo6, residue
from vdetwist.slirp.hostapi import IStreamHandler

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext

M32 = 0xFFFFFFFF

#: Bytes buffered per direction per connection.
RCVBUF = 256 * 1024
SNDBUF = 256 * 1024
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


@implementer(IStreamHandler)
class TcpConn:
    """
    One guest connection and its host stream.
    """

    def __init__(self, layer: "TcpLayer", key: tuple) -> None:
        self.layer = layer
        self.context = layer.context
        self.key = key
        guest, gport, remote, rport = key
        self.guest, self.gport, self.remote, self.rport = guest, gport, remote, rport
        self.v6 = len(guest) == 16
        self.state = CONNECTING
        self.stream = None
        #: The host connect while it is pending (an IPendingConnect).
        self.pending = None
        self.timer = self.context.timer(_weakTimeout(self))
        self.timerKind = None
        # receive side (guest -> host)
        self.irs = 0
        self.rcvNxt = 0
        self.rcvQueue: deque[bytes] = deque()
        self.rcvQueued = 0
        self.ooo: list[list] = []  # [seq, data, fin], sorted by seq
        self.oooBytes = 0
        self.finRcvd = False
        self.eofPending = False
        self.hostPaused = False
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
        self.sndBuf: deque[bytes] = deque()
        self.sndOff = 0  # bytes of sndBuf[0] already acknowledged
        self.sndBufLen = 0
        self.finQueued = False
        self.finSent = False
        self.finAcked = False
        self.readPaused = False
        ourMss = self.context.config.mss6() if self.v6 else self.context.config.mss4()
        self.ourMss = ourMss
        self.mss = 1220 if self.v6 else 536
        self.cwnd = 0
        self.ssthresh = 1 << 30
        self.dupAcks = 0
        self.recover: Optional[int] = None
        self.rto = INITIAL_RTO
        self.srtt: Optional[float] = None
        self.rttvar = 0.0
        self.rtSeq: Optional[int] = None
        self.rtTime = 0.0
        self.retries = 0
        self.persistBackoff = 0
        self.closedHost = False
        #: When a connection not yet established is given up.
        self.openDeadline = 0.0

    def __repr__(self) -> str:
        return (f"<TcpConn {self.gport}->{self.rport} "
                f"{_STATE_NAMES[self.state]} una={self.sndUna} nxt={self.sndNxt}>")

    # -- helpers ---------------------------------------------------------

    def _window(self) -> int:
        free = RCVBUF - self.rcvQueued
        return free if free > 0 else 0

    def _send(self, flags: int, seq: int, payload: bytes = b"", options: bytes = b"") -> None:
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
        segment = P.tcpSegment(self.remote, self.guest, self.rport, self.gport, seq, ack,
                               flags, win, options, payload)
        if flags & ACK:
            self.lastAdvertised = wnd
            if self.ackPending:
                self.ackPending = False
                self.layer.pendingAcks.discard(self)
        layer = self.layer
        layer.context.stats["tcp_segments_out"] += 1
        if self.v6:
            layer.context.link.send6(self.guest, P.ipv6(self.remote, self.guest, P.PROTO_TCP,
                                                       segment))
        else:
            layer.context.link.send4(self.guest, P.ipv4(self.remote, self.guest, P.PROTO_TCP,
                                                       segment))

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

    def _peek(self, offset: int, length: int) -> bytes:
        """
        C{length} bytes of the send buffer from C{offset} (relative to
        sndUna).
        """
        offset += self.sndOff
        parts = []
        for chunk in self.sndBuf:
            size = len(chunk)
            if offset >= size:
                offset -= size
                continue
            piece = chunk[offset : offset + length]
            parts.append(piece)
            length -= len(piece)
            offset = 0
            if length <= 0:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _dropAcked(self, count: int) -> None:
        self.sndBufLen -= count
        buf = self.sndBuf
        count += self.sndOff
        while buf and count >= len(buf[0]):
            count -= len(buf.popleft())
        self.sndOff = count
        if self.readPaused and self.sndBufLen <= SNDBUF // 2 and self.stream is not None:
            self.readPaused = False
            self.stream.resumeReading()

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
        self.cwnd = INITIAL_WINDOW_SEGMENTS * self.mss

    def connected(self, stream) -> None:
        """
        The host connect succeeded: now answer the guest's SYN.
        """
        if self.state != CONNECTING:
            stream.abort()
            return
        self.pending = None
        self.stream = stream
        self.state = SYN_RCVD
        self.sndNxt = self.sndMax = (self.iss + 1) & M32
        self.retries = 0
        self._sendSynAck()

    def _sendSynAck(self) -> None:
        self._send(SYN | ACK, self.iss, options=self._synOptions(self.wsOk))
        self._armOpening()

    def _armOpening(self) -> None:
        """
        The retransmission timer of a SYN or SYN-ACK, at the latest at the
        half-open deadline.
        """
        self._arm("rexmt", min(self.rto, self.openDeadline - self.context.now()))

    def connectFailed(self, errno: int) -> None:
        if self.state != CONNECTING:
            return
        self.pending = None
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
        self.stream = stream
        self.state = SYN_SENT
        self.openDeadline = self.context.now() + self.context.config.tcpHalfOpenTimeout
        stream.pauseReading()
        self.readPaused = True
        self.sndNxt = self.sndMax = (self.iss + 1) & M32
        self._sendSyn()

    def _sendSyn(self) -> None:
        self._send(SYN, self.iss, options=self._synOptions(True))
        self._armOpening()

    def _established(self) -> None:
        self.state = ESTABLISHED
        self.layer.halfOpen.pop(self, None)
        self.sndUna = (self.iss + 1) & M32
        self.retries = 0
        self._disarm()
        if self.readPaused and self.stream is not None and self.sndBufLen < SNDBUF:
            self.readPaused = False
            self.stream.resumeReading()
        self.context.stats["tcp_established"] += 1

    # -- guest segments --------------------------------------------------

    def segment(self, seq: int, ack: int, flags: int, window: int, options: bytes,
                payload: bytes) -> None:
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
            if not flags & RST:
                self.sendAck()
            return
        # SYN_RCVD and ESTABLISHED
        length = len(payload)
        if flags & RST:
            wnd = max(self.lastAdvertised, 1)
            if seqLE(self.rcvNxt, seq) and seqLT(seq, (self.rcvNxt + wnd) & M32):
                self.context.stats["tcp_reset_by_guest"] += 1
                self._abortHost()
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
        if length and self.closedHost and self.stream is None:
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
                self._abortHost()
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
            self.dupAcks += 1
            if self.dupAcks == 3:
                self._fastRetransmit()
            elif self.dupAcks > 3 and self.recover is not None:
                self.cwnd += self.mss
                self.output()
            return
        if windowChanged or acked > 0:
            if self.sndWnd > 0 and self.timerKind == "persist":
                self._disarm()
                self.persistBackoff = 0
            self.output()

    def _newAck(self, ack: int, acked: int) -> None:
        context = self.context
        dataAcked = min(acked, self.sndBufLen)
        if dataAcked:
            self._dropAcked(dataAcked)
        if acked > dataAcked and self.finSent:
            self.finAcked = True
        self.sndUna = ack
        if seqLT(self.sndNxt, ack):
            self.sndNxt = ack
        self.retries = 0
        if self.rtSeq is not None and seqLE(self.rtSeq, ack):
            self._rttSample(context.now() - self.rtTime)
            self.rtSeq = None
        mss = self.mss
        if self.recover is not None:
            if seqLT(ack, self.recover):
                # partial ACK: the next hole
                self.cwnd = max(self.cwnd - acked + mss, mss)
                self._retransmitFirst()
                self.dupAcks = 0
            else:
                self.recover = None
                self.cwnd = max(self.ssthresh, 2 * mss)
                self.dupAcks = 0
        else:
            self.dupAcks = 0
            if self.cwnd < self.ssthresh:
                self.cwnd += min(acked, mss)
            else:
                self.cwnd += max(mss * mss // self.cwnd, 1)
            if self.cwnd > 64 * SNDBUF:
                self.cwnd = 64 * SNDBUF
        if self.sndNxt == self.sndUna:
            if self.timerKind == "rexmt":
                self._disarm()
        else:
            self._arm("rexmt", self.rto)

    def _rttSample(self, r: float) -> None:
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.rto = min(MAX_RTO, max(MIN_RTO, self.srtt + max(0.001, 4 * self.rttvar)))

    def _fastRetransmit(self) -> None:
        self.context.stats["tcp_fast_retransmits"] += 1
        flight = seqDiff(self.sndNxt, self.sndUna)
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + 3 * self.mss
        self.recover = self.sndMax
        self.rtSeq = None
        self._retransmitFirst()

    def _retransmitFirst(self) -> None:
        n = min(self.mss, self.sndBufLen)
        if n > 0:
            flags = ACK
            if n == self.sndBufLen and self.finSent:
                flags |= FIN
            self._send(flags | PSH, self.sndUna, self._peek(0, n))
        elif self.finSent and not self.finAcked:
            self._send(FIN | ACK, self.sndUna)
        self._arm("rexmt", self.rto)

    def _receive(self, seq: int, payload: bytes, fin: bool) -> None:
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
            self._storeOutOfOrder(seq, payload, fin)
            self.sendAck()  # duplicate ACK: tells the guest about the hole
            return
        if payload:
            self._deliver(payload)
        if self.ooo:
            fin = self._drainOutOfOrder() or fin
        if fin:
            self._guestFin()
            self.sendAck()
            return
        if not self.ackPending:
            self.ackPending = True
            self.layer.pendingAcks.add(self)

    def _storeOutOfOrder(self, seq: int, payload: bytes, fin: bool) -> None:
        if not payload and not fin:
            return
        if len(self.ooo) >= MAX_OOO_SEGMENTS or self.oooBytes + len(payload) > RCVBUF:
            self.context.stats["tcp_ooo_dropped"] += 1
            return
        ooo = self.ooo
        rel = seqDiff(seq, self.rcvNxt)
        i = 0
        while i < len(ooo) and seqDiff(ooo[i][0], self.rcvNxt) < rel:
            i += 1
        if i < len(ooo) and ooo[i][0] == seq and len(ooo[i][1]) >= len(payload) \
                and (ooo[i][2] or not fin):
            return  # duplicate
        ooo.insert(i, [seq, payload, fin])
        self.oooBytes += len(payload)

    def _drainOutOfOrder(self) -> bool:
        ooo = self.ooo
        fin = False
        while ooo:
            seq, data, segFin = ooo[0]
            offset = seqDiff(seq, self.rcvNxt)
            if offset > 0:
                break
            ooo.pop(0)
            self.oooBytes -= len(data)
            if -offset < len(data):
                self._deliver(data[-offset:])
                if segFin:
                    fin = True
                    break
            elif -offset == len(data) and segFin:
                fin = True
                break
        if fin:
            for entry in ooo:
                self.oooBytes -= len(entry[1])
            ooo.clear()
        return fin

    def _deliver(self, data: bytes) -> None:
        self.rcvNxt = (self.rcvNxt + len(data)) & M32
        self.context.stats["tcp_bytes_to_host"] += len(data)
        stream = self.stream
        if stream is None:
            return
        if self.hostPaused or self.rcvQueue:
            self.rcvQueue.append(data)
            self.rcvQueued += len(data)
        else:
            stream.write(data)

    def _guestFin(self) -> None:
        self.rcvNxt = (self.rcvNxt + 1) & M32
        self.finRcvd = True
        if self.rcvQueue:
            self.eofPending = True
        elif self.stream is not None:
            self.stream.writeEOF()

    def _maybeFinished(self) -> None:
        if self.finRcvd and self.finAcked and self.state == ESTABLISHED:
            self.state = CLOSED
            self._arm("timewait", TIME_WAIT)
            if self.stream is not None and not self.rcvQueue:
                self.stream.close()

    # -- host events -----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.finQueued or self.state == CLOSED or not data:
            return
        self.sndBuf.append(data)
        self.sndBufLen += len(data)
        self.context.stats["tcp_bytes_to_guest"] += len(data)
        if self.sndBufLen >= SNDBUF and not self.readPaused and self.stream is not None:
            self.readPaused = True
            self.stream.pauseReading()
        if self.state == ESTABLISHED:
            self.output()

    def readEOF(self) -> None:
        if self.finQueued:
            return
        self.finQueued = True
        if self.state == ESTABLISHED:
            self.output()

    def connectionLost(self, clean: bool) -> None:
        self.stream = None
        self.closedHost = True
        if self.state == CLOSED:
            return
        if not clean or self.state in (SYN_SENT, SYN_RCVD, CONNECTING):
            if self.state != CONNECTING:
                self._send(RST | ACK, self.sndNxt)
            self.context.stats["tcp_reset_by_host"] += 1
            self._remove()
            return
        self.rcvQueue.clear()
        self.rcvQueued = 0
        self.readEOF()

    def pauseWriting(self) -> None:
        self.hostPaused = True

    def resumeWriting(self) -> None:
        self.hostPaused = False
        stream = self.stream
        if stream is None:
            return
        queue = self.rcvQueue
        before = self.lastAdvertised
        while queue and not self.hostPaused:
            data = queue.popleft()
            self.rcvQueued -= len(data)
            stream.write(data)
        if not queue and self.eofPending:
            self.eofPending = False
            stream.writeEOF()
            if self.state == CLOSED:
                stream.close()
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
        while True:
            inFlight = seqDiff(self.sndNxt, self.sndUna)
            unsent = self.sndBufLen - inFlight
            if unsent > 0:
                window = min(self.sndWnd, self.cwnd)
                usable = window - inFlight
                if usable <= 0:
                    break
                n = min(mss, unsent, usable)
                if n < mss and n < unsent and inFlight > 0:
                    break  # sender-side silly window avoidance
                data = self._peek(inFlight, n)
                flags = ACK
                if n == unsent:
                    flags |= PSH
                    if self.finQueued:
                        flags |= FIN
                seq = self.sndNxt
                self._send(flags, seq, data)
                end = (seq + n + (1 if flags & FIN else 0)) & M32
                if flags & FIN:
                    self.finSent = True
                if self.rtSeq is None and not seqLT(seq, self.sndMax):
                    self.rtSeq = end
                    self.rtTime = context.now()
                self.sndNxt = end
                if seqLT(self.sndMax, end):
                    self.sndMax = end
                if self.timerKind != "rexmt":
                    self._arm("rexmt", self.rto)
                if not context.writable:
                    self.layer.blocked.add(self)
                    return
                continue
            if unsent == 0 and self.finQueued and not self.finSent:
                seq = self.sndNxt
                self._send(FIN | ACK, seq)
                self.finSent = True
                self.sndNxt = (seq + 1) & M32
                if seqLT(self.sndMax, self.sndNxt):
                    self.sndMax = self.sndNxt
                if self.timerKind != "rexmt":
                    self._arm("rexmt", self.rto)
            break
        inFlight = seqDiff(self.sndNxt, self.sndUna)
        if (self.sndWnd == 0 and inFlight <= 0 and self.sndBufLen > 0
                and self.timerKind != "persist"):
            self._arm("persist", self._persistDelay())

    def _persistDelay(self) -> float:
        return min(MAX_RTO, max(self.rto, MIN_RTO) * (1 << min(self.persistBackoff, 10)))

    # -- timers ------------------------------------------------------------

    def _timeout(self) -> None:
        kind, self.timerKind = self.timerKind, None
        if kind == "connect":
            if self.state == CONNECTING:
                self.layer.unreachable(self)
                self._remove()
        elif kind == "timewait":
            if self.rcvQueue and self.stream is not None:
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
        if inFlight < self.sndBufLen:
            self._send(ACK, self.sndNxt, self._peek(inFlight, 1))
            end = (self.sndNxt + 1) & M32
            if seqLT(self.sndMax, end):
                self.sndMax = end
        else:
            self.sendAck()
        self.persistBackoff += 1
        self._arm("persist", self._persistDelay())

    def _retransmitTimeout(self) -> None:
        context = self.context
        self.retries += 1
        self.rto = min(MAX_RTO, self.rto * 2)
        self.rtSeq = None
        context.stats["tcp_timeouts"] += 1
        if self.state in (SYN_RCVD, SYN_SENT):
            if self.retries > MAX_SYN_RETRIES or context.now() >= self.openDeadline:
                if self.state == SYN_RCVD:
                    self._send(RST | ACK, self.sndNxt)
                self._abortHost()
                self._remove()
            elif self.state == SYN_RCVD:
                self._sendSynAck()
            else:
                self._sendSyn()
            return
        if self.state != ESTABLISHED or self.sndNxt == self.sndUna:
            return
        if self.retries > MAX_RETRIES:
            self._send(RST | ACK, self.sndNxt)
            self._abortHost()
            self._remove()
            return
        flight = seqDiff(self.sndNxt, self.sndUna)
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.recover = None
        self.dupAcks = 0
        # go back N: resend from the first unacknowledged byte
        self.sndNxt = self.sndUna
        if self.finSent and not self.finAcked:
            self.finSent = False
        self.output()
        if self.timerKind is None and self.sndNxt != self.sndUna:
            self._arm("rexmt", self.rto)

    # -- closing -----------------------------------------------------------

    def _abortHost(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.abort()

    def _remove(self) -> None:
        self.state = CLOSED
        self._disarm()
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()
        self.layer.forget(self)
        stream, self.stream = self.stream, None
        if stream is not None:
            if self.finRcvd and self.finAcked:
                stream.close()
            else:
                stream.abort()

    def evict(self) -> None:
        """
        Give up a half-open connection to make room for a new one: the
        host side is aborted, the guest told nothing (its SYN
        retransmission tries again).
        """
        self.context.stats["tcp_halfopen_evicted"] += 1
        self._abortHost()
        self._remove()

    def reset(self) -> None:
        """
        Abort both sides (context shutdown).
        """
        if self.state in (ESTABLISHED, SYN_RCVD):
            self._send(RST | ACK, self.sndNxt)
        self._abortHost()
        self._remove()


class TcpLayer:
    def __init__(self, context: "LayerContext") -> None:
        self.context = context
        self.conns: dict[tuple, TcpConn] = {}
        #: The connections not yet established, oldest first (as a set).
        self.halfOpen: dict[TcpConn, None] = {}
        #: How many connections each guest address has in C{conns}.
        self.perGuest: dict[bytes, int] = {}
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
            count = self.perGuest.pop(conn.guest) - 1
            if count:
                self.perGuest[conn.guest] = count
        self.halfOpen.pop(conn, None)
        self.pendingAcks.discard(conn)
        self.blocked.discard(conn)

    def _admit(self, guest: bytes) -> bool:
        """
        Whether a new connection of C{guest} may have a table entry: not
        past its share; when the half-open budget or the table is full,
        the oldest half-open connection makes room.
        """
        config = self.context.config
        if self.perGuest.get(guest, 0) >= config.tcpPerGuest:
            self.context.stats["tcp_refused_guest_share"] += 1
            return False
        if len(self.halfOpen) >= config.tcpHalfOpen or len(self.conns) >= config.tcpMax:
            if not self.halfOpen:
                self.context.stats["tcp_refused_table_full"] += 1
                return False
            next(iter(self.halfOpen)).evict()
        return True

    def input(self, packet: bytes, ihl: int) -> None:
        """
        A TCP segment from the guest (C{packet}: the whole IP packet,
        C{ihl}: its header length; 40 for IPv6).
        """
        context = self.context
        segment = packet[ihl:]
        if len(segment) < 20:
            return
        v6 = ihl == 40 and packet[0] >> 4 == 6
        if v6:
            source, destination = packet[8:24], packet[24:40]
            pseudo = pseudo6(source, destination, P.PROTO_TCP, len(segment))
        else:
            source, destination = packet[12:16], packet[16:20]
            pseudo = pseudo4(source, destination, P.PROTO_TCP, len(segment))
        if (residue(segment) + pseudo) % 0xFFFF:
            context.stats["tcp_bad_checksum"] += 1
            return
        sport, dport, seq, ack, offset, flags, window, _, _ = P.TCP.unpack_from(segment)
        hlen = (offset >> 4) << 2
        if hlen < 20 or hlen > len(segment):
            return
        if not sport or not dport:
            return
        flags &= 0x3F
        key = (source, sport, destination, dport)
        conn = self.conns.get(key)
        payload = segment[hlen:]
        if conn is not None:
            if conn.state == CLOSED and flags & SYN and not flags & ACK:
                conn._remove()  # a new connection reusing the pair after TIME-WAIT
            else:
                conn.segment(seq, ack, flags, window, segment[20:hlen], payload)
                return
        if flags & RST:
            return
        if flags & ACK or not flags & SYN:
            self._reset(source, sport, destination, dport, seq, ack, flags, len(payload))
            return
        if flags & FIN:
            return
        target = context.policy.mapOutbound(destination, dport, "tcp")
        if target is None or not self._admit(source):
            context.stats["tcp_refused"] += 1
            self._reset(source, sport, destination, dport, seq, ack, flags, len(payload))
            return
        conn = TcpConn(self, key)
        self._add(conn)
        conn.guestSyn(seq, window, segment[20:hlen])
        if target[0] != "unix" and target[0] != "cmd":
            target = ("tcp",) + tuple(target)
        pending = context.host.connect(target, conn)
        if conn.state == CONNECTING:  # not already reported
            conn.pending = pending

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

    def listen(self, forward) -> None:
        def onAccept(stream, peer):
            return self.accepted(forward, stream, peer)

        self.listeners.append(
            self.context.host.listenTCP(str(forward.hostAddr), forward.hostPort, onAccept))

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
