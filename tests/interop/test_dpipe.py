"""
dpipe: the command-line parsers in process, then our dpipe as a process, and
the same scenarios side by side with vdeplug4's C dpipe when it is installed.

Every dpipe runs in a process group of its own, as under a shell with job
control: the C one signals its process group on C{-h}, and both expect to
become their group's leader.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

from twisted.trial import unittest

from tests.support import ROOT, isELF, ourEnv, ourTool
from vdetwist.scripts import dpipe
from vdetwist.scripts.cli import UsageError
from vdetwist.scripts.dpipe import (
    BOTH,
    LEFTWARD,
    RIGHTWARD,
    ChainCommand,
    links,
    parseCommands,
    parseOptions,
)

C_DPIPE = "/usr/bin/dpipe"
TIMEOUT = 10
USAGE = dpipe.USAGE.format(prog="dpipe").encode()

#: The mask (as in /proc/PID/status) of the signals the C dpipe ignores:
#: SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGSTKFLT, SIGVTALRM, SIGPROF, SIGIO
#: and SIGPWR.
IGNORED = 0x3600BA00

#: A command that records what it was given: its fds (what each points to
#: and whether it is open for reading or writing), the ALTERNATE_*
#: variables, its ignored signals and its extra arguments.
PROBE = r"""
import fcntl, json, os, sys
name, out = sys.argv[1], sys.argv[2]
fds = {}
for fd in range(16):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    fds[fd] = [target, fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE]
with open("/proc/self/status") as f:
    ignored = [line.split()[1] for line in f if line.startswith("SigIgn:")][0]
env = {k: v for k, v in os.environ.items() if k.startswith("ALTERNATE_")}
with open(os.path.join(out, name + ".json"), "w") as f:
    json.dump({"argv": sys.argv[3:], "fds": fds, "env": env, "ignored": ignored}, f)
"""


def run(
    args: Sequence[str], c: bool = False, wrapper: Sequence[str] = (), **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    """
    Run our dpipe, or the C one if C{c}, in its own process group, capturing
    stdout and stderr.

    @param wrapper: a command that runs dpipe, given as its arguments.
    """
    options: dict[str, Any] = dict(
        cwd=ROOT,
        env=ourEnv(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=TIMEOUT,
        process_group=0,
    )
    options.update(kwargs)
    if c:
        argv, executable = ["dpipe", *args], C_DPIPE
    else:
        argv, executable = ourTool("dpipe") + list(args), None
    if wrapper:
        argv, executable = [*wrapper, executable or argv[0], *argv[1:]], None
    return subprocess.run(argv, executable=executable, **options)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def ignoredSignals() -> int:
    """
    The signals a command started from these tests ignores.
    """
    status = subprocess.run(
        sh("grep SigIgn /proc/$$/status"), stdout=subprocess.PIPE, check=True
    ).stdout
    return int(status.split()[1], 16)


def waitFor(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def readFile(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def sleeping(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "S"


class Probes:
    """
    Commands that report how dpipe wired them, and the wiring they report.
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory)
        self.script = os.path.join(directory, "probe.py")
        with open(self.script, "w") as f:
            f.write(PROBE)
        self.out = os.path.join(directory, "out")
        os.mkdir(self.out)

    def command(self, name: str) -> list[str]:
        return [sys.executable, "-S", "-E", self.script, name, self.out]

    def chain(self, separators: Sequence[str]) -> list[str]:
        """
        Probes C{a}, C{b}, ... separated by C{separators}.
        """
        args = self.command("a")
        for name, separator in zip("bcdefgh", separators):
            args += [separator, *self.command(name)]
        return args

    def wiring(self) -> tuple[dict[str, Any], set[tuple[Any, ...]]]:
        """
        Collect and clear the reports.

        @return: each probe's arguments, environment, ignored signals and
            non-pipe fds; and the pipes as (writer, fd, reader, fd) tuples
            (or every end of a pipe that is not one writer to one reader).
        """
        probes: dict[str, Any] = {}
        pipes: dict[str, list[tuple[str, int, int]]] = {}
        for entry in sorted(os.listdir(self.out)):
            path = os.path.join(self.out, entry)
            with open(path) as f:
                report = json.load(f)
            os.unlink(path)
            name = entry[: -len(".json")]
            others = {}
            for fd, (target, mode) in report["fds"].items():
                if target.startswith("pipe:"):
                    pipes.setdefault(target, []).append((name, int(fd), mode))
                else:
                    others[int(fd)] = target
            probes[name] = (report["argv"], report["env"], report["ignored"], others)
        edges: set[tuple[Any, ...]] = set()
        for ends in pipes.values():
            writers = [(n, fd) for n, fd, mode in ends if mode == os.O_WRONLY]
            readers = [(n, fd) for n, fd, mode in ends if mode == os.O_RDONLY]
            if len(writers) == len(readers) == 1:
                edges.add(writers[0] + readers[0])
            else:
                edges.add(tuple(sorted(ends)))
        return probes, edges


def signalDpipe(
    test: unittest.TestCase, directory: str, signum: int, c: bool = False
) -> tuple[int, Optional[str], bool]:
    """
    Signal a running dpipe (ours, or the C one if C{c}).

    @return: its exit status, the signal its last command heard, and whether
        the pid file survived.
    """
    pidfile, heard, ready, log = (
        os.path.join(directory, name) for name in ("pid", "heard", "ready", "log")
    )
    for path in (heard, ready):
        if os.path.exists(path):
            os.unlink(path)
    last = (
        f'for s in TERM INT HUP; do trap "echo $s > {heard}; exit 6" $s; done; '
        f"touch {ready}; sleep 3 & wait"
    )
    args = ["-p", pidfile] + sh("sleep 3") + ["="] + sh(last)
    # Output to a file: the commands left behind would hold a pipe open.
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["dpipe", *args] if c else ourTool("dpipe") + args,
            executable=C_DPIPE if c else None,
            cwd=ROOT,
            env=ourEnv(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            process_group=0,
        )
    test.addCleanup(_killGroup, process)
    # Until dpipe sleeps in wait() it may not know its last command yet:
    # the C one then misses it (seen about once in fifty runs).
    test.assertTrue(waitFor(lambda: os.path.exists(ready) and sleeping(process.pid)))
    process.send_signal(signum)
    status = process.wait(timeout=TIMEOUT)
    waitFor(lambda: bool(readFile(heard)))
    return status, readFile(heard), os.path.exists(pidfile)


def _killGroup(process: subprocess.Popen[bytes]) -> None:
    """
    Kill what a signalled dpipe may leave behind (on SIGTERM the C one too
    leaves all but its last command running).
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


class ParseOptionsTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_stopsAtFirstCommand(self) -> None:
        """
        Options end at the first non-option, so the commands keep theirs.
        """
        argv = ["-d", "-pPF", "ssh", "-p", "22", "=", "x"]
        options, args = parseOptions(argv, "dpipe")
        self.assertEqual((options.daemon, options.pidfile), (True, "PF"))
        self.assertEqual(args, ["ssh", "-p", "22", "=", "x"])
        self.assertEqual(parseOptions(["--", "-d"], "dpipe")[1], ["-d"])

    def test_longAbbreviations(self) -> None:
        options, args = parseOptions(
            ["--pidf=A", "--pg", "B", "--nowrapn", "--da", "a"], "dpipe"
        )
        self.assertEqual(
            (options.pidfile, options.pgrpfile, options.nowrap, options.noclean),
            ("A", "B", True, True),
        )
        self.assertTrue(options.daemon)
        self.assertEqual(args, ["a"])

    def test_errorsAreReportedAndSkipped(self) -> None:
        """
        Bad options are reported in glibc's words and parsing carries on.
        """
        options, args = parseOptions(
            ["-x", "--n", "--foo=1", "--help=1", "-n", "a"], "dpipe"
        )
        self.assertEqual(
            self.stderr.getvalue(),
            "dpipe: invalid option -- 'x'\n"
            "dpipe: option '--n' is ambiguous; possibilities: "
            "'--nowrapproc' '--nowrapnoclean'\n"
            "dpipe: unrecognized option '--foo=1'\n"
            "dpipe: option '--help' doesn't allow an argument\n",
        )
        self.assertEqual((options.nowrap, options.help, args), (True, False, ["a"]))

    def test_missingArgument(self) -> None:
        parseOptions(["-p"], "dpipe")
        parseOptions(["--pgrpfile"], "dpipe")
        self.assertEqual(
            self.stderr.getvalue(),
            "dpipe: option requires an argument -- 'p'\n"
            "dpipe: option '--pgrpfile' requires an argument\n",
        )

    def test_helpEndsParsing(self) -> None:
        options, _ = parseOptions(["-dh", "-x"], "dpipe")
        self.assertTrue(options.help)
        self.assertEqual(self.stderr.getvalue(), "")


class ParseCommandsTests(unittest.SynchronousTestCase):
    def directions(self, args: list[str]) -> list[tuple[list[str], str]]:
        return [(c.argv, c.direction) for c in parseCommands(args)]

    def test_separators(self) -> None:
        """
        Any argument starting with "=" separates; a bracket after it opens
        a one-way stretch, closed by the matching "}=" or "{=", whose third
        character may open another.
        """
        self.assertEqual(
            self.directions(["a", "=", "b", "x", "==", "c"]),
            [(["a"], BOTH), (["b", "x"], BOTH), (["c"], BOTH)],
        )
        args = ["a", "=}", "b", "=", "c", "}=}", "d", "}={", "e", "{=", "f"]
        self.assertEqual(
            self.directions(args),
            [
                (["a"], BOTH),
                (["b"], RIGHTWARD),
                (["c"], RIGHTWARD),
                (["d"], RIGHTWARD),
                (["e"], LEFTWARD),
                (["f"], BOTH),
            ],
        )

    def test_closingFormsOutsideTheirStretch(self) -> None:
        """
        "}=" is an ordinary argument unless it closes an "=}" stretch.
        """
        self.assertEqual(
            self.directions(["a", "}=", "b", "=", "c", "{=", "d"]),
            [(["a", "}=", "b"], BOTH), (["c", "{=", "d"], BOTH)],
        )
        self.assertEqual(
            self.directions(["a", "=}", "b", "{=", "c", "}=", "d"]),
            [(["a"], BOTH), (["b", "{=", "c"], RIGHTWARD), (["d"], BOTH)],
        )

    def test_errors(self) -> None:
        for args in [
            [],
            ["a"],
            ["a", "b", "c"],
            ["=", "a", "b"],
            ["a", "b", "="],
            ["a", "=", "=", "b"],
            ["a", "=}", "b"],
            ["a", "=}", "b", "{=", "c"],
            ["a", "=}", "b", "={", "c", "}=", "d"],
        ]:
            self.assertRaises(UsageError, parseCommands, args)

    def test_links(self) -> None:
        """
        A middle command reaches the right on the alternate fds; one-way
        commands sit on one direction of their segment.
        """
        commands = [
            ChainCommand(["a"]),
            ChainCommand(["b"]),
            ChainCommand(["c"], RIGHTWARD),
            ChainCommand(["d"], LEFTWARD),
            ChainCommand(["e"]),
        ]
        self.assertEqual(
            set(links(commands, 7, 8)),
            {
                ((0, 1), (1, 0)),
                ((1, 1), (0, 0)),
                ((1, 8), (2, 0)),
                ((2, 1), (4, 0)),
                ((4, 1), (3, 0)),
                ((3, 1), (1, 7)),
            },
        )


class DpipeTests(unittest.TestCase):
    """
    Our dpipe, as a process.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        self.probes = Probes(self.directory)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def test_crossedPipes(self) -> None:
        left = sh('echo hi; read x; echo "got $x" >&2')
        result = run(left + ["="] + sh('read y; echo "$y back"'))
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, b"", b"got hi back\n"),
        )

    def test_exitStatusIsTheLastCommands(self) -> None:
        self.assertEqual(run(sh("exit 3") + ["="] + sh("exit 5")).returncode, 5)
        self.assertEqual(run(sh("exit 5") + ["="] + sh("exit 3")).returncode, 3)
        self.assertEqual(run(sh("exit 5") + ["=", "true"]).returncode, 0)

    def test_lastCommandKilled(self) -> None:
        """
        Like the C tool's C{WEXITSTATUS}, a command killed by a signal
        counts as 0.
        """
        self.assertEqual(run(["true", "="] + sh("kill -9 $$")).returncode, 0)

    def test_waitsForEveryCommand(self) -> None:
        marker = self.path("late")
        result = run(
            sh(f"sleep 0.2; touch {marker}") + ["=", "true"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.assertEqual(result.returncode, 0)
        self.assertTrue(os.path.exists(marker))

    def test_alternateFds(self) -> None:
        """
        The middle of three commands reads the right one from
        C{$ALTERNATE_STDIN} (3) and writes to it on C{$ALTERNATE_STDOUT} (4),
        and data flows through in both directions.
        """
        middle = (
            'echo "env $ALTERNATE_STDIN $ALTERNATE_STDOUT" >&2; read a; '
            'echo "from-left:$a" >&4; read c <&3; echo "from-right:$c"'
        )
        result = run(
            sh('echo L; read r; echo "L got $r" >&2')
            + ["="]
            + sh(middle)
            + ["="]
            + sh('read m; echo "R got $m" >&2; echo R')
        )
        self.assertEqual(
            (result.returncode, result.stderr),
            (0, b"env 3 4\nR got from-left:L\nL got from-right:R\n"),
        )

    def test_rings(self) -> None:
        """
        "a =} b }= c" passes a's output through b, then c, back to a;
        "a ={ b {= c" goes the other way round.
        """
        a = sh('echo ping; read x; echo "a got $x" >&2')
        b = sh('read x; echo "$x-b"')
        c = sh('read x; echo "$x-c"')
        result = run(a + ["=}"] + b + ["}="] + c)
        self.assertEqual((result.returncode, result.stderr), (0, b"a got ping-b-c\n"))
        result = run(a + ["={"] + b + ["{="] + c)
        self.assertEqual((result.returncode, result.stderr), (0, b"a got ping-c-b\n"))

    def test_wiring(self) -> None:
        """
        Each command gets exactly its pipes, nothing else leaks into it, and
        it sees the ALTERNATE_* variables and the ignored signals.
        """
        cases = {
            ("=",): {("a", 1, "b", 0), ("b", 1, "a", 0)},
            ("=", "="): {
                ("a", 1, "b", 0),
                ("b", 1, "a", 0),
                ("b", 4, "c", 0),
                ("c", 1, "b", 3),
            },
            ("=}", "}="): {("a", 1, "b", 0), ("b", 1, "c", 0), ("c", 1, "a", 0)},
            ("={", "{="): {("a", 1, "c", 0), ("c", 1, "b", 0), ("b", 1, "a", 0)},
        }
        # What test_ignoredSignals checks, plus SIGXFSZ: the probes are in
        # Python, which ignores it (and SIGPIPE) itself.
        ignored = f"{ignoredSignals() | IGNORED | 1 << signal.SIGXFSZ - 1:016x}"
        alternates = {"ALTERNATE_STDIN": "3", "ALTERNATE_STDOUT": "4"}
        for separators, expected in cases.items():
            result = run(self.probes.chain(separators), stderr=subprocess.DEVNULL)
            self.assertEqual(result.returncode, 0)
            probes, edges = self.probes.wiring()
            self.assertEqual(edges, expected, separators)
            self.assertEqual(
                list(probes.values()),
                [([], alternates, ignored, {2: "/dev/null"})] * (len(separators) + 1),
            )

    def test_ignoredSignals(self) -> None:
        """
        The commands inherit the signals the C tool ignores, on top of those
        ignored where dpipe was started.
        """
        result = run(["true", "="] + sh("grep SigIgn /proc/$$/status >&2"))
        expected = ignoredSignals() | IGNORED
        self.assertEqual(result.stderr, f"SigIgn:\t{expected:016x}\n".encode())

    def test_alternateFdsAreTheLowestFree(self) -> None:
        """
        With fd 3 already open, the alternate fds are 4 and 5.
        """
        result = run(
            self.probes.chain(["=", "="]),
            wrapper=sh('exec "$@" 3</dev/null') + ["sh"],
            stderr=subprocess.DEVNULL,
        )
        self.assertEqual(result.returncode, 0)
        probes, edges = self.probes.wiring()
        self.assertTrue({("b", 5, "c", 0), ("c", 1, "b", 4)} <= edges, edges)
        self.assertEqual(
            probes["b"][1], {"ALTERNATE_STDIN": "4", "ALTERNATE_STDOUT": "5"}
        )

    def test_endOfFile(self) -> None:
        """
        When a command exits its neighbours see end of file: no other
        process holds their pipes open.
        """
        catThenEof = sh("cat >&2; echo eof >&2")
        cases = [
            (sh("echo one; echo two") + ["="] + catThenEof, b"one\ntwo\neof\n"),
            (catThenEof + ["="] + sh("echo one"), b"one\neof\n"),
            (
                sh("echo x")
                + ["="]
                + sh("cat >&2; echo middle-eof >&2")
                + ["="]
                + sh("cat >&2; echo right-eof >&2"),
                b"x\nmiddle-eof\nright-eof\n",
            ),
            (["-n"] + sh("echo one") + ["="] + catThenEof, b"one\neof\n"),
        ]
        for args, expected in cases:
            result = run(args, timeout=5)
            self.assertEqual((result.returncode, result.stderr), (0, expected), args)

    def test_usageErrors(self) -> None:
        """
        The usage goes to stderr and, as with the C tool, the status is 0.
        """
        for args in [
            [],
            ["a"],
            ["echo", "hi", "there"],
            ["=", "a", "b"],
            ["a", "b", "="],
            ["a", "=", "=", "b"],
            ["a", "=}", "b"],
            ["a", "=}", "b", "{=", "c"],
        ]:
            result = run(args)
            self.assertEqual(
                (result.returncode, result.stdout, result.stderr), (0, b"", USAGE), args
            )

    def test_usageRemovesFiles(self) -> None:
        pidfile = self.path("pid")
        result = run(["-p", pidfile, "a"])
        self.assertEqual((result.returncode, result.stderr), (0, USAGE))
        self.assertFalse(os.path.exists(pidfile))

    def test_help(self) -> None:
        """
        C{-h} prints the usage and dies of SIGTERM.
        """
        result = run(["-h", "a", "=", "b"])
        self.assertEqual((result.returncode, result.stderr), (-signal.SIGTERM, USAGE))

    def test_cannotCreateProcessGroup(self) -> None:
        """
        A session leader cannot make a new process group.
        """
        result = run(["true", "=", "true"], process_group=None, start_new_session=True)
        self.assertEqual(
            (result.returncode, result.stderr), (1, b"Err: cannot create pgrp\n")
        )

    def test_optionsBeforeCommandsOnly(self) -> None:
        echo = sh('echo "$@"') + ["sh", "-d", "-p", "x"]
        result = run(echo + ["="] + sh('read y; echo "$y" >&2'))
        self.assertEqual((result.returncode, result.stderr), (0, b"-d -p x\n"))

    def test_commandNotFound(self) -> None:
        """
        A command that cannot be run exits 127 with a message naming it; if
        it is not the last one, the last one just sees end of file.
        """
        # Only searchable directories on PATH: as with execvp, one this user
        # may not search (root's in an su session) makes it EACCES.
        path = ourEnv(PATH=os.defpath)
        result = run(["true", "=", "no-such-dpipe-command", "x"], env=path)
        self.assertEqual(
            (result.returncode, result.stderr),
            (127, b"dpipe: no-such-dpipe-command: No such file or directory\n"),
        )
        result = run(["no-such-dpipe-command", "="] + sh("cat; exit 4"), env=path)
        self.assertEqual(result.returncode, 4)

    def test_scriptWithoutInterpreterLine(self) -> None:
        """
        As with C{execvp}, an executable file without C{#!} runs with sh.
        """
        script = self.path("script")
        with open(script, "w") as f:
            f.write('echo "script $1" >&2\n')
        os.chmod(script, 0o755)
        result = run(["true", "=", script, "arg"])
        self.assertEqual((result.returncode, result.stderr), (0, b"script arg\n"))

    def test_pidFiles(self) -> None:
        """
        C{-p} holds dpipe's pid, C{-P} its negated process group (its own
        pid, as it leads the group); both are removed at exit.
        """
        pidfile, pgrpfile = self.path("pid"), self.path("pgrp")
        process = subprocess.Popen(
            ourTool("dpipe")
            + ["--pidf", pidfile, "--pg", pgrpfile, "true", "="]
            + sh(f"cat {pidfile} {pgrpfile} >&2"),
            cwd=ROOT,
            env=ourEnv(),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            process_group=0,
        )
        _, stderr = process.communicate(timeout=TIMEOUT)
        self.assertEqual(stderr, f"{process.pid}\n-{process.pid}\n".encode())
        self.assertEqual(process.returncode, 0)
        self.assertFalse(os.path.exists(pidfile) or os.path.exists(pgrpfile))

    def test_nowrap(self) -> None:
        """
        With C{-n} dpipe becomes the last command; a small process removes
        the files once it has gone.  (That process keeps stderr open, so
        stderr goes to a file: a pipe would not end before the exited
        command is reaped, which here its parent would only do at the end.)
        """
        pidfile, pgrpfile, log = self.path("pid"), self.path("pgrp"), self.path("log")
        with open(log, "wb") as stderr:
            result = run(
                ["-n", "-p", pidfile, "-P", pgrpfile, "true", "="]
                + sh(f"echo $$ $PPID >&2; cat {pidfile} {pgrpfile} >&2; exit 3"),
                stderr=stderr,
            )
        self.assertEqual(result.returncode, 3)
        pid = int(readFile(pidfile) or "0")
        self.assertTrue(
            waitFor(lambda: not (os.path.exists(pidfile) or os.path.exists(pgrpfile)))
        )
        self.assertEqual(readFile(log), f"{pid} {os.getpid()}\n{pid}\n-{pid}\n")

    def test_nowrapNoClean(self) -> None:
        pidfile = self.path("pid")
        result = run(["-N", "-p", pidfile, "true", "=", "true"])
        self.assertEqual(result.returncode, 0)
        time.sleep(0.1)
        self.assertTrue(os.path.exists(pidfile))

    def test_daemon(self) -> None:
        """
        C{-d} returns at once; the commands run on in a new session, in C{/},
        with stdio on /dev/null.
        """
        pidfile, output = self.path("pid"), self.path("output")
        result = run(
            ["-d", "-p", pidfile]
            + sh("sleep 0.2; echo hi")
            + ["="]
            + sh(f'read x; echo "$x $(pwd) $(readlink /proc/$$/fd/2)" > {output}')
        )
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertTrue(waitFor(lambda: readFile(output) == "hi / /dev/null\n"))
        self.assertTrue(waitFor(lambda: not os.path.exists(pidfile)))

    def test_sigterm(self) -> None:
        """
        SIGTERM: remove the files, SIGTERM the last command, exit 0.
        """
        self.assertEqual(
            signalDpipe(self, self.directory, signal.SIGTERM), (0, "TERM\n", False)
        )

    def test_sigint(self) -> None:
        """
        SIGINT: remove the files, and die of it with the whole process group.
        """
        status, heard, survived = signalDpipe(self, self.directory, signal.SIGINT)
        self.assertEqual((status, survived), (-signal.SIGINT, False))
        self.assertIn(heard, ("TERM\n", "INT\n"))


class DifferentialTests(unittest.TestCase):
    """
    The same scenarios with the C dpipe and ours: same outputs, same status.
    """

    def setUp(self) -> None:
        if not isELF(C_DPIPE):
            raise unittest.SkipTest("C dpipe not installed: apt-get install vdeplug")
        self.directory = os.path.abspath(self.mktemp())
        self.probes = Probes(self.directory)

    def assertSame(self, args: Sequence[str], **kwargs: Any) -> None:
        ours, theirs = run(args, **kwargs), run(args, c=True, **kwargs)
        self.assertEqual(
            (ours.returncode, ours.stdout, ours.stderr),
            (theirs.returncode, theirs.stdout, theirs.stderr),
            args,
        )

    def test_dataFlow(self) -> None:
        a = sh('echo ping; read x; echo "a got $x" >&2')
        b = sh('read x; echo "$x-b"')
        c = sh('read x; echo "$x-c"')
        d = sh('read x; echo "$x-d"')
        middle = sh('read x; echo "$x-b" >&4; read y <&3; echo "$y"')
        echo = sh('echo "$@"') + ["sh", "-d", "-p", "x"]
        for args in [
            sh('echo hi; read x; echo "got $x" >&2') + ["="] + sh('read y; echo "$y"'),
            sh("exit 3") + ["="] + sh("exit 5"),
            ["true", "="] + sh("kill -9 $$"),
            a + ["="] + middle + ["="] + c,
            a + ["=}"] + b + ["}="] + c,
            a + ["={"] + b + ["{="] + c,
            a + ["=}"] + b + ["}={"] + c + ["{="] + d,
            sh("echo one") + ["="] + sh("cat >&2; echo eof >&2"),
            ["-n"] + sh("echo one") + ["="] + sh("cat >&2; exit 2"),
            echo + ["="] + sh('read y; echo "$y" >&2'),
            ["true", "="] + sh("grep SigIgn /proc/$$/status >&2"),
        ]:
            self.assertSame(args)

    def test_usage(self) -> None:
        """
        Usage errors, bad options, C{-h}, and a session leader that cannot
        make a process group.
        """
        for args in [
            [],
            ["a", "b"],
            ["a", "=", "b", "="],
            ["=", "a", "b"],
            ["a", "=", "=", "b"],
            ["a", "=}", "b", "{=", "c"],
            ["a", "=}", "b", "={", "c", "}=", "d"],
            ["-h"],
            ["-x", "--n", "--foo=1", "--daemon=1", "--p", "a"],
            ["-p"],
        ]:
            self.assertSame(args)
        self.assertSame(
            ["true", "=", "true"], process_group=None, start_new_session=True
        )

    def test_commandNotFound(self) -> None:
        """
        Same status; the C tool says nothing, ours names the command.
        """
        for args in [
            ["true", "=", "no-such-dpipe-command"],
            ["no-such-dpipe-command", "=", "true"],
        ]:
            self.assertEqual(run(args).returncode, run(args, c=True).returncode, args)

    def test_wiring(self) -> None:
        """
        Same pipes, arguments, environment, ignored signals and other fds
        for every command, over a range of separators, odd ones included,
        and with fd 3 taken.
        """
        for separators in [
            ["="],
            ["=", "=", "="],
            ["=}", "}="],
            ["={", "{="],
            ["=}", "=", "}=", "="],
            ["=", "={", "{=}", "}="],
            ["=}", "}={", "{="],
            ["=x", "==", "}="],
            ["=}", "{=", "}=x"],
            ["={", "=}", "}="],
        ]:
            args = self.probes.chain(separators)
            run(args, stderr=subprocess.DEVNULL)
            ours = self.probes.wiring()
            run(args, c=True, stderr=subprocess.DEVNULL)
            self.assertEqual(ours, self.probes.wiring(), separators)
        args = self.probes.chain(["=", "="])
        wrapper = sh('exec "$@" 3</dev/null') + ["sh"]
        run(args, wrapper=wrapper, stderr=subprocess.DEVNULL)
        ours = self.probes.wiring()
        run(args, c=True, wrapper=wrapper, stderr=subprocess.DEVNULL)
        self.assertEqual(ours, self.probes.wiring())

    def test_pidFiles(self) -> None:
        """
        Both write dpipe's pid and negated process group, and remove them.
        """
        pidfile, pgrpfile = (os.path.join(self.directory, n) for n in ("pid", "pgrp"))
        expected = '"$(printf "%s\\n-%s" $PPID $PPID)"'
        check = f'test "$(cat {pidfile} {pgrpfile})" = {expected}'
        args = ["-p", pidfile, "-P", pgrpfile, "true", "="] + sh(check)
        self.assertEqual((run(args).returncode, run(args, c=True).returncode), (0, 0))
        self.assertFalse(os.path.exists(pidfile) or os.path.exists(pgrpfile))

    def test_signals(self) -> None:
        """
        Same status and pid file removal on SIGTERM and SIGINT, and on
        SIGTERM the last command is told.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            ours = signalDpipe(self, self.directory, signum)
            theirs = signalDpipe(self, self.directory, signum, c=True)
            if signum == signal.SIGINT:
                # The last command gets both dpipe's SIGTERM and the group's
                # SIGINT: which trap runs is a race.
                ours, theirs = ours[::2], theirs[::2]
            self.assertEqual(ours, theirs, signum)
