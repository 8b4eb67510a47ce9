"""
vde_switch's management console commands, for a L{vdetwist.node.Node}: the
command interpreter, without I/O.  L{VdeConsole.run} takes one command line
and returns a L{Reply} (the answer's bytes and its status);
L{vdetwist.vde2.console} serves it on unix sockets and stdin.  What the
console may ask of the vde2 server (which ports are its clients, closing
one, port access control) is L{vdetwist.interfaces.IVdeServer}.

The answers (spec: netnode-hub-switch.md B.5, B.6):

  - leading blanks are skipped; an empty line or one starting with C{#}
    has no answer;
  - the first command whose full path is a prefix of the line runs (so
    C{helpfoo} is C{help foo}); menu headers (C{port}, C{vlan}...) are not
    commands; anything else gives C{1038 Function not implemented};
  - commands that print data frame it as C{0000 DATA END WITH '.'}, the
    lines, C{.} (even when they fail); then comes the status line, C{1000
    Success} or C{1<errno %03d> <strerror>};
  - C{logout} and C{shutdown} answer C{9999 END OF SESSION} (no newline)
    and ask the session to end (and the switch to stop);
  - after C{debug/add CATEGORY} a session also gets asynchronous
    C{3<tag> <category> <text>} lines (ports, endpoints, MAC table), through
    its L{Session.debugLine}.

Differences from vde_switch 2.3.2 (all deliberate):

  - C{port/print} and C{port/allprint} have one more line per port,
    C{" DROP: in %10d"}, ten spaces, C{"out %10d"}: frames dropped on the way in
    (too short, VLAN not allowed) and on the way out (queue full).
  - C{hash/find} prints the right port (vde_switch prints port + 1).
  - C{vlan/remove 0} is refused (C{EINVAL}) when VLAN 0 has no members:
    the node keeps its default VLAN.
  - C{hash/setgcint} refuses values below 1 (the collector is a timer).
  - C{hash/setportmax N}, not in vde_switch, sets the most addresses one
    port may hold (0: no limit), so that a MAC flood only recycles its own
    port's entries (L{vdetwist.node.mactable}); listed after C{hash/find}.
  - C{load} skips empty lines (vde_switch runs them and reports ENOSYS).
  - C{help} describes C{vlan/delport} as removing the port (vde_switch's
    text says "add").
  - FSTP is not implemented: C{fstp/showinfo} says C{FSTP=false} and
    C{fstp/setfstp 1} fails with C{1095 Operation not supported}.
  - Not implemented (C{1038}): C{plugin/*}, C{fstp/setedge}, C{fstp/bonus},
    C{fstp/print}, C{pdump/buffered}.
  - vde2's C{pdump} plugin is built in (no C{plugin/add}): C{pdump/active
    1} dumps every frame entering the switch once (vde2 dumps what
    C{debug/add pdump/packetin} and C{pdump/packetout} select), written by a
    thread with a bounded buffer (frames beyond it are dropped and counted,
    never waited for), so there is no C{pdump/buffered}.  C{pdump/filename}
    creates the file at once and never overwrites one, as vde2's.
  - Not in vde_switch: C{port/capture N FILE} and C{port/capture N off}
    capture one port (both directions) to a new pcap file;
    C{port/captureprint} lists the captures with their counts;
    C{port/mirror N M} makes port M a mirror port that gets a copy of
    everything port N receives or is sent (and leaves forwarding),
    C{port/unmirror N M} ends it, C{port/mirrorprint} lists them.
  - Endpoints that are not vde2 clients (C{--plug}, in-memory plugs) get
    ids from 1000 up and are shown with module C{vdeplug}.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import random
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

import vdetwist
from vdetwist.errors import VdeError
from vdetwist.interfaces import IVdeClient, IVdeServer
from vdetwist.lab.capture import SwitchCaptures
from vdetwist.node import HubEngine, NodeObserver, SwitchEngine, formatMac, parseMac
from vdetwist.node.mactable import NOVLAN, roundUpPowerOfTwo, vde2Bucket
from vdetwist.node.node import INodeObserver

__all__ = [
    "VdeConsole",
    "Reply",
    "Session",
    "ConsoleError",
    "PROMPT",
    "DATA_HEADER",
    "END_OF_SESSION",
    "DEBUG_CATEGORIES",
    "atoi",
    "scanInts",
    "statusLine",
]

log = Logger()

#: The vde_switch version this console is compatible with.
COMPAT_VERSION = "2.3.2"
PROMPT = b"\nvde$ "
DATA_HEADER = "0000 DATA END WITH '.'\n"
END_OF_SESSION = b"9999 END OF SESSION"
#: Ids of endpoints that are not vde2 clients start here (vde2 clients are
#: numbered by their control connection's file descriptor).
FIRST_LOCAL_ENDPOINT_ID = 1000
#: Nesting limit of C{load}.
MAX_LOAD_DEPTH = 8

#: vde_switch's debug categories: (name, tag as 3 octal digits, help).
DEBUG_CATEGORIES = (
    ("hash/+", "011", "hash: new element"),
    ("hash/-", "012", "hash: discarded element"),
    ("fstp/status", "044", "fstp: status change"),
    ("fstp/root", "045", "fstp: rootswitch/port change"),
    ("fstp/+", "041", "fstp: port becomes active"),
    ("fstp/-", "042", "fstp: port becomes inactive"),
    ("port/+", "021", "new port"),
    ("port/-", "022", "closed port"),
    ("port/descr", "023", "set port description"),
    ("port/ep/+", "031", "new endpoint"),
    ("port/ep/-", "032", "closed endpoint"),
)
_DEBUG_TAGS = {name: tag for name, tag, _ in DEBUG_CATEGORIES}


class ConsoleError(Exception):
    """
    A command failed with C{errno}.
    """

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.errno = code


def statusLine(code: int) -> str:
    """
    C{"1000 Success\\n"} for 0, else C{"1<errno %03d> <strerror>\\n"}.
    """
    if code == 0:
        return "1000 Success\n"
    return f"1{code:03d} {os.strerror(code)}\n"


def atoi(text: str) -> int:
    """
    C C{atoi}: leading blanks, an optional sign, decimal digits; 0 if none.
    """
    s = text.lstrip(" \t\n\r\f\v")
    i = 0
    if s[:1] in ("+", "-"):
        i = 1
    j = i
    while j < len(s) and "0" <= s[j] <= "9":
        j += 1
    if j == i:
        return 0
    return int(s[:j])


def _scanInt(s: str, pos: int) -> tuple[Optional[int], int]:
    """
    One C{scanf("%i")} conversion at C{pos}: (value or None, new position).
    """
    n = len(s)
    while pos < n and s[pos] in " \t\n\r\f\v":
        pos += 1
    start = pos
    sign = 1
    if pos < n and s[pos] in "+-":
        sign = -1 if s[pos] == "-" else 1
        pos += 1
    if s[pos : pos + 2].lower() == "0x" and pos + 2 < n and s[pos + 2] in "0123456789abcdefABCDEF":
        base, pos, digits = 16, pos + 2, "0123456789abcdefABCDEF"
    elif s[pos : pos + 1] == "0":
        base, digits = 8, "01234567"
    else:
        base, digits = 10, "0123456789"
    end = pos
    while end < n and s[end] in digits:
        end += 1
    if end == pos:
        return None, start
    return sign * int(s[pos:end], base), end


def scanInts(text: str, count: int) -> list[int]:
    """
    C{sscanf(text, "%i %i ...")} with C{count} conversions: the integers
    read, stopping at the first that fails (so fewer than C{count} means a
    C{sscanf} result the C code rejects).
    """
    values: list[int] = []
    pos = 0
    for _ in range(count):
        value, pos = _scanInt(text, pos)
        if value is None:
            break
        values.append(value)
    return values


def _words(text: str) -> list[str]:
    return text.split()


@dataclass(frozen=True)
class Command:
    """
    One console command.

    @ivar path: what the line must start with (C{"port/print"}).
    @ivar syntax: the SYNTAX column of C{help}.
    @ivar help: the HELP column.
    @ivar kind: C{"menu"} (a header, not executable), C{"none"} (no
        argument), C{"int"} (C{atoi} of the argument), C{"str"}.
    @ivar data: whether the output is framed as data (even on failure).
    @ivar handler: C{(console, argument, out, session) -> errno or None};
        appends output lines to C{out}; may raise L{ConsoleError} or
        L{VdeError}.
    """

    path: str
    syntax: str
    help: str
    kind: str
    data: bool = False
    handler: Optional[Callable] = None


class Session:
    """
    A console session as the interpreter sees it: its debug categories,
    where its debug lines go, how to end it.  This one, with no output, runs
    the scripts of the switch's start (C{--rcfile}); a connection's is
    L{vdetwist.vde2.console.ConsoleProtocol}.

    @ivar debug: the debug categories the session asked for.
    """

    #: Whether debug lines reach the session: vde_switch refuses
    #: C{debug/add} elsewhere.
    debugOutput = False

    def __init__(self) -> None:
        self.debug: set[str] = set()

    def debugLine(self, line: bytes) -> None:
        """
        An asynchronous debug line (C{3<tag> ...}) for the session.
        """

    def end(self) -> None:
        """
        The switch is going: run no more commands; close once the answers
        written have left.
        """


@dataclass(frozen=True)
class Reply:
    """
    What one command line gives.

    @ivar output: the answer, as written to the session (without the
        prompt).
    @ivar status: 0, or the errno of the status line.
    @ivar problem: what went wrong in words, when C{status} is not 0 (the
        L{VdeError}'s message or the errno's text).
    @ivar action: C{None}, or C{"logout"} or C{"shutdown"}: the session
        ends after C{output} (and the switch stops).
    """

    output: bytes
    status: int = 0
    problem: str = ""
    action: Optional[str] = None


class VdeConsole:
    """
    The vde_switch command interpreter for one node.

    @param node: the L{vdetwist.node.Node} managed.
    @param clock: an C{IReactorTime} (uptime, entry ages), and for the
        capture commands an C{IReactorThreads}.
    @param server: the L{IVdeServer} clients join through, if any
        (C{port/print} shows its clients, C{port/epclose} closes them,
        C{port/setuser} becomes its access policy).
    @param ctlDir: the switch directory (C{ds/showinfo}).
    @param sockMode: the mode of its sockets (C{ds/showinfo}).
    @param mgmtPath: the management socket path (C{showinfo}).
    @param mgmtMode: its mode.
    @param macaddr: the switch MAC (6 bytes), random C{00:ff:...} if
        omitted.
    @param shutdown: called (with no argument) after a C{shutdown} command
        has been answered; C{None}: C{shutdown} fails with EPERM.
    @param pid: shown by C{showinfo} (this process's by default).

    @ivar commands: the L{Command}s, in lookup order.
    @ivar captures: the L{SwitchCaptures} (C{pdump/*}, C{port/capture}).
    """

    versionLine = f"VDE switch V.{COMPAT_VERSION} (vdetwist {vdetwist.__version__})"
    #: Written after each answer (and after the banner).
    prompt = PROMPT
    creditLine = "vdetwist: Virtual Distributed Ethernet for Twisted - GPLv2+"

    def __init__(
        self,
        node,
        clock,
        *,
        server: Optional[IVdeServer] = None,
        ctlDir: Optional[str] = None,
        sockMode: int = 0o600,
        mgmtPath: Optional[str] = None,
        mgmtMode: int = 0o600,
        macaddr: Optional[bytes] = None,
        shutdown: Optional[Callable[[], Any]] = None,
        pid: Optional[int] = None,
    ) -> None:
        self.node = node
        self.clock = clock
        self.ctlDir = ctlDir
        self.sockMode = sockMode
        self.mgmtPath = mgmtPath
        self.mgmtMode = mgmtMode
        if macaddr is None:
            macaddr = b"\x00\xff" + bytes(random.getrandbits(8) for _ in range(4))
        self.macaddr = macaddr
        self.shutdown = shutdown
        self.pid = os.getpid() if pid is None else pid
        self.startTime = clock.seconds()
        #: The connected sessions (debug lines go to them).
        self.sessions: set[Session] = set()
        #: port number -> (uid or -1, gid or -1): C{port/setuser}, C{setgroup}.
        self.access: dict[int, tuple[int, int]] = {}
        self._local: dict[int, tuple[Any, int]] = {}
        self._plugInfo: dict[int, tuple[Any, str, Optional[str]]] = {}
        self._loadDepth = 0
        self.commands = _commandTable()
        self._observer = _DebugObserver(self)
        node.addObserver(self._observer)
        self.captures = SwitchCaptures(node, clock)
        self.server: Optional[IVdeServer] = None
        if server is not None:
            self.attachServer(server)

    def attachServer(self, server: IVdeServer) -> None:
        """
        Manage the clients of C{server}: C{port/print} shows them,
        C{port/epclose} closes them through it, and
        C{port/setuser}/C{port/setgroup} become its access policy (unless
        it has one).
        """
        self.server = server
        if server.accessPolicy is None:
            server.accessPolicy = self.accessPolicy

    def close(self) -> Deferred:
        """
        End the sessions, stop observing the node and end the captures.

        @return: fires when the capture files are written and closed.
        """
        for session in list(self.sessions):
            session.end()
        try:
            self.node.removeObserver(self._observer)
        except ValueError:
            pass
        return self.captures.stopAll()

    # -- what the sessions see --------------------------------------------

    def banner(self) -> bytes:
        """
        The greeting, without the prompt.
        """
        return f"{self.versionLine}\n{self.creditLine}\n".encode()

    def lookup(self, line: str) -> Optional[Command]:
        """
        The command that runs for C{line} (leading blanks removed).
        """
        for command in self.commands:
            if command.kind != "menu" and line.startswith(command.path):
                return command
        return None

    def run(self, line: str, session: Optional[Session] = None) -> Reply:
        """
        Run one command line (without its newline) for C{session} (a
        session of its own, with no output, if C{None}).
        """
        line = line.lstrip(" \t")
        if not line or line.startswith("#"):
            return Reply(b"")
        command = self.lookup(line)
        if command is not None and command.path in ("logout", "shutdown"):
            if command.path == "shutdown" and self.shutdown is None:
                return Reply(statusLine(errno.EPERM).encode(), errno.EPERM,
                             os.strerror(errno.EPERM))
            return Reply(END_OF_SESSION, action=command.path)
        return self._runCommand(command, line, session)

    def execute(self, line: str, session: Optional[Session] = None) -> tuple[bytes, Optional[str]]:
        """
        L{run} for the sessions of L{vdetwist.vde2.console}.

        @return: (the answer without the prompt, C{None} or the session
            action C{"logout"} or C{"shutdown"}, whose answer is
            L{END_OF_SESSION}).
        """
        reply = self.run(line, session)
        return reply.output, reply.action

    def _runCommand(self, command: Optional[Command], line: str,
                    session: Optional[Session]) -> Reply:
        """
        Run C{line}, a line of C{command} (C{None}: no such command).
        """
        if command is None:
            return Reply(statusLine(errno.ENOSYS).encode(), errno.ENOSYS, "no such command")
        arg = line[len(command.path) :].lstrip(" \t")
        out: list[str] = []
        if session is None:
            session = Session()
        problem = None
        handler = command.handler
        assert handler is not None, "lookup() returns no menu entries"
        try:
            code = handler(self, arg, out, session) or 0
        except ConsoleError as e:
            code = e.errno
        except VdeError as e:
            code = e.errno or errno.EIO
            problem = e.message
        except Exception:
            log.failure("console command {line!r} failed", line=line)
            code = errno.EIO
        text = ""
        if command.data:
            text = DATA_HEADER + "".join(l + "\n" for l in out) + ".\n"
        elif out:
            # Output that is not framed (load's echo of a script).
            text = "".join(out)
        answer = (text + statusLine(code)).encode("utf-8", "replace")
        return Reply(answer, code, (problem or os.strerror(code)) if code else "")

    def runScript(self, path: str, session: Optional[Session] = None,
                  onFailure=None) -> tuple[int, bytes]:
        """
        Run the commands of the file at C{path} (C{load}, C{--rcfile}).
        Each line is echoed as C{vde[PATH]: <line>} before its answer.

        @param onFailure: called as C{onFailure(number, line, problem)} for
            each command that fails (C{number} counts from 1; C{problem}
            says what went wrong in words).
        @return: (errno: 0, or why the file could not be read; the text).
        """
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError as e:
            return e.errno or errno.EIO, b""
        if self._loadDepth >= MAX_LOAD_DEPTH:
            return errno.ELOOP, b""
        self._loadDepth += 1
        try:
            chunks = []
            for number, line in enumerate(lines, 1):
                line = line[:127]
                chunks.append(f"vde[{path}]: {line}\n".encode("utf-8", "replace"))
                stripped = line.lstrip(" \t")
                if not stripped or stripped.startswith("#"):
                    continue
                command = self.lookup(stripped)
                if command is not None and command.path == "logout":
                    chunks.append(statusLine(0).encode())
                    continue
                if command is not None and command.path == "shutdown":
                    chunks.append(statusLine(0).encode())
                    if self.shutdown is not None:
                        log.info("Shutdown from script {path}", path=path)
                        self.shutdown()
                    break
                reply = self._runCommand(command, stripped, session)
                chunks.append(reply.output)
                if reply.status and onFailure is not None:
                    onFailure(number, stripped, reply.problem)
            return 0, b"".join(chunks)
        finally:
            self._loadDepth -= 1

    # -- endpoints -------------------------------------------------------

    def describePlug(self, plug, module: str = "vdeplug", description: Optional[str] = None) -> None:
        """
        Say how C{port/print} shows C{plug} (an endpoint that is not a vde2
        client): its module name and description (the plug's own by
        default).
        """
        self._plugInfo[id(plug)] = (plug, module, description)

    def clientOf(self, plug) -> Optional[IVdeClient]:
        """
        The vde2 client C{plug} is for, if it is one.
        """
        return None if self.server is None else self.server.clientOf(plug)

    def endpointId(self, plug) -> int:
        """
        The id C{port/print} shows and C{port/epclose} takes: a vde2
        client's C{endpointId}, else one given here from 1000 up.
        """
        client = self.clientOf(plug)
        if client is not None:
            return client.endpointId
        entry = self._local.get(id(plug))
        if entry is not None and entry[0] is plug:
            return entry[1]
        used = {e[1] for e in self._local.values()}
        eid = FIRST_LOCAL_ENDPOINT_ID
        while eid in used:
            eid += 1
        self._local[id(plug)] = (plug, eid)
        return eid

    def _forget(self, plug) -> None:
        entry = self._local.get(id(plug))
        if entry is not None and entry[0] is plug:
            del self._local[id(plug)]
        info = self._plugInfo.get(id(plug))
        if info is not None and info[0] is plug:
            del self._plugInfo[id(plug)]

    def moduleOf(self, plug) -> str:
        info = self._plugInfo.get(id(plug))
        if info is not None and info[0] is plug:
            return info[1]
        if self.clientOf(plug) is not None:
            return "unix prog"
        return "vdeplug"

    def descriptionOf(self, plug) -> str:
        info = self._plugInfo.get(id(plug))
        if info is not None and info[0] is plug and info[2] is not None:
            return info[2]
        return str(getattr(plug, "description", ""))

    # -- access control --------------------------------------------------

    def accessPolicy(self, number: int, uid: int) -> Optional[str]:
        """
        vde_switch's port access control, for L{VdeServer.accessPolicy}:
        C{None} if C{uid} may join port C{number}, else why not.  Root, the
        port's user and members of its group are admitted.
        """
        user, group = self.access.get(number, (-1, -1))
        if (user == -1 and group == -1) or uid == 0:
            return None
        if user != -1 and uid == user:
            return None
        if group != -1 and uid != -1 and _inGroup(uid, group):
            return None
        allowed = []
        if user != -1:
            allowed.append(f"user {_userName(user)}")
        if group != -1:
            allowed.append(f"group {_groupName(group)}")
        return f"access denied: the port is reserved to {' and '.join(allowed)}"

    # -- helpers for the commands ----------------------------------------

    def _checkPortNumber(self, number: int) -> None:
        numports = self.node.numports
        if number < 0 or (numports is not None and number >= numports):
            raise ConsoleError(errno.EINVAL)

    def _port(self, number: int):
        """
        The existing port C{number}: EINVAL out of range, ENXIO if absent.
        """
        self._checkPortNumber(number)
        port = self.node.getPort(number)
        if port is None:
            raise ConsoleError(errno.ENXIO)
        return port

    def _portLines(self, port, out: list[str]) -> None:
        inactive = "" if port.active else "IN"
        notAlloc = "" if port.allocatable else "NOT "
        out.append(
            f"Port {port.number:04d} untagged_vlan={port.untaggedVlan:04d} "
            f"{inactive}ACTIVE - {notAlloc}Unnamed Allocatable"
        )
        current = "NONE"
        client = self.clientOf(port.endpoints[0]) if port.endpoints else None
        if client is not None and client.uid >= 0:
            current = _userName(client.uid)
        user, group = self.access.get(port.number, (-1, -1))
        out.append(
            f" Current User: {current} Access Control: "
            f"(User: {_userName(user)} - Group: {_groupName(group)})"
        )
        out.append(f" IN:  pkts {port.inFrames:10d}          bytes {port.inBytes:20d}")
        out.append(f" OUT: pkts {port.outFrames:10d}          bytes {port.outBytes:20d}")
        out.append(f" DROP: in {port.receiveDropped:10d}          out {port.outDropped:10d}")
        for plug in port.endpoints:
            out.append(
                f"  -- endpoint ID {self.endpointId(plug):04d} module "
                f"{self.moduleOf(plug):<12s}: {self.descriptionOf(plug)}"
            )

    def _isHub(self) -> bool:
        return isinstance(self.node.engine, HubEngine)

    def _debug(self, category: str, text: str) -> None:
        line = f"3{_DEBUG_TAGS[category]} {category} {text}\n".encode("utf-8", "replace")
        for session in list(self.sessions):
            if category in session.debug:
                session.debugLine(line)


def _idName(ident: int, lookup: Callable[[int], str]) -> str:
    """
    A user or group name as C's console shows it: C{NONE} for -1, the
    number when the id has no name.
    """
    if ident == -1:
        return "NONE"
    try:
        return lookup(ident)
    except KeyError:
        return str(ident)


def _userName(uid: int) -> str:
    return _idName(uid, lambda uid: pwd.getpwuid(uid).pw_name)


def _groupName(gid: int) -> str:
    return _idName(gid, lambda gid: grp.getgrgid(gid).gr_name)


def _inGroup(uid: int, gid: int) -> bool:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    if pw.pw_gid == gid:
        return True
    try:
        return pw.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def _parseId(text: str, lookup: Callable[[str], int]) -> int:
    """
    A user or group name or number, as C takes them: C{NONE} and C{ANY}
    are -1, a number must be all of C{text}.
    """
    if text in ("NONE", "ANY"):
        return -1
    try:
        return lookup(text)
    except KeyError:
        pass
    values = scanInts(text, 1)
    if values and str(values[0]) == text.lstrip("+"):
        return values[0]
    raise ConsoleError(errno.EINVAL)


def _parseUser(text: str) -> int:
    return _parseId(text, lambda name: pwd.getpwnam(name).pw_uid)


def _parseGroup(text: str) -> int:
    return _parseId(text, lambda name: grp.getgrnam(name).gr_gid)


@implementer(INodeObserver)
class _DebugObserver(NodeObserver):
    """
    Turns node events into debug lines for the sessions that asked.
    """

    def __init__(self, console: VdeConsole) -> None:
        self.console = console

    def endpointAdded(self, port, plug) -> None:
        if port.isHost:
            return
        c = self.console
        eid = c.endpointId(plug)  # ids in joining order
        if not c.sessions:
            return
        if len(port.endpoints) == 1:
            c._debug("port/+", f"{port.number:02d}")
        c._debug("port/ep/+", f"Port {port.number:02d} FD {eid:2d}")
        c._debug("port/descr", f'Port {port.number:02d} FD {eid:2d} -> "{c.descriptionOf(plug)}"')

    def endpointRemoved(self, port, plug, reason) -> None:
        c = self.console
        if not port.isHost and c.sessions:
            eid = c.endpointId(plug)
            c._debug("port/ep/-", f"Port {port.number:02d} FD {eid:2d}")
            if not port.endpoints:
                c._debug("port/-", f"{port.number:02d}")
        c._forget(plug)

    def portRemoved(self, port) -> None:
        if not port.isHost:
            self.console.access.pop(port.number, None)

    def _mac(self, category: str, mac: bytes, vlan: int, port) -> None:
        c = self.console
        if not c.sessions:
            return
        number = -1 if port.number is None else port.number
        c._debug(
            category,
            f"{formatMac(mac)} VLAN {vlan >> 8:02x}:{vlan & 0xff:02x} Port {number}",
        )

    def macAdded(self, mac, vlan, port) -> None:
        self._mac("hash/+", mac, vlan, port)

    def macRemoved(self, mac, vlan, port) -> None:
        self._mac("hash/-", mac, vlan, port)

    def macMoved(self, mac, vlan, oldPort, newPort) -> None:
        self._mac("hash/-", mac, vlan, oldPort)
        self._mac("hash/+", mac, vlan, newPort)


# -- the commands -----------------------------------------------------------
#
# Handlers: (console, arg, out, session) -> errno or None.


def _optionalNumber(arg: str) -> Optional[int]:
    return None if not arg.strip() else atoi(arg)


def _two(arg: str) -> tuple[int, int]:
    values = scanInts(arg, 2)
    if len(values) < 2:
        raise ConsoleError(errno.EINVAL)
    return values[0], values[1]


def _help(c: VdeConsole, arg, out, session):
    prefix = arg.rstrip("\r\n")
    out.append(f"{'COMMAND PATH':<18s} {'SYNTAX':<15s} HELP")
    out.append(f"{'------------':<18s} {'--------------':<15s} ------------")
    for command in c.commands:
        if command.path.startswith(prefix):
            out.append(f"{command.path:<18s} {command.syntax:<15s} {command.help}")


def _showinfo(c: VdeConsole, arg, out, session):
    out.append(c.versionLine)
    out.append(c.creditLine)
    out.append("")
    uptime = int(c.clock.seconds() - c.startTime)
    out.append(f"pid {c.pid} MAC {formatMac(c.macaddr)} uptime {uptime}")
    if c.mgmtPath is not None:
        out.append(f"mgmt {c.mgmtPath} perm {c.mgmtMode:04o}")


def _dsShowinfo(c: VdeConsole, arg, out, session):
    if c.ctlDir is not None:
        out.append(f"ctl dir {c.ctlDir}")
    out.append(f"std mode {c.sockMode:04o}")


def _load(c: VdeConsole, arg, out, session):
    path = arg.rstrip("\r\n")
    if not path:
        return errno.EINVAL
    code, text = c.runScript(path, session)
    if text:
        out.append(text.decode("utf-8", "replace"))
    return code


def _debugMatches(arg: str) -> list[str]:
    arg = arg.strip()
    if not arg:
        return []
    return [
        name
        for name, _, _ in DEBUG_CATEGORIES
        if name == arg or name.startswith(arg.rstrip("/") + "/")
    ]


def _debugList(c: VdeConsole, arg, out, session):
    prefix = arg.strip()
    out.append(f"{'CATEGORY':<22s} TAG STATUS HELP")
    out.append(f"{'------------':<22s} --- ------ ----")
    for name, tag, text in DEBUG_CATEGORIES:
        if name.startswith(prefix):
            status = "ON" if name in session.debug else "OFF"
            out.append(f"{name:<22s} {tag} {status:<6s} {text}")


def _debugAdd(c: VdeConsole, arg, out, session):
    names = _debugMatches(arg)
    if not names or not session.debugOutput:
        return errno.EINVAL
    session.debug.update(names)


def _debugDel(c: VdeConsole, arg, out, session):
    names = _debugMatches(arg)
    if not names:
        return errno.EINVAL
    session.debug.difference_update(names)


def _hashShowinfo(c: VdeConsole, arg, out, session):
    t = c.node.table
    out.append(f"Hash size {t.hashsize}")
    out.append(f"GC interval {int(t.gcInterval)} secs")
    out.append(f"GC expire {int(t.expiretime)} secs")
    out.append(f"Min persistence {int(t.minPersistence)} secs")


def _hashSetsize(c: VdeConsole, n: int, out, session):
    if n <= 0:
        return errno.EINVAL
    size = roundUpPowerOfTwo(n)
    if size != n:
        log.warn(
            "Hash size must be a power of 2. {n} rounded to {size}", n=n, size=size
        )
    c.node.table.setHashsize(size)


def _hashSetgcint(c: VdeConsole, n: int, out, session):
    if n < 1:
        return errno.EINVAL
    c.node.setGCInterval(n)


def _hashSetexpire(c: VdeConsole, n: int, out, session):
    c.node.table.expiretime = n


def _hashSetminper(c: VdeConsole, n: int, out, session):
    c.node.table.minPersistence = n


def _hashSetportmax(c: VdeConsole, n: int, out, session):
    if n < 0:
        return errno.EINVAL
    c.node.table.portLimit = n


def _hashLine(c: VdeConsole, entry) -> tuple[int, str]:
    t = c.node.table
    bucket = vde2Bucket(entry.mac, entry.vlan, t.hashsize)
    number = -1 if entry.port.number is None else entry.port.number
    return bucket, (
        f"Hash: {bucket:04d} Addr: {formatMac(entry.mac)} VLAN {entry.vlan:04d} "
        f"to port: {number:03d}  age {int(entry.age)} secs"
    )


def _hashPrint(c: VdeConsole, arg, out, session):
    lines = [_hashLine(c, e) for e in c.node.table.entries()]
    lines.sort(key=lambda item: item[0])
    out.extend(line for _, line in lines)


def _hashFind(c: VdeConsole, arg, out, session):
    words = _words(arg)
    if not words:
        return errno.EINVAL
    try:
        mac = parseMac(words[0])
    except ValueError:
        return errno.EINVAL
    vlan = atoi(words[1]) if len(words) > 1 else 0
    entry = c.node.table.find(mac, vlan)
    if entry is None:
        return errno.ENODEV
    out.append(_hashLine(c, entry)[1])


def _fstpShowinfo(c: VdeConsole, arg, out, session):
    out.append(f"MAC {formatMac(c.macaddr)} Priority 32768 (0x8000)")
    out.append("FSTP=false")


def _fstpSetfstp(c: VdeConsole, n: int, out, session):
    if c._isHub():
        out.append("Can't use fstp in hub mode")
        return
    if n:
        return errno.EOPNOTSUPP


def _portShowinfo(c: VdeConsole, arg, out, session):
    numports = c.node.numports
    out.append(f"Numports={numports if numports is not None else 0}")
    out.append(f"HUB={'true' if c._isHub() else 'false'}")
    out.append("counters=true")


def _portSetnumports(c: VdeConsole, n: int, out, session):
    c.node.setNumports(n)


def _portSethub(c: VdeConsole, n: int, out, session):
    if bool(n) != c._isHub():
        c.node.setEngine(HubEngine() if n else SwitchEngine())


def _portSetvlan(c: VdeConsole, arg, out, session):
    number, vid = _two(arg)
    port = c._port(number)
    if not 0 <= vid <= NOVLAN:
        return errno.EINVAL
    if vid != NOVLAN and vid not in c.node.vlans:
        return errno.ENXIO
    c.node.setPortVlan(port, vid)


def _portCreateauto(c: VdeConsole, arg, out, session):
    port = c.node.createPort()
    out.append(f"Port {port.number:04d}")


def _portCreate(c: VdeConsole, n: int, out, session):
    c._checkPortNumber(n)
    c.node.createPort(n)


def _portRemove(c: VdeConsole, n: int, out, session):
    port = c._port(n)
    if port.active:
        return errno.EADDRINUSE
    c.node.removePort(port)
    c.access.pop(n, None)


def _portAllocatable(c: VdeConsole, arg, out, session):
    number, value = _two(arg)
    port = c._port(number)
    port.allocatable = bool(value)


def _setAccess(c: VdeConsole, arg, which: int, parse) -> Optional[int]:
    """
    C{port/setuser} and C{port/setgroup}: C{PORT NAME-OR-ID} sets the
    port's user (C{which} 0) or group (1).
    """
    words = _words(arg)
    values = scanInts(arg, 1)
    if len(words) < 2 or not values:
        return errno.EINVAL
    port = c._port(values[0])
    access = list(c.access.get(port.number, (-1, -1)))
    access[which] = parse(words[1])
    c.access[port.number] = (access[0], access[1])
    return None


def _portSetuser(c: VdeConsole, arg, out, session):
    return _setAccess(c, arg, 0, _parseUser)


def _portSetgroup(c: VdeConsole, arg, out, session):
    return _setAccess(c, arg, 1, _parseGroup)


def _portEpclose(c: VdeConsole, arg, out, session):
    number, eid = _two(arg)
    port = c._port(number)
    for plug in list(port.endpoints):
        if c.endpointId(plug) == eid:
            if c.server is not None and c.clientOf(plug) is not None:
                c.server.closeEndpoint(eid)
            else:
                plug.close()
            return 0
    return errno.ENXIO


def _portResetcounter(c: VdeConsole, arg, out, session):
    number = _optionalNumber(arg)
    if number is None:
        for port in c.node.allPorts():
            port.resetCounters()
        return
    c._checkPortNumber(number)
    port = c.node.getPort(number)
    if port is not None:
        port.resetCounters()


def _printPorts(c: VdeConsole, arg, out, allPorts: bool):
    number = _optionalNumber(arg)
    if number is None:
        for port in c.node.ports.values():
            if allPorts or port.active:
                c._portLines(port, out)
        return
    c._checkPortNumber(number)
    port = c.node.getPort(number)
    if port is None or not (allPorts or port.active):
        return errno.ENXIO
    c._portLines(port, out)


def _portPrint(c, arg, out, session):
    return _printPorts(c, arg, out, False)


def _portAllprint(c, arg, out, session):
    return _printPorts(c, arg, out, True)


def _portCapture(c: VdeConsole, arg, out, session):
    words = arg.split(None, 1)
    if len(words) < 2 or not scanInts(words[0], 1):
        return errno.EINVAL
    port = c._port(atoi(words[0]))
    path = words[1].rstrip("\r\n")
    if path == "off":
        c.captures.stopPort(port)
    else:
        c.captures.capturePort(port, path)


def _portCaptureprint(c: VdeConsole, arg, out, session):
    captures = c.captures
    if captures.pdump is not None:
        state = "active" if captures.pdumpActive else "inactive"
        out.append(f"pdump {state} {_captureCounts(captures.pdump)}")
    for port, capture in sorted(captures.ports.items(), key=lambda item: item[0].number):
        out.append(f"Port {port.number:04d} {_captureCounts(capture)}")


def _captureCounts(capture) -> str:
    return f"frames {capture.frames} dropped {capture.dropped} file {capture.name}"


def _mirrorPorts(c: VdeConsole, arg):
    source, target = _two(arg)
    return c._port(source), c._port(target)


def _portMirror(c: VdeConsole, arg, out, session):
    c.node.mirror(*_mirrorPorts(c, arg))


def _portUnmirror(c: VdeConsole, arg, out, session):
    c.node.unmirror(*_mirrorPorts(c, arg))


def _portMirrorprint(c: VdeConsole, arg, out, session):
    for port in c.node.ports.values():
        if port.mirrorSources:
            sources = " ".join(f"{p.number:04d}" for p in port.mirrorSources)
            out.append(f"Port {port.number:04d} mirrors {sources}")


def _pdumpActive(c: VdeConsole, arg, out, session):
    try:
        c.captures.setPdumpActive(bool(atoi(arg)))
    except VdeError as e:
        out.append(f"ERROR: cannot dump to {e.message}")
        raise


def _pdumpFilename(c: VdeConsole, arg, out, session):
    path = arg.rstrip("\r\n")
    if path:
        try:
            c.captures.setPdumpPath(path)
        except VdeError as e:
            out.append(f"ERROR: cannot dump to {e.message}")
            raise
    out.append(f"dumpfile={c.captures.pdumpPath}")


def _vlanCreate(c: VdeConsole, n: int, out, session):
    c.node.createVlan(n)


def _vlanRemove(c: VdeConsole, n: int, out, session):
    node = c.node
    if not 0 <= n <= NOVLAN:
        return errno.EINVAL
    if n not in node.vlans:
        return errno.ENXIO
    if [p for p, _ in node.vlanMembers(n) if not p.isHost]:
        return errno.EADDRINUSE
    node.removeVlan(n)


def _vlanPort(c: VdeConsole, arg):
    vid, number = _two(arg)
    if not 0 <= vid <= NOVLAN:
        raise ConsoleError(errno.EINVAL)
    c._checkPortNumber(number)
    if vid not in c.node.vlans:
        raise ConsoleError(errno.ENXIO)
    return vid, c._port(number)


def _vlanAddport(c: VdeConsole, arg, out, session):
    vid, port = _vlanPort(c, arg)
    if port.untaggedVlan == vid or vid in port.taggedVlans:
        return
    c.node.addPortVlan(vid, port)


def _vlanDelport(c: VdeConsole, arg, out, session):
    vid, port = _vlanPort(c, arg)
    if port.untaggedVlan == vid:
        return errno.EADDRINUSE
    if vid not in port.taggedVlans:
        return
    c.node.removePortVlan(vid, port)


def _printVlans(c: VdeConsole, arg, out, allPorts: bool):
    node = c.node
    number = _optionalNumber(arg)
    if number is None:
        vids = sorted(node.vlans)
    else:
        if not 0 <= number <= NOVLAN:
            return errno.EINVAL
        if number not in node.vlans:
            return errno.ENXIO
        vids = [number]
    for vid in vids:
        out.append(f"VLAN {vid:04d}")
        for port, tagged in node.vlanMembers(vid):
            if port.isHost:
                continue
            if port.active:
                out.append(
                    f" -- Port {port.number:04d} tagged={int(tagged)} active=1 "
                    f"status=Forwarding"
                )
            elif allPorts:
                out.append(
                    f" -- Port {port.number:04d} tagged={int(tagged)} active=0 "
                    f"status=Learning"
                )


def _vlanPrint(c, arg, out, session):
    return _printVlans(c, arg, out, False)


def _vlanAllprint(c, arg, out, session):
    return _printVlans(c, arg, out, True)


def _none(c, arg, out, session):
    """
    logout, shutdown: handled by L{VdeConsole.run}.
    """


def _intCommand(function):
    def handler(c, arg, out, session):
        return function(c, atoi(arg), out, session)

    return handler


def _commandTable() -> list[Command]:
    """
    vde_switch's commands, in its registration order (the lookup order).
    """
    M, N, I, S = "menu", "none", "int", "str"

    def cmd(path, syntax, help, kind, handler=None, data=False):
        if kind == I:
            handler = _intCommand(handler)
        return Command(path, syntax, help, kind, data, handler)

    return [
        cmd("ds", "============", "DATA SOCKET MENU", M),
        cmd("ds/showinfo", "", "show ds info", N, _dsShowinfo, True),
        cmd("help", "[arg]", "Help (limited to arg when specified)", S, _help, True),
        cmd("logout", "", "logout from this mgmt terminal", N, _none),
        cmd("shutdown", "", "shutdown of the switch", N, _none),
        cmd("showinfo", "", "show switch version and info", N, _showinfo, True),
        cmd("load", "path", "load a configuration script", S, _load),
        cmd("debug", "============", "DEBUG MENU", M),
        cmd("debug/list", "", "list debug categories", S, _debugList, True),
        cmd("debug/add", "dbgpath", "enable debug info for a given category", S, _debugAdd),
        cmd("debug/del", "dbgpath", "disable debug info for a given category", S, _debugDel),
        cmd("hash", "============", "HASH TABLE MENU", M),
        cmd("hash/showinfo", "", "show hash info", N, _hashShowinfo, True),
        cmd("hash/setsize", "N", "change hash size", I, _hashSetsize),
        cmd("hash/setgcint", "N", "change garbage collector interval", I, _hashSetgcint),
        cmd("hash/setexpire", "N", "change hash entries expire time", I, _hashSetexpire),
        cmd("hash/setminper", "N", "minimum persistence time", I, _hashSetminper),
        cmd("hash/print", "", "print the hash table", N, _hashPrint, True),
        cmd("hash/find", "MAC [VLAN]", "MAC lookup", S, _hashFind, True),
        # Not in vde_switch: the per-port bound that keeps a MAC flood from
        # taking the table over.
        cmd("hash/setportmax", "N", "max addresses a port may hold (0=no limit)", I, _hashSetportmax),
        cmd("fstp", "============", "FAST SPANNING TREE MENU", M),
        cmd("fstp/showinfo", "", "show fstp info", N, _fstpShowinfo, True),
        cmd("fstp/setfstp", "0/1", "Fast spanning tree protocol 1=ON 0=OFF", I, _fstpSetfstp, True),
        cmd("port", "============", "PORT STATUS MENU", M),
        cmd("port/showinfo", "", "show port info", N, _portShowinfo, True),
        cmd("port/setnumports", "N", "set the number of ports", I, _portSetnumports),
        cmd("port/sethub", "0/1", "1=HUB 0=switch", I, _portSethub),
        cmd("port/setvlan", "N VLAN", "set port VLAN (untagged)", S, _portSetvlan),
        cmd(
            "port/createauto", "",
            "create a port with an automatically allocated id (inactive|notallocatable)",
            N, _portCreateauto, True,
        ),
        cmd("port/create", "N", "create the port N (inactive|notallocatable)", I, _portCreate),
        cmd("port/remove", "N", "remove the port N", I, _portRemove),
        cmd("port/allocatable", "N 0/1", "Is the port allocatable as unnamed? 1=Y 0=N", S, _portAllocatable),
        cmd("port/setuser", "N user", "access control: set user", S, _portSetuser),
        cmd("port/setgroup", "N user", "access control: set group", S, _portSetgroup),
        cmd("port/epclose", "N ID", "remove the endpoint port N/id ID", S, _portEpclose),
        cmd("port/resetcounter", "[N]", "reset the port (N) counters", S, _portResetcounter),
        cmd("port/print", "[N]", "print the port/endpoint table", S, _portPrint, True),
        # Not in vde_switch: captures and mirror ports (the print commands
        # first: "port/capture" is a prefix of "port/captureprint").
        cmd("port/captureprint", "", "print the captures and their counts", N, _portCaptureprint, True),
        cmd("port/capture", "N FILE|off", "capture port N to the new pcap FILE / stop", S, _portCapture),
        cmd("port/mirrorprint", "", "print the mirror ports", N, _portMirrorprint, True),
        cmd("port/mirror", "N MIRROR", "port MIRROR gets a copy of port N's traffic", S, _portMirror),
        cmd("port/unmirror", "N MIRROR", "port MIRROR stops mirroring port N", S, _portUnmirror),
        cmd(
            "port/allprint", "[N]",
            "print the port/endpoint table (including inactive port)",
            S, _portAllprint, True,
        ),
        cmd("vlan", "============", "VLAN MANAGEMENT MENU", M),
        cmd("vlan/create", "N", "create the VLAN with tag N", I, _vlanCreate),
        cmd("vlan/remove", "N", "remove the VLAN with tag N", I, _vlanRemove),
        cmd("vlan/addport", "N PORT", "add port to the vlan N (tagged)", S, _vlanAddport),
        cmd("vlan/delport", "N PORT", "remove port from the vlan N (tagged)", S, _vlanDelport),
        cmd("vlan/print", "[N]", "print the list of defined vlan", S, _vlanPrint, True),
        cmd(
            "vlan/allprint", "[N]",
            "print the list of defined vlan (including inactive port)",
            S, _vlanAllprint, True,
        ),
        cmd("pdump", "============", "DUMP Packets to file", M),
        cmd("pdump/active", "0/1", "start dumping data", S, _pdumpActive, True),
        cmd(
            "pdump/filename", "<file>", "set/show output filename (default: vde_dump.cap)",
            S, _pdumpFilename, True,
        ),
    ]
