"""
What the two sans-IO engines on an Ethernet share, the slirp engine
(L{vdetwist.slirp.engine.SlirpEngine}, the guests' router) and the host
stack (L{vdetwist.stack.host.HostStack}, one host): the clock and the timer
heap, counters, strict or logged failures, input in batches (C{input},
then C{flush}) as L{vdetwist.slirp.driver.Driver} runs it, and IPv4/IPv6
reassembly with its housekeeping timer.

The per-frame demux stays each engine's own (C{_input}); what is here runs
once per frame only as the C{try} around it, or off the per-frame path
(fragments, timers, errors).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Callable, Optional

from twisted.logger import Logger

from vdetwist.slirp.ipv4 import Reassembler
from vdetwist.slirp.ipv6 import FRAGMENT_HLEN, Reassembler6
from vdetwist.slirp.timers import TimerHeap

log = Logger()

#: Frames kept while the link does not take any (more are dropped).
MAX_OUTPUT_QUEUE = 512
#: How often incomplete reassemblies (and the engine's other expiring
#: state) are looked at while there are any.
HOUSEKEEPING_INTERVAL = 1.0


class EngineCore:
    """
    The base of both engines; see the module docstring.

    Subclasses define C{_input(frame, trusted)} (the demux),
    C{_reassemblyTimedOut(quote)} and C{tcp} (with C{pendingAcks} and
    C{flush()}), and may extend L{expire}.

    @ivar name: how failures are logged (C{"NAME: flushing"}).
    @ivar inputFailure: what a failure in C{input} is logged as.
    """

    name = "engine"
    inputFailure = "engine: handling a frame"
    #: the TCP layer (what C{flush} sends held-back ACKs through)
    tcp: Any

    def __init__(self, clock: Callable[[], float],
                 timerChanged: Optional[Callable[[float], None]],
                 strict: bool, seed: Optional[int]) -> None:
        self.now = clock
        self.strict = strict
        self.random = random.Random(seed)
        self.stats: Counter = Counter()
        self.timers = TimerHeap(timerChanged, self._failed)
        self.timer = self.timers.timer
        self.writable = True
        self.closed = False
        self.reassembler = Reassembler(self._reassemblyTimedOut)
        self.reassembler6 = Reassembler6(self._reassemblyTimedOut)
        self.housekeeping = self.timer(self._housekeep)

    def _reassemblyTimedOut(self, quote: bytes) -> None:
        raise NotImplementedError()

    def _input(self, frame: bytes, trusted: bool) -> None:
        raise NotImplementedError()

    # -- timers ---------------------------------------------------------------

    def nextDeadline(self) -> Optional[float]:
        """
        When the engine next needs L{advance} (possibly a little early).
        """
        return self.timers.nextDeadline()

    def advance(self, now: Optional[float] = None) -> None:
        """
        Run the timers due at C{now} (default: the clock).
        """
        self.timers.advance(self.now() if now is None else now)
        self.flush()
        self.timers.announce()

    def _failed(self, what: str) -> None:
        """
        Called in an C{except} block: count and log the error (re-raise it
        with C{strict}).
        """
        self.stats["errors"] += 1
        if self.strict:
            raise
        log.failure(what)

    def ensureHousekeeping(self) -> None:
        if not self.housekeeping.active:
            self.housekeeping.reset(self.now() + HOUSEKEEPING_INTERVAL)

    def _housekeep(self) -> None:
        now = self.now()
        if self.expire(now):
            self.housekeeping.reset(now + HOUSEKEEPING_INTERVAL)

    def expire(self, now: float) -> bool:
        """
        Drop stale reassemblies (and, in an override, the engine's other
        expiring state); whether any remains to look at again later.
        """
        self.reassembler.expire(now)
        self.reassembler6.expire(now)
        return bool(self.reassembler.queues or self.reassembler6.queues)

    # -- input ----------------------------------------------------------------

    def input(self, frame: bytes, trusted: bool = False) -> None:
        """
        Handle one Ethernet frame.  Never raises (unless C{strict}).

        @param trusted: the frame's TCP or UDP checksum need not be checked
            (slirp's offloading guests; see
            L{vdetwist.slirp.engine.SlirpEngine._input}).
        """
        try:
            self._input(frame, trusted)
        except Exception:
            self._failed(self.inputFailure)

    def flush(self) -> None:
        """
        Send what was held back during a batch of input (cumulative ACKs).
        """
        if self.tcp.pendingAcks:
            try:
                self.tcp.flush()
            except Exception:
                self._failed(f"{self.name}: flushing")

    def receive(self, frame: bytes) -> None:
        """
        C{input} then C{flush}: one frame as a batch of its own.
        """
        self.input(frame)
        self.flush()

    def defragment4(self, ihl: int, packet: bytes) -> Optional[tuple[int, bytes]]:
        """
        A fragment of an IPv4 datagram: the whole datagram's header length
        and datagram once complete, else C{None}.
        """
        whole = self.reassembler.add(ihl, packet, self.now())
        self.ensureHousekeeping()
        if whole is None:
            return None
        return (whole[0] & 0x0F) << 2, whole

    def defragment6(self, packet: bytes) -> Optional[bytes]:
        """
        An IPv6 packet whose next header is a fragment header: the whole
        packet once complete, else C{None}.
        """
        if len(packet) < FRAGMENT_HLEN:
            return None
        whole = self.reassembler6.add(FRAGMENT_HLEN, packet, self.now())
        self.ensureHousekeeping()
        return whole
