"""
What our commands share with each other as the C tools do: getopt's
complaints in glibc's words, so a bad command line reads as the C tool's,
and C{daemon(0, 0)}.
"""

from __future__ import annotations

import getopt
import os
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


def daemonize() -> None:
    """
    As C{daemon(0, 0)}: detach, chdir to /, stdio to /dev/null.
    """
    if os.fork():
        os._exit(0)
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
