#!/usr/bin/env python3
"""
slirp:// throughput, latency and connection rate: vdetwist's pure-Python
engine against the C vde_plug's (libslirp through libvdeplug_slirp) at MTU
1500 and 9000, and against slirp4netns and pasta at MTU 65520, in the same
run, interleaved.

    [ns G "guest": tap 10.0.2.15/24, mtu M]
        <-> vde_plug tap://T slirp:///mtu=M/mru=M (in H) <->
    [ns H "host": 127.0.0.1, iperf3 -s, connrate.py serve]

The plug process runs in the host namespace H, whose loopback plays the
host's: the gateway 10.0.2.2 reaches H's 127.0.0.1, where an iperf3 server
and a connection-rate server (connrate.py) listen.  The tap is made in H,
opened there by the plug, then moved into the guest namespace G and
configured statically (10.0.2.15/24, default route via 10.0.2.2, MTU M).
H also has 10.98.0.1 on its loopback and allows ICMP datagram sockets
(net.ipv4.ping_group_range), so that the guest's pings to 10.98.0.1 go
through the engine's ICMP NAT to H's kernel.  For pasta, H has 10.0.2.2
on its loopback too (pasta forwards pings to the gateway to the host,
where the others answer them themselves) and a veth with a default route
(pasta takes the host's interface from it; nothing is sent there).  The plug and its tap are made
afresh for every run.  Both engines size their TCP MSS from min(mtu, mru) -
40, so jumbo frames need both options (mtu=9000 alone still gives
1460-byte segments).

The engines:

    ours         python3 -m vdetwist.scripts.vde_plug tap://T slirp:///mtu=M/mru=M
                 (the tap offloads: 64 KiB super-frames and partial checksums
                 cross to the engine and back in one piece)
    oursoff      the same with tap://T/offload=off (one MTU frame per read and
                 write, every checksum computed: the engine before offloads)
    C            /usr/bin/vde_plug tap://T slirp:///mtu=M/mru=M   (vdeplug4's tap + libvdeplug_slirp)
    slirp4netns  slirp4netns --configure --mtu=65520 --netns-type=path /run/netns/G T
                 (libslirp; rootless podman's configuration, but with the host
                 loopback allowed: the servers are on it)
    pasta        pasta --config-net -a 10.0.2.15 -n 24 -g 10.0.2.2 -m 65520 -I T --netns G
                 (passt's namespace mode, no port forwarding, as root: as
                 nobody it cannot enter G; the gateway is mapped to the
                 host's loopback)

slirp4netns and pasta run in H too and make their tap in G themselves (with
its address: slirp4netns gives the guest 10.0.2.100).  Per engine, MTU and
round:

  * TCP up: iperf3 -c 10.0.2.2 from G (guest -> host), Mbit/s received;
  * TCP down: the same with -R (host -> guest);
  * TCP connections per second from G to 10.0.2.2 (H's loopback), one at a
    time (connrate.py), and the engine's CPU per connection;
  * ping RTT to 10.0.2.2 (answered by the engine itself, except pasta, which
    forwards it to the host's kernel) and through to 10.98.0.1 (the host's
    kernel answers): ping -c N -i 0.2, avg in ms;
  * CPU of the engine's process (all its threads: libslirp runs in a thread
    of its own) per GB moved (= ns per byte), and as a share of one core.

Run from the project root, as root (namespaces, taps):

    python3 bench/bench_slirp.py [--seconds 3] [--repeat 3] [--mtu 1500,9000] [--only ours,c,slirp4netns,pasta] [--baseline CHECKOUT] [-v]

Needs iperf3 (apt-get install iperf3), ping (iputils-ping), the C vde_plug
with its tap and slirp plugins (apt-get install vdeplug libvdeplug-slirp),
slirp4netns and passt (apt-get install slirp4netns passt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import benchlib
from benchlib import Processes, cpuSeconds, waitFor, which
from vdetwist.testing import netns

GUEST = "10.0.2.15"
GATEWAY = "10.0.2.2"
PREFIX = 24
#: An address of the host namespace's own (on its loopback) for pings
#: through the engine's ICMP NAT.
THROUGH = "10.98.0.1"
#: The host namespace's "uplink" (a veth, both ends in the host
#: namespace: the kernel may have no dummy interfaces), its address and
#: default route.
UPLINK = "vtslup"
UPLINK_ADDRESS = "10.97.0.1/24"
UPLINK_GATEWAY = "10.97.0.254"
IPERF_PORT = 5281
CONNRATE_PORT = 5282
CONNRATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "connrate.py")
#: slirp4netns's and pasta's MTU: rootless podman's (pasta's default).
WIDE_MTU = 65520

#: An engine's command: (the guest namespace, the tap's name, the MTU) -> argv.
Command = Callable[[netns.Namespace, str, int], list[str]]


def tapPlug(plug: Callable[[], list[str]], tapOptions: str = "") -> Command:
    """
    The command of a vde_plug (C{plug()}) joining the tap (with
    C{tapOptions}) to slirp://.
    """
    return lambda guest, tap, mtu: [*plug(), f"tap://{tap}{tapOptions}",
                                    f"slirp:///mtu={mtu}/mru={mtu}"]


def slirp4netns(guest: netns.Namespace, tap: str, mtu: int) -> list[str]:
    return [which("slirp4netns"), "--configure", f"--mtu={mtu}", "--netns-type=path",
            os.path.join(netns.NETNS_DIR, guest.name), tap]


def pasta(guest: netns.Namespace, tap: str, mtu: int) -> list[str]:
    return [which("pasta"), "--foreground", "--quiet", "--runas", "0", "--ipv4-only", "--config-net",
            "-a", GUEST, "-n", str(PREFIX), "-g", GATEWAY, "-m", str(mtu), "-I", tap,
            "-t", "none", "-u", "none", "-T", "none", "-U", "none",
            "--netns", os.path.join(netns.NETNS_DIR, guest.name)]


@dataclass(frozen=True)
class Engine:
    """
    A slirp: C{command} runs in the host namespace; C{ownsTap} if it makes
    and configures its tap in the guest itself (otherwise it opens the tap
    made for it); C{mtu} is fixed for it, or C{None} for every C{--mtu}.
    """
    key: str
    label: str
    command: Command
    ownsTap: bool = False
    mtu: Optional[int] = None


ENGINES = [
    Engine("ours", "ours", tapPlug(benchlib.ourPlug)),
    Engine("oursoff", "ours offload=off", tapPlug(benchlib.ourPlug, "/offload=off")),
    Engine("c", "C", tapPlug(benchlib.cPlug)),
    Engine("slirp4netns", "slirp4netns", slirp4netns, True, WIDE_MTU),
    Engine("pasta", "pasta", pasta, True, WIDE_MTU),
]


#: The baseline's key of each of ours (C{--baseline}).
BASELINE = {"ours": "base", "oursoff": "baseoff"}


def baselineEngines(checkout: str, selected: set[str]) -> list[Engine]:
    """
    Ours and ours offload=off (those of them in C{selected}) run from the
    vdetwist of C{checkout} instead of this one's.
    """
    def plug() -> list[str]:
        # -P: not the working directory (this checkout, perhaps) first on sys.path
        return ["/usr/bin/env", f"PYTHONPATH={checkout}", sys.executable, "-P", "-m",
                "vdetwist.scripts.vde_plug"]

    return [Engine(BASELINE[e.key], f"baseline {e.label[len('ours '):]}".strip(),
                   tapPlug(plug, "/offload=off" if e.key == "oursoff" else ""))
            for e in ENGINES if e.key in BASELINE and e.key in selected]


class Run:
    """
    The engine process of one run and its tap.
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
        for address in (THROUGH, GATEWAY):
            netns.addAddress("lo", f"{address}/32", self.host)
        # pasta wants an interface with a default route to take as the
        # host's; the others do not use it (nothing goes beyond H).
        netns.createVeth(UPLINK, UPLINK + "p", self.host)
        netns.addAddress(UPLINK, UPLINK_ADDRESS, self.host)
        for ifname in (UPLINK, UPLINK + "p"):
            netns.setUp(ifname, self.host)
        with netns.routing(self.host) as ipr:
            ipr.route("add", dst="0.0.0.0/0", gateway=UPLINK_GATEWAY)
        with netns.entered(self.host):  # per namespace: ICMP datagram sockets for all
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
                f.write("0 2147483647")
        self.procs.start(self.host.command([sys.executable, CONNRATE, "serve",
                                            str(CONNRATE_PORT)]), stdin=subprocess.DEVNULL)

    def tearDown(self) -> None:
        self.hosts.tearDown()

    def start(self, engine: Engine, mtu: int) -> Run:
        """
        Start C{engine} in the host namespace on a tap of the guest: for a
        vde_plug, make the tap in the host, run the plug on it there, move
        the tap to the guest and configure it; wait until the guest pings
        the gateway.
        """
        run = Run(netns.uniqueName("vtslt"))
        try:
            if not engine.ownsTap:
                netns.createTap(run.tap, self.host)
                run.where = self.host
                netns.setUp(run.tap, self.host)
            run.plug = self.procs.start(
                self.host.command(engine.command(self.guest, run.tap, mtu)),
                env=benchlib.ourEnv(), stdin=subprocess.DEVNULL)
            if engine.ownsTap:
                run.where = self.guest
            else:
                waitFor(lambda: netns.linkInfo(run.tap, self.host)["flags"]
                        & benchlib.IFF_LOWER_UP, 15, f"{engine.label} to open {run.tap}",
                        (run.plug,))
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

    def connections(self, run: Run) -> tuple[float, float]:
        """
        TCP connections per second from the guest to the host's loopback,
        one at a time, and the engine's CPU µs per connection.
        """
        cpu = cpuSeconds(run.plug.pid)
        result = self.guest.run([sys.executable, CONNRATE, "connect", GATEWAY,
                                 str(CONNRATE_PORT), str(self.seconds)],
                                capture_output=True, text=True, timeout=self.seconds + 20)
        cpu = cpuSeconds(run.plug.pid) - cpu
        try:
            data = json.loads(result.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"connrate.py: {result.stderr.strip()[-300:]}")
        if data["error"]:
            raise RuntimeError(f"connection {data['connections'] + 1} failed: "
                               f"{data['error']}")
        return (data["connections"] / data["seconds"],
                cpu * 1e6 / max(data["connections"], 1))

    def runOne(self, arg: tuple[Engine, int]) -> dict[str, float]:
        engine, mtu = arg
        run = self.start(engine, mtu)
        try:
            out: dict[str, float] = {}
            for direction, extra in (("up", []), ("down", ["-R"])):
                (out[f"tcp_{direction}"], out[f"ns_{direction}"], out[f"cpu_{direction}"],
                 out[f"retr_{direction}"]) = self.tcp(run, extra)
            out["conn_rate"], out["conn_us"] = self.connections(run)
            for key, address in (("gw", GATEWAY), ("through", THROUGH)):
                rtt = benchlib.pingRtt(self.guest, address, self.pings)
                out[f"ping_{key}"] = rtt["avg"]
                out[f"ping_{key}_median"] = rtt["median"]
                out[f"ping_{key}_loss"] = rtt["loss"]
            if run.plug.poll() is not None:
                raise RuntimeError(f"the plug {run.plug.args} died during the test")
            return out
        finally:
            self.stop(run)


COLUMNS = [
    ("tcp_up", "TCP up Mb/s", "{:.0f}"),
    ("tcp_down", "TCP down Mb/s", "{:.0f}"),
    ("conn_rate", "conn/s", "{:.0f}"),
    ("ping_gw", "ping gw ms", "{:.3f}"),
    ("ping_through", "ping thru ms", "{:.3f}"),
    ("ns_up", "CPU s/GB up", "{:.1f}"),
    ("ns_down", "CPU s/GB down", "{:.1f}"),
    ("conn_us", "CPU µs/conn", "{:.0f}"),
]
DIAGNOSTICS = [
    ("cpu_up", "plug CPU% up", "{:.0f}"),
    ("cpu_down", "CPU% down", "{:.0f}"),
    ("retr_up", "guest retransmits", "{:.0f}"),
    ("ping_gw_median", "ping gw med ms", "{:.3f}"),
    ("ping_through_median", "ping thru med ms", "{:.3f}"),
    ("ping_gw_loss", "gw loss %", "{:.0f}"),
    ("ping_through_loss", "thru loss %", "{:.0f}"),
]


def addOptions(parser: argparse.ArgumentParser) -> None:
    """
    This bench's own options: the MTUs and the pings per RTT measurement.
    """
    parser.add_argument("--mtu", default="1500,9000",
                        help="comma-separated MTUs of ours and C (default 1500,9000; "
                        f"slirp4netns and pasta: {WIDE_MTU})")
    parser.add_argument("--baseline", metavar="CHECKOUT", default="",
                        help="also run the vdetwist of another checkout (a git worktree of "
                        "main, say) as ours and ours offload=off do, as 'base' and 'baseoff', "
                        "and print ours / base ratios")
    parser.add_argument("--pings", type=int, default=10,
                        help="pings per RTT measurement, 0.2 s apart (default 10)")


def main() -> int:
    options = benchlib.argumentParser(__doc__, 3, "every engine and MTU",
                                      [e.key for e in ENGINES], "engine",
                                      addOptions).parse_args()
    engines = [e for _, e in benchlib.selectKeys([(e.key, e) for e in ENGINES],
                                                 options.only, "engine")]
    if options.baseline:
        checkout = os.path.abspath(options.baseline)
        if not os.path.isfile(os.path.join(checkout, "vdetwist", "__init__.py")):
            sys.exit(f"--baseline: {checkout} is not a vdetwist checkout (no vdetwist/__init__.py)")
        engines += baselineEngines(checkout, {e.key for e in engines})
    benchlib.checkSystem(["iperf3", "ping", "ip"] + [
        tool for tool, key in (("vde_plug", "c"), ("slirp4netns", "slirp4netns"),
                               ("pasta", "pasta")) if key in {e.key for e in engines}])
    try:
        mtus = [int(m) for m in options.mtu.split(",")]
    except ValueError:
        sys.exit(f"--mtu: not a list of numbers: {options.mtu}")
    if any(not 576 <= m <= 9000 for m in mtus):
        sys.exit("--mtu: each MTU must be within 576..9000 "
                 "(the C plug truncates frames over 9014 bytes)")

    runs = sorted(((e, mtu) for e in engines for mtu in ([e.mtu] if e.mtu else mtus)),
                  key=lambda run: run[1])  # stable: by MTU, then in ENGINES' order
    candidates = [(f"{e.key}-{mtu}", f"{e.label} mtu {mtu}", (e, mtu)) for e, mtu in runs]
    keys = {key for key, _, _ in candidates}
    ratios = [(f"{ours}-{mtu}", f"{other}-{otherMtu}") for mtu in mtus
              for ours in ("ours", "oursoff")
              for other, otherMtu in ((BASELINE[ours], mtu), ("oursoff", mtu), ("c", mtu),
                                      ("slirp4netns", WIDE_MTU), ("pasta", WIDE_MTU))
              if other != ours and {f"{ours}-{mtu}", f"{other}-{otherMtu}"} <= keys]
    results = benchlib.runBench(Bench(options.seconds, options.pings), candidates, options)
    benchlib.printTables(
        results,
        [(key, label) for key, label, _ in candidates],
        ratios,
        [("Medians; up = guest -> host (iperf3 -c 10.0.2.2), down = host -> guest (-R); "
          "conn/s: TCP connections per second to the host's loopback, one at a time;\n"
          "ping: avg RTT to the gateway and through the ICMP NAT; CPU = the engine "
          "process's, per GB received and per connection;\nthe 'x / y' rows are ratios "
          "(Mb/s, conn/s: >1 is better; ms, s/GB, µs: <1 is better)", COLUMNS, True, True),
         ("Diagnostics (medians): the engine's CPU share of one core during the TCP tests, "
          "the guest kernel's retransmissions sending, ping median RTT and loss",
          DIAGNOSTICS, False, True)],
        "engine")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
