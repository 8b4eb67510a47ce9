"""
Tests for L{vdetwist.service}: C{twistd vde}.

  - the options (errors name the option) and the checks made before
    twistd daemonizes;
  - the service in this process: directory, sockets and modes, C{--plug},
    C{--rcfile}, start failures, clean stop;
  - the real thing: C{python -m twisted vde} (and C{twistd -n vde}) as a
    process, joined by the C C{vde_plug}, driven by the C C{vdeterm} and
    C{unixcmd} and by a raw unix socket, compared byte for byte with the C
    C{vde_switch}'s console, stopped by SIGTERM and by C{shutdown}.

Directories are made in /tmp: unix socket paths are limited to 107 bytes.
"""

from __future__ import annotations

import errno
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import re
import sys
import threading
import time
from typing import Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.interop.test_vde2_interop import RawClient
from tests.support import (
    ROOT, TIMEOUT, ConsoleClient, CSwitch, LogCapture, cPlug, cTool, isListening, makeUser, ourEnv,
    StreamProcess, ourTool, requireCommand, rssBytes, tmpdir, until, userName, waitFor,
)
from vdetwist.errors import VdeError
from vdetwist.node import HubEngine, SwitchEngine, formatMac
from vdetwist.registry import openVNL
from vdetwist import service as service_module
from vdetwist.service import Options, VdeSwitchService, defaultSwitchPath, makeService
from vdetwist.testing import FrameCollector, MemoryPlug
from vdetwist.vde2.client import VdeClientPlug
from vdetwist.vde2.server import ServerEndpoint

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6


def eth(dst, src, size=60):
    return dst + src + b"\x88\xb5" + bytes(range(size - 14))


def waitConnected(console, plug: StreamProcess, number: int, procs=()) -> None:
    """
    Wait until the C C{plug} is connected as port C{number} (C{console}: a
    L{ConsoleClient} or L{StdioConsole}).

    The port shows as soon as the switch has replied to the client, before
    libvdeplug has connected its data socket to the switch's and unlinked
    its own socket in the switch directory: a switch stopping in between
    (vde_switch too) unlinks the data socket under it, C{vde_open} fails
    with ENOENT and vde_plug exits 1.  vde_plug reads its stdin only once
    connected, so a frame it sent reaching the port proves it is.
    """
    plug.send(eth(BCAST, A))
    waitFor(lambda: re.search(rb" IN:  pkts +[1-9]", console.cmd(f"port/print {number}")),
            f"a frame from {plug.name} on port {number}", procs=[plug, *procs])


def parse(*argv) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def assertEndpointList(case, option: str, first: str, second: str) -> None:
    """
    C{--OPTION} of C{twistd vde} may be given twice (both kept, in order)
    and refuses what is not a server endpoint description, naming it.
    """
    options = parse(f"--{option}", first, f"--{option}", second)
    case.assertEqual(options[option], [first, second])
    with case.assertRaises(usage.UsageError) as caught:
        parse(f"--{option}", "bogus:1")
    case.assertIn(f"--{option} bogus:1: not a Twisted server endpoint description",
                  str(caught.exception))


class SwitchProcess:
    """
    C{python -m twisted vde ...} (or C{twistd -n vde ...}) as a process,
    with a management socket; C{HOME} is a fresh directory, so the user's
    rc file never runs.

    @param rcfile: C{--rcfile}: by default C{""} (none runs, whatever
        C{/etc/vde2} holds); C{None} for vde_switch's default files.
    @param home: C{HOME} (the switch's directory by default).
    @param console: C{--console}, driven through L{stdio} (a pipe on stdin);
        the log goes to stderr, out of the answers.

    @ivar stdio: the L{StdioConsole}, with C{console}.
    """

    def __init__(self, testcase, *args: str, twistd: bool = False, mgmt: bool = True,
                 wait: bool = True, rcfile: Optional[str] = "", home: Optional[str] = None,
                 console: bool = False) -> None:
        self.dir = tmpdir(testcase)
        self.path = os.path.join(self.dir, "sw")
        self.mgmt = os.path.join(self.dir, "mgmt") if mgmt else None
        self.name = "twistd vde" if twistd else "python -m twisted vde"
        if twistd:
            assert not console, "twistd logs to stdout: use python -m twisted"
            argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                    "-n", "--pidfile=", "vde"]
        else:
            argv = [sys.executable, "-m", "twisted", "--log-format=text",
                    *(["--log-file=+"] if console else []), "vde"]
        argv += ["--switch", self.path]
        if mgmt:
            argv += ["--mgmt", self.mgmt]
        if rcfile is not None:
            argv += [f"--rcfile={rcfile}"]
        if console:
            argv += ["--console"]
        argv += list(args)
        self.logPath = os.path.join(self.dir, "log")
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.PIPE if console else log, stderr=log,
                stdin=subprocess.PIPE if console else subprocess.DEVNULL,
                env=ourEnv(HOME=home or self.dir), cwd=self.dir,
            )
        testcase.addCleanup(self.kill)
        self.stdio = StdioConsole(self.process, self.name) if console else None
        if wait:
            self.waitReady()

    def log(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe(self) -> str:
        return f"\n--- {self.name} (status {self.process.poll()}) log:\n{self.log()}"

    def running(self) -> bool:
        return self.process.poll() is None

    def waitFor(self, predicate, what: str, timeout: float = TIMEOUT) -> None:
        """
        L{waitFor} C{predicate}, failing early (with the log) if the switch
        exits first.
        """
        waitFor(predicate, what, timeout, procs=[self], failIfEnded=True)

    def waitReady(self) -> None:
        ctl = os.path.join(self.path, "ctl")
        self.waitFor(lambda: isListening(ctl) and (self.mgmt is None or isListening(self.mgmt)),
                     "the switch to listen")

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the switch did not exit\n{self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.stdio is not None:
            self.stdio.close()


#: The status line that ends each answer of a console.
STATUS = re.compile(rb"(?:\A|\n)1\d{3} [^\n]*\n\Z")


class StdioConsole:
    """
    The stdin console of a switch process (ours or the C C{vde_switch}),
    driven through pipes as a script drives vde_switch: send one command,
    read its answer up to the status line (no prompt: stdin is not a
    terminal), then the next.
    """

    def __init__(self, process: subprocess.Popen, name: str) -> None:
        self.process = process
        self.name = name
        self._output = bytearray()
        self._taken = 0
        self._eof = False
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.process.stdout.fileno(), 65536)
            except OSError:
                data = b""
            with self._arrived:
                self._output += data
                self._eof = not data
                self._arrived.notify_all()
            if not data:
                return

    def send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def cmd(self, line: str) -> bytes:
        """
        The answer to C{line}, up to and with its status line.
        """
        self.send(line.encode() + b"\n")
        deadline = time.monotonic() + TIMEOUT
        with self._arrived:
            while not STATUS.search(bytes(self._output[self._taken:])):
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(
                        f"{self.name}: no answer to {line!r}, only "
                        f"{bytes(self._output[self._taken:])!r}"
                    )
                self._arrived.wait(left)
            answer = bytes(self._output[self._taken:])
            self._taken = len(self._output)
        return answer

    def end(self) -> bytes:
        """
        Close stdin: what comes on stdout until it closes.
        """
        self.process.stdin.close()
        self._reader.join(TIMEOUT)
        return bytes(self._output[self._taken:])

    def close(self) -> None:
        """
        Once the process has ended: close the pipes.
        """
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self._reader.join(TIMEOUT)
        self.process.stdout.close()


def runVdeterm(path: str, commands: list[tuple[str, bytes]]) -> bytes:
    """
    Drive the C C{vdeterm} (it needs a terminal) with C{commands}, each
    (line, what to wait for on the screen before typing the next: vdeterm
    shows answers asynchronously); what it displayed.
    """
    vdeterm = cTool("vdeterm")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.execv(vdeterm, [vdeterm, path])
        finally:
            os._exit(127)
    output = b""

    def readUntil(marker: bytes, timeout: float = TIMEOUT) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        start = len(output)
        while marker not in output[start:] and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                output += chunk

    try:
        readUntil(b"]: ")
        for command, marker in commands:
            os.write(fd, command.encode() + b"\r")
            readUntil(marker)
        # Let the last answer arrive.
        readUntil(b"\x00never", timeout=0.3)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    return output


# -- options ------------------------------------------------------------------


class OptionsTests(SynchronousTestCase):
    def test_defaults(self):
        options = parse()
        self.assertEqual(options["switch"], defaultSwitchPath())
        self.assertEqual(options["numports"], 32)
        self.assertEqual(options["hashsize"], 128)
        self.assertEqual(options["macsperport"], 16384)
        self.assertFalse(options["hub"])
        self.assertIsNone(options["mgmt"])
        self.assertEqual(options["plugs"], [])

    def test_defaultPath(self):
        """
        vde_switch's default directory.
        """
        self.assertEqual(defaultSwitchPath(0), "/var/run/vde.ctl")
        self.assertEqual(defaultSwitchPath(1000), "/tmp/vde.ctl")

    def test_values(self):
        options = parse(
            "-s", "/tmp/x/sw", "-x", "-n", "8", "-m", "660", "--dirmode", "2770",
            "--hashsize", "100", "--macaddr", "02:00:00:00:00:0a", "-M", "rel/mgmt",
            "--mgmtmode", "666", "--plug", "null://", "--tap", "tap0", "-t", "tap1",
            "-g", "0", "--mgmtgroup", "root", "--macsperport", "0",
        )
        self.assertEqual(options["switch"], "/tmp/x/sw")
        self.assertTrue(options["hub"])
        self.assertEqual(options["numports"], 8)
        self.assertEqual(options["mode"], 0o660)
        self.assertEqual(options["dirmode"], 0o2770)
        self.assertEqual(options["hashsize"], 100)
        self.assertEqual(options["macaddr"], bytes.fromhex("02000000000a"))
        self.assertEqual(options["mgmt"], os.path.abspath("rel/mgmt"))
        self.assertEqual(options["mgmtmode"], 0o666)
        self.assertEqual(options["plugs"], ["null://", "tap://tap0", "tap://tap1"])
        self.assertEqual(options["group"], "0")
        self.assertEqual(options["mgmtgroup"], "root")
        self.assertEqual(options["macsperport"], 0)

    def test_offload(self):
        """
        C{--offload} is on by default; C{--offload=off} and C{--no-offload}
        turn it off; another value is refused, naming the option.
        """
        self.assertEqual(parse()["offload"], "on")
        self.assertEqual(parse("--offload=off")["offload"], "off")
        self.assertEqual(parse("--no-offload")["offload"], "off")
        self.assertUsageError(["--offload=no"], "--offload", "on or off", "'no'")

    def test_rcfile(self):
        """
        No C{--rcfile}: vde_switch's default files (C{None}); C{--rcfile=}:
        none; else the absolute path.
        """
        self.assertIsNone(parse()["rcfile"])
        self.assertEqual(parse("--rcfile=")["rcfile"], "")
        self.assertEqual(parse("-f", "rel/rc")["rcfile"], os.path.abspath("rel/rc"))

    def test_consoleNeedsNodaemon(self):
        """
        twistd without C{-n} (or C{--debug}) would daemonize: C{--console}
        is refused; with it, and outside twistd, it is allowed.
        """
        from twisted.scripts.twistd import ServerOptions

        def twistd(*argv):
            options = ServerOptions()
            options.parseOptions([*argv, "vde", "--console"])
            return options.subOptions

        error = self.assertRaises(usage.UsageError, twistd)
        self.assertIn("--console needs twistd -n", str(error))
        self.assertTrue(twistd("-n")["console"])
        # twistd's --debug implies -n (parsing it here would turn on
        # Failure's post-mortem debugging for the whole test run).
        options = Options()
        options.parent = {"nodaemon": False, "debug": True}
        options.parseOptions(["--console"])
        self.assertTrue(parse("--console")["console"])
        self.assertFalse(parse()["console"])

    def test_aliases(self):
        for option in ("--sock", "--vdesock", "--unix", "--switch", "-s"):
            self.assertEqual(parse(option, "/tmp/a")["switch"], "/tmp/a")
        self.assertEqual(parse("--mod", "644")["mode"], 0o644)

    def assertUsageError(self, argv, *needles):
        error = self.assertRaises(usage.UsageError, parse, *argv)
        for needle in needles:
            self.assertIn(needle, str(error))

    def test_errors(self):
        """
        Bad values are usage errors that name the option.
        """
        self.assertUsageError(["--numports", "x"], "--numports", "'x'")
        self.assertUsageError(["--numports", "0"], "--numports")
        self.assertUsageError(["--hashsize", "-1"], "--hashsize")
        self.assertUsageError(["--macsperport", "-1"], "--macsperport", "an integer from 0")
        self.assertUsageError(["--mode", "9"], "--mode", "octal")
        self.assertUsageError(["--dirmode", "abc"], "--dirmode")
        self.assertUsageError(["--mgmtmode", "77777"], "--mgmtmode")
        self.assertUsageError(["--group", "no-such-group-xyz"], "--group", "no such group")
        self.assertUsageError(["--mgmtgroup", "no-such-group-xyz"], "--mgmtgroup")
        self.assertUsageError(["--macaddr", "zz"], "--macaddr")
        self.assertUsageError(["--fstp"], "--fstp", "not implemented")
        self.assertRaises(usage.UsageError, parse, "extra-argument")


class PreflightTests(SynchronousTestCase):
    """
    L{makeService} reports what it can before twistd daemonizes.
    """

    def assertExits(self, argv, *needles):
        error = self.assertRaises(SystemExit, makeService, parse(*argv))
        for needle in needles:
            self.assertIn(needle, str(error.code))

    def test_missingParent(self):
        self.assertExits(["--switch", "/nonexistent-dir/sw"], "--switch", "/nonexistent-dir")

    def test_notADirectory(self):
        path = os.path.join(tmpdir(self), "file")
        open(path, "w").close()
        self.assertExits(["--switch", path], "not a directory")

    def test_badPlug(self):
        d = tmpdir(self)
        self.assertExits(
            ["--switch", os.path.join(d, "sw"), "--plug", "bogus://x"],
            "--plug bogus://x", "no backend",
        )

    def test_badRcfile(self):
        d = tmpdir(self)
        self.assertExits(
            ["--switch", os.path.join(d, "sw"), "--rcfile", os.path.join(d, "none")],
            "--rcfile",
        )

    def test_mgmtNotASocket(self):
        d = tmpdir(self)
        mgmt = os.path.join(d, "mgmt")
        open(mgmt, "w").close()
        self.assertExits(["--switch", os.path.join(d, "sw"), "--mgmt", mgmt], "--mgmt")

    def test_ok(self):
        d = tmpdir(self)
        service = makeService(parse("--switch", os.path.join(d, "sw"), "--plug", "null://"))
        self.assertIsInstance(service, VdeSwitchService)
        self.assertTrue(service.standalone)
        # Nothing is created before the service starts.
        self.assertEqual(os.listdir(d), [])


# -- the service in this process ---------------------------------------------------


class ServiceTests(TestCase):
    def makeService(self, *argv, **kwargs) -> VdeSwitchService:
        """
        A service in a fresh directory, whose default rc files are
        L{userRc} and L{systemRc} there (absent unless a test writes them).
        """
        self.dir = tmpdir(self)
        self.path = os.path.join(self.dir, "sw")
        self.mgmt = os.path.join(self.dir, "mgmt")
        self.userRc = os.path.join(self.dir, "user.rc")
        self.systemRc = os.path.join(self.dir, "system.rc")
        self.patch(service_module, "DEFAULT_RCFILES", (self.userRc, self.systemRc))
        options = parse("--switch", self.path, "--mgmt", self.mgmt, *argv)
        service = VdeSwitchService(options, reactor, **kwargs)
        self.addCleanup(self.stopService, service)
        return service

    def stopService(self, service):
        if service.running or service.node is not None:
            return service.stopService()

    def test_startStop(self):
        """
        The directory, C{ctl} and the console socket appear with vde_switch's
        default modes; stopping removes them all.
        """
        service = self.makeService("-n", "4")
        service.privilegedStartService()
        service.startService()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o2700)
        ctl = os.path.join(self.path, "ctl")
        self.assertTrue(stat.S_ISSOCK(os.stat(ctl).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(ctl).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.mgmt).st_mode), 0o600)
        self.assertIsInstance(service.node.engine, SwitchEngine)
        self.assertEqual(service.node.numports, 4)
        self.assertEqual(service.node.table.hashsize, 128)
        self.assertEqual(service.node.table.expiretime, 100)
        self.assertEqual(service.node.table.minPersistence, 3)
        self.assertEqual(service.node.table.capacity, 65536)
        self.assertEqual(service.node.table.portLimit, 16384)
        d = service.stopService()

        def stopped(_):
            self.assertFalse(os.path.exists(self.path))
            self.assertFalse(os.path.exists(self.mgmt))

        return d.addCallback(stopped)

    def test_modesAndHub(self):
        # A group this user may give files to: its own (root's is 0).
        group = os.getegid()
        service = self.makeService("-m", "660", "-g", str(group), "--mgmtmode", "640", "-x",
                                   "--hashsize", "100")
        service.startService()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o2770)
        self.assertEqual(os.stat(self.path).st_gid, group)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.path, "ctl")).st_mode), 0o660)
        self.assertEqual(stat.S_IMODE(os.stat(self.mgmt).st_mode), 0o640)
        self.assertIsInstance(service.node.engine, HubEngine)
        self.assertEqual(service.node.table.hashsize, 128)
        answer, _ = service.console.execute("port/showinfo")
        self.assertIn(b"HUB=true", answer)
        answer, _ = service.console.execute("ds/showinfo")
        self.assertIn(f"ctl dir {self.path}\nstd mode 0660\n".encode(), answer)

    def test_plugs(self):
        """
        C{--plug} networks become ports, shown with their VNL.
        """
        service = self.makeService("--plug", "null://", "--plug", "null://")
        service.startService()
        answer, _ = service.console.execute("port/print")
        self.assertIn(b"Port 0001 untagged_vlan=0000 ACTIVE", answer)
        self.assertIn(b"  -- endpoint ID 1000 module vdeplug     : null://\n", answer)
        self.assertIn(b"Port 0002 untagged_vlan=0000 ACTIVE", answer)

    def test_plugFailsAtOnce(self):
        """
        A C{--plug} that fails while starting fails the start, naming it;
        nothing is left behind.
        """
        service = self.makeService(
            "--plug", "null://",
            opener=lambda reactor, vnl, d, a: fail(VdeError("it broke", errno.EIO)),
        )
        error = self.assertRaises(VdeError, service.startService)
        self.assertIn("--plug null://: it broke", str(error))
        self.assertFalse(os.path.exists(self.path))
        self.assertFalse(service.running)

    def test_plugFailsLater(self):
        """
        A C{--plug} that fails after the start is logged as critical.
        """
        pending = Deferred()
        logs = LogCapture(self)
        service = self.makeService("--plug", "null://", opener=lambda *a: pending)
        service.startService()
        pending.errback(VdeError("timed out", errno.ETIMEDOUT))
        self.assertEqual(service.failed, "--plug null://: timed out")
        self.assertTrue(
            [e for e in logs.events if e.get("log_level") == LogLevel.critical
             and "--plug null://: timed out" in formatEvent(e)]
        )

    def test_plugAttachedLater(self):
        pending = Deferred()
        service = self.makeService("--plug", "mem://", opener=lambda *a: pending)
        service.startService()
        plug = MemoryPlug("memory")
        pending.callback(plug)
        self.assertIs(service.node.getPort(1).endpoints[0], plug)
        answer, _ = service.console.execute("port/print 1")
        self.assertIn(b"module vdeplug     : mem://", answer)
        d = service.stopService()
        return d.addCallback(lambda _: self.assertTrue(plug.closed))

    def test_stopWhileOpening(self):
        """
        Stopping while a C{--plug} is still opening cancels it quietly: it
        is not a failure.
        """
        pending = Deferred()
        service = self.makeService("--plug", "null://", opener=lambda *a: pending,
                                   standalone=True)
        service.startService()
        d = service.stopService()
        self.assertIsNone(service.failed)
        self.assertTrue(pending.called)
        self.assertEqual(service._pending, [])
        return d

    def test_rcfile(self):
        rc = os.path.join(tmpdir(self), "rc")
        with open(rc, "w") as f:
            f.write("vlan/create 12\nport/create 3\n")
        service = self.makeService("--rcfile", rc)
        service.startService()
        self.assertIn(12, service.node.vlans)
        self.assertIsNotNone(service.node.getPort(3))

    def levels(self, logs: LogCapture, text: str) -> list:
        """
        The levels of the events whose text contains C{text}.
        """
        return [e.get("log_level") for e in logs.events if text in formatEvent(e)]

    def test_rcfileFails(self):
        """
        Each failing rc file command is logged as an error with the file
        and line; the service records the failure (standalone, the process
        would stop with status 1).
        """
        logs = LogCapture(self)
        rc = os.path.join(tmpdir(self), "rc")
        self.writeRc(rc, "vlan/create 12\nport/setvlan 99 3\n")
        service = self.makeService("--rcfile", rc)
        service.startService()
        self.assertEqual(self.levels(logs, f"{rc}:2: port/setvlan 99 3: Invalid argument"),
                         [LogLevel.error])
        message = f"rc file {rc}: the command on line 2 failed; correct or remove it"
        self.assertEqual(service.failed, message)
        self.assertEqual(self.levels(logs, message), [LogLevel.critical])
        self.assertNotIn("ready", logs.text())
        # Embedded, the application decides: the process status is not set.
        self.assertEqual(service.exitStatus, 0)

    def test_plugRemovedIsNoDrop(self):
        """
        A C{--plug} port removed on purpose (L{Node.removePort}) is not
        reported as dropped; one whose network ends is (with C{--reconnect
        0}: the switch goes on without it).
        """
        logs = LogCapture(self)
        plugs = iter([MemoryPlug("one"), MemoryPlug("two")])
        service = self.makeService("--plug", "mem://1", "--plug", "mem://2", "--reconnect", "0",
                                   opener=lambda *a: succeed(next(plugs)))
        service.startService()
        service.node.removePort(service.node.getPort(1))
        self.assertEqual(self.levels(logs, "dropped"), [])
        service.node.getPort(2).endpoints[0].close()
        self.assertEqual(
            self.levels(logs, "--plug mem://2 (port 2) dropped: two closed;"
                              " the switch goes on without it"),
            [LogLevel.warn])
        self.assertEqual(service.plugs, [])

    def writeRc(self, path: str, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    def test_defaultRcfiles(self):
        """
        Without C{--rcfile} the first default rc file that exists runs (the
        user's before the system's), and the log says which.
        """
        logs = LogCapture(self)
        service = self.makeService()
        self.writeRc(self.systemRc, "vlan/create 8\n")
        service.startService()
        self.assertIn(8, service.node.vlans)
        self.assertIn(f"running the rc file {self.systemRc}", logs.text())
        d = service.stopService()

        def again(_):
            self.writeRc(self.userRc, "vlan/create 7\n")
            service.startService()
            self.assertIn(7, service.node.vlans)
            self.assertNotIn(8, service.node.vlans)
            self.assertIn(f"running the rc file {self.userRc}", logs.text())

        return d.addCallback(again)

    def test_noDefaultRcfile(self):
        """
        C{--rcfile=} runs no rc file, not even an existing default one.
        """
        logs = LogCapture(self)
        service = self.makeService("--rcfile=")
        self.writeRc(self.userRc, "vlan/create 7\n")
        service.startService()
        self.assertNotIn(7, service.node.vlans)
        self.assertNotIn("rc file", logs.text())

    def test_anotherSwitchThere(self):
        first = self.makeService()
        first.startService()
        options = parse("--switch", self.path)
        self.assertRaises(SystemExit, makeService, options)
        second = VdeSwitchService(options, reactor)
        error = self.assertRaises(VdeError, second.startService)
        self.assertIn("--switch", str(error))
        self.assertTrue(os.path.exists(os.path.join(self.path, "ctl")))

    def test_mgmtInUse(self):
        first = self.makeService()
        first.startService()
        other = os.path.join(self.dir, "other")
        second = VdeSwitchService(parse("--switch", other, "--mgmt", self.mgmt), reactor)
        error = self.assertRaises(VdeError, second.startService)
        self.assertIn("--mgmt", str(error))
        # The half-started switch was undone.
        self.assertFalse(os.path.exists(other))

    async def test_offloadOff(self):
        """
        With C{--offload=off} the server never agrees to vnet frames: our
        own client gets a plain plug and the port offloads nothing.
        """
        service = self.makeService("--offload=off")
        service.startService()
        plug = await openVNL(reactor, f"vde://{self.path}", "plain")
        self.addCleanup(plug.close)
        self.assertIs(type(plug), VdeClientPlug)
        (endpoint,) = service.server.endpoints.values()
        self.assertIs(type(endpoint), ServerEndpoint)
        self.assertEqual(endpoint.port.offloads, 0)

    def test_vdeClient(self):
        """
        Our C{vde://} client joins the service; the console shows it; stopping
        the service closes it.
        """
        service = self.makeService()
        service.startService()
        d = openVNL(reactor, f"vde://{self.path}", "console-test")

        def joined(plug):
            collector = FrameCollector()
            plug.startReceiving(collector)
            answer, _ = service.console.execute("port/print")
            self.assertIn(b"module unix prog   : console-test", answer)
            self.assertIn(f"Current User: {userName()} ".encode(), answer)
            stopped = service.stopService()

            def check(_):
                return deferLater(reactor, 0.2, lambda: None).addCallback(
                    lambda _: self.assertIsNotNone(collector.reason)
                )

            return stopped.addCallback(check)

        return d.addCallback(joined)

    def test_shutdownCommand(self):
        """
        C{shutdown} on the console, in process: the service stops, its
        sockets and directory go.  (Waited for: removing the test's
        directory first would fail the unlink of a stop still under way.)
        """
        service = self.makeService()
        service.startService()
        client = []

        def talk():
            c = ConsoleClient(self.mgmt)
            client.append(c)
            c.sock.sendall(b"shutdown\n")

        return deferLater(reactor, 0, lambda: None).addCallback(
            lambda _: deferToThread(talk)
        ).addCallback(lambda _: Deferred.fromCoroutine(
            until(lambda: service.node is None and not os.path.lexists(self.mgmt)
                  and not os.path.lexists(self.path), "the service to stop"))
        ).addCallback(
            lambda _: client[0].close()
        )


# -- the real thing ---------------------------------------------------------------


class ProcessTests(SynchronousTestCase):
    def test_clientsAndConsole(self):
        """
        Two C C{vde_plug}s through C{python -m twisted vde}: frames flow,
        the console shows the ports, counters and MAC table, and drives the
        VLANs; SIGTERM then stops everything cleanly.
        """
        sw = SwitchProcess(self, "-n", "8")
        console = ConsoleClient(sw.mgmt)
        self.assertTrue(console.greeting.startswith(b"VDE switch V.2.3.2"))
        self.assertTrue(console.greeting.endswith(b"\n\nvde$ "))
        one = cPlug(self, "one", sw.path)
        waitFor(lambda: b"Port 0001" in console.cmd("port/print"), "port 1", procs=[sw, one])
        two = cPlug(self, "two", sw.path)
        waitFor(lambda: b"Port 0002" in console.cmd("port/print"), "port 2", procs=[sw, two])
        frame = eth(BCAST, A)
        one.send(frame)
        self.assertEqual(two.recv(), frame)
        two.send(eth(A, B))
        self.assertEqual(one.recv(), eth(A, B))
        ports = console.cmd("port/print").decode()
        self.assertIn("Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable\n", ports)
        self.assertIn(f" Current User: {userName()} Access Control: (User: NONE - Group: NONE)\n", ports)
        self.assertIn(" IN:  pkts          1          bytes                   60\n", ports)
        self.assertIn(" DROP: in          0          out          0\n", ports)
        self.assertRegex(ports, rf"  -- endpoint ID \d{{4}} module unix prog   : vdeplug: user={userName()} pid=\d+\n")
        self.assertTrue(ports.endswith(".\n1000 Success\n"))
        table = console.cmd("hash/print").decode()
        self.assertIn("Addr: 02:00:00:00:00:01 VLAN 0000 to port: 001", table)
        self.assertIn("Hash: 0043 Addr: 02:00:00:00:00:01", table)
        # VLANs: port 1 untagged in VLAN 5, port 2 tagged.
        self.assertEqual(console.cmd("vlan/create 5"), b"1000 Success\n")
        self.assertEqual(console.cmd("port/setvlan 1 5"), b"1000 Success\n")
        self.assertEqual(console.cmd("vlan/addport 5 2"), b"1000 Success\n")
        one.send(frame)
        self.assertEqual(two.recv(), frame[:12] + b"\x81\x00\x00\x05" + frame[12:])
        self.assertEqual(console.cmd("bogus"), b"1038 Function not implemented\n")
        # Close port 2's endpoint from the console: its vde_plug sees EOF.
        ident = int(ports.split("Port 0002")[1].split("endpoint ID ")[1][:4])
        self.assertEqual(console.cmd(f"port/epclose 2 {ident}"), b"1000 Success\n")
        self.assertEqual(two.wait(), 0)
        self.assertIn(b"INACTIVE", console.cmd("port/allprint 2"))
        # SIGTERM: clients see EOF, sockets and directory go.
        self.assertIn(sw.stop(), (0, -signal.SIGTERM))
        self.assertEqual(one.wait(), 0)
        self.assertFalse(os.path.exists(sw.path))
        self.assertFalse(os.path.exists(sw.mgmt))
        log = sw.log()
        self.assertIn(f"port 1 connected: vdeplug: user={userName()} pid={one.pid}", log)
        self.assertIn(f"port 2 disconnected: vdeplug: user={userName()} pid={two.pid}", log)

    def test_vdeterm(self):
        """
        The C C{vdeterm} works with the console.
        """
        sw = SwitchProcess(self, "-n", "8")
        shown = runVdeterm(
            sw.mgmt,
            [
                ("port/showinfo", b"Success"),
                ("bogus", b"implemented"),
                ("vlan/print", b"Success"),
                ("logout", b"\n"),
            ],
        )
        text = shown.decode("utf-8", "replace").replace("\r", "")
        self.assertIn("VDE switch V.2.3.2", text)
        self.assertIn("Numports=8\nHUB=false\ncounters=true\nSuccess\n", text)
        self.assertIn("Function not implemented", text)
        self.assertIn("VLAN 0000\nSuccess", text)
        # The session ended; the switch is still there.
        self.assertIsNone(sw.process.poll())
        self.assertTrue(isListening(sw.mgmt))

    def test_asTheCSwitch(self):
        """
        Byte for byte the answers of the C C{vde_switch}, and C{unixcmd}
        gives the same output and exit status with both.
        """
        mac = "02:12:34:56:78:9a"
        ours = SwitchProcess(self, "-n", "8", "--macaddr", mac)
        theirs = CSwitch(self, "-n", "8", "--macaddr", mac)
        theirs.waitReady()
        commands = [
            "port/showinfo", "bogus", "port", "", "# comment", "helpfoo",
            "vlan/create 0", "vlan/create 5", "vlan/create 5", "vlan/create 4094",
            "vlan/print", "vlan/print 5", "vlan/print 7", "vlan/print 5000",
            "port/create 3", "port/create 3", "port/create 9", "port/setvlan 3 5",
            "port/setvlan 3 9", "port/setvlan 9 5", "port/setvlan 3",
            "vlan/addport 5 3", "vlan/addport 5 9", "vlan/addport 7 3",
            "vlan/allprint", "vlan/remove 5", "vlan/remove 9",
            "vlan/delport 5 3", "port/print", "port/print 3", "port/print 9",
            "port/allocatable 3 1", "port/remove 3", "port/remove 3",
            "hash/showinfo", "hash/setexpire 50", "hash/setminper 5", "hash/setsize 0",
            "hash/showinfo", "hash/print", "hash/find 02:00:00:00:00:09", "hash/find zz",
            "fstp/showinfo", "port/createauto", "port/epclose 1 99", "port/epclose 9 1",
            "port/resetcounter", "port/setuser 2 root", "vlan/remove 5",
        ]
        a, b = ConsoleClient(ours.mgmt), ConsoleClient(theirs.mgmt)
        for command in commands:
            self.assertEqual(a.cmd(command), b.cmd(command), f"command {command!r}")
        self.assertEqual(a.end(), b.end())
        unixcmd = cTool("unixcmd")
        for command in ["port/showinfo", "vlan/create 0", "vlan/print"]:
            results = []
            for sock in (ours.mgmt, theirs.mgmt):
                run = subprocess.run(
                    [unixcmd, "-f", "/etc/vde2/vdecmd", "-s", sock, *command.split()],
                    capture_output=True, timeout=TIMEOUT,
                )
                results.append((run.returncode, run.stdout))
            self.assertEqual(results[0], results[1], f"unixcmd {command}")

    def test_shutdownCommand(self):
        sw = SwitchProcess(self)
        console = ConsoleClient(sw.mgmt)
        self.assertEqual(console.end("shutdown"), b"9999 END OF SESSION")
        self.assertEqual(sw.wait(), 0)
        self.assertFalse(os.path.exists(sw.path))
        self.assertFalse(os.path.exists(sw.mgmt))
        self.assertIn("Shutdown from mgmt command", sw.log())

    def test_twistdSigterm(self):
        """
        C{twistd -n vde}: the default modes, and SIGTERM cleans up (the
        client, once connected, exits 0).
        """
        sw = SwitchProcess(self, "--plug", "null://", twistd=True)
        self.assertEqual(stat.S_IMODE(os.stat(sw.path).st_mode), 0o2700)
        plug = cPlug(self, "C vde_plug", sw.path)
        console = ConsoleClient(sw.mgmt)
        waitConnected(console, plug, 2, procs=[sw])
        answer = console.cmd("port/print 1").decode()
        self.assertIn("module vdeplug     : null://", answer)
        self.assertTrue(any(n.startswith("002.") for n in os.listdir(sw.path)))
        self.assertIn(sw.stop(), (0, -signal.SIGTERM))
        self.assertEqual(plug.wait(), 0)
        self.assertFalse(os.path.exists(sw.path))
        self.assertFalse(os.path.exists(sw.mgmt))
        self.assertIn("Server Shut Down", sw.log())

    def test_failingPlug(self):
        """
        A C{--plug} that cannot be opened: exit status 1, a message naming
        it, nothing left behind.
        """
        for twistd in (False, True):
            sw = SwitchProcess(
                self, "--plug", "cmd://no-such-program-vdetwist", twistd=twistd, wait=False
            )
            self.assertEqual(sw.wait(), 1)
            self.assertIn("--plug cmd://no-such-program-vdetwist", sw.log())
            self.assertFalse(os.path.exists(sw.path))
            self.assertFalse(os.path.exists(sw.mgmt))

    def test_usageError(self):
        sw = SwitchProcess(self, "--numports", "lots", wait=False)
        self.assertNotEqual(sw.wait(), 0)
        self.assertIn("--numports: expected a number of ports", sw.log())
        sw = SwitchProcess(self, "--group", "no-such-group-xyz", twistd=True, wait=False)
        self.assertNotEqual(sw.wait(), 0)
        self.assertIn("--group: no such group", sw.log())

    def test_plugFailingLater(self):
        """
        A C{--plug} that fails after the start (a switch that never answers:
        our client gives up after its reply timeout) stops the process with
        exit status 1 and a message naming it; everything is cleaned up.
        """
        d = tmpdir(self)
        silent = os.path.join(d, "silent")
        os.mkdir(silent)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(os.path.join(silent, "ctl"))
        listener.listen(5)
        sw = SwitchProcess(self, "--plug", f"vde://{silent}", twistd=True)
        self.assertEqual(sw.wait(timeout=TIMEOUT + 5), 1)
        self.assertIn(f"--plug vde://{silent}", sw.log())
        self.assertFalse(os.path.exists(sw.path))
        self.assertFalse(os.path.exists(sw.mgmt))


class MacFloodProcessTests(SynchronousTestCase):
    """
    Issue 8, defect 3, on the real switch: C{python -m twisted vde}, four
    vde2 clients on real sockets, 100,000 frames from ever new source MACs
    on port 1 (they used to fill the table, after which new stations were
    never learned and their unicast reached every port).
    """

    def join(self, sw: SwitchProcess) -> RawClient:
        client = RawClient(sw.path)
        self.addCleanup(client.close)
        client.request()
        sw.waitFor(client.poll, "the switch's reply")
        client.finish()
        return client

    def flood(self, sw: SwitchProcess, console: ConsoleClient, client: RawClient,
              first: int, count: int) -> None:
        """
        Send C{count} broadcasts from new source MACs: blocking, so the
        switch takes every one; then wait until it has counted them all.
        """
        client.data.settimeout(TIMEOUT)
        send = client.data.send
        for i in range(first, first + count):
            send(eth(BCAST, b"\x0a" + i.to_bytes(5, "big")))
        client.data.setblocking(False)
        pkts = f" IN:  pkts {first + count:10d} ".encode()
        sw.waitFor(lambda: pkts in console.cmd("port/print 1"), "the switch to take the flood")

    def stationsTalk(self, sw: SwitchProcess, console: ConsoleClient,
                     flooder: RawClient, a: RawClient, b: RawClient, watcher: RawClient) -> None:
        """
        After the flood, the new stations A and B announce themselves and
        exchange 200 unicast frames each way: each gets the other's, and no
        other port sees any.
        """
        C = bytes.fromhex("020000000003")
        # The flood filled every port's queues: empty them.
        clients = (flooder, a, b, watcher)
        quiet = [0.0]

        def drained() -> bool:
            if any([c.recvAll() for c in clients]):
                quiet[0] = time.monotonic()
            return time.monotonic() - quiet[0] > 0.3

        sw.waitFor(drained, "the flood's last frames")
        a.data.send(eth(BCAST, A))
        b.data.send(eth(BCAST, B))
        for mac, port in [(A, 2), (B, 3)]:
            sw.waitFor(
                lambda: f"to port: {port:03d}".encode() in console.cmd(f"hash/find {formatMac(mac)}"),
                f"{formatMac(mac)} to be learned on port {port}",
            )

        def unicast(client: RawClient) -> bytes:
            # Broadcasts (the flood's last, the announcements) are skipped.
            client.data.settimeout(TIMEOUT)
            while True:
                frame = client.data.recv(65536)
                if frame[:6] != BCAST:
                    client.data.setblocking(False)
                    return frame

        ab, ba = eth(B, A), eth(A, B)
        for _ in range(200):
            a.data.send(ab)
            self.assertEqual(unicast(b), ab)
            b.data.send(ba)
            self.assertEqual(unicast(a), ba)
        # Anything flooded to the others was queued before this broadcast.
        a.data.send(eth(BCAST, C))
        for client in (watcher, flooder):
            seen = []
            sw.waitFor(lambda: seen.extend(client.recvAll()) or eth(BCAST, C) in seen,
                       "the last broadcast")
            self.assertEqual([f for f in seen if f[:6] != BCAST], [])

    def test_portLimit(self):
        """
        With the default options the flood recycles its own port's 16,384
        entries.
        """
        sw = SwitchProcess(self)
        console = ConsoleClient(sw.mgmt)
        self.addCleanup(console.close)
        clients = [self.join(sw) for _ in range(4)]
        self.flood(sw, console, clients[0], 0, 100000)
        self.assertIn(b"holds 16384 addresses, its limit", sw.log().encode())
        self.assertIn(b"1019 No such device", console.cmd("hash/find 0a:00:00:00:00:00"))
        self.assertIn(b"to port: 001", console.cmd("hash/find 0a:00:00:01:86:9f"))
        self.stationsTalk(sw, console, *clients)

    def test_fullTable(self):
        """
        Without a port limit the flood fills the 65,536 entries, then
        recycles its own; an entry costs under 120 bytes of the switch's
        resident memory (C's vde_switch: ~47; an object and a time per
        entry made it ~160).
        """
        sw = SwitchProcess(self, "--macsperport", "0")
        console = ConsoleClient(sw.mgmt)
        self.addCleanup(console.close)
        clients = [self.join(sw) for _ in range(4)]
        before = rssBytes(sw.process.pid)
        self.flood(sw, console, clients[0], 0, 60000)
        perEntry = (rssBytes(sw.process.pid) - before) / 60000
        self.assertLess(perEntry, 120)
        self.flood(sw, console, clients[0], 60000, 40000)
        self.assertIn(b"MAC table full (65536 addresses)", sw.log().encode())
        self.stationsTalk(sw, console, *clients)


# -- the stdin console and the rc file -----------------------------------------------


def cStdinSwitch(test, *args: str) -> StdioConsole:
    """
    The C C{vde_switch} driven through its stdin console (no rc file,
    C{HOME} a fresh directory).
    """
    d = tmpdir(test, "vtsw-")
    with open(os.path.join(d, "log"), "wb") as log:
        process = subprocess.Popen(
            [cTool("vde_switch"), "-s", os.path.join(d, "sw"), "-f", "/dev/null", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            env=dict(os.environ, HOME=d),
        )
    console = StdioConsole(process, "C vde_switch")

    def stop():
        if process.poll() is None:
            process.kill()
            process.wait()
        console.close()

    test.addCleanup(stop)
    return console


def runOnTerminal(test, argv: list[str], env: dict, lines: list[str]) -> tuple[bytes, int, str]:
    """
    Run C{argv} with a terminal on stdin and stdout (stderr to a file),
    type C{lines} one by one, each after the answer to the previous (a
    prompt, or for C{logout} only its echo), then end stdin with ^D.

    @return: (what the terminal showed before ^D, the exit status, stderr).
    """
    errPath = os.path.join(tmpdir(test), "stderr")
    err = os.open(errPath, os.O_WRONLY | os.O_CREAT, 0o600)
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.dup2(err, 2)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(err)
    shown = b""

    def readUntil(marker: bytes, count: int) -> None:
        nonlocal shown
        deadline = time.monotonic() + TIMEOUT
        while shown.count(marker) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv[0]}: waiting for {marker!r} in {shown!r}")
            if select.select([fd], [], [], 0.1)[0]:
                shown += os.read(fd, 4096)

    try:
        prompts = 0
        for line in lines:
            os.write(fd, line.encode() + b"\n")
            if line == "logout":
                readUntil(b"logout\r\n", 1)
            else:
                prompts += 1
                readUntil(b"vde$ ", prompts)
        transcript = shown
        os.write(fd, b"\x04")
        deadline = time.monotonic() + TIMEOUT
        while True:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    os.read(fd, 4096)
                except OSError:
                    pass
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv[0]} did not exit after ^D")
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    with open(errPath, "rb") as f:
        return transcript, os.waitstatus_to_exitcode(status), f.read().decode("utf-8", "replace")


class StdinConsoleTests(SynchronousTestCase):
    """
    C{--console}: stdin is a console as vde_switch's foreground one.
    """

    def test_commands(self):
        """
        The management commands on stdin, answers on stdout (no prompt on a
        pipe), the same switch as the mgmt console sees; C{logout} does
        nothing; EOF stops the switch as SIGTERM does: status 0, clients
        see the end, sockets and directory are gone.
        """
        sw = SwitchProcess(self, "-n", "8", console=True)
        console = sw.stdio
        self.assertEqual(console.cmd("vlan/create 5"), b"1000 Success\n")
        self.assertEqual(
            console.cmd("port/showinfo"),
            b"0000 DATA END WITH '.'\nNumports=8\nHUB=false\ncounters=true\n.\n1000 Success\n",
        )
        self.assertEqual(
            console.cmd("help vlan/cr"),
            b"0000 DATA END WITH '.'\n"
            b"COMMAND PATH       SYNTAX          HELP\n"
            b"------------       --------------  ------------\n"
            b"vlan/create        N               create the VLAN with tag N\n"
            b".\n1000 Success\n",
        )
        self.assertEqual(console.cmd("bogus"), b"1038 Function not implemented\n")
        console.send(b"logout\n")
        self.assertEqual(console.cmd("vlan/print 5"),
                         b"0000 DATA END WITH '.'\nVLAN 0005\n.\n1000 Success\n")
        mgmt = ConsoleClient(sw.mgmt)
        self.addCleanup(mgmt.close)
        self.assertIn(b"VLAN 0005\n", mgmt.cmd("vlan/print"))
        plug = cPlug(self, "C vde_plug", sw.path)
        waitConnected(console, plug, 1, procs=[sw])
        self.assertIn(f"module unix prog   : vdeplug: user={userName()} pid={plug.pid}\n".encode(),
                      console.cmd("port/print 1"))
        self.assertEqual(console.end(), b"")
        self.assertEqual(sw.wait(), 0)
        self.assertEqual(plug.wait(), 0, plug.describe())
        self.assertFalse(os.path.exists(sw.path))
        self.assertFalse(os.path.exists(sw.mgmt))
        self.assertIn("EOF on stdin, cleaning up and exiting", sw.log())

    def test_shutdown(self):
        """
        C{shutdown} exits at once, without an answer; the answers before it
        are all written, and nothing after it runs.
        """
        sw = SwitchProcess(self, console=True)
        sw.stdio.send(b"vlan/create 5\nport/showinfo\nshutdown\nvlan/create 6\n")
        self.assertEqual(sw.wait(), 0)
        self.assertEqual(
            sw.stdio.end(),
            b"1000 Success\n"
            b"0000 DATA END WITH '.'\nNumports=32\nHUB=false\ncounters=true\n.\n1000 Success\n",
        )
        self.assertFalse(os.path.exists(sw.path))
        self.assertFalse(os.path.exists(sw.mgmt))
        self.assertIn("Shutdown from mgmt command", sw.log())

    def test_asTheCSwitch(self):
        """
        Byte for byte what the C C{vde_switch} answers on a piped stdin.
        """
        mac = "02:12:34:56:78:9a"
        ours = SwitchProcess(self, "-n", "8", "--macaddr", mac, console=True).stdio
        theirs = cStdinSwitch(self, "-n", "8", "--macaddr", mac)
        for command in [
            "vlan/create 5", "vlan/create 5", "vlan/create 0", "port/showinfo", "bogus",
            "port", "helpport/set", "port/create 3", "port/setvlan 3 5", "port/setvlan 9 5",
            "vlan/allprint", "vlan/print 7", "hash/showinfo", "hash/print",
            "fstp/showinfo", "port/createauto", "debug/list port/ep",
        ]:
            self.assertEqual(ours.cmd(command), theirs.cmd(command), f"command {command!r}")
        self.assertEqual(ours.end(), theirs.end())
        self.assertEqual(ours.process.wait(TIMEOUT), 0)
        self.assertEqual(theirs.process.wait(TIMEOUT), 0)

    def test_terminal(self):
        """
        On a terminal the prompt follows each answer (and empty lines), as
        the C C{vde_switch} shows it; C{logout} shows nothing; ^D ends it.
        """
        lines = ["vlan/create 5", "", "logout", "bogus", "vlan/print 5"]
        ourDir = tmpdir(self)
        ours = runOnTerminal(
            self,
            [sys.executable, "-m", "twisted", "--log-format=text", "--log-file=+", "vde",
             "--switch", os.path.join(ourDir, "sw"), "--rcfile=", "--console"],
            ourEnv(HOME=ourDir), lines,
        )
        cDir = tmpdir(self)
        theirs = runOnTerminal(
            self,
            [cTool("vde_switch"), "-s", os.path.join(cDir, "sw"), "-f", "/dev/null"],
            dict(os.environ, HOME=cDir), lines,
        )
        self.assertEqual(ours[0], theirs[0])
        self.assertIn(b"vlan/create 5\r\n1000 Success\r\n\r\nvde$ \r\n\r\nvde$ logout\r\nbogus\r\n",
                      ours[0])
        self.assertEqual((ours[1], theirs[1]), (0, 0))
        self.assertIn("EOF on stdin, cleaning up and exiting", ours[2])
        self.assertIn("EOF on stdin, cleaning up and exiting", theirs[2])
        self.assertFalse(os.path.exists(os.path.join(ourDir, "sw")))

    def test_refusedWhenDaemonizing(self):
        """
        twistd without C{-n} would daemonize and lose stdin: refused before
        anything is made.
        """
        d = tmpdir(self)
        run = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--pidfile=", "vde", "--switch", os.path.join(d, "sw"), "--console"],
            stdin=subprocess.DEVNULL, capture_output=True, env=ourEnv(HOME=d), cwd=d,
            timeout=TIMEOUT,
        )
        self.assertNotEqual(run.returncode, 0)
        self.assertIn(b"--console needs twistd -n", run.stdout + run.stderr)
        self.assertEqual(os.listdir(d), [])


class DefaultRcfileProcessTests(SynchronousTestCase):
    """
    Without C{--rcfile}, C{~/.vde2/vde_switch.rc} runs, as in vde_switch.
    """

    def makeHome(self) -> tuple[str, str]:
        home = tmpdir(self)
        os.mkdir(os.path.join(home, ".vde2"))
        rc = os.path.join(home, ".vde2", "vde_switch.rc")
        with open(rc, "w") as f:
            f.write("# made by the test\nvlan/create 7\n")
        return home, rc

    def test_userRcfile(self):
        home, rc = self.makeHome()
        sw = SwitchProcess(self, rcfile=None, home=home)
        console = ConsoleClient(sw.mgmt)
        self.addCleanup(console.close)
        self.assertEqual(console.cmd("vlan/print 7"),
                         b"0000 DATA END WITH '.'\nVLAN 0007\n.\n1000 Success\n")
        self.assertIn(f"running the rc file {rc}", sw.log())

    def test_emptyRcfileSkips(self):
        home, rc = self.makeHome()
        sw = SwitchProcess(self, rcfile="", home=home)
        console = ConsoleClient(sw.mgmt)
        self.addCleanup(console.close)
        self.assertEqual(console.cmd("vlan/print 7"),
                         b"0000 DATA END WITH '.'\n.\n1006 No such device or address\n")
        self.assertNotIn("running the rc file", sw.log())

    def test_shutdownInRcfile(self):
        """
        C{shutdown} in the rc file ends the switch once it is up, cleanly,
        as vde_switch exits there.
        """
        home, rc = self.makeHome()
        with open(rc, "a") as f:
            f.write("shutdown\nvlan/create 8\n")
        sw = SwitchProcess(self, rcfile=None, home=home, wait=False)
        self.assertEqual(sw.wait(), 0, sw.log())
        self.assertIn("Shutdown from script", sw.log())
        self.assertFalse(os.path.exists(sw.path), sw.log())


class TacExampleTests(SynchronousTestCase):
    """
    C{docs/examples/switches.tac}: two switches and the cable between them
    as services of one C{twistd -ny} process.
    """

    def test_twoSwitches(self):
        directory = tmpdir(self)
        tac = os.path.join(ROOT, "docs", "examples", "switches.tac")
        log = os.path.join(directory, "twistd.log")
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                 "-ny", tac, "--pidfile=", "--logfile=-"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=ourEnv(VDE_DIR=directory, HOME=directory), cwd=directory,
            )

        def kill():
            if process.poll() is None:
                process.kill()
                process.wait()

        self.addCleanup(kill)

        def logText() -> str:
            with open(log, "rb") as f:
                return f.read().decode("utf-8", "replace")

        lan, dmz = (os.path.join(directory, name) for name in ("lan", "dmz"))
        process.name = "twistd -ny switches.tac"
        process.running = lambda: process.poll() is None
        process.describe = lambda: f"\n--- {process.name} log:\n{logText()}"
        waitFor(lambda: isListening(lan + ".mgmt") and isListening(dmz + ".mgmt"),
                "both switches", procs=[process], failIfEnded=True)
        console = ConsoleClient(lan + ".mgmt")
        self.addCleanup(console.close)
        # The dmz switch is the lan switch's first port.
        waitFor(lambda: b"Port 0001" in console.cmd("port/print"), "the cable",
                procs=[process], failIfEnded=True)
        one = cPlug(self, "C vde_plug on lan", lan)
        two = cPlug(self, "C vde_plug on dmz", dmz)
        waitFor(lambda: b"Port 0002" in console.cmd("port/print"), "the plug on lan",
                procs=[one])
        # Across the cable both ways: a broadcast, then unicast to what was
        # learned.  The dmz plug's port may still be joining: repeat the
        # broadcast until it arrives.
        frame = eth(BCAST, A)
        waitFor(lambda: one.send(frame) or two.recv(0.2) == frame, "a broadcast lan -> dmz",
                procs=[one, two])
        two.send(eth(A, B))
        self.assertEqual(one.recv(), eth(A, B))
        one.send(eth(B, A, 100))
        # (after any late copy of the probe broadcast)
        two.waitFor(lambda: eth(B, A, 100) in list(two.frames), "the unicast lan -> dmz")
        # twistd ends by re-raising the signal it stopped for.
        process.send_signal(signal.SIGTERM)
        self.assertIn(process.wait(TIMEOUT), (0, -signal.SIGTERM), logText())
        self.assertFalse(os.path.exists(lan) or os.path.exists(dmz), logText())


# -- start errors: one line on stderr ------------------------------------------------

#: Root without the capabilities that bypass file permissions: file access
#: as for any user who owns nothing of the test's (the interpreter, root's,
#: stays usable).
NO_DAC_OVERRIDE = ["--bounding-set=-dac_override,-dac_read_search,-fowner,-chown"]


def runFailing(test, *args: str, twistd: bool, prefix: tuple = (), cwd: Optional[str] = None):
    """
    C{twistd -n vde ...} (with its default pid file) or C{python -m
    twisted vde ...}, expected to end at once; its status, stdout and
    stderr apart.
    """
    if twistd:
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                "vde"]
    else:
        argv = [sys.executable, "-m", "twisted", "--log-format=text", "vde"]
    home = tmpdir(test)
    return subprocess.run(
        [*prefix, *argv, "--rcfile=", *args], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, env=ourEnv(HOME=home), cwd=cwd or home, timeout=60,
    )


class StartErrorTests(SynchronousTestCase):
    """
    A switch that cannot start says why in one line on stderr, naming the
    option, the path or endpoint and the problem, and leaves nothing
    behind (issues 8 and 9).
    """

    def assertOneLine(self, result, *words: str) -> str:
        where = f"\n--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}"
        self.assertEqual(result.returncode, 1, where)
        self.assertNotIn("Traceback", result.stdout + result.stderr, where)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, where)
        self.assertTrue(lines[0].startswith("twistd vde: "), where)
        for word in words:
            self.assertIn(word, lines[0], where)
        return lines[0]

    def test_anotherUsersDirectory(self):
        """
        A switch directory of another user (a real one, made for the test):
        refused before anything is touched, by root and by a user (root
        without the capabilities that bypass file permissions); with
        C{--force-dir} that user fails at once, in one line too.
        """
        user = makeUser(self)
        path = os.path.join(tmpdir(self), "sw")
        os.mkdir(path)
        os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(path, 0o2700)
        drop = [requireCommand("setpriv", "util-linux"), *NO_DAC_OVERRIDE]
        for twistd in (True, False):
            for prefix in ((), drop):
                result = runFailing(self, "--switch", path, twistd=twistd, prefix=prefix)
                self.assertOneLine(
                    result, f"--switch {path}: {path} belongs to {user.pw_name} "
                    f"(uid {user.pw_uid})", "replace the ctl socket", "--force-dir",
                )
        self.assertEqual(os.listdir(path), [])
        st = os.stat(path)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (user.pw_uid, 0o2700))
        for twistd in (True, False):
            result = runFailing(self, "--switch", path, "--force-dir", twistd=twistd, prefix=drop)
            self.assertOneLine(result, f"--switch {path}: cannot set the owner or mode of {path}: "
                               "Operation not permitted")

    def test_writableDirectory(self):
        """
        A directory anybody may write to, for a switch that asks for 2700.
        """
        path = os.path.join(tmpdir(self), "sw")
        os.mkdir(path)
        os.chmod(path, 0o777)
        for twistd in (True, False):
            self.assertOneLine(
                runFailing(self, "--switch", path, twistd=twistd),
                f"--switch {path}: {path} is writable by others (mode 0777", "--force-dir",
            )
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o777)

    def test_busyListen(self):
        """
        C{--listen} on a TCP port another program listens on: the endpoint
        and the cause in one line (it was a 27-line traceback); the switch
        directory and twistd's pid file are removed.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        endpoint = f"tcp:{port}:interface=127.0.0.1"
        for twistd in (True, False):
            d = tmpdir(self)
            result = runFailing(self, "--switch", os.path.join(d, "sw"), "--listen", endpoint,
                                twistd=twistd, cwd=d)
            self.assertOneLine(
                result, f"--listen {endpoint}: cannot listen on 127.0.0.1:{port}: "
                "Address already in use",
            )
            self.assertEqual(os.listdir(d), [])

    def test_defaultSwitchOfAnotherUser(self):
        """
        Issue 9's case: C{/tmp/vde.ctl} belongs to another user (a fresh
        C{/tmp} and C{/run} in a mount namespace of the test's).  Our
        C{vde_plug} says C{Permission denied} as the C one does, on the same
        first line, and names the path; C{twistd vde} refuses the directory
        in one line.
        """
        user = makeUser(self)
        unshare = requireCommand("unshare", "util-linux")
        setpriv = requireCommand("setpriv", "util-linux")
        # A checkout under /tmp or /run (a clone CI or a user made there)
        # stays visible: bound back in from a descriptor opened before.
        script = (
            'exec 9<"$2" && mount -t tmpfs vt-tmp /tmp && mount -t tmpfs vt-run /run '
            '&& chmod 1777 /tmp && case "$2" in /tmp/*|/run/*) mkdir -p "$2" '
            '&& mount --no-canonicalize --bind "/proc/$$/fd/9" "$2";; esac '
            '&& mkdir -m 2700 /tmp/vde.ctl && chown "$1" /tmp/vde.ctl && shift 2 && cd /tmp '
            '&& exec "$@" 9<&-'
        )

        def run(*argv: str):
            result = subprocess.run(
                [unshare, "--mount", "sh", "-c", script, "sh", f"{user.pw_uid}:{user.pw_gid}",
                 ROOT, setpriv, *NO_DAC_OVERRIDE, *argv],
                capture_output=True, text=True, stdin=subprocess.DEVNULL, env=ourEnv(),
                timeout=60,
            )
            if result.stderr.startswith(("unshare:", "mount:")):
                raise SkipTest(f"no private mount namespace here: {result.stderr.strip()}")
            return result

        c, ours = run(cTool("vde_plug")), run(*ourTool("vde_plug"))
        self.assertEqual(c.stderr.splitlines(), ["vde_open default switch: Permission denied"])
        self.assertEqual((ours.returncode, ours.stderr.splitlines()[0]),
                         (c.returncode, c.stderr.splitlines()[0]), ours.stderr)
        self.assertIn("/tmp/vde.ctl/ctl: Permission denied", ours.stderr)
        self.assertNotIn("Traceback", ours.stderr)
        twistd = run(sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                     "--pidfile=", "vde", "--rcfile=", "--switch", "/tmp/vde.ctl")
        self.assertOneLine(twistd, f"/tmp/vde.ctl belongs to {user.pw_name}")
