"""
Writing captures without ever making the caller wait: L{CaptureFile} takes
frames on the reactor thread (a timestamp and an append each) and a thread
of its own formats and writes them (L{vdetwist.wire.pcap}).  Memory is
bounded: frames beyond L{BUFFER_LIMIT} bytes not yet written are dropped and
counted, so a slow or stuck disk costs a switch a capture's frames, never
its forwarding.  A write error ends the capture with one error line; the
caller's C{onFailure} hears about it.

L{SwitchCaptures} is what a switch console starts and stops: vde2's
C{pdump} (every frame entering the switch, to one file) and captures of
single ports (both directions), on a L{vdetwist.node.Node}'s taps, which
cost nothing while no capture is on.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from typing import Callable, Optional

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from vdetwist.errors import VdeError
from vdetwist.wire.pcap import (
    DEFAULT_SNAPLEN,
    FILE_HEADER_SIZE,
    PcapError,
    encodeRecords,
    fileHeader,
)
from vdetwist.node.node import NodeObserver

__all__ = ["BUFFER_LIMIT", "CaptureFile", "SwitchCaptures", "openPcap"]

log = Logger()

#: Bytes of frames a capture holds before they are written; beyond, frames
#: are dropped (and counted).
BUFFER_LIMIT = 4 << 20
#: Seconds frames wait on the reactor thread before the writer gets them.
FLUSH_DELAY = 0.05
#: Per-record overhead counted against L{BUFFER_LIMIT}.
_RECORD_COST = 16
#: What the writer thread is told to do besides writing a batch.
_STOP = object()


def _writeAll(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def openPcap(path: str, *, append: bool = False, exclusive: bool = False) -> int:
    """
    Open C{path} for a capture and return its descriptor, positioned after a
    pcap file header.

    @param append: keep an existing file's records (it must have been
        written with L{fileHeader}'s header, as C{vdecapture -a} demands);
        an empty or new file gets the header.
    @param exclusive: refuse an existing file (as vde2's C{pdump}: a
        console user must not be able to truncate files), created mode 0600.
    @raise OSError: the file cannot be opened or written.
    @raise PcapError: C{append} to a file that has another header.
    """
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    elif append:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        if append:
            existing = os.pread(fd, FILE_HEADER_SIZE, 0)
            if existing:
                if existing != fileHeader():
                    raise PcapError(
                        f"{path}: cannot append: its header is not the one vdecapture "
                        f"writes (microsecond pcap, Ethernet, snaplen {DEFAULT_SNAPLEN})"
                    )
                return fd
        _writeAll(fd, fileHeader())
    except BaseException:
        os.close(fd)
        raise
    return fd


class CaptureFile:
    """
    A pcap file being written by a thread of its own.

    @param reactor: C{IReactorTime} and C{IReactorThreads} (timestamps, the
        flush timer, results from the thread).
    @param fd: where records go (after its header: see L{openPcap});
        closed by L{close} when C{ownFd}.
    @param name: what messages call the file.
    @param onFailure: called with the C{OSError} when a write fails (the
        capture has then stopped; one error line is logged unless C{quiet}).
    @param limit: bytes held at most (see L{BUFFER_LIMIT}).

    @ivar frames: frames taken.
    @ivar dropped: frames refused because the writer was behind (or after a
        failure).
    @ivar failure: the C{OSError} that stopped it, or C{None}.
    """

    def __init__(
        self,
        reactor,
        fd: int,
        name: str,
        *,
        ownFd: bool = True,
        snaplen: int = DEFAULT_SNAPLEN,
        limit: int = BUFFER_LIMIT,
        onFailure: Optional[Callable[[OSError], None]] = None,
        quiet: bool = False,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.frames = 0
        self.dropped = 0
        self.failure: Optional[OSError] = None
        self.onFailure = onFailure
        self.quiet = quiet
        self._seconds = reactor.seconds
        self._limit = limit
        self._held = 0
        self._batch: list[tuple[float, bytes]] = []
        self._timer = None
        self._fd = fd
        self._ownFd = ownFd
        self._snaplen = snaplen
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: list[Deferred] = []
        self._finished = False
        self._closing = False
        self._thread = threading.Thread(
            target=self._write, name=f"capture {name}", daemon=True
        )
        self._thread.start()

    def __call__(self, frame: bytes) -> None:
        """
        Take C{frame}: per frame, so only a timestamp and an append.
        """
        if self._held >= self._limit:
            self.dropped += 1
            return
        self._batch.append((self._seconds(), frame))
        self._held += len(frame) + _RECORD_COST
        self.frames += 1
        if self._timer is None:
            self._timer = self.reactor.callLater(FLUSH_DELAY, self._handOver)

    @property
    def held(self) -> int:
        """
        Bytes taken and not yet written.
        """
        return self._held

    def _handOver(self) -> None:
        self._timer = None
        batch, self._batch = self._batch, []
        if batch:
            self._queue.put(batch)

    def _handOverNow(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._handOver()

    def reopen(self, opener: Callable[[], int]) -> None:
        """
        Write what was taken so far, then continue in the descriptor
        C{opener} returns (called on the writer thread: C{SIGHUP} of
        C{vdecapture}, as after a log rotation).
        """
        self._handOverNow()
        self._queue.put(opener)

    def close(self) -> Deferred:
        """
        Stop taking frames, write what was taken, close the file.

        @return: fires (with C{None}) once the writer is done.
        """
        if not self._closing:
            self._closing = True
            self._limit = -1
            self._handOverNow()
            self._queue.put(_STOP)
        if self._finished:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    # -- the writer thread ------------------------------------------------

    def _write(self) -> None:
        failure = None
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if failure is not None:
                continue
            try:
                if callable(item):
                    self._closeFd()
                    self._fd, self._ownFd = item(), True
                    continue
                data = encodeRecords(item, self._snaplen)
                _writeAll(self._fd, data)
            except OSError as e:
                failure = e
                self.reactor.callFromThread(self._failed, e)
                continue
            held = sum(len(frame) + _RECORD_COST for _, frame in item)
            self.reactor.callFromThread(self._written, held)
        self._closeFd()
        self.reactor.callFromThread(self._finish)

    def _closeFd(self) -> None:
        if self._ownFd:
            try:
                os.close(self._fd)
            except OSError:
                pass

    # -- back on the reactor thread ---------------------------------------

    def _written(self, count: int) -> None:
        if self._limit >= 0:
            self._held -= count

    def _finish(self) -> None:
        self._finished = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _failed(self, error: OSError) -> None:
        self.failure = error
        self._limit = -1
        if not self.quiet:
            log.error(
                "capture to {name} stopped: {error}",
                name=self.name, error=error.strerror or str(error),
            )
        if self.onFailure is not None:
            self.onFailure(error)


class SwitchCaptures(NodeObserver):
    """
    The captures of one node started from its console: vde2's C{pdump}
    (every frame entering the node, once, from any port, to
    L{pdumpPath}) and captures of single ports (every frame the port
    receives or is sent).  Files are created, never overwritten (mode 0600).

    @ivar pdumpPath: the C{pdump} file name (C{vde_dump.cap} as vde2's,
        relative to the switch's working directory).
    @ivar pdump: the open C{pdump} L{CaptureFile}, or C{None}.
    @ivar pdumpActive: whether C{pdump} is taking frames.
    @ivar ports: port -> its L{CaptureFile}.
    """

    def __init__(self, node, reactor) -> None:
        self.node = node
        self.reactor = reactor
        self.pdumpPath = "vde_dump.cap"
        self.pdump: Optional[CaptureFile] = None
        self.pdumpActive = False
        self.ports: dict = {}
        self._closing: list[Deferred] = []
        node.addObserver(self)

    def _open(self, path: str, what: str, onFailure: Callable[[OSError], None]) -> CaptureFile:
        try:
            fd = openPcap(path, exclusive=True)
        except OSError as e:
            log.error(
                "cannot capture {what} to {path}: {error}",
                what=what, path=path, error=e.strerror,
            )
            raise VdeError(f"{path}: {e.strerror}", e.errno or errno.EIO) from None
        log.info("capturing {what} to {path}", what=what, path=path)
        return CaptureFile(self.reactor, fd, path, onFailure=onFailure)

    def _retire(self, capture: CaptureFile) -> None:
        d = capture.close()
        self._closing.append(d)
        d.addBoth(lambda _: self._closing.remove(d))

    # -- pdump ------------------------------------------------------------

    def setPdumpActive(self, active: bool) -> None:
        """
        C{pdump/active}: start (opening the file if not open yet) or stop
        taking frames; a stopped dump keeps its file, and resumes there.
        """
        if active == self.pdumpActive:
            return
        if active:
            if self.pdump is None:
                self.pdump = self._open(self.pdumpPath, "the switch", self._pdumpFailed)
            self.node.addTap(None, self.pdump)
        else:
            self.node.removeTap(None, self.pdump)
        self.pdumpActive = active

    def setPdumpPath(self, path: str) -> None:
        """
        C{pdump/filename}: dump to the new file C{path} from now on (it is
        created at once, as vde2 does); the old file is closed.
        """
        capture = self._open(path, "the switch", self._pdumpFailed)
        self.pdumpPath = path
        old, self.pdump = self.pdump, capture
        if self.pdumpActive:
            self.node.replaceTap(None, old, capture)
        if old is not None:
            self._retire(old)

    def _pdumpFailed(self, error: OSError) -> None:
        capture, self.pdump = self.pdump, None
        if self.pdumpActive:
            self.node.removeTap(None, capture)
            self.pdumpActive = False
        if capture is not None:
            self._retire(capture)

    # -- ports ------------------------------------------------------------

    def capturePort(self, port, path: str) -> None:
        """
        Capture C{port}'s traffic, both directions, to the new file C{path}.

        @raise VdeError: C{EBUSY} if the port is being captured already;
            the file's error if it cannot be created.
        """
        if port in self.ports:
            raise VdeError(f"port {port.number} is being captured already", errno.EBUSY)
        capture = self._open(
            path, f"port {port.number}", lambda error: self.stopPort(port)
        )
        self.ports[port] = capture
        self.node.addTap(port, capture)

    def stopPort(self, port) -> None:
        """
        End the capture of C{port}.

        @raise VdeError: C{ENXIO} if it is not being captured.
        """
        capture = self.ports.pop(port, None)
        if capture is None:
            raise VdeError(f"port {port.number} is not being captured", errno.ENXIO)
        self.node.removeTap(port, capture)
        self._retire(capture)
        log.info(
            "capture of port {port} to {path} ended: {frames} frames, {dropped} dropped",
            port=port.number, path=capture.name, frames=capture.frames, dropped=capture.dropped,
        )

    def portRemoved(self, port) -> None:
        if port in self.ports:
            self.stopPort(port)

    # -- the end ----------------------------------------------------------

    def stopAll(self) -> Deferred:
        """
        Stop every capture and stop observing the node.

        @return: fires when every file is written and closed.
        """
        for port in list(self.ports):
            self.stopPort(port)
        if self.pdump is not None:
            if self.pdumpActive:
                self.node.removeTap(None, self.pdump)
                self.pdumpActive = False
            self._retire(self.pdump)
            self.pdump = None
        try:
            self.node.removeObserver(self)
        except ValueError:
            pass
        if not self._closing:
            return succeed(None)
        return DeferredList(list(self._closing)).addCallback(lambda _: None)
