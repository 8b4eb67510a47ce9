"""
Tests for L{vdetwist.lab.filter} and L{vdetwist.lab.wirevalue}: the
wirefilter engine driven by a L{Clock} and a seeded generator, frame by
frame and over many frames (figures within their binomial or sampling
tolerance; every seed gives the same run, so these are not flaky).
"""

from __future__ import annotations

import math
import random
import statistics

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vdetwist.lab.filter import DEFAULT_LIMIT, LR, MAX_QUEUE_BYTES, RL, WireFilter
from vdetwist.lab.wirevalue import NORMAL, UNIFORM, WireValue, WireValueError, parseWireValue


def frame(n: int, size: int = 100) -> bytes:
    return n.to_bytes(4, "big") + bytes(size - 4)


class Link:
    """
    A filter on a L{Clock}, recording (time, direction, frame) delivered.
    """

    def __init__(self, seed: int = 1, **kwargs) -> None:
        self.clock = Clock()
        self.out: list[tuple[float, int, bytes]] = []
        self.filter = WireFilter(
            self.clock, lambda d, f: self.out.append((self.clock.seconds(), d, f)),
            random.Random(seed), **kwargs,
        )

    def send(self, count: int, direction: int = LR, size: int = 100, every: float = 0.0,
             zero: bool = False) -> None:
        for n in range(count):
            self.filter.receive(direction, bytes(size) if zero else frame(n, size))
            if every:
                self.advance(every)

    def advance(self, amount: float) -> None:
        """
        Move the clock on by C{amount}, stopping at each timer's own time so
        that what it delivers is stamped exactly.
        """
        end = self.clock.seconds() + amount
        while True:
            calls = self.clock.getDelayedCalls()
            due = min((c.getTime() for c in calls), default=end)
            if due > end:
                break
            self.clock.advance(max(due - self.clock.seconds(), 0.0))
            if not calls or due == end:
                break
        self.clock.advance(max(end - self.clock.seconds(), 0.0))

    def drain(self, limit: float = 600.0) -> None:
        self.advance(limit)

    def numbers(self, direction: int = LR) -> list[int]:
        return [int.from_bytes(f[:4], "big") for _, d, f in self.out if d == direction]


def binomialBounds(n: int, p: float, sigmas: float = 4.0) -> tuple[float, float]:
    mean = n * p
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return mean - spread, mean + spread


class WireValueTests(SynchronousTestCase):
    def test_plain(self) -> None:
        s = parseWireValue("loss", "20.5")
        self.assertEqual((s.value, s.directions, s.node), (WireValue(20.5), (LR, RL), None))

    def test_direction(self) -> None:
        self.assertEqual(parseWireValue("loss", "LR10").directions, (LR,))
        self.assertEqual(parseWireValue("loss", "RL10").directions, (RL,))

    def test_jitterUnitsDistribution(self) -> None:
        s = parseWireValue("bandwidth", "128+64KN")
        self.assertEqual(s.value, WireValue(128 * 1024, 64 * 1024, NORMAL))
        self.assertEqual(parseWireValue("delay", "1000+500").value.alg, UNIFORM)
        self.assertEqual(parseWireValue("speed", "1m").value.value, 1 << 20)
        self.assertEqual(parseWireValue("speed", "LR2G").value.value, 2 << 30)

    def test_node(self) -> None:
        s = parseWireValue("delay", "100+10N[4]")
        self.assertEqual((s.node, s.value), (4, WireValue(100, 10, NORMAL)))

    def test_showinfoFormat(self) -> None:
        self.assertEqual(str(parseWireValue("delay", "40+5N").value), "40+5N")
        self.assertEqual(str(WireValue()), "0+0U")

    def test_errorsNameTheOption(self) -> None:
        for name, text, words in [
            ("loss", "abc", "not a value"),
            ("delay", "-5", "negative"),
            ("loss", "101", "above 100"),
            ("dup", "100", "above 99"),
            ("delay", "5[x]", "Markov node"),
            ("loss", "", "not a value"),
            ("delay", "1e999", "too large"),
        ]:
            with self.assertRaises(WireValueError) as e:
                parseWireValue(name, text)
            message = str(e.exception)
            self.assertTrue(message.startswith(f"{name}: "), message)
            self.assertIn(words, message)
            self.assertNotIn("\n", message)


class PassThroughTests(SynchronousTestCase):
    def test_idle(self) -> None:
        """
        Without settings every frame leaves at once, unchanged.
        """
        link = Link()
        link.send(5)
        link.send(3, RL)
        self.assertEqual(link.numbers(LR), [0, 1, 2, 3, 4])
        self.assertEqual(link.numbers(RL), [0, 1, 2])
        self.assertEqual(link.filter.stats[LR].delivered, 5)

    def test_perDirection(self) -> None:
        link = Link()
        link.filter.set("loss", "LR100")
        link.send(10, LR)
        link.send(10, RL)
        self.assertEqual(link.numbers(LR), [])
        self.assertEqual(len(link.numbers(RL)), 10)
        self.assertEqual(link.filter.stats[LR].lost, 10)

    def test_unknownParameter(self) -> None:
        with self.assertRaises(WireValueError) as e:
            Link().filter.set("lossy", "1")
        self.assertIn("lossy: no such parameter", str(e.exception))

    def test_aliases(self) -> None:
        f = Link().filter
        f.set("band", "1K")
        f.set("capacity", "2K")
        f.set("rate", "RL3K")
        self.assertEqual(f.value("bandwidth", LR).value, 1024)
        self.assertEqual(f.value("bandwidth", RL).value, 3072)
        self.assertEqual(f.value("chanbufsize", RL).value, 2048)

    def test_mtu(self) -> None:
        link = Link()
        link.filter.set("mtu", "100")
        link.filter.receive(LR, bytes(100))
        link.filter.receive(LR, bytes(101))
        self.assertEqual(len(link.out), 1)
        self.assertEqual(link.filter.stats[LR].oversize, 1)


class LossTests(SynchronousTestCase):
    def test_binomial(self) -> None:
        """
        loss 20 loses 20% of 5000 frames within four standard deviations.
        """
        link = Link(seed=7)
        link.filter.set("loss", "20")
        link.send(5000)
        low, high = binomialBounds(5000, 0.2)
        self.assertTrue(low <= link.filter.stats[LR].lost <= high, link.filter.stats[LR])
        self.assertEqual(len(link.out) + link.filter.stats[LR].lost, 5000)

    def test_total(self) -> None:
        link = Link()
        link.filter.set("loss", "100")
        link.send(100)
        self.assertEqual(link.out, [])

    def test_gilbertBursts(self) -> None:
        """
        With lostburst 4 the loss rate is still the loss, and lost frames
        come in runs of 4 on average (a geometric law: its mean within a
        few standard errors).
        """
        link = Link(seed=3)
        link.filter.set("loss", "10")
        link.filter.set("lostburst", "4")
        count = 20000
        link.send(count)
        delivered = set(link.numbers())
        lost = count - len(delivered)
        low, high = binomialBounds(count, 0.1, sigmas=8)  # bursts correlate losses
        self.assertTrue(low <= lost <= high, lost)
        runs, run = [], 0
        for n in range(count):
            if n in delivered:
                if run:
                    runs.append(run)
                run = 0
            else:
                run += 1
        mean = statistics.mean(runs)
        standardError = math.sqrt(4 * 3) / math.sqrt(len(runs))  # geometric: var = (1-p)/p^2
        self.assertLess(abs(mean - 4), 4 * standardError, (mean, len(runs)))

    def test_withoutBurstsRunsAreShort(self) -> None:
        link = Link(seed=3)
        link.filter.set("loss", "10")
        link.send(20000)
        delivered = set(link.numbers())
        runs, run = [], 0
        for n in range(20000):
            if n in delivered:
                if run:
                    runs.append(run)
                run = 0
            else:
                run += 1
        self.assertLess(statistics.mean(runs), 1.3)


class DelayTests(SynchronousTestCase):
    def test_exact(self) -> None:
        """
        delay 40 delivers each frame 40 ms after it came, in order.
        """
        link = Link()
        link.filter.set("delay", "40")
        link.send(3, every=0.010)
        link.advance(0.0099)
        self.assertEqual(link.out, [])
        link.advance(0.0001)
        self.assertEqual(len(link.out), 1)
        link.drain()
        self.assertEqual([round(t, 6) for t, _, _ in link.out], [0.04, 0.05, 0.06])
        self.assertEqual(link.numbers(), [0, 1, 2])

    def test_directionOnly(self) -> None:
        link = Link()
        link.filter.set("delay", "RL40")
        link.send(1, LR)
        link.send(1, RL)
        self.assertEqual([d for _, d, _ in link.out], [LR])
        link.clock.advance(0.04)
        self.assertEqual([d for _, d, _ in link.out], [LR, RL])

    def test_jitterMedian(self) -> None:
        """
        delay 40+10U: delays spread over 30..50 ms, median 40 ms; frames keep
        their order (fifo), so each leaves no sooner than the one before.
        """
        link = Link(seed=5)
        link.filter.set("delay", "40+10U")
        link.send(2000, every=0.1)
        link.drain()
        delays = [t - n * 0.1 for (t, _, _), n in zip(link.out, link.numbers())]
        self.assertTrue(all(0.030 - 1e-9 <= d <= 0.050 + 1e-9 for d in delays))
        self.assertLess(abs(statistics.median(delays) - 0.040), 0.001)

    def test_normalJitter(self) -> None:
        link = Link(seed=5)
        link.filter.set("delay", "40+9N")
        link.send(3000, every=0.1)
        link.drain()
        delays = [t - n * 0.1 for (t, _, _), n in zip(link.out, link.numbers())]
        self.assertLess(abs(statistics.median(delays) - 0.040), 0.001)
        self.assertLess(abs(statistics.stdev(delays) - 0.003), 0.0003)

    def test_fifo(self) -> None:
        """
        With jitter and frames closer than it, fifo keeps the order and
        nofifo lets frames overtake.
        """
        fifo = Link(seed=2)
        fifo.filter.set("delay", "40+20")
        fifo.send(200, every=0.001)
        fifo.drain()
        self.assertEqual(fifo.numbers(), list(range(200)))
        loose = Link(seed=2)
        loose.filter.nofifo = True
        loose.filter.set("delay", "40+20")
        loose.send(200, every=0.001)
        loose.drain()
        self.assertEqual(sorted(loose.numbers()), list(range(200)))
        self.assertNotEqual(loose.numbers(), list(range(200)))

    def test_reorder(self) -> None:
        """
        reorder 25 sends about a quarter of the delayed frames at once.
        """
        link = Link(seed=9)
        link.filter.set("delay", "10")
        link.filter.set("reorder", "25")
        link.send(4000, every=0.001)
        link.drain()
        low, high = binomialBounds(4000, 0.25)
        self.assertTrue(low <= link.filter.stats[LR].reordered <= high)
        self.assertEqual(sorted(link.numbers()), list(range(4000)))
        self.assertNotEqual(link.numbers(), list(range(4000)))


class DupNoiseCorruptTests(SynchronousTestCase):
    def test_dup(self) -> None:
        """
        dup 20: each frame gets a copy with probability 0.2, another with
        0.2 again...: 1/(1-0.2) = 1.25 copies a frame on average.
        """
        link = Link(seed=11)
        link.filter.set("dup", "20")
        link.send(5000)
        extra = len(link.out) - 5000
        # Extra copies per frame are geometric: mean 0.25, variance 0.3125.
        spread = 4 * math.sqrt(5000 * 0.3125)
        self.assertLess(abs(extra - 1250), spread)
        self.assertEqual(link.filter.stats[LR].duplicated, extra)

    def test_corrupt(self) -> None:
        link = Link(seed=4)
        link.filter.set("corrupt", "10")
        link.send(3000, zero=True)
        damaged = [f for _, _, f in link.out if f != bytes(100)]
        low, high = binomialBounds(3000, 0.1)
        self.assertTrue(low <= len(damaged) <= high)
        self.assertEqual(link.filter.stats[LR].corrupted, len(damaged))
        for f in damaged:
            self.assertEqual(sum(bin(b).count("1") for b in f), 1)

    def test_noise(self) -> None:
        """
        noise N flips about N bits per megabyte that crosses: as in
        wirefilter, one more bit as long as a draw falls under
        size*N/2**20, so p/(1-p) bits a frame on average.
        """
        link = Link(seed=4)
        link.filter.set("noise", "100")
        link.send(10000, size=1000, zero=True)
        flipped = sum(bin(b).count("1") for _, _, f in link.out for b in f)
        p = 1000 * 100 / (1 << 20)
        expected = 10000 * p / (1 - p)
        spread = 5 * math.sqrt(10000 * p / (1 - p) ** 2)
        self.assertLess(abs(flipped - expected), spread, (flipped, expected))


class RateTests(SynchronousTestCase):
    def test_bandwidthGoodput(self) -> None:
        """
        bandwidth 50K delivers a burst at 51200 bytes/s, the sender never
        held up.
        """
        link = Link()
        link.filter.set("bandwidth", "50K")
        link.send(500, size=1000)
        self.assertEqual(link.out, [])
        link.drain()
        self.assertEqual(len(link.out), 500)
        self.assertAlmostEqual(link.out[-1][0], 500 * 1000 / 51200, places=3)

    def test_chanbufsize(self) -> None:
        """
        The channel buffer holds at most chanbufsize bytes queued; the rest
        is dropped and counted.
        """
        link = Link()
        link.filter.set("bandwidth", "10K")
        link.filter.set("chanbufsize", "5000")
        link.send(20, size=1000)
        self.assertEqual(link.filter.queued(), 5)
        self.assertEqual(link.filter.stats[LR].overflow, 15)
        link.drain()
        self.assertEqual(link.numbers(), [0, 1, 2, 3, 4])

    def test_limit(self) -> None:
        """
        Without chanbufsize the queue is still bounded, by frames and bytes.
        """
        link = Link(limit=50)
        link.filter.set("delay", "1000")
        link.send(80)
        self.assertEqual(link.filter.queued(), 50)
        self.assertEqual(link.filter.stats[LR].overflow, 30)
        big = Link()
        big.filter.set("delay", "1000")
        big.send(MAX_QUEUE_BYTES // 60000 + 10, size=60000)
        self.assertLessEqual(big.filter.queuedBytes[LR], MAX_QUEUE_BYTES)
        self.assertGreater(big.filter.stats[LR].overflow, 0)
        self.assertEqual(Link().filter.limit, DEFAULT_LIMIT)

    def test_speed(self) -> None:
        """
        speed paces like bandwidth and tells the reader when to read again.
        """
        link = Link()
        link.filter.set("speed", "1000")
        link.filter.receive(LR, bytes(100))
        self.assertAlmostEqual(link.filter.readableAt(LR), 0.1)
        self.assertEqual(link.filter.readableAt(RL), 0.0)
        link.clock.advance(0.1)
        self.assertEqual(len(link.out), 1)

    def test_bandwidthPlusDelay(self) -> None:
        link = Link()
        link.filter.set("bandwidth", "1000")
        link.filter.set("delay", "50")
        link.filter.receive(LR, bytes(100))
        link.clock.advance(0.149)
        self.assertEqual(link.out, [])
        link.clock.advance(0.002)
        self.assertEqual(len(link.out), 1)

    def test_stop(self) -> None:
        link = Link()
        link.filter.set("delay", "10")
        link.send(5)
        link.filter.stop()
        self.assertEqual(link.clock.getDelayedCalls(), [])
        self.assertEqual(link.filter.queued(), 0)


class MarkovTests(SynchronousTestCase):
    def test_resize(self) -> None:
        f = Link().filter
        f.resize(3)
        self.assertEqual(f.weights, [[100, 0, 0], [0, 100, 0], [0, 0, 100]])
        f.setEdge(0, 1, 30)
        f.setEdge(0, 2, 20)
        self.assertEqual(f.weights[0], [50, 30, 20])
        f.resize(2)
        self.assertEqual(f.weights, [[70, 30], [0, 100]])

    def test_nodeValues(self) -> None:
        """
        Each node has its own values; the current node's apply.
        """
        link = Link()
        f = link.filter
        f.resize(2)
        f.set("loss", "100[1]")
        link.send(3)
        f.setCurrent(1)
        link.send(3)
        self.assertEqual(len(link.out), 3)
        with self.assertRaises(WireValueError) as e:
            f.set("loss", "5[2]")
        self.assertIn("no Markov node 2", str(e.exception))

    def test_steps(self) -> None:
        """
        With an edge 0->1 of weight 100 and 1->0 of 100, the chain flips at
        each markov-time, and observers hear of it.
        """
        link = Link()
        f = link.filter
        changes = []
        f.observers.append(lambda old, new: changes.append((old, new)))
        f.resize(2)
        f.setEdge(0, 1, 100)
        f.setEdge(1, 0, 100)
        f.setMarkovTime(50)
        first = f.current
        link.clock.advance(0.05)
        self.assertEqual(f.current, 1 - first)
        link.clock.advance(0.05)
        self.assertEqual(f.current, first)
        self.assertGreaterEqual(len(changes), 2)
        f.resize(1)
        self.assertEqual(link.clock.getDelayedCalls(), [])

    def test_stationary(self) -> None:
        """
        Edge weights 0->1 = 10, 1->0 = 30: the chain spends 3/4 of its steps
        in node 0.
        """
        link = Link(seed=8)
        f = link.filter
        f.resize(2)
        f.setEdge(0, 1, 10)
        f.setEdge(1, 0, 30)
        f.setMarkovTime(1)
        inZero = 0
        for _ in range(20000):
            link.clock.advance(0.001)
            inZero += f.current == 0
        self.assertLess(abs(inZero / 20000 - 0.75), 0.03)

    def test_badEdges(self) -> None:
        f = Link().filter
        for call in (lambda: f.setEdge(0, 1, 5), lambda: f.setCurrent(3),
                     lambda: f.setMarkovTime(0), lambda: f.resize(0)):
            self.assertRaises(WireValueError, call)
