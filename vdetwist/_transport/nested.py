"""
Nesting backends (C{vlan://}, C{agno://}): a plug that wraps the plug of a
nested VNL and rewrites the frames crossing it.

C{SCHEME://PREFIXE{lb}NESTED-VNLE{rb}} opens C{NESTED-VNL} through the same
registry, with the same (already decorated) description and open
arguments; without C{E{lb}...E{rb}} the nested network is the user's default
network, as in libvdeplug4.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.interfaces import IFrameReceiver, IVdePlug
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, PlugBase


def openNested(reactor, registry, nested: Optional[str], description: str, args) -> Deferred:
    """
    Open the nested VNL (C{None}: the default network) through C{registry}.

    C{description} is the one the nesting backend was given, already
    decorated by the registry, so it is passed on as it is.  (libvdeplug4
    decorates it a second time: a C C{vlan://3{vde:///sw}} shows as
    C{"vdeplug: user=root pid=9 user=root pid=9"} on the switch; vdetwist
    shows it once.)
    """
    return registry.open(reactor, nested, description, args, decorated=True)


@implementer(IFrameReceiver)
class _InnerReceiver:
    """
    Receives from the nested plug on behalf of a L{TransformPlug}.
    """

    __slots__ = ("outer",)

    def __init__(self, outer: "TransformPlug") -> None:
        self.outer = outer

    def frameReceived(self, frame: bytes) -> None:
        self.outer._fromInner(frame)

    def plugClosed(self, reason: Failure) -> None:
        self.outer._lost(reason)


@implementer(IVdePlug)
class TransformPlug(PlugBase):
    """
    A plug over another plug: C{outgoing} rewrites each frame sent (to the
    nested network), C{incoming} each frame received from it; either returns
    C{None} to drop the frame.

    Flow control passes through: pausing this plug pauses the nested one,
    and a producer registered here is registered on the nested plug, which
    pauses it while its own queue is full.  Closing either closes both.
    """

    def __init__(self, description: str, inner: IVdePlug) -> None:
        super().__init__(description)
        self.inner = inner

    def outgoing(self, frame: bytes) -> Optional[bytes]:
        return frame

    def incoming(self, frame: bytes) -> Optional[bytes]:
        return frame

    def send(self, frame: bytes) -> None:
        if self.closed or not ETH_HDRLEN <= len(frame) <= VDE_ETHBUFSIZE:
            self.stats.dropped += 1
            return
        out = self.outgoing(frame)
        if out is None:
            self.stats.dropped += 1
            return
        self.stats.sent += 1
        self.inner.send(out)

    def _fromInner(self, frame: bytes) -> None:
        out = self.incoming(frame)
        if out is not None:
            self.stats.received += 1
            self.receiver.frameReceived(out)

    def _startReading(self) -> None:
        self.inner.startReceiving(_InnerReceiver(self))

    def pauseProducing(self) -> None:
        self.inner.pauseProducing()

    def resumeProducing(self) -> None:
        self.inner.resumeProducing()

    def registerProducer(self, producer, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        self.inner.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        self.inner.unregisterProducer()

    def _release(self) -> None:
        self.inner.close()
