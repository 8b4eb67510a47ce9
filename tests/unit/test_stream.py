"""
The VDE stream encoding: the sans-IO decoder and encoder, and L{StreamPlug}
over a transport.
"""

from __future__ import annotations

import struct

from hypothesis import given, strategies as st
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.support import SlowPeerTransport, frame, records
from vdetwist.cable import Cable
from vdetwist.errors import PlugClosed, PlugLost
from vdetwist.interfaces import IVdePlug
from vdetwist.wire.stream import MAX_STREAM_FRAME, StreamDecoder, encode
from vdetwist.streamplug import PAUSED_SLACK, StreamPlug
from vdetwist.testing import FrameCollector, MemoryPlug


class Decoded:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.errors: list[tuple[int, int]] = []
        self.decoder = StreamDecoder(self.frames.append, self._error)

    def _error(self, length: int, discarded: int) -> None:
        self.errors.append((length, discarded))


class EncodeTests(SynchronousTestCase):
    def test_header(self) -> None:
        """
        A record is the 2-byte big-endian length and the frame.
        """
        self.assertEqual(encode(b"abc"), b"\x00\x03abc")
        self.assertEqual(encode(b"x" * 300)[:2], b"\x01\x2c")

    def test_tooLarge(self) -> None:
        """
        Frames longer than the C receiver accepts are not encoded (the C
        sender drops them too); the largest that fits is.
        """
        self.assertEqual(encode(b"x" * (MAX_STREAM_FRAME + 1)), b"")
        self.assertEqual(len(encode(b"x" * MAX_STREAM_FRAME)), MAX_STREAM_FRAME + 2)


class DecoderTests(SynchronousTestCase):
    def test_wholeRecords(self) -> None:
        """
        Several records in one chunk are all delivered, in order.
        """
        d = Decoded()
        frames = [frame(i, 60 + i) for i in range(5)]
        d.decoder.feed(records(frames))
        self.assertEqual(d.frames, frames)
        self.assertEqual(d.decoder.buffered, 0)

    def test_splitHeader(self) -> None:
        """
        A header split across chunks is buffered; the C receiver loses the
        frame here, we do not.
        """
        d = Decoded()
        data = records([frame(1), frame(2)])
        for i in range(len(data)):
            d.decoder.feed(data[i : i + 1])
        self.assertEqual(d.frames, [frame(1), frame(2)])

    def test_zeroLength(self) -> None:
        """
        Zero-length records are skipped.
        """
        d = Decoded()
        d.decoder.feed(b"\x00\x00" + records([frame(1)]) + b"\x00\x00")
        self.assertEqual(d.frames, [frame(1)])
        self.assertEqual(d.decoder.buffered, 0)

    def test_oversized(self) -> None:
        """
        A length over L{MAX_STREAM_FRAME} is reported, the rest of the chunk
        is discarded, and decoding resumes with the next chunk, as the C
        receiver does.
        """
        d = Decoded()
        d.decoder.feed(records([frame(1)]) + b"\xff\xff" + b"junk" * 10)
        d.decoder.feed(records([frame(2)]))
        self.assertEqual(d.frames, [frame(1), frame(2)])
        self.assertEqual(d.errors, [(0xFFFF, 42)])

    def test_largestFrame(self) -> None:
        """
        A record of exactly L{MAX_STREAM_FRAME} bytes is accepted.
        """
        d = Decoded()
        d.decoder.feed(struct.pack(">H", MAX_STREAM_FRAME) + b"y" * MAX_STREAM_FRAME)
        self.assertEqual(d.frames, [b"y" * MAX_STREAM_FRAME])
        self.assertEqual(d.errors, [])

    @given(
        st.lists(st.binary(min_size=1, max_size=2000), max_size=20),
        st.lists(st.integers(min_value=1, max_value=3000), max_size=30),
    )
    def test_anyChunking(self, frames: list[bytes], cuts: list[int]) -> None:
        """
        However the stream is cut into chunks, the same frames come out.
        """
        d = Decoded()
        data = records(frames)
        pos = 0
        for cut in cuts:
            d.decoder.feed(data[pos : pos + cut])
            pos += cut
        d.decoder.feed(data[pos:])
        self.assertEqual(d.frames, frames)
        self.assertEqual(d.decoder.buffered, 0)

    @given(st.binary(max_size=5000))
    def test_garbage(self, data: bytes) -> None:
        """
        Garbage never raises and never yields a frame larger than allowed.
        """
        d = Decoded()
        d.decoder.feed(data)
        self.assertTrue(all(0 < len(f) <= MAX_STREAM_FRAME for f in d.frames))


class StreamPlugTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.plug = StreamPlug("test stream")
        self.transport = StringTransport()
        self.plug.makeConnection(self.transport)
        self.collector = FrameCollector()

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IVdePlug, self.plug))

    def test_notReadUntilReceiving(self) -> None:
        """
        The transport is paused until somebody receives, so nothing is lost
        before the plug is wired up.
        """
        self.assertEqual(self.transport.producerState, "paused")
        self.plug.startReceiving(self.collector)
        self.assertEqual(self.transport.producerState, "producing")

    def test_receive(self) -> None:
        self.plug.startReceiving(self.collector)
        self.plug.dataReceived(records([frame(1), frame(2)]))
        self.assertEqual(self.collector.frames, [frame(1), frame(2)])
        self.assertEqual(self.plug.stats.received, 2)

    def test_send(self) -> None:
        self.plug.send(frame(3))
        self.assertEqual(self.transport.value(), records([frame(3)]))
        self.assertEqual(self.plug.stats.sent, 1)

    def test_sendTooLarge(self) -> None:
        self.plug.send(b"z" * (MAX_STREAM_FRAME + 1))
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.plug.stats.dropped, 1)

    def test_badLength(self) -> None:
        """
        An oversized record is logged with the numbers, counted as
        discarded, and later frames still arrive.
        """
        self.plug.startReceiving(self.collector)
        with capturedLogs() as events:
            self.plug.dataReceived(b"\xff\xf0garbage")
        self.plug.dataReceived(records([frame(4)]))
        self.assertEqual(self.collector.frames, [frame(4)])
        self.assertEqual((self.plug.stats.discarded, self.plug.stats.received), (1, 1))
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        text = formatEvent(event)
        self.assertIn("test stream", text)
        self.assertIn("65520", text)
        self.assertIn("discarded 9 bytes", text)

    def test_backPressure(self) -> None:
        """
        When the transport's buffer fills, whoever sends into the plug is
        paused, and resumed when it drains.
        """
        sender = MemoryPlug()
        self.plug.registerProducer(sender, True)
        self.transport.producer.pauseProducing()
        self.assertTrue(sender.paused)
        self.transport.producer.resumeProducing()
        self.assertFalse(sender.paused)

    def test_pauseWithinChunk(self) -> None:
        """
        A receiver that pauses the plug gets no more frames, even from the
        chunk being decoded; they come on resume, in order.
        """
        frames = [frame(i) for i in range(5)]

        class Pauser(FrameCollector):
            def frameReceived(inner, f: bytes) -> None:
                super().frameReceived(f)
                if len(inner.frames) == 2:
                    self.plug.pauseProducing()

        receiver = Pauser()
        self.plug.startReceiving(receiver)
        self.plug.dataReceived(records(frames))
        self.assertEqual(receiver.frames, frames[:2])
        self.plug.resumeProducing()
        self.assertEqual(receiver.frames, frames)
        self.assertEqual(self.transport.producerState, "producing")

    def test_peerDied(self) -> None:
        """
        The transport stopping its producer before reporting a lost
        connection does not hide the loss.
        """
        self.plug.startReceiving(self.collector)
        self.transport.producer.stopProducing()
        self.plug.connectionLost(Failure(ConnectionLost("peer killed")))
        self.assertTrue(self.collector.reason.check(PlugLost))

    def test_pauseStopsReading(self) -> None:
        self.plug.startReceiving(self.collector)
        self.plug.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.plug.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_endOfStream(self) -> None:
        """
        The connection ending cleanly closes the plug cleanly.
        """
        self.plug.startReceiving(self.collector)
        self.plug.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.collector.reason.check(PlugClosed))
        self.assertTrue(self.plug.closed)

    def test_connectionLost(self) -> None:
        self.plug.startReceiving(self.collector)
        self.plug.connectionLost(Failure(ConnectionLost("cable cut")))
        self.assertTrue(self.collector.reason.check(PlugLost))
        self.assertIn("cable cut", self.collector.reason.getErrorMessage())

    def test_close(self) -> None:
        """
        Closing drops the connection and notifies once.
        """
        self.plug.startReceiving(self.collector)
        self.plug.close()
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.collector.reason.check(PlugClosed))
        self.plug.connectionLost(Failure(ConnectionDone()))
        self.plug.send(frame(5))
        self.assertEqual(self.plug.stats.dropped, 1)


class StreamPlugBoundTests(SynchronousTestCase):
    """
    issue 8, defect 1: what a stream plug writes is bounded however slowly
    its peer reads, on Twisted's own transport buffer.
    """

    def setUp(self) -> None:
        self.transport = SlowPeerTransport()
        self.plug = StreamPlug("slow peer")
        self.plug.makeConnection(self.transport)
        self.plug.startReceiving(FrameCollector())
        self.bound = self.transport.bufferSize + PAUSED_SLACK

    def peerFrames(self) -> list[bytes]:
        peer = Decoded()
        peer.decoder.feed(bytes(self.transport.received))
        return peer.frames

    def test_peerNotReading(self) -> None:
        """
        Without a producer (a switch port), frames beyond the transport's
        buffer and the slack are dropped and counted; once the peer reads
        everything, frames are written again.
        """
        frames = [frame(i, 1400) for i in range(1000)]
        for f in frames:
            self.plug.send(f)
        stats = self.plug.stats
        self.assertLessEqual(self.transport.pending, self.bound)
        self.assertGreater(self.transport.pending, self.transport.bufferSize)
        self.assertEqual(self.transport.pending, stats.sent * 1402)
        self.assertEqual(stats.sent + stats.dropped, 1000)
        self.transport.flush()
        self.assertEqual(self.peerFrames(), frames[: stats.sent])
        dropped = stats.dropped
        self.plug.send(frames[-1])
        self.transport.flush()
        self.assertEqual(self.peerFrames()[-1], frames[-1])
        self.assertEqual(stats.dropped, dropped)

    def test_producerPausedThenDropping(self) -> None:
        """
        A registered producer is paused when the buffer fills; frames it
        still sends fill the slack, then are dropped; it is resumed once
        the peer has read everything.
        """
        sender = MemoryPlug()
        self.plug.registerProducer(sender, True)
        for i in range(1000):
            self.plug.send(frame(i, 1400))
        self.assertTrue(sender.paused)
        self.assertGreater(self.plug.stats.dropped, 0)
        self.assertLessEqual(self.transport.pending, self.bound)
        self.transport.flush()
        self.assertFalse(sender.paused)

    def test_cableLosesNothing(self) -> None:
        """
        Through a cable, a slow peer pauses the other end, which holds its
        input back: every frame arrives, in order, none dropped, while the
        output buffered stays bounded.
        """
        source = StreamPlug("source")
        input = StringTransport()
        source.makeConnection(input)
        Cable(source, self.plug)
        frames = [frame(i, 1400) for i in range(2000)]
        source.dataReceived(records(frames))
        self.assertEqual(input.producerState, "paused")
        rounds = 0
        while len(self.peerFrames()) < len(frames):
            self.assertLessEqual(self.transport.pending, self.bound)
            self.transport.flush(100_000)
            rounds += 1
            self.assertLess(rounds, 1000, "the cable stopped")
        self.assertEqual(self.peerFrames(), frames)
        self.assertEqual(self.plug.stats.dropped, 0)
        self.assertEqual(input.producerState, "producing")
