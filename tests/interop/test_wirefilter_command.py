"""
Tests for L{vdetwist.scripts.wirefilter}, the command, run as a process:
its command line and messages beside vde2's, its stream modes, its console
on stdin, and daemon mode with a pid file.  The figures between switches
are in L{tests.interop.test_wirefilter_interop}.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    TIMEOUT, ConsoleClient, CSwitch, StreamProcess, cPlug, cTool, frame, isListening, ourEnv,
    ourTool, reap, records, tmpdir, waitFor,
)
from vdetwist.lab.console import PROMPT
from vdetwist.scripts.cli import UsageError
from vdetwist.scripts.wirefilter import USAGE, parseArgs, splitPlugs
from vdetwist.wire.stream import StreamDecoder

WIREFILTER = ourTool("wirefilter")


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, capture_output=True, env=ourEnv(), timeout=60, **kwargs)


def decode(data: bytes) -> list[bytes]:
    frames: list[bytes] = []
    decoder = StreamDecoder(frames.append, lambda length, discarded: None)
    decoder.feed(data)
    return frames


def readUntil(fd: int, done, timeout: float = TIMEOUT) -> bytes:
    """
    Read C{fd} until C{done(data)} or the timeout.
    """
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data


class CommandLineTests(SynchronousTestCase):
    def test_parse(self) -> None:
        options = parseArgs(["-l", "LR10", "--loss", "RL20", "-N", "-M", "m", "--mgmtmode", "600",
                             "-v", "/tmp/a:/tmp/b", "--blink", "b", "--blinkid", "x", "-f", "rc"])
        self.assertEqual(options.values, [("-l", "loss", "LR10"), ("--loss", "loss", "RL20")])
        self.assertEqual((options.nofifo, options.mgmt, options.mgmtmode, options.plugs),
                         (True, "m", 0o600, ("/tmp/a", "/tmp/b")))
        self.assertEqual((options.blink, options.blinkid, options.rcfile), ("b", "x", "rc"))

    def test_splitPlugs(self) -> None:
        self.assertEqual(splitPlugs("/tmp/a:/tmp/b"), ("/tmp/a", "/tmp/b"))
        self.assertEqual(splitPlugs("vde:///tmp/a:null://"), ("vde:///tmp/a", "null://"))
        self.assertRaises(UsageError, splitPlugs, "null://")

    def test_usageAsC(self) -> None:
        """
        --help and option errors: vde2's usage and messages, status 1.
        """
        c = cTool("wirefilter")
        for args in (["--help"], ["-x"], ["--foo"], ["-l"], ["--d", "3"], ["-v", "abc"]):
            theirs, ours = run([c, *args]), run(WIREFILTER + args)
            self.assertEqual((ours.returncode, theirs.returncode), (1, 1), args)
            self.assertEqual(ours.stderr.decode().replace("\t--version (vdetwist's version)\n", ""),
                             theirs.stderr.decode().replace(c, "wirefilter"), args)
        self.assertIn("--version", USAGE)

    def test_badValues(self) -> None:
        """
        A bad value is one line naming the option, status 1 (vde2's
        ignores it); so is a bad rc file line, an rc file that cannot be
        read, a side that cannot be opened.
        """
        rc = os.path.join(tmpdir(self), "rc")
        with open(rc, "w") as f:
            f.write("loss 10\nsetedge 1,2\n")
        for args, words in [
            (["-l", "abc"], "-l abc: loss: 'abc' is not a value"),
            (["--delay", "-5"], "--delay -5: delay: '-5' is negative"),
            (["-D", "100"], "dup: '100' is above 99"),
            (["--mgmtmode", "abc"], "--mgmtmode: 'abc' is not an octal mode"),
            (["-f", rc], f"{rc}:2: setedge 1,2"),
            (["-f", "/nonexistent/rc"], "cannot read the rc file /nonexistent/rc"),
            (["-M", "/nonexistent/dir/m"], "/nonexistent/dir/m"),
        ]:
            result = run(WIREFILTER + args + ["-v", "null://:null://"])
            lines = result.stderr.decode().splitlines()
            self.assertEqual(result.returncode, 1, (args, lines))
            self.assertEqual(len(lines), 1, (args, lines))
            self.assertTrue(lines[0].startswith("wirefilter: "), lines)
            self.assertIn(words, lines[0])
        result = run(WIREFILTER + ["-v", "/nonexistent/sw:null://"])
        self.assertEqual(result.returncode, 1)
        self.assertIn("vdeplug /nonexistent/sw: ", result.stderr.decode())
        self.assertIn("wirefilter: -v /nonexistent/sw: ", result.stderr.decode())

    def test_notAPipe(self) -> None:
        result = run(WIREFILTER + ["-l", "1"])
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode(), "wirefilter: Error on stdin: it is not a pipe\n")


class StreamTests(SynchronousTestCase):
    def test_oneWay(self) -> None:
        """
        Without -v nor dpipe's descriptors: stdin to stdout, filtered; the
        end of stdin ends it (status 0).
        """
        frames = [frame(n) for n in range(20)]
        result = run(WIREFILTER + ["-m", "100"], input=records(frames + [frame(99, 200)]))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(decode(result.stdout), frames)
        self.assertIn(b"wirefilter: monodirectional filter starting...", result.stderr)

    def test_bothWaysInDpipe(self) -> None:
        """
        With ALTERNATE_STDIN/ALTERNATE_STDOUT (dpipe's middle command):
        stdin goes out on the alternate output (left to right), the
        alternate input on stdout (right to left), each way filtered on its
        own.
        """
        altIn, feedAltIn = os.pipe()
        readAltOut, altOut = os.pipe()
        proc = subprocess.Popen(
            WIREFILTER + ["-l", "RL100"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=(altIn, altOut),
            env=ourEnv(ALTERNATE_STDIN=str(altIn), ALTERNATE_STDOUT=str(altOut)),
        )
        os.close(altIn)
        os.close(altOut)
        self.addCleanup(os.close, feedAltIn)
        self.addCleanup(os.close, readAltOut)
        try:
            proc.stdin.write(records([frame(1), frame(2)]))
            proc.stdin.flush()
            os.write(feedAltIn, records([frame(3)]))
            ahead = readUntil(readAltOut, lambda d: len(decode(d)) >= 2)
            self.assertEqual(decode(ahead), [frame(1), frame(2)])
            proc.stdin.close()
            self.assertEqual(proc.wait(TIMEOUT), 0)
            self.assertEqual(proc.stdout.read(), b"")
            self.assertIn(b"bidirectional filter starting...", proc.stderr.read())
        finally:
            reap(proc)


class ConsoleAndDaemonTests(SynchronousTestCase):
    def test_stdinConsole(self) -> None:
        """
        With two plugs and no --daemon the console is on stdin, its answers
        and prompts on stdout; the end of stdin ends it (status 0).
        """
        proc = subprocess.Popen(
            WIREFILTER + ["-v", "null://:null://", "-d", "LR40"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ourEnv(),
        )
        try:
            proc.stdin.write(b"showinfo\nloss 5\nloss x\n")
            proc.stdin.flush()
            out = readUntil(proc.stdout.fileno(), lambda d: d.count(b"VDEwf$ ") >= 3).decode()
            self.assertIn("Delay  L->R 40+0U   R->L 0+0U", out)
            self.assertIn(".\n1000 Success\n\nVDEwf$ 1000 Success\n\nVDEwf$ loss: 'x' is not a value", out)
            proc.stdin.close()
            self.assertEqual(proc.wait(TIMEOUT), 0)
        finally:
            reap(proc)

    def test_shutdownFromSocket(self) -> None:
        """
        shutdown on the -M console answers, stops the filter (status 0) and
        removes the socket.
        """
        mgmt = os.path.join(tmpdir(self), "m")
        proc = subprocess.Popen(WIREFILTER + ["-v", "null://:null://", "-M", mgmt],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=ourEnv())
        try:
            waitFor(lambda: isListening(mgmt), "the console", procs=[])
            console = ConsoleClient(mgmt, prompt=PROMPT)
            try:
                self.assertEqual(console.end("shutdown"), b"9999 END OF SESSION")
            finally:
                console.close()
            self.assertEqual(proc.wait(TIMEOUT), 0)
            self.assertFalse(os.path.exists(mgmt))
        finally:
            reap(proc)

    def test_streamSide(self) -> None:
        """
        -v -:VNL: the left side is the stream on stdin and stdout.
        """
        sw = CSwitch(self, mgmt=False)
        sw.waitReady()
        rx = cPlug(self, "rx", sw.path)
        wf = StreamProcess(self, "wirefilter -v -:SW", WIREFILTER + ["-v", f"-:{sw.path}"],
                           env=ourEnv())
        rx.waitFor(lambda: wf.send(frame(1)) or frame(1) in rx.frames, "a frame through")
        rx.send(frame(2))
        wf.waitFor(lambda: frame(2) in wf.frames, "a frame back")

    def test_daemonPidfile(self) -> None:
        """
        --daemon returns at once, leaving the filter running with its pid in
        the pid file (relative to where it was started) and its console on
        -M; SIGTERM removes both.
        """
        d = tmpdir(self)
        mgmt = os.path.join(d, "m")
        result = run(WIREFILTER + ["--daemon", "--pidfile", "wf.pid", "-M", mgmt,
                                   "-v", "null://:null://"], cwd=d)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        pidfile = os.path.join(d, "wf.pid")
        waitFor(lambda: os.path.exists(pidfile) and os.path.getsize(pidfile), "the pid file")
        with open(pidfile) as f:
            pid = int(f.read())
        self.addCleanup(lambda: _kill(pid))
        self.assertTrue(os.path.exists(mgmt))
        os.kill(pid, signal.SIGTERM)
        waitFor(lambda: not os.path.exists(pidfile) and not os.path.exists(mgmt),
                "the daemon to clean up")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
