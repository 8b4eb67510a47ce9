"""
C{vde_plug}: join a VDE network to stdio, to another network or to a
command, with the command line of vdeplug4's C{vde_plug}::

    vde_plug [OPTIONS]                       stdio <-> default network
    vde_plug [OPTIONS] VNL                   stdio <-> VNL
    vde_plug [OPTIONS] VNL1 VNL2             VNL1 <-> VNL2
    vde_plug [OPTIONS] [VNL] = CMD [ARGS]    VNL <-> CMD's stdin/stdout

Options are permuted as GNU getopt does (so C{--} is needed before a command
whose own options start with a dash), exit statuses and messages are those of
the C tool.  Errors go to stderr; stdout carries only the stream.
"""

from __future__ import annotations

import grp
import os
import signal
import sys
import syslog
from dataclasses import dataclass, field, replace
from typing import Callable, NoReturn, Optional, Sequence

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.python.components import proxyForInterface

from vdetwist._version import versionLine
from vdetwist.backends.cmd import connectCommand
from vdetwist import fastDispatch
from vdetwist.cable import Cable
from vdetwist.errors import CommandFailed, PlugClosed, VdeError
from vdetwist.interfaces import IFrameReceiver, IVdePlug
from vdetwist.scripts.iplog import IpLogger
from vdetwist.registry import DEFAULT_DESCRIPTION, OpenArgs, openVNL, userName
from vdetwist._transport.pipes import PipeStandardIO
from vdetwist.streamplug import StreamPlug
from vdetwist.scripts.cli import UsageError, daemonize, getopts, logWarningsToStderr, stopReactor, usageExit

USAGE = """\
Usage:
  vde_plug [ OPTIONS ]
  vde_plug [ OPTIONS ] vde_plug_url
  vde_plug [ OPTIONS ] vde_plug_url vde_plug_url
  vde_plug [ OPTIONS ] = command [args ...]
  vde_plug [ OPTIONS ] vde_plug_url = command [args ...]
  an omitted or empty '' vde_plug_url refer to the default vde service
  i.e. what defined in "~/.vdeplug/default", "~/.vde2/default.switch" or
       a standard switch (/var/run/vde.ctl, /tmp/vde.ctl)
Options:
  -d | --daemon:            daemonize the program
  -p PIDFILE | --pidfile PIDFILE:
                            write pid of daemon to PIDFILE
  -l | --log:               log START/STOP of vde_plug on syslog
  -L | --iplog:             -l plus log the IP addresses used
  -h | --help:              show this short summary
  --version:                print vdetwist's version and exit
  -g GROUP | --group GROUP: set the group ownership (for vde://...)
  -G GROUP | --group2 GROUP: like -g, for the second plug
  -m MODE | --mod MODE:     comm socket protection mode (see chmod) (for vde://...)
  -M MODE | --mod2 MODE:    like -m, for the second plug
  --port PORT1, --port2 PORT2:
                            obsolete options, set the vde switch port,
                            use [port] suffix in the vde_plug_url instead
  -D DESCR | --descr DESCR  set the description of this connection to DESCR
                            (the default value is "vdeplug:")
"""

SHORT = "c:hp:dm:M:g:G:lLD:"
LONG = [
    "daemon", "pidfile=", "log", "iplog", "help", "group=", "group2=",
    "mod=", "mod2=", "port=", "port2=", "descr=", "version",
]
NOT_A_SHELL = (
    "This is a Virtual Distributed Ethernet (vde) tunnel broker. \n"
    "This is not a login shell, only vde_plug can be executed\n"
)


@dataclass
class Options:
    daemon: bool = False
    pidfile: Optional[str] = None
    log: bool = False
    iplog: bool = False
    description: str = DEFAULT_DESCRIPTION
    args: list[OpenArgs] = field(default_factory=lambda: [OpenArgs(), OpenArgs()])
    vnls: Sequence[Optional[str]] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    version: bool = False



def _setArg(options: Options, which: int, **change) -> None:
    options.args[which] = replace(options.args[which], **change)


def parseArgs(argv: list[str]) -> Options:
    """
    The C tool's command line, into L{Options}.
    """
    opts, rest = getopts(argv, SHORT, LONG, "vde_plug: ")
    options = Options()
    for name, value in opts:
        if name in ("-h", "--help"):
            raise UsageError("")
        elif name == "--version":
            options.version = True
        elif name == "-c":
            if value != "vde_plug":
                raise UsageError(NOT_A_SHELL.rstrip("\n"))
            options.log = True
            options.iplog = inIpLogGroup()
        elif name in ("-d", "--daemon"):
            options.daemon = True
        elif name in ("-p", "--pidfile"):
            options.pidfile = value
        elif name in ("-l", "--log"):
            options.log = True
        elif name in ("-L", "--iplog"):
            options.log = options.iplog = True
        elif name in ("-D", "--descr"):
            if value:
                options.description = value
        elif name in ("-m", "--mod", "-M", "--mod2"):
            try:
                mode = int(value, 8)
            except ValueError:
                raise UsageError(f"vde_plug: invalid mode {value!r}: use octal, e.g. 0660") from None
            _setArg(options, name in ("-M", "--mod2"), mode=mode)
        elif name in ("-g", "--group", "-G", "--group2"):
            _setArg(options, name in ("-G", "--group2"), group=value)
        elif name in ("--port", "--port2"):
            port = int(value) if value.strip().isdigit() else 0
            if port <= 0:
                raise UsageError(f"vde_plug: invalid port {value!r}: use a number > 0")
            _setArg(options, name == "--port2", port=port)
    _positional(options, rest)
    return options


def _positional(options: Options, rest: list[str]) -> None:
    if len(rest) <= 1:
        options.vnls = rest or [None]
    elif rest[0] == "=":
        options.vnls, options.command = [None], rest[1:]
    elif len(rest) == 2:
        options.vnls = rest
    elif rest[1] == "=":
        options.vnls, options.command = rest[:1], rest[2:]
    else:
        raise UsageError("")


def inIpLogGroup() -> bool:
    """
    Whether this user is in C{vdeplug_iplog}, the group whose logins over
    ssh (C{-c vde_plug}) have their IP addresses logged.
    """
    try:
        group = grp.getgrnam("vdeplug_iplog")
    except KeyError:
        return False
    return group.gr_gid in os.getgroups() or userName(os.geteuid()) in group.gr_mem


def sshAddress() -> str:
    ssh = os.environ.get("SSH_CLIENT", "")
    return ssh.split(" ")[0] if ssh else "UNKNOWN_IP_ADDRESS"


@dataclass
class Run:
    """
    What one run of vde_plug needs besides its options.
    """

    reactor: IReactorCore
    options: Options
    syslog: Callable[[str], None]
    caught: list[int] = field(default_factory=list)


def _openStdio(run: Run) -> IVdePlug:
    plug = StreamPlug("stdio")
    PipeStandardIO(plug, run.reactor)
    if run.options.iplog:
        return IpLogPlug(plug, IpLogger(userName(os.geteuid()), sshAddress(), run.syslog))
    return plug


async def plugMain(run: Run) -> BaseException:
    """
    Open both ends and run the cable until either closes.
    """
    options = run.options
    plugs: list[IVdePlug] = []
    for which, vnl in enumerate(options.vnls):
        try:
            plugs.append(
                await openVNL(run.reactor, vnl, options.description, options.args[which])
            )
        except VdeError as e:
            for plug in plugs:
                plug.close()
            sys.stderr.write(f"vde_open {vnl or 'default switch'}: {e.strerror}\n")
            sys.stderr.write(f"vde_plug: {e}\n")
            raise SystemExit(1)
    if options.command:
        try:
            command = options.command
            plugs.append(await connectCommand(run.reactor, command, " ".join(command)))
        except VdeError as e:
            plugs[0].close()
            sys.stderr.write(f"vde_plug: {e}\n")
            raise SystemExit(1)
    elif len(plugs) == 1:
        plugs.append(_openStdio(run))
    cable = Cable(*plugs)
    run.reactor.addSystemEventTrigger("before", "shutdown", cable.close)
    return await cable.done


class IpLogPlug(proxyForInterface(IVdePlug, "original")):  # type: ignore[misc]
    """
    Logs (C{-L}) every new source IP address of the frames a plug receives.
    """

    def __init__(self, original: IVdePlug, logger: IpLogger) -> None:
        super().__init__(original)
        self.logger = logger

    def startReceiving(self, receiver: IFrameReceiver) -> None:
        self.original.startReceiving(_IpLogReceiver(receiver, self.logger))


class _IpLogReceiver:
    def __init__(self, receiver: IFrameReceiver, logger: IpLogger) -> None:
        self.receiver = receiver
        self.logger = logger
        self.plugClosed = receiver.plugClosed

    def frameReceived(self, frame: bytes) -> None:
        self.logger.inspect(frame)
        self.receiver.frameReceived(frame)


def _onSignal(run: Run) -> None:
    def handler(signum: int, frame) -> None:
        run.caught.append(signum)
        IReactorThreads(run.reactor).callFromThread(stopReactor, run.reactor)

    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def main(argv: Optional[list[str]] = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    if argv and argv[0].startswith("-"):
        sys.stderr.write(NOT_A_SHELL)
        raise SystemExit(255)
    try:
        options = parseArgs(argv[1:])
    except UsageError as e:
        usageExit(e, USAGE, 255)
    if options.version:
        sys.stdout.write(f"{versionLine('vde_plug')}\n")
        raise SystemExit(0)
    if options.daemon:
        daemonize()
    logWarningsToStderr()
    if options.pidfile:
        with open(options.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    user, address = userName(os.geteuid()), sshAddress()
    if options.log:
        syslog.openlog("vde_plug", 0, syslog.LOG_USER)
        syslog.syslog(syslog.LOG_INFO, f"START: user {user} IP {address}")
    from twisted.internet import reactor

    fastDispatch(reactor)
    run = Run(reactor, options, lambda text: syslog.syslog(syslog.LOG_INFO, text))
    # Catch signals from the start (react opens the plugs before the reactor
    # runs), and again once running, as the reactor installs its own.
    _onSignal(run)
    reactor.callWhenRunning(_onSignal, run)
    status = 0
    try:
        _react(run)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    finally:
        if options.log:
            syslog.syslog(syslog.LOG_INFO, f"STOP: user {user} IP {address}")
        if options.pidfile:
            try:
                os.unlink(options.pidfile)
            except OSError:
                pass
    for signum in run.caught:
        if signum != signal.SIGTERM:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
    raise SystemExit(status)


def _react(run: Run) -> None:
    from twisted.internet.task import react

    def finished(reason: BaseException) -> None:
        if not isinstance(reason, PlugClosed):
            sys.stderr.write(f"vde_plug: {reason}\n")
        # A network that goes away ends the session with status 0, as in C;
        # a command that says it failed is a failure.
        if isinstance(reason, CommandFailed):
            raise SystemExit(1)

    react(lambda reactor: ensureDeferred(plugMain(run)).addCallback(finished))


if __name__ == "__main__":
    main()
