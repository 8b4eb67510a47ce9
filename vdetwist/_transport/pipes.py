"""
Pipe transports for the stream plugs on stdio (C{vde_plug}) and on a
command's stdin/stdout (C{cmd://}, C{vde_plug VNL = CMD}): Twisted's, with a
reader and a writer that cost less per frame.

Twisted's L{ProcessReader} (under L{StandardIO} and spawned processes) reads
8 KiB per event, five 1500-byte frames per wake-up, so the per-event cost
(C{epoll_wait}, dispatch, a C{read} call) dominated the sending side of a
C{vde_plug} stream cable: L{PipeReader} reads a whole pipe.  On the
receiving side each frame is one C{write} of one record, and
L{ProcessWriter.write} did per call what only the first write of a batch
needs: L{PipeWriter} appends the others.  Pausing, EOF, errors and flushing
are Twisted's, unchanged.
"""

from __future__ import annotations

import os
from typing import AnyStr, Mapping, Optional, Sequence

from twisted.internet.interfaces import IProcessProtocol, IProtocol, IReactorProcess
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.process import Process, ProcessReader, ProcessWriter
from twisted.internet.stdio import StandardIO
from zope.interface import implementer

#: Bytes read per event: a whole default Linux pipe (16 pages).  Larger reads
#: gain nothing from a default pipe and, above glibc's mmap threshold
#: (128 KiB), would map and fault in a fresh buffer for every read.
READ_SIZE = 1 << 16


class PipeReader(ProcessReader):
    """
    A L{ProcessReader} that reads up to L{READ_SIZE} bytes per event.
    """

    #: Its events may skip C{log.callWithLogger}'s layers (see
    #: L{vdetwist._transport.dispatch}).
    fastEvents = True

    def doRead(self) -> Optional[Exception]:
        # fdesc.readFromFD with a larger read.
        try:
            data = os.read(self.fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return CONNECTION_LOST
        if not data:
            return CONNECTION_DONE
        self.dataReceived(data)
        return None


class PipeWriter(ProcessWriter):
    """
    A L{ProcessWriter} whose writes, while earlier ones wait for the reactor
    to flush them, only append to its buffer.

    C{ProcessWriter.write} stops reading (its read hack), checks, appends and
    starts writing on every call: 0.5 µs, per frame in the stream encoding,
    a third of what the receiving side of a stream plug spent in Python.
    Only the first write after a flush needs all that, and does it.
    """

    fastEvents = True

    def write(self, data: bytes) -> None:
        # A pending write did the rest already: stopped reading, started
        # writing (the buffer empties only in doWrite, which stops writing).
        if not (
            self._tempDataLen
            and self.connected
            and not self._writeDisconnected
            and isinstance(data, bytes)
        ):
            super().write(data)
            return
        self._tempDataBuffer.append(data)
        self._tempDataLen += len(data)
        if self._tempDataLen + len(self.dataBuffer) > self.bufferSize:
            self._maybePauseProducer()


class PipeStandardIO(StandardIO):
    """
    L{StandardIO} on a L{PipeReader} and a L{PipeWriter}.
    """

    def __init__(
        self, proto: IProtocol, reactor, stdin: int = 0, stdout: int = 1
    ) -> None:
        # As StandardIO.__init__, with our reader and writer (Twisted offers
        # no hook for them here).
        self.protocol = proto
        self._writer = PipeWriter(reactor, self, "write", stdout)
        self._reader = PipeReader(reactor, self, "read", stdin)
        self._reader.startReading()
        self.protocol.makeConnection(self)


class PipeProcess(Process):
    """
    A child process whose pipes are L{PipeReader}s and L{PipeWriter}s.
    """

    processReaderFactory = PipeReader
    processWriterFactory = PipeWriter


@implementer(IReactorProcess)
class PipeProcessReactor:
    """
    The reactor as a L{twisted.internet.endpoints.ProcessEndpoint} sees it:
    spawns L{PipeProcess}es on C{reactor}, as a POSIX reactor's
    C{spawnProcess} spawns L{Process}es (C{env=None} passes C{os.environ}).
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: bytes | str,
        args: Sequence[bytes | str] = (),
        env: Optional[Mapping[AnyStr, AnyStr]] = None,
        path: bytes | str | None = None,
        uid: Optional[int] = None,
        gid: Optional[int] = None,
        usePTY: bool = False,
        childFDs: Optional[Mapping[int, int | str]] = None,
    ) -> PipeProcess:
        if usePTY:
            raise ValueError("PipeProcessReactor spawns processes on pipes, not PTYs")
        return PipeProcess(
            self.reactor, executable, args, env, path, processProtocol, uid, gid, childFDs
        )
