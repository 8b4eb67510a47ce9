"""
Reopening a link that dropped: when to try again, and trying.

L{Redialer} is shared by C{restart://} (a fixed polling period, as
libvdeplug_restart) and C{twistd vde --plug} (exponential backoff with a
cap).  It knows nothing of plugs: it calls C{dial} at the times its delays
say, and reports each outcome; the clock is injected, so the policy is
tested with L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.python.failure import Failure


class Redialer:
    """
    Calls C{dial} after L{linkDown} until one attempt succeeds: the first
    attempt C{initial} seconds after the drop, each next one C{factor}
    times later, at most C{maximum} apart.  A link that stayed up at least
    C{stable} seconds starts again from C{initial} when it drops; one that
    drops sooner goes on from where the delays were, so a peer that accepts
    and drops at once is not hammered.

    @param clock: an L{twisted.internet.interfaces.IReactorTime}.
    @param dial: opens the link; returns a L{Deferred} (or a value).
    @param connected: called with what C{dial} gave, when an attempt
        succeeds (the link is up again; call L{linkDown} when it drops).
    @param failed: called with the failure and the number of the attempt
        (1 for the first after a drop) when an attempt fails; the next is
        already scheduled.
    @param stable: defaults to C{maximum}.
    """

    def __init__(self, clock, dial: Callable[[], Any],
                 connected: Callable[[Any], None],
                 failed: Callable[[Failure, int], None],
                 initial: float, maximum: float, factor: float = 2.0,
                 stable: Optional[float] = None) -> None:
        self.clock = clock
        self.dial = dial
        self.connected = connected
        self.failed = failed
        self.initial = initial
        self.maximum = max(maximum, initial)
        self.factor = factor
        self.stable = self.maximum if stable is None else stable
        self.delay = initial
        self.attempts = 0
        self.stopped = False
        self._upSince: Optional[float] = clock.seconds()
        self._call = None
        self._dialing: Optional[Deferred] = None

    @property
    def waiting(self) -> bool:
        """
        An attempt is scheduled or under way.
        """
        return self._call is not None or self._dialing is not None

    def linkDown(self) -> float:
        """
        The link dropped: schedule the first attempt.

        @return: the seconds until it.
        """
        if self.stopped or self.waiting:
            return self.delay
        now = self.clock.seconds()
        if self._upSince is not None and now - self._upSince >= self.stable:
            self.delay = self.initial
        self._upSince = None
        self.attempts = 0
        return self._schedule()

    def stop(self) -> None:
        """
        No more attempts; one under way is cancelled (its L{Deferred}'s
        canceller closes what it may still open).
        """
        self.stopped = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        dialing, self._dialing = self._dialing, None
        if dialing is not None:
            dialing.cancel()

    def _schedule(self) -> float:
        delay = self.delay
        self._call = self.clock.callLater(delay, self._attempt)
        self.delay = min(self.delay * self.factor, self.maximum)
        return delay

    def _attempt(self) -> None:
        self._call = None
        self.attempts += 1
        self._dialing = d = maybeDeferred(self.dial)
        d.addCallbacks(self._succeeded, self._failed)

    def _succeeded(self, link: Any) -> None:
        self._dialing = None
        self._upSince = self.clock.seconds()
        self.connected(link)

    def _failed(self, failure: Failure) -> None:
        self._dialing = None
        if self.stopped or failure.check(CancelledError):
            return
        self._schedule()
        self.failed(failure, self.attempts)
