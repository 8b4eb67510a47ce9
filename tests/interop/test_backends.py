"""
The backends of the foundation on real sockets and processes: null, ptp,
udp, seqpacket, cmd, and the datagram plug they share.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.support import frame, tmpdir, until
from vdetwist.backends.cmd import s2argv
from vdetwist.backends.udp import parseUdp
from vdetwist._transport.dgram import DatagramPlug
from vdetwist.errors import CommandFailed, PlugClosed, PlugLost, VdeError, VNLError
from vdetwist.interfaces import IVdePlug
from vdetwist.registry import OpenArgs, registry
from vdetwist.testing import FrameCollector, MemoryPlug
from vdetwist.vnl import resolve


def settle(seconds: float = 0.05):
    return deferLater(reactor, seconds)


class PlugTestCase(TestCase):
    async def open(self, vnl: str, args: OpenArgs = OpenArgs()):
        plug = await registry.open(reactor, vnl, args=args)
        self.addCleanup(plug.close)
        self.assertTrue(verifyObject(IVdePlug, plug))
        collector = FrameCollector()
        plug.startReceiving(collector)
        return plug, collector


class NullTests(PlugTestCase):
    async def test_discards(self) -> None:
        plug, collector = await self.open("null://anything")
        plug.send(frame(1))
        await settle()
        self.assertEqual((plug.stats.sent, collector.frames), (1, []))


class PtpTests(PlugTestCase):
    async def test_pair(self) -> None:
        """
        Two opens of one VNL make the pair PATH and PATH+ (mode 0700 by
        default), and frames pass both ways, the first end connecting on
        its first send.
        """
        path = os.path.join(tmpdir(self), "ptp")
        a, atA = await self.open("ptp://" + path)
        b, atB = await self.open("ptp://" + path)
        for p in (path, path + "+"):
            self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o700)
        b.send(frame(1, 1500))
        a.send(frame(2, 9234))
        await settle()
        self.assertEqual((atA.frames, atB.frames), ([frame(1, 1500)], [frame(2, 9234)]))

    async def test_thirdRefused(self) -> None:
        path = os.path.join(tmpdir(self), "ptp")
        await self.open("ptp://" + path)
        await self.open("ptp://" + path)
        with self.assertRaises(VdeError) as caught:
            await self.open("ptp://" + path)
        self.assertEqual(caught.exception.errno, errno.EADDRINUSE)
        self.assertIn("both ends", str(caught.exception))

    async def test_staleReplaced(self) -> None:
        """
        A socket file left by a dead process is taken over.
        """
        path = os.path.join(tmpdir(self), "ptp")
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(path)
        dead.close()
        a, _ = await self.open("ptp://" + path)
        self.assertEqual(a.ownPath, path)

    async def test_modeAndCleanup(self) -> None:
        """
        The mode of the open arguments applies; closing removes the file.
        """
        path = os.path.join(tmpdir(self), "ptp")
        a, _ = await self.open("ptp://" + path, OpenArgs(mode=0o660))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        a.close()
        self.assertFalse(os.path.exists(path))

    async def test_emptyDatagramReconnects(self) -> None:
        """
        A zero-length datagram dissolves the pairing; the next send
        connects again.
        """
        path = os.path.join(tmpdir(self), "ptp")
        a, atA = await self.open("ptp://" + path)
        b, atB = await self.open("ptp://" + path)
        a.send(frame(1))
        await settle()
        self.assertTrue(a.connected)
        b.socket.send(b"")
        await settle()
        self.assertFalse(a.connected)
        a.send(frame(2))
        await settle()
        self.assertEqual(atB.frames, [frame(1), frame(2)])

    def test_noPath(self) -> None:
        self.failureResultOf(registry.open(reactor, "ptp://"), VNLError)


class UdpTests(PlugTestCase):
    def test_parse(self) -> None:
        cases = {
            "udp://5000->127.0.0.1:6000": ("", "5000", "127.0.0.1", "6000"),
            "udp://10.0.0.1:5000->h:6000": ("10.0.0.1", "5000", "h", "6000"),
            "udp://::1:5000->::1:6000": ("::1", "5000", "::1", "6000"),
            "udp://[::1]:5000->[::1]:6000": ("::1", "5000", "::1", "6000"),
            "udp://:5000->h:1": ("", "5000", "h", "1"),
        }
        for text, expected in cases.items():
            self.assertEqual(parseUdp(resolve(text)), expected, text)
        for bad in ["udp://5000", "udp://5000->6000"]:
            self.assertRaises(VNLError, parseUdp, resolve(bad))

    async def exchange(self, family: int, host: str) -> None:
        peer = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        peer.bind((host, 0))
        peer.settimeout(5)
        bracket = f"[{host}]" if ":" in host else host
        plug, collector = await self.open(f"udp://{bracket}:0->{bracket}:{peer.getsockname()[1]}")
        plug.send(frame(1, 1400))
        data, source = peer.recvfrom(65536)
        self.assertEqual(data, frame(1, 1400))
        peer.sendto(frame(2, 64), source)
        stranger = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(stranger.close)
        stranger.sendto(frame(3, 64), source)
        await settle(0.1)
        # After the first send only the destination is heard.
        self.assertEqual(collector.frames, [frame(2, 64)])

    async def test_ipv4(self) -> None:
        await self.exchange(socket.AF_INET, "127.0.0.1")

    async def test_ipv6(self) -> None:
        await self.exchange(socket.AF_INET6, "::1")

    async def test_unresolvable(self) -> None:
        with self.assertRaises(VdeError) as caught:
            await self.open("udp://5000->no.such.host.invalid:6000")
        self.assertEqual(caught.exception.errno, errno.ECONNABORTED)
        self.assertIn("cannot resolve", str(caught.exception))


class SeqpacketTests(PlugTestCase):
    async def test_socketpair(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(theirs.close)
        plug, collector = await self.open(f"seqpacket://{ours.detach()}")
        plug.send(frame(1, 9000))
        self.assertEqual(theirs.recv(65536), frame(1, 9000))
        theirs.send(frame(2))
        await settle()
        self.assertEqual(collector.frames, [frame(2)])
        theirs.close()
        await settle()
        self.assertTrue(collector.reason.check(PlugClosed))

    async def test_notASocket(self) -> None:
        r, w = os.pipe()
        self.addCleanup(os.close, w)
        with self.assertRaises(VdeError) as caught:
            await self.open(f"seqpacket://{r}")
        self.assertIn(f"descriptor {r} is not an open socket", str(caught.exception))

    async def test_negative(self) -> None:
        with self.assertRaises(VNLError):
            await self.open("seqpacket://-3")


class CmdTests(PlugTestCase):
    def test_s2argv(self) -> None:
        """
        libexecs' rules, as verified with the installed C library.
        """
        self.assertEqual(
            s2argv('printf "%s|" $FOO a\\ b "c d" x$FOO ; echo second'),
            ["printf", "%s|", "", "a b", "c d", "xFOO"],
        )
        self.assertEqual(s2argv("ssh 'h' 'vde_plug \"x\"'"), ["ssh", "h", 'vde_plug "x"'])
        self.assertEqual(s2argv('a "b\\"c"'), ["a", 'b"c'])
        self.assertEqual(s2argv(" \t\n"), [])

    async def test_echo(self) -> None:
        """
        C{cat} echoes the stream: frames come back byte-identical.
        """
        plug, collector = await self.open("cmd://cat")
        sent = [frame(i, size) for i, size in enumerate([14, 60, 1514, 9234])]
        for f in sent:
            plug.send(f)
        for _ in range(100):
            if len(collector.frames) == len(sent):
                break
            await settle()
        self.assertEqual(collector.frames, sent)

    async def test_commandEnds(self) -> None:
        """
        The command exiting closes the plug cleanly.
        """
        plug, collector = await self.open("cmd://true")
        reason = await self.waitEnd(collector)
        self.assertTrue(reason.check(PlugClosed))

    def kill(self, pidfile: str) -> None:
        with open(pidfile) as f:
            pid = int(f.read())
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def waitEnd(self, collector) -> Failure:
        await until(lambda: collector.reason is not None, "the plug to end")
        return collector.reason

    async def test_commandFails(self) -> None:
        """
        A command exiting with a status closes the plug with that status
        (L{CommandFailed}), not as a closed stdout (which it also is, a
        moment before).
        """
        plug, collector = await self.open("cmd://sh -c 'exit 3'")
        reason = await self.waitEnd(collector)
        reason.trap(CommandFailed)
        self.assertEqual(reason.value.status, 3)
        self.assertEqual(str(reason.value), "cmd://sh -c 'exit 3': the command exited with status 3")

    async def test_commandKilled(self) -> None:
        """
        A command killed by a signal is a lost network, not a failure it
        reported: L{PlugLost} naming the signal.
        """
        plug, collector = await self.open("cmd://sh -c 'kill -9 $$'")
        reason = await self.waitEnd(collector)
        reason.trap(PlugLost)
        self.assertNotIsInstance(reason.value, CommandFailed)
        self.assertEqual(str(reason.value),
                         "cmd://sh -c 'kill -9 $$': the command was killed by signal 9 (SIGKILL)")

    async def test_stdoutClosedWhileRunning(self) -> None:
        """
        A command that closes its stdout and keeps running ends the plug
        (after a grace period in which an exit would have been reported),
        as the C plug ends on EOF; its stdin is closed, so it can tell.
        """
        directory = tmpdir(self)
        marker = os.path.join(directory, "stdin-closed")
        pidfile = os.path.join(directory, "pid")
        script = (f"echo \\$\\$ >{pidfile}; exec 1>&-; cat >/dev/null; touch {marker}; "
                  "exec sleep 30")
        plug, collector = await self.open(f'cmd://sh -c "{script}"')
        self.addCleanup(self.kill, pidfile)
        reason = await self.waitEnd(collector)
        self.assertTrue(reason.check(PlugLost))
        self.assertIn("closed its standard output and is still running", str(reason.value))
        await until(lambda: os.path.exists(marker), "the command to see its stdin closed")

    async def test_notFound(self) -> None:
        with self.assertRaises(VdeError) as caught:
            await self.open("cmd://no-such-command-vdetwist arg")
        self.assertEqual(caught.exception.errno, errno.ENOENT)
        self.assertIn("command not found: no-such-command-vdetwist", str(caught.exception))

    async def test_quotedCommand(self) -> None:
        """
        The old README's C{cmd://"ssh host vde_plug /tmp/sw2"}: quotes make
        the whole command one word (as in C); the message says so.
        """
        for command in ["ssh host vde_plug", "/bin/vde_plug /tmp/sw2"]:
            with self.assertRaises(VdeError) as caught:
                await self.open(f'cmd://"{command}"')
            self.assertEqual(caught.exception.errno, errno.ENOENT)
            self.assertTrue(str(caught.exception).endswith(
                f"(quotes make the whole command one word: write cmd://{command},"
                f" and quote it for the shell as a whole: 'cmd://{command}')"), caught.exception)


class DatagramPlugFlowTests(TestCase):
    """
    A peer that does not read: frames queue, the producer is paused, then
    frames are dropped and counted; the reactor never blocks.
    """

    def plugOnPair(self, description: str) -> tuple[DatagramPlug, socket.socket]:
        """
        A plug on one end of a datagram socket pair, and the other end;
        both closed after the test.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(theirs.close)
        plug = DatagramPlug(reactor, ours, description)
        self.addCleanup(plug.close)
        return plug, theirs

    async def test_slowPeer(self) -> None:
        plug, theirs = self.plugOnPair("slow")
        producer = MemoryPlug()
        plug.registerProducer(producer, True)
        total = 2000
        for i in range(total):
            plug.send(frame(i, 1000))
        self.assertTrue(producer.paused)
        self.assertGreater(plug.stats.dropped, 0)
        received = []
        theirs.setblocking(False)
        for _ in range(200):
            try:
                while True:
                    received.append(theirs.recv(65536))
            except BlockingIOError:
                pass
            if plug.stats.sent + plug.stats.dropped == total and not plug._queue:
                break
            await settle(0.01)
        self.assertFalse(producer.paused)
        self.assertEqual(len(received), plug.stats.sent)
        self.assertEqual(plug.stats.sent + plug.stats.dropped, total)
        # What arrives is in order and intact.
        indexes = [int.from_bytes(f[14:18], "big") for f in received]
        self.assertEqual(indexes, sorted(indexes))
        self.assertEqual(received[0], frame(0, 1000))

    def test_resumedAfterPartialDrains(self) -> None:
        """
        A producer paused by a full queue is resumed when the queue empties,
        also when the peer takes it in several goes (a ptp peer's queue of
        10 datagrams frees a few slots per writability event).
        """

        class Choked:
            """
            A connected datagram socket whose peer has C{room} free slots.
            """

            def __init__(self) -> None:
                self.room = 0
                self.sent: list[bytes] = []

            def fileno(self) -> int:
                return 99

            def setblocking(self, flag: bool) -> None:
                pass

            def recv(self, size: int) -> bytes:
                raise BlockingIOError(errno.EAGAIN, "empty")

            def send(self, data: bytes) -> None:
                if not self.room:
                    raise BlockingIOError(errno.EAGAIN, "full")
                self.room -= 1
                self.sent.append(data)

        sock = Choked()
        plug = DatagramPlug(MemoryReactor(), sock, "choked")
        producer = MemoryPlug()
        plug.registerProducer(producer, True)
        frames = [frame(i) for i in range(plug.queueLimit)]
        for f in frames:
            plug.send(f)
        self.assertTrue(producer.paused)
        sock.room = 5
        plug.doWrite()
        self.assertTrue(producer.paused)
        sock.room = len(frames)
        plug.doWrite()
        self.assertFalse(producer.paused)
        self.assertEqual(sock.sent, frames)

    async def test_oversizedNotSent(self) -> None:
        plug, _ = self.plugOnPair("big")
        plug.send(b"x" * 9235)
        self.assertEqual((plug.stats.sent, plug.stats.dropped), (0, 1))

    async def test_runtsAndOversizedNotReceived(self) -> None:
        plug, theirs = self.plugOnPair("rx")
        collector = FrameCollector()
        plug.startReceiving(collector)
        for data in [b"short", b"y" * 9235, frame(1)]:
            theirs.send(data)
        await settle()
        self.assertEqual(collector.frames, [frame(1)])

    async def test_pause(self) -> None:
        plug, theirs = self.plugOnPair("paused")
        collector = FrameCollector()
        plug.startReceiving(collector)
        plug.pauseProducing()
        theirs.send(frame(1))
        await settle()
        self.assertEqual(collector.frames, [])
        plug.resumeProducing()
        await settle()
        self.assertEqual(collector.frames, [frame(1)])


class DatagramPlugErrorTests(TestCase):
    async def test_readErrorCloses(self) -> None:
        """
        A receive error other than a gone peer closes the plug with the
        reason, and no traceback is logged.
        """

        class Broken:
            def __init__(self, sock):
                self.sock = sock

            def recv(self, size):
                raise OSError(errno.EIO, "Input/output error")

            def __getattr__(self, name):
                return getattr(self.sock, name)

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(theirs.close)
        plug = DatagramPlug(reactor, Broken(ours), "broken")
        collector = FrameCollector()
        plug.startReceiving(collector)
        theirs.send(frame(1))
        await settle()
        self.assertTrue(plug.closed)
        self.assertEqual(
            collector.reason.getErrorMessage(), "broken: receive failed: Input/output error"
        )
        self.assertEqual(self.flushLoggedErrors(), [])
