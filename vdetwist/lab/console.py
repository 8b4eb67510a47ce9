"""
wirefilter's management console, for a L{WireFilter}: the commands of
vde2's C{wirefilter -M SOCK} (and of its console on stdin), so that
C{vdeterm}, C{unixterm} and scripts written for them work unchanged.

The protocol is vde_switch's (L{vdetwist.vde2.console}, whose sessions
serve this interpreter too) with wirefilter's banner and prompt
(C{"\\nVDEwf$ "}): the first command whose name starts the line runs;
C{help}, C{showinfo}, C{load}, C{showedges} and C{showcurrent} frame their
output as C{0000 DATA END WITH '.'} ... C{.}; then comes C{1000 Success} or
C{1<errno> <strerror>}.  After C{markov-debug 1} a session also gets a
C{38NN Node I "NAME" -> J "NAME"} line at each change of Markov node.

Differences from wirefilter 2.3.2, all deliberate:

  - a bad value is refused with C{1022 Invalid argument} after a line
    saying why (wirefilter takes C{loss abc} as no loss, silently);
  - C{logout} answers C{9999 END OF SESSION} as vde_switch does
    (wirefilter answers C{1-01 Unknown error -1}); C{shutdown} answers it
    too before stopping (wirefilter exits at once);
  - C{showinfo} has two more lines, C{Reorder} and C{Corrupt}, and there
    are C{reorder} and C{corrupt} commands (tc-netem's, see
    L{vdetwist.lab.filter});
  - C{showinfo} also shows what happened to the frames of each direction
    so far (C{Frames L->R received N delivered N lost N ...}), so a run's
    figures can be read from the console (wirefilter counts nothing).
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import vdetwist
from vdetwist.lab.filter import LR, RL, WireFilter
from vdetwist.lab.wirevalue import WireValueError
from vdetwist.vde2.interpreter import DATA_HEADER, END_OF_SESSION, atoi, statusLine

__all__ = ["WirefilterConsole", "PROMPT", "COMPAT_VERSION"]

#: The wirefilter version this console is compatible with.
COMPAT_VERSION = "2.3.2"
PROMPT = b"\nVDEwf$ "
#: wirefilter reads at most this many bytes of a script line.
_MAXCMD = 127
#: Nesting limit of C{load}.
MAX_LOAD_DEPTH = 8
_EDGE = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*,\s*([0-9.eE+-]+)\s*")

#: The commands setting a parameter, in wirefilter's lookup order.
_VALUE_COMMANDS = (
    "delay", "loss", "lostburst", "dup", "bandwidth", "band", "speed",
    "chanbufsize", "capacity", "noise", "mtu", "reorder", "corrupt",
)

_HELP = (
    ("help", "print a summary of mgmt commands"),
    ("load", "load a configuration file"),
    ("showinfo", "show status and parameter values"),
    ("loss", "set loss percentage"),
    ("lostburst", "mean length of lost packet bursts"),
    ("delay", "set delay ms"),
    ("dup", "set dup packet percentage"),
    ("bandwidth", "set channel bandwidth bytes/sec"),
    ("speed", "set interface speed bytes/sec"),
    ("noise", "set noise factor bits/Mbyte"),
    ("mtu", "set channel MTU (bytes)"),
    ("chanbufsize", "set channel buffer size (bytes)"),
    ("fifo", "set channel fifoness"),
    ("reorder", "set percentage of delayed packets sent at once"),
    ("corrupt", "set percentage of packets with a flipped bit"),
    ("shutdown", "shut the channel down"),
    ("logout", "log out from this mgmt session"),
)
_MARKOV_HELP = (
    "markov-numnodes n  markov mode: set number of states",
    "markov-setnode n   markov mode: set current state",
    "markov-name n,name markov mode: set state's name",
    "markov-time ms     markov mode: transition period",
    "setedge n1,n2,w    markov mode: set edge weight",
    "showinfo n         markov mode: show parameter values",
    "showedges n        markov mode: show edge weights",
    "showcurrent        markov mode: show current state",
    "markov-debug n     markov mode: set debug level",
)


@dataclass(frozen=True)
class _Command:
    name: str
    handler: Callable[["WirefilterConsole", str, list, Any], None]
    data: bool = False


class WirefilterConsole:
    """
    The wirefilter command interpreter for one filter.

    @param filter: the L{WireFilter} managed.
    @param clock: an C{IReactorTime} (sessions' stall timers).
    @param bidirectional: whether the filter has two directions
        (C{showinfo} shows one when it sits in a single pipe).
    @param blink: the blink socket path and id, shown by C{showinfo}.
    @param shutdown: called after C{shutdown}; C{None}: C{shutdown} is
        refused with EPERM (a filter inside a program's VNL).
    """

    prompt = PROMPT
    versionLine = f"VDE wirefilter V.{COMPAT_VERSION} (vdetwist {vdetwist.__version__})"
    creditLine = "vdetwist: Virtual Distributed Ethernet for Twisted - GPLv2+"

    def __init__(self, filter: WireFilter, clock, *, bidirectional: bool = True,
                 blink: Optional[tuple[str, str]] = None,
                 shutdown: Optional[Callable[[], Any]] = None) -> None:
        self.filter = filter
        self.clock = clock
        self.bidirectional = bidirectional
        self.blink = blink
        self.shutdown = shutdown
        self.sessions: set = set()
        self._loadDepth = 0
        self.commands = _commandTable()
        filter.observers.append(self._nodeChanged)

    def close(self) -> None:
        """
        End the sessions and stop watching the filter's Markov chain.
        """
        for session in list(self.sessions):
            session.end()
        if self._nodeChanged in self.filter.observers:
            self.filter.observers.remove(self._nodeChanged)

    def banner(self) -> bytes:
        return f"\n{self.versionLine}\n{self.creditLine}\n".encode()

    def _nodeChanged(self, old: int, new: int) -> None:
        nodes = self.filter.nodes
        line = f'{3800 + new:04d} Node {old} "{nodes[old].name}" -> {new} "{nodes[new].name}"\n'
        for session in list(self.sessions):
            if getattr(session, "markovDebug", 0) > 0:
                session.debugLine(line.encode())

    def lookup(self, line: str) -> Optional[_Command]:
        for command in self.commands:
            if line.startswith(command.name):
                return command
        return None

    def execute(self, line: str, session=None) -> tuple[bytes, Optional[str]]:
        """
        Run one command line.

        @return: (the answer without the prompt, C{None} or the session
            action C{"logout"} or C{"shutdown"}).
        """
        _, answer, action = self._run(line, session)
        return answer, action

    def _run(self, line: str, session) -> tuple[int, bytes, Optional[str]]:
        """
        Run one command line: (errno, answer, action) as for L{execute}.
        """
        line = line.strip(" \t\n")
        if not line or line.startswith("#"):
            return 0, b"", None
        command = self.lookup(line)
        if command is None:
            return errno.ENOSYS, statusLine(errno.ENOSYS).encode(), None
        if command.name in ("logout", "shutdown"):
            if command.name == "shutdown" and self.shutdown is None:
                return errno.EPERM, statusLine(errno.EPERM).encode(), None
            return 0, END_OF_SESSION, command.name
        arg = line[len(command.name):].lstrip(" \t")
        out: list[str] = []
        code = 0
        try:
            command.handler(self, arg, out, session)
        except WireValueError as e:
            out.append(str(e))
            code = errno.EINVAL
        except OSError as e:
            out.append(f"{command.name}: {e.strerror}")
            code = e.errno or errno.EIO
        text = "".join(l + "\n" for l in out)
        if command.data:
            text = DATA_HEADER + text + ".\n"
        return code, (text + statusLine(code)).encode("utf-8", "replace"), None

    def runScript(self, path: str, session=None) -> tuple[list[str], list[str]]:
        """
        Run the commands of the file at C{path} (C{load}, C{-f}), each
        echoed after the prompt and the path, as wirefilter does.

        @return: (the output lines, one line per command that failed, naming
            the file, the line and why).
        @raise OSError: the file cannot be read.
        """
        if self._loadDepth >= MAX_LOAD_DEPTH:
            raise OSError(errno.ELOOP, f"{path}: load nested too deep")
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        out: list[str] = []
        errors: list[str] = []
        self._loadDepth += 1
        try:
            for number, line in enumerate(lines, 1):
                line = line[:_MAXCMD].rstrip(" \t")
                out.append(f"{PROMPT.decode()} ({path}) {line}")
                code, answer, action = self._run(line, session)
                if action is not None:
                    continue
                text = answer.decode("utf-8", "replace").rstrip("\n")
                if text:
                    out.append(text)
                if code:
                    said = [l for l in text.splitlines() if not l.startswith("0000 ") and l != "."]
                    errors.append(f"{path}:{number}: {line}: {said[0]}")
            return out, errors
        finally:
            self._loadDepth -= 1

    # -- commands ------------------------------------------------------------

    def showinfo(self, node: int) -> list[str]:
        """
        wirefilter's C{showinfo} lines for C{node}.
        """
        f = self.filter
        out = [f"WireFilter: {'bi' if self.bidirectional else 'mono'}directional"]
        if len(f.nodes) > 1:
            out.append(f'Node {node} "{f.nodes[node].name}" (0,..,{len(f.nodes) - 1})'
                       f" Markov-time {f.markovTime:g}")
        rows = (("Loss  ", "loss"), ("Lburst", "lostburst"), ("Delay ", "delay"),
                ("Dup   ", "dup"), ("Bandw ", "bandwidth"), ("Speed ", "speed"),
                ("Noise ", "noise"))
        extra = (("Reorder", "reorder"), ("Corrupt", "corrupt"))
        value = f.value
        if self.bidirectional:
            for label, name in rows:
                out.append(f"{label} L->R {value(name, LR, node)}   R->L {value(name, RL, node)}")
            out.append(f"MTU    L->R {value('mtu', LR, node).minimum:g}"
                       f"     R->L {value('mtu', RL, node).minimum:g}   ")
            out.append(f"Cap.   L->R {value('chanbufsize', LR, node)}"
                       f"   R->L {value('chanbufsize', RL, node)}")
            for label, name in extra:
                out.append(f"{label} L->R {value(name, LR, node)}   R->L {value(name, RL, node)}")
            out.append(f"Current Delay Queue size:   L->R {f.queuedBytes[LR]}"
                       f"      R->L {f.queuedBytes[RL]}   ")
        else:
            for label, name in rows:
                out.append(f"{label} {value(name, LR, node)}")
            out.append(f"MTU    {value('mtu', LR, node).minimum:g}")
            out.append(f"Cap.   {value('chanbufsize', LR, node)}")
            for label, name in extra:
                out.append(f"{label} {value(name, LR, node)}")
            out.append(f"Current Delay Queue size:   {f.queuedBytes[LR]}")
        out.append(f"Fifoness {'FALSE' if f.nofifo else 'TRUE'}")
        out.append(f"Waiting packets in delay queues {f.queued()}")
        ways = (("L->R ", LR), ("R->L ", RL)) if self.bidirectional else (("", LR),)
        for label, direction in ways:
            stats = f.stats[direction]
            counts = " ".join(f"{name} {getattr(stats, name)}" for name in stats.__slots__)
            out.append(f"Frames {label}{counts}")
        if self.blink is not None:
            out.append(f"Blink socket: {self.blink[0]}")
            out.append(f"Blink id:     {self.blink[1]}")
        return out


def _node(console: WirefilterConsole, arg: str, command: str) -> int:
    """
    The node an optional argument names (the current one without it).
    """
    node = atoi(arg) if arg else console.filter.current
    count = len(console.filter.nodes)
    if not 0 <= node < count:
        raise WireValueError(f"{command}: there is no Markov node {node} (nodes 0 to {count - 1})")
    return node


def _help(c: WirefilterConsole, arg, out, session) -> None:
    out.append("COMMAND      HELP")
    out.append("------------ ------------")
    out.extend(f"{name:<12} {text}" for name, text in _HELP)
    out.extend(_MARKOV_HELP)


def _showinfo(c: WirefilterConsole, arg, out, session) -> None:
    out.extend(c.showinfo(_node(c, arg, "showinfo")))


def _load(c: WirefilterConsole, arg, out, session) -> None:
    lines, _ = c.runScript(arg, session)
    out.extend(lines)


def _fifo(c: WirefilterConsole, arg, out, session) -> None:
    # As in wirefilter, "fifo" alone (atoi gives 0) turns fifoness off.
    c.filter.nofifo = atoi(arg) == 0


def _numnodes(c: WirefilterConsole, arg, out, session) -> None:
    count = atoi(arg)
    if count <= 0:
        raise WireValueError(f"markov-numnodes: {arg!r}: give a number of nodes, 1 or more")
    c.filter.resize(count)


def _setnode(c: WirefilterConsole, arg, out, session) -> None:
    c.filter.setCurrent(atoi(arg) if arg.strip() else -1)


def _name(c: WirefilterConsole, arg, out, session) -> None:
    number, _, name = arg.partition(",")
    node = _node(c, number.strip() or "-1", "markov-name")
    c.filter.nodes[node].name = name.strip(" \t")


def _time(c: WirefilterConsole, arg, out, session) -> None:
    try:
        milliseconds = float(arg)
    except ValueError:
        raise WireValueError(f"markov-time: {arg!r} is not a number of milliseconds") from None
    c.filter.setMarkovTime(milliseconds)


def _setedge(c: WirefilterConsole, arg, out, session) -> None:
    match = _EDGE.fullmatch(arg)
    weight = None
    if match is not None:
        try:
            weight = float(match[3])
        except ValueError:
            pass
    if match is None or weight is None:
        raise WireValueError(f"setedge: {arg!r}: write setedge FROM,TO,WEIGHT (e.g. 0,1,20)")
    c.filter.setEdge(int(match[1]), int(match[2]), weight)


def _showedges(c: WirefilterConsole, arg, out, session) -> None:
    f = c.filter
    node = _node(c, arg, "showedges")
    for j, weight in enumerate(f.weights[node]):
        if weight != 0:
            out.append(f'Edge {node:<2d}->{j:<2d} "{f.nodes[node].name}"->"{f.nodes[j].name}"'
                       f" weigth {weight:g}")


def _showcurrent(c: WirefilterConsole, arg, out, session) -> None:
    f = c.filter
    out.append(f'Current Markov Node {f.current} "{f.nodes[f.current].name}"'
               f" (0,..,{len(f.nodes) - 1})")


def _debug(c: WirefilterConsole, arg, out, session) -> None:
    level = atoi(arg)
    if level < 0 or session is None:
        raise WireValueError(f"markov-debug: {arg!r}: give a level, 0 or more, in a session")
    session.markovDebug = level


def _valueCommand(parameter: str):
    def handler(c: WirefilterConsole, arg, out, session) -> None:
        c.filter.set(parameter, arg)
    return handler


def _none(c, arg, out, session) -> None:
    pass


def _commandTable() -> list[_Command]:
    """
    The commands in wirefilter's lookup order.
    """
    return [
        _Command("help", _help, True),
        _Command("showinfo", _showinfo, True),
        _Command("load", _load, True),
        *(_Command(name, _valueCommand(name)) for name in _VALUE_COMMANDS),
        _Command("fifo", _fifo),
        _Command("markov-numnodes", _numnodes),
        _Command("markov-setnode", _setnode),
        _Command("markov-name", _name),
        _Command("markov-time", _time),
        _Command("setedge", _setedge),
        _Command("showedges", _showedges, True),
        _Command("showcurrent", _showcurrent, True),
        _Command("markov-debug", _debug),
        _Command("logout", _none),
        _Command("shutdown", _none),
    ]
