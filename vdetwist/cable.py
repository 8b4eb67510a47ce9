"""
A cable joins two plugs: every frame received on one is sent on the other.

It is what C{vde_plug VNL1 VNL2} runs, and, with a L{StreamPlug} on stdio at
one end, what C{vde_plug VNL} runs.  Each plug is the other's producer, so a
full queue on one side pauses reading on the other instead of dropping.
Between two L{IVnetPlug}s (C{vde_plug tap://A tap://B}) frames pass as vnet
frames, so super-frames cross in one piece.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.interfaces import IFrameReceiver, IVdePlug, IVnetPlug, IVnetReceiver
from vdetwist.plug import ETH_HDRLEN


@implementer(IFrameReceiver)
class _CableEnd:
    def __init__(self, cable: Cable, target: IVdePlug) -> None:
        self.cable = cable
        self.target = target
        self.send = target.send

    def frameReceived(self, frame: bytes) -> None:
        if len(frame) >= ETH_HDRLEN:
            self.send(frame)

    def plugClosed(self, reason: Failure) -> None:
        self.cable._endClosed(reason, self.target)


@implementer(IVnetReceiver)
class _VnetCableEnd(_CableEnd):
    def __init__(self, cable: Cable, target: IVdePlug) -> None:
        super().__init__(cable, target)
        self.vnetFrameReceived = target.sendVnet  # type: ignore[attr-defined]


class Cable:
    """
    Two plugs joined until either closes; then the other is closed too.

    @ivar done: fires with the exception that closed the first plug to go
        (a L{vdetwist.errors.PlugClosed} for a clean end); never errbacks.
    """

    def __init__(self, a: IVdePlug, b: IVdePlug) -> None:
        self.plugs = (a, b)
        self.done: Deferred[BaseException] = Deferred()
        a.registerProducer(b, True)
        b.registerProducer(a, True)
        end = _VnetCableEnd if IVnetPlug.providedBy(a) and IVnetPlug.providedBy(b) else _CableEnd
        a.startReceiving(end(self, b))
        b.startReceiving(end(self, a))

    def close(self) -> None:
        for plug in self.plugs:
            plug.close()

    def _endClosed(self, reason: Failure, other: IVdePlug) -> None:
        if not self.done.called:
            assert reason.value is not None, "a Failure holds its exception"
            self.done.callback(reason.value)
        other.close()
