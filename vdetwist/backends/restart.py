"""
C{restart://[SECONDS]{NESTED-VNL}}: a link that comes back, compatible with
libvdeplug_restart.

The nested network is opened at once (a failure fails the open, as in C).
When it drops later (a switch killed or restarted, a command that ended),
the plug stays open and reopens the nested VNL every C{SECONDS} (20 by
default, 1 to a week) until that works; frames sent meanwhile are dropped
and counted in C{stats.dropped}, as on an unplugged wire.  The drop is
logged as a warning, the return at info level.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import VNLError, reasonText
from vdetwist.interfaces import IFrameReceiver, IVdeBackend, IVdePlug
from vdetwist._transport.nested import openNested
from vdetwist.plug import PlugBase
from vdetwist.reconnect import Redialer
from vdetwist.reference import SchemeReference
from vdetwist.vnl import parseSlash, strtol

#: libvdeplug_restart's polling period when none is given, and its bounds.
DEFAULT_PERIOD = 20
MAX_PERIOD = 7 * 24 * 60 * 60

#: libvdeplug_restart takes a period in the address part, and no options.
RESTART_OPTIONS: tuple[str, ...] = ()

REFERENCE = SchemeReference(
    scheme="restart",
    synopsis="restart://[SECONDS][{NESTED-VNL}]",
    description=(
        "A link to the NESTED-VNL network (the default network without `{...}`) "
        "that comes back by itself, as libvdeplug_restart: when the nested network "
        "drops (its switch is killed or restarted, its command ends), the plug stays "
        "open and reopens the nested VNL every SECONDS until that works. SECONDS is "
        "a C integer (`20`, `0x14`, `024`), 20 by default, brought into 1..604800 "
        "(a week). The first open must work: a nested network that cannot be "
        "opened fails the open. Frames sent while the link is down are dropped and "
        "counted. The drop is logged as a warning, the return at info level."
    ),
    grammar="slash",
    nested=True,
    table=RESTART_OPTIONS,
    examples=(
        ("restart://{vde:///tmp/sw}", "the switch `/tmp/sw`, reconnecting every 20 s"),
        ("restart://3{vde:///tmp/sw}", "the same, trying every 3 s"),
        ("restart://5{vlan://3{vde:///tmp/sw}}", "VLAN 3 of it; nested VNLs nest"),
    ),
    differences=(
        "A drop is seen when the nested plug reports it (the switch closes the "
        "connection, the command ends), at once; the C plugin finds it at its next "
        "poll, by a failing send. A nested network that never reports a drop "
        "(`vxvde://`, `udp://`) never needs restarting here.",
        "The C plugin prints its VNL on stdout when it opens; vdetwist does not.",
    ),
    manual="libvdeplug_restart",
)

log = Logger()


@implementer(IFrameReceiver)
class _Inner:
    """
    Receives from one nested plug (one connection of the link) on behalf of
    a L{RestartPlug}.
    """

    __slots__ = ("outer", "plug")

    def __init__(self, outer: "RestartPlug", plug: IVdePlug) -> None:
        self.outer = outer
        self.plug = plug

    def frameReceived(self, frame: bytes) -> None:
        outer = self.outer
        outer.stats.received += 1
        outer.receiver.frameReceived(frame)

    def plugClosed(self, reason: Failure) -> None:
        self.outer._innerLost(self.plug, reason)


@implementer(IVdePlug)
class RestartPlug(PlugBase):
    """
    A plug over a nested plug that is replaced by a new one whenever it
    drops.  Flow control passes through to the nested plug of the moment
    (and to each new one).

    @ivar inner: the nested plug, or C{None} while the link is down.
    """

    def __init__(self, reactor, description: str, inner: IVdePlug, nested: Optional[str],
                 openInner, period: float) -> None:
        super().__init__(description)
        self.inner: Optional[IVdePlug] = inner
        self.nested = nested
        self.period = period
        self.paused = False
        self.redialer = Redialer(reactor, openInner, self._reopened, self._reopenFailed,
                                 period, period)

    def send(self, frame: bytes) -> None:
        inner = self.inner
        if inner is None:
            self.stats.dropped += 1
            return
        self.stats.sent += 1
        inner.send(frame)

    def _startReading(self) -> None:
        if self.inner is not None:
            self.inner.startReceiving(_Inner(self, self.inner))

    def _innerLost(self, plug: IVdePlug, reason: Failure) -> None:
        if plug is not self.inner or self.closed:
            return
        self.inner = None
        why = reasonText(reason.value)
        delay = self.redialer.linkDown()
        log.warn("{vnl}: the nested network dropped ({why}); reopening it in {delay:g} s, "
                 "then every {period:g} s; frames sent meanwhile are dropped",
                 vnl=self.description, why=why, delay=delay, period=self.period)

    def _reopened(self, plug: IVdePlug) -> None:
        if self.closed:
            plug.close()
            return
        self.inner = plug
        if self.paused:
            plug.pauseProducing()
        if self.producer is not None:
            plug.registerProducer(self.producer, True)
        if self.receiving:
            plug.startReceiving(_Inner(self, plug))
        log.info("{vnl}: the nested network is back", vnl=self.description)

    def _reopenFailed(self, reason: Failure, attempt: int) -> None:
        if attempt == 1:
            why = reasonText(reason.value)
            log.info("{vnl}: cannot reopen the nested network yet ({why}); trying every "
                     "{period:g} s", vnl=self.description, why=why, period=self.period)

    def pauseProducing(self) -> None:
        self.paused = True
        if self.inner is not None:
            self.inner.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self.inner is not None:
            self.inner.resumeProducing()

    def registerProducer(self, producer, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        if self.inner is not None:
            self.inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        if self.inner is not None:
            self.inner.unregisterProducer()

    def _release(self) -> None:
        self.redialer.stop()
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.close()


def parsePeriod(vnl) -> tuple[int, Optional[str]]:
    """
    The polling period and the nested VNL (C{None}: the default network) of
    a C{restart://} VNL.

    @raise VNLError: the period is not a C integer, or an option is given
        (there are none).
    """
    prefix, nested = vnl.splitNested()
    address, _ = parseSlash(prefix, RESTART_OPTIONS, vnl.text)
    if not address:
        return DEFAULT_PERIOD, nested
    value, end = strtol(address)
    if not end or end != len(address):
        raise VNLError(vnl.text, address,
                       f"invalid polling period {address!r}: give whole seconds, e.g. "
                       f"restart://5{{...}}")
    return min(max(value, 1), MAX_PERIOD), nested


@implementer(IPlugin, IVdeBackend)
class RestartBackend:
    schemes = ("restart",)
    summary = "a link that reconnects when the nested VNL drops (restart://5{vde:///tmp/sw})"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        period, nested = parsePeriod(vnl)

        def openInner():
            return openNested(reactor, registry, nested, description, args)

        return maybeDeferred(openInner).addCallback(
            lambda inner: RestartPlug(reactor, vnl.text, inner, nested, openInner, period)
        )
