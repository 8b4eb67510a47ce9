#!/usr/bin/env python3
"""
Two taps joined by a vxvde group, no switch: vdetwist's vde_plug against the
C one, in the same run, interleaved; both plugs of a pair are the same
program.

    [ns A: tap 10.80.0.1] <-> vde_plug tap://A vxvde://G <-> multicast/unicast UDP <-> vde_plug tap://B vxvde://G <-> [ns B: tap 10.80.0.2]

G is 239.80.0.1 (port 14880, VNI 80).  The two plugs run in a third
("cable") namespace, whose loopback carries the group (multicast on,
224.0.0.0/4 routed to lo), so no datagram leaves the namespaces made here.
Each tap is made in the cable namespace, opened there by its plug, then
moved into its host namespace (the plug's descriptor keeps working).  The
plugs and their taps are made afresh for every run.

The plug pairs:

    ours  python3 -m vdetwist.scripts.vde_plug tap://X vxvde://G
    C     /usr/bin/vde_plug tap://X vxvde://G   (vdeplug4's tap and vxvde plugins)

Per pair and repeat, iperf3 (client in A, server in B):

  * UDP flood: iperf3 -u -l 18 -b 0 (60-byte frames on the tap, 64 with the
    FCS); kframes/s = datagrams the iperf3 server received / seconds;
  * UDP at 10 kframes/s (iperf3 -u -l 18 -b 1.44M): only the CPU cost;
  * TCP: iperf3 -t N, Mbit/s received.

CPU µs/frame = CPU time of both plug processes (/proc/PID/task/*/schedstat)
/ frames they delivered, counted by the kernel on both taps (a tap's
rx_packets counts the frames its plug wrote into it), over the test.  The
diagnostics split the flood between the sending plug (A: CPU per frame it
read from its tap, tx_packets) and the receiving one (B: CPU per frame it
wrote into its tap), and show the frames lost between them (read by A,
never written by B: mostly B's socket buffer overflowing).

Run from the project root, as root (namespaces, taps):

    python3 bench/bench_vxvde.py [--seconds 3] [--repeat 5] [-v]

Needs iperf3 (apt-get install iperf3) and the C vde_plug with its tap and
vxvde plugins (apt-get install vdeplug).
"""

from __future__ import annotations

import subprocess
import sys

import benchlib
from benchlib import (
    FIXED, FLOOD, TCP, Processes, cpuSeconds, linkStats, schedStats, waitFor,
)
from vdetwist.testing import netns

ADDRESSES = ("10.80.0.1", "10.80.0.2")
PREFIX = 24
IPERF_PORT = 5280
GROUP = "239.80.0.1"
VNL = f"vxvde://{GROUP}/port=14880/vni=80"

#: (key, label, the plug's argv prefix)
PLUGS = [
    ("ours", "ours vde_plug", benchlib.ourPlug),
    ("c", "C vde_plug", benchlib.cPlug),
]
RATIOS = [("ours", "c")]


class Pair:
    """
    The two plug processes of one run and their taps (index 0: host A).
    """

    def __init__(self) -> None:
        self.plugs: list[subprocess.Popen] = []
        self.taps: list[tuple[str, netns.Namespace]] = []  # name, where it is now


class Bench:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.procs = Processes()
        self.hosts = benchlib.Hosts(self.procs, ADDRESSES, IPERF_PORT, PREFIX, "vtvxns")

    @property
    def cable(self) -> netns.Namespace:
        return self.hosts.third("c")

    def setUp(self) -> None:
        self.hosts.create()
        self.cable.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
        self.cable.run(["ip", "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)

    def tearDown(self) -> None:
        self.hosts.tearDown()

    def startPair(self, plug: list[str]) -> Pair:
        pair = Pair()
        try:
            for side in (0, 1):
                self.plugTap(pair, side, plug)
            waitFor(self.hosts.pings, 15, "ping through the vxvde group", pair.plugs)
        except BaseException:
            self.stopPair(pair)
            raise
        return pair

    def plugTap(self, pair: Pair, side: int, plug: list[str]) -> None:
        """
        Make a tap in the cable namespace, run C{plug tap://TAP VNL} on it
        there, then move the tap to host C{side} and give it its address.
        """
        name = netns.uniqueName(f"vtvx{'ab'[side]}")
        netns.createTap(name, self.cable)
        pair.taps.append((name, self.cable))
        netns.setUp(name, self.cable)
        process = self.procs.start(self.cable.command([*plug, f"tap://{name}", VNL]),
                                   env=benchlib.ourEnv(), stdin=subprocess.DEVNULL)
        pair.plugs.append(process)
        waitFor(lambda: netns.linkInfo(name, self.cable)["flags"] & benchlib.IFF_LOWER_UP,
                15, f"{plug[-1]} to open {name}", (process,))
        host = self.hosts.namespaces[side]
        netns.moveLink(name, host, self.cable)
        pair.taps[-1] = (name, host)
        self.hosts.configure(side, name)
        netns.waitOperational(name, host)

    def stopPair(self, pair: Pair) -> None:
        for process in pair.plugs:
            self.procs.stop(process)
        for name, ns in pair.taps:  # persistent: they outlive their plugs
            netns.removeLink(name, ns)

    def measure(self, pair: Pair, extra: list[str]) -> dict:
        """
        Run iperf3 with C{extra}; return its JSON, the frames the plugs
        delivered (both taps' rx_packets), and per frame: the plugs' CPU µs
        (and its user-mode part) and their wake-ups; for the flood, the
        sending plug's CPU per frame it read and the receiving plug's per
        frame it wrote.
        """
        (tapA, nsA), (tapB, nsB) = pair.taps
        plugA, plugB = pair.plugs

        def sample():
            a, b = linkStats(nsA, tapA), linkStats(nsB, tapB)
            return (cpuSeconds(plugA.pid), cpuSeconds(plugB.pid),
                    *schedStats(plugA.pid), *schedStats(plugB.pid),
                    a["rx_packets"], a["tx_packets"], b["rx_packets"])
        before = sample()
        data = self.hosts.iperf(self.seconds, extra)
        after = sample()
        (cpuA, cpuB, utimeA, stimeA, wakeA, utimeB, stimeB, wakeB,
         rxA, txA, rxB) = (a - b for a, b in zip(after, before))
        frames = max(rxA + rxB, 1)
        user = cpuA * benchlib.userShare(utimeA, stimeA) + cpuB * benchlib.userShare(utimeB, stimeB)
        return {
            "data": data,
            "frames": rxA + rxB,
            "plugs_us": (cpuA + cpuB) * 1e6 / frames,
            "user_us": user * 1e6 / frames,
            "wakeups": (wakeA + wakeB) / frames,
            "read_kfps": txA / self.seconds / 1e3,
            "sender_us": cpuA * 1e6 / max(txA, 1),
            "receiver_us": cpuB * 1e6 / max(rxB, 1),
            "loss_pct": 100 * max(txA - rxB, 0) / max(txA, 1),
        }

    def runOne(self, plug) -> dict[str, float]:
        pair = self.startPair(plug())
        try:
            out: dict[str, float] = {}
            flood = self.measure(pair, FLOOD)
            out["udp_kfps"] = benchlib.udpReceivedKfps(flood["data"])
            out["udp_sent_kfps"] = benchlib.udpSentKfps(flood["data"])
            out["cpu_flood"] = flood["plugs_us"]
            out["user_flood"] = flood["user_us"]
            out["wake_flood"] = flood["wakeups"]
            out["read_kfps"] = flood["read_kfps"]
            out["sender_us"] = flood["sender_us"]
            out["receiver_us"] = flood["receiver_us"]
            out["loss_pct"] = flood["loss_pct"]
            fixed = self.measure(pair, FIXED)
            out["cpu_10k"] = fixed["plugs_us"]
            out["user_10k"] = fixed["user_us"]
            out["wake_10k"] = fixed["wakeups"]
            tcp = self.measure(pair, TCP)
            out["tcp_mbps"] = benchlib.tcpMbps(tcp["data"])
            out["cpu_tcp"] = tcp["plugs_us"]
            out["user_tcp"] = tcp["user_us"]
            out["wake_tcp"] = tcp["wakeups"]
            for process in pair.plugs:
                if process.poll() is not None:
                    raise RuntimeError(f"the plug {process.args} died during the test")
            return out
        finally:
            self.stopPair(pair)


#: The main table: key, header, format.
COLUMNS = benchlib.IPERF_COLUMNS
#: Why: the user-mode part of the plugs' CPU per frame (the kernel part is
#: the tap and socket work both do), their wake-ups per frame (how well
#: they batch), and the flood seen per plug: how fast A took frames off its
#: tap, A's CPU per frame read, B's per frame written, the frames A sent
#: that B never wrote.
DIAGNOSTICS = benchlib.USER_WAKEUP_COLUMNS + [
    ("read_kfps", "flood: A read kf/s", "{:.1f}"),
    ("sender_us", "A µs/f read", "{:.2f}"),
    ("receiver_us", "B µs/f written", "{:.2f}"),
    ("loss_pct", "lost A->B %", "{:.1f}"),
]


def printTable(results: dict[str, list[dict[str, float]]], plugs) -> None:
    benchlib.printTables(
        results,
        [(key, label) for key, label, _ in plugs],
        RATIOS,
        [("Medians; µs/f = CPU µs of both plug processes per frame they delivered; "
          "the 'ours / C' row is a ratio\n(throughput: >1 is better; µs/f: <1 is better)",
          COLUMNS, True, True),
         ("Diagnostics (medians): the plugs' user-mode µs/f and wake-ups per frame; "
          "the flood per plug (A sends, B receives)", DIAGNOSTICS, False, True)],
        "plugs")


def main() -> int:
    options = benchlib.argumentParser(__doc__, 5, "both implementations",
                                      [k for k, *_ in PLUGS], "plug").parse_args()
    benchlib.checkSystem(("iperf3", "vde_plug", "ping", "ip"))
    plugs = benchlib.selectKeys(PLUGS, options.only, "plug")
    results = benchlib.runBench(Bench(options.seconds), plugs, options)
    printTable(results, plugs)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
