"""
A cheaper dispatch of readiness events to the descriptor plugs, on Twisted's
epoll reactor.

For every ready descriptor C{EPollReactor.doPoll} calls
C{log.callWithLogger}, which asks the descriptor for its C{logPrefix} and
runs C{_doReadOrWrite} in a copy of the log context with C{"system"} set to
it: nine Python calls around each event, as much as a plug spends reading
a frame.  L{install} gives the reactor a C{doPoll} that, for descriptors
with a true C{fastEvents} attribute (the plugs of L{vdetwist._transport}),
pushes the same context directly (so C{log.msg} and C{log.err} inside see
the same C{system}) and runs the same C{_doReadOrWrite}; every other
descriptor goes through Twisted's own path.

This relies on reactor internals (C{_poller}, C{_selectables},
C{_doReadOrWrite}) and on L{twisted.python.context}'s per-thread
C{ContextTracker.contexts}: L{SUPPORTED}, checked at import, says whether
they are as expected, and where they are not (or the reactor is not an
epoll reactor) L{install} changes nothing.
"""

from __future__ import annotations

import errno
import functools
import inspect
from typing import Any, Optional

from twisted.python import context, log

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # not Linux
    EPollReactor = None  # type: ignore[assignment,misc]


def _supported() -> bool:
    """
    Whether Twisted's internals are what L{_doPoll} stands in for.
    """
    if EPollReactor is None:
        return False
    if EPollReactor.doIteration is not EPollReactor.doPoll:
        return False
    if not isinstance(context.theContextTracker, context.ThreadedContextTracker):
        return False
    if not isinstance(getattr(context.ContextTracker(), "contexts", None), list):
        return False
    try:
        source = inspect.getsource(EPollReactor.doPoll)
    except (OSError, TypeError):
        return False
    return all(
        part in source
        for part in ("self._poller.poll(timeout, len(self._selectables))",
                     "log.callWithLogger(selectable, _drdw, selectable, fd, event)")
    )


#: Whether L{install} can work with this Twisted.
SUPPORTED = _supported()


def install(reactor: Any) -> bool:
    """
    Give C{reactor} the faster dispatch, if it is an epoll reactor of a
    Twisted L{SUPPORTED} knows; return whether it has it.
    """
    if getattr(reactor, "_vdetwistDispatch", False):
        return True
    if not SUPPORTED or not isinstance(reactor, EPollReactor):
        return False
    if not all(hasattr(reactor, name) for name in ("_poller", "_selectables", "_doReadOrWrite")):
        return False

    # Patching this reactor's own loop is the point (checked above against
    # this Twisted's internals); mypy forbids assigning to methods and
    # attributes EPollReactor does not declare.
    reactor.doPoll = reactor.doIteration = functools.partial(  # type: ignore[method-assign]
        _doPoll, reactor)
    reactor._vdetwistDispatch = True  # type: ignore[attr-defined]
    return True


def _doPoll(reactor: Any, timeout: Optional[float]) -> None:
    """
    C{EPollReactor.doPoll}, with the log context of a C{fastEvents}
    descriptor pushed inline.
    """
    if timeout is None:
        timeout = -1
    selectables = reactor._selectables
    try:
        events = reactor._poller.poll(timeout, len(selectables))
    except OSError as err:
        if err.errno == errno.EINTR:
            return
        raise
    drdw = reactor._doReadOrWrite
    contexts = None
    base: dict = {}
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        if not getattr(selectable, "fastEvents", False):
            log.callWithLogger(selectable, drdw, selectable, fd, event)
            continue
        if contexts is None:
            # The context stack is the same for every event of this poll.
            contexts = context.theContextTracker.currentContext().contexts
            for frame in reversed(contexts):
                if log.ILogContext in frame:
                    base = frame[log.ILogContext]
                    break
        logContext = base.copy()
        logContext["system"] = prefix = selectable.logPrefix()
        try:
            contexts.append({log.ILogContext: logContext})
            try:
                drdw(selectable, fd, event)
            finally:
                contexts.pop()
        except KeyboardInterrupt:
            raise
        except BaseException:
            log.err(system=prefix)
