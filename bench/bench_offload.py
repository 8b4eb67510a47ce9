#!/usr/bin/env python3
"""
Offloading taps: TCP through one vde_plug joining two taps, with the
virtio-net header and the kernel's offloads (the default) against
offload=off, the C vde_plug and the kernel bridge, in the same run,
interleaved.

    [ns A: tap A 10.81.0.1] <-> vde_plug tap://A tap://B <-> [ns B: tap B 10.81.0.2]

The arrangements (key):

    offload   our vde_plug tap://A tap://B: 64 KiB super-frames cross in one piece
    off       our vde_plug tap://A/offload=off tap://B/offload=off: MTU frames
    c         the C vde_plug tap://A tap://B
    bridge    no VDE: A's and B's veths in a Linux bridge (a third namespace)

Per arrangement and repeat: TCP A -> B and B -> A (iperf3 -t N, and -R),
Mbit/s received, and the plug's CPU seconds per GB moved
(/proc/PID/task/*/schedstat).  The taps are made in a third namespace, where
the plug runs and opens them, then moved into A and B (the plug's
descriptors keep working across the move).  Ratios: offload against off, C
and the bridge.

Run from the project root, as root (namespaces, taps):

    python3 bench/bench_offload.py [--seconds 3] [--repeat 3] [--only offload,off,c,bridge]

Needs iperf3 (apt-get install iperf3), ping and the C vde_plug with its tap
plugin.
"""

from __future__ import annotations

import sys
from typing import Optional

import benchlib
from benchlib import Processes, cpuSeconds, waitFor, which
from vdetwist.testing import netns

ADDR_A = "10.81.0.1"
ADDR_B = "10.81.0.2"
IPERF_PORT = 5281

# -P: the working directory is not put ahead of PYTHONPATH.
OURS = [sys.executable, "-P", "-m", "vdetwist.scripts.vde_plug"]

#: key, label, the plug's argv before the two VNLs (None: the bridge; []:
#: the C vde_plug), and what to append to each tap:// VNL.
ARRANGEMENTS: list[tuple[str, str, Optional[list[str]], str]] = [
    ("offload", "ours, offloads", OURS, ""),
    ("off", "ours, offload=off", OURS, "/offload=off"),
    ("c", "C vde_plug", [], ""),
    ("bridge", "kernel bridge", None, ""),
]
RATIOS = [("offload", "off"), ("offload", "c"), ("offload", "bridge"), ("off", "c"),
          ("c", "bridge")]

COLUMNS: list[benchlib.Column] = [
    ("up_mbps", "TCP A->B Mb/s", "{:.0f}"),
    ("down_mbps", "TCP B->A Mb/s", "{:.0f}"),
    ("up_cpu", "A->B CPU s/GB", "{:.2f}"),
    ("down_cpu", "B->A CPU s/GB", "{:.2f}"),
]


class Bench:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.procs = Processes()
        self.hosts = benchlib.Hosts(self.procs, (ADDR_A, ADDR_B), IPERF_PORT, 24, "vtons")

    @property
    def nsX(self) -> netns.Namespace:
        return self.hosts.third()

    def setUp(self) -> None:
        self.hosts.create()
        self.hosts.third()

    def tearDown(self) -> None:
        self.hosts.tearDown()

    def start(self, plug: Optional[list[str]], suffix: str) -> tuple[list[str], list]:
        """
        Join A and B: the plug on two taps made in the third namespace and
        moved, or veths in a bridge there.  Returns the interfaces of A and
        B, then the bridge's if any, and the plug process (if any).
        """
        a, b = netns.uniqueName("vtoa"), netns.uniqueName("vtob")
        if plug is None:
            bridge = netns.uniqueName("vtobr")
            self.nsX.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
            for ns, ifname in zip(self.hosts.namespaces, (a, b)):
                netns.createVeth(ifname, ifname + "p", ns, self.nsX)
                self.nsX.run(["ip", "link", "set", ifname + "p", "master", bridge, "up"],
                             check=True)
            netns.setUp(bridge, self.nsX)
            made, processes = [a, b, bridge], []
        else:
            for tap in (a, b):
                netns.createTap(tap, self.nsX)
                netns.setUp(tap, self.nsX)
            process = self.procs.start(
                self.nsX.command([*(plug or [which("vde_plug")]), f"tap://{a}{suffix}",
                                  f"tap://{b}{suffix}"]), env=benchlib.ourEnv())
            waitFor(lambda: all(netns.linkInfo(t, self.nsX)["flags"] & benchlib.IFF_LOWER_UP
                                for t in (a, b)), 15, "the plug to open its taps", (process,))
            for ns, tap in zip(self.hosts.namespaces, (a, b)):
                netns.moveLink(tap, ns, self.nsX)
            made, processes = [a, b], [process]
        for side, ifname in enumerate((a, b)):
            self.hosts.configure(side, ifname)
        waitFor(self.hosts.pings, 15, "A to ping B", processes)
        return made, processes

    def runOne(self, arrangement: tuple[Optional[list[str]], str]) -> dict[str, float]:
        made, processes = self.start(*arrangement)
        try:
            out: dict[str, float] = {}
            for name, extra in (("up", []), ("down", ["-R"])):
                before = sum(cpuSeconds(p.pid) for p in processes)
                data = self.hosts.iperf(self.seconds, extra)
                cpu = sum(cpuSeconds(p.pid) for p in processes) - before
                out[f"{name}_mbps"] = benchlib.tcpMbps(data)
                if processes:
                    gigabytes = out[f"{name}_mbps"] * self.seconds / 8e3
                    out[f"{name}_cpu"] = cpu / max(gigabytes, 1e-9)
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args} died during the test")
            return out
        finally:
            for process in processes:
                self.procs.stop(process)
            for ns, ifname in zip((*self.hosts.namespaces, self.nsX), made):
                netns.removeLink(ifname, ns)


def main() -> int:
    keys = [key for key, _, _, _ in ARRANGEMENTS]
    options = benchlib.argumentParser(__doc__, 3, "all arrangements", keys,
                                      "arrangement").parse_args()
    benchlib.checkSystem(("iperf3", "vde_plug", "ping"))
    chosen = benchlib.selectKeys(ARRANGEMENTS, options.only, "arrangement")
    results = benchlib.runBench(
        Bench(options.seconds),
        [(key, label, (plug, suffix)) for key, label, plug, suffix in chosen], options)
    benchlib.printTables(
        results, [(key, label) for key, label, _, _ in chosen], RATIOS,
        [("Medians; CPU: the plug process per GB moved; 'x / y' rows are ratios "
          "(Mb/s: >1 is better; CPU: <1 is better)", COLUMNS, True, True)],
        "arrangement")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
