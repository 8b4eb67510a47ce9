"""
dpipe: run commands side by side, each one's output feeding its neighbour.

C{dpipe a = b} gives a bidirectional pipe between C{a} and C{b}; a middle
command of C{a = b = c} talks to C{c} on the two fds named by the
C{ALTERNATE_STDIN} / C{ALTERNATE_STDOUT} environment variables; "=E{rb}" ...
"E{rb}=" and "=E{lb}" ... "E{lb}=" bracket commands that see only one direction of the
flow.  This is a process launcher, not a network tool, so it uses plain
fork/exec rather than Twisted.

Behaviour follows vdeplug4's C C{dpipe}, including its quirks:
    - usage errors print the usage and exit 0 (the C tool SIGTERMs its own
      process group, whose handler exits 0);
    - the exit status is the last command's, or 0 if a signal killed it;
    - a failed C{-p}/C{-P} file is silently ignored;
    - the ignored signals (SIGPIPE, SIGUSR1, ...) are inherited by the
      commands.

Deliberate differences: C{-h} terminates only dpipe itself with SIGTERM,
whereas the C tool signals its whole process group, which before C{setpgrp}
is the caller's (killing, say, the shell script that ran it); and a command
that cannot be run is named on stderr, where the C tool says nothing (both
exit 127).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise
from types import FrameType
from typing import NoReturn, Optional, Sequence

from vdetwist.scripts.cli import UsageError, daemonize

USAGE = """\
Usage:
  {prog} [OPTIONS}} cmd1 [arg1...] = cmd2 [arg2...] [ = cmd3 [arg3...] ]
    using: ... =}} cmd [arg] }}= ...
       or: ... ={{ cmd [arg] {{= ...
    instead of ... = cmd [arg] = ...
  means that the intermediate command processes data flowing in one direction only
  (left to right, or right to left respectively as indicated by the brackets)
OPTIONS:
  -p PIDFILE | --pidfile PIDFILE     write process id to PIDFILE
  -P PGRPFILE | --pgrpfile PGRPFILE  write process group id to PIDFILE
  -d | --daemon                      daemonize the process group
  -n | --nowrapproc                  do not create the dpipe parent process
  -N | --nowrapnoclean               -n and do not remove pid/pgrp file
  -h | --help                        show this short summary
"""

#: Short options; those in L{_WITH_ARGUMENT} take a value.
_SHORT_OPTIONS = "dpPhnN"
_WITH_ARGUMENT = "pP"
#: Long options in the C table's order, which the ambiguity message follows.
_LONG_OPTIONS = {
    "nowrapproc": "n",
    "nowrapnoclean": "N",
    "pidfile": "p",
    "pgrpfile": "P",
    "daemon": "d",
    "help": "h",
    # Ours alone, so it has no short form (a "-V" stays an invalid option)
    # and the usage, identical to the C tool's, does not list it.
    "version": "V",
}

#: Signals the C tool ignores; the commands inherit the setting.
_IGNORED_SIGNALS = (
    signal.SIGPIPE,
    signal.SIGALRM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGPROF,
    signal.SIGVTALRM,
    signal.SIGIO,
    signal.SIGSTKFLT,
    signal.SIGPWR,
)
_TERMINATING_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)

#: Command directions: both ways, left to right only, right to left only.
#: Each is also the bracket that opens (after "=") or closes (before "=") a
#: one-way stretch.
BOTH = "="
RIGHTWARD = "}"
LEFTWARD = "{"

#: (command index, fd) at one end of a pipe.
End = tuple[int, int]


@dataclass
class Options:
    daemon: bool = False
    pidfile: Optional[str] = None
    pgrpfile: Optional[str] = None
    nowrap: bool = False
    noclean: bool = False
    help: bool = False
    version: bool = False


@dataclass
class ChainCommand:
    """
    One command of the chain, and which way data flows through it.
    """

    argv: list[str]
    direction: str = BOTH


def _programName() -> str:
    """
    Messages name the program as invoked, like getopt does; under
    C{python -m} that would be a path to this file, so say C{dpipe}.
    """
    name = sys.argv[0] if sys.argv else ""
    return "dpipe" if not name or name.endswith(".py") else name


def parseOptions(args: Sequence[str], prog: str) -> tuple[Options, list[str]]:
    """
    Parse options like C{getopt_long} with C{"+dp:P:hnN"}: stop at the first
    non-option so the commands keep theirs, accept unambiguous long-option
    prefixes, and report bad options on stderr without stopping (as the C
    tool does).  Parsing ends at C{-h} or C{--version}.

    @return: the options and the remaining arguments.
    """
    options = Options()
    index = 0
    while index < len(args) and not (options.help or options.version):
        arg = args[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        index += 1
        if arg.startswith("--"):
            index = _parseLong(arg, args, index, options, prog)
        else:
            index = _parseShort(arg, args, index, options, prog)
    return options, list(args[index:])


def _parseLong(
    arg: str, args: Sequence[str], index: int, options: Options, prog: str
) -> int:
    name, hasValue, value = arg[2:].partition("=")
    if name in _LONG_OPTIONS:
        matches = [name]
    else:
        matches = [each for each in _LONG_OPTIONS if each.startswith(name)]
    if not matches:
        _complain(prog, f"unrecognized option '{arg}'")
    elif len(matches) > 1:
        possibilities = " ".join(f"'--{each}'" for each in matches)
        _complain(
            prog, f"option '{arg}' is ambiguous; possibilities: {possibilities}"
        )
    else:
        letter = _LONG_OPTIONS[matches[0]]
        if letter not in _WITH_ARGUMENT:
            if hasValue:
                _complain(prog, f"option '--{matches[0]}' doesn't allow an argument")
            else:
                _apply(options, letter, None)
        elif hasValue:
            _apply(options, letter, value)
        elif index < len(args):
            _apply(options, letter, args[index])
            index += 1
        else:
            _complain(prog, f"option '--{matches[0]}' requires an argument")
    return index


def _parseShort(
    arg: str, args: Sequence[str], index: int, options: Options, prog: str
) -> int:
    for position in range(1, len(arg)):
        letter = arg[position]
        if letter not in _SHORT_OPTIONS:
            _complain(prog, f"invalid option -- '{letter}'")
        elif letter not in _WITH_ARGUMENT:
            _apply(options, letter, None)
            if options.help:
                break
        elif position + 1 < len(arg):
            _apply(options, letter, arg[position + 1 :])
            break
        elif index < len(args):
            _apply(options, letter, args[index])
            index += 1
        else:
            _complain(prog, f"option requires an argument -- '{letter}'")
    return index


def _apply(options: Options, letter: str, value: Optional[str]) -> None:
    if letter == "d":
        options.daemon = True
    elif letter == "p":
        options.pidfile = value
    elif letter == "P":
        options.pgrpfile = value
    elif letter == "n":
        options.nowrap = True
    elif letter == "N":
        options.nowrap = options.noclean = True
    elif letter == "V":
        options.version = True
    else:
        options.help = True


def _complain(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: {message}\n")
    sys.stderr.flush()


def _separator(arg: str, direction: str) -> Optional[str]:
    """
    Decide whether C{arg} separates two commands, given the direction of the
    command it would end.

    Any argument starting with "=" is a separator; a bracket as its second
    character ("=E{rb}" or "=E{lb}") makes the next command one-way in that
    direction, otherwise the direction carries on.  Inside a one-way stretch,
    an argument starting with the matching closing form ("E{rb}=" or "E{lb}=") is
    a separator too, and the next command goes both ways unless its third
    character is a bracket.  Anything else is an argument.

    @return: the direction of the next command, or C{None} if C{arg} is not a
        separator.
    """
    if arg.startswith("="):
        return _bracket(arg[1:2], direction)
    if direction != BOTH and arg.startswith(direction + "="):
        return _bracket(arg[2:3], BOTH)
    return None


def _bracket(char: str, default: str) -> str:
    return char if char in (RIGHTWARD, LEFTWARD) else default


def parseCommands(args: Sequence[str]) -> list[ChainCommand]:
    """
    Split the arguments left after the options into commands.

    @raise UsageError: if there are fewer than two commands, a command is
        empty, or the last one is inside an unclosed one-way stretch.
    """
    commands: list[ChainCommand] = []
    current = ChainCommand([])
    for arg in args:
        direction = _separator(arg, current.direction)
        if direction is None:
            current.argv.append(arg)
            continue
        if not current.argv:
            raise UsageError("empty command")
        commands.append(current)
        current = ChainCommand([], direction)
    if not commands or not current.argv or current.direction != BOTH:
        raise UsageError("incomplete command chain")
    commands.append(current)
    return commands


def links(
    commands: Sequence[ChainCommand], alternateIn: int, alternateOut: int
) -> list[tuple[End, End]]:
    """
    Describe the pipes joining the commands as (writer, reader) pairs.

    Consecutive bidirectional commands form a segment; the one-way commands
    between them sit on its left-to-right path (in order) or on its
    right-to-left path (in reverse order).  A segment's left end talks on
    stdin/stdout if it is the first command, else on the alternate fds; its
    right end always uses stdin/stdout.
    """
    result = []
    ends = [i for i, command in enumerate(commands) if command.direction == BOTH]
    # Each path is a list of stations: (command, fd it reads, fd it writes),
    # -1 where the path starts or ends.
    for left, right in pairwise(ends):
        leftIn, leftOut = (0, 1) if left == 0 else (alternateIn, alternateOut)
        middle = range(left + 1, right)
        rightward = (
            [(left, -1, leftOut)]
            + [(i, 0, 1) for i in middle if commands[i].direction == RIGHTWARD]
            + [(right, 0, -1)]
        )
        leftward = (
            [(right, -1, 1)]
            + [(i, 0, 1) for i in reversed(middle) if commands[i].direction == LEFTWARD]
            + [(left, leftIn, -1)]
        )
        for path in (rightward, leftward):
            for (writer, _, outFd), (reader, inFd, _) in pairwise(path):
                result.append(((writer, outFd), (reader, inFd)))
    return result


def _lowestFreeFds() -> tuple[int, int]:
    """
    The two lowest free fds, which become the alternate fds (found, as the
    C tool does, by opening something).
    """
    first = os.open(os.devnull, os.O_RDONLY)
    second = os.open(os.devnull, os.O_RDONLY)
    os.close(first)
    os.close(second)
    return first, second


def _installFds(fdMap: dict[int, int]) -> None:
    """
    Put each source fd on its target number, inheritable.

    Sources are first copied above every target, so that placing one target
    cannot clobber a source still to be placed; the copies are close-on-exec.
    """
    floor = max(fdMap) + 1
    copies = {
        target: fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, floor)
        for target, source in fdMap.items()
    }
    for target, copy in copies.items():
        os.dup2(copy, target)
        os.close(copy)


#: execve errors after which execvp tries the next PATH entry.
_TRY_NEXT = {errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENODEV, errno.ETIMEDOUT}


def _execvp(argv: list[str]) -> NoReturn:
    """
    C{execvp} as glibc does it, which Python's version does not quite: a
    file without a C{#!} line is run with C{/bin/sh}, EACCES from any PATH
    entry is reported rather than the last ENOENT, and an empty name is
    ENOENT.
    """
    name = argv[0]
    if "/" in name:
        paths = [name]
    elif name:
        paths = [os.path.join(directory, name) for directory in os.get_exec_path()]
    else:
        paths = []
    error: OSError = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    for path in paths:
        try:
            os.execv(path, argv)
        except OSError as e:
            if e.errno == errno.ENOEXEC:
                os.execv("/bin/sh", ["/bin/sh", path, *argv[1:]])
            if e.errno not in _TRY_NEXT and e.errno != errno.EACCES:
                raise
            if error.errno != errno.EACCES:
                error = e
    raise error


def _becomeCommand(argv: list[str], fdMap: dict[int, int], prog: str) -> NoReturn:
    """
    Replace this process by a command wired to its pipes; exit 127 (like a
    shell) if it cannot be run.  Never returns, even on unexpected errors,
    so a child never runs the parent's code.
    """
    try:
        _installFds(fdMap)
        _execvp(argv)
    except OSError as e:
        os.write(2, f"{prog}: {argv[0]}: {e.strerror}\n".encode())
    finally:
        os._exit(127)


def _writeFile(path: Optional[str], content: str) -> None:
    """
    Write a pid/pgrp file; like the C tool, carry on silently if it fails.
    """
    if path is None:
        return
    try:
        with open(path, "w") as f:
            f.write(content)
    except OSError:
        pass


def _exitStatus(status: int) -> int:
    """
    The C tool's C{WEXITSTATUS}: 0 for a command killed by a signal.
    """
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0


@dataclass
class Dpipe:
    """
    One run of dpipe: what the signal handler and the file cleanup need.
    """

    options: Options
    prog: str
    lastChild: Optional[int] = None
    pipeFds: list[int] = field(default_factory=list)

    def removeFiles(self) -> None:
        if self.options.noclean:
            return
        for path in (self.options.pidfile, self.options.pgrpfile):
            if path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def terminate(self, signum: int, frame: Optional[FrameType]) -> None:
        """
        On HUP, INT or TERM: remove the files and SIGTERM the last command;
        then exit 0 for TERM, or pass the signal on to the whole process
        group (and so die of it) for the others.
        """
        self.removeFiles()
        if self.lastChild is not None:
            os.kill(self.lastChild, signal.SIGTERM)
        if signum == signal.SIGTERM:
            os._exit(0)
        signal.signal(signum, signal.SIG_DFL)
        os.killpg(os.getpgrp(), signum)

    def installSignals(self) -> None:
        for signum in _TERMINATING_SIGNALS:
            signal.signal(signum, self.terminate)
        for signum in _IGNORED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        # Python ignores SIGXFSZ for itself; the commands should not inherit it.
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)

    def forkJanitor(self) -> None:
        """
        With -n nothing outlives the last command to remove the files, so a
        small process polls for its parent (which becomes the last command)
        every second and removes them once it is gone.  It is forked before
        any pipe exists so that it holds none open.
        """
        parent = os.getpid()
        if os.fork():
            return
        try:
            os.close(0)
            os.close(1)
            while _isAlive(parent):
                time.sleep(1)
            self.removeFiles()
        finally:
            os._exit(0)

    def run(self, commands: list[ChainCommand], alternateIn: int, alternateOut: int) -> int:
        """
        Start the commands; then either become the last one (-n) or wait for
        all of them, remove the files and return the last one's exit status.
        """
        fdMaps: list[dict[int, int]] = [{} for _ in commands]
        for (writer, writeFd), (reader, readFd) in links(
            commands, alternateIn, alternateOut
        ):
            readEnd, writeEnd = os.pipe()
            self.pipeFds += [readEnd, writeEnd]
            fdMaps[writer][writeFd] = writeEnd
            fdMaps[reader][readFd] = readEnd
        spawned = commands[:-1] if self.options.nowrap else commands
        for command, fdMap in zip(spawned, fdMaps):
            pid = os.fork()
            if pid == 0:
                _becomeCommand(command.argv, fdMap, self.prog)
            self.lastChild = pid
        if self.options.nowrap:
            _becomeCommand(commands[-1].argv, fdMaps[-1], self.prog)
        self.releaseFds()
        status = self.waitAll()
        self.removeFiles()
        return status

    def releaseFds(self) -> None:
        """
        Let go of every pipe end, and of our stdin/stdout, which the C tool
        hands to the last command: only the commands keep them open.
        """
        for fd in self.pipeFds:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)

    def waitAll(self) -> int:
        status = 0
        while True:
            try:
                pid, waitStatus = os.wait()
            except ChildProcessError:
                return status
            if pid == self.lastChild:
                status = _exitStatus(waitStatus)


def _isAlive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _dieOfSigterm() -> NoReturn:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)


def main(argv: Optional[list[str]] = None) -> int:
    """
    Run dpipe.

    @param argv: the arguments, without the program name (default:
        C{sys.argv[1:]}).
    @return: the exit status.
    """
    prog = _programName()
    options, args = parseOptions(sys.argv[1:] if argv is None else argv, prog)
    usage = USAGE.format(prog=prog)
    if options.help:
        sys.stderr.write(usage)
        sys.stderr.flush()
        _dieOfSigterm()
    if options.version:
        # Imported here: the vdetwist package brings in Twisted, which
        # dpipe, a plain fork/exec launcher, otherwise never loads.
        from vdetwist._version import versionLine

        sys.stdout.write(f"{versionLine('dpipe')}\n")
        return 0
    if options.daemon:
        daemonize()
    else:
        try:
            os.setpgid(0, 0)
        except OSError:
            sys.stderr.write("Err: cannot create pgrp\n")
            return 1
    _writeFile(options.pidfile, f"{os.getpid()}\n")
    _writeFile(options.pgrpfile, f"-{os.getpgrp()}\n")
    dpipe = Dpipe(options, prog)
    dpipe.installSignals()
    alternateIn, alternateOut = _lowestFreeFds()
    os.environ["ALTERNATE_STDIN"] = str(alternateIn)
    os.environ["ALTERNATE_STDOUT"] = str(alternateOut)
    try:
        commands = parseCommands(args)
    except UsageError:
        # The C tool SIGTERMs its (own, by now) process group; the handler
        # removes the files and exits 0.
        sys.stderr.write(usage)
        sys.stderr.flush()
        dpipe.removeFiles()
        return 0
    hasFiles = options.pidfile is not None or options.pgrpfile is not None
    if options.nowrap and not options.noclean and hasFiles:
        dpipe.forkJanitor()
    return dpipe.run(commands, alternateIn, alternateOut)


if __name__ == "__main__":
    sys.exit(main())
