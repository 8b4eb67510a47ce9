"""
The package as users get it: plugin discovery after C{pip install} from a
wheel and after an editable install, in fresh virtual environments, with
Twisted's dropin cache written once and no errors on the way.

Both build from a copy of the checkout's source files, never in the
checkout: what an earlier build or install left there (C{build/},
C{*.egg-info}) would end up in the wheel, and the build would leave more.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT

SCHEMES = {"cmd", "null", "ptp", "seqpacket", "udp"}

#: What builds, installs and test runs leave in a checkout (as .gitignore).
LEFTOVERS = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", "dropin.cache", "build", "dist", "*.egg-info", ".venv",
    ".hypothesis", "_trial_temp*",
)

LIST_BACKENDS = (
    "import vdetwist, sys; from vdetwist.registry import registry;"
    "print(vdetwist.__file__); print(' '.join(sorted(registry.backends())))"
)


#: Imports every vdetwist module but C{vdetwist.testing.netns} with pyroute2
#: made unimportable, and prints what it imported.
WITHOUT_PYROUTE2 = """
import pkgutil, sys, vdetwist
sys.modules["pyroute2"] = None
names = [m.name for m in pkgutil.walk_packages(vdetwist.__path__, "vdetwist.")
         if m.name != "vdetwist.testing.netns"]
for name in names:
    __import__(name)
print(len(names))
"""


class DependencyTests(SynchronousTestCase):
    def test_withoutPyroute2(self) -> None:
        """
        pyroute2 is the C{netns} extra's, for L{vdetwist.testing.netns}
        alone: the library, C{vdetwist.testing}'s in-memory plugs included,
        imports without it.
        """
        result = subprocess.run([sys.executable, "-c", WITHOUT_PYROUTE2], capture_output=True,
                                text=True, timeout=120, cwd=ROOT)
        self.assertEqual(result.stderr, "")
        self.assertGreater(int(result.stdout), 100)


class InstalledTests(SynchronousTestCase):
    def run_(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)
        if result.returncode:
            self.fail(f"{argv} failed: {result.stdout}\n{result.stderr}")
        return result

    def source(self) -> str:
        """
        A copy of the checkout's source: the files git does not ignore, or,
        outside a git checkout, all but what builds, installs and test runs
        leave.
        """
        path = os.path.abspath(self.mktemp())
        try:
            listed = subprocess.run(
                ["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                capture_output=True, check=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            listed = b""
        names = [os.fsdecode(n) for n in listed.split(b"\0") if n]
        if not names:
            shutil.copytree(ROOT, path, ignore=LEFTOVERS)
        for name in names:
            if os.path.isfile(os.path.join(ROOT, name)):  # not deleted since
                os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, name), os.path.join(path, name))
        return path

    def venv(self) -> str:
        """
        A fresh venv that borrows the test run's own dependencies but not
        vdetwist, with a setuptools that builds wheels without isolation
        (70.1 or later): the test run's if it is one, else from the index.

        The run's site directories are named in a .pth file: a venv's
        system site is the base interpreter's, not that of a venv the tests
        run in; and vdetwist's editable install there (a .pth file of its
        own) is not read.
        """
        path = os.path.abspath(self.mktemp())
        self.run_(sys.executable, "-m", "venv", path)
        python = os.path.join(path, "bin", "python")
        borrowed = [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
        with open(os.path.join(self.sitePackages(python), "borrowed.pth"), "w") as f:
            f.write("".join(f"{p}\n" for p in borrowed))
        if subprocess.run([python, "-c", "import setuptools.command.bdist_wheel"],
                          capture_output=True).returncode:
            self.run_(python, "-m", "pip", "install", "-q", "setuptools>=70.1")
        return path

    def sitePackages(self, python: str) -> str:
        return self.run_(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"
        ).stdout.strip()

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
        self.run_(os.path.join(venv, "bin", "python"), "-m", "pip", "wheel", "-q", "--no-deps",
                  "--no-build-isolation", "-w", dist, self.source())
        [wheel] = [os.path.join(dist, n) for n in os.listdir(dist) if n.endswith(".whl")]
        names = zipfile.ZipFile(wheel).namelist()
        self.assertIn("twisted/plugins/vdetwist_backends.py", names)
        # A cache shipped in the wheel would clobber the site's own.
        self.assertFalse([n for n in names if n.endswith("dropin.cache")])
        self.assertFalse([n for n in names if n.startswith("twisted/plugins/__init__")])
        # The licence, the typing marker, the web page and the man pages ship too.
        self.assertTrue([n for n in names if ".dist-info/" in n and n.endswith("/LICENSE")], names)
        self.assertIn("vdetwist/py.typed", names)
        self.assertIn("vdetwist/web/page.html", names)   # twistd vde --web's page
        self.assertIn("vdetwist/testing/netns.py", names)
        # pyroute2 is for vdetwist.testing.netns alone: an extra, not a dependency.
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        needs = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                 if line.startswith("Requires-Dist: pyroute2")]
        self.assertTrue(needs, "pyroute2 is in no extra")
        for line in needs:
            self.assertRegex(line, r"; extra == \"(netns|test)\"$")
        for page in ("vde_plug.1", "dpipe.1", "vdetwist-plugins.1"):
            self.assertTrue([n for n in names if n.endswith(f".data/data/share/man/man1/{page}")], names)
        self.pip(venv, wheel)
        site = self.sitePackages(os.path.join(venv, "bin", "python"))
        self.check_discovery(venv, site)
        self.assertTrue(os.path.exists(os.path.join(site, "twisted", "plugins", "dropin.cache")))

    def test_editable(self) -> None:
        venv = self.venv()
        source = self.source()
        self.pip(venv, "-e", source)
        self.check_discovery(venv, source)
