"""
In-memory plugs for tests, vdetwist's own and its users'.

L{MemoryPlug} is a plug with no network behind it: frames the code under test
sends are collected in C{sentFrames}, and L{MemoryPlug.inject} plays a frame
arriving from the network.  L{plugPair} links two of them like a cable, with
a bounded queue and producer back-pressure, so flow control can be tested.

L{vdetwist.testing.netns} makes real network namespaces, taps and veths
(root, and pyroute2: the C{netns} extra); it is not imported here, so the
in-memory plugs need nothing beyond vdetwist.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import PlugClosed
from vdetwist.interfaces import IFrameReceiver, IVdePlug
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, PlugBase


@implementer(IVdePlug)
class MemoryPlug(PlugBase):
    """
    A plug whose network is the test.

    Like a real plug, it drops (and counts) what is not an Ethernet frame
    a VDE network carries: shorter than the header, longer than
    L{vdetwist.plug.VDE_ETHBUFSIZE}.

    @ivar sentFrames: frames sent while no peer is linked.
    @ivar pending: frames that arrived while paused (at most C{capacity};
        more are dropped and counted, like a full socket queue).
    """

    def __init__(self, description: str = "memory", capacity: int = 64) -> None:
        super().__init__(description)
        self.capacity = capacity
        self.sentFrames: list[bytes] = []
        self.pending: deque[bytes] = deque()
        self.paused = False
        self.reading = False
        self.peer: Optional[MemoryPlug] = None

    def send(self, frame: bytes) -> None:
        if self.closed or not ETH_HDRLEN <= len(frame) <= VDE_ETHBUFSIZE:
            self.stats.dropped += 1
            return
        if self.peer is None:
            self.sentFrames.append(bytes(frame))
            self.stats.sent += 1
        elif self.peer.inject(bytes(frame)):
            self.stats.sent += 1
        else:
            self.stats.dropped += 1

    def inject(self, frame: bytes) -> bool:
        """
        A frame arrives from the network.  Returns whether it was taken.
        """
        if self.closed:
            return False
        if self.paused or not self.reading or self.pending:
            if len(self.pending) >= self.capacity:
                return False
            self.pending.append(frame)
            if len(self.pending) == self.capacity and self.peer is not None:
                producer = self.peer.producer
                if producer is not None:
                    producer.pauseProducing()
            return True
        self.stats.received += 1
        self.receiver.frameReceived(frame)
        return True

    def _startReading(self) -> None:
        self.reading = True
        self._flush()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._flush()

    def _flush(self) -> None:
        wasFull = len(self.pending) >= self.capacity
        while self.pending and not self.paused and not self.closed:
            self.stats.received += 1
            self.receiver.frameReceived(self.pending.popleft())
        if wasFull and not self.pending and self.peer is not None:
            producer = self.peer.producer
            if producer is not None:
                producer.resumeProducing()

    def _release(self) -> None:
        self.pending.clear()
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            peer._lost(Failure(PlugClosed(f"{self.description} closed")))


def plugPair(
    a: str = "memory-a", b: str = "memory-b", capacity: int = 64
) -> tuple[MemoryPlug, MemoryPlug]:
    """
    Two plugs joined like a cable: a frame sent on one arrives at the other.
    """
    left, right = MemoryPlug(a, capacity), MemoryPlug(b, capacity)
    left.peer, right.peer = right, left
    return left, right


@implementer(IFrameReceiver)
class FrameCollector:
    """
    A receiver that records what it is given.

    @ivar frames: the frames received, in order.
    @ivar reason: the L{twisted.python.failure.Failure} given to C{plugClosed}, or C{None}.
    """

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.reason: Optional[Failure] = None

    def frameReceived(self, frame: bytes) -> None:
        self.frames.append(bytes(frame))

    def plugClosed(self, reason: Failure) -> None:
        self.reason = reason
