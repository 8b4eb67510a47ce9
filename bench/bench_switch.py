#!/usr/bin/env python3
"""
Switch throughput and CPU cost: vdetwist's switches against the C ones, in
the same run, interleaved, with the same plug program on every port.

    [ns A: tap A 10.79.0.1] <-> C vde_plug tap://A DIR <-> SWITCH <-> C vde_plug tap://B DIR <-> [ns B: tap B 10.79.0.2]

SWITCH is, in turn:

    ours twistd    python3 -m twisted vde --switch DIR
    ours switch:// python3 -m vdetwist.scripts.vde_plug null:// switch://DIR
    C vde_switch   vde_switch -s DIR
    C switch://    vde_plug null:// switch://DIR

Only the switch differs: the two tap plugs are always the C vde_plug, and
traffic is made by iperf3 (client in A, server in B).  Per switch and repeat:

  * UDP flood: iperf3 -u -l 18 -b 0 (60-byte frames on the tap, 64 with the
    FCS); kframes/s = datagrams the iperf3 server received / seconds;
  * UDP at 10 kframes/s (iperf3 -u -l 18 -b 1.44M): only the CPU cost;
  * TCP: iperf3 -t N, Mbit/s received.

CPU µs/frame = CPU time of the switch process (/proc/PID/task/*/schedstat,
else utime + stime of /proc/PID/stat) / frames the switch delivered,
counted by the kernel on both taps (a tap's rx_packets counts the frames
its plug wrote into it), over the test.  A second table gives the
user-mode part of it, the switch's wake-ups (voluntary context switches)
per frame and the two plugs' CPU per frame (the same program for every
switch: it should not vary much).

Run from the project root, as root (namespaces, taps):

    python3 bench/bench_switch.py [--seconds 3] [--repeat 3] [--only ours-twistd,c-vde_switch]

To measure a change against the code before it in the same run, give
another checkout as a baseline: its switches run as extra rows "base ..."
with ratios "ours / base" (keys base-twistd, base-switch):

    git worktree add /tmp/base HEAD~1
    python3 bench/bench_switch.py --baseline /tmp/base --only ours-twistd,base-twistd

(Our switches run with python3 -P, so the working directory does not
shadow PYTHONPATH's checkout.)

Needs iperf3 (apt-get install iperf3) and the C vde2/vdeplug4 tools.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Callable, Optional

import benchlib
from benchlib import FIXED, FLOOD, TCP, Processes, cpuSeconds, schedStats, tapRx, waitFor, which
from vdetwist import netns

ADDR_A = "10.79.0.1"
ADDR_B = "10.79.0.2"
PREFIX = 24
IPERF_PORT = 5279


# -- the switches under test -------------------------------------------------

# -P: the working directory is not put ahead of PYTHONPATH, which picks the
# checkout (this one, or --baseline's).

def ourTwistd(dir: str) -> list[str]:
    return [sys.executable, "-P", "-m", "twisted", "vde", "--switch", dir, "--rcfile="]


def ourNetnode(dir: str) -> list[str]:
    return [sys.executable, "-P", "-m", "vdetwist.scripts.vde_plug", "null://",
            "switch://" + dir]


def cVdeSwitch(dir: str) -> list[str]:
    return [which("vde_switch"), "-s", dir]


def cNetnode(dir: str) -> list[str]:
    return [which("vde_plug"), "null://", "switch://" + dir]


#: (key, label, command, the C counterpart's key or None)
SWITCHES: list[tuple[str, str, Callable[[str], list[str]], Optional[str]]] = [
    ("ours-twistd", "ours twistd vde", ourTwistd, "c-vde_switch"),
    ("ours-switch", "ours switch://", ourNetnode, "c-switch"),
    ("c-vde_switch", "C vde_switch", cVdeSwitch, None),
    ("c-switch", "C switch://", cNetnode, None),
]



def baselineSwitches(root: str) -> list[tuple[str, str, Callable[[str], list[str]], Optional[str]]]:
    """
    Our switches from the checkout at C{root}, paired with ours: C{env}
    sets its path and execs, so the process measured is the switch itself.
    """
    prefix = ["env", f"PYTHONPATH={os.path.abspath(root)}"]
    return [
        ("base-twistd", "base twistd vde", lambda d: prefix + ourTwistd(d), None),
        ("base-switch", "base switch://", lambda d: prefix + ourNetnode(d), None),
    ]


BASELINE_PAIRS = [("ours-twistd", "base-twistd"), ("ours-switch", "base-switch")]


# -- the bench ---------------------------------------------------------------

class Bench:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.procs = Processes()
        self.tmp = tempfile.mkdtemp(prefix="vtbench-")
        self.hosts = benchlib.Hosts(self.procs, (ADDR_A, ADDR_B), IPERF_PORT, PREFIX, "vtbns")
        self.tapA = netns.uniqueName("vtba")
        self.tapB = netns.uniqueName("vtbb")
        self.count = 0

    @property
    def nsA(self) -> Optional[netns.Namespace]:
        return self.hosts.nsA

    @property
    def nsB(self) -> Optional[netns.Namespace]:
        return self.hosts.nsB

    def setUp(self) -> None:
        self.hosts.create()
        for side, tap in enumerate((self.tapA, self.tapB)):
            netns.createTap(tap, self.hosts.namespaces[side])
            self.hosts.configure(side, tap)

    def tearDown(self) -> None:
        try:
            self.procs.stopAll()
        finally:
            self.hosts.remove()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def startSwitch(self, command: Callable[[str], list[str]]):
        self.count += 1
        dir = os.path.join(self.tmp, f"sw{self.count}")
        switch = self.procs.start(command(dir), env=benchlib.ourEnv())
        waitFor(lambda: os.path.exists(os.path.join(dir, "ctl")), 15, f"{dir}/ctl", (switch,))
        plugs = []
        for ns, tap in ((self.nsA, self.tapA), (self.nsB, self.tapB)):
            plugs.append(self.procs.start(ns.command([which("vde_plug"), "tap://" + tap, dir])))
        # Both taps carry frames once their plug is in: wait until A reaches B.
        waitFor(self.hosts.pings, 15, "ping through the switch", (switch, *plugs))
        return switch, plugs

    def stopSwitch(self, switch, plugs) -> None:
        for plug in plugs:
            self.procs.stop(plug)
        self.procs.stop(switch)

    def measure(self, switch, plugs, extra: list[str]) -> dict:
        """
        Run iperf3 with C{extra}; return its JSON, the frames the switch
        delivered (both taps' rx_packets), and per frame: the switch's CPU
        µs (and its user-mode part), the plugs' CPU µs and the switch's
        wake-ups.
        """
        def sample():
            return (cpuSeconds(switch.pid), sum(cpuSeconds(p.pid) for p in plugs),
                    tapRx(self.nsA, self.tapA) + tapRx(self.nsB, self.tapB),
                    *schedStats(switch.pid))
        before = sample()
        data = self.hosts.iperf(self.seconds, extra)
        after = sample()
        swCpu, plugCpu, rx, utime, stime, wakeups = (a - b for a, b in zip(after, before))
        frames = max(rx, 1)
        return {
            "data": data,
            "frames": rx,
            "switch_us": swCpu * 1e6 / frames,
            "user_us": swCpu * 1e6 / frames * benchlib.userShare(utime, stime),
            "plugs_us": plugCpu * 1e6 / frames,
            "wakeups": wakeups / frames,
        }

    def runOne(self, command) -> dict[str, float]:
        switch, plugs = self.startSwitch(command)
        try:
            out: dict[str, float] = {}
            flood = self.measure(switch, plugs, FLOOD)
            out["udp_kfps"] = benchlib.udpReceivedKfps(flood["data"])
            out["udp_sent_kfps"] = benchlib.udpSentKfps(flood["data"])
            out["cpu_flood"] = flood["switch_us"]
            out["user_flood"] = flood["user_us"]
            out["plugs_flood"] = flood["plugs_us"]
            out["wake_flood"] = flood["wakeups"]
            fixed = self.measure(switch, plugs, FIXED)
            out["cpu_10k"] = fixed["switch_us"]
            out["user_10k"] = fixed["user_us"]
            out["wake_10k"] = fixed["wakeups"]
            out["fixed_kfps"] = fixed["frames"] / self.seconds / 1e3
            tcp = self.measure(switch, plugs, TCP)
            out["tcp_mbps"] = benchlib.tcpMbps(tcp["data"])
            out["cpu_tcp"] = tcp["switch_us"]
            out["user_tcp"] = tcp["user_us"]
            out["plugs_tcp"] = tcp["plugs_us"]
            out["wake_tcp"] = tcp["wakeups"]
            if switch.poll() is not None:
                raise RuntimeError(f"the switch {switch.args} died during the test")
            return out
        finally:
            self.stopSwitch(switch, plugs)


#: The main table: key, header, format.
COLUMNS = benchlib.IPERF_COLUMNS
#: Why: the user-mode part of the switch's CPU per frame (the kernel part
#: is the socket work every switch does), its wake-ups per frame (how well
#: it batches), and the two C tap plugs' CPU per frame (same program for
#: every switch).
DIAGNOSTICS = benchlib.USER_WAKEUP_COLUMNS + [
    ("plugs_flood", "plugs µs/f flood", "{:.2f}"),
    ("plugs_tcp", "TCP", "{:.2f}"),
]


def printTable(results: dict[str, list[dict[str, float]]], switches) -> None:
    benchlib.printTables(
        results,
        [(key, label) for key, label, _, _ in switches],
        [(key, other) for key, _, _, other in switches if other] + BASELINE_PAIRS,
        [("Medians; µs/f = CPU µs of the switch process per frame it delivered; "
          "the 'ours / C' rows are ratios\n(throughput: >1 is better; µs/f: <1 is better)",
          COLUMNS, True, True),
         ("Diagnostics (medians): the switch's user-mode µs/f, its wake-ups per frame, "
          "the two C tap plugs' µs/f", DIAGNOSTICS, False, False)],
        "switch")


def main() -> int:
    def addOptions(parser) -> None:
        parser.add_argument("--baseline", metavar="DIR",
                            help="another vdetwist checkout whose switches run too (base-*)")

    keys = [k for k, *_ in SWITCHES] + [k for k, *_ in baselineSwitches("/")]
    options = benchlib.argumentParser(__doc__, 3, "all switches", keys, "switch",
                                      addOptions).parse_args()
    benchlib.checkSystem(("iperf3", "vde_switch", "vde_plug", "ping"))
    candidates = SWITCHES
    if options.baseline:
        if not os.path.isdir(os.path.join(options.baseline, "vdetwist")):
            sys.exit(f"--baseline {options.baseline}: not a vdetwist checkout")
        candidates = SWITCHES + baselineSwitches(options.baseline)
    switches = benchlib.selectKeys(candidates, options.only, "switch")
    results = benchlib.runBench(
        Bench(options.seconds),
        [(key, label, command) for key, label, command, _ in switches], options)
    printTable(results, switches)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
