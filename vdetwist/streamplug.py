"""
A plug over any Twisted byte-stream connection in the VDE stream encoding.

This is what lets a pipe, a spawned command (C{cmd://}), stdio (C{vde_plug}),
TCP, TLS or a UNIX socket carry a VDE cable: connect any stream endpoint with
L{connectStreamPlug}, or hand L{StreamPlug} instances out of a server
factory, and the result is an ordinary L{IVdePlug}.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable, NoReturn, Optional, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener, IReactorTime, ISSLTransport, IStreamClientEndpoint)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.endpointstrings import failureMessage
from vdetwist.errors import PlugClosed, PlugLost, VdeError
from vdetwist.interfaces import IVdePlug
from vdetwist.plug import ETH_HDRLEN, PlugBase
from vdetwist.wire.stream import MAX_STREAM_FRAME, StreamDecoder, encode

log = Logger()


#: Bytes a stream plug still writes once its transport says its buffer is
#: full (Twisted's say so past 64 KiB); beyond them it drops until the
#: buffer is flushed.  The slack covers a burst written before the reactor
#: gets to flush (one iteration may forward several full reads to a port
#: whose peer reads well) and what a producer being paused (a cable's other
#: end) still delivers; with the transport's buffer it is about what a
#: kernel socket buffer holds.
PAUSED_SLACK = 1 << 18


class _OutputThrottle:
    """
    Registered with the transport as its producer: when the transport's write
    buffer fills (Twisted's transports, TLS included, pause their producer
    then, and resume it once the buffer is flushed) the plug stops writing
    and pauses whoever is sending frames into it.
    """

    def __init__(self, plug: StreamPlug) -> None:
        self.plug = plug

    def pauseProducing(self) -> None:
        plug = self.plug
        # (Transports call this on every write while their buffer is full.)
        if plug._room is None:
            plug._room = PAUSED_SLACK
        if plug.producer is not None:
            plug.producer.pauseProducing()

    def resumeProducing(self) -> None:
        plug = self.plug
        plug._room = None
        if plug.producer is not None:
            plug.producer.resumeProducing()

    def stopProducing(self) -> None:
        # The transport is going away; its connectionLost follows with the
        # real reason, which is what the plug must report.
        pass


@implementer(IVdePlug)
class StreamPlug(PlugBase, Protocol):
    """
    A plug whose network is the peer of a byte-stream connection.

    Until C{startReceiving}, the transport is not read, so nothing is lost.
    The connection ending (EOF, a process exiting) closes the plug.

    Output is bounded, as the datagram plugs' queue: once the transport's
    buffer is full, the registered producer (a cable's other end) is paused
    and, past L{PAUSED_SLACK} more bytes, frames are dropped (counted in
    C{stats.dropped}) until the buffer is flushed.  A switch port pauses
    nobody: a peer that stops reading costs it at most the transport's
    buffer and the slack, and the other ports never wait for it.

    @ivar onConnect: called with the plug once its connection is made (a
        server hands accepted plugs on this way), or C{None}.
    """

    def __init__(
        self, description: str, onConnect: Optional[Callable[[StreamPlug], None]] = None
    ) -> None:
        PlugBase.__init__(self, description)
        self.decoder = StreamDecoder(self._frameDecoded, self._lengthError)
        self.onConnect = onConnect
        self._reading = False
        # Bytes that may still be written while the transport's buffer is
        # full; None while it is not.
        self._room: Optional[int] = None

    # Any stream connection (TCP, UNIX, TLS, a process's pipes): an
    # ITransport that is also the IConsumer and IPushProducer the plug
    # drives, which no single interface names; None until connected.
    transport: Any

    def connectionMade(self) -> None:
        if not self._reading:
            self.transport.pauseProducing()
        self.transport.registerProducer(_OutputThrottle(self), True)
        if self.onConnect is not None:
            self.onConnect(self)

    def dataReceived(self, data: bytes) -> None:
        self.decoder.feed(data)

    def _frameDecoded(self, frame: bytes) -> None:
        self.stats.received += 1
        self.receiver.frameReceived(frame)

    def _lengthError(self, length: int, discarded: int) -> None:
        self.stats.discarded += 1
        log.warn(
            "{plug}: bad stream record length {length} (largest is {largest}):"
            " discarded {discarded} bytes to resynchronise",
            plug=self.description,
            length=length,
            largest=MAX_STREAM_FRAME,
            discarded=discarded,
        )

    def send(self, frame: bytes) -> None:
        record = encode(frame)
        if self.closed or not record or len(frame) < ETH_HDRLEN or self.transport is None:
            self.stats.dropped += 1
            return
        if self._room is not None:
            if len(record) > self._room:
                self.stats.dropped += 1
                return
            self._room -= len(record)
        self.stats.sent += 1
        self.transport.write(record)

    def _startReading(self) -> None:
        self._reading = True
        if self.transport is not None:
            self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        # Stop within the chunk being decoded too, or the rest of a large
        # read would be pushed at a consumer that asked us to stop.
        self.decoder.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        decoder = self.decoder
        decoder.paused = False
        if decoder.buffered:
            decoder.feed(b"")
            if decoder.paused or self.closed:
                return
        self.transport.resumeProducing()

    def _release(self) -> None:
        if self.transport is not None:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if reason.check(ConnectionDone):
            reason = Failure(PlugClosed(f"{self.description}: end of stream"))
        elif not reason.check(PlugLost):  # (which names the plug already)
            assert reason.value is not None, "a Failure holds its exception"
            reason = Failure(
                PlugLost(f"{self.description}: {failureMessage(reason.value)}")
            )
        self._lost(reason)


def describeAddress(address) -> str:
    """
    A peer address as people write it: C{host:port}, a socket path.
    """
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", None)
    if name:
        return os.fsdecode(name)
    return str(address)


class StreamPlugFactory(Factory):
    """
    Builds a L{StreamPlug} for each connection.  As a server factory, each
    accepted connection is a cable into something (a switch port): pass
    C{onConnect} to be handed each plug, described with its peer address.
    """

    def __init__(
        self, description: str, onConnect: Optional[Callable[[StreamPlug], None]] = None
    ) -> None:
        self.description = description
        self.onConnect = onConnect

    def buildProtocol(self, addr) -> StreamPlug:
        if self.onConnect is None:
            return StreamPlug(self.description)
        return StreamPlug(f"{self.description} from {describeAddress(addr)}", self.onConnect)


#: Seconds a TLS client cable may take to finish its handshake.
HANDSHAKE_TIMEOUT = 30.0


@implementer(IHandshakeListener)
class _ClientStreamPlug(StreamPlug):
    """
    A plug that connected as a client, with L{ready} firing once its
    connection can carry frames: at once, or over TLS once the handshake is
    over, so that a server that is not trusted fails the open with one line
    instead of ending a cable that seemed to have worked.

    The handshake needs the connection read, which a plug otherwise does only
    from C{startReceiving}: until then frames that follow the handshake wait
    in the decoder, and the connection is paused once the handshake is over.
    """

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.ready: Deferred[StreamPlug] = Deferred(self._cancelled)
        self._handshaking = False

    def _cancelled(self, ready: Deferred[StreamPlug]) -> None:
        self._handshaking = False
        self.transport.abortConnection()

    def connectionMade(self) -> None:
        secured: object = self.transport  # (not narrowing self.transport's type)
        if not ISSLTransport.providedBy(secured):
            super().connectionMade()
            self.ready.callback(self)
            return
        self._handshaking = True
        self.decoder.paused = True
        self.transport.registerProducer(_OutputThrottle(self), True)

    def handshakeCompleted(self) -> None:
        # A certificate for another name aborts the connection, yet the
        # handshake completes: connectionLost tells why.
        if self.transport.disconnecting:
            return
        self._handshaking = False
        if not self._reading:
            self.transport.pauseProducing()
        self.ready.callback(self)

    def _startReading(self) -> None:
        self._reading = True
        if self.transport is not None:
            self.resumeProducing()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._handshaking:
            self._handshaking = False
            assert reason.value is not None, "a Failure holds its exception"
            self.ready.errback(VdeError(
                f"TLS handshake failed: {failureMessage(reason.value)}", errno.ECONNABORTED))
        super().connectionLost(reason)


class _ClientFactory(Factory):
    def __init__(self, description: str) -> None:
        self.description = description

    def buildProtocol(self, addr) -> _ClientStreamPlug:
        return _ClientStreamPlug(self.description)


def connectStreamPlug(
    endpoint: IStreamClientEndpoint, description: str, reactor: Optional[IReactorTime] = None
) -> Deferred[StreamPlug]:
    """
    Connect C{endpoint} and use the connection as a plug, once it is ready
    (over TLS: once the handshake is over, within L{HANDSHAKE_TIMEOUT}
    seconds if a C{reactor} is given).

    @return: a Deferred plug, or failing with a L{VdeError} that says in one
        line why the connection could not be made.
    """

    def connected(plug: _ClientStreamPlug) -> Deferred[StreamPlug]:
        if reactor is not None and not plug.ready.called:
            plug.ready.addTimeout(HANDSHAKE_TIMEOUT, reactor, onTimeoutCancel=timedOut)
        return plug.ready

    def timedOut(result: object, timeout: float) -> NoReturn:
        raise VdeError(f"no TLS handshake within {timeout:g} s (does the server speak TLS?)",
                       errno.ETIMEDOUT)

    def failed(reason: Failure) -> Failure:
        error = reason.value
        if isinstance(error, (VdeError, CancelledError)):
            return reason
        assert error is not None, "a Failure holds its exception"
        code = getattr(error, "osError", None)
        if isinstance(code, int):
            raise VdeError(f"cannot connect: {os.strerror(code)}", code)
        raise VdeError(f"cannot connect: {failureMessage(error)}", errno.ECONNABORTED)

    # The factory builds client plugs; IStreamClientEndpoint only says IProtocol.
    connecting = cast("Deferred[_ClientStreamPlug]", endpoint.connect(_ClientFactory(description)))
    return connecting.addCallback(connected).addErrback(failed)
