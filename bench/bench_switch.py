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

Needs iperf3 (apt-get install iperf3) and the C vde2/vdeplug4 tools.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vdetwist import netns  # noqa: E402

ADDR_A = "10.79.0.1"
ADDR_B = "10.79.0.2"
PREFIX = 24
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Rate for the fixed-rate UDP test, frames per second.
FIXED_RATE = 10_000
#: UDP payload giving a 60-byte Ethernet frame (64 with the FCS).
SMALL_PAYLOAD = 18
IPERF_PORT = 5279


def which(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/usr/local/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        sys.exit(f"{name} is not installed")
    return path


def ourEnv() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [ROOT, env.get("PYTHONPATH", "")] if p)
    return env


# -- the switches under test -------------------------------------------------

def ourTwistd(dir: str) -> list[str]:
    return [sys.executable, "-m", "twisted", "vde", "--switch", dir]


def ourNetnode(dir: str) -> list[str]:
    return [sys.executable, "-m", "vdetwist.scripts.vde_plug", "null://", "switch://" + dir]


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


# -- processes ---------------------------------------------------------------

class Processes:
    """
    Children started here, stopped (TERM, then KILL) by L{stop} or
    L{stopAll}; each in its own session so that a Ctrl-C on the terminal
    reaches only this script, which then stops them in order.  Their
    stderr goes to a file (a pipe nobody reads could fill and stall them).
    """

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.PIPE)  # vde_switch quits on EOF
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        if "stderr" not in kwargs:
            kwargs["stderr"] = tempfile.TemporaryFile()
        process = subprocess.Popen(argv, start_new_session=True, **kwargs)
        process.errfile = kwargs["stderr"] if hasattr(kwargs["stderr"], "seek") else None
        self.running.append(process)
        return process

    @staticmethod
    def errors(process: subprocess.Popen) -> str:
        """
        What C{process} wrote on stderr so far.
        """
        errfile = getattr(process, "errfile", None)
        if errfile is None:
            return ""
        errfile.seek(0)
        return errfile.read().decode(errors="replace")

    def stop(self, process: subprocess.Popen, timeout: float = 5.0) -> str:
        """
        Stop C{process}; return what it wrote on stderr.
        """
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        if process in self.running:
            self.running.remove(process)
        err = self.errors(process)
        if process.errfile is not None:
            process.errfile.close()
        return err

    def stopAll(self) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)


def cpuSeconds(pid: int) -> float:
    """
    CPU time (user + system) used so far by process C{pid}: the sum of its
    threads' run time from C{/proc/PID/task/*/schedstat} (nanoseconds), or,
    where that is missing, utime + stime from C{/proc/PID/stat} (ticks).
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:  # a thread that just ended
                pass
    except FileNotFoundError:
        total = 0
    if total:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def schedStats(pid: int) -> tuple[int, int, int]:
    """
    (utime ticks, stime ticks, voluntary context switches) of process
    C{pid}: the user/system split and how often it went to sleep waiting
    for work (one wake-up per switch here, as these switches are
    single-threaded event loops).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        switches += int(line.split()[1])
        except FileNotFoundError:
            pass
    return int(fields[11]), int(fields[12]), switches


def tapRx(ns: netns.Namespace, ifname: str) -> int:
    """
    Frames written into the tap by its plug (the kernel's rx_packets).
    """
    with netns.routing(ns) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        (link,) = ipr.get_links(index)
    return link.get_attr("IFLA_STATS64")["rx_packets"]


def waitFor(condition: Callable[[], bool], timeout: float, what: str,
            alive: tuple[subprocess.Popen, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in alive:
            if process.poll() is not None:
                err = Processes.errors(process)
                raise RuntimeError(f"{process.args} exited ({process.returncode}) "
                                   f"while waiting for {what}: {err.strip()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- the bench ---------------------------------------------------------------

class Bench:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.procs = Processes()
        self.tmp = tempfile.mkdtemp(prefix="vtbench-")
        self.nsA: Optional[netns.Namespace] = None
        self.nsB: Optional[netns.Namespace] = None
        self.tapA = netns.uniqueName("vtba")
        self.tapB = netns.uniqueName("vtbb")
        self.iperfServer: Optional[subprocess.Popen] = None
        self.count = 0

    def setUp(self) -> None:
        self.nsA = netns.Namespace.create(netns.uniqueName("vtbnsA"))
        self.nsB = netns.Namespace.create(netns.uniqueName("vtbnsB"))
        for ns, tap, addr in ((self.nsA, self.tapA, ADDR_A), (self.nsB, self.tapB, ADDR_B)):
            netns.createTap(tap, ns)
            netns.addAddress(tap, f"{addr}/{PREFIX}", ns)
            netns.setUp(tap, ns)
        self.iperfServer = self.procs.start(
            self.nsB.command([which("iperf3"), "-s", "-p", str(IPERF_PORT)]),
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def tearDown(self) -> None:
        try:
            self.procs.stopAll()
        finally:
            for ns in (self.nsA, self.nsB):
                if ns is not None:
                    ns.remove()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def startSwitch(self, command: Callable[[str], list[str]]):
        self.count += 1
        dir = os.path.join(self.tmp, f"sw{self.count}")
        switch = self.procs.start(command(dir), env=ourEnv())
        waitFor(lambda: os.path.exists(os.path.join(dir, "ctl")), 15, f"{dir}/ctl", (switch,))
        plugs = []
        for ns, tap in ((self.nsA, self.tapA), (self.nsB, self.tapB)):
            plugs.append(self.procs.start(ns.command([which("vde_plug"), "tap://" + tap, dir])))
        # Both taps carry frames once their plug is in: wait until A reaches B.
        def pings() -> bool:
            return self.nsA.run(["ping", "-c1", "-W1", "-q", ADDR_B],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                                ).returncode == 0
        waitFor(pings, 15, "ping through the switch", (switch, *plugs))
        return switch, plugs

    def stopSwitch(self, switch, plugs) -> None:
        for plug in plugs:
            self.procs.stop(plug)
        self.procs.stop(switch)

    def iperf(self, extra: list[str]) -> dict:
        argv = [which("iperf3"), "-c", ADDR_B, "-p", str(IPERF_PORT), "-J",
                "-t", str(self.seconds), *extra]
        for attempt in range(3):
            result = self.nsA.run(argv, capture_output=True, timeout=self.seconds + 20)
            try:
                data = json.loads(result.stdout)
            except json.JSONDecodeError:
                data = {"error": result.stdout.decode(errors="replace")[-300:]}
            if "error" not in data:
                return data
            time.sleep(0.5)  # "the server is busy" after a previous test: retry
        raise RuntimeError(f"iperf3 failed: {data['error']}")

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
        data = self.iperf(extra)
        after = sample()
        swCpu, plugCpu, rx, utime, stime, wakeups = (a - b for a, b in zip(after, before))
        frames = max(rx, 1)
        return {
            "data": data,
            "frames": rx,
            "switch_us": swCpu * 1e6 / frames,
            "user_us": swCpu * 1e6 / frames * utime / max(utime + stime, 1),
            "plugs_us": plugCpu * 1e6 / frames,
            "wakeups": wakeups / frames,
        }

    def runOne(self, command) -> dict[str, float]:
        switch, plugs = self.startSwitch(command)
        try:
            out: dict[str, float] = {}
            flood = self.measure(switch, plugs, ["-u", "-l", str(SMALL_PAYLOAD), "-b", "0"])
            # The receiver's figures (the server's, reported back to the client).
            received = flood["data"]["end"]["sum_received"]
            out["udp_kfps"] = (received["packets"] - received["lost_packets"]) / received["seconds"] / 1e3
            sent = flood["data"]["end"]["sum_sent"]
            out["udp_sent_kfps"] = sent["packets"] / sent["seconds"] / 1e3
            out["cpu_flood"] = flood["switch_us"]
            out["user_flood"] = flood["user_us"]
            out["plugs_flood"] = flood["plugs_us"]
            out["wake_flood"] = flood["wakeups"]
            fixed = self.measure(switch, plugs, ["-u", "-l", str(SMALL_PAYLOAD), "-b",
                                                 str(FIXED_RATE * SMALL_PAYLOAD * 8)])
            out["cpu_10k"] = fixed["switch_us"]
            out["user_10k"] = fixed["user_us"]
            out["wake_10k"] = fixed["wakeups"]
            out["fixed_kfps"] = fixed["frames"] / self.seconds / 1e3
            tcp = self.measure(switch, plugs, [])
            out["tcp_mbps"] = tcp["data"]["end"]["sum_received"]["bits_per_second"] / 1e6
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
COLUMNS = [
    ("tcp_mbps", "TCP Mb/s", "{:.0f}"),
    ("udp_kfps", "UDP64 rx kf/s", "{:.1f}"),
    ("udp_sent_kfps", "(sent kf/s)", "{:.1f}"),
    ("cpu_flood", "µs/f flood", "{:.2f}"),
    ("cpu_10k", "µs/f @10k", "{:.2f}"),
    ("cpu_tcp", "µs/f TCP", "{:.2f}"),
]
#: Why: the user-mode part of the switch's CPU per frame (the kernel part
#: is the socket work every switch does), its wake-ups per frame (how well
#: it batches), and the two C tap plugs' CPU per frame (same program for
#: every switch).
DIAGNOSTICS = [
    ("user_flood", "user µs/f flood", "{:.2f}"),
    ("user_10k", "@10k", "{:.2f}"),
    ("user_tcp", "TCP", "{:.2f}"),
    ("wake_flood", "wakeups/f flood", "{:.3f}"),
    ("wake_10k", "@10k", "{:.3f}"),
    ("wake_tcp", "TCP", "{:.3f}"),
    ("plugs_flood", "plugs µs/f flood", "{:.2f}"),
    ("plugs_tcp", "TCP", "{:.2f}"),
]


def printTable(results: dict[str, list[dict[str, float]]], switches) -> None:
    columns = COLUMNS + DIAGNOSTICS
    medians: dict[str, dict[str, float]] = {}
    for key, *_ in switches:
        runs = results.get(key) or []
        if runs:
            medians[key] = {c: statistics.median(r[c] for r in runs) for c, _, _ in columns}
    labels = {key: label for key, label, _, _ in switches}
    ratios = [(key, other) for key, _, _, other in switches
              if other and key in medians and other in medians]
    width = max([len(label) for label in labels.values()]
                + [len(f"{labels[k]} / {labels[o]}") for k, o in ratios]) + 1

    def table(title: str, cols, withRuns: bool, withRatios: bool) -> None:
        header = "switch".ljust(width) + (" runs" if withRuns else "") + "".join(
            " " + h.rjust(7) for _, h, _ in cols)
        print(title)
        print(header)
        print("-" * len(header))
        for key, label, _, _ in switches:
            if key in medians:
                print(label.ljust(width) + (f"{len(results[key]):5d}" if withRuns else "")
                      + "".join(" " + fmt.format(medians[key][c]).rjust(max(len(h), 7))
                                for c, h, fmt in cols))
        for key, other in ratios if withRatios else ():
            cells = []
            for c, h, _ in cols:
                base = medians[other][c]
                cells.append(" " + (f"{medians[key][c] / base:.2f}x" if base else "-")
                             .rjust(max(len(h), 7)))
            print(f"{labels[key]} / {labels[other]}".ljust(width)
                  + ("     " if withRuns else "") + "".join(cells))
        print()

    print()
    table("Medians; µs/f = CPU µs of the switch process per frame it delivered; "
          "the 'ours / C' rows are ratios\n(throughput: >1 is better; µs/f: <1 is better)",
          COLUMNS, True, True)
    table("Diagnostics (medians): the switch's user-mode µs/f, its wake-ups per frame, "
          "the two C tap plugs' µs/f", DIAGNOSTICS, False, False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="length of each iperf3 test (default 3)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds over all switches (default 3)")
    parser.add_argument("--only", default="",
                        help="comma-separated switch keys: "
                        + ", ".join(k for k, *_ in SWITCHES))
    parser.add_argument("--verbose", "-v", action="store_true", help="print every run")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and taps)")
    for tool in ("iperf3", "vde_switch", "vde_plug", "ping"):
        which(tool)
    switches = SWITCHES
    if options.only:
        wanted = options.only.split(",")
        switches = [s for s in SWITCHES if s[0] in wanted]
        if not switches:
            sys.exit(f"--only: none of {wanted} is a switch key")

    # SIGTERM and SIGHUP clean up like Ctrl-C does.
    mainPid = os.getpid()

    def interrupted(signum, frame):
        if os.getpid() != mainPid:  # a child forked by pyroute2
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # even when started with SIGINT ignored

    results: dict[str, list[dict[str, float]]] = {}
    bench = Bench(options.seconds)
    started = time.monotonic()
    rounds = 0
    try:
        bench.setUp()
        for round in range(options.repeat):
            # Rotate the order each round, so that no switch always goes first.
            order = switches[round % len(switches):] + switches[:round % len(switches)]
            for key, label, command, _ in order:
                try:
                    out = bench.runOne(command)
                except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
                    print(f"round {round + 1} {label}: FAILED: {e}", file=sys.stderr)
                    continue
                results.setdefault(key, []).append(out)
                if options.verbose:
                    print(f"round {round + 1} {label:18s} " + " ".join(
                        f"{c}={v:.3g}" for c, v in out.items()), flush=True)
                else:
                    print(".", end="", flush=True)
            rounds += 1
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
    finally:
        bench.tearDown()
    print(f"\n{rounds} of {options.repeat} rounds, {options.seconds:g} s per test, "
          f"{time.monotonic() - started:.0f} s in all")
    printTable(results, switches)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
