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
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.plugbehaviour import Far, PlugBehaviourMixin, PlugFar, SocketFar
from tests.support import (
    CSwitch, cTool, makeNamespace, nsSocket, requireCommand, requireRoot, requireTun, tmpdir, until,
)
from tests.interop.test_clib import requireLibrary
from vdetwist.wire import agno
from vdetwist.backends.vxlan import VxlanPlug, parseVxlan
from vdetwist.backends.vxvde import IP_PKTINFO, VxvdePlug, VxvdeSockets, parseVxvde
from vdetwist.errors import PlugClosed, PlugLost
from vdetwist.plug import VDE_ETHBUFSIZE
from vdetwist.registry import registry
from vdetwist.wire.stream import MAX_STREAM_FRAME
from vdetwist.streamplug import StreamPlug, StreamPlugFactory
from vdetwist.interfaces import IFrameReceiver
from vdetwist.testing import FrameCollector, MemoryPlug, plugPair
from vdetwist.vnl import resolve
from vdetwist.wire.vxlan import packHeader

#: Every protocol, for a packet socket.
ETH_P_ALL = 3


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


class ProcessFar(PlugFar):
    """
    A plug that a process relays to: the far side of a C{cmd://} plug, or a
    plug on the same C switch; the process killed is the network gone (a
    failure).
    """

    def __init__(self, plug: Any, pid: int) -> None:
        super().__init__(plug)
        self.pid = pid

    def vanish(self) -> None:
        os.kill(self.pid, signal.SIGKILL)


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


class FrameCollectorTests(SynchronousTestCase):
    def test_provides(self) -> None:
        self.assertTrue(verifyObject(IFrameReceiver, FrameCollector()))


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
        return plug, ProcessFar(far, process.pid)


# ---------------------------------------------------------------------------
# Switches: ours (switch://, hub://) and the C vde_switch, joined with vde://


class NodeBehaviourMixin(OpeningMixin, PlugBehaviourMixin):
    """
    A C{switch://} or C{hub://} plug, its far side a C{vde://} client.
    """

    scheme = "switch"
    peerGone = None
    peerGoneWhy = "a node outlives its clients: one leaving closes only its port"
    unbufferedWhy = ("the host plug is a direct link that never waits for its host:"
                     " frames for it before startReceiving or while paused are dropped"
                     " and counted by the node's host port")

    async def makePlug(self):
        path = os.path.join(tmpdir(self), "sw")
        plug = await self.open(f"{self.scheme}://{path}")
        return plug, PlugFar(await self.open(f"vde://{path}"))


class SwitchBehaviour(NodeBehaviourMixin, TestCase):
    pass


class HubBehaviour(NodeBehaviourMixin, TestCase):
    scheme = "hub"


class VdeToOurSwitchBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    """
    C{vde://} to our C{switch://}; the far side is the switch's host plug,
    and the switch closing is the network gone.
    """

    # The switch ends the control connection: a clean end.
    peerGone = PlugClosed

    async def makePlug(self):
        path = os.path.join(tmpdir(self), "sw")
        switch = await self.open(f"switch://{path}")
        return await self.open(f"vde://{path}"), PlugFar(switch)


class VdeToCSwitchBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    """
    C{vde://} to the C C{vde_switch}; the far side is another C{vde://}
    plug on it, and the switch killed is the network gone.
    """

    # vde_switch 2.3.2 truncates longer frames (our plug sends up to its own
    # limit).
    mtu = 1514
    oversize = VDE_ETHBUFSIZE + 1
    # Killed, it leaves its data socket behind, refusing connections: the
    # network is lost (one that exits cleanly removes it: a clean end).
    peerGone = PlugLost

    async def makePlug(self):
        switch = CSwitch(self, mgmt=False)
        await switch.started()
        plug = await self.open(f"vde://{switch.path}")
        return plug, ProcessFar(await self.open(f"vde://{switch.path}"), switch.process.pid)


# ---------------------------------------------------------------------------
# Nesting backends, over a seqpacket pair whose other end is the same VNL


class NestedBehaviourMixin(OpeningMixin, PlugBehaviourMixin):
    # The inner seqpacket plug's clean end, passed on.
    peerGone = PlugClosed

    def vnl(self, inner: str) -> str:
        raise NotImplementedError

    async def makePlug(self):
        mine, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        plug = await self.open(self.vnl(f"seqpacket://{mine.detach()}"))
        return plug, PlugFar(await self.open(self.vnl(f"seqpacket://{other.detach()}")))


class VlanBehaviour(NestedBehaviourMixin, TestCase):
    # The tag takes 4 bytes of what the inner plug carries.
    mtu = VDE_ETHBUFSIZE - 4
    # (A frame the tag makes too large is counted as sent by the vlan plug,
    # which handed it on, and dropped by the inner plug.)
    oversize = VDE_ETHBUFSIZE + 1

    def vnl(self, inner: str) -> str:
        return f"vlan://3{{{inner}}}"


class AgnoBehaviour(NestedBehaviourMixin, TestCase):
    skip = None if agno.available() else (
        "cryptography is not installed: pip install 'vdetwist[agno]'")
    # The largest frame whose encryption the inner plug carries; what
    # encryption makes too large is dropped by the inner plug, as for vlan.
    mtu = next(n for n in range(VDE_ETHBUFSIZE, 0, -1)
               if agno.encryptedLength(n) <= VDE_ETHBUFSIZE)
    oversize = VDE_ETHBUFSIZE + 1

    def vnl(self, inner: str) -> str:
        if not hasattr(self, "keyfile"):
            self.keyfile = os.path.join(tmpdir(self), "key")
            with open(self.keyfile, "w") as f:
                f.write("00112233445566778899aabbccddeeff\n")
        return f"agno://{self.keyfile}{{{inner}}}"


class WirefilterBehaviour(NestedBehaviourMixin, TestCase):
    """
    C{wirefilter://} with no impairment set: a link that passes frames.
    """

    def vnl(self, inner: str) -> str:
        return f"wirefilter://{{{inner}}}"


# ---------------------------------------------------------------------------
# The C library, through clib://


class ClibBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    """
    C{clib://vde://} to our C{switch://}, the far side its host plug; the
    library reports the switch closing as a hang-up, a loss.
    """

    def setUp(self) -> None:
        requireLibrary()

    async def makePlug(self):
        path = os.path.join(tmpdir(self), "sw")
        switch = await self.open(f"switch://{path}")
        return await self.open(f"clib://vde://{path}"), PlugFar(switch)


# ---------------------------------------------------------------------------
# Group networks on loopback sockets


class VxvdeBehaviour(PlugBehaviourMixin, TestCase):
    """
    A vxvde plug whose group is a loopback listener; frames come from
    another member's socket.
    """

    peerGone = None
    peerGoneWhy = "vxvde:// is a group: members come and go unseen"

    async def makePlug(self):
        vnl = "vxvde:///v=5"
        multicast, unicast, group, member = (
            self.udp() for _ in range(4))
        multicast.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        plug = VxvdePlug(reactor, vnl, parseVxvde(resolve(vnl)),
                         VxvdeSockets(multicast, unicast, group.getsockname(), socket.AF_INET))
        self.addCleanup(plug.close)
        far = SocketFar(member, unicast.getsockname(), packHeader(5), listener=group)
        return plug, far

    def udp(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock


class VxlanBehaviour(PlugBehaviourMixin, TestCase):
    """
    A vxlan plug on 127.0.0.1:P, its group a listener on 127.0.0.3:P, a
    remote VTEP sending from 127.0.0.2.
    """

    peerGone = None
    peerGoneWhy = "vxlan:// is a group: VTEPs come and go unseen"

    async def makePlug(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        vnl = f"vxlan:///v=9/port={port}"
        group = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        vtep = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (group, vtep):
            self.addCleanup(s.close)
        group.bind(("127.0.0.3", port))
        vtep.bind(("127.0.0.2", 0))
        plug = VxlanPlug(reactor, vnl, parseVxlan(resolve(vnl)), sock, ("127.0.0.3", port),
                         socket.AF_INET)
        self.addCleanup(plug.close)
        return plug, SocketFar(vtep, ("127.0.0.1", port), packHeader(9), listener=group)


# ---------------------------------------------------------------------------
# Kernel interfaces in a namespace of the test's (root)


class WireFar(SocketFar):
    """
    A packet socket on an interface: what it sends the interface transmits
    (to the plug, on a tap; onto the wire, on one end of a veth); what the
    interface receives it hears.  The plug's device deleted is the network
    gone.
    """

    def __init__(self, sock: socket.socket, namespace: Any, device: str) -> None:
        super().__init__(sock)
        self.namespace = namespace
        self.device = device

    def heard(self) -> list[bytes]:
        try:
            while True:
                data, address = self.socket.recvfrom(65536)
                if address[2] != socket.PACKET_OUTGOING:
                    self.frames.append(data)
        except OSError:
            pass
        return self.frames

    def vanish(self) -> None:
        self.namespace.run(["ip", "link", "del", self.device], check=True)


class DeviceBehaviourMixin(PlugBehaviourMixin):
    """
    A plug on a kernel interface of MTU 1500 in a fresh namespace, its far
    side a packet socket on C{wire}; subclasses make the interfaces.
    """

    mtu = 1514
    # What the plug itself refuses (the kernel drops larger frames it sent).
    oversize = VDE_ETHBUFSIZE + 1

    def setUp(self) -> None:
        requireRoot()
        requireCommand("ip", "iproute2")
        self.namespace = makeNamespace(self)

    def bringUp(self, *ifnames: str) -> None:
        from vdetwist.testing import netns

        for ifname in ifnames:
            netns.setUp(ifname, self.namespace)
        for ifname in ifnames:
            netns.waitOperational(ifname, self.namespace)

    async def openDevice(self, vnl: str, wire: str, device: str):
        from vdetwist.testing import netns

        with netns.entered(self.namespace):
            opening = registry.open(reactor, vnl)
        plug = await opening
        self.addCleanup(plug.close)
        self.bringUp(wire, device)
        # (Bound while the interface is down, a packet socket fails its
        # first send with ENETDOWN.)
        sock = nsSocket(self.namespace.name, socket.AF_PACKET, socket.SOCK_RAW, ETH_P_ALL)
        self.addCleanup(sock.close)
        sock.bind((wire, ETH_P_ALL))
        return plug, WireFar(sock, self.namespace, device)


class TapBehaviour(DeviceBehaviourMixin, TestCase):
    def setUp(self) -> None:
        requireTun()
        super().setUp()

    async def makePlug(self):
        from vdetwist.testing import netns

        name = netns.uniqueName("vtb")
        return await self.openDevice(f"tap://{name}", name, name)


class MacvtapBehaviour(DeviceBehaviourMixin, TestCase):
    """
    A macvtap on one end of a veth; the far side is the other end.
    """

    async def makePlug(self):
        from pyroute2 import NetlinkError

        from vdetwist.testing import netns

        lower, name = netns.uniqueName("vbl"), netns.uniqueName("vbm")
        netns.createVeth(lower, lower + "p", self.namespace)
        try:
            netns.createMacvtap(name, lower, self.namespace)
        except NetlinkError as e:
            raise SkipTest(f"the kernel cannot make a macvtap (CONFIG_MACVTAP?): {e}")
        netns.setUp(lower, self.namespace)
        # (devtmpfs makes the device node a moment after the link.)
        device = f"/dev/tap{netns.ifindex(name, self.namespace)}"
        await until(lambda: os.path.exists(device), device)
        return await self.openDevice(f"macvtap://{name}", lower + "p", name)


class PcapBehaviour(DeviceBehaviourMixin, TestCase):
    """
    pcap:// on one end of a veth; the far side is the other end.
    """

    async def makePlug(self):
        from vdetwist.testing import netns

        name = netns.uniqueName("vbp")
        netns.createVeth(name, name + "p", self.namespace)
        # Up before the plug opens: a packet socket bound to a down
        # interface fails its first send with ENETDOWN once it is up.
        self.bringUp(name, name + "p")
        return await self.openDevice(f"pcap://{name}", name + "p", name)


class SlirpBehaviour(OpeningMixin, PlugBehaviourMixin, TestCase):
    """
    C{slirp://}: the network is the user-mode stack itself, so only what
    does not need a peer is checked here (its tests check its answers).
    """

    noInjectWhy = "slirp:// is a router: frames arrive only as its answers"
    unheardWhy = "slirp:// consumes what it is sent"
    peerGone = None
    peerGoneWhy = "slirp:// has no peer that can go away"

    async def makePlug(self):
        return await self.open("slirp://"), Far()
