"""
The Twisted side of the slirp engine's time and input: L{Driver} runs a
sans-IO L{vdetwist.slirp.engine.SlirpEngine} on a Twisted clock, beside the
Twisted host sockets of L{vdetwist.slirp.host}.
"""

from __future__ import annotations

from typing import Optional, Protocol


class Driven(Protocol):
    """
    What a L{Driver} runs: a sans-IO engine taking frames and time (the
    slirp engine, L{vdetwist.stack.host.HostStack}).
    """

    closed: bool

    def advance(self, now: Optional[float] = None) -> None:
        ...

    def input(self, frame: bytes) -> None:
        ...

    def flush(self) -> None:
        ...


class Driver:
    """
    Runs an L{SlirpEngine} on a Twisted clock: one C{DelayedCall} at the
    earliest deadline, and batched input (L{Driver.input} collects frames
    and handles them, then flushes, once per reactor turn).
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self.engine: Optional[Driven] = None
        self._call = None
        self._batch: list[bytes] = []
        self._batchCall = None

    def attach(self, engine: Driven) -> None:
        self.engine = engine

    def timerChanged(self, when: float) -> None:
        call = self._call
        delay = max(0.0, when - self.clock.seconds())
        if call is not None and call.active():
            if call.getTime() <= when:
                return
            call.cancel()
        self._call = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        if self.engine is not None and not self.engine.closed:
            self.engine.advance(self.clock.seconds())

    def input(self, frame: bytes) -> None:
        self._batch.append(frame)
        if self._batchCall is None:
            self._batchCall = self.clock.callLater(0, self._drain)

    def flushSoon(self) -> None:
        """
        Have the engine flush at the end of this reactor turn (after the
        frames batched): for frames its owner gave it directly.
        """
        if self._batchCall is None:
            self._batchCall = self.clock.callLater(0, self._drain)

    def _drain(self) -> None:
        self._batchCall = None
        batch, self._batch = self._batch, []
        engine = self.engine
        if engine is None or engine.closed:
            return
        for frame in batch:
            engine.input(frame)
        engine.flush()

    def stop(self) -> None:
        for call in (self._call, self._batchCall):
            if call is not None and call.active():
                call.cancel()
        self._call = self._batchCall = None
        self._batch = []
