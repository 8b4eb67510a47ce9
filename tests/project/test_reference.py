"""
The VNL reference: built on the parser's own option tables, checked in as
generated, and printed by C{vdetwist-plugins SCHEME}.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from vdetwist.reference import (
    REFERENCE_PATH,
    Option,
    SchemeReference,
    document,
    shortest,
    vdetwistReferences,
)
from vdetwist.registry import Registry
from vdetwist.backends.vde import VDE_OPTIONS
from vdetwist.backends.vxvde import VXVDE_OPTIONS
from vdetwist.slirp.config import SLIRP_OPTIONS
from vdetwist.vnl import (
    parsePath,
    parseSlash,
    resolve,
    splitNested,
)
from tests.support import ROOT, ourEnv

PLUGINS = [sys.executable, "-c", "from vdetwist.registry import regenerate_cache_main as m; m()"]


class GeneratedTests(SynchronousTestCase):
    def test_checkedIn(self) -> None:
        """
        The checked-in reference is what the generator gives from today's
        tables; regenerate it after changing a backend's options or page.
        """
        with open(os.path.join(ROOT, REFERENCE_PATH)) as f:
            checkedIn = f.read()
        generated = document(vdetwistReferences())
        if checkedIn != generated:
            self.fail(
                f"{REFERENCE_PATH} is stale: run"
                f" `python3 -m vdetwist.reference > {REFERENCE_PATH}`"
            )

    def test_everySchemeHasAPage(self) -> None:
        """
        Every scheme of vdetwist's own backends has a page.
        """
        ours = {
            scheme
            for scheme, backend in Registry().backends().items()
            if type(backend).__module__.startswith("vdetwist.")
        }
        self.assertEqual(set(vdetwistReferences()), ours)

    def test_examplesParse(self) -> None:
        """
        Every example VNL of a scheme with options parses with the table its
        page documents (command examples are left to the commands' tests).
        """
        parsers = {"path": parsePath, "slash": parseSlash}
        checked = 0
        for page in vdetwistReferences().values():
            for vnl, _ in page.examples:
                if not (page.table and vnl.startswith(f"{page.scheme}://")):
                    continue
                argument = resolve(vnl).argument
                if page.nested:
                    argument, _ = splitNested(argument)
                parsers[page.grammar](argument, page.table, vnl)
                checked += 1
        self.assertGreater(checked, 10)


class SchemeReferenceTests(SynchronousTestCase):
    def test_tableMismatch(self) -> None:
        """
        A page whose options are not exactly the parser's table cannot be
        built: a new option without a description fails at import.
        """
        exc = self.assertRaises(
            ValueError,
            SchemeReference,
            "x", "x://", "X.", grammar="slash", table=("a", "b"), options=(Option("a", "A."),),
        )
        self.assertIn("x://", str(exc))

    def test_shortest(self) -> None:
        """
        Abbreviations come from the parser's first-match rule.
        """
        self.assertEqual(shortest("vni", VXVDE_OPTIONS), "v")
        self.assertEqual(shortest("v4", VXVDE_OPTIONS), "v4")
        self.assertEqual(shortest("portgroup", VDE_OPTIONS), "portg")
        self.assertEqual(shortest("tftp_server_name", SLIRP_OPTIONS), "t")
        self.assertEqual(shortest("tftp_path", SLIRP_OPTIONS), "tftp_p")

    def test_page(self) -> None:
        """
        A page shows each option with its value, abbreviation and default.
        """
        page = vdetwistReferences()["vxvde"].markdown()
        self.assertTrue(page.startswith("## vxvde://\n"), page)
        self.assertIn("| `port=PORT` | `p` | 14789 |", page)
        self.assertIn("| `vni=VNI` | `v` | 1, or the `grp` gid |", page)
        self.assertIn("man libvdeplug_vxvde", page)


class PluginsCommandTests(SynchronousTestCase):
    # stderr may hold Twisted's complaint about a plugin cache this user
    # cannot write (a shared install); the listing is what matters here.
    def run_(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            PLUGINS + list(args), capture_output=True, text=True, env=ourEnv(),
            cwd=ROOT, stdin=subprocess.DEVNULL, timeout=120,
        )

    def test_list(self) -> None:
        """
        Without arguments: one line per scheme with its summary.
        """
        result = self.run_()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn(
            "slirp://\tuser-mode NAT to the host's network", result.stdout
        )

    def test_page(self) -> None:
        """
        C{vdetwist-plugins SCHEME} (with or without C{://}) prints the page.
        """
        expected = vdetwistReferences()["slirp"].markdown()
        for argument in ("slirp", "slirp://"):
            result = self.run_(argument)
            self.assertEqual((result.returncode, result.stdout), (0, expected), result.stderr)
            self.assertNotIn("Traceback", result.stderr)

    def test_unknown(self) -> None:
        """
        An unknown scheme: one line naming it and the installed ones.
        """
        result = self.run_("nosuch")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stdout, "")
        self.assertNotIn("Traceback", result.stderr)
        line = result.stderr.splitlines()[-1]
        self.assertTrue(line.startswith("vdetwist-plugins: no backend for nosuch:// (installed: "), line)
        self.assertIn("vxvde", line)
