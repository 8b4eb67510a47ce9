"""
A tiny Ethernet chat: any Twisted protocol can join a VDE network through
the C{vde:} endpoint.  Run two of these on the same network, e.g.

    python3 docs/examples/l2chat.py ptp:///tmp/chat alice
    python3 docs/examples/l2chat.py ptp:///tmp/chat bob

(or on a switch, C{vde:///tmp/sw}, once one runs) and type lines.  Each line
goes out as a broadcast frame of the local experimental EtherType 0x88b5; the
protocol sees the network in the VDE stream encoding.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import stdio
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, quoteStringArgument
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver

from vdetwist.errors import VdeError
from vdetwist.wire.stream import StreamDecoder, encode

ETHERTYPE = b"\x88\xb5"
BROADCAST = b"\xff" * 6


class Chat(Protocol):
    """
    Speaks the VDE stream encoding: decode records into frames, encode ours.
    """

    def __init__(self, name: str, mac: bytes, show) -> None:
        self.name = name
        self.mac = mac
        self.show = show
        self.decoder = StreamDecoder(self.frameReceived, lambda length, dropped: None)
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.decoder.feed(data)

    def frameReceived(self, frame: bytes) -> None:
        if frame[12:14] == ETHERTYPE and frame[6:12] != self.mac:
            self.show(frame[14:].decode("utf-8", "replace"))

    def say(self, text: str) -> None:
        message = f"{self.name}: {text}".encode()
        self.transport.write(encode(BROADCAST + self.mac + ETHERTYPE + message))

    def connectionLost(self, reason) -> None:
        self.done.callback(None)


class Keyboard(LineReceiver):
    delimiter = b"\n"

    def __init__(self, chat: Chat) -> None:
        self.chat = chat

    def lineReceived(self, line: bytes) -> None:
        self.chat.say(line.decode("utf-8", "replace"))

    def connectionLost(self, reason) -> None:
        self.chat.transport.loseConnection()


async def main(reactor, vnl: str, name: str) -> None:
    endpoint = clientFromString(reactor, "vde:vnl=" + quoteStringArgument(vnl))
    mac = b"\x02" + os.urandom(5)
    try:
        chat = await endpoint.connect(
            Factory.forProtocol(lambda: Chat(name, mac, lambda text: print(text, flush=True)))
        )
    except VdeError as e:
        raise SystemExit(f"l2chat.py: {e}") from None
    stdio.StandardIO(Keyboard(chat), reactor=reactor)
    await chat.done


USAGE = "usage: l2chat.py VNL NAME   e.g. l2chat.py ptp:///tmp/chat alice"

if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(USAGE)
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
