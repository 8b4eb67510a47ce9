#!/usr/bin/env python3
"""
Switch throughput, latency and CPU cost: vdetwist's switches, plugs and
cables against the C ones, and the kernel bridge as the ceiling, in the same
run, interleaved.

    [ns A: tap A 10.79.0.1] <-> vde_plug tap://A SW1 <-> SW1 [<-> CABLE <-> SW2] <-> vde_plug tap://B SW <-> [ns B: tap B 10.79.0.2]

The arrangements (key: switch, tap plugs, cable):

    ours-twistd   python3 -m twisted vde --switch DIR     C vde_plug
    ours-switch   python3 -m vdetwist.scripts.vde_plug null:// switch://DIR, C vde_plug
    c-vde_switch  vde_switch -s DIR                       C vde_plug   (all C)
    c-switch      vde_plug null:// switch://DIR           C vde_plug
    all-ours      our twistd vde                          our vde_plug (taps with
                  offloads, the default: super-frames cross the switch)
    ours-nooffload the same, the taps opened with offload=off
    ours-cable    two of our twistd vde, our plugs, joined by our vde_plug SW1 SW2
    c-cable       two vde_switch, C plugs, joined by the C vde_plug SW1 SW2
    ours-dpipe    two of our twistd vde, our plugs, joined by our
                  dpipe vde_plug SW1 = vde_plug SW2 (a stream cable)
    c-dpipe       the same with the C dpipe, vde_plug and vde_switch
    bridge        no VDE: A's and B's veths in a Linux bridge (a third
                  namespace), the ceiling

Ratios: each of ours against its C counterpart (ours-twistd and all-ours
against c-vde_switch, ours-switch against c-switch, the cables against
theirs), and all-ours and all C against the kernel bridge.  Traffic is made
by iperf3 (client in A, server in B) and ping.  Per arrangement and repeat:

  * UDP flood: iperf3 -u -l 18 -b 0 (60-byte frames on the tap, 64 with the
    FCS); kframes/s = datagrams the iperf3 server received / seconds;
  * UDP at 10 kframes/s (iperf3 -u -l 18 -b 1.44M): only the CPU cost;
  * TCP: iperf3 -t N, Mbit/s received;
  * ping A -> B (-c N -i 0.2): average and median RTT.

CPU µs/frame = CPU time of the switch process(es) and cable
(/proc/PID/task/*/schedstat, else utime + stime of /proc/PID/stat), or of
the two tap plugs, / frames delivered, counted by the kernel on both taps
(a tap's rx_packets counts the frames its plug wrote into it), over the
test.  A diagnostics table gives the user-mode part of the switch's CPU and
its wake-ups (voluntary context switches) per frame.  The bridge row has no
process: its CPU columns are "-".

Run from the project root, as root (namespaces, taps):

    python3 bench/bench_switch.py [--seconds 3] [--repeat 3] [--pings 10] [--only all-ours,c-vde_switch,bridge]

To measure a change against the code before it in the same run, give
another checkout as a baseline: its switches and plugs run as extra rows
"base ..." with ratios "ours / base" (keys base-twistd, base-switch,
base-all-ours):

    git worktree add /tmp/base HEAD~1
    python3 bench/bench_switch.py --baseline /tmp/base --only ours-twistd,base-twistd

(Our programs run with python3 -P, so the working directory does not
shadow PYTHONPATH's checkout.)

Needs iperf3 (apt-get install iperf3), ping and the C vde2/vdeplug4 tools
(vde_switch, vde_plug with its tap plugin, dpipe).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional

import benchlib
from benchlib import (FIXED, FLOOD, TCP, Processes, cpuSeconds, processTree, schedStats,
                      tapRx, waitFor, which)
from vdetwist.testing import netns

ADDR_A = "10.79.0.1"
ADDR_B = "10.79.0.2"
PREFIX = 24
IPERF_PORT = 5279


# -- the programs under test -------------------------------------------------

# -P: the working directory is not put ahead of PYTHONPATH, which picks the
# checkout (this one, or --baseline's).

def ourPlug() -> list[str]:
    return [sys.executable, "-P", "-m", "vdetwist.scripts.vde_plug"]


def cPlug() -> list[str]:
    return [which("vde_plug")]


def ourTwistd(dir: str) -> list[str]:
    return [sys.executable, "-P", "-m", "twisted", "vde", "--switch", dir, "--rcfile="]


def ourNetnode(dir: str) -> list[str]:
    return [*ourPlug(), "null://", "switch://" + dir]


def cVdeSwitch(dir: str) -> list[str]:
    return [which("vde_switch"), "-s", dir]


def cNetnode(dir: str) -> list[str]:
    return [*cPlug(), "null://", "switch://" + dir]


def ourCable(one: str, other: str) -> list[str]:
    return [*ourPlug(), one, other]


def cCable(one: str, other: str) -> list[str]:
    return [*cPlug(), one, other]


def ourDpipe(one: str, other: str) -> list[str]:
    return [sys.executable, "-P", "-m", "vdetwist.scripts.dpipe",
            *ourPlug(), one, "=", *ourPlug(), other]


def cDpipe(one: str, other: str) -> list[str]:
    return [which("dpipe"), *cPlug(), one, "=", *cPlug(), other]


@dataclass(frozen=True)
class Arrangement:
    """
    What joins the two taps: a switch (C{switch(DIR)}; C{None}: the kernel
    bridge instead) with the tap plugs C{plug() + [tap://T, DIR]}, or two
    switches joined by C{cable(DIR1, DIR2)}.  C{counterpart} is the key of
    the C arrangement this one is compared with.
    """
    key: str
    label: str
    switch: Optional[Callable[[str], list[str]]]
    plug: Callable[[], list[str]] = cPlug
    cable: Optional[Callable[[str, str], list[str]]] = None
    counterpart: Optional[str] = None
    #: What follows the tap's name in the tap plugs' VNL (our plugs only).
    tapOptions: str = ""


ARRANGEMENTS: list[Arrangement] = [
    Arrangement("ours-twistd", "ours twistd vde", ourTwistd, counterpart="c-vde_switch"),
    Arrangement("ours-switch", "ours switch://", ourNetnode, counterpart="c-switch"),
    Arrangement("c-vde_switch", "C vde_switch", cVdeSwitch),
    Arrangement("c-switch", "C switch://", cNetnode),
    Arrangement("all-ours", "all ours", ourTwistd, ourPlug,
                counterpart="c-vde_switch"),
    Arrangement("ours-nooffload", "all ours, offload=off", ourTwistd, ourPlug,
                tapOptions="/offload=off"),
    Arrangement("ours-cable", "ours 2 sw + vde_plug", ourTwistd, ourPlug, ourCable, "c-cable"),
    Arrangement("c-cable", "C 2 sw + vde_plug", cVdeSwitch, cPlug, cCable),
    Arrangement("ours-dpipe", "ours 2 sw + dpipe", ourTwistd, ourPlug, ourDpipe, "c-dpipe"),
    Arrangement("c-dpipe", "C 2 sw + dpipe", cVdeSwitch, cPlug, cDpipe),
    Arrangement("bridge", "kernel bridge", None),
]
#: The ceiling: what the kernel does without any VDE process.
CEILING_PAIRS = [("all-ours", "bridge"), ("c-vde_switch", "bridge"),
                 ("all-ours", "ours-nooffload")]


def baselineArrangements(root: str) -> list[Arrangement]:
    """
    Our switches and plugs from the checkout at C{root}, paired with ours:
    C{env} sets its path and execs, so the process measured is the
    program itself.
    """
    prefix = ["env", f"PYTHONPATH={os.path.abspath(root)}"]
    return [
        Arrangement("base-twistd", "base twistd vde", lambda d: prefix + ourTwistd(d)),
        Arrangement("base-switch", "base switch://", lambda d: prefix + ourNetnode(d)),
        Arrangement("base-all-ours", "base all ours", lambda d: prefix + ourTwistd(d),
                    lambda: prefix + ourPlug()),
        Arrangement("base-nooffload", "base all ours, offload=off",
                    lambda d: prefix + ourTwistd(d), lambda: prefix + ourPlug(),
                    tapOptions="/offload=off"),
    ]


BASELINE_PAIRS = [("ours-twistd", "base-twistd"), ("ours-switch", "base-switch"),
                  ("all-ours", "base-all-ours"), ("ours-nooffload", "base-nooffload")]


# -- the bench ---------------------------------------------------------------

@dataclass
class Run:
    """
    One run's interfaces (A's and B's, and the bridge's in the third
    namespace) and processes: the switches and cable in C{middle}, the
    tap plugs in C{plugs}.
    """
    ifA: str
    ifB: str
    bridge: Optional[str] = None
    middle: tuple[subprocess.Popen, ...] = ()
    plugs: tuple[subprocess.Popen, ...] = ()


class Bench:
    def __init__(self, seconds: float, pings: int) -> None:
        self.seconds = seconds
        self.pings = pings
        self.procs = Processes()
        self.tmp = tempfile.mkdtemp(prefix="vtbench-")
        self.hosts = benchlib.Hosts(self.procs, (ADDR_A, ADDR_B), IPERF_PORT, PREFIX, "vtbns")
        self.count = 0

    @property
    def nsA(self) -> Optional[netns.Namespace]:
        return self.hosts.nsA

    @property
    def nsB(self) -> Optional[netns.Namespace]:
        return self.hosts.nsB

    def setUp(self) -> None:
        self.hosts.create()

    @property
    def nsX(self) -> Optional[netns.Namespace]:
        """
        The bridge's namespace, made for the first bridge run.
        """
        return self.hosts.nsX

    def tearDown(self) -> None:
        try:
            self.hosts.tearDown()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, arrangement: Arrangement) -> Run:
        """
        Make the interfaces of A and B and what joins them, give them their
        addresses, and wait until A pings B.
        """
        run = Run(netns.uniqueName("vtba"), netns.uniqueName("vtbb"))
        try:
            if arrangement.switch is None:
                self.startBridge(run)
            else:
                self.startSwitches(run, arrangement)
            for side, ifname in enumerate((run.ifA, run.ifB)):
                self.hosts.configure(side, ifname)
            waitFor(self.hosts.pings, 15, f"A to ping B through {arrangement.label}",
                    (*run.middle, *run.plugs))
        except BaseException:
            self.stop(run)
            raise
        return run

    def startBridge(self, run: Run) -> None:
        """
        Join veths of A and B in a Linux bridge in the third namespace.
        """
        self.hosts.third()
        run.bridge = netns.uniqueName("vtbbr")
        with netns.routing(self.nsX) as ipr:
            ipr.link("add", ifname=run.bridge, kind="bridge")
        for ns, ifname in ((self.nsA, run.ifA), (self.nsB, run.ifB)):
            port = ifname + "p"
            netns.createVeth(ifname, port, ns, self.nsX)
            with netns.routing(self.nsX) as ipr:
                (index,) = ipr.link_lookup(ifname=port)
                ipr.link("set", index=index, master=ipr.link_lookup(ifname=run.bridge)[0])
            netns.setUp(port, self.nsX)
        netns.setUp(run.bridge, self.nsX)

    def startSwitches(self, run: Run, arrangement: Arrangement) -> None:
        """
        Start the switch (two and their cable for a cable arrangement) and
        the tap plugs on fresh taps of A and B.
        """
        dirs = []
        for _ in range(2 if arrangement.cable else 1):
            self.count += 1
            dir = os.path.join(self.tmp, f"sw{self.count}")
            switch = self.procs.start(arrangement.switch(dir), env=benchlib.ourEnv())
            run.middle += (switch,)
            dirs.append(dir)
            waitFor(lambda: os.path.exists(os.path.join(dir, "ctl")), 15, f"{dir}/ctl",
                    (switch,))
        if arrangement.cable:
            run.middle += (self.procs.start(arrangement.cable(dirs[0], dirs[-1]),
                                            env=benchlib.ourEnv()),)
        for ns, tap, dir in ((self.nsA, run.ifA, dirs[0]), (self.nsB, run.ifB, dirs[-1])):
            netns.createTap(tap, ns)
            vnl = "tap://" + tap + arrangement.tapOptions
            run.plugs += (self.procs.start(ns.command([*arrangement.plug(), vnl, dir]),
                                           env=benchlib.ourEnv()),)

    def stop(self, run: Run) -> None:
        for process in (*run.plugs, *reversed(run.middle)):
            self.procs.stop(process)
        for ns, ifname in ((self.nsA, run.ifA), (self.nsB, run.ifB), (self.nsX, run.bridge)):
            if ifname is not None:
                netns.removeLink(ifname, ns)

    def measure(self, run: Run, middle: list[int], plugs: list[int], extra: list[str]) -> dict:
        """
        Run iperf3 with C{extra}; return its JSON, the frames delivered
        (both taps' rx_packets), and per frame: the CPU µs of the processes
        C{middle} (and its user-mode part) and C{plugs} and the wake-ups of
        C{middle} (absent for the bridge, which has no process).
        """
        def sample():
            rx = tapRx(self.nsA, run.ifA) + tapRx(self.nsB, run.ifB)
            cpu = sum(cpuSeconds(pid) for pid in middle), sum(cpuSeconds(p) for p in plugs)
            stats = [sum(column) for column in zip(*(schedStats(pid) for pid in middle))]
            return rx, *cpu, *(stats or [0, 0, 0])
        before = sample()
        data = self.hosts.iperf(self.seconds, extra)
        after = sample()
        rx, swCpu, plugCpu, utime, stime, wakeups = (a - b for a, b in zip(after, before))
        out = {"data": data, "frames": rx}
        frames = max(rx, 1)
        if middle:
            out["switch_us"] = swCpu * 1e6 / frames
            out["user_us"] = swCpu * 1e6 / frames * benchlib.userShare(utime, stime)
            out["wakeups"] = wakeups / frames
        if plugs:
            out["plugs_us"] = plugCpu * 1e6 / frames
        if middle or plugs:
            # Per GB of what the iperf3 receiver got (TCP), not per frame:
            # with offloads one frame may be a 64 KiB super-frame.
            received = data["end"].get("sum_received", {}).get("bytes", 0)
            out["cpu_gb"] = (swCpu + plugCpu) / max(received, 1) * 1e9
        return out

    def runOne(self, arrangement: Arrangement) -> dict[str, float]:
        run = self.start(arrangement)
        try:
            # Now that it runs: dpipe's commands too.
            middle = [pid for p in run.middle for pid in processTree(p.pid)]
            plugs = [p.pid for p in run.plugs]
            out: dict[str, float] = {}
            for test, extra in (("flood", FLOOD), ("10k", FIXED), ("tcp", TCP)):
                result = self.measure(run, middle, plugs, extra)
                for key, name in (("switch_us", "cpu"), ("user_us", "user"),
                                  ("wakeups", "wake"), ("plugs_us", "plugs")):
                    if key in result:
                        out[f"{name}_{test}"] = result[key]
                if test == "tcp" and "cpu_gb" in result:
                    out["cpu_gb_tcp"] = result["cpu_gb"]
                if test == "flood":
                    out["udp_kfps"] = benchlib.udpReceivedKfps(result["data"])
                    out["udp_sent_kfps"] = benchlib.udpSentKfps(result["data"])
                elif test == "10k":
                    out["fixed_kfps"] = result["frames"] / self.seconds / 1e3
                else:
                    out["tcp_mbps"] = benchlib.tcpMbps(result["data"])
            rtt = benchlib.pingRtt(self.nsA, ADDR_B, self.pings)
            out["ping_avg"] = rtt["avg"] * 1e3
            out["ping_median"] = rtt["median"] * 1e3
            for process in (*run.middle, *run.plugs):
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args} died during the test")
            return out
        finally:
            self.stop(run)


#: Throughput and latency.
THROUGHPUT = benchlib.IPERF_THROUGHPUT_COLUMNS + [
    ("ping_avg", "ping avg µs", "{:.0f}"),
    ("ping_median", "ping med µs", "{:.0f}"),
]
#: CPU per frame delivered: the switch(es) and cable, the two tap plugs.
CPU = [(key, "sw " + header, fmt) for key, header, fmt in benchlib.IPERF_CPU_COLUMNS] + [
    ("plugs_flood", "plugs µs/f flood", "{:.2f}"),
    ("plugs_10k", "plugs µs/f @10k", "{:.2f}"),
    ("plugs_tcp", "plugs µs/f TCP", "{:.2f}"),
    ("cpu_gb_tcp", "sw+plugs CPU s/GB TCP", "{:.2f}"),
]
#: Why: the user-mode part of the switch's CPU per frame (the kernel part
#: is the socket work every switch does) and its wake-ups per frame (how
#: well it batches).
DIAGNOSTICS = benchlib.USER_WAKEUP_COLUMNS + [
    ("fixed_kfps", "kf/s @10k", "{:.1f}"),
]


def printTable(results: dict[str, list[dict[str, float]]],
               arrangements: list[Arrangement]) -> None:
    benchlib.printTables(
        results,
        [(a.key, a.label) for a in arrangements],
        [(a.key, a.counterpart) for a in arrangements if a.counterpart]
        + CEILING_PAIRS + BASELINE_PAIRS,
        [("Medians; UDP64: 64-byte frames the iperf3 server received; ping A -> B; "
          "the 'x / y' rows are ratios (throughput: >1 is better; µs: <1 is better)",
          THROUGHPUT, True, True),
         ("CPU µs per frame delivered (medians): sw = the switch process(es) and cable, "
          "plugs = the two tap plugs together", CPU, False, True),
         ("Diagnostics (medians): the switch's user-mode µs/f, its wake-ups per frame, "
          "frames delivered per second in the 10k test", DIAGNOSTICS, False, False)],
        "arrangement")


def main() -> int:
    def addOptions(parser) -> None:
        parser.add_argument("--pings", type=int, default=10,
                            help="pings per RTT measurement, 0.2 s apart (default 10)")
        parser.add_argument("--baseline", metavar="DIR",
                            help="another vdetwist checkout whose switches and plugs "
                            "run too (base-*)")

    keys = [a.key for a in ARRANGEMENTS + baselineArrangements("/")]
    options = benchlib.argumentParser(__doc__, 3, "all arrangements", keys, "arrangement",
                                      addOptions).parse_args()
    benchlib.checkSystem(("iperf3", "vde_switch", "vde_plug", "dpipe", "ping"))
    candidates = ARRANGEMENTS
    if options.baseline:
        if not os.path.isdir(os.path.join(options.baseline, "vdetwist")):
            sys.exit(f"--baseline {options.baseline}: not a vdetwist checkout")
        candidates = ARRANGEMENTS + baselineArrangements(options.baseline)
    arrangements = benchlib.selectKeys([(a.key, a) for a in candidates], options.only,
                                       "arrangement")
    arrangements = [a for _, a in arrangements]
    results = benchlib.runBench(
        Bench(options.seconds, options.pings), [(a.key, a.label, a) for a in arrangements],
        options)
    printTable(results, arrangements)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
