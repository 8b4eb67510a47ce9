"""
C{cmd://COMMAND}: a command whose stdin/stdout carry the network in the VDE
stream encoding, e.g. C{cmd://ssh host vde_plug vxvde://} (in a shell:
C{vde_plug /tmp/sw 'cmd://ssh host vde_plug vxvde://'}).

COMMAND is split into words by libexecs' C{s2argv} rules (no shell), the
program is found on PATH and its stderr is inherited.  Unlike the C plug,
which keeps running on a dead link after the command exits, the plug closes
when the command exits (with L{CommandFailed} for a failure status), so
C{vde_plug} ends too; like the C plug, it also ends when the command closes
its stdout and keeps running.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import CommandFailed, PlugLost, VdeError, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist._transport.pipes import PipeProcessReactor
from vdetwist.reference import SchemeReference
from vdetwist.streamplug import StreamPlug

REFERENCE = SchemeReference(
    scheme="cmd",
    synopsis="cmd://COMMAND",
    description=(
        "A command whose stdin and stdout carry the network in the VDE stream "
        "encoding, such as `vde_plug` on another host through ssh. COMMAND is split "
        "into words as libexecs' `s2argv` does (quotes and backslashes, no shell), "
        "the program is found on PATH and its stderr is inherited. Quotes around "
        "the whole command make it one word, as in C: write `cmd://ssh host vde_plug`, "
        "and quote the whole VNL for a shell: `vde_plug /tmp/sw 'cmd://ssh host vde_plug'`."
    ),
    examples=(
        ("cmd://ssh host vde_plug vxvde://", "the vxvde network of `host`"),
    ),
    differences=(
        "The plug closes when the command exits (the C plug keeps running on a "
        "dead link), so `vde_plug` ends too: with status 1 and the command's "
        "status on stderr when that is not 0.",
    ),
    manual="libvdeplug_cmd",
)

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
        raise VdeError(f"command not found: {name}{_quotedHint(name)}", errno.ENOENT)
    return found


#: Seconds a command may keep running after closing its stdout before its
#: plug ends (a command that exits closes stdout first: its exit status is
#: what the plug reports then).
STDOUT_GRACE = 1.0


class _Command(ProcessProtocol):
    """
    A command's stdin and stdout as a L{StreamPlug}'s connection.

    The plug ends when the command exits (cleanly for status 0, with
    L{CommandFailed} for another status, lost when a signal killed it), or when the command closes its stdout and is still
    running L{STDOUT_GRACE} seconds later: the C plug reads EOF there and
    ends, where Twisted's L{twisted.internet.endpoints.ProcessEndpoint} would wait for the exit.
    """

    transport: IProcessTransport  # from makeConnection on

    def __init__(self, reactor, plug: StreamPlug) -> None:
        self.reactor = reactor
        self.plug = plug
        self._grace = None

    def connectionMade(self) -> None:
        self.plug.makeConnection(self.transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self.plug.dataReceived(data)

    def childConnectionLost(self, childFD: int) -> None:
        # (Not when the plug was closed: then we closed the command's stdin,
        # and it is ending.)
        if childFD == 1 and not self.plug.closed:
            self._grace = self.reactor.callLater(STDOUT_GRACE, self._stdoutClosed)

    def _stdoutClosed(self) -> None:
        self._grace = None
        self.plug.connectionLost(Failure(PlugLost(
            "the command closed its standard output and is still running", errno.EPIPE,
            self.plug.description)))
        self.transport.loseConnection()

    def processEnded(self, reason: Failure) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        # (A plug that already ended ignores this: it closes once.)
        if reason.check(ProcessDone):
            self.plug.connectionLost(Failure(ConnectionDone()))
            return
        assert isinstance(reason.value, ProcessTerminated), "Twisted's only other end"
        self.plug.connectionLost(Failure(self._failed(reason.value)))

    def _failed(self, error: ProcessTerminated) -> PlugLost:
        """
        Why the plug ends when the command did not exit with status 0.
        """
        description = self.plug.description
        if error.signal is None:
            return CommandFailed(error.exitCode, description)
        try:
            name = f" ({signal.Signals(error.signal).name})"
        except ValueError:
            name = ""
        return PlugLost(f"the command was killed by signal {error.signal}{name}",
                        errno.ECONNRESET, description)


def connectCommand(reactor, argv: list[str], description: str) -> Deferred[StreamPlug]:
    """
    Run C{argv} (its program found on PATH) with its stdin and stdout as a
    stream plug and its stderr inherited, on the pipe reader and writer of
    L{vdetwist._transport.pipes}.
    """
    program = findProgram(argv[0])
    plug = StreamPlug(description)
    try:
        PipeProcessReactor(reactor).spawnProcess(
            _Command(reactor, plug), program, argv, env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: 2},
        )
    except OSError as e:
        return fail(VdeError(f"{argv[0]}: {e.strerror}{_quotedHint(argv[0])}", e.errno or errno.EIO))
    return succeed(plug)


def _quotedHint(program: str) -> str:
    """
    Why a program whose name holds blanks was not found: quotes around the
    whole command (C{cmd://"ssh host vde_plug"}) make it one word, as in C.
    """
    if not any(c in program for c in _SPACE):
        return ""
    return (f" (quotes make the whole command one word: write cmd://{program},"
            f" and quote it for the shell as a whole: 'cmd://{program}')")


@implementer(IPlugin, IVdeBackend)
class CmdBackend:
    schemes = ("cmd",)
    summary = "a command speaking the VDE stream encoding on its stdin/stdout"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        argv = s2argv(vnl.argument)
        if not argv:
            raise VNLError(vnl.text, vnl.argument, "cmd:// needs a command")
        return connectCommand(reactor, argv, vnl.text)
