"""
C{wirefilter}: a cable that loses, delays, duplicates and throttles frames,
with the command line, console and exit statuses of vde2's::

    wirefilter [OPTIONS] -v VNL1:VNL2     VNL1 <-> VNL2 (either may be "-":
                                          the stream on stdin/stdout)
    dpipe vde_plug A = wirefilter [OPTIONS] = vde_plug B
                                          both ways through dpipe's pipes
    ... | wirefilter [OPTIONS] | ...      one way, stdin to stdout

Each side of C{-v} is a switch path, as for vde2, or any VNL.  The engine is
L{vdetwist.lab.filter}, the console L{vdetwist.lab.console}: on the socket
of C{-M}, and on stdin when both sides are plugs and it is not a daemon.

Unlike vde2's, a bad value or rc file line is an error naming the option
(exit status 1) instead of being ignored, the delay queues are bounded, and
it never busy-loops.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import syslog
from dataclasses import dataclass, field
from typing import NoReturn, Optional

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorThreads
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer, provider

from vdetwist import fastDispatch
from vdetwist._version import versionLine
from vdetwist.errors import VdeError
from vdetwist.interfaces import IFrameReceiver
from vdetwist.lab.console import PROMPT
from vdetwist.lab.runtime import FilterRuntime
from vdetwist.lab.wirevalue import WireValueError
from vdetwist._transport.pipes import PipeStandardIO
from vdetwist.registry import openVNL
from vdetwist.streamplug import StreamPlug
from vdetwist.vde2.console import serveStdio
from vdetwist.scripts.cli import UsageError, daemonize, getopts, logWarningsToStderr, stopReactor, usageExit

USAGE = """\
Usage: wirefilter OPTIONS
\t--help|-h
\t--rcfile|-f Configuration file
\t--loss|-l loss_percentage
\t--lostburst|-L lost_packet_burst_len
\t--delay|-d delay_ms
\t--dup|-D dup_percentage
\t--band|-b bandwidth(bytes/s)
\t--speed|-s interface_speed(bytes/s)
\t--chanbufsize|-c channel_bufsize
\t--noise|-n noise_bits/megabye
\t--mtu|-m mtu_size
\t--nofifo|-N
\t--mgmt|-M management_socket
\t--mgmtmode management_permission(octal)
\t--vde-plug plug1:plug2 | -v plug1:plug2
\t--daemon
\t--pidfile pidfile
\t--blink blinksocket
\t--blinkid blink_id_string
\t--version (vdetwist's version)
"""

SHORT = "hNl:n:d:M:D:m:b:s:c:v:L:f:"
LONG = [
    "help", "rcfile=", "loss=", "lostburst=", "delay=", "dup=", "band=", "speed=",
    "chanbufsize=", "capacity=", "noise=", "mtu=", "nofifo", "mgmt=", "mgmtmode=",
    "vde-plug=", "daemon", "pidfile=", "blink=", "blinkid=", "version",
]
#: The options setting a parameter, and the parameter.
VALUE_OPTIONS = {
    "-l": "loss", "--loss": "loss", "-L": "lostburst", "--lostburst": "lostburst",
    "-d": "delay", "--delay": "delay", "-D": "dup", "--dup": "dup",
    "-b": "bandwidth", "--band": "bandwidth", "-s": "speed", "--speed": "speed",
    "-c": "chanbufsize", "--chanbufsize": "chanbufsize", "--capacity": "chanbufsize",
    "-n": "noise", "--noise": "noise", "-m": "mtu", "--mtu": "mtu",
}
PROG = "wirefilter"
#: Seconds the output of a side on pipes may take to flush at the end.
FLUSH_TIMEOUT = 5.0


@dataclass
class Options:
    values: list[tuple[str, str, str]] = field(default_factory=list)
    rcfile: Optional[str] = None
    nofifo: bool = False
    mgmt: Optional[str] = None
    mgmtmode: int = 0o700
    plugs: Optional[tuple[str, str]] = None
    daemon: bool = False
    pidfile: Optional[str] = None
    blink: Optional[str] = None
    blinkid: Optional[str] = None
    version: bool = False



def parseArgs(argv: list[str]) -> Options:
    """
    vde2 wirefilter's command line, into L{Options}.

    @raise UsageError: a bad option (the usage follows the message).
    @raise WireValueError: a bad value (one line, no usage).
    """
    opts, rest = getopts(argv, SHORT, LONG, f"{PROG}: ", longOnly=True)
    options = Options()
    for name, value in opts:
        if name in ("-h", "--help"):
            raise UsageError("")
        elif name == "--version":
            options.version = True
        elif name in VALUE_OPTIONS:
            options.values.append((name, VALUE_OPTIONS[name], value))
        elif name in ("-f", "--rcfile"):
            options.rcfile = value
        elif name in ("-N", "--nofifo"):
            options.nofifo = True
        elif name in ("-M", "--mgmt"):
            options.mgmt = value
        elif name == "--mgmtmode":
            try:
                options.mgmtmode = int(value, 8)
            except ValueError:
                raise WireValueError(
                    f"--mgmtmode: {value!r} is not an octal mode: write e.g. 0700"
                ) from None
        elif name in ("-v", "--vde-plug"):
            options.plugs = splitPlugs(value)
        elif name == "--daemon":
            options.daemon = True
        elif name == "--pidfile":
            options.pidfile = value
        elif name == "--blink":
            options.blink = value
        elif name == "--blinkid":
            options.blinkid = value
    if rest:
        raise UsageError(f"{PROG}: unexpected argument {rest[0]!r}")
    return options


def splitPlugs(value: str) -> tuple[str, str]:
    """
    The two sides of C{-v}: split at the first C{:} that does not start
    a C{://}, so that C{/tmp/s1:/tmp/s2} splits as vde2 splits it and
    C{vde:///tmp/s1:vxvde://234.0.0.1} splits too.

    @raise UsageError: there is no such C{:}.
    """
    start = 0
    while True:
        colon = value.find(":", start)
        if colon < 0:
            raise UsageError("Bad vde_plugs specification.")
        if not value.startswith("//", colon + 1):
            return value[:colon], value[colon + 1:]
        start = colon + 1


def _isFifo(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _stdioSides(options: Options) -> tuple[tuple[int, int], ...]:
    """
    The (input, output) descriptors of the sides that are streams, as
    wirefilter finds them: stdin/stdout for a C{-} of C{-v}; without C{-v},
    stdin/stdout and, when dpipe set C{ALTERNATE_STDIN}/C{ALTERNATE_STDOUT},
    those as the right side.

    @raise VdeError: stdin or stdout is not a pipe.
    """
    streams = [(0, 1)] if options.plugs is None or "-" in options.plugs else []
    if not streams:
        return ()
    for fd, name in ((0, "stdin"), (1, "stdout")):
        if not _isFifo(fd):
            raise VdeError(f"Error on {name}: it is not a pipe")
    if options.plugs is None:
        alternate = os.environ.get("ALTERNATE_STDIN"), os.environ.get("ALTERNATE_STDOUT")
        if None not in alternate:
            altIn, altOut = (int(a) for a in alternate)  # type: ignore[arg-type]
            for fd, name in ((altIn, "secondary in"), (altOut, "secondary out")):
                if not _isFifo(fd):
                    raise VdeError(f"Error on {name}: it is not a pipe")
            streams.append((altIn, altOut))
    return tuple(streams)


@implementer(IFrameReceiver)
class _Side:
    """
    Frames read on one side enter the filter in one direction; speed holds
    the reading back while the interface is busy.
    """

    def __init__(self, link: "FilterLink", direction: int) -> None:
        self.link = link
        self.direction = direction
        self.resumeCall = None

    def frameReceived(self, frame: bytes) -> None:
        link = self.link
        link.runtime.filter.receive(self.direction, frame)
        until = link.runtime.filter.readableAt(self.direction)
        if until and self.resumeCall is None:
            wait = until - link.reactor.seconds()
            if wait > 0:
                plug = link.plugs[self.direction]
                plug.pauseProducing()
                self.resumeCall = link.reactor.callLater(wait, self._resume, plug)

    def _resume(self, plug) -> None:
        self.resumeCall = None
        plug.resumeProducing()

    def plugClosed(self, reason: Failure) -> None:
        self.link.end(reason)


class FilterLink:
    """
    The filter between its plugs (one for a one-way filter, two otherwise):
    direction D reads plug D and writes the other.
    """

    def __init__(self, reactor, runtime: FilterRuntime, plugs: list) -> None:
        self.reactor = reactor
        self.runtime = runtime
        self.plugs = plugs
        self.done: Deferred[None] = Deferred()
        self.ended = False
        self.stopped: Optional[Deferred] = None
        targets = plugs if len(plugs) == 1 else plugs[::-1]
        send = [p.send for p in targets]
        runtime.connect(lambda direction, frame: send[direction](frame))
        for direction, plug in enumerate(plugs):
            plug.startReceiving(_Side(self, direction))

    def end(self, reason=None) -> Optional[Deferred]:
        """
        Close everything; the result fires once the console socket is gone.
        """
        if self.ended:
            return None
        self.ended = True
        self.stopped = self.runtime.close()
        for plug in self.plugs:
            plug.close()
        self.done.callback(None)
        return self.stopped


async def _openSides(reactor, options: Options) -> list:
    """
    The plugs of both sides (or the one stream of a one-way filter).
    """
    streams = list(_stdioSides(options))
    names = options.plugs or ("-", "-")
    plugs: list = []
    try:
        for name in names if options.plugs else ():
            if name == "-":
                plugs.append(_stream(reactor, *streams.pop(0)))
                continue
            try:
                plugs.append(await openVNL(reactor, name, "vde_crosscable"))
            except VdeError as e:
                sys.stderr.write(f"vdeplug {name}: {e.strerror}\n")
                raise VdeError(f"-v {name}: {e}") from None
        if options.plugs is None:
            plugs.extend(_stream(reactor, *fds) for fds in streams)
    except BaseException:
        for plug in plugs:
            plug.close()
        raise
    return plugs


@implementer(IHalfCloseableProtocol)
class _StreamSide(StreamPlug):
    """
    A side on pipes.  The end of its input closes it once its output is
    flushed (a plain protocol would lose what is still being written), and
    C{gone} fires then, for the filter to wait for before it exits.
    """

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.gone: Deferred[None] = Deferred()

    def readConnectionLost(self) -> None:
        self.close()

    def writeConnectionLost(self) -> None:
        self.close()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        super().connectionLost(reason)
        if not self.gone.called:
            self.gone.callback(None)


def _stream(reactor, infd: int, outfd: int) -> _StreamSide:
    plug = _StreamSide(f"pipes {infd}:{outfd}")
    PipeStandardIO(plug, reactor, infd, outfd)
    return plug


@provider(ILogObserver)
def _syslogObserver(event) -> None:
    text = formatEvent(event)
    if text and event.get("log_level", LogLevel.info) >= LogLevel.warn:
        syslog.syslog(syslog.LOG_WARNING, text)


async def run(reactor, options: Options, stop) -> None:
    """
    Set the filter up as C{options} say and run it until a side ends, the
    console says C{shutdown} or stdin ends.

    @raise VdeError: something could not be set up (the message says what).
    @raise WireValueError: a bad value.
    """
    plugs = options.plugs
    bidirectional = plugs is not None or (
        "ALTERNATE_STDIN" in os.environ and "ALTERNATE_STDOUT" in os.environ)
    runtime = FilterRuntime(reactor, bidirectional=bidirectional, shutdown=stop)
    try:
        for option, parameter, value in options.values:
            try:
                runtime.filter.set(parameter, value)
            except WireValueError as e:
                raise WireValueError(f"{option} {value}: {e}") from None
        runtime.filter.nofifo = options.nofifo
        if options.blink is not None:
            runtime.setBlink(options.blink, options.blinkid)
        sides = await _openSides(reactor, options)
        link = FilterLink(reactor, runtime, sides)
        if options.rcfile is not None:
            runtime.runRcfile(options.rcfile)
        if options.mgmt is not None:
            runtime.listen(options.mgmt, options.mgmtmode)
    except BaseException:
        runtime.close()
        raise
    pidfile = None if options.pidfile is None else os.path.abspath(options.pidfile)
    if options.daemon:
        daemonize()
        syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)
        globalLogBeginner.beginLoggingTo([_syslogObserver], redirectStandardIO=False)
    else:
        logWarningsToStderr()
    if pidfile is not None:
        try:
            runtime.writePidfile(pidfile)
        except VdeError:
            link.end()
            raise
    if plugs is not None:
        sys.stderr.write(f"{PROG}: bidirectional vdeplug filter L={plugs[0] or 'DEFAULT_SWITCH'}"
                         f" R={plugs[1] or 'DEFAULT_SWITCH'} starting...\n")
        if not options.daemon and "-" not in plugs:
            serveStdio(reactor, runtime.console, prompt=PROMPT)
    else:
        way = "bidirectional" if bidirectional else "monodirectional"
        sys.stderr.write(f"{PROG}: {way} filter starting...\n")
    reactor.addSystemEventTrigger("before", "shutdown", link.end)
    await link.done
    if link.stopped is not None:
        await link.stopped
    streams = [p.gone for p in link.plugs if isinstance(p, _StreamSide)]
    if streams:
        await gatherResults(streams).addTimeout(FLUSH_TIMEOUT, reactor)


def main(argv: Optional[list[str]] = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    try:
        options = parseArgs(argv[1:])
    except UsageError as e:
        usageExit(e, USAGE, 1)
    except WireValueError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        raise SystemExit(1)
    if options.version:
        sys.stdout.write(f"{versionLine(PROG)}\n")
        raise SystemExit(0)
    from twisted.internet import reactor
    from twisted.internet.task import react

    fastDispatch(reactor)
    caught: list[int] = []

    def onSignal(signum: int, frame) -> None:
        caught.append(signum)
        IReactorThreads(reactor).callFromThread(stopReactor, reactor)

    def installSignals() -> None:
        for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, onSignal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    installSignals()
    reactor.callWhenRunning(installSignals)
    errors: list[str] = []

    def failed(reason: Failure) -> Optional[Failure]:
        if reason.check(VdeError, WireValueError):
            errors.append(f"{PROG}: {reason.value}\n")
            return None
        return reason

    try:
        react(lambda r: ensureDeferred(run(r, options, lambda: stopReactor(r))).addErrback(failed))
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    if errors:
        sys.stderr.write("".join(errors))
        status = 1
    for signum in caught:
        if signum != signal.SIGTERM:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
