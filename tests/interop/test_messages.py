"""
The one-line messages a user gets instead of silence or a traceback, each
checked in a real process: the line itself, the exit status, and no
traceback anywhere in the output.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import subprocess
import sys
from typing import Optional, Sequence

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import (
    ROOT, TIMEOUT, ConsoleClient, ourEnv, ourTool, requireCommand, tmpdir,
)
from tests.interop.test_service import SwitchProcess
from tests.project.test_version import TWISTD


def run(argv: Sequence[str], env: Optional[dict] = None, **kwargs) -> subprocess.CompletedProcess:
    """
    Run C{argv} to its end (bounded), stdin empty, output as text.
    """
    return subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=TIMEOUT * 2, env=ourEnv() if env is None else env, **kwargs,
    )


class OneLineMixin:
    """
    Checks of a finished process' output.
    """

    def assertOneLine(self, result: subprocess.CompletedProcess, line: str,
                      status: Optional[int] = 1, stream: str = "stderr") -> None:
        """
        C{line} is a whole line of C{stream}, the process exited with
        C{status} (C{None}: any), and nothing printed a traceback.
        """
        output = getattr(result, stream)
        everything = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        self.assertNotIn("Traceback", result.stdout + result.stderr, everything)
        self.assertIn(line, output.splitlines(), everything)
        if status is not None:
            self.assertEqual(result.returncode, status, everything)


class SlirpForwardTests(OneLineMixin, TestCase):
    def busyForward(self) -> tuple[str, str]:
        """
        A slirp VNL whose forward's host port is busy, and the problem.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        return (f"slirp:///tcpfwd={port}:10.0.2.15:80",
                f"tcpfwd: cannot listen on 0.0.0.0:{port}: Address already in use;"
                " choose another host port")

    def test_busyPort(self) -> None:
        """
        A forward whose host port is busy fails the open, naming the port.
        """
        vnl, problem = self.busyForward()
        result = run(ourTool("vde_plug") + [vnl, "null://"])
        self.assertOneLine(result, f"vde_plug: {vnl}: {problem}")

    def test_busyPortOfSwitch(self) -> None:
        """
        ... and the start of a switch that plugs it.
        """
        vnl, problem = self.busyForward()
        work = tmpdir(self)
        result = run([*TWISTD, "-n", "--pidfile=", "vde", "--switch", os.path.join(work, "sw"),
                      "--rcfile=", "--plug", vnl], cwd=work)
        self.assertOneLine(result, f"twistd vde: --plug {vnl}: {problem}")

    def test_malformed(self) -> None:
        """
        A malformed forward fails the open, naming the option and the form.
        """
        vnl = "slirp:///tcpfwd=8091:10.0.2.15"
        result = run(ourTool("vde_plug") + [vnl, "null://"])
        self.assertOneLine(
            result,
            f"vde_plug: {vnl}: tcpfwd=8091:10.0.2.15: 2 fields, not 3 or 4; "
            "expected [HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT, e.g. 8080:10.0.2.15:80")


class VxvdeTests(OneLineMixin, TestCase):
    def test_badVni(self) -> None:
        """
        A C{vni} that is neither a number nor a group is an error (C reads it
        as VNI 1).
        """
        vnl = "vxvde://239.0.0.1/vni=foo"
        result = run(ourTool("vde_plug") + [vnl, "null://"])
        self.assertOneLine(
            result,
            f"vde_plug: {vnl}: vni=foo: neither a number nor the name of a group; "
            "give a number, a group name, or nothing (your own group)")


class SwitchTests(OneLineMixin, TestCase):
    """
    C{twistd vde}'s messages, in its log (twistd -n logs to stdout).
    """

    def assertLogLine(self, sw: SwitchProcess, level: str, text: str) -> None:
        """
        The switch logged C{text} at C{level} from L{vdetwist.service}, and
        no traceback.
        """
        log = sw.log()
        self.assertNotIn("Traceback", log)
        suffix = f" [vdetwist.service#{level}] {text}"
        self.assertTrue([l for l in log.splitlines() if l.endswith(suffix)],
                        f"no line ending with {suffix!r} in:\n{log}")

    def test_rcfileErrors(self) -> None:
        """
        Each failing rc file command is an error naming the file and line;
        the switch then stops with status 1 (vde_switch goes on silently).
        """
        rc = os.path.join(tmpdir(self), "rc")
        with open(rc, "w") as f:
            f.write("vlan/create 5\nfoo/bar\n# a comment\nvlan/create 5\n")
        sw = SwitchProcess(self, twistd=True, rcfile=rc, wait=False)
        self.assertEqual(sw.wait(), 1, sw.log())
        self.assertLogLine(sw, "error", f"{rc}:2: foo/bar: no such command")
        self.assertLogLine(sw, "error", f"{rc}:4: vlan/create 5: VLAN 5 exists")
        self.assertLogLine(sw, "critical", f"rc file {rc}: the commands on lines 2, 4 failed;"
                                           " correct or remove them; stopping")
        self.assertFalse(os.path.exists(sw.path), "the switch cleaned up")

    def test_plugDropsReopened(self) -> None:
        """
        By default a C{--plug} network that ends is a warning naming it, why,
        and when it is reopened.
        """
        failing = 'cmd://sh -c "sleep 1; exit 3"'
        sw = SwitchProcess(self, "--plug", failing)
        sw.waitFor(lambda: "dropped:" in sw.log(), "the plug to drop")
        self.assertLogLine(
            sw, "warn",
            f"--plug {failing} (port 1) dropped: the command exited with status 3;"
            " reopening it in 1 s")

    def test_plugDrops(self) -> None:
        """
        With C{--reconnect 0}, a C{--plug} network that ends is an error
        naming it and why (a warning when it ended cleanly); the switch goes
        on without it.
        """
        failing = 'cmd://sh -c "sleep 1; exit 3"'
        ending = "cmd://sh -c 'sleep 1'"
        sw = SwitchProcess(self, "--reconnect", "0", "--plug", failing, "--plug", ending)
        sw.waitFor(lambda: sw.log().count("dropped:") == 2, "both plugs to drop")
        self.assertLogLine(
            sw, "error",
            f"--plug {failing} (port 1) dropped: the command exited with status 3;"
            " the switch goes on without it")
        self.assertLogLine(
            sw, "warn",
            f"--plug {ending} (port 2) dropped: end of stream; the switch goes on without it")
        console = ConsoleClient(sw.mgmt)
        self.addCleanup(console.close)
        self.assertEqual(console.cmd("vlan/create 5"), b"1000 Success\n")
        self.assertTrue(sw.running(), sw.log())


class ExampleTests(OneLineMixin, TestCase):
    """
    The examples in docs/examples say what to change in one line.
    """

    def test_tacDirectoryMissing(self) -> None:
        missing = os.path.join(tmpdir(self), "missing", "vde")
        tac = os.path.join(ROOT, "docs", "examples", "switches.tac")
        result = run(
            [*TWISTD, "-ny", tac, "--pidfile="],
            env=ourEnv(VDE_DIR=missing), cwd=tmpdir(self))
        self.assertOneLine(
            result,
            f"switches.tac: --switch {missing}/lan: the parent directory {missing} does not"
            f" exist; set VDE_DIR to another directory (now {missing})")

    def test_l2chat(self) -> None:
        script = os.path.join(ROOT, "docs", "examples", "l2chat.py")
        self.assertOneLine(
            run([sys.executable, script]),
            "usage: l2chat.py VNL NAME   e.g. l2chat.py ptp:///tmp/chat alice")
        missing = os.path.join(tmpdir(self), "sw")
        self.assertOneLine(
            run([sys.executable, script, missing, "bob"]),
            f"l2chat.py: {missing}: no switch directory {missing} (No such file or directory)")


def makeUser(test) -> str:
    """
    A user made for C{test} with useradd (no home, no login), removed at
    its end; skips unless root.
    """
    if os.geteuid() != 0:
        raise SkipTest("needs root to create a user (useradd)")
    for tool in ("useradd", "userdel", "setpriv"):
        requireCommand(tool, "passwd" if tool != "setpriv" else "util-linux")
    name = f"vdetwist-t{os.getpid()}"
    subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    test.addCleanup(subprocess.run, ["userdel", name], capture_output=True)
    return name


def asUser(name: str, argv: Sequence[str]) -> list[str]:
    """
    C{argv} run as user C{name}, holding only C{CAP_DAC_READ_SEARCH}: it
    can read this interpreter wherever it is installed (under /root, say)
    but writes nothing it does not own, as another user of a shared install.
    """
    return ["setpriv", f"--reuid={name}", f"--regid={name}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--", *argv]


class PluginCacheTests(OneLineMixin, TestCase):
    """
    A shared install (here: a plugin directory owned by root, on the
    user's path) used by another user.
    """

    def test_sharedInstall(self) -> None:
        """
        Until its owner writes the plugin cache, twistd warns at every start
        and vdetwist-plugins says who can write it; once written, neither
        says anything.
        """
        user = makeUser(self)
        site = tmpdir(self)
        os.chmod(site, 0o755)
        plugins = os.path.join(site, "twisted", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "vdetwist_probe.py"), "w") as f:
            f.write('"""A dropin of a shared install."""\n')
        work = tmpdir(self)
        os.chown(work, pwd.getpwnam(user).pw_uid, -1)
        rc = os.path.join(work, "rc")
        with open(rc, "w") as f:
            f.write("shutdown\n")
        env = ourEnv(PYTHONPATH=os.pathsep.join([site, ROOT]), HOME=work)
        listPlugins = [sys.executable, "-c",
                       "from vdetwist.registry import regenerate_cache_main; "
                       "regenerate_cache_main()"]
        twistd = [*TWISTD, "-n", "--pidfile=", "vde", "--switch", os.path.join(work, "sw"),
                  f"--rcfile={rc}"]
        cache = os.path.join(plugins, "dropin.cache")
        warning = f"Unable to write to plugin cache {cache}: error number {errno.EACCES}"

        started = run(asUser(user, twistd), env=env, cwd=work)
        self.assertIn(warning, started.stdout, started.stdout + started.stderr)
        listed = run(asUser(user, listPlugins), env=env, cwd=work)
        self.assertOneLine(
            listed,
            f"vdetwist-plugins: cannot write Twisted's plugin cache {cache}: Permission denied;"
            f" run vdetwist-plugins as root (who owns {plugins}) after installing or"
            " upgrading, else every twistd warns that it cannot write it",
            status=0)
        self.assertIn("slirp://", listed.stdout)

        self.assertEqual(run(listPlugins, env=env, cwd=work).returncode, 0)
        self.assertTrue(os.path.exists(cache))
        started = run(asUser(user, twistd), env=env, cwd=work)
        self.assertEqual(started.returncode, 0, started.stdout + started.stderr)
        self.assertNotIn("Unable to write to plugin cache", started.stdout + started.stderr)
        listed = run(asUser(user, listPlugins), env=env, cwd=work)
        self.assertEqual((listed.returncode, listed.stderr), (0, ""))
        self.assertIn("slirp://", listed.stdout)
