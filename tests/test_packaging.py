"""
The package as users get it: plugin discovery after C{pip install} from a
wheel and after an editable install, in fresh virtual environments, with
Twisted's dropin cache written once and no errors on the way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import ROOT

SCHEMES = {"cmd", "null", "ptp", "seqpacket", "udp"}

LIST_BACKENDS = (
    "import vdetwist, sys; from vdetwist.registry import registry;"
    "print(vdetwist.__file__); print(' '.join(sorted(registry.backends())))"
)


class InstalledTests(SynchronousTestCase):
    def run_(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)
        if result.returncode:
            self.fail(f"{argv} failed: {result.stdout}\n{result.stderr}")
        return result

    def venv(self) -> str:
        """
        A fresh venv that borrows the test run's own dependencies (so nothing
        is downloaded) but not vdetwist.
        """
        try:
            from setuptools.command import bdist_wheel  # noqa: F401
        except ImportError:
            raise SkipTest(
                "building without isolation needs setuptools >= 70.1:"
                " pip install -U setuptools"
            )
        path = os.path.abspath(self.mktemp())
        self.run_(sys.executable, "-m", "venv", "--system-site-packages", path)
        return path

    def pip(self, venv: str, *args: str) -> None:
        self.run_(
            os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q",
            "--no-deps", "--no-build-isolation", "--no-index", *args,
        )

    def check_discovery(self, venv: str, expectedRoot: str) -> None:
        python = os.path.join(venv, "bin", "python")
        clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # The first run (re)writes the dropin cache: no errors, no tracebacks.
        listing = self.run_(os.path.join(venv, "bin", "vdetwist-plugins"), env=clean, cwd="/")
        self.assertEqual(listing.stderr, "")
        listed = {line.split("://")[0] for line in listing.stdout.splitlines()}
        self.assertTrue(SCHEMES <= listed, listing.stdout)
        for _ in range(2):  # cached, then from the cache
            result = self.run_(python, "-c", LIST_BACKENDS, env=clean, cwd="/")
            where, schemes = result.stdout.splitlines()
            self.assertTrue(where.startswith(expectedRoot), where)
            self.assertTrue(SCHEMES <= set(schemes.split()), schemes)
            self.assertEqual(result.stderr, "")

    def test_wheel(self) -> None:
        venv = self.venv()
        dist = os.path.abspath(self.mktemp())
        self.run_(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                  "--no-build-isolation", "-w", dist, ROOT)
        [wheel] = [os.path.join(dist, n) for n in os.listdir(dist) if n.endswith(".whl")]
        names = zipfile.ZipFile(wheel).namelist()
        self.assertIn("twisted/plugins/vdetwist_backends.py", names)
        # A cache shipped in the wheel would clobber the site's own.
        self.assertFalse([n for n in names if n.endswith("dropin.cache")])
        self.assertFalse([n for n in names if n.startswith("twisted/plugins/__init__")])
        # The licence, the typing marker and the man pages ship too.
        self.assertTrue([n for n in names if ".dist-info/" in n and n.endswith("/LICENSE")], names)
        self.assertIn("vdetwist/py.typed", names)
        for page in ("vde_plug.1", "dpipe.1", "vdetwist-plugins.1"):
            self.assertTrue([n for n in names if n.endswith(f".data/data/share/man/man1/{page}")], names)
        self.pip(venv, wheel)
        site = subprocess.run(
            [os.path.join(venv, "bin", "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        self.check_discovery(venv, site)
        self.assertTrue(os.path.exists(os.path.join(site, "twisted", "plugins", "dropin.cache")))

    def test_editable(self) -> None:
        venv = self.venv()
        self.pip(venv, "-e", ROOT)
        self.check_discovery(venv, ROOT)
