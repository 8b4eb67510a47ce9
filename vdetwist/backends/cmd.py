"""
C{cmd://COMMAND}: a command whose stdin/stdout carry the network in the VDE
stream encoding, e.g. C{cmd://"ssh host vde_plug vxvde://"}.

COMMAND is split into words by libexecs' C{s2argv} rules (no shell), the
program is found on PATH and its stderr is inherited.  Unlike the C plug,
which keeps running on a dead link after the command exits, the plug closes
when the command's stream ends, so C{vde_plug} ends too.
"""

from __future__ import annotations

import errno
import os
import shutil

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import ProcessEndpoint
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.errors import VdeError, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.pipes import PipeProcessReactor
from vdetwist.streamplug import StreamPlug, connectStreamPlug

_SPACE = " \t\n"


def s2argv(command: str) -> list[str]:
    """
    Split C{command} as libexecs 0.9 does: blanks separate words, C{'...'}
    groups literally, C{"..."} groups with backslash escapes, a bare
    backslash protects the next character, C{;} ends the (only) command
    executed, an unquoted C{$} is dropped and a word starting with one is
    replaced by an empty word (there is no variable expansion).
    """
    words: list[str] = []
    word: list[str] = []
    inWord = dollarWord = False
    quote = ""
    i = 0
    while i < len(command):
        c = command[i]
        i += 1
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                word.append(c)
            continue
        if quote == '"':
            if c == '"':
                quote = ""
            elif c == "\\" and i < len(command):
                word.append(command[i])
                i += 1
            else:
                word.append(c)
            continue
        if c in _SPACE or c == ";":
            if inWord:
                words.append("" if dollarWord else "".join(word))
            word, inWord, dollarWord = [], False, False
            if c == ";":
                break
            continue
        if c == "$":
            dollarWord = dollarWord or not inWord
        elif c in "'\"":
            quote = c
        elif c == "\\":
            if i < len(command):
                word.append(command[i])
                i += 1
        else:
            word.append(c)
        inWord = True
    else:
        if inWord:
            words.append("" if dollarWord else "".join(word))
    return words


def findProgram(name: str) -> str:
    if "/" in name:
        return name
    found = shutil.which(name)
    if found is None:
        raise VdeError(f"command not found: {name}", errno.ENOENT)
    return found


def connectCommand(reactor, argv: list[str], description: str) -> Deferred[StreamPlug]:
    """
    Run C{argv} (its program found on PATH) with its stdin and stdout as a
    stream plug and its stderr inherited, on the pipe reader and writer of
    L{vdetwist.pipes}.
    """
    endpoint = ProcessEndpoint(
        PipeProcessReactor(reactor),
        findProgram(argv[0]),
        argv,
        env=dict(os.environ),
        childFDs={0: "w", 1: "r", 2: 2},
    )
    return connectStreamPlug(endpoint, description)


@implementer(IPlugin, IVdeBackend)
class CmdBackend:
    schemes = ("cmd",)
    summary = "a command speaking the VDE stream encoding on its stdin/stdout"

    def open(self, reactor, vnl, description, args, registry):
        argv = s2argv(vnl.argument)
        if not argv:
            raise VNLError(vnl.text, vnl.argument, "cmd:// needs a command")
        return connectCommand(reactor, argv, vnl.text)
