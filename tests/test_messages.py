"""
The one-line messages a user gets instead of silence or a traceback, each
checked in a real process: the line itself, the exit status, and no
traceback anywhere in the output.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Optional, Sequence

from twisted.trial.unittest import TestCase

from tests.support import ROOT, TIMEOUT, ourEnv, ourTool


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
    def test_busyPort(self) -> None:
        """
        A forward whose host port is busy fails the open, naming the port.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        vnl = f"slirp:///tcpfwd={port}:10.0.2.15:80"
        result = run(ourTool("vde_plug") + [vnl, "null://"])
        self.assertOneLine(
            result,
            f"vde_plug: {vnl}: tcpfwd: cannot listen on 0.0.0.0:{port}: "
            "Address already in use; choose another host port")

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
