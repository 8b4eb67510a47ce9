"""
The L{IVdePlug} contract of L{tests.plugbehaviour}, run against every public
fake of L{vdetwist.testing} and every plug a test can open, each with a real
far side: a peer socket, another plug on the same switch or group, a C
C{vde_switch}, a tap's interface in a namespace.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.trial.unittest import TestCase

from tests.plugbehaviour import Far, PlugBehaviourMixin, PlugFar, SocketFar
from tests.support import CSwitch, cTool, tmpdir, until
from vdetwist.errors import PlugClosed
from vdetwist.registry import registry
from vdetwist.stream import MAX_STREAM_FRAME
from vdetwist.streamplug import StreamPlug, StreamPlugFactory
from vdetwist.testing import MemoryPlug, plugPair


class TestFar(Far):
    """
    The far side of a lone L{MemoryPlug}: the test, through the fake's own
    API.
    """

    def __init__(self, plug: MemoryPlug) -> None:
        self.plug = plug

    def inject(self, frame: bytes) -> None:
        self.plug.inject(frame)

    def heard(self) -> list[bytes]:
        return self.plug.sentFrames


class OpeningMixin:
    """
    Opens plugs through the registry, closing them when the test ends.
    """

    async def open(self, vnl: str) -> Any:
        plug = await registry.open(reactor, vnl)
        self.addCleanup(plug.close)
        return plug


# ---------------------------------------------------------------------------
# The public fakes


class MemoryPlugBehaviour(PlugBehaviourMixin, TestCase):
    quiet = 0
    peerGone = None
    peerGoneWhy = "a lone MemoryPlug's network is the test: there is no peer to lose"

    async def makePlug(self):
        plug = MemoryPlug()
        return plug, TestFar(plug)


class PlugPairBehaviour(PlugBehaviourMixin, TestCase):
    quiet = 0
    # The other end closing is the clean end of a cable.
    peerGone = PlugClosed

    async def makePlug(self):
        plug, other = plugPair()
        return plug, PlugFar(other)


# ---------------------------------------------------------------------------
# Backends


class NullBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    quiet = 0
    noInjectWhy = "null:// has nothing on it: no frame ever arrives"
    unheardWhy = "null:// discards what it is sent"
    peerGone = None
    peerGoneWhy = "null:// has no peer"

    async def makePlug(self):
        return await self.open("null://"), Far()


class PtpBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    peerGone = None
    peerGoneWhy = ("ptp:// is a datagram pair: as in libvdeplug4, the other end going away"
                   " is not seen (frames to it are dropped and counted)")

    async def makePlug(self):
        path = os.path.join(tmpdir(self), "ptp")
        plug = await self.open("ptp://" + path)
        return plug, PlugFar(await self.open("ptp://" + path))


class UdpBehaviourMixin(OpeningMixin, PlugBehaviourMixin):
    peerGone = None
    peerGoneWhy = "udp:// is connectionless: a peer going away is not seen"
    family = socket.AF_INET
    host = "127.0.0.1"

    async def makePlug(self):
        peer = socket.socket(self.family, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        peer.bind((self.host, 0))
        bracket = f"[{self.host}]" if ":" in self.host else self.host
        plug = await self.open(f"udp://{bracket}:0->{bracket}:{peer.getsockname()[1]}")
        return plug, SocketFar(peer, plug.socket.getsockname())


class UdpBehaviour(UdpBehaviourMixin, TestCase):
    pass


class Udp6Behaviour(UdpBehaviourMixin, TestCase):
    family = socket.AF_INET6
    host = "::1"


class SeqpacketBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    # A seqpacket peer closing is an orderly end of the connection.
    peerGone = PlugClosed

    async def makePlug(self):
        mine, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(other.close)
        return await self.open(f"seqpacket://{mine.detach()}"), SocketFar(other)


class StreamPlugBehaviour(PlugBehaviourMixin, TestCase):
    """
    L{StreamPlug} over one end of a UNIX stream socketpair.
    """

    # EOF is the clean end of a stream.
    peerGone = PlugClosed
    mtu = MAX_STREAM_FRAME

    async def makePlug(self):
        mine, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(other.close)
        plugs: list[StreamPlug] = []
        factory = StreamPlugFactory("socketpair", plugs.append)
        reactor.adoptStreamConnection(mine.fileno(), socket.AF_UNIX, factory)
        mine.close()
        self.addCleanup(plugs[0].close)
        return plugs[0], SocketFar(other, stream=True)


class EndpointBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    """
    C{endpoint://unix:...} to a stream plug server in this process.
    """

    peerGone = PlugClosed
    mtu = MAX_STREAM_FRAME

    async def makePlug(self):
        path = os.path.join(tmpdir(self), "cable.sock")
        accepted: list[StreamPlug] = []
        port = await UNIXServerEndpoint(reactor, path).listen(
            StreamPlugFactory("server", accepted.append))
        self.addCleanup(port.stopListening)
        plug = await self.open(f"endpoint://unix:path={path}")
        await until(lambda: accepted, "the server to accept")
        self.addCleanup(accepted[0].close)
        return plug, PlugFar(accepted[0])


class CmdBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    """
    C{cmd://} running the C C{vde_plug} between its stdio and a ptp pair
    whose other end is ours.
    """

    # What the stream encoding carries; the ptp pair behind carries less.
    oversize = MAX_STREAM_FRAME + 1

    async def makePlug(self):
        vdePlug = cTool("vde_plug")
        path = os.path.join(tmpdir(self), "ptp")
        far = await self.open("ptp://" + path)
        plug = await self.open(f"cmd://{vdePlug} ptp://{path}")
        process = plug.transport

        async def ended() -> None:
            plug.close()
            await until(lambda: process.pid is None, "vde_plug to exit")

        self.addCleanup(ended)
        # The C plug has made its end of the pair: what the far side sends
        # from now on reaches it.
        await until(lambda: os.path.exists(path + "+"), "the C vde_plug's ptp end")
        return plug, CommandFar(far, process.pid)


class CommandFar(PlugFar):
    """
    The far side of a C{cmd://} plug: a plug the command relays to; the
    command killed is the network gone (a failure: it ended on a signal).
    """

    def __init__(self, plug: Any, pid: int) -> None:
        super().__init__(plug)
        self.pid = pid

    def vanish(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
