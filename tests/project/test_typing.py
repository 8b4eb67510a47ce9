"""
The package type-checks: mypy with the mypy-zope plugin (configured in
setup.cfg) finds no error in C{vdetwist} and the C{twisted/plugins}
dropins, so a wrong annotation or an C{@implementer} class that does not
match its interface fails the suite.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT

#: A cold run takes seconds (much longer on a loaded machine); a warm one,
#: with the cache below, a fraction of that.
MYPY_TIMEOUT = 600


def missingChecker() -> str | None:
    """
    Why mypy cannot run here, or C{None}.
    """
    for module, package in (("mypy", "mypy"), ("mypy_zope", "mypy-zope")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install mypy mypy-zope, or the test extra)"
    return None


def cacheDirectory(fallback: str) -> str:
    """
    mypy's cache for this checkout and user, kept across runs in the
    temporary directory so that only changed modules are checked again;
    C{fallback} if that directory is someone else's.
    """
    key = hashlib.sha256(ROOT.encode()).hexdigest()[:12]
    path = os.path.join(tempfile.gettempdir(), f"vdetwist-mypy-{os.getuid()}-{key}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_uid != os.getuid():
        return fallback
    return path


class MypyTests(SynchronousTestCase):
    skip = missingChecker()

    def test_clean(self) -> None:
        """
        mypy reports no error.
        """
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "setup.cfg"),
             "--cache-dir", cacheDirectory(self.mktemp())],
            cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=MYPY_TIMEOUT,
        )
        self.assertEqual(
            result.returncode, 0,
            f"mypy found type errors (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}",
        )
