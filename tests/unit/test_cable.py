"""
Cables and the in-memory plugs of L{vdetwist.testing}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.support import frame
from vdetwist.cable import Cable
from vdetwist.errors import PlugClosed
from vdetwist.interfaces import IFrameReceiver, IVdePlug
from vdetwist.testing import FrameCollector, MemoryPlug, plugPair


class MemoryPlugTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        self.assertTrue(verifyObject(IVdePlug, MemoryPlug()))
        self.assertTrue(verifyObject(IFrameReceiver, FrameCollector()))

    def test_pairCarriesFrames(self) -> None:
        a, b = plugPair()
        received = FrameCollector()
        b.startReceiving(received)
        a.send(frame(1))
        self.assertEqual(received.frames, [frame(1)])
        self.assertEqual((a.stats.sent, b.stats.received), (1, 1))

    def test_heldUntilReceiving(self) -> None:
        """
        Frames arriving before C{startReceiving} wait for it.
        """
        a, b = plugPair()
        a.send(frame(1))
        received = FrameCollector()
        b.startReceiving(received)
        self.assertEqual(received.frames, [frame(1)])

    def test_pauseQueuesThenDrops(self) -> None:
        """
        A paused plug queues up to its capacity, pausing the sender's
        producer when full; beyond that frames are dropped and counted.
        """
        a, b = plugPair(capacity=3)
        producer = MemoryPlug()
        a.registerProducer(producer, True)
        received = FrameCollector()
        b.startReceiving(received)
        b.pauseProducing()
        for i in range(5):
            a.send(frame(i))
        self.assertTrue(producer.paused)
        self.assertEqual(a.stats.dropped, 2)
        b.resumeProducing()
        self.assertFalse(producer.paused)
        self.assertEqual(received.frames, [frame(0), frame(1), frame(2)])

    def test_closeReachesPeer(self) -> None:
        a, b = plugPair()
        ra, rb = FrameCollector(), FrameCollector()
        a.startReceiving(ra)
        b.startReceiving(rb)
        a.close()
        self.assertTrue(ra.reason.check(PlugClosed))
        self.assertTrue(rb.reason.check(PlugClosed))
        a.close()
        a.send(frame(1))
        self.assertEqual(a.stats.dropped, 1)


class CableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.left, self.a = plugPair("left", "a")
        self.b, self.right = plugPair("b", "right")
        self.cable = Cable(self.a, self.b)
        self.atLeft, self.atRight = FrameCollector(), FrameCollector()
        self.left.startReceiving(self.atLeft)
        self.right.startReceiving(self.atRight)

    def test_bothWays(self) -> None:
        self.left.send(frame(1))
        self.right.send(frame(2))
        self.assertEqual(self.atRight.frames, [frame(1)])
        self.assertEqual(self.atLeft.frames, [frame(2)])

    def test_runtFrames(self) -> None:
        """
        Anything shorter than an Ethernet header is not carried.
        """
        self.left.send(b"short")
        self.assertEqual(self.atRight.frames, [])

    def test_endClosesBoth(self) -> None:
        """
        When one end goes, the other is closed and C{done} fires with the
        reason of the first.
        """
        results: list[BaseException] = []
        self.cable.done.addCallback(results.append)
        self.left.close()
        self.assertTrue(self.a.closed and self.b.closed)
        self.assertIsInstance(results[0], PlugClosed)
        self.assertIn("left", str(results[0]))
        self.assertTrue(self.atRight.reason.check(PlugClosed))

    def test_backPressure(self) -> None:
        """
        A slow far end pauses the near end: frames wait in both plugs'
        queues, in order, and only what overflows both is dropped.
        """
        self.right.pauseProducing()
        for i in range(200):
            self.left.send(frame(i))
        self.assertTrue(self.a.paused)
        self.right.resumeProducing()
        self.assertFalse(self.a.paused)
        self.assertEqual(self.atRight.frames, [frame(i) for i in range(128)])
        self.assertEqual(self.left.stats.dropped, 72)


class ClosedBeforeReceivingTests(SynchronousTestCase):
    def test_toldOnStart(self) -> None:
        """
        A plug that closed before anybody received tells its first receiver
        (and only it).
        """
        a, b = plugPair()
        a.close()
        first, second = FrameCollector(), FrameCollector()
        b.startReceiving(first)
        b.startReceiving(second)
        self.assertTrue(first.reason.check(PlugClosed))
        self.assertIsNone(second.reason)
