"""
What our commands share with each other as the C tools do: the command
line parsed by getopt with its complaints in glibc's words, so a bad
command line reads as the C tool's, C{daemon(0, 0)}, warnings logged to
standard error, and stopping the reactor from a signal.
"""

from __future__ import annotations

import getopt
import os
import sys
from typing import NoReturn, Sequence

from twisted.internet.error import ReactorNotRunning
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)


class UsageError(Exception):
    """
    A bad command line; the message (empty for C{--help}) says what is
    wrong, and each command prints it with its usage as its C tool does.
    """


def getopts(argv: Sequence[str], short: str, longOptions: Sequence[str], prefix: str = "",
            permute: bool = True, longOnly: bool = False) -> tuple[list[tuple[str, str]], list[str]]:
    """
    C{argv} parsed as glibc's getopt_long does: GNU's order (options and
    operands mixed) unless not C{permute} (options stop at the first
    operand).

    @param prefix: what precedes the message of a bad option (C{"vde_plug: "}).
    @param longOnly: word the messages as getopt_long_only does.
    @raise UsageError: a bad option, in glibc's words.
    """
    parse = getopt.gnu_getopt if permute else getopt.getopt
    try:
        return parse(list(argv), short, list(longOptions))
    except getopt.GetoptError as e:
        raise UsageError(prefix + glibcMessage(e, longOptions, longOnly)) from None


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
    if null > 2:  # (it is one of them when stdio was closed)
        os.close(null)


def usageExit(error: UsageError, usage: str, status: int) -> NoReturn:
    """
    Print a bad command line's message (none for C{--help}) then the usage,
    as the C tools do, and exit with C{status}.
    """
    if str(error):
        sys.stderr.write(f"{error}\n")
    sys.stderr.write(usage)
    raise SystemExit(status)


def logWarningsToStderr() -> None:
    """
    Log warnings and worse to standard error, one line each: a command's
    output stays its own, its troubles are still said.
    """
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )


def stopReactor(reactor) -> None:
    """
    Stop C{reactor} unless it already stops (a second signal, or the run
    ended at the same time).
    """
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass
