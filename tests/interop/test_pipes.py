"""
L{vdetwist._transport.pipes} on real pipes and a real reactor: a whole pipe per read,
pausing honoured (a paused pipe is not read), end of file, writes batched
with back-pressure as Twisted's, and C{cmd://}'s processes on the same
reader and writer.
"""

from __future__ import annotations

import array
import fcntl
import os
import shutil
import termios
from typing import Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import ProcessEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from tests.support import frame, records, settle, until
from vdetwist.errors import PlugClosed
from vdetwist._transport.pipes import (
    READ_SIZE, PipeProcess, PipeProcessReactor, PipeReader, PipeStandardIO, PipeWriter,
)
from vdetwist.streamplug import PAUSED_SLACK, StreamPlug, connectStreamPlug
from vdetwist.testing import FrameCollector, MemoryPlug


def unread(fd: int) -> int:
    """
    Bytes waiting in the pipe whose read end is C{fd}.
    """
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


class Chunks(Protocol):
    """
    Records each C{dataReceived} chunk and how the connection ended.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.reason: Optional[Failure] = None

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason


class PipeStandardIOTests(TestCase):
    def setUp(self) -> None:
        self.stdin, self.feeder = os.pipe()
        self.drain, self.stdout = os.pipe()
        self.open = {self.stdin, self.feeder, self.drain, self.stdout}
        self.addCleanup(lambda: [os.close(fd) for fd in self.open])

    def close(self, fd: int) -> None:
        os.close(fd)
        self.open.remove(fd)

    def connect(self, protocol: Protocol) -> PipeStandardIO:
        transport = PipeStandardIO(protocol, reactor, self.stdin, self.stdout)
        self.addCleanup(self.disconnect, transport)
        return transport

    def disconnect(self, transport: PipeStandardIO) -> None:
        if not transport.disconnected:
            transport.connectionLost(Failure(ConnectionDone()))

    async def test_wholePipePerRead(self) -> None:
        """
        A full pipe is taken in one read, where Twisted's reader takes 8 KiB.
        """
        data = os.urandom(READ_SIZE)
        os.write(self.feeder, data)
        protocol = Chunks()
        self.connect(protocol)
        await until(lambda: protocol.chunks, "data")
        self.assertEqual([len(c) for c in protocol.chunks], [READ_SIZE])
        self.assertEqual(protocol.chunks[0], data)

    async def test_pausedNotRead(self) -> None:
        """
        While paused, the pipe is not read at all: what is written stays in
        the pipe, and comes after resuming.
        """
        protocol = Chunks()
        transport = self.connect(protocol)
        transport.pauseProducing()
        os.write(self.feeder, b"held")
        await settle(0.05)
        self.assertEqual(protocol.chunks, [])
        self.assertEqual(unread(self.stdin), 4)
        transport.resumeProducing()
        await until(lambda: protocol.chunks, "data after resuming")
        self.assertEqual(protocol.chunks, [b"held"])

    async def test_endOfFile(self) -> None:
        """
        The writer closing its end: everything written is delivered, then
        the connection ends cleanly.
        """
        protocol = Chunks()
        self.connect(protocol)
        os.write(self.feeder, b"last words")
        self.close(self.feeder)
        await until(lambda: protocol.reason is not None, "the end")
        self.assertTrue(protocol.reason.check(ConnectionDone))
        self.assertEqual(b"".join(protocol.chunks), b"last words")

    async def test_writesBatched(self) -> None:
        """
        Writes wait for the reactor, which writes them all out together, in
        order.
        """
        transport = self.connect(Chunks())
        chunks = [bytes([i]) * 100 for i in range(50)]
        for chunk in chunks:
            transport.write(chunk)
        self.assertEqual(unread(self.drain), 0)
        await until(lambda: unread(self.drain) == 5000, "the output")
        self.assertEqual(os.read(self.drain, 65536), b"".join(chunks))

    async def test_outputBackPressure(self) -> None:
        """
        More than 64 KiB waiting to be written pauses the producer writing
        into the transport; it is resumed once all is written.
        """
        transport = self.connect(Chunks())
        producer = MemoryPlug()
        transport.registerProducer(producer, True)
        for _ in range(70):
            transport.write(b"x" * 1000)
        self.assertTrue(producer.paused)
        received = 0
        while received < 70000:
            await until(lambda: unread(self.drain), "the output")
            received += len(os.read(self.drain, 65536))
        await until(lambda: not producer.paused, "the producer to resume")

    async def test_stdoutClosed(self) -> None:
        """
        As with Twisted's StandardIO, the reader of stdout going away does
        not end the transport: writes are dropped, stdin is still read.
        """
        protocol = Chunks()
        transport = self.connect(protocol)
        self.close(self.drain)
        transport.write(b"into the void")
        await until(lambda: transport._writer is None, "the writer to go")
        transport.write(b"dropped")
        os.write(self.feeder, b"still read")
        await until(lambda: protocol.chunks, "data")
        self.assertEqual(protocol.chunks, [b"still read"])
        self.assertIsNone(protocol.reason)

    async def test_streamPlug(self) -> None:
        """
        A stream plug on these pipes, as C{vde_plug} runs it: records in,
        frames out, frames sent are written encoded, and end of file closes
        the plug with "end of stream".
        """
        plug = StreamPlug("stdio")
        self.connect(plug)
        collector = FrameCollector()
        plug.startReceiving(collector)
        frames = [frame(i, 1500) for i in range(100)]
        # At most a pipeful (64 KiB) at a time: the test is the reactor.
        for start in range(0, 100, 40):
            os.write(self.feeder, records(frames[start : start + 40]))
            await until(lambda: len(collector.frames) == min(start + 40, 100), "frames")
        self.assertEqual(collector.frames, frames)
        plug.send(frame(7))
        await until(lambda: unread(self.drain), "output")
        self.assertEqual(os.read(self.drain, 4096), records([frame(7)]))
        self.close(self.feeder)
        await until(lambda: collector.reason is not None, "the plug to close")
        self.assertTrue(collector.reason.check(PlugClosed))
        self.assertEqual(collector.reason.getErrorMessage(), "stdio: end of stream")

    async def test_streamPlugOutputBounded(self) -> None:
        """
        issue 8, defect 1: a stream plug on these pipes whose stdout is not
        read buffers at most the writer's 64 KiB and the plug's slack, and
        drops the rest; what it kept arrives in order once read, and then
        it writes again.
        """
        plug = StreamPlug("stdio")
        self.connect(plug)
        plug.startReceiving(FrameCollector())
        frames = [frame(i, 1500) for i in range(1000)]
        for f in frames:
            plug.send(f)
        sent = plug.stats.sent
        self.assertEqual(plug.stats.dropped, 1000 - sent)
        self.assertLessEqual(sent * 1502, PipeWriter.bufferSize + PAUSED_SLACK + 1502)
        output = bytearray()
        while len(output) < sent * 1502:
            await until(lambda: unread(self.drain), "the output")
            output += os.read(self.drain, 1 << 20)
        self.assertEqual(bytes(output), records(frames[:sent]))
        await until(lambda: plug._room is None, "the writer to flush")
        plug.send(frames[0])
        await until(lambda: unread(self.drain), "the next frame")
        self.assertEqual(os.read(self.drain, 4096), records(frames[:1]))
        self.assertEqual(plug.stats.sent, sent + 1)

    async def test_receiverPausesPlug(self) -> None:
        """
        A receiver that pauses the plug stops it within a large read, and
        the pipe is not read until it resumes.
        """
        plug = StreamPlug("stdio")
        self.connect(plug)
        frames = [frame(i, 1500) for i in range(40)]

        class Pauser(FrameCollector):
            def frameReceived(inner, f: bytes) -> None:
                super().frameReceived(f)
                if len(inner.frames) == 10:
                    plug.pauseProducing()

        receiver = Pauser()
        plug.startReceiving(receiver)
        os.write(self.feeder, records(frames[:30]))
        await until(lambda: receiver.frames, "frames")
        os.write(self.feeder, records(frames[30:]))
        await settle(0.05)
        self.assertEqual(receiver.frames, frames[:10])
        self.assertEqual(unread(self.stdin), len(records(frames[30:])))
        plug.resumeProducing()
        await until(lambda: len(receiver.frames) == 40, "the rest")
        self.assertEqual(receiver.frames, frames)


class ProcessOutput(ProcessProtocol):
    """
    Keeps its child's output unread until resumed; records each chunk.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.chunks.append(data)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class PipeProcessReactorTests(TestCase):
    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IReactorProcess, PipeProcessReactor(reactor)))

    async def test_wholePipePerRead(self) -> None:
        """
        A child's output is read a whole pipe at a time.
        """
        head = shutil.which("head")
        if head is None:
            raise SkipTest("no head")
        protocol = ProcessOutput()
        process = PipeProcessReactor(reactor).spawnProcess(
            protocol, head, [head, "-c", str(READ_SIZE), "/dev/zero"], env={},
            childFDs={0: "w", 1: "r", 2: 2},
        )
        self.assertIsInstance(process.pipes[0], PipeWriter)
        output = process.pipes[1]
        self.assertIsInstance(output, PipeReader)
        await until(lambda: unread(output.fileno()) == READ_SIZE, "the output")
        process.resumeProducing()
        await protocol.ended
        self.assertEqual([len(c) for c in protocol.chunks], [READ_SIZE])

    async def test_endpoint(self) -> None:
        """
        Through a L{ProcessEndpoint}, as C{cmd://} uses it: a stream plug on
        C{cat} gets back what it sends.
        """
        cat = shutil.which("cat")
        if cat is None:
            raise SkipTest("no cat")
        spawned = []

        class Recording(PipeProcessReactor):
            def spawnProcess(self, *args, **kwargs) -> PipeProcess:
                spawned.append(super().spawnProcess(*args, **kwargs))
                return spawned[-1]

        endpoint = ProcessEndpoint(Recording(reactor), cat, [cat], env={})
        plug = await connectStreamPlug(endpoint, "cat")
        collector = FrameCollector()
        plug.startReceiving(collector)
        frames = [frame(i, 1500) for i in range(100)]
        # Within the plug's bound at a time: it pauses nobody, so it would
        # drop the frames of a larger burst.
        for start in range(0, 100, 40):
            for f in frames[start : start + 40]:
                plug.send(f)
            await until(lambda: len(collector.frames) == min(start + 40, 100), "the frames back")
        self.assertEqual(collector.frames, frames)
        plug.close()
        self.assertTrue(collector.reason.check(PlugClosed))
        [process] = spawned
        await until(lambda: process.pid is None and not process.pipes, "cat to end")
