"""
vde_switch's management console on connections: the sessions that serve
L{vdetwist.vde2.interpreter}'s command interpreter (L{VdeConsole}, or
wirefilter's L{vdetwist.lab.console.WirefilterConsole}) on C{vde_switch -M
SOCK} (and C{twistd vde --mgmt SOCK}), close enough that the C clients
(C{vdeterm}, C{unixcmd}, libvdemgmt) and scripts written for them work
unchanged.

A session (spec: netnode-hub-switch.md B.5, B.6):

  - on connect the switch writes a two-line banner, then the prompt
    C{"\\nvde$ "};
  - each line is one command, answered as the interpreter says, then
    prompted for again;
  - C{logout} answers C{9999 END OF SESSION} (no newline) and closes;
    C{shutdown} does the same and stops the switch;
  - after C{debug/add CATEGORY} the session also gets asynchronous debug
    lines.

L{ConsoleProtocol} (made by L{ConsoleFactory}) serves the interpreter on a
stream connection, L{listenConsole} listens on a unix socket path like
C{vde_switch -M}, and L{serveStdio} makes stdin the console, as vde_switch
does when it is not a daemon (no banner; C{logout} does nothing;
C{shutdown} and the end of stdin stop the switch; the prompt only when
stdin is a terminal).  The interpreter ends its sessions when it closes
(L{vdetwist.vde2.interpreter.Session.end}).

Differences from vde_switch 2.3.2 (all deliberate; the commands' are in
L{vdetwist.vde2.interpreter}):

  - The banner names this implementation: C{VDE switch V.2.3.2 (vdetwist
    <version>)} and a credit line of its own (clients only wait for the
    C{"$ "} of the prompt; a version parser still reads C{2.3.2}).
  - Input is split into lines: several commands in one write each get
    their answer (vde_switch runs each C{read()} as one line), and one
    trailing C{"\\r"} is removed.  A write without a newline is still run
    at once as a command, as vde_switch does.
  - A session that leaves its answers unread never holds up the switch
    (vde_switch blocks in C{write}) nor grows it: once its output fills the
    transport's buffer, its commands are no longer read or run (and debug
    lines beyond L{STALLED_DEBUG_LIMIT} bytes are discarded) until the
    buffer is flushed; a C{--mgmt} session still stalled after
    L{STALL_TIMEOUT} seconds is dropped.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from typing import Any, Callable, Optional
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.fdesc import setBlocking
from twisted.internet.interfaces import (
    IDelayedCall, IHalfCloseableProtocol, IPushProducer, IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import VdeError
from vdetwist._transport.sockets import groupId, removeStale
from vdetwist.vde2.interpreter import PROMPT, Session

__all__ = [
    "ConsoleProtocol",
    "ConsoleFactory",
    "StdioConsoleProtocol",
    "Interpreter",
    "listenConsole",
    "serveStdio",
    "STALL_TIMEOUT",
    "STALLED_DEBUG_LIMIT",
]

log = Logger()

#: Seconds a management session may leave its answers unread (its output
#: over its transport's buffer) before it is dropped.
STALL_TIMEOUT = 5.0
#: Bytes of debug lines a session that does not read is still given; later
#: lines are discarded until it reads.
STALLED_DEBUG_LIMIT = 1 << 16


class Interpreter(TypingProtocol):
    """
    What a session uses of the interpreter it serves: L{VdeConsole}, and
    wirefilter's L{vdetwist.lab.console.WirefilterConsole}.  A structural
    type rather than an interface: both interpreters are plain objects whose
    commands this module never sees, and mypy checks them where they are
    passed in.
    """

    @property
    def prompt(self) -> bytes: ...

    @property
    def sessions(self) -> set[Any]: ...

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def shutdown(self) -> Optional[Callable[[], Any]]: ...

    def banner(self) -> bytes: ...

    def execute(self, line: str, session=None) -> tuple[bytes, Optional[str]]: ...


@implementer(IPushProducer)
class ConsoleProtocol(Protocol, Session):
    """
    One management session.

    Its memory is bounded: the session is its transport's producer, so when
    the transport's buffer fills (the client does not read its answers) it
    stops reading and running commands until the buffer is flushed, debug
    lines beyond L{STALLED_DEBUG_LIMIT} bytes are discarded meanwhile, and a
    session still stalled after C{stallTimeout} seconds is dropped.

    @ivar debug: the debug categories this session asked for.
    @ivar prompt: written after each answer.
    @ivar stallTimeout: seconds a stalled session is kept, or C{None} to
        keep it until it reads.
    @ivar discardedLines: debug lines discarded because the session did
        not read.
    """

    prompt = PROMPT
    debugOutput = True
    stallTimeout: Optional[float] = STALL_TIMEOUT
    # A UNIX stream connection or StandardIO: an ITransport that is also
    # the IConsumer and IPushProducer the session drives, which no single
    # interface names.
    transport: Any

    def __init__(self, console: Interpreter) -> None:
        super().__init__()
        self.console = console
        self.prompt = console.prompt
        self.ended = False
        self.discardedLines = 0
        self._action: Optional[str] = None
        # Lines received and not yet run (at most one read's worth: reading
        # stops while the session is stalled).
        self._lines: deque[bytes] = deque()
        self._stalled = False
        self._stalledOutput = 0
        self._stallTimer: Optional[IDelayedCall] = None

    def connectionMade(self) -> None:
        self.console.sessions.add(self)
        self.transport.registerProducer(self, True)
        self.greet()

    def greet(self) -> None:
        """
        Write what a new session sees first: the banner and the prompt.
        """
        self.transport.write(self.console.banner())
        self.transport.write(self.prompt)

    def dataReceived(self, data: bytes) -> None:
        if self.ended:
            return
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        self._lines.extend(lines)
        self._runLines()

    def _runLines(self) -> None:
        lines = self._lines
        while lines and not (self._stalled or self.ended):
            raw = lines.popleft()
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            self.lineReceived(raw.decode("utf-8", "replace"))

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: the client is not reading its
        answers.  Stop reading and running its commands.
        """
        if self._stalled or self.ended:
            return
        self._stalled = True
        self._stalledOutput = 0
        self.transport.pauseProducing()
        if self.stallTimeout is not None:
            self._stallTimer = self.console.clock.callLater(self.stallTimeout, self._drop)

    def resumeProducing(self) -> None:
        """
        The transport's buffer is flushed: run the commands held back and
        read again.
        """
        if not self._stalled:
            return
        self._stalled = False
        self._cancelStallTimer()
        self._runLines()
        if not (self._stalled or self.ended):
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        # The transport is going away; connectionLost follows.
        pass

    def _markEnded(self) -> None:
        """
        Run no more commands and send no more debug lines: the session is
        closing.
        """
        self.ended = True
        self.console.sessions.discard(self)
        self._lines.clear()
        self._cancelStallTimer()

    def _cancelStallTimer(self) -> None:
        timer, self._stallTimer = self._stallTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _drop(self) -> None:
        self._stallTimer = None
        log.warn(
            "management session dropped: its answers were left unread for {seconds} s",
            seconds=self.stallTimeout,
        )
        self._markEnded()
        self.transport.abortConnection()

    def lineReceived(self, line: str) -> None:
        answer, action = self.console.execute(line, self)
        if action is not None:
            self.actionReceived(action, answer)
            return
        if answer:
            self.transport.write(answer)
        if self.prompt:
            self.transport.write(self.prompt)

    def actionReceived(self, action: str, answer: bytes) -> None:
        """
        C{logout} or C{shutdown}: answer and close; the switch stops once
        the connection is gone (L{connectionLost}), so that the client has
        its answer.
        """
        self.transport.write(answer)
        self._action = action
        self.end()

    def end(self) -> None:
        """
        Run no more commands, send no more debug lines, and close once the
        answers written have left (not waited for: a client that does not
        read is dropped after C{stallTimeout}).
        """
        self._markEnded()
        if self.transport is not None:
            self.transport.loseConnection()

    def debugLine(self, line: bytes) -> None:
        if self.ended or self.transport is None:
            return
        if self._stalled:
            self._stalledOutput += len(line)
            if self._stalledOutput > STALLED_DEBUG_LIMIT:
                if self._stalledOutput - len(line) <= STALLED_DEBUG_LIMIT:
                    log.warn(
                        "a console session does not read its output: its debug"
                        " lines are discarded until it does"
                    )
                self.discardedLines += 1
                return
        self.transport.write(line)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._markEnded()
        if self._action == "shutdown":
            self._action = None
            log.warn("Shutdown from mgmt command")
            shutdown = self.console.shutdown
            if shutdown is not None:
                shutdown()


class ConsoleFactory(Factory):
    """
    Makes a L{ConsoleProtocol} per connection.
    """

    noisy = False

    def __init__(self, console: Interpreter) -> None:
        self.console = console

    def buildProtocol(self, addr) -> ConsoleProtocol:
        protocol = ConsoleProtocol(self.console)
        protocol.factory = self
        return protocol


@implementer(IHalfCloseableProtocol)
class StdioConsoleProtocol(ConsoleProtocol):
    """
    vde_switch's console on stdin and stdout (made by L{serveStdio}): the
    commands of the management console, but no banner, C{logout} does
    nothing (no answer, no prompt), C{shutdown} stops the switch without an
    answer, and so does the end of stdin (vde_switch: "EOF on stdin,
    cleaning up and exiting").

    The end of stdin does not drop answers still being written: the
    protocol is half-closeable, and L{close} waits for stdout to be flushed.

    A stdout that is not read holds the console back (stdin is not read)
    but never drops it: it is the switch's own terminal.

    @param prompt: written after each answer (vde_switch writes it to fd 0,
        which only works on a terminal; L{serveStdio} decides).
    @param stdin: the input descriptor, put back in blocking mode at the
        end (StandardIO makes it non-blocking; a terminal is shared with the
        shell that started us).
    """

    stallTimeout = None

    def __init__(self, console: Interpreter, prompt: bytes = b"",
                 stdin: Optional[int] = None) -> None:
        super().__init__(console)
        self.prompt = prompt
        self.stdin = stdin
        self._outputGone = False
        self._closed = False
        self._waiting: list[Deferred] = []

    def greet(self) -> None:
        # vde_switch greets nobody on stdin, and prompts only after answers.
        pass

    def actionReceived(self, action: str, answer: bytes) -> None:
        if action == "shutdown":
            log.warn("Shutdown from mgmt command")
            self.close()
            shutdown = self.console.shutdown
            if shutdown is not None:  # execute() refuses shutdown without it
                shutdown()

    def readConnectionLost(self) -> None:
        if self.ended:
            return
        log.info("EOF on stdin, cleaning up and exiting")
        self.close()
        if self.console.shutdown is not None:
            self.console.shutdown()

    def writeConnectionLost(self) -> None:
        # Nobody reads the answers any more; commands still run.
        self._outputGone = True

    def end(self) -> None:
        self.close()

    def close(self) -> Deferred:
        """
        Stop reading stdin and flush stdout.

        @return: fires when what was written has left (at once if stdout
            is gone).
        """
        self._markEnded()
        if self._closed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        if not self.transport.disconnecting:
            self.transport.loseConnection()
        if self._outputGone:
            # Without a writer, StandardIO reports no connectionLost.
            self.connectionLost(connectionDone)
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._markEnded()
        if self._closed:
            return
        self._closed = True
        if self.stdin is not None:
            setBlocking(self.stdin)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)


def serveStdio(reactor, console: Interpreter, stdin: int = 0,
               stdout: int = 1, prompt: Optional[bytes] = None) -> StdioConsoleProtocol:
    """
    Serve C{console} on C{stdin} and C{stdout} (vde_switch's console when
    it is not a daemon).  The prompt goes to C{stdout}, in order with the
    answers, and by default only when C{stdin} is a terminal: vde_switch
    writes it to fd 0, which fails on a pipe or a file, so scripts see no
    prompt from either.

    @param prompt: the prompt to write after each answer whatever stdin
        is (wirefilter writes its own to stdout).
    """
    if prompt is None:
        prompt = console.prompt if os.isatty(stdin) else b""
    protocol = StdioConsoleProtocol(console, prompt, stdin)
    # mypy takes twisted.internet.stdio's Windows StandardIO (the choice is
    # made at run time), which has no stdin and stdout arguments.
    StandardIO(protocol, stdin, stdout, reactor)  # type: ignore[call-arg]
    return protocol


def listenConsole(reactor, console: Interpreter, path: str, mode: int = 0o600,
                  group: Optional[str] = None):
    """
    Listen on the unix stream socket C{path} (vde_switch C{-M}): a stale
    socket left by a dead switch is replaced; a live one is an error.

    @return: the listening port (C{stopListening} unlinks C{path}).
    @raise VdeError: the path is in use or cannot be bound.
    """
    removeStale(path, socket.SOCK_STREAM, inUse=f"{path} is in use: another switch answers on it")
    gid = None if group is None else groupId(group)
    try:
        port = reactor.listenUNIX(path, ConsoleFactory(console), backlog=15, mode=mode)
    except Exception as e:
        raise VdeError(f"cannot listen on {path}: {e}", errno.EADDRINUSE) from None
    try:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except OSError as e:
        port.stopListening()
        raise VdeError(
            f"cannot set the owner or mode of {path}: {e.strerror}", e.errno or errno.EIO
        ) from None
    return port
