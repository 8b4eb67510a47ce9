"""
The slirp engine's timers: one heap of deadlines for every layer, run by
L{TimerHeap.advance} when the engine's driver says the time has come.

Re-arming a L{Timer} later does not touch the heap (the stale entry is
skipped or re-queued when it comes due), so the per-segment retransmission
timer costs a comparison; the heap is swept of cancelled and superseded
entries once it doubles, so connections that come and go faster than their
timers expire (a SYN flood) cannot pile entries up.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable, Optional

#: Timer heap entries below which stale ones are not swept out.
MIN_HEAP_SWEEP = 1024


class Timer:
    """
    A one-shot timer of a L{TimerHeap}; C{reset} re-arms it (cheaply when
    moved later), C{cancel} stops it.
    """

    __slots__ = ("heap", "callback", "when", "queued")

    def __init__(self, heap: "TimerHeap", callback: Callable[[], None]) -> None:
        self.heap = heap
        self.callback = callback
        self.when: Optional[float] = None
        self.queued: Optional[float] = None

    def reset(self, when: float) -> None:
        self.when = when
        if self.queued is None or when < self.queued:
            self.queued = when
            self.heap.push(when, self)

    def cancel(self) -> None:
        self.when = None

    @property
    def active(self) -> bool:
        return self.when is not None


class TimerHeap:
    """
    The deadlines of all the L{Timer}s of an engine.

    @param timerChanged: called with the new earliest deadline when a timer
        is set earlier than the last one announced (the driver's wake-up).
    @param failed: called, inside the C{except} block, when a timer's
        callback raised; it may re-raise.
    """

    def __init__(self, timerChanged: Optional[Callable[[float], None]],
                 failed: Callable[[str], None]) -> None:
        self.timerChanged = timerChanged
        self.failed = failed
        self._heap: list = []
        self._sweepAt = MIN_HEAP_SWEEP
        self._seq = itertools.count()
        self._announced: Optional[float] = None
        self.closed = False

    def __len__(self) -> int:
        """
        The entries in the heap, live or stale (for the memory bounds).
        """
        return len(self._heap)

    def timer(self, callback: Callable[[], None]) -> Timer:
        return Timer(self, callback)

    def push(self, when: float, timer: Timer) -> None:
        if self.closed:
            return
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), timer))
        if len(heap) > self._sweepAt:
            self._sweep()
        if self.timerChanged is not None and (self._announced is None or when < self._announced):
            self._announced = when
            self.timerChanged(when)

    def _sweep(self) -> None:
        """
        Drop the entries of cancelled and re-armed timers.  In place, as
        L{advance} may be iterating.
        """
        heap = self._heap
        live = []
        for entry in heap:
            when, _, timer = entry
            if timer.queued != when:
                continue
            if timer.when is None:
                timer.queued = None
            else:
                live.append(entry)
        heapq.heapify(live)
        heap[:] = live
        self._sweepAt = max(MIN_HEAP_SWEEP, 2 * len(live))

    def nextDeadline(self) -> Optional[float]:
        """
        When L{advance} is next needed (possibly a little early).
        """
        heap = self._heap
        while heap:
            when, _, timer = heap[0]
            if timer.queued != when or timer.when is None:
                heapq.heappop(heap)
                if timer.queued == when:
                    timer.queued = None
                continue
            return when
        return None

    def advance(self, now: float) -> None:
        """
        Run the timers due at C{now}.
        """
        heap = self._heap
        self._announced = None
        while heap and heap[0][0] <= now:
            when, _, timer = heapq.heappop(heap)
            if timer.queued != when:
                continue  # superseded by an earlier entry
            timer.queued = None
            if timer.when is None:
                continue
            if timer.when > now:
                timer.queued = timer.when
                heapq.heappush(heap, (timer.when, next(self._seq), timer))
                continue
            timer.when = None
            try:
                timer.callback()
            except Exception:
                self.failed("slirp timer")

    def announce(self) -> None:
        """
        Tell the driver the earliest deadline left (after L{advance}).
        """
        deadline = self.nextDeadline()
        if deadline is not None and self.timerChanged is not None:
            self._announced = deadline
            self.timerChanged(deadline)

    def close(self) -> None:
        """
        Forget every deadline; timers set from now on are ignored.
        """
        self.closed = True
        self._heap.clear()
