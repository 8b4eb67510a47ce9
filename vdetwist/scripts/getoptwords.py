"""
Python's getopt complaints in glibc's words, so our commands print what the
C tools print for a bad command line.
"""

from __future__ import annotations

import getopt
from typing import Sequence


def glibcMessage(error: getopt.GetoptError, longOptions: Sequence[str],
                 longOnly: bool = False) -> str:
    """
    C{error} as glibc's getopt_long (or, with C{longOnly},
    getopt_long_only, which names an unknown short option as it does a
    long one) words it; C{longOptions} are getopt's long option names, for
    the possibilities of an ambiguous prefix.
    """
    opt, msg = error.opt, error.msg
    if msg.startswith("option --"):
        if msg.endswith("not recognized"):
            return f"unrecognized option '--{opt}'"
        if msg.endswith("requires argument"):
            return f"option '--{opt}' requires an argument"
        if msg.endswith("must not have an argument"):
            return f"option '--{opt}' doesn't allow an argument"
        if msg.endswith("not a unique prefix"):
            names = " ".join(f"'--{n.rstrip('=')}'" for n in longOptions if n.startswith(opt))
            return f"option '--{opt}' is ambiguous; possibilities: {names}"
    elif msg.endswith("not recognized"):
        return f"unrecognized option '-{opt}'" if longOnly else f"invalid option -- '{opt}'"
    elif msg.endswith("requires argument"):
        return f"option requires an argument -- '{opt}'"
    return msg
