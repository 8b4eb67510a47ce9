"""
The wirefilters for real: between two C C{vde_switch}es, with C
C{vde_plug}s sending and receiving, vdetwist's C{wirefilter} and vde2's
C{/usr/bin/wirefilter} show the same figures in the same test (loss within
its binomial tolerance, the delay's median, the bandwidth's goodput), obey a
console change at once and apply an rc file; the C{wirefilter://} VNL shows
them too, in C{vde_plug} and in C{twistd vde --plug}.

Frames are sent in small paced batches: a unix datagram socket queues only
C{net.unix.max_dgram_qlen} datagrams (10 by default), and a burst would be
lost before it reaches either filter.
"""

from __future__ import annotations

import math
import os
import statistics
import struct
import time
from typing import Callable, Optional

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    TIMEOUT, ConsoleClient, CSwitch, StreamProcess, cPlug, cTool, describeAll, isListening,
    ourEnv, ourPlug, ourTool, tmpdir, waitFor,
)
from tests.interop.test_service import SwitchProcess, runVdeterm
from vdetwist.lab.console import PROMPT

#: The numbers of probe frames start here; data frames are numbered below.
PROBE = 1 << 30


def frame(n: int, size: int = 100) -> bytes:
    body = struct.pack(">I", n).ljust(size - 14, b"\0")
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + body


def number(f: bytes) -> Optional[int]:
    if f[12:14] != b"\x88\xb5":
        return None
    return struct.unpack_from(">I", f, 14)[0]


def within(test, count: int, sent: int, p: float, what: str) -> None:
    """
    C{count} of C{sent} frames got through a link losing C{p}: within four
    standard deviations of the binomial mean.
    """
    mean = sent * (1 - p)
    spread = 4 * math.sqrt(sent * p * (1 - p))
    test.assertTrue(abs(count - mean) <= spread,
                    f"{what}: {count} of {sent} through, expected {mean:.0f} +- {spread:.0f}")


class Path:
    """
    C{tx} sends into a filtered path and C{rx} receives at its end.
    """

    def __init__(self, test, tx: StreamProcess, rx: StreamProcess, procs: list) -> None:
        self.test = test
        self.tx = tx
        self.rx = rx
        self.procs = procs + [tx, rx]
        self.probes = 0

    def data(self) -> list[int]:
        return [n for n in map(number, list(self.rx.frames)) if n is not None and n < PROBE]

    def waitUp(self) -> None:
        """
        Probe until a probe gets through (the filter may lose some).
        """
        deadline = time.monotonic() + TIMEOUT
        while not any(n is not None and n >= PROBE for n in map(number, list(self.rx.frames))):
            if time.monotonic() > deadline:
                raise AssertionError("the path did not come up" + describeAll(self.procs))
            self.tx.send(frame(PROBE + self.probes))
            self.probes += 1
            time.sleep(0.05)

    def send(self, numbers: range, size: int = 100, batch: int = 5, pause: float = 0.002) -> None:
        for start in range(numbers.start, numbers.stop, batch):
            stop = min(start + batch, numbers.stop)
            self.tx.send(*(frame(n, size) for n in range(start, stop)))
            time.sleep(pause)

    def settle(self, quiet: float = 0.5) -> list[int]:
        """
        The data frames received, once none has come for C{quiet} seconds.
        """
        deadline = time.monotonic() + TIMEOUT
        seen, since = len(self.rx.frames), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.05)
            if len(self.rx.frames) != seen:
                seen, since = len(self.rx.frames), time.monotonic()
        return self.data()

    def latencies(self, count: int) -> list[float]:
        """
        One frame at a time: the time from sending it to receiving it.
        """
        self.settle(0.2)
        while self.rx.recv(0) is not None:
            pass
        samples = []
        for n in range(count):
            sent = time.monotonic()
            self.tx.send(frame(n))
            while True:
                got = self.rx.recv(TIMEOUT)
                self.test.assertIsNotNone(got, "a frame was lost" + describeAll(self.procs))
                if number(got) == n:
                    break
            samples.append(time.monotonic() - sent)
        return samples

    def goodput(self, count: int, size: int) -> float:
        """
        Bytes per second received of C{count} frames sent at once (well,
        in quick batches): from the first arrival to the last.
        """
        self.settle(0.2)
        while self.rx.recv(0) is not None:
            pass
        arrivals: list[float] = []
        self.send(range(count), size, batch=4, pause=0.001)
        deadline = time.monotonic() + TIMEOUT
        while len(arrivals) < count and time.monotonic() < deadline:
            got = self.rx.recv(1.0)
            if got is None:
                break
            if number(got) is not None and number(got) < PROBE:
                arrivals.append(time.monotonic())
        self.test.assertGreater(len(arrivals), count // 2, describeAll(self.procs))
        return (len(arrivals) - 1) * size / (arrivals[-1] - arrivals[0])


class FilterBetweenSwitches(SynchronousTestCase):
    """
    Each test runs its check with vdetwist's wirefilter and with the C one,
    each between two fresh C switches.
    """

    def filters(self) -> list[tuple[str, list[str]]]:
        return [("vdetwist wirefilter", ourTool("wirefilter")),
                ("C wirefilter", [cTool("wirefilter")])]

    def path(self, name: str, argv: list[str], *options: str) -> tuple[Path, str]:
        """
        C{argv -v S1:S2 OPTIONS -M MGMT} between two new C switches, a C
        plug on each; returns the path and the management socket.
        """
        cTool("vde_plug")
        s1, s2 = CSwitch(self, mgmt=False), CSwitch(self, mgmt=False)
        s1.waitReady()
        s2.waitReady()
        mgmt = os.path.join(tmpdir(self), "wf.mgmt")
        wf = StreamProcess(self, name, argv + ["-v", f"{s1.path}:{s2.path}", "-M", mgmt, *options],
                           env=ourEnv())
        waitFor(lambda: isListening(mgmt), f"{name} to listen", procs=[wf], failIfEnded=True)
        tx, rx = cPlug(self, "tx", s1.path), cPlug(self, "rx", s2.path)
        path = Path(self, tx, rx, [s1.process, s2.process, wf])
        path.waitUp()
        return path, mgmt

    def eachFilter(self, check: Callable[[str, list[str]], None]) -> None:
        for name, argv in self.filters():
            check(name, argv)

    def test_loss(self) -> None:
        """
        loss 20 over 2000 frames: within the binomial tolerance, for both.
        """
        def check(name: str, argv: list[str]) -> None:
            path, _ = self.path(name, argv, "-l", "20")
            path.send(range(2000))
            within(self, len(set(path.settle())), 2000, 0.2, name)

        self.eachFilter(check)

    def test_delay(self) -> None:
        """
        delay 40: a median of 40 ms (plus the path's own few), for both.
        """
        def check(name: str, argv: list[str]) -> None:
            path, _ = self.path(name, argv, "-d", "40")
            median = statistics.median(path.latencies(25))
            self.assertTrue(0.039 <= median <= 0.070, f"{name}: median {median * 1000:.1f} ms")

        self.eachFilter(check)

    def test_bandwidth(self) -> None:
        """
        bandwidth 50000 bytes/s: 50 kB/s of goodput, for both.
        """
        def check(name: str, argv: list[str]) -> None:
            path, _ = self.path(name, argv, "-b", "50000")
            rate = path.goodput(60, 1000)
            self.assertTrue(40000 <= rate <= 60000, f"{name}: {rate:.0f} bytes/s")

        self.eachFilter(check)

    def test_speed(self) -> None:
        """
        speed 50000 bytes/s: reading is held up for each frame's
        transmission time, so 50 kB/s get through, for both.
        """
        def check(name: str, argv: list[str]) -> None:
            path, _ = self.path(name, argv, "-s", "50000")
            rate = path.goodput(60, 1000)
            self.assertTrue(40000 <= rate <= 60000, f"{name}: {rate:.0f} bytes/s")

        self.eachFilter(check)

    def test_consoleChange(self) -> None:
        """
        loss 50, then C{loss 0} on the console: from then on nothing is lost.
        """
        def check(name: str, argv: list[str]) -> None:
            path, mgmt = self.path(name, argv, "-l", "50")
            path.send(range(400))
            within(self, len(set(path.settle())), 400, 0.5, name)
            console = ConsoleClient(mgmt, prompt=PROMPT)
            try:
                self.assertIn(b"1000 Success", console.cmd("loss 0"))
            finally:
                console.close()
            path.send(range(1000, 1400))
            self.assertEqual(len([n for n in path.settle() if n >= 1000]), 400, name)

        self.eachFilter(check)

    def test_dup(self) -> None:
        """
        dup 20: 1/(1-0.2) copies a frame on average, for both (the extra
        copies of a frame are geometric: mean 0.25, variance 0.3125).
        """
        def check(name: str, argv: list[str]) -> None:
            path, _ = self.path(name, argv, "-D", "20")
            path.send(range(1000))
            received = path.settle()
            self.assertEqual(set(received), set(range(1000)), name)
            extra = len(received) - 1000
            self.assertLess(abs(extra - 250), 4 * math.sqrt(1000 * 0.3125),
                            f"{name}: {extra} copies")

        self.eachFilter(check)

    def test_lostBursts(self) -> None:
        """
        loss 10 with lostburst 4 (the Gilbert model): lost runs are 4 frames
        long on average, for both (a geometric law: within four standard
        errors).
        """
        def check(name: str, argv: list[str]) -> None:
            path, _ = self.path(name, argv, "-l", "10", "-L", "4")
            path.send(range(3000))
            received = set(path.settle())
            runs, run = [], 0
            for n in range(3000):
                if n in received:
                    if run:
                        runs.append(run)
                    run = 0
                else:
                    run += 1
            self.assertGreater(len(runs), 20, name)
            mean = statistics.mean(runs)
            self.assertLess(abs(mean - 4), 4 * math.sqrt(12 / len(runs)),
                            f"{name}: mean burst {mean:.2f} over {len(runs)} bursts")

        self.eachFilter(check)

    def test_vdeterm(self) -> None:
        """
        The C vdeterm drives both consoles alike.
        """
        def check(name: str, argv: list[str]) -> str:
            _, mgmt = self.path(name, argv)
            shown = runVdeterm(mgmt, [("loss 7", b"Success"), ("showinfo", b"Fifoness"),
                                      ("logout", b"\n")])
            return shown.decode("utf-8", "replace").replace("\r", "")

        for name, argv in self.filters():
            text = check(name, argv)
            self.assertIn("VDE wirefilter V.2.3.2", text, name)
            self.assertIn("Success\nVDEwf[", text, f"{name}: {text!r}")
            self.assertIn("Loss   L->R 7+0U   R->L 7+0U\n", text, f"{name}: {text!r}")

    def test_rcFile(self) -> None:
        """
        An rc file's commands apply: right-to-left frames pass, none left to
        right, and showinfo says so.
        """
        rc = os.path.join(tmpdir(self), "wf.rc")
        with open(rc, "w") as f:
            f.write("# one way only\nloss LR100\ndelay RL5\n")

        # The probe goes right to left: left to right is closed.
        for name, argv in self.filters():
            s1, s2 = CSwitch(self, mgmt=False), CSwitch(self, mgmt=False)
            s1.waitReady()
            s2.waitReady()
            mgmt = os.path.join(tmpdir(self), "wf.mgmt")
            wf = StreamProcess(self, name, argv + ["-v", f"{s1.path}:{s2.path}", "-M", mgmt,
                                                   "-f", rc], env=ourEnv())
            waitFor(lambda: isListening(mgmt), f"{name} to listen", procs=[wf], failIfEnded=True)
            left, right = cPlug(self, "left", s1.path), cPlug(self, "right", s2.path)
            back = Path(self, right, left, [s1.process, s2.process, wf])
            back.waitUp()
            ahead = Path(self, left, right, [s1.process, s2.process, wf])
            ahead.send(range(50))
            self.assertEqual(ahead.settle(0.3), [], name)
            console = ConsoleClient(mgmt, prompt=PROMPT)
            try:
                info = console.cmd("showinfo").decode()
            finally:
                console.close()
            self.assertIn("Loss   L->R 100+0U   R->L 0+0U", info, name)
            self.assertIn("Delay  L->R 0+0U   R->L 5+0U", info, name)


class NestedVnl(SynchronousTestCase):
    """
    C{wirefilter://} in our C{vde_plug} and in C{twistd vde --plug}, into a
    C switch: the same figures as the command's.
    """

    def plugPath(self, options: str) -> Path:
        sw = CSwitch(self, mgmt=False)
        sw.waitReady()
        rx = cPlug(self, "rx", sw.path)
        vnl = f"wirefilter://[{options}]{{vde://{sw.path}}}"
        tx = ourPlug(self, f"vde_plug {vnl}", vnl)
        path = Path(self, tx, rx, [sw.process])
        path.waitUp()
        return path

    def switchPath(self, options: str) -> Path:
        sw = CSwitch(self, mgmt=False)
        sw.waitReady()
        rx = cPlug(self, "rx", sw.path)
        vnl = f"wirefilter://[{options}]{{vde://{sw.path}}}"
        ours = SwitchProcess(self, "--plug", vnl, twistd=True, mgmt=False)
        tx = cPlug(self, "tx", ours.path)
        path = Path(self, tx, rx, [sw.process, ours])
        path.waitUp()
        return path

    def test_lossVdePlug(self) -> None:
        path = self.plugPath("loss=20")
        path.send(range(2000))
        within(self, len(set(path.settle())), 2000, 0.2, "vde_plug wirefilter://")

    def test_delayVdePlug(self) -> None:
        path = self.plugPath("delay=40")
        median = statistics.median(path.latencies(25))
        self.assertTrue(0.039 <= median <= 0.070, f"median {median * 1000:.1f} ms")

    def test_bandwidthVdePlug(self) -> None:
        path = self.plugPath("bandwidth=50000")
        rate = path.goodput(60, 1000)
        self.assertTrue(40000 <= rate <= 60000, f"{rate:.0f} bytes/s")

    def test_lossTwistd(self) -> None:
        path = self.switchPath("loss=20")
        path.send(range(2000))
        within(self, len(set(path.settle())), 2000, 0.2, "twistd vde --plug wirefilter://")

    def test_delayTwistd(self) -> None:
        path = self.switchPath("delay=40")
        median = statistics.median(path.latencies(25))
        self.assertTrue(0.039 <= median <= 0.070, f"median {median * 1000:.1f} ms")

    def test_badValues(self) -> None:
        """
        vde_plug with a bad value or option: one line naming it, status 1.
        """
        for options, words in [("loss=abc", "loss="), ("delay=-5", "delay="),
                               ("colour=red", "unknown key: colour")]:
            vnl = f"wirefilter://[{options}]{{null://}}"
            proc = ourPlug(self, f"vde_plug {vnl}", vnl)
            self.assertEqual(proc.wait(), 1, proc.describe())
            lines = proc.stderrText().splitlines()
            self.assertTrue(any(words in line and vnl in line for line in lines), lines)
