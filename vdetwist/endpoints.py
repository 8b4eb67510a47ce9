"""
VNLs as Twisted client endpoints.

C{clientFromString(reactor, "vde:" + quoteStringArgument(vnl))} (or
C{"vde:vnl=..."}) gives an endpoint whose connected protocol sees the
network as a byte stream in the VDE stream encoding, exactly what
C{vde_plug VNL} puts on its stdout and reads from its stdin.  So any Twisted
protocol (or L{vdetwist.streamplug.StreamPlug}, to bridge) can join a VDE
network.  Options: C{descr=} (description sent to switches), C{port=},
C{group=}, C{mode=} (octal), as C{vde_plug}'s C{--port}, C{-g}, C{-m}.
"""

from __future__ import annotations

from typing import Optional

import attr
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    ITransport,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import PlugClosed
from vdetwist.interfaces import IFrameReceiver, IVdePlug
from vdetwist.registry import DEFAULT_DESCRIPTION, OpenArgs, Registry, registry
from vdetwist.wire.stream import StreamDecoder, encode


@implementer(IAddress)
@attr.s(frozen=True, auto_attribs=True)
class VdeAddress:
    """
    The address of a VDE network: its VNL.
    """

    vnl: str


@implementer(ITransport, IConsumer, IPushProducer, IFrameReceiver)
class PlugTransport:
    """
    Presents a plug to a protocol as a byte-stream transport: frames become
    stream records in C{dataReceived}, and records the protocol writes are
    sent as frames.
    """

    disconnecting = False

    def __init__(self, plug: IVdePlug, protocol, address: VdeAddress) -> None:
        self.plug = plug
        self.protocol = protocol
        self.address = address
        self.decoder = StreamDecoder(plug.send, self._lengthError)
        self.badRecords = 0

    def frameReceived(self, frame: bytes) -> None:
        self.protocol.dataReceived(encode(frame))

    def plugClosed(self, reason: Failure) -> None:
        if reason.check(PlugClosed):
            reason = Failure(ConnectionDone(reason.getErrorMessage()))
        else:
            reason = Failure(ConnectionLost(reason.getErrorMessage()))
        self.protocol.connectionLost(reason)

    def _lengthError(self, length: int, discarded: int) -> None:
        self.badRecords += 1

    def write(self, data: bytes) -> None:
        self.decoder.feed(data)

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self.plug.close()

    def getPeer(self) -> VdeAddress:
        return self.address

    def getHost(self) -> VdeAddress:
        return self.address

    def registerProducer(self, producer, streaming: bool) -> None:
        self.plug.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.plug.unregisterProducer()

    def pauseProducing(self) -> None:
        self.plug.pauseProducing()

    def resumeProducing(self) -> None:
        self.plug.resumeProducing()

    def stopProducing(self) -> None:
        self.plug.close()


@implementer(IStreamClientEndpoint)
class VdeClientEndpoint:
    """
    Connects a protocol to the network named by a VNL.
    """

    def __init__(
        self,
        reactor,
        vnl: Optional[str],
        description: str = DEFAULT_DESCRIPTION,
        args: OpenArgs = OpenArgs(),
        registry: Registry = registry,
    ) -> None:
        self.reactor = reactor
        self.vnl = vnl
        self.description = description
        self.args = args
        self.registry = registry

    def connect(self, protocolFactory: IProtocolFactory):
        address = VdeAddress(self.vnl or "")

        def connected(plug: IVdePlug):
            protocol = protocolFactory.buildProtocol(address)
            if protocol is None:
                plug.close()
                raise ConnectionLost(f"{protocolFactory} refused {address.vnl}")
            transport = PlugTransport(plug, protocol, address)
            protocol.makeConnection(transport)
            plug.startReceiving(transport)
            return protocol

        opening = self.registry.open(self.reactor, self.vnl, self.description, self.args)
        return opening.addCallback(connected)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class VdeClientParser:
    """
    The C{vde:} endpoint string: C{vde:VNL} or C{vde:vnl=VNL}, plus
    C{descr=}, C{port=}, C{group=}, C{mode=}.
    """

    prefix = "vde"

    # The interface's *args/**kwargs stand for each parser's own parameters
    # (Twisted's parsers name theirs too); mypy-zope reads them literally.
    def parseStreamClient(  # type: ignore[override]
        self,
        reactor,
        *args: str,
        vnl: Optional[str] = None,
        descr: str = DEFAULT_DESCRIPTION,
        port: str = "0",
        group: Optional[str] = None,
        mode: str = "700",
    ) -> VdeClientEndpoint:
        if args:
            if vnl is not None or len(args) > 1:
                raise ValueError(
                    "vde: endpoint takes one VNL; quote its colons with"
                    " twisted.internet.endpoints.quoteStringArgument"
                )
            vnl = args[0]
        return VdeClientEndpoint(
            reactor,
            vnl,
            descr,
            OpenArgs(port=int(port), group=group, mode=int(mode, 8)),
        )
