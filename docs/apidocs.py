"""
Build vdetwist's API reference with pydoctor, as Twisted builds its own:

    python3 docs/apidocs.py [OUTPUT_DIRECTORY]      (default: build/apidocs)

Warnings are errors (C{-W}): a docstring that epytext cannot parse or an
C{L{...}} naming nothing fails the build.  Links into Twisted are checked
against an inventory made from the installed Twisted, so the build works
offline; they point at Twisted's published API pages.  The exit status is
pydoctor's.  Needs C{pip install pydoctor} (in the C{test} extra).
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTED_API = "https://docs.twisted.org/en/stable/api/"


def pydoctor(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "pydoctor", "-q", *args])


def main(output: str) -> int:
    import twisted

    inventory = os.path.join(output, "twisted-inventory")
    status = pydoctor(
        "--make-intersphinx", "--html-output", inventory, "--project-name", "Twisted",
        os.path.dirname(twisted.__file__),
    )
    if status:
        return status
    return pydoctor(
        "-W", "--html-output", output, "--project-name", "vdetwist",
        "--project-base-dir", ROOT, "--docformat", "epytext",
        "--intersphinx-file", f"{inventory}/objects.inv::{TWISTED_API}",
        os.path.join(ROOT, "vdetwist"),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "apidocs")))
