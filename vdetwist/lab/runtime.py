"""
What surrounds a L{WireFilter} in the C{wirefilter} command and in a
C{wirefilter://} VNL alike: its management socket, its rc file, its pid
file and its blink socket.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from vdetwist.errors import VdeError
from vdetwist.lab.console import WirefilterConsole
from vdetwist.lab.filter import DEFAULT_LIMIT, LR, WireFilter
from vdetwist.vde2.console import listenConsole

__all__ = ["Blinker", "FilterRuntime", "writePidfile"]

log = Logger()


class Blinker:
    """
    wirefilter's C{--blink}: one datagram C{"ID DIR LENGTH\\n"} to a unix
    datagram socket for each frame sent, LENGTH counting the 2-byte length
    of wirefilter's stream framing as wirefilter does.  A receiver that is
    missing or full loses the messages, never the frames.
    """

    def __init__(self, path: str, ident: Optional[str] = None, bidirectional: bool = True) -> None:
        self.path = path
        self.ident = f"{os.getpid():06d}" if ident is None else ident
        self.bidirectional = bidirectional
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)

    def frame(self, direction: int, length: int) -> None:
        way = ("LR" if direction == LR else "RL") if self.bidirectional else "--"
        try:
            self.socket.sendto(f"{self.ident} {way} {length + 2}\n".encode(), self.path)
        except OSError:
            pass

    def close(self) -> None:
        self.socket.close()


def writePidfile(path: str) -> str:
    """
    Write this process's pid to a new file at C{path} (as wirefilter: it
    must not exist).

    @return: the absolute path, to remove at the end.
    @raise VdeError: the file exists or cannot be written.
    """
    path = os.path.abspath(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise VdeError(
            f"cannot create the pid file {path}: {e.strerror}", e.errno or errno.EIO
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    return path


class FilterRuntime:
    """
    A filter and what its options asked for around it.

    @param shutdown: what the console's C{shutdown} does (C{None}: refused).
    """

    def __init__(self, reactor, *,
                 seed: Optional[int] = None, limit: int = DEFAULT_LIMIT,
                 bidirectional: bool = True,
                 shutdown: Optional[Callable[[], Any]] = None) -> None:
        self.reactor = reactor
        self.filter = WireFilter(reactor, self._nowhere, random.Random(seed), limit)
        self.bidirectional = bidirectional
        self.blinker: Optional[Blinker] = None
        self.console = WirefilterConsole(self.filter, reactor, bidirectional=bidirectional,
                                         shutdown=shutdown)
        self._listening = None
        self._pidfile: Optional[str] = None

    @staticmethod
    def _nowhere(direction: int, frame: bytes) -> None:
        # No frame enters before connect(); this only stands in until then.
        pass

    def setBlink(self, path: str, ident: Optional[str] = None) -> None:
        """
        Send a blink message for every frame to the socket at C{path}.
        """
        self.blinker = Blinker(path, ident, self.bidirectional)
        self.console.blink = (path, self.blinker.ident)

    def connect(self, deliver: Callable[[int, bytes], None]) -> None:
        """
        Send the filter's frames to C{deliver}, C{(direction, frame)}, after
        a blink message when there is a blink socket.
        """
        blinker = self.blinker
        if blinker is None:
            self.filter.deliver = deliver
            return

        def blinkAndDeliver(direction: int, frame: bytes) -> None:
            blinker.frame(direction, len(frame))
            deliver(direction, frame)

        self.filter.deliver = blinkAndDeliver

    def runRcfile(self, path: str) -> None:
        """
        Run the console commands of C{path}.

        @raise VdeError: it cannot be read, or a command in it failed (the
            message names the file, the line and why).
        """
        try:
            _, errors = self.console.runScript(path)
        except OSError as e:
            raise VdeError(
                f"cannot read the rc file {path}: {e.strerror}", e.errno or errno.EIO
            ) from None
        if errors:
            raise VdeError(errors[0] + (f" (and {len(errors) - 1} more)" if errors[1:] else ""))

    def listen(self, path: str, mode: int = 0o700) -> None:
        """
        Serve the console on the unix socket C{path} (C{-M}, C{mgmt=}).

        @raise VdeError: the path is in use or cannot be bound.
        """
        self._listening = listenConsole(self.reactor, self.console, path, mode)

    def writePidfile(self, path: str) -> None:
        self._pidfile = writePidfile(path)

    def close(self) -> Optional[Deferred]:
        """
        Stop the filter, the console, and remove what was created.

        @return: fires once the console socket is gone (C{None} without
            one), for a reactor shutting down to wait for.
        """
        self.filter.stop()
        self.console.close()
        stopped = None
        if self._listening is not None:
            stopped = self._listening.stopListening()
            self._listening = None
        if self._pidfile is not None:
            try:
                os.unlink(self._pidfile)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.warn("cannot remove {path}: {e}", path=self._pidfile, e=e)
            self._pidfile = None
        if self.blinker is not None:
            self.blinker.close()
            self.blinker = None
        return stopped
