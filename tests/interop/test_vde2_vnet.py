"""
Vnet frames over the vde2 protocol, on real sockets: our client and our
switch agree on them (the sticky bits of the data socket files) without a
byte of the handshake changing; super-frames then cross whole, while C
clients on the same switch get plain frames, segmented and checksummed,
and a C switch gets plain frames from our client.
"""

from __future__ import annotations

import os
import socket
import stat

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support import CSwitch, LogCapture, cPlug, tmpdir, until
from tests.vnetframes import payloadOf, tcpPayloads, tcpSuperFrame
from vdetwist._transport.vnet import SOFTWARE_OFFLOADS, VNET_FRAME_MAX
from vdetwist.interfaces import IVnetPlug, IVnetReceiver
from vdetwist.node import MacTable, Node, SwitchEngine, TrunkSwitchEngine
from vdetwist.registry import registry
from vdetwist.testing import FrameCollector
from vdetwist.vde2 import protocol
from vdetwist.vde2.client import VdeClientPlug, VnetClientPlug, connectVde
from vdetwist.vde2.server import ServerEndpoint, VdeServer, VnetServerEndpoint
from vdetwist.wire.vnethdr import PLAIN

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
BROADCAST = b"\xff" * 6


@implementer(IVnetReceiver)
class VnetCollector(FrameCollector):
    """
    A receiver that takes vnet frames too (C{vnet}).
    """

    def __init__(self) -> None:
        super().__init__()
        self.vnet: list[bytes] = []

    def vnetFrameReceived(self, frame: bytes) -> None:
        self.vnet.append(frame)


class VnetVde2Tests(TestCase):
    def setUp(self) -> None:
        self.tmp = tmpdir(self, "vt2v-")
        self.log = LogCapture(self)

    def ourServer(self, flavour: str = "vde_switch", **kw) -> VdeServer:
        if flavour == "vde_switch":
            node = Node(SwitchEngine(), reactor, MacTable(reactor), numports=32,
                        keepInactivePorts=True)
        else:
            node = Node(TrunkSwitchEngine(), reactor)
        server = VdeServer(reactor, node, os.path.join(self.tmp, "sw"), flavour=flavour, **kw)
        server.start()
        self.addCleanup(node.close)
        self.addCleanup(server.stop)
        return server

    async def ourClient(self, path: str, receiver=None):
        plug = await connectVde(reactor, path, description=b"ours")
        self.addCleanup(plug.close)
        receiver = receiver if receiver is not None else VnetCollector()
        plug.startReceiving(receiver)
        return plug, receiver

    async def test_agreed(self) -> None:
        """
        Our client on our switch (both flavours): both ends are vnet plugs
        offering every offload software segmentation undoes, both data
        socket files carry the sticky bit, and the socket buffers hold
        super-frames.
        """
        for flavour in ("vde_switch", "netnode"):
            server = self.ourServer(flavour)
            plug, _ = await self.ourClient(server.path)
            self.assertIsInstance(plug, VnetClientPlug)
            verifyObject(IVnetPlug, plug)
            self.assertEqual(plug.offloads, SOFTWARE_OFFLOADS)
            (endpoint,) = server.endpoints.values()
            self.assertIsInstance(endpoint, VnetServerEndpoint)
            self.assertEqual(endpoint.port.offloads, SOFTWARE_OFFLOADS)
            self.assertTrue(os.stat(endpoint.path).st_mode & stat.S_ISVTX)
            for sock in (plug.socket, endpoint.socket):
                self.assertGreaterEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                                        2 * VNET_FRAME_MAX)
            plug.close()
            server.stop()

    async def test_clientRefuses(self) -> None:
        """
        C{vde://PATH[offload=off]} on our switch: no sticky bit on our data
        socket, so the switch does not agree; both ends stay plain, and a
        super-frame sent through the plug arrives as segments.
        """
        server = self.ourServer()
        plain = await registry.open(reactor, f"vde://{server.path}[offload=off]", "plain")
        self.addCleanup(plain.close)
        plain.startReceiving(FrameCollector())
        self.assertIs(type(plain), VdeClientPlug)
        (endpoint,) = server.endpoints.values()
        self.assertIs(type(endpoint), ServerEndpoint)
        self.assertFalse(os.stat(endpoint.path).st_mode & stat.S_ISVTX)
        other, atOther = await self.ourClient(server.path)
        payload = payloadOf(8000)
        plain.sendVnet(tcpSuperFrame(BROADCAST, A, payload))
        await until(lambda: len(atOther.vnet) == 6, "the segments")
        for vframe in atOther.vnet:
            self.assertTrue(vframe.startswith(PLAIN))
        self.assertEqual(tcpPayloads([f[len(PLAIN):] for f in atOther.vnet], self), payload)

    async def test_handshakeUnchanged(self) -> None:
        """
        What a C switch sees of our client is the vde2 request, byte for
        byte: the sticky bit is on the socket file, not in the request.
        What a C client sees of our switch is the 110-byte reply naming
        C{%03d.%d}, a socket file without the bit, and plain frames.
        """
        directory = os.path.join(self.tmp, "fake")
        os.mkdir(directory)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(os.path.join(directory, "ctl"))
        listener.listen(1)
        connecting = connectVde(reactor, directory, description=b"ours", timeout=5)
        connecting.addErrback(lambda f: None)
        conn, _ = listener.accept()
        self.addCleanup(conn.close)
        request = conn.recv(256)
        parsed = protocol.parseRequest(request)
        self.assertEqual(request, protocol.packRequest(parsed.path, b"ours", 0))
        self.assertRegex(parsed.path.decode(), rf"^{directory}/\.{os.getpid():05d}-\d{{5}}$")
        self.assertTrue(os.stat(parsed.path).st_mode & stat.S_ISVTX)
        connecting.cancel()

        server = self.ourServer()
        c = cPlug(self, "c", server.path)
        await until(lambda: len(server.endpoints) == 1, "the C client", procs=[c])
        (endpoint,) = server.endpoints.values()
        self.assertIs(type(endpoint), ServerEndpoint)
        self.assertEqual(endpoint.port.offloads, 0)
        self.assertRegex(os.path.basename(endpoint.path), r"^\d{3}\.\d+$")
        self.assertFalse(os.stat(endpoint.path).st_mode & stat.S_ISVTX)

    async def test_superFramesAndCClient(self) -> None:
        """
        Two clients of ours exchange a 64 KiB super-frame whole (it is
        counted as a vnet frame sent as it is), and a plain frame plainly;
        the C client on the same switch gets the super-frame's segments,
        no frame above 1518 bytes, every checksum complete and right.
        """
        server = self.ourServer()
        one, _ = await self.ourClient(server.path)
        two, atTwo = await self.ourClient(server.path)
        c = cPlug(self, "c", server.path)
        await until(lambda: len(server.endpoints) == 3, "the C client", procs=[c])
        payload = payloadOf(60000)
        vframe = tcpSuperFrame(BROADCAST, A, payload)
        self.assertGreater(len(vframe), 60000)
        one.sendVnet(vframe)
        await until(lambda: atTwo.vnet and len(c.frames) >= 42, "the super-frame", procs=[c])
        self.assertEqual(atTwo.vnet, [vframe])
        self.assertEqual(tcpPayloads(c.frames, self), payload)
        plain = BROADCAST + A + b"\x08\x06" + bytes(46)
        one.send(plain)
        await until(lambda: len(atTwo.vnet) == 2 and c.frames[-1] == plain, "a plain frame",
                    procs=[c])
        self.assertEqual(atTwo.vnet[-1], PLAIN + plain)
        ports = [e.port for e in server.endpoints.values()]
        self.assertEqual(sorted((p.vnetIn, p.vnetOut) for p in ports), [(0, 0), (0, 1), (1, 0)])

    async def test_plainReceiver(self) -> None:
        """
        A client plug of ours whose receiver takes only plain frames gets
        the segments.
        """
        server = self.ourServer()
        one, _ = await self.ourClient(server.path)
        two, atTwo = await self.ourClient(server.path, FrameCollector())
        payload = payloadOf(30000)
        one.sendVnet(tcpSuperFrame(BROADCAST, A, payload, ipv6=True))
        await until(lambda: len(atTwo.frames) >= 21, "the segments")
        self.assertEqual(tcpPayloads(atTwo.frames, self), payload)

    async def test_cSwitch(self) -> None:
        """
        On the C vde_switch our client stays plain: C{offloads} 0, and a
        super-frame sent on it reaches a C client as segments.
        """
        switch = CSwitch(self)
        await switch.started()
        plug = await registry.open(reactor, "vde://" + switch.path, "ours")
        self.addCleanup(plug.close)
        self.assertIs(type(plug), VdeClientPlug)
        self.assertEqual(plug.offloads, 0)
        plug.startReceiving(FrameCollector())
        c = cPlug(self, "c", switch.path)
        await until(lambda: switch.command("port/print").count("endpoint ID") == 2,
                    "the C client", procs=[c])
        payload = payloadOf(12000)
        plug.sendVnet(tcpSuperFrame(BROADCAST, A, payload))
        await until(lambda: len(c.frames) >= 9, "the segments", procs=[c])
        self.assertEqual(tcpPayloads(c.frames, self), payload)
