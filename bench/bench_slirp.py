#!/usr/bin/env python3
"""
slirp:// throughput and latency: vdetwist's pure-Python engine against the
C vde_plug's (libslirp through libvdeplug_slirp), in the same run,
interleaved, at MTU 1500 and 9000.

    [ns G "guest": tap 10.0.2.15/24, mtu M]
        <-> vde_plug tap://T slirp:///mtu=M/mru=M (in H) <->
    [ns H "host": 127.0.0.1, iperf3 -s]

The plug process runs in the host namespace H, whose loopback plays the
host's: the gateway 10.0.2.2 reaches H's 127.0.0.1, where an iperf3 server
listens.  The tap is made in H, opened there by the plug, then moved into
the guest namespace G and configured statically (10.0.2.15/24, default
route via 10.0.2.2, MTU M).  H also has 10.98.0.1 on its loopback and
allows ICMP datagram sockets (net.ipv4.ping_group_range), so that the
guest's pings to 10.98.0.1 go through the engine's ICMP NAT to H's kernel.
The plug and its tap are made afresh for every run.  Both engines size
their TCP MSS from min(mtu, mru) - 40, so jumbo frames need both options
(mtu=9000 alone still gives 1460-byte segments).

The plugs:

    ours  python3 -m vdetwist.scripts.vde_plug tap://T slirp:///mtu=M/mru=M
    C     /usr/bin/vde_plug tap://T slirp:///mtu=M/mru=M   (vdeplug4's tap + libvdeplug_slirp)

Per plug, MTU and round:

  * TCP up: iperf3 -c 10.0.2.2 from G (guest -> host), Mbit/s received;
  * TCP down: the same with -R (host -> guest);
  * ping RTT to 10.0.2.2 (answered by the engine itself in both) and through
    to 10.98.0.1 (the host's kernel answers): ping -c N -i 0.2, avg in ms;
  * CPU of the plug process (all its threads: libslirp runs in a thread of
    its own) per byte moved, and as a share of one core.

Run from the project root, as root (namespaces, taps):

    python3 bench/bench_slirp.py [--seconds 3] [--repeat 3] [--mtu 1500,9000] [--only ours,c] [-v]

Needs iperf3 (apt-get install iperf3), ping (iputils-ping) and the C
vde_plug with its tap and slirp plugins (apt-get install vdeplug
libvdeplug-slirp).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import benchlib
from benchlib import Processes, cpuSeconds, waitFor
from vdetwist import netns

GUEST = "10.0.2.15"
GATEWAY = "10.0.2.2"
PREFIX = 24
#: An address of the host namespace's own (on its loopback) for pings
#: through the engine's ICMP NAT.
THROUGH = "10.98.0.1"
IPERF_PORT = 5281

#: (key, label, the plug's argv prefix)
PLUGS = [
    ("ours", "ours", benchlib.ourPlug),
    ("c", "C", benchlib.cPlug),
]


class Run:
    """
    The plug process of one run and its tap.
    """

    def __init__(self, tap: str) -> None:
        self.tap = tap
        self.where: netns.Namespace | None = None
        self.plug: subprocess.Popen | None = None


class Bench:
    def __init__(self, seconds: float, pings: int) -> None:
        self.seconds = seconds
        self.pings = pings
        self.procs = Processes()
        # A: the guest (iperf3 client), B: the host (iperf3 server on all of
        # its addresses, 127.0.0.1 included); the client aims at 10.0.2.2.
        self.hosts = benchlib.Hosts(self.procs, (GUEST, GATEWAY), IPERF_PORT, PREFIX, "vtsl")

    @property
    def guest(self) -> netns.Namespace:
        return self.hosts.nsA

    @property
    def host(self) -> netns.Namespace:
        return self.hosts.nsB

    def setUp(self) -> None:
        self.hosts.create()
        netns.addAddress("lo", f"{THROUGH}/32", self.host)
        with netns.entered(self.host):  # per namespace: ICMP datagram sockets for all
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
                f.write("0 2147483647")

    def tearDown(self) -> None:
        try:
            self.procs.stopAll()
        finally:
            self.hosts.remove()

    def start(self, plug: list[str], mtu: int) -> Run:
        """
        Make a tap in the host namespace, run C{plug tap://TAP
        slirp:///mtu=MTU/mru=MTU} on it there, move the tap to the guest and
        configure it; wait until the guest pings the gateway.
        """
        run = Run(netns.uniqueName("vtslt"))
        try:
            netns.createTap(run.tap, self.host)
            run.where = self.host
            netns.setUp(run.tap, self.host)
            run.plug = self.procs.start(
                self.host.command([*plug, f"tap://{run.tap}", f"slirp:///mtu={mtu}/mru={mtu}"]),
                env=benchlib.ourEnv(), stdin=subprocess.DEVNULL)
            waitFor(lambda: netns.linkInfo(run.tap, self.host)["flags"] & benchlib.IFF_LOWER_UP,
                    15, f"{plug[-1]} to open {run.tap}", (run.plug,))
            netns.moveLink(run.tap, self.guest, self.host)
            run.where = self.guest
            netns.setUp(run.tap, self.guest, mtu=mtu)
            self.hosts.configure(0, run.tap)
            with netns.routing(self.guest) as ipr:
                ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY)
            netns.waitOperational(run.tap, self.guest)
            waitFor(self.hosts.pings, 15, "the guest to ping 10.0.2.2", (run.plug,))
        except BaseException:
            self.stop(run)
            raise
        return run

    def stop(self, run: Run) -> None:
        if run.plug is not None:
            self.procs.stop(run.plug)
        if run.where is not None:  # persistent: it outlives its plug
            netns.removeLink(run.tap, run.where)

    def tcp(self, run: Run, extra: list[str]) -> tuple[float, float, float, int]:
        """
        One iperf3 test: Mbit/s received, the plug's CPU ns per byte
        received and its CPU share of one core (%), the sender's
        retransmissions.
        """
        cpu, wall = cpuSeconds(run.plug.pid), time.monotonic()
        data = self.hosts.iperf(self.seconds, extra)
        cpu, wall = cpuSeconds(run.plug.pid) - cpu, time.monotonic() - wall
        received = data["end"]["sum_received"]
        retransmits = data["end"]["sum_sent"].get("retransmits", 0)
        return (benchlib.tcpMbps(data), cpu * 1e9 / max(received["bytes"], 1),
                100 * cpu / wall, retransmits)

    def runOne(self, arg) -> dict[str, float]:
        plug, mtu = arg
        run = self.start(plug(), mtu)
        try:
            out: dict[str, float] = {}
            for direction, extra in (("up", []), ("down", ["-R"])):
                (out[f"tcp_{direction}"], out[f"ns_{direction}"], out[f"cpu_{direction}"],
                 out[f"retr_{direction}"]) = self.tcp(run, extra)
            for key, address in (("gw", GATEWAY), ("through", THROUGH)):
                rtt = benchlib.pingRtt(self.guest, address, self.pings)
                out[f"ping_{key}"] = rtt["avg"]
                out[f"ping_{key}_min"] = rtt["min"]
                out[f"ping_{key}_loss"] = rtt["loss"]
            if run.plug.poll() is not None:
                raise RuntimeError(f"the plug {run.plug.args} died during the test")
            return out
        finally:
            self.stop(run)


COLUMNS = [
    ("tcp_up", "TCP up Mb/s", "{:.0f}"),
    ("tcp_down", "TCP down Mb/s", "{:.0f}"),
    ("ping_gw", "ping gw ms", "{:.3f}"),
    ("ping_through", "ping thru ms", "{:.3f}"),
    ("ns_up", "CPU ns/B up", "{:.1f}"),
    ("ns_down", "CPU ns/B down", "{:.1f}"),
]
DIAGNOSTICS = [
    ("cpu_up", "plug CPU% up", "{:.0f}"),
    ("cpu_down", "CPU% down", "{:.0f}"),
    ("retr_up", "guest retransmits", "{:.0f}"),
    ("ping_gw_min", "ping gw min ms", "{:.3f}"),
    ("ping_through_min", "ping thru min ms", "{:.3f}"),
    ("ping_gw_loss", "gw loss %", "{:.0f}"),
    ("ping_through_loss", "thru loss %", "{:.0f}"),
]


def addOptions(parser: argparse.ArgumentParser) -> None:
    """
    This bench's own options: the MTUs and the pings per RTT measurement.
    """
    parser.add_argument("--mtu", default="1500,9000",
                        help="comma-separated MTUs (default 1500,9000)")
    parser.add_argument("--pings", type=int, default=10,
                        help="pings per RTT measurement, 0.2 s apart (default 10)")


def main() -> int:
    options = benchlib.argumentParser(__doc__, 3, "every plug and MTU",
                                      [k for k, *_ in PLUGS], "plug", addOptions).parse_args()
    benchlib.checkSystem(("iperf3", "vde_plug", "ping", "ip"))
    plugs = benchlib.selectKeys(PLUGS, options.only, "plug")
    try:
        mtus = [int(m) for m in options.mtu.split(",")]
    except ValueError:
        sys.exit(f"--mtu: not a list of numbers: {options.mtu}")
    if any(not 576 <= m <= 9000 for m in mtus):
        sys.exit("--mtu: each MTU must be within 576..9000 "
                 "(the C plug truncates frames over 9014 bytes)")

    candidates = [(f"{key}-{mtu}", f"{label} mtu {mtu}", (plug, mtu))
                  for mtu in mtus for key, label, plug in plugs]
    ratios = [(f"ours-{mtu}", f"c-{mtu}") for mtu in mtus]
    results = benchlib.runBench(Bench(options.seconds, options.pings), candidates, options)
    benchlib.printTables(
        results,
        [(key, label) for key, label, _ in candidates],
        ratios,
        [("Medians; up = guest -> host (iperf3 -c 10.0.2.2), down = host -> guest (-R); "
          "ping: avg RTT to the gateway and through the ICMP NAT;\nCPU ns/B = the plug "
          "process's CPU per byte received; the 'ours / C' rows are ratios "
          "(Mb/s: >1 is better; ms, ns/B: <1 is better)", COLUMNS, True, True),
         ("Diagnostics (medians): the plug's CPU share of one core during the TCP tests, "
          "the guest kernel's retransmissions sending, ping minimum RTT and loss",
          DIAGNOSTICS, False, True)],
        "plug")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
