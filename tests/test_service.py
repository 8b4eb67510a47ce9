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
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import (
    TIMEOUT, ConsoleClient, CSwitch, LogCapture, cPlug, cTool, isListening, ourEnv, tmpdir,
    until, waitFor,
)
from vdetwist.errors import VdeError
from vdetwist.node import HubEngine, SwitchEngine
from vdetwist.registry import openVNL
from vdetwist.service import Options, VdeSwitchService, defaultSwitchPath, makeService
from vdetwist.testing import FrameCollector, MemoryPlug

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6


def eth(dst, src, size=60):
    return dst + src + b"\x88\xb5" + bytes(range(size - 14))


def parse(*argv) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class SwitchProcess:
    """
    C{python -m twisted vde ...} (or C{twistd -n vde ...}) as a process,
    with a management socket.
    """

    def __init__(self, testcase, *args: str, twistd: bool = False, mgmt: bool = True,
                 wait: bool = True) -> None:
        self.dir = tmpdir(testcase)
        self.path = os.path.join(self.dir, "sw")
        self.mgmt = os.path.join(self.dir, "mgmt") if mgmt else None
        self.name = "twistd vde" if twistd else "python -m twisted vde"
        if twistd:
            argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                    "-n", "--pidfile=", "vde"]
        else:
            argv = [sys.executable, "-m", "twisted", "--log-format=text", "vde"]
        argv += ["--switch", self.path]
        if mgmt:
            argv += ["--mgmt", self.mgmt]
        argv += list(args)
        self.logPath = os.path.join(self.dir, "log")
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=ourEnv(), cwd=self.dir,
            )
        testcase.addCleanup(self.kill)
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
            "-g", "0", "--mgmtgroup", "root",
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
        self.dir = tmpdir(self)
        self.path = os.path.join(self.dir, "sw")
        self.mgmt = os.path.join(self.dir, "mgmt")
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
        d = service.stopService()

        def stopped(_):
            self.assertFalse(os.path.exists(self.path))
            self.assertFalse(os.path.exists(self.mgmt))

        return d.addCallback(stopped)

    def test_modesAndHub(self):
        service = self.makeService("-m", "660", "-g", "0", "--mgmtmode", "640", "-x",
                                   "--hashsize", "100")
        service.startService()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o2770)
        self.assertEqual(os.stat(self.path).st_gid, 0)
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
            self.assertIn(b"Current User: root", answer)
            stopped = service.stopService()

            def check(_):
                return deferLater(reactor, 0.2, lambda: None).addCallback(
                    lambda _: self.assertIsNotNone(collector.reason)
                )

            return stopped.addCallback(check)

        return d.addCallback(joined)

    def test_shutdownCommand(self):
        """
        C{shutdown} on the console, in process: the service stops.
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
            until(lambda: service.node is None, "the service to stop"))
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
        self.assertIn(" Current User: root Access Control: (User: NONE - Group: NONE)\n", ports)
        self.assertIn(" IN:  pkts          1          bytes                   60\n", ports)
        self.assertIn(" DROP: in          0          out          0\n", ports)
        self.assertRegex(ports, r"  -- endpoint ID \d{4} module unix prog   : vdeplug: user=root pid=\d+\n")
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
        self.assertIn("port 1 connected: vdeplug: user=root", log)
        self.assertIn("port 2 disconnected: vdeplug: user=root", log)

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
        C{twistd -n vde}: the default modes, and SIGTERM cleans up.
        """
        sw = SwitchProcess(self, "--plug", "null://", twistd=True)
        self.assertEqual(stat.S_IMODE(os.stat(sw.path).st_mode), 0o2700)
        plug = cPlug(self, "C vde_plug", sw.path)
        console = ConsoleClient(sw.mgmt)
        waitFor(lambda: b"Port 0002" in console.cmd("port/print"), "the client", procs=[sw, plug])
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
