"""
The behaviour every L{IVdePlug} promises, written once and run against every
plug and every public fake, in the manner of Twisted's C{ReactorBuilder}:
L{PlugBehaviourMixin} holds the tests, a subclass per plug says how to open
that plug and its far side.

The contract (C{docs/architecture.md}, L{vdetwist.interfaces.IVdePlug}):
frames go out and come in intact up to the plug's MTU; nothing is read
before C{startReceiving}, so frames that arrived earlier are delivered from
then on; pausing stops delivery and resuming delivers what waited; C{send}
never raises, and a frame that cannot go (empty, too large, after close) is
dropped and counted, never counted as sent; C{close} and C{stopProducing}
end the plug and the receiver's C{plugClosed} is called exactly once, with
L{PlugClosed} for a clean end and L{PlugLost} for a failure; a registered
producer is not left paused and an unregistered one is not touched.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Optional

from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support import DATA_TYPE, frame, settle, until
from vdetwist.errors import PlugClosed, PlugLost
from vdetwist.interfaces import IFrameReceiver, IPlugStats, IVdePlug
from vdetwist.plug import VDE_ETHBUFSIZE
from vdetwist.wire.stream import StreamDecoder, encode

#: Source MACs of the frames the plug under test sends and of those its
#: far side sends (distinct, so a learning switch between them is not
#: confused).
OUR_MAC = b"\x02\x00\x00\x00\x0b\x01"
FAR_MAC = b"\x02\x00\x00\x00\x0b\x02"


def ours(n: int, size: int = 100) -> bytes:
    return frame(n, size, src=OUR_MAC)


def theirs(n: int, size: int = 100) -> bytes:
    return frame(n, size, src=FAR_MAC)


def testFrames(frames: list[bytes]) -> list[bytes]:
    """
    The test frames among C{frames}: a real network has other traffic too
    (a kernel's router solicitations on a tap, a switch's probes).
    """
    return [f for f in frames if f[12:14] == DATA_TYPE]


def number(f: bytes) -> int:
    return struct.unpack_from(">I", f, 14)[0]


@implementer(IFrameReceiver)
class Recorder:
    """
    A receiver that records every frame and every C{plugClosed} reason.
    """

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.reasons: list[Failure] = []

    def frameReceived(self, frame: bytes) -> None:
        self.frames.append(bytes(frame))

    def plugClosed(self, reason: Failure) -> None:
        self.reasons.append(reason)

    def testFrames(self) -> list[bytes]:
        return testFrames(self.frames)


class Producer:
    """
    A streaming producer that records what it is told (a transport may
    pause it again while it is paused: the state is what counts).
    """

    def __init__(self) -> None:
        self.paused = False
        self.calls = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.calls += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self.calls += 1

    def stopProducing(self) -> None:
        self.calls += 1


class Far:
    """
    The far side of a plug under test: what plays the network.  Subclasses
    say how a frame is made to arrive at the plug (L{inject}), what the
    network heard from it (L{heard}) and how the network goes away
    (L{vanish}).
    """

    def inject(self, frame: bytes) -> None:
        raise NotImplementedError

    def heard(self) -> list[bytes]:
        raise NotImplementedError

    def vanish(self) -> None:
        raise NotImplementedError


class PlugFar(Far):
    """
    The far side is another plug: the other end of a pair, a port of the
    same switch, another member of the same group.
    """

    def __init__(self, plug: Any) -> None:
        self.plug = plug
        self.recorder = Recorder()
        plug.startReceiving(self.recorder)

    def inject(self, frame: bytes) -> None:
        self.plug.send(frame)

    def heard(self) -> list[bytes]:
        return self.recorder.frames

    def vanish(self) -> None:
        self.plug.close()


class SocketFar(Far):
    """
    The far side is a socket: datagrams (sent to C{address} if given, with
    C{header} before each frame) or, with C{stream}, the VDE stream encoding.
    """

    def __init__(self, sock: socket.socket, address: Any = None, header: bytes = b"",
                 stream: bool = False, listener: Optional[socket.socket] = None) -> None:
        self.socket = sock
        self.address = address
        self.header = header
        self.listener = listener or sock
        self.frames: list[bytes] = []
        self.decoder = StreamDecoder(self.frames.append, lambda *_: None) if stream else None
        self.listener.setblocking(False)

    def inject(self, frame: bytes) -> None:
        data = encode(frame) if self.decoder is not None else self.header + frame
        try:
            if self.address is None:
                self.socket.sendall(data)
            else:
                self.socket.sendto(data, self.address)
        except OSError:
            pass  # (The plug is gone: the network drops the frame.)

    def heard(self) -> list[bytes]:
        try:
            while True:
                data = self.listener.recv(65536)
                if not data:
                    break
                if self.decoder is not None:
                    self.decoder.feed(data)
                elif data.startswith(self.header):
                    self.frames.append(data[len(self.header):])
        except (BlockingIOError, OSError):
            pass
        return self.frames

    def vanish(self) -> None:
        self.socket.close()


class PlugBehaviourMixin:
    """
    The tests of the L{IVdePlug} contract.  Mix into a L{TestCase} and
    implement L{makePlug}; set the class attributes where the plug's network
    differs.
    """

    #: The largest frame the plug and its far side carry.
    mtu: int = VDE_ETHBUFSIZE
    #: A frame size the plug drops, when not C{mtu + 1}.
    oversize: Optional[int] = None
    #: What C{plugClosed} is given when the far side goes away; C{None}
    #: where the plug cannot tell (then L{peerGoneWhy} says why).
    peerGone: Optional[type] = PlugLost
    peerGoneWhy = ""
    #: Why frames cannot be made to arrive, where they cannot (C{null://}).
    noInjectWhy = ""
    #: Why what the plug sends cannot be observed, where it cannot.
    unheardWhy = ""
    #: Why the plug does not keep frames that arrive before
    #: C{startReceiving} or while paused, where it does not: then they must
    #: not be delivered at all.
    unbufferedWhy = ""
    #: How long to wait to be sure that something does not happen.
    quiet = 0.1

    async def makePlug(self) -> tuple[Any, Far]:
        """
        Open the plug under test (not yet receiving) and its far side;
        register their cleanups.
        """
        raise NotImplementedError

    async def receiving(self) -> tuple[Any, Far, Recorder]:
        plug, far = await self.makePlug()
        recorder = Recorder()
        plug.startReceiving(recorder)
        return plug, far, recorder

    def requireInject(self) -> None:
        if self.noInjectWhy:
            raise SkipTest(self.noInjectWhy)

    def sizes(self) -> list[int]:
        return sorted({60, min(1514, self.mtu), self.mtu})

    def listen(self, far: Far) -> bool:
        """
        Let the far side take what it was sent (a socket's buffer frees).
        """
        if not self.unheardWhy:
            far.heard()
        return True

    async def arrive(self, recorder: Recorder, frames: list[bytes], what: str) -> None:
        await until(lambda: len(recorder.testFrames()) >= len(frames), what)
        self.assertEqual(recorder.testFrames(), frames)

    async def oneClose(self, recorder: Recorder, expected: type) -> None:
        """
        C{plugClosed} was called, and stays called, exactly once with
        C{expected}.
        """
        await until(lambda: recorder.reasons, "plugClosed")
        await settle(self.quiet)
        self.assertEqual(len(recorder.reasons), 1, recorder.reasons)
        self.assertTrue(recorder.reasons[0].check(expected), recorder.reasons[0])

    async def test_provides(self) -> None:
        plug, _ = await self.makePlug()
        self.assertTrue(verifyObject(IVdePlug, plug))
        self.assertTrue(verifyObject(IPlugStats, plug.stats))
        self.assertIsInstance(plug.description, str)

    async def test_framesOut(self) -> None:
        """
        Frames of every size up to the MTU go out intact and in order, and
        are counted as sent.
        """
        plug, far, _ = await self.receiving()
        frames = [ours(i, size) for i, size in enumerate(self.sizes())]
        for f in frames:
            plug.send(f)
        self.assertEqual((plug.stats.sent, plug.stats.dropped), (len(frames), 0))
        if self.unheardWhy:
            return
        await until(lambda: len(testFrames(far.heard())) >= len(frames), "the frames sent")
        self.assertEqual(testFrames(far.heard()), frames)

    async def test_framesIn(self) -> None:
        """
        Frames of every size up to the MTU arrive intact and in order, and
        are counted as received.
        """
        self.requireInject()
        plug, far, recorder = await self.receiving()
        frames = [theirs(i, size) for i, size in enumerate(self.sizes())]
        for f in frames:
            far.inject(f)
        await self.arrive(recorder, frames, "the frames injected")
        self.assertEqual(plug.stats.received, len(recorder.frames))

    async def test_nothingBeforeStartReceiving(self) -> None:
        """
        Nothing is read before C{startReceiving}, so a frame that arrived
        before is delivered once it is called (or, where documented, never).
        """
        self.requireInject()
        plug, far = await self.makePlug()
        far.inject(theirs(1))
        await settle(self.quiet)
        self.assertEqual(plug.stats.received, 0)
        recorder = Recorder()
        plug.startReceiving(recorder)
        if self.unbufferedWhy:
            far.inject(theirs(2))
            await self.arrive(recorder, [theirs(2)], "a frame after startReceiving")
        else:
            await self.arrive(recorder, [theirs(1)], "the frame that waited")

    async def test_pauseResume(self) -> None:
        """
        A paused plug delivers nothing; resumed, it delivers what waited
        (unless it is documented not to keep it), in order, then what comes
        next.
        """
        self.requireInject()
        plug, far, recorder = await self.receiving()
        plug.pauseProducing()
        for i in range(5):
            far.inject(theirs(i))
        await settle(self.quiet)
        self.assertEqual(recorder.testFrames(), [])
        plug.resumeProducing()
        waited = [] if self.unbufferedWhy else [theirs(i) for i in range(5)]
        if waited:
            await self.arrive(recorder, waited, "the frames that waited")
        far.inject(theirs(5))
        await self.arrive(recorder, waited + [theirs(5)], "a frame after resuming")

    async def test_closeOnce(self) -> None:
        """
        C{close} calls C{plugClosed} once with L{PlugClosed}; closing again
        does nothing, and nothing is delivered after.
        """
        plug, far, recorder = await self.receiving()
        plug.close()
        self.assertEqual(len(recorder.reasons), 1)
        plug.close()
        if not self.noInjectWhy:
            far.inject(theirs(1))
        await self.oneClose(recorder, PlugClosed)
        self.assertEqual(recorder.testFrames(), [])

    async def test_stopProducingCloses(self) -> None:
        plug, _, recorder = await self.receiving()
        plug.stopProducing()
        await self.oneClose(recorder, PlugClosed)

    async def test_closedBeforeStartReceiving(self) -> None:
        """
        A plug closed before anybody listened still tells its receiver, once.
        """
        plug, _ = await self.makePlug()
        plug.close()
        recorder = Recorder()
        plug.startReceiving(recorder)
        await self.oneClose(recorder, PlugClosed)

    async def test_sendAfterClose(self) -> None:
        """
        A frame sent after close is dropped and counted, not sent.
        """
        plug, far, _ = await self.receiving()
        plug.close()
        plug.send(ours(1))
        self.assertEqual((plug.stats.sent, plug.stats.dropped), (0, 1))
        if not self.unheardWhy:
            await settle(self.quiet)
            self.assertEqual(testFrames(far.heard()), [])

    async def test_peerGone(self) -> None:
        """
        The far side going away ends the plug, once, with the reason the
        backend documents.
        """
        if self.peerGone is None:
            raise SkipTest(self.peerGoneWhy)
        plug, far, recorder = await self.receiving()
        far.vanish()
        await self.oneClose(recorder, self.peerGone)
        plug.close()
        await settle(self.quiet)
        self.assertEqual(len(recorder.reasons), 1)

    async def test_badFramesDropped(self) -> None:
        """
        C{send} never raises: an empty frame and frames larger than the
        plug carries are dropped and counted; the plug still works after.
        """
        plug, far, _ = await self.receiving()
        for bad in [b"", ours(1, self.oversize or self.mtu + 1), ours(2, 70000)]:
            plug.send(bad)
        self.assertEqual((plug.stats.sent, plug.stats.dropped), (0, 3))
        plug.send(ours(3))
        self.assertEqual(plug.stats.sent, 1)
        if self.unheardWhy:
            return
        await until(lambda: testFrames(far.heard()), "a good frame after bad ones")
        self.assertEqual(testFrames(far.heard()), [ours(3)])

    async def test_producerResumed(self) -> None:
        """
        A burst larger than any queue never raises; every frame is counted
        as sent or dropped; a producer paused on the way is resumed once the
        network has taken what was queued, and what arrives is in order.
        """
        plug, far, _ = await self.receiving()
        producer = Producer()
        plug.registerProducer(producer, True)
        total = 500
        for i in range(total):
            plug.send(ours(i, 1000))
        stats = plug.stats

        await until(
            lambda: self.listen(far) and stats.sent + stats.dropped == total
            and not producer.paused,
            "every frame accounted for and the producer resumed")
        if self.unheardWhy:
            return
        numbers = [number(f) for f in testFrames(far.heard())]
        self.assertEqual(numbers, sorted(set(numbers)))
        self.assertLessEqual(len(numbers), stats.sent)

    async def test_unregisteredProducer(self) -> None:
        """
        A producer unregistered is never paused nor resumed again.
        """
        plug, far, _ = await self.receiving()
        producer = Producer()
        plug.registerProducer(producer, True)
        plug.unregisterProducer()
        for i in range(500):
            plug.send(ours(i, 1000))
        await until(lambda: self.listen(far) and plug.stats.sent + plug.stats.dropped == 500,
                    "the burst to go")
        self.assertEqual(producer.calls, 0)

