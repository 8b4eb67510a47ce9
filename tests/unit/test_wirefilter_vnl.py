"""
Tests for L{vdetwist.backends.wirefilter}: C{wirefilter://} over in-memory
plugs on a L{Clock} (options, directions, errors, rc file, console, pid
file), and the figures through the real plugs in
L{tests.interop.test_wirefilter_interop}.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.nested_support import MemoryBackend
from tests.support import ConsoleClient, tmpdir, until
from vdetwist.backends.wirefilter import WirefilterBackend
from vdetwist.errors import VdeError, VNLError
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.lab.console import PROMPT
from vdetwist.lab.filter import LR, RL
from vdetwist.registry import OpenArgs, Registry
from vdetwist.testing import FrameCollector


def frame(n: int, size: int = 60) -> bytes:
    return b"\xff" * 6 + bytes([2, 0, 0, 0, 0, 1]) + b"\x88\xb5" + n.to_bytes(4, "big") + bytes(size - 18)


class Opened:
    """
    A wirefilter plug over an in-memory network: C{near} is what the user
    gets, C{far} the network's end.
    """

    def __init__(self, test: SynchronousTestCase, vnl: str, clock) -> None:
        self.memory = MemoryBackend()
        registry = Registry([WirefilterBackend(), self.memory])
        self.plug = test.successResultOf(registry.open(clock, vnl, "test", OpenArgs()))
        test.addCleanup(self.plug.close)
        self.far = self.memory.far[0]
        self.atFar = FrameCollector()
        self.far.startReceiving(self.atFar)
        self.atNear = FrameCollector()
        self.plug.startReceiving(self.atNear)
        self.filter = self.plug.runtime.filter


class OptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def open(self, vnl: str) -> Opened:
        return Opened(self, vnl, self.clock)

    def test_interfaces(self) -> None:
        verifyObject(IVdeBackend, WirefilterBackend())
        verifyObject(IVdePlug, self.open("wirefilter://{mem://x}").plug)

    def test_issueExample(self) -> None:
        """
        The options land in the engine, per direction, with units and
        jitter; the nested VNL is opened.
        """
        o = self.open("wirefilter://[loss=20/delay=40+5N/bandwidth=LR1M]{mem://x}")
        f = o.filter
        self.assertEqual(str(f.value("loss", LR)), "20+0U")
        self.assertEqual(str(f.value("delay", RL)), "40+5N")
        self.assertEqual(f.value("bandwidth", LR).value, 1 << 20)
        self.assertEqual(f.value("bandwidth", RL).value, 0)
        self.assertEqual(o.memory.calls[0][0].text, "mem://x")

    def test_allOptions(self) -> None:
        o = self.open(
            "wirefilter://[dup=1/lostburst=3/mtu=1400/bufsize=10K/speed=2M/nofifo/noise=5"
            "/reorder=5/corrupt=1/rate=RL3K/limit=77/seed=4/loss=LR10:RL20]{mem://}"
        )
        f = o.filter
        self.assertEqual(f.value("chanbufsize", LR).value, 10240)
        self.assertEqual(f.value("bandwidth", RL).value, 3072)
        self.assertEqual((f.value("loss", LR).value, f.value("loss", RL).value), (10, 20))
        self.assertEqual((f.nofifo, f.limit), (True, 77))
        for name, value in [("dup", 1), ("lostburst", 3), ("mtu", 1400), ("speed", 2 << 20),
                            ("noise", 5), ("reorder", 5), ("corrupt", 1)]:
            self.assertEqual(f.value(name, RL).value, value, name)

    def test_seedReplays(self) -> None:
        runs = []
        for _ in range(2):
            o = self.open("wirefilter://[loss=50/seed=42]{mem://}")
            for n in range(200):
                o.plug.send(frame(n))
            runs.append([f[14:18] for f in o.atFar.frames])
        self.assertEqual(runs[0], runs[1])
        self.assertTrue(50 < len(runs[0]) < 150)

    def test_delayBothWays(self) -> None:
        """
        delay=LR40:RL10: what the user sends reaches the network 40 ms
        later, what the network sends reaches the user 10 ms later.
        """
        o = self.open("wirefilter://[delay=LR40:RL10]{mem://}")
        o.plug.send(frame(1))
        o.far.send(frame(2))
        self.clock.advance(0.0099)
        self.assertEqual((o.atFar.frames, o.atNear.frames), ([], []))
        self.clock.advance(0.0001)
        self.assertEqual(o.atNear.frames, [frame(2)])
        self.clock.advance(0.03)
        self.assertEqual(o.atFar.frames, [frame(1)])
        self.assertEqual((o.plug.stats.sent, o.plug.stats.received), (1, 1))

    def test_closeStops(self) -> None:
        o = self.open("wirefilter://[delay=40]{mem://}")
        o.plug.send(frame(1))
        o.plug.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(o.far.closed)
        o.plug.send(frame(2))
        self.assertEqual(o.plug.stats.dropped, 1)

    def assertOneLineError(self, vnl: str, *words: str) -> VdeError:
        registry = Registry([WirefilterBackend(), MemoryBackend()])
        failure = self.failureResultOf(registry.open(self.clock, vnl, "test", OpenArgs()), VdeError)
        message = str(failure.value)
        self.assertNotIn("\n", message)
        for word in words:
            self.assertIn(word, message)
        return failure.value

    def test_badValues(self) -> None:
        """
        A bad value, an unknown option: one line naming the VNL and the
        option.
        """
        e = self.assertOneLineError("wirefilter://[loss=abc]{mem://}", "loss=", "'abc'", "not a value")
        self.assertIsInstance(e, VNLError)
        self.assertEqual(e.part, "loss")
        self.assertOneLineError("wirefilter://[delay=-5]{mem://}", "delay=", "negative")
        self.assertOneLineError("wirefilter://[colour=red]{mem://}", "unknown key: colour")
        self.assertOneLineError("wirefilter://[limit=0]{mem://}", "limit=0")
        self.assertOneLineError("wirefilter://[seed=x]{mem://}", "seed=x")
        self.assertOneLineError("wirefilter://[mgmtmode=9/mgmt='/nonexistent/x']{mem://}",
                                "mgmtmode=9")
        self.assertOneLineError("wirefilter://path[loss=1]{mem://}", "no path")

    def test_rcFile(self) -> None:
        rc = self.mktemp()
        with open(rc, "w") as f:
            f.write("# a link with two states\nmarkov-numnodes 2\nloss 100[1]\n"
                    "delay LR15\nmarkov-name 1,down\nsetedge 0,1,10\n")
        o = self.open(f"wirefilter://[rc='{rc}']{{mem://}}")
        f = o.filter
        self.assertEqual(len(f.nodes), 2)
        self.assertEqual(f.value("loss", LR, 1).value, 100)
        self.assertEqual(f.value("delay", LR, 0).value, 15)
        self.assertEqual(f.nodes[1].name, "down")
        self.assertEqual(f.weights[0], [90, 10])

    def test_badRcFile(self) -> None:
        rc = self.mktemp()
        with open(rc, "w") as f:
            f.write("loss 10\ndelay abc\n")
        self.assertOneLineError(f"wirefilter://[rc='{rc}']{{mem://}}", f"{rc}:2", "delay abc",
                                "not a value")
        self.assertOneLineError("wirefilter://[rc='/nonexistent/rc']{mem://}",
                                "cannot read the rc file /nonexistent/rc")

    def test_pidfile(self) -> None:
        path = os.path.abspath(self.mktemp())
        o = self.open(f"wirefilter://[pidfile='{path}']{{mem://}}")
        with open(path) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")
        o.plug.close()
        self.assertFalse(os.path.exists(path))

    def test_blink(self) -> None:
        """
        blink= sends one C{ID DIR LENGTH} datagram per frame delivered.
        """
        path = os.path.join(tmpdir(self), "blink")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(listener.close)
        listener.bind(path)
        o = self.open(f"wirefilter://[blink='{path}'/blinkid=wf1]{{mem://}}")
        o.plug.send(frame(1, 60))
        o.far.send(frame(2, 100))
        listener.settimeout(5)
        self.assertEqual(listener.recv(100), b"wf1 LR 62\n")
        self.assertEqual(listener.recv(100), b"wf1 RL 102\n")


class ConsoleTests(TestCase):
    """
    mgmt= serves wirefilter's console on a unix socket, live.
    """

    async def test_liveChange(self) -> None:
        path = os.path.join(tmpdir(self), "wf.mgmt")
        o = Opened(self, f"wirefilter://[loss=50/mgmt='{path}'/mgmtmode=600]{{mem://}}", reactor)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

        def session() -> list[str]:
            # A blocking client: in a thread, as the console is served here.
            client = ConsoleClient(path, prompt=PROMPT)
            try:
                answers = [client.greeting]
                for line in ("loss 0", "showinfo", "loss abc", "shutdown"):
                    answers.append(client.cmd(line))
                return [a.decode() for a in answers]
            finally:
                client.close()

        banner, changed, info, bad, refused = await deferToThread(session)
        self.assertIn("VDE wirefilter V.2.3.2", banner)
        self.assertEqual(changed, "1000 Success\n")
        self.assertEqual(o.filter.value("loss", LR).value, 0)
        self.assertIn("Loss   L->R 0+0U   R->L 0+0U", info)
        self.assertTrue(info.startswith("0000 DATA END WITH '.'\nWireFilter: bidirectional\n"))
        self.assertEqual(bad, "loss: 'abc' is not a value: write [LR|RL]VALUE[+JITTER][K|M|G]"
                         "[U|N][[NODE]], e.g. 20, LR20, 40+5N or 1M\n1022 Invalid argument\n")
        self.assertEqual(refused, "1001 Operation not permitted\n")
        o.plug.close()
        await until(lambda: not os.path.exists(path), "the console socket to go")
