"""
The API reference: pydoctor builds it with warnings as errors
(C{docs/apidocs.py}), and C{pydoc} shows what an interface's providers do.
"""

from __future__ import annotations

import importlib.util
import os
import pydoc
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from vdetwist.interfaces import IVdePlug
from tests.support import ROOT


class PydoctorTests(SynchronousTestCase):
    def test_build(self) -> None:
        """
        The build passes C{-W}: no docstring pydoctor cannot parse, no
        reference to a name that does not exist (in vdetwist or Twisted);
        the interface pages list their methods.
        """
        if importlib.util.find_spec("pydoctor") is None:
            raise SkipTest("pydoctor is not installed: pip install -e '.[test]'")
        output = os.path.abspath(self.mktemp())
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "docs", "apidocs.py"), output],
            capture_output=True, text=True, timeout=900, cwd=ROOT,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(os.path.join(output, "vdetwist.interfaces.IVdePlug.html")) as f:
            page = f.read()
        for method in ("startReceiving", "send", "registerProducer", "close"):
            self.assertTrue(f'<a name="{method}">' in page, f"IVdePlug's page lacks {method}")


class PydocTests(SynchronousTestCase):
    def test_interfaceMembers(self) -> None:
        """
        C{pydoc vdetwist.interfaces.IVdePlug} lists every member, its own
        and those of C{IPushProducer}, with their signatures.
        """
        text = pydoc.render_doc(IVdePlug, renderer=pydoc.plaintext)
        for name in IVdePlug.names(all=True):
            self.assertIn(f"\n      {name}", text)
        self.assertIn("registerProducer(producer, streaming): Pause", text)
