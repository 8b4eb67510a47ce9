"""
Tests for links that come back: L{vdetwist.reconnect}, C{restart://}
(L{vdetwist.backends.restart}) and C{twistd vde --plug} reopening a network
that dropped.

They run on a L{Clock} and in-memory plugs;
L{tests.interop.test_restart_real} kills and restarts a real switch.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.nested_support import MemoryBackend
from tests.support import LogCapture, frame, tmpdir
from vdetwist.backends.restart import (
    DEFAULT_PERIOD, MAX_PERIOD, RestartBackend, RestartPlug, parsePeriod,
)
from vdetwist.errors import VdeError, VNLError
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.reconnect import Redialer
from vdetwist.registry import Registry
from vdetwist.service import Options, VdeSwitchService
from vdetwist.testing import FrameCollector, MemoryPlug
from vdetwist.vnl import resolve

class RedialerTests(SynchronousTestCase):
    """
    When L{Redialer} tries, on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.results: list = []
        self.connected: list = []
        self.failures: list[int] = []
        self.dials: list[float] = []

    def redialer(self, **kwargs) -> Redialer:
        def dial():
            self.dials.append(self.clock.seconds())
            return self.results.pop(0) if self.results else fail(VdeError("down"))

        kwargs.setdefault("initial", 1)
        kwargs.setdefault("maximum", 8)
        return Redialer(self.clock, dial, self.connected.append,
                        lambda reason, attempt: self.failures.append(attempt), **kwargs)

    def test_backoff(self) -> None:
        """
        Attempts come 1, 2, 4, 8, 8 s apart: doubling up to the cap.
        """
        r = self.redialer()
        self.assertEqual(r.linkDown(), 1)
        self.clock.pump([1] * 40)
        self.assertEqual(self.dials[:6], [1, 3, 7, 15, 23, 31])
        self.assertEqual(self.failures[:6], [1, 2, 3, 4, 5, 6])

    def test_connected(self) -> None:
        """
        A successful attempt is reported and no more are made.
        """
        r = self.redialer()
        self.results = [fail(VdeError("no")), succeed("link")]
        r.linkDown()
        self.clock.pump([1] * 20)
        self.assertEqual(self.connected, ["link"])
        self.assertEqual(self.dials, [1, 3])
        self.assertFalse(r.waiting)

    def test_resetAfterStable(self) -> None:
        """
        A link up for C{stable} seconds starts from the first delay again;
        one that drops sooner goes on with the longer delays.
        """
        r = self.redialer(stable=10)
        self.results = [fail(VdeError("no")), fail(VdeError("no")), succeed("one")]
        r.linkDown()
        self.clock.pump([1] * 7)  # attempts at 1, 3, 7: up at 7
        self.assertEqual(self.connected, ["one"])
        self.clock.advance(2)  # drops 2 s later: not stable
        self.results = [succeed("two")]
        self.assertEqual(r.linkDown(), 8)
        self.clock.advance(8)
        self.assertEqual(self.connected, ["one", "two"])
        self.clock.advance(10)  # up 10 s: stable
        self.assertEqual(r.linkDown(), 1)

    def test_stop(self) -> None:
        """
        After L{Redialer.stop} nothing is tried; an attempt under way is
        cancelled, and neither reported as failed nor as connected.
        """
        r = self.redialer()
        r.linkDown()
        r.stop()
        self.clock.advance(100)
        self.assertEqual(self.dials, [])
        cancelled = []
        self.results = [Deferred(cancelled.append)]
        r = self.redialer()
        r.linkDown()
        self.clock.advance(1)
        r.stop()
        self.assertEqual(len(cancelled), 1)
        self.clock.advance(100)
        self.assertEqual((self.connected, self.failures, self.dials), ([], [], [101]))

    def test_downTwice(self) -> None:
        """
        A second L{Redialer.linkDown} while waiting does not add attempts.
        """
        r = self.redialer()
        r.linkDown()
        r.linkDown()
        self.clock.advance(1)
        self.assertEqual(self.dials, [1])


class PeriodTests(SynchronousTestCase):
    """
    The C{restart://} prefix, as libvdeplug_restart reads it.
    """

    def period(self, text: str):
        return parsePeriod(resolve(text))

    def test_values(self) -> None:
        self.assertEqual(self.period("restart://{vde:///tmp/sw}"), (DEFAULT_PERIOD, "vde:///tmp/sw"))
        self.assertEqual(self.period("restart://3{null://}"), (3, "null://"))
        self.assertEqual(self.period("restart://0x10{null://}"), (16, "null://"))
        self.assertEqual(self.period("restart://010{null://}"), (8, "null://"))
        self.assertEqual(self.period("restart://5"), (5, None))

    def test_bounds(self) -> None:
        """
        Brought into 1 s .. a week, as in C.
        """
        self.assertEqual(self.period("restart://0{null://}")[0], 1)
        self.assertEqual(self.period("restart://-3{null://}")[0], 1)
        self.assertEqual(self.period("restart://99999999{null://}")[0], MAX_PERIOD)

    def test_errors(self) -> None:
        error = self.assertRaises(VNLError, self.period, "restart://3s{null://}")
        self.assertEqual(str(error), "restart://3s{null://}: invalid polling period '3s':"
                                     " give whole seconds, e.g. restart://5{...}")
        error = self.assertRaises(VNLError, self.period, "restart://3/x=1{null://}")
        self.assertIn("takes no options", str(error))


class RestartPlugTests(SynchronousTestCase):
    """
    C{restart://} over in-memory plugs, on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.memory = MemoryBackend()
        self.registry = Registry([RestartBackend(), self.memory])
        self.logs = LogCapture(self)

    def open(self, vnl: str = "restart://5{mem://a}") -> RestartPlug:
        plug = self.successResultOf(self.registry.open(self.clock, vnl, "test"))
        self.received = FrameCollector()
        plug.startReceiving(self.received)
        return plug

    def test_interfaces(self) -> None:
        verifyObject(IVdeBackend, RestartBackend())
        verifyObject(IVdePlug, self.open())

    def test_passes(self) -> None:
        plug = self.open()
        self.assertEqual(self.memory.calls[0][0].text, "mem://a")
        out, into = frame(1), frame(2)
        plug.send(out)
        self.assertEqual(list(self.memory.far[0].pending), [out])
        self.memory.far[0].send(into)
        self.assertEqual(self.received.frames, [into])
        self.assertEqual((plug.stats.sent, plug.stats.received), (1, 1))

    def test_comesBack(self) -> None:
        """
        When the nested plug drops, sends are dropped and counted; the
        nested VNL is reopened every period until it works, and frames pass
        again both ways; the drop is a warning, the return info.
        """
        plug = self.open()
        self.memory.far[0].close()
        self.assertIsNone(plug.inner)
        self.assertFalse(plug.closed)
        plug.send(frame(1))
        self.assertEqual(plug.stats.dropped, 1)
        self.assertEqual(len(self.memory.calls), 1)
        self.clock.advance(4.9)
        self.assertEqual(len(self.memory.calls), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.memory.calls), 2)
        again, back = frame(2), frame(3)
        plug.send(again)
        self.assertEqual(list(self.memory.far[1].pending), [again])
        self.memory.far[1].send(back)
        self.assertEqual(self.received.frames, [back])
        self.assertEqual(self.levels("the nested network dropped"), [LogLevel.warn])
        self.assertEqual(self.levels("the nested network is back"), [LogLevel.info])

    def test_retriesEveryPeriod(self) -> None:
        plug = self.open()
        self.memory.open = lambda *a: fail(VdeError("no switch"))
        self.memory.far[0].close()
        self.clock.pump([5] * 3)
        self.assertIsNone(plug.inner)
        self.assertEqual(self.levels("cannot reopen the nested network yet (no switch)"),
                         [LogLevel.info])
        del self.memory.open  # the class's again
        self.clock.advance(5)
        self.assertIsNotNone(plug.inner)

    def test_flowControlCarried(self) -> None:
        """
        A paused plug's new nested plug is paused; a registered producer is
        registered on it.
        """
        plug = self.open()
        producer = MemoryPlug("producer")
        plug.registerProducer(producer, True)
        plug.pauseProducing()
        self.memory.far[0].close()
        self.clock.advance(5)
        inner = self.memory.plugs[1]
        self.assertTrue(inner.paused)
        self.assertIs(inner.producer, producer)
        plug.resumeProducing()
        self.assertFalse(inner.paused)

    def test_closeWhileDown(self) -> None:
        """
        Closing while down stops the attempts; the receiver hears it once.
        """
        plug = self.open()
        self.memory.far[0].close()
        plug.close()
        self.assertIsNotNone(self.received.reason)
        self.clock.advance(100)
        self.assertEqual(len(self.memory.calls), 1)

    def test_closeClosesInner(self) -> None:
        plug = self.open()
        plug.close()
        self.assertTrue(self.memory.plugs[0].closed)
        self.assertIsNotNone(self.received.reason)

    def test_firstOpenFails(self) -> None:
        """
        As in C, the first open must work.
        """
        self.memory.open = lambda *a: fail(VdeError("no switch"))
        failure = self.failureResultOf(
            self.registry.open(self.clock, "restart://{mem://a}", "test"), VdeError)
        self.assertIn("no switch", str(failure.value))

    def levels(self, text: str) -> list:
        return [e.get("log_level") for e in self.logs.events if text in formatEvent(e)]


class ReconnectingServiceTests(TestCase):
    """
    C{twistd vde --plug} networks that drop come back, on a L{Clock}.
    """

    def makeService(self, *argv: str, opener) -> VdeSwitchService:
        path = os.path.join(tmpdir(self), "sw")
        options = Options()
        options.parseOptions(["--switch", path, "--rcfile=", *argv])
        service = VdeSwitchService(options, reactor, opener=opener)
        service.clock = self.clock = Clock()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_option(self) -> None:
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["reconnect"], 60)
        options.parseOptions(["--reconnect", "0"])
        self.assertEqual(options["reconnect"], 0)
        self.assertIn("--reconnect", options.__str__())

    def test_backOnItsPort(self) -> None:
        """
        A dropped C{--plug} is a warning; it is reopened 1, 2, 4 s later
        (then at most C{--reconnect} apart) and comes back on its port.
        """
        logs = LogCapture(self)
        one, two = MemoryPlug("one"), MemoryPlug("two")
        refused = VdeError("refused")
        outcomes = [MemoryPlug("null"), one, refused, refused, two]
        opens: list[float] = []

        def opener(*args):
            opens.append(self.clock.seconds())
            outcome = outcomes.pop(0)
            return fail(outcome) if isinstance(outcome, Exception) else succeed(outcome)

        service = self.makeService("--plug", "null://", "--plug", "mem://x",
                                   "--reconnect", "3", opener=opener)
        self.assertEqual(service.node.getPort(2).endpoints, [one])
        one.close()
        self.clock.pump([1] * 10)
        self.assertEqual(service.node.getPort(2).endpoints, [two])
        self.assertEqual(opens, [0, 0, 1, 3, 6])
        self.assertEqual(self.levels(logs, "--plug mem://x (port 2) dropped: one closed;"
                                           " reopening it in 1 s"), [LogLevel.warn])
        self.assertEqual(self.levels(logs, "--plug mem://x: cannot reopen it yet: refused;"
                                           " trying again, at most 3 s apart"), [LogLevel.info])
        self.assertEqual(self.levels(logs, "--plug mem://x is back, as port 2"), [LogLevel.info])

    def levels(self, logs: LogCapture, text: str) -> list:
        return [e.get("log_level") for e in logs.events if text in formatEvent(e)]

    def test_portTaken(self) -> None:
        """
        If its port was taken meanwhile, it comes back on another.
        """
        plugs = [MemoryPlug("one"), MemoryPlug("two")]
        service = self.makeService("--plug", "mem://x", opener=lambda *a: succeed(plugs.pop(0)))
        first = service.node.getPort(1).endpoints[0]
        first.close()
        intruder = MemoryPlug("intruder")
        service.node.addPort(intruder, 1)
        self.clock.advance(1)
        self.assertEqual(service.node.getPort(2).endpoints[0].description, "two")
        self.assertEqual([vnl for vnl, _ in service.plugs], ["mem://x"])

    def test_removedOnPurpose(self) -> None:
        """
        A port removed by the console is not reopened.
        """
        opens = []
        service = self.makeService(
            "--plug", "mem://x",
            opener=lambda *a: opens.append(1) or succeed(MemoryPlug("p")))
        service.node.getPort(1).endpoints[0].close()
        self.clock.advance(1)
        self.assertEqual(len(opens), 2)
        service.node.removePort(service.node.getPort(1))
        self.clock.advance(100)
        self.assertEqual(len(opens), 2)

    def test_stopWhileDown(self) -> None:
        opens = []
        service = self.makeService(
            "--plug", "mem://x",
            opener=lambda *a: opens.append(1) or succeed(MemoryPlug("p")))
        service.node.getPort(1).endpoints[0].close()
        d = service.stopService()
        self.clock.advance(100)
        self.assertEqual(len(opens), 1)
        return d
