"""
What every plug shares: its counters, its receiver, its producer and closing
exactly once.  Backends subclass L{PlugBase} and supply the I/O.
"""

from __future__ import annotations

from typing import Optional, Sequence

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import PlugClosed
from vdetwist.interfaces import IFrameReceiver, IPlugStats

#: Largest Ethernet frame libvdeplug4 handles: VDE_MAXMTU 9216 + 14 + 4.
VDE_ETHBUFSIZE = 9234
#: Ethernet header length; anything shorter is not a frame.
ETH_HDRLEN = 14


@implementer(IPlugStats)
class PlugStats:
    __slots__ = ("received", "sent", "dropped", "discarded")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.dropped = 0
        self.discarded = 0

    def __repr__(self) -> str:
        return (
            f"<PlugStats received={self.received} sent={self.sent} "
            f"dropped={self.dropped} discarded={self.discarded}>"
        )


@implementer(IFrameReceiver)
class _NoReceiver:
    """
    Stands in before C{startReceiving} and after close, so the hot path never
    tests for C{None}.
    """

    def frameReceived(self, frame: bytes) -> None:
        pass

    def plugClosed(self, reason: Failure) -> None:
        pass


class PlugBase:
    """
    Bookkeeping shared by all plugs.  Subclasses implement C{send},
    C{pauseProducing}, C{resumeProducing}, and the hooks L{_startReading} and
    L{_release}; they call L{_lost} when their network goes away.
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self.stats = PlugStats()
        self.receiver: IFrameReceiver = _NoReceiver()
        self.producer: Optional[IPushProducer] = None
        self.closed = False
        self.receiving = False
        self._closeReason: Optional[Failure] = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description!r}>"

    def startReceiving(self, receiver: IFrameReceiver) -> None:
        self.receiving = True
        if self.closed:
            # Closed before anybody listened: still tell the receiver, once.
            reason, self._closeReason = self._closeReason, None
            if reason is not None:
                receiver.plugClosed(reason)
            return
        self.receiver = receiver
        self._startReading()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        if not streaming:
            raise ValueError("plugs only accept streaming (push) producers")
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def stopProducing(self) -> None:
        self.close()

    def close(self) -> None:
        self._finish(Failure(PlugClosed(f"{self.description} closed")))

    def _lost(self, reason: Failure) -> None:
        """
        The network went away (or failed): close with C{reason}.
        """
        self._finish(reason)

    def _finish(self, reason: Failure) -> None:
        if self.closed:
            return
        self.closed = True
        self._release()
        receiver, self.receiver = self.receiver, _NoReceiver()
        self.producer = None
        if self.receiving:
            receiver.plugClosed(reason)
        else:
            self._closeReason = reason

    def _badSent(self, error: Exception) -> None:
        """
        A vnet frame given to C{sendVnet} (or received for a plain
        receiver) had a header that lies: count it dropped.
        """
        self.stats.dropped += 1

    def _startReading(self) -> None:
        """
        Begin delivering frames to C{self.receiver}.
        """

    def _release(self) -> None:
        """
        Free the plug's resources (called once, on close).
        """


class ReaderPlug(PlugBase):
    """
    A plug whose frames come from reactor readers (its own descriptor, or
    several sockets): pausing it stops reading them, so the kernel's queues
    fill and drop, as they would for any slow VDE peer.

    @ivar readers: the L{twisted.internet.interfaces.IReadDescriptor}s to read; C{(self,)} unless a
        subclass has others.
    """

    def __init__(self, reactor, description: str) -> None:
        super().__init__(description)
        self.reactor = reactor
        self.paused = False
        self.readers: Sequence = (self,)

    def _startReading(self) -> None:
        if not self.paused:
            for reader in self.readers:
                self.reactor.addReader(reader)

    def pauseProducing(self) -> None:
        self.paused = True
        for reader in self.readers:
            self.reactor.removeReader(reader)

    def resumeProducing(self) -> None:
        self.paused = False
        if self.receiving and not self.closed:
            for reader in self.readers:
                self.reactor.addReader(reader)
