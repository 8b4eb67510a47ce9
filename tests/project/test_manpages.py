"""
The man pages: each renders without a warning, documents every option its
command's usage lists (and C{--version}), and is installed with the package.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT, ourEnv, ourTool, requireCommand

MAN = os.path.join(ROOT, "man")
#: An option in a usage text: a dash, not inside a word, then a letter.
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
PLUGINS = [sys.executable, "-c", "from vdetwist.registry import regenerate_cache_main as m; m()"]

#: The command line printing each command's usage, and where it goes.
USAGES = {
    "vde_plug": (ourTool("vde_plug") + ["--help"], "stderr"),
    "dpipe": (ourTool("dpipe") + ["-h"], "stderr"),
    "vdecapture": (ourTool("vdecapture") + ["--help"], "stderr"),
    "vdetwist-plugins": (PLUGINS + ["--help"], "stdout"),
    "wirefilter": (ourTool("wirefilter") + ["--help"], "stderr"),
    "vdens": (ourTool("vdens") + ["--help"], "stderr"),
}


def source(command: str) -> str:
    """
    The page of C{command}, its escaped dashes (C{\\-}) made plain.
    """
    with open(os.path.join(MAN, f"{command}.1")) as f:
        return f.read().replace("\\-", "-")


class ManPageTests(SynchronousTestCase):
    def test_render(self) -> None:
        """
        C{man --warnings} renders each page without a word on stderr.
        """
        man = requireCommand("man", "man-db")
        for command in USAGES:
            result = subprocess.run(
                [man, "--warnings", "-l", os.path.join(MAN, f"{command}.1")],
                capture_output=True, text=True, timeout=60,
                env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat"),
            )
            self.assertEqual((result.returncode, result.stderr), (0, ""), command)
            self.assertIn(command, result.stdout)

    def test_options(self) -> None:
        """
        Every option the command's usage lists, and C{--version}, is in its
        page.
        """
        for command, (argv, stream) in USAGES.items():
            result = subprocess.run(
                argv, capture_output=True, text=True, env=ourEnv(), timeout=120,
                stdin=subprocess.DEVNULL,
            )
            listed = set(OPTION.findall(getattr(result, stream))) | {"--version"}
            self.assertGreater(len(listed), 2, (command, result))
            page = source(command)
            missing = sorted(o for o in listed if not re.search(rf"(?<![\w-]){o}(?![\w-])", page))
            self.assertEqual(missing, [], f"man/{command}.1 lacks options")

    def test_installed(self) -> None:
        """
        setup.cfg installs exactly the pages in man/, into share/man/man1.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        listed = config["options.data_files"]["share/man/man1"].split()
        self.assertEqual(
            sorted(listed), sorted(f"man/{name}" for name in os.listdir(MAN))
        )
        self.assertEqual(sorted(listed), sorted(f"man/{c}.1" for c in USAGES))
