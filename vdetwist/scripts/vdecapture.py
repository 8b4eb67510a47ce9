"""
C{vdecapture}: capture what a VDE network delivers to a plug, into a pcap
file or onto stdout, with the command line of virtualsquare's
C{vdecapture}::

    vdecapture [-c N] [-s BYTES] [-t SECS] [-a] [-q] VNL FILE|-

The file is a classic pcap file (microsecond timestamps, link type
Ethernet, snapshot length 65535, native byte order) as the C tool writes, so
that either can append (C{-a}) to the other's files.  C{-} writes to stdout,
for C{tcpdump -r -} or C{wireshark -k -i -}.  C{SIGHUP} reopens the file (it
is truncated unless C{-a}) as after a log rotation; C{SIGINT} and C{SIGTERM}
end the capture, as do C{-c}, C{-s}, C{-t} and the network closing.

Unlike the C tool, bad numbers are refused with one line (it reads them as
0, no limit), and frames are written by a thread: frames the disk cannot
keep up with beyond L{vdetwist.lab.capture.BUFFER_LIMIT} bytes are dropped
and counted, and the count is reported at the end.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from dataclasses import dataclass
from typing import NoReturn, Optional

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist import fastDispatch
from vdetwist._version import versionLine
from vdetwist.errors import VdeError
from vdetwist.interfaces import IFrameReceiver, IVdePlug
from vdetwist.lab.capture import CaptureFile, openPcap
from vdetwist.wire.pcap import FILE_HEADER_SIZE, RECORD_HEADER_SIZE, PcapError, fileHeader
from vdetwist.registry import openVNL
from vdetwist.scripts.cli import UsageError, getopts, logWarningsToStderr

USAGE = """\
Usage: vdecapture [OPTIONS] VNL outfile
  VNL is the Virtual Network Locator (e.g. hub:///tmp/hub)
    see vde_plug(1)
  outfile is the pathname of the output file (- means stdout)

OPTIONS:
  -c, --count N   max number of captured packets
  -s, --size N    max size of the output file (bytes)
  -t, --time N    max capture time (seconds)
  -a, --append    append data if the output file exists
  -q, --quiet     do not print packet counter on stderr
  -h, --help      display this help and exit
  --version       print vdetwist's version and exit
"""

SHORT = "c:s:t:aqh"
LONG = ["count=", "size=", "time=", "append", "quiet", "help", "version"]


@dataclass
class Options:
    count: int = 0
    size: int = 0
    time: int = 0
    append: bool = False
    quiet: bool = False
    version: bool = False
    vnl: str = ""
    path: str = ""


def _number(option: str, value: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        number = -1
    if number < 0:
        raise UsageError(f"vdecapture: {option}: {value!r} is not a number >= 0 (0: no limit)")
    return number


def parseArgs(argv: list[str]) -> Options:
    """
    The command line, into L{Options}.

    @raise UsageError: a bad command line, or C{--help}.
    """
    opts, rest = getopts(argv, SHORT, LONG, "vdecapture: ")
    options = Options()
    for name, value in opts:
        if name in ("-h", "--help"):
            raise UsageError("")
        elif name == "--version":
            options.version = True
            return options
        elif name in ("-c", "--count"):
            options.count = _number(name, value)
        elif name in ("-s", "--size"):
            options.size = _number(name, value)
        elif name in ("-t", "--time"):
            options.time = _number(name, value)
        elif name in ("-a", "--append"):
            options.append = True
        elif name in ("-q", "--quiet"):
            options.quiet = True
    if len(rest) != 2:
        raise UsageError(f"vdecapture: expected VNL and output file, got {len(rest)} arguments")
    options.vnl, options.path = rest
    return options


@implementer(IFrameReceiver)
class Capture:
    """
    One run: frames from the plug to the L{CaptureFile}, counted against
    the limits.

    @ivar done: fires with the exit status once the file is closed.
    """

    def __init__(self, reactor, options: Options, fd: int, stderr) -> None:
        self.reactor = reactor
        self.options = options
        self.stderr = stderr
        self.counter = not options.quiet and stderr.isatty()
        self.plug: Optional[IVdePlug] = None
        self.status = 0
        self.size = 0 if options.append and options.path != "-" else FILE_HEADER_SIZE
        self.done: Deferred = Deferred()
        self.ending = False
        self.file = CaptureFile(
            reactor, fd, "stdout" if options.path == "-" else options.path,
            ownFd=options.path != "-", onFailure=self._failed, quiet=True,
        )

    def frameReceived(self, frame: bytes) -> None:
        if self.ending:
            return
        options = self.options
        if options.size:
            self.size += RECORD_HEADER_SIZE + len(frame)
            if self.size > options.size:
                self.end()
                return
        self.file(frame)
        if self.counter:
            self.stderr.write(f"\r{self.file.frames}")
            self.stderr.flush()
        if options.count and self.file.frames >= options.count:
            self.end()

    def plugClosed(self, reason: Failure) -> None:
        if not self.ending and not self.options.quiet:
            self._say(f"the network closed: {reason.getErrorMessage()}")
        self.end()

    def reopen(self) -> None:
        """
        C{SIGHUP}: continue in a new file of the same name.
        """
        if self.options.path != "-" and not self.ending:
            self.file.reopen(lambda: openPcap(self.options.path, append=self.options.append))

    def _failed(self, error: OSError) -> None:
        if error.errno != errno.EPIPE:
            self._say(f"{self.file.name}: {error.strerror or error}")
            self.status = 1
        self.end()

    def _say(self, text: str) -> None:
        if self.counter:
            self.stderr.write("\n")
            self.counter = False
        self.stderr.write(f"vdecapture: {text}\n")

    def end(self) -> None:
        """
        Stop taking frames, close the plug, write the rest, then fire
        L{done}.
        """
        if self.ending:
            return
        self.ending = True
        if self.plug is not None:
            self.plug.close()
        self.file.close().addCallback(self._closed)

    def _closed(self, _) -> None:
        if self.counter:
            self.stderr.write("\n")
        if self.file.dropped:
            self._say(f"{self.file.dropped} frames dropped: the output could not keep up")
        self.done.callback(self.status)


async def captureMain(reactor, options: Options) -> int:
    """
    Open the network and the file, capture until a limit, a signal or the
    end of the network.
    """
    fastDispatch(reactor)
    try:
        plug = await openVNL(reactor, options.vnl, "vdecapture")
    except VdeError as e:
        sys.stderr.write(f"vdecapture: {e}\n")
        return 1
    try:
        if options.path == "-":
            fd = sys.stdout.fileno()
            os.write(fd, fileHeader())
        else:
            fd = openPcap(options.path, append=options.append)
    except (OSError, PcapError) as e:
        plug.close()
        if isinstance(e, OSError) and e.errno == errno.EPIPE:
            return 0  # the reader is gone already: nothing to say
        message = f"{options.path}: {e.strerror}" if isinstance(e, OSError) else str(e)
        sys.stderr.write(f"vdecapture: {message}\n")
        return 1
    capture = Capture(reactor, options, fd, sys.stderr)
    capture.plug = plug
    if options.time:
        timer = reactor.callLater(options.time, capture.end)
        capture.done.addBoth(_cancelTimer, timer)
    _onSignals(reactor, capture)
    plug.startReceiving(capture)
    return await capture.done


def _cancelTimer(result, timer):
    if timer.active():
        timer.cancel()
    return result


def _onSignals(reactor, capture: Capture) -> None:
    def stop(signum: int, frame) -> None:
        reactor.callFromThread(capture.end)

    def hangup(signum: int, frame) -> None:
        reactor.callFromThread(capture.reopen)

    def install() -> None:
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGHUP, hangup)

    # Now, and again once the reactor runs (it installs its own handlers).
    install()
    reactor.callWhenRunning(install)


def main(argv: Optional[list[str]] = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    try:
        options = parseArgs(argv[1:])
    except UsageError as e:
        sys.stderr.write(f"{e} (vdecapture --help shows the usage)\n" if str(e) else USAGE)
        raise SystemExit(1)
    if options.version:
        sys.stdout.write(f"{versionLine('vdecapture')}\n")
        raise SystemExit(0)
    logWarningsToStderr()
    from twisted.internet.task import react

    status: list[int] = []

    def run(reactor) -> Deferred:
        return ensureDeferred(captureMain(reactor, options)).addCallback(status.append)

    try:
        react(run)
    except SystemExit:
        pass
    raise SystemExit(status[0] if status else 1)


if __name__ == "__main__":
    main()
