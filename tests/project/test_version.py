"""
Every command says it is vdetwist's, and which version, with C{--version}:
the C tools of the same names may be on C{PATH} beside ours.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import vdetwist
from vdetwist._version import __version__
from tests.support import ROOT, ourEnv, ourTool

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
PLUGINS = [sys.executable, "-c", "from vdetwist.registry import regenerate_cache_main as m; m()"]


class VersionTests(SynchronousTestCase):
    def run_(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, capture_output=True, text=True, env=ourEnv(), cwd=ROOT,
            stdin=subprocess.DEVNULL, timeout=120,
        )

    def assertVersion(self, argv: list[str], program: str) -> None:
        result = self.run_(argv)
        self.assertEqual(
            (result.returncode, result.stdout.splitlines()[:1], result.stderr),
            (0, [f"{program} (vdetwist) {__version__}"], ""),
        )

    def test_package(self) -> None:
        """
        The package's version is the one setup.cfg reads (by C{attr:}).
        """
        self.assertEqual(vdetwist.__version__, __version__)
        with open(f"{ROOT}/setup.cfg") as f:
            self.assertIn("version = attr: vdetwist._version.__version__\n", f.read())

    def test_vdePlug(self) -> None:
        self.assertVersion(ourTool("vde_plug") + ["--version"], "vde_plug")

    def test_vdePlugHelp(self) -> None:
        """
        C{vde_plug --help} lists the option.
        """
        self.assertIn("--version", self.run_(ourTool("vde_plug") + ["--help"]).stderr)

    def test_wirefilter(self) -> None:
        self.assertVersion(ourTool("wirefilter") + ["--version"], "wirefilter")

    def test_dpipe(self) -> None:
        self.assertVersion(ourTool("dpipe") + ["--version"], "dpipe")

    def test_dpipeStopsParsing(self) -> None:
        """
        C{dpipe --version} runs no command, even when commands follow.
        """
        self.assertVersion(ourTool("dpipe") + ["--version", "false", "=", "false"], "dpipe")

    def test_vdecapture(self) -> None:
        self.assertVersion(ourTool("vdecapture") + ["--version"], "vdecapture")

    def test_vdecaptureHelp(self) -> None:
        """
        C{vdecapture --help} lists the option.
        """
        self.assertIn("--version", self.run_(ourTool("vdecapture") + ["--help"]).stderr)

    def test_vdens(self) -> None:
        """
        C{vdens --version} runs nothing, even when a VNL and command follow.
        """
        self.assertVersion(ourTool("vdens") + ["--version", "slirp://", "false"], "vdens")

    def test_plugins(self) -> None:
        self.assertVersion(PLUGINS + ["--version"], "vdetwist-plugins")

    def test_twistdVde(self) -> None:
        """
        C{twistd vde --version} names vdetwist, then Twisted.
        """
        self.assertVersion(TWISTD + ["vde", "--version"], "twistd vde")
        self.assertIn("Twisted ", self.run_(TWISTD + ["vde", "--version"]).stdout)
