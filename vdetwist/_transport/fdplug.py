"""
The plug over one non-blocking descriptor that carries one frame per read:
datagram and seqpacket sockets, tap and macvtap devices.

The reactor sees the plug itself as a reader (and, while a send queue
waits, a writer).  One readiness event drains the descriptor in a batch of
at most L{READ_BATCH} frames, stopping early when the receiver pauses the
plug or closes it.  Every read error is sorted by one rule, L{HARMLESS}
(skip it and read on), L{GONE} (the device or socket went away) or fatal;
subclasses say what the last two mean for them.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import Callable, Optional

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor, IReadWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import PlugLost
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, ReaderPlug

#: Frames read at most per readiness event, so that one busy descriptor
#: cannot starve the others.
READ_BATCH = 256
#: Read size: one byte more than the largest VDE frame, so that a longer
#: (truncated) frame shows and is discarded instead of delivered cut.
READ_SIZE = VDE_ETHBUFSIZE + 1

#: Errors a read may report that end nothing: nothing there after all
#: (EAGAIN, EINTR), a passing shortage (ENOBUFS, ENOMEM), or an ICMP error
#: or gone peer reported for an earlier datagram sent (ECONNREFUSED,
#: EHOSTUNREACH, ENETUNREACH, ENOTCONN, EPIPE).
HARMLESS = frozenset({
    errno.EAGAIN, errno.EINTR, errno.ENOBUFS, errno.ENOMEM,
    errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.ENOTCONN, errno.EPIPE,
})
#: Errors that mean the device behind a descriptor is gone for good.
GONE = frozenset({errno.EBADFD, errno.ENODEV, errno.ENXIO, errno.EBADF})


@implementer(IReadDescriptor)
class FdPlug(ReaderPlug):
    """
    A plug that reads frames from one descriptor with C{recv(READ_SIZE)}.

    Subclasses supply the descriptor and its C{recv} (or a C{doRead} of
    their own), L{_closeDescriptor}, and may override L{_unusual} (a read
    outside the frame sizes) and L{_readFailed} (an error not in
    L{HARMLESS}).

    Making one gives the reactor the cheaper event dispatch of
    L{vdetwist._transport.dispatch} where it can have it.
    """

    #: Readiness events may skip C{log.callWithLogger}'s layers, on a
    #: reactor given L{vdetwist.fastDispatch}.
    fastEvents = True

    #: How much one read asks for, and the sizes of a read that is a frame
    #: (any other goes to L{_unusual}).
    readSize = READ_SIZE
    minFrame = ETH_HDRLEN
    maxFrame = VDE_ETHBUFSIZE

    def __init__(
        self,
        reactor: IReactorFDSet,
        description: str,
        fd: int,
        recv: Optional[Callable[[int], bytes]] = None,
    ) -> None:
        super().__init__(reactor, description)
        self._fd = fd
        self._recv = recv

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return self.description

    def doRead(self) -> None:
        recv = self._recv
        assert recv is not None, "a subclass without recv reads in its own doRead"
        deliver = self._delivery()
        readSize, minFrame, maxFrame = self.readSize, self.minFrame, self.maxFrame
        received = 0
        try:
            for _ in range(READ_BATCH):
                try:
                    frame = recv(readSize)
                except BlockingIOError:
                    return
                except OSError as e:
                    if e.errno in HARMLESS:
                        continue
                    self._readFailed(e)
                    return
                size = len(frame)
                if size < minFrame or size > maxFrame:
                    if self._unusual(frame):
                        received += 1
                    if self.closed:
                        return
                    continue
                received += 1
                deliver(frame)
                if self.paused or self.closed:
                    return
        finally:
            self.stats.received += received

    def _delivery(self) -> Callable[[bytes], None]:
        """
        What each frame read is handed to: the receiver's C{frameReceived}.
        """
        return self.receiver.frameReceived

    def _unusual(self, frame: bytes) -> bool:
        """
        A read shorter than L{minFrame} or longer than L{maxFrame}:
        discarded (and counted) unless an override delivers it (and returns
        C{True}).
        """
        self.stats.discarded += 1
        return False

    def _readFailed(self, error: OSError) -> None:
        """
        A read failed with an error that is not L{HARMLESS}: the plug ends,
        with the reason logged by whoever receives C{plugClosed}.
        """
        self._lost(
            Failure(PlugLost(f"{self.description}: receive failed: {error.strerror}"))
        )

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor gave up on the descriptor (an error in doRead/doWrite).
        """
        self._lost(Failure(PlugLost(f"{self.description}: {reason.getErrorMessage()}")))

    def _release(self) -> None:
        self.reactor.removeReader(self)
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._closeDescriptor(fd)

    def _closeDescriptor(self, fd: int) -> None:
        raise NotImplementedError()


@implementer(IReadWriteDescriptor)
class QueuedFdPlug(FdPlug):
    """
    An L{FdPlug} whose sends may wait: a frame the descriptor does not take
    at once is queued (pausing the registered producer when the queue is
    full) and dropped and counted beyond L{queueLimit}, so a slow peer never
    blocks the reactor.

    @ivar queueLimit: how many frames may wait for a busy peer.
    """

    queueLimit = 64

    def __init__(
        self,
        reactor: IReactorFDSet,
        description: str,
        fd: int,
        recv: Callable[[int], bytes],
        transmit: Callable[[bytes], object],
    ) -> None:
        super().__init__(reactor, description, fd, recv)
        self._transmit = transmit
        self._queue: deque[bytes] = deque()
        # Whether a full queue paused the producer: it is resumed once the
        # queue drains, however many writability events that takes.
        self._throttled = False

    def send(self, frame: bytes, smallest: int = ETH_HDRLEN,
             largest: int = VDE_ETHBUFSIZE) -> None:
        # (Not an empty datagram either: that is libvdeplug4's "forget me",
        # and a seqpacket peer's end of connection.)  The sizes are
        # parameters for a plug sending vnet frames; as defaults they are
        # local variables on the plain path.
        if self._queue or not smallest <= len(frame) <= largest:
            self._enqueue(frame, smallest, largest)
            return
        try:
            self._transmit(frame)
        except BlockingIOError:
            self._enqueue(frame, smallest, largest)
        except OSError as e:
            self._sendFailed(e)
        else:
            self.stats.sent += 1

    def _sendFailed(self, error: OSError) -> None:
        """
        A frame could not be sent (the peer is gone, or not there yet): it
        is dropped and counted.
        """
        self.stats.dropped += 1

    def _canWait(self) -> bool:
        """
        Whether waiting for writability makes sense now.
        """
        return True

    def _enqueue(self, frame: bytes, smallest: int = ETH_HDRLEN,
                 largest: int = VDE_ETHBUFSIZE) -> None:
        if (
            len(self._queue) >= self.queueLimit
            or not smallest <= len(frame) <= largest
            or not self._canWait()
        ):
            self.stats.dropped += 1
            return
        self._queue.append(frame)
        if len(self._queue) == 1:
            self.reactor.addWriter(self)
        if len(self._queue) == self.queueLimit and self.producer is not None:
            self._throttled = True
            self.producer.pauseProducing()

    def doWrite(self) -> None:
        queue = self._queue
        while queue:
            try:
                self._transmit(queue[0])
            except BlockingIOError:
                return
            except OSError as e:
                self._sendFailed(e)
                if self.closed:
                    return
            else:
                self.stats.sent += 1
            queue.popleft()
        self.reactor.removeWriter(self)
        if self._throttled:
            self._throttled = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def _release(self) -> None:
        self.reactor.removeWriter(self)
        self._queue.clear()
        super()._release()


@implementer(IReadDescriptor)
class FdReader:
    """
    A plug's second descriptor (a control connection, a netlink watch, a
    multicast socket), as the reactor watches it: C{doRead} is C{handler}.
    The reactor giving up on it calls C{lost} with the reason.
    """

    fastEvents = True

    def __init__(
        self,
        fd: int,
        handler: Callable[[], None],
        prefix: str,
        lost: Optional[Callable[[Failure], None]] = None,
    ) -> None:
        self.fd = fd
        self.doRead = handler
        self.prefix = prefix
        self._lostCallback = lost

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return self.prefix

    def connectionLost(self, reason: Failure) -> None:
        self.fd = -1
        if self._lostCallback is not None:
            self._lostCallback(reason)
