"""
What the namespace benchmarks (bench_switch.py, bench_vxvde.py,
bench_slirp.py) share: their command line (L{argumentParser},
L{checkSystem}, L{selectKeys}), starting and stopping their processes, CPU
accounting from /proc, tap counters, two host namespaces with an iperf3
server and client, the interleaved rounds (L{runBench}), and the tables of
medians and ratios ours/C (with the iperf3 columns switch and vxvde share).

Import it from a script in this directory (C{import benchlib}): it puts the
project root on C{sys.path}, so that C{vdetwist} is importable too.
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
from typing import Any, Callable, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from vdetwist.testing import netns  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Rate for the fixed-rate UDP test, frames per second.
FIXED_RATE = 10_000
#: UDP payload giving a 60-byte Ethernet frame (64 with the FCS).
SMALL_PAYLOAD = 18
#: iperf3 arguments: the 64-byte UDP flood, the same at FIXED_RATE, TCP.
FLOOD = ["-u", "-l", str(SMALL_PAYLOAD), "-b", "0"]
FIXED = ["-u", "-l", str(SMALL_PAYLOAD), "-b", str(FIXED_RATE * SMALL_PAYLOAD * 8)]
TCP: list[str] = []
#: IFF_LOWER_UP: a tap has carrier once somebody holds it open.
IFF_LOWER_UP = 0x10000


def which(name: str) -> str:
    """
    The installed program C{name} (the system's, never a pyenv shim or a
    vdetwist script of the same name); exits when it is missing.
    """
    path = shutil.which(name, path="/usr/bin:/usr/local/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        sys.exit(f"{name} is not installed")
    return path


def ourEnv() -> dict[str, str]:
    """
    An environment in which this checkout's vdetwist is importable.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [ROOT, env.get("PYTHONPATH", "")] if p)
    return env


def ourPlug() -> list[str]:
    """
    The argv prefix of this checkout's vde_plug.
    """
    return [sys.executable, "-m", "vdetwist.scripts.vde_plug"]


def cPlug() -> list[str]:
    """
    The argv prefix of the C vde_plug.
    """
    return [which("vde_plug")]


# -- the command line --------------------------------------------------------

def argumentParser(doc: str, repeat: int, repeatHelp: str, keys: Sequence[str], kind: str,
                   addOptions: Callable[[argparse.ArgumentParser], None] = lambda parser: None,
                   ) -> argparse.ArgumentParser:
    """
    The options every bench takes: C{--seconds} (3 by default), C{--repeat}
    (C{repeat} by default; C{repeatHelp} says rounds over what),
    C{--only} (a comma-separated list of C{keys}, C{kind} naming what
    they are) and C{--verbose}.  C{addOptions} adds a bench's own options
    between C{--repeat} and C{--only}.  The description is the first
    paragraph of C{doc}.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="length of each iperf3 test (default 3)")
    parser.add_argument("--repeat", type=int, default=repeat,
                        help=f"rounds over {repeatHelp} (default {repeat})")
    addOptions(parser)
    parser.add_argument("--only", default="",
                        help=f"comma-separated {kind} keys: " + ", ".join(keys))
    parser.add_argument("--verbose", "-v", action="store_true", help="print every run")
    return parser


def checkSystem(tools: Sequence[str]) -> None:
    """
    Exit unless this runs as root (network namespaces and taps) and every
    program of C{tools} is installed.
    """
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and taps)")
    for tool in tools:
        which(tool)


def selectKeys(candidates: Sequence[tuple], only: str, kind: str) -> list[tuple]:
    """
    The C{candidates} (tuples, key first) whose key is in the
    comma-separated C{only}, or all of them when it is empty; exits when
    C{only} names none of them (C{kind} says what the keys are).
    """
    if not only:
        return list(candidates)
    wanted = only.split(",")
    chosen = [c for c in candidates if c[0] in wanted]
    if not chosen:
        sys.exit(f"--only {only}: names no {kind}; the {kind} keys are "
                 + ", ".join(c[0] for c in candidates))
    return chosen


# -- processes ---------------------------------------------------------------

class Processes:
    """
    Children started here, stopped (TERM, then KILL) by L{stop} or
    L{stopAll}, with whatever they started; each in a process group of its
    own (not a session: dpipe makes itself a group leader, which a session
    leader cannot) so that a Ctrl-C on the terminal reaches only the bench
    script, which then stops them in order.  Their stderr goes to a file
    (a pipe nobody reads could fill and stall them).
    """

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.PIPE)  # vde_switch quits on EOF
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        if "stderr" not in kwargs:
            kwargs["stderr"] = tempfile.TemporaryFile()
        process = subprocess.Popen(argv, process_group=0, **kwargs)
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

    @staticmethod
    def signalGroup(process: subprocess.Popen, signum: int) -> None:
        """
        Send C{signum} to the process group C{process} leads (see
        L{start}), which holds whatever it started too.
        """
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, process: subprocess.Popen, timeout: float = 5.0) -> str:
        """
        Stop C{process}; return what it wrote on stderr.
        """
        self.signalGroup(process, signal.SIGTERM)
        try:
            process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signalGroup(process, signal.SIGKILL)
            process.communicate()
        # What it started (dpipe's commands) and left behind.
        self.signalGroup(process, signal.SIGKILL)
        if process in self.running:
            self.running.remove(process)
        err = self.errors(process)
        if process.errfile is not None:
            process.errfile.close()
        return err

    def stopAll(self) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)


def waitFor(condition: Callable[[], bool], timeout: float, what: str,
            alive: Sequence[subprocess.Popen] = ()) -> None:
    """
    Poll C{condition} every 50 ms; fail when it is still false after
    C{timeout} seconds or as soon as one of the C{alive} processes exits.
    """
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


def cleanUpOnSignals() -> None:
    """
    Make SIGTERM, SIGHUP and SIGINT raise L{KeyboardInterrupt} in this
    process (even when started with SIGINT ignored), so that the bench's
    C{finally} clauses stop what it started and remove its namespaces.
    """
    mainPid = os.getpid()

    def interrupted(signum, frame):
        if os.getpid() != mainPid:  # a child forked by pyroute2
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, interrupted)


# -- accounting --------------------------------------------------------------

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


def processTree(pid: int) -> list[int]:
    """
    C{pid} and its descendants now (from C{/proc/PID/task/*/children}):
    what to account for a command that runs others, such as C{dpipe}.
    """
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
            except FileNotFoundError:
                pass
    return pids


def schedStats(pid: int) -> tuple[int, int, int]:
    """
    (utime ticks, stime ticks, voluntary context switches) of process
    C{pid}: the user/system split and how often it went to sleep waiting
    for work (one wake-up per switch for a single-threaded event loop).
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


def userShare(utime: int, stime: int) -> float:
    """
    The user-mode fraction of CPU time from tick counts (rough: 10 ms ticks).
    """
    return utime / max(utime + stime, 1)


def linkStats(ns: netns.NamespaceLike, ifname: str) -> dict[str, int]:
    """
    The kernel's counters of C{ifname} (C{IFLA_STATS64}).  For a tap,
    C{rx_packets} counts the frames its plug wrote into it and
    C{tx_packets} those the plug read from it (C{tx_dropped}: frames the
    kernel dropped because the plug read too slowly).
    """
    with netns.routing(ns) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        (link,) = ipr.get_links(index)
    return dict(link.get_attr("IFLA_STATS64"))


def tapRx(ns: netns.NamespaceLike, ifname: str) -> int:
    """
    Frames written into the tap by its plug (the kernel's rx_packets).
    """
    return linkStats(ns, ifname)["rx_packets"]


# -- two hosts and iperf3 ----------------------------------------------------

def udpReceivedKfps(data: dict) -> float:
    """
    Thousands of datagrams per second the iperf3 server received (reported
    back to the client in its JSON).
    """
    received = data["end"]["sum_received"]
    return (received["packets"] - received["lost_packets"]) / received["seconds"] / 1e3


def udpSentKfps(data: dict) -> float:
    """
    Thousands of datagrams per second the iperf3 client managed to send.
    """
    sent = data["end"]["sum_sent"]
    return sent["packets"] / sent["seconds"] / 1e3


def tcpMbps(data: dict) -> float:
    """
    Mbit/s the iperf3 receiver got.
    """
    return data["end"]["sum_received"]["bits_per_second"] / 1e6


def pingRtt(ns: netns.NamespaceLike, address: str, count: int = 10,
            interval: float = 0.2) -> dict[str, float]:
    """
    Ping C{address} from C{ns} C{count} times, C{interval} seconds apart
    (iputils ping); the round-trip times in ms (C{min}, C{avg}, C{median},
    C{max}, C{mdev}) and the C{loss} in percent.  L{RuntimeError} if no
    reply came.
    """
    argv = [which("ping"), "-n", "-c", str(count), "-i", str(interval), "-W", "1", address]
    result = netns.run(ns, argv, capture_output=True, text=True,
                       timeout=count * interval + 10)
    loss = summary = None
    times = []
    for line in result.stdout.splitlines():
        if " time=" in line:  # "64 bytes from A: icmp_seq=1 ttl=64 time=0.123 ms"
            times.append(float(line.rsplit("time=", 1)[1].split()[0]))
        elif "packet loss" in line:
            loss = float(line.split("%")[0].rsplit(None, 1)[-1])
        elif "min/avg/max" in line:
            summary = line.split("=")[1].split()[0].split("/")
    if summary is None or loss is None or not times:
        raise RuntimeError(f"ping {address}: no reply ({result.stdout.strip()[-200:]}"
                           f"{result.stderr.strip()[-200:]})")
    low, avg, high, mdev = map(float, summary)
    return {"min": low, "avg": avg, "median": statistics.median(times), "max": high,
            "mdev": mdev, "loss": loss}


class Hosts:
    """
    Two network namespaces, A (iperf3 client, C{addresses[0]}) and B (an
    iperf3 server, C{addresses[1]}); their interfaces are the caller's
    business (L{configure} gives one its address).  L{remove} deletes both
    namespaces (and the third, if any) and whatever is left in them.
    """

    def __init__(self, procs: Processes, addresses: tuple[str, str], port: int,
                 prefix: int = 24, names: str = "vtbns") -> None:
        self.procs = procs
        self.addresses = addresses
        self.prefix = prefix
        self.port = port
        self.names = names
        self.nsA: Optional[netns.Namespace] = None
        self.nsB: Optional[netns.Namespace] = None
        #: A third namespace (a cable's, a bridge's), if L{third} made one.
        self.nsX: Optional[netns.Namespace] = None
        self.server: Optional[subprocess.Popen] = None

    @property
    def namespaces(self) -> tuple[netns.Namespace, netns.Namespace]:
        return self.nsA, self.nsB

    def create(self) -> None:
        self.nsA = netns.Namespace.create(netns.uniqueName(self.names + "A"))
        self.nsB = netns.Namespace.create(netns.uniqueName(self.names + "B"))
        self.server = self.procs.start(
            self.nsB.command([which("iperf3"), "-s", "-p", str(self.port)]),
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def third(self, suffix: str = "X") -> netns.Namespace:
        """
        The third namespace, made on first use; removed with A and B.
        """
        if self.nsX is None:
            self.nsX = netns.Namespace.create(netns.uniqueName(self.names + suffix))
        return self.nsX

    def remove(self) -> None:
        if self.server is not None and self.server in self.procs.running:
            self.procs.stop(self.server)
        for ns in (self.nsA, self.nsB, self.nsX):
            if ns is not None:
                ns.remove()

    def tearDown(self) -> None:
        """
        Stop every process of the run, then remove the namespaces.
        """
        try:
            self.procs.stopAll()
        finally:
            self.remove()

    def configure(self, side: int, ifname: str) -> None:
        """
        Give C{ifname}, in host C{side} (0: A, 1: B), its address and bring
        it up.
        """
        ns = self.namespaces[side]
        netns.addAddress(ifname, f"{self.addresses[side]}/{self.prefix}", ns)
        netns.setUp(ifname, ns)

    def pings(self) -> bool:
        """
        Whether A reaches B (one ping, one second).
        """
        return self.nsA.run(["ping", "-c1", "-W1", "-q", self.addresses[1]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                            ).returncode == 0

    def iperf(self, seconds: float, extra: list[str]) -> dict:
        """
        Run the iperf3 client in A for C{seconds} with C{extra}; its JSON.
        """
        argv = [which("iperf3"), "-c", self.addresses[1], "-p", str(self.port), "-J",
                "-t", str(seconds), *extra]
        for attempt in range(3):
            result = self.nsA.run(argv, capture_output=True, timeout=seconds + 20)
            try:
                data = json.loads(result.stdout)
            except json.JSONDecodeError:
                data = {"error": result.stdout.decode(errors="replace")[-300:]}
            if "error" not in data:
                return data
            time.sleep(0.5)  # "the server is busy" after a previous test: retry
        raise RuntimeError(f"iperf3 failed: {data['error']}")


# -- rounds and tables -------------------------------------------------------

def runRounds(candidates: Sequence[tuple[str, str, Any]], runOne: Callable[[Any], dict[str, float]],
              repeat: int, seconds: float, verbose: bool,
              setUp: Callable[[], None], tearDown: Callable[[], None]) -> dict[str, list[dict[str, float]]]:
    """
    C{setUp}, then C{repeat} rounds of C{runOne(arg)} for every C{(key,
    label, arg)} of C{candidates}, the order rotated each round so that no
    candidate always goes first; then C{tearDown}, whatever happens (a
    Ctrl-C ends the rounds early).  A run that fails is reported and left
    out.  Prints a dot per run (every run's figures with C{verbose}) and a
    summary line.

    @return: every candidate's runs, by key.
    """
    results: dict[str, list[dict[str, float]]] = {}
    started = time.monotonic()
    rounds = 0
    try:
        setUp()
        for round in range(repeat):
            shift = round % len(candidates)
            order = list(candidates[shift:]) + list(candidates[:shift])
            for key, label, arg in order:
                try:
                    out = runOne(arg)
                except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as e:
                    print(f"round {round + 1} {label}: FAILED: {e}", file=sys.stderr)
                    continue
                results.setdefault(key, []).append(out)
                if verbose:
                    print(f"round {round + 1} {label:18s} " + " ".join(
                        f"{c}={v:.3g}" for c, v in out.items()), flush=True)
                else:
                    print(".", end="", flush=True)
            rounds += 1
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
    finally:
        tearDown()
    print(f"\n{rounds} of {repeat} rounds, {seconds:g} s per test, "
          f"{time.monotonic() - started:.0f} s in all")
    return results


def runBench(bench: Any, candidates: Sequence[tuple[str, str, Any]],
             options: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """
    L{runRounds} of C{bench} (its C{runOne}, C{setUp} and C{tearDown})
    over C{candidates} as the options C{--repeat}, C{--seconds} and
    C{--verbose} say, SIGTERM and SIGHUP cleaning up like Ctrl-C does.
    """
    cleanUpOnSignals()
    return runRounds(candidates, bench.runOne, options.repeat, options.seconds,
                     options.verbose, bench.setUp, bench.tearDown)


#: A column: (key in a run's results, header, format).
Column = tuple[str, str, str]

#: The iperf3 benches' (switch, vxvde) throughput: TCP, 64-byte UDP frames.
IPERF_THROUGHPUT_COLUMNS: list[Column] = [
    ("tcp_mbps", "TCP Mb/s", "{:.0f}"),
    ("udp_kfps", "UDP64 rx kf/s", "{:.1f}"),
    ("udp_sent_kfps", "(sent kf/s)", "{:.1f}"),
]
#: The CPU µs per frame of what is under test, in those three tests.
IPERF_CPU_COLUMNS: list[Column] = [
    ("cpu_flood", "µs/f flood", "{:.2f}"),
    ("cpu_10k", "µs/f @10k", "{:.2f}"),
    ("cpu_tcp", "µs/f TCP", "{:.2f}"),
]
#: The main table of the iperf3 benches: both of the above.
IPERF_COLUMNS = IPERF_THROUGHPUT_COLUMNS + IPERF_CPU_COLUMNS
#: The first diagnostics of the iperf3 benches: the user-mode part of the
#: CPU per frame (the kernel part is the socket work every implementation
#: does) and the wake-ups per frame (how well it batches).
USER_WAKEUP_COLUMNS: list[Column] = [
    ("user_flood", "user µs/f flood", "{:.2f}"),
    ("user_10k", "@10k", "{:.2f}"),
    ("user_tcp", "TCP", "{:.2f}"),
    ("wake_flood", "wakeups/f flood", "{:.3f}"),
    ("wake_10k", "@10k", "{:.3f}"),
    ("wake_tcp", "TCP", "{:.3f}"),
]


def printTables(results: dict[str, list[dict[str, float]]], rows: Sequence[tuple[str, str]],
                ratios: Sequence[tuple[str, str]],
                tables: Sequence[tuple[str, Sequence[Column], bool, bool]],
                heading: str) -> None:
    """
    Print the medians of C{results}, one line per C{(key, label)} of
    C{rows} that has runs, in one or more tables C{(title, columns,
    withRuns, withRatios)}: C{withRuns} adds the number of runs,
    C{withRatios} a line C{key / other} (medians divided) per pair of
    C{ratios} where both have runs.  C{heading} names the first column.
    A column a row's runs do not measure (the kernel bridge has no
    process whose CPU to count) shows "-".
    """
    columns = [c for _, cols, _, _ in tables for c in cols]
    medians: dict[str, dict[str, Optional[float]]] = {}
    for key, _ in rows:
        runs = results.get(key) or []
        if runs:
            medians[key] = {}
            for c, _, _ in columns:
                values = [r[c] for r in runs if c in r]
                medians[key][c] = statistics.median(values) if values else None
    labels = dict(rows)
    ratios = [(key, other) for key, other in ratios if key in medians and other in medians]
    width = max([len(label) for label in labels.values()]
                + [len(f"{labels[k]} / {labels[o]}") for k, o in ratios]) + 1

    def table(title: str, cols, withRuns: bool, withRatios: bool) -> None:
        header = heading.ljust(width) + (" runs" if withRuns else "") + "".join(
            " " + h.rjust(7) for _, h, _ in cols)
        print(title)
        print(header)
        print("-" * len(header))
        for key, label in rows:
            if key in medians:
                print(label.ljust(width) + (f"{len(results[key]):5d}" if withRuns else "")
                      + "".join(" " + ("-" if medians[key][c] is None
                                       else fmt.format(medians[key][c])).rjust(max(len(h), 7))
                                for c, h, fmt in cols))
        for key, other in ratios if withRatios else ():
            cells = []
            for c, _, _ in cols:
                value, base = medians[key][c], medians[other][c]
                cells.append(f"{value / base:.2f}x" if value is not None and base else "-")
            if cells.count("-") == len(cells):
                continue
            cells = [" " + cell.rjust(max(len(h), 7)) for cell, (_, h, _) in zip(cells, cols)]
            print(f"{labels[key]} / {labels[other]}".ljust(width)
                  + ("     " if withRuns else "") + "".join(cells))
        print()

    print()
    for title, cols, withRuns, withRatios in tables:
        table(title, cols, withRuns, withRatios)
