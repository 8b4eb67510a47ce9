"""
Vnet frames through a L{Node} (L{vdetwist.node.vnet}), with in-memory plugs:
super-frames forwarded as they are to ports that take them and segmented
once for the others, VLAN tags moving the checksum start, lying headers
dropped at the ingress.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.vnetframes import payloadOf, tcpPayloads, tcpSuperFrame, withHeader
from vdetwist.interfaces import IVnetPlug, IVnetReceiver
from vdetwist.node import HubEngine, Node, SwitchEngine, TrunkSwitchEngine
from vdetwist.node.node import hostPair
from vdetwist.testing import FrameCollector, MemoryPlug
from vdetwist.web.status import metricsText, switchStatus
from vdetwist.node import vnet
from vdetwist.node.vnet import retagged
from vdetwist.wire import gso
from vdetwist.wire.gso import checkSuperFrame
from vdetwist.wire.vnethdr import (
    GSO_TCPV4,
    PLAIN,
    TUN_F_CSUM,
    TUN_F_TSO4,
    VNET_HDRLEN,
    VnetHeader,
)

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BCAST = b"\xff" * 6
ALL = 0x7F


@implementer(IVnetPlug)
class MemoryVnetPlug(MemoryPlug):
    """
    A L{MemoryPlug} that also takes vnet frames (C{sentVnet}) and can
    deliver them (L{injectVnet}).
    """

    def __init__(self, description: str, offloads: int) -> None:
        super().__init__(description)
        self.offloads = offloads
        self.sentVnet: list[bytes] = []

    def sendVnet(self, frame: bytes) -> None:
        self.sentVnet.append(frame)

    def injectVnet(self, frame: bytes) -> None:
        self.receiver.vnetFrameReceived(frame)


class VnetNodeTests(SynchronousTestCase):
    def makeNode(self, engine, offloads=(ALL, ALL, 0, 0)):
        """
        A node with a port per entry of C{offloads}: a L{MemoryVnetPlug}
        with those offloads, or a plain L{MemoryPlug} for 0.
        """
        self.clock = Clock()
        self.node = Node(engine, self.clock)
        self.plugs = {}
        for n, mask in enumerate(offloads, 1):
            plug = MemoryVnetPlug(f"v{n}", mask) if mask else MemoryPlug(f"p{n}")
            self.plugs[self.node.addPort(plug).number] = plug
        return self.node

    def test_contract(self):
        """
        A port's receiver takes vnet frames, the host plug is an
        L{IVnetPlug}; a port's offloads are those all its plugs take.
        """
        node = self.makeNode(HubEngine(), (ALL, TUN_F_CSUM, 0))
        link = node.getPort(1)._links[0]
        verifyObject(IVnetReceiver, link)
        mine, theirs = hostPair()
        verifyObject(IVnetPlug, mine)
        self.assertEqual([node.getPort(n).offloads for n in (1, 2, 3)], [ALL, TUN_F_CSUM, 0])
        node.addPort(MemoryVnetPlug("v1bis", TUN_F_CSUM | TUN_F_TSO4), number=1)
        self.assertEqual(node.getPort(1).offloads, TUN_F_CSUM | TUN_F_TSO4)
        node.addPort(MemoryPlug("plain"), number=1)
        self.assertEqual(node.getPort(1).offloads, 0)

    def test_asIsAndSegmentedOnce(self):
        """
        A flood: the super-frame goes as it is (the same object) to the port
        that takes TSO, and as segments to the two plain ports, the same
        segment objects for both, made by one call of segment.
        """
        self.makeNode(HubEngine(), (ALL, ALL, 0, 0))
        calls = []
        real = gso.segment

        def counting(vframe):
            calls.append(vframe)
            return real(vframe)
        self.patch(vnet, "segment", counting)
        payload = payloadOf(20000)
        vframe = tcpSuperFrame(BCAST, A, payload)
        self.plugs[1].injectVnet(vframe)
        self.assertIs(self.plugs[2].sentVnet[0], vframe)
        self.assertEqual(len(self.plugs[2].sentVnet), 1)
        self.assertEqual(self.plugs[1].sentVnet + self.plugs[1].sentFrames, [])
        three, four = self.plugs[3].sentFrames, self.plugs[4].sentFrames
        self.assertEqual(len(three), 14)
        for one, other in zip(three, four):
            self.assertIs(one, other)
        self.assertEqual(len(calls), 1)
        self.assertEqual(tcpPayloads(three, self), payload)
        port1, port2, port3 = (self.node.getPort(n) for n in (1, 2, 3))
        self.assertEqual((port1.inFrames, port1.vnetIn), (1, 1))
        self.assertEqual((port2.outFrames, port2.vnetOut), (1, 1))
        self.assertEqual((port3.outFrames, port3.vnetOut), (14, 0))
        # Whole frames are counted, not what the engine read of them.
        self.assertEqual(port1.inBytes, len(vframe) - VNET_HDRLEN)
        self.assertEqual(port2.outBytes, len(vframe) - VNET_HDRLEN)
        self.assertEqual(port3.outBytes, sum(map(len, three)))

    def test_webStatus(self):
        """
        The web status shows the offloaded frames a port received and sent
        as they are.
        """
        self.makeNode(HubEngine(), (ALL, ALL))
        self.plugs[1].injectVnet(tcpSuperFrame(BCAST, A, payloadOf(3000)))
        ports = {p["port"]: p for p in switchStatus(self.node)["ports"]}
        self.assertEqual(
            [(ports[n]["receiveOffloadedFrames"], ports[n]["transmitOffloadedFrames"])
             for n in (1, 2)],
            [(1, 0), (0, 1)])
        self.assertIn("vde_port_transmit_offloaded_frames_total{", metricsText(self.node))

    def test_offloadsNotCovered(self):
        """
        A port taking checksums but not TSO gets segments.
        """
        self.makeNode(HubEngine(), (ALL, TUN_F_CSUM))
        payload = payloadOf(5000)
        self.plugs[1].injectVnet(tcpSuperFrame(BCAST, A, payload, ipv6=True))
        self.assertEqual(self.plugs[2].sentVnet, [])
        self.assertEqual(tcpPayloads(self.plugs[2].sentFrames, self), payload)

    def test_plainHeader(self):
        """
        A vnet frame whose header is plain takes the plain path: every port
        gets the Ethernet frame through C{send}.
        """
        self.makeNode(HubEngine(), (ALL, ALL, 0))
        frame = BCAST + A + b"\x08\x06" + bytes(46)
        self.plugs[1].injectVnet(PLAIN + frame)
        self.assertEqual(self.plugs[2].sentFrames, [frame])
        self.assertEqual(self.plugs[3].sentFrames, [frame])
        self.assertEqual(self.plugs[2].sentVnet, [])
        self.assertEqual(self.node.getPort(1).vnetIn, 0)

    def test_learning(self):
        """
        The switch learns the source address after the header: a reply to
        A goes to A's port only.
        """
        self.makeNode(TrunkSwitchEngine(), (ALL, ALL, 0))
        self.plugs[1].injectVnet(tcpSuperFrame(BCAST, A, payloadOf(3000)))
        self.plugs[1].sentVnet.clear()
        self.plugs[3].sentFrames.clear()
        reply = tcpSuperFrame(A, B, payloadOf(3000))
        self.plugs[2].injectVnet(reply)
        self.assertEqual(self.plugs[1].sentVnet, [reply])
        self.assertEqual(self.plugs[3].sentFrames, [])

    def vlanNode(self):
        """
        A vde_switch node: port 1 (vnet) untagged in VLAN 5, port 2 (vnet)
        and port 3 (plain) tagged members of VLAN 5.
        """
        node = self.makeNode(SwitchEngine(), (ALL, ALL, 0))
        node.createVlan(5)
        node.setPortVlan(node.getPort(1), 5)
        for n in (2, 3):
            node.addPortVlan(5, node.getPort(n))
        return node

    def test_tagAddedMovesChecksumStart(self):
        """
        A tag added on the way to a tagged port moves the checksum start and
        the header length by 4; the plain tagged port gets tagged segments
        with complete checksums.
        """
        self.vlanNode()
        payload = payloadOf(6000)
        vframe = tcpSuperFrame(BCAST, A, payload)
        self.plugs[1].injectVnet(vframe)
        (out,) = self.plugs[2].sentVnet
        self.assertEqual(out, withHeader(tcpSuperFrame(BCAST, A, payload, vlan=5)))
        before, after = VnetHeader.unpack(vframe), VnetHeader.unpack(out)
        self.assertEqual((after.csumStart, after.hdrLen), (before.csumStart + 4, before.hdrLen + 4))
        checkSuperFrame(out)
        frames = self.plugs[3].sentFrames
        self.assertTrue(all(f[12:16] == b"\x81\x00\x00\x05" for f in frames))
        self.assertEqual(tcpPayloads(frames, self), payload)

    def test_tagStrippedMovesChecksumStart(self):
        """
        The reverse: a tagged super-frame stripped for the untagged port.
        """
        self.vlanNode()
        payload = payloadOf(6000)
        vframe = tcpSuperFrame(BCAST, B, payload, vlan=5)
        self.plugs[2].injectVnet(vframe)
        (out,) = self.plugs[1].sentVnet
        self.assertEqual(out, tcpSuperFrame(BCAST, B, payload))
        self.assertEqual(VnetHeader.unpack(out).csumStart, VnetHeader.unpack(vframe).csumStart - 4)
        self.assertEqual(tcpPayloads(self.plugs[3].sentFrames, self), payload)

    def test_stackedTags(self):
        """
        A super-frame under two VLAN tags (802.1ad, then 802.1Q) passes when
        its checksum start counts both, and is dropped when it does not.
        """
        tagged = tcpSuperFrame(BCAST, A, payloadOf(3000), vlan=5)
        qinq = (retagged(tagged[:VNET_HDRLEN], 4) + tagged[VNET_HDRLEN:VNET_HDRLEN + 12]
                + b"\x88\xa8\x00\x07" + tagged[VNET_HDRLEN + 12:])
        self.makeNode(HubEngine(), (ALL, ALL))
        self.plugs[1].injectVnet(qinq)
        self.plugs[1].injectVnet(tagged[:VNET_HDRLEN] + qinq[VNET_HDRLEN:])
        self.assertEqual(self.plugs[2].sentVnet, [qinq])
        self.assertEqual(self.node.getPort(1).inDropped, 1)

    def test_lyingHeaders(self):
        """
        A super-frame whose header lies is dropped at the ingress and
        counted there; no port gets anything.
        """
        self.makeNode(HubEngine(), (ALL, ALL, 0))
        good = tcpSuperFrame(BCAST, A, payloadOf(4000))
        udp = bytearray(good)
        udp[VNET_HDRLEN + 14 + 9] = 17
        lies = [
            withHeader(good, gsoSize=0),
            withHeader(good, csumStart=len(good)),
            withHeader(good, gsoType=0, gsoSize=0, csumStart=len(good) - VNET_HDRLEN - 17),
            withHeader(good, gsoType=0x42),
            bytes(udp),
            withHeader(tcpSuperFrame(BCAST, A, payloadOf(4000), ipv6=True), gsoType=GSO_TCPV4),
        ]
        port = self.node.getPort(1)
        for n, lie in enumerate(lies, 1):
            self.plugs[1].injectVnet(lie)
            self.assertEqual(port.inDropped, n, VnetHeader.unpack(lie))
        self.assertEqual((port.inDropped, port.inFrames, port.vnetIn), (len(lies), 0, 0))
        for n in (2, 3):
            self.assertEqual(self.plugs[n].sentFrames, [])
        self.assertEqual(self.plugs[2].sentVnet, [])

    def test_checksumOnly(self):
        """
        A frame with a partial checksum and no GSO goes as it is (the same
        object) to a port that takes checksums, with its checksum completed
        to one that does not, counted as received offloaded.
        """
        self.makeNode(HubEngine(), (ALL, TUN_F_CSUM, 0))
        payload = payloadOf(300)
        vframe = withHeader(tcpSuperFrame(BCAST, A, payload), gsoType=0, gsoSize=0, hdrLen=0)
        self.plugs[1].injectVnet(vframe)
        self.assertIs(self.plugs[2].sentVnet[0], vframe)
        self.assertEqual(tcpPayloads(self.plugs[3].sentFrames, self), payload)
        self.assertEqual(self.node.getPort(1).vnetIn, 1)
        self.assertEqual([self.node.getPort(n).vnetOut for n in (2, 3)], [1, 0])

    def test_checkedSend(self):
        """
        A plug with C{sendCheckedVnet} (L{VnetDatagramPlug}) is given the
        frames the ingress checked through it, so they are not parsed
        again; a plain frame still goes through C{send}.
        """
        self.makeNode(HubEngine(), (ALL,))

        class CheckedPlug(MemoryVnetPlug):
            def __init__(self):
                super().__init__("checked", ALL)
                self.checked = []

            def sendCheckedVnet(self, frame):
                self.checked.append(frame)
        plug = CheckedPlug()
        self.node.addPort(plug)
        vframe = tcpSuperFrame(BCAST, A, payloadOf(3000))
        self.plugs[1].injectVnet(vframe)
        self.assertEqual((plug.checked, plug.sentVnet), ([vframe], []))
        frame = BCAST + A + b"\x08\x06" + bytes(46)
        self.plugs[1].injectVnet(PLAIN + frame)
        self.assertEqual(plug.sentFrames, [frame])

    def test_taps(self):
        """
        Taps of the ingress and of an egress port see Ethernet frames.
        """
        node = self.makeNode(HubEngine(), (ALL, ALL))
        seenIn, seenOut = [], []
        node.addTap(node.getPort(1), seenIn.append)
        node.addTap(node.getPort(2), seenOut.append)
        vframe = tcpSuperFrame(BCAST, A, payloadOf(3000))
        self.plugs[1].injectVnet(vframe)
        self.assertEqual(seenIn, [vframe[VNET_HDRLEN:]])
        self.assertEqual(seenOut, [vframe[VNET_HDRLEN:]])
        self.assertEqual(self.plugs[2].sentVnet, [vframe])

    def test_mirrorPortsGetSegments(self):
        """
        Mirror ports of the ingress and of an egress port that takes the
        super-frame as it is get its segments, plain and checksummed, even
        when their plugs take offloads (a mirror port's output is plain); a
        checksum-only frame reaches them with its checksum complete.
        """
        node = self.makeNode(HubEngine(), (ALL, ALL, ALL, ALL))
        node.mirror(node.getPort(1), node.getPort(3))
        node.mirror(node.getPort(2), node.getPort(4))
        payload = payloadOf(6000)
        vframe = tcpSuperFrame(BCAST, A, payload)
        self.plugs[1].injectVnet(vframe)
        self.assertEqual(self.plugs[2].sentVnet, [vframe])
        for n in (3, 4):
            self.assertEqual(self.plugs[n].sentVnet, [])
            self.assertEqual(tcpPayloads(self.plugs[n].sentFrames, self), payload)
            self.assertEqual(node.getPort(n).outFrames, 5)
            del self.plugs[n].sentFrames[:]
        small = withHeader(tcpSuperFrame(BCAST, A, payloadOf(100)), gsoType=0, gsoSize=0,
                           hdrLen=0)
        self.plugs[1].injectVnet(small)
        for n in (3, 4):
            self.assertEqual(tcpPayloads(self.plugs[n].sentFrames, self), payloadOf(100))
        node.unmirror(node.getPort(1), node.getPort(3))
        self.plugs[1].injectVnet(vframe)
        self.assertEqual(len(self.plugs[3].sentFrames), 1)
        self.assertEqual(node.getPort(1).taps, ())

    def test_hostPlug(self):
        """
        The host plug passes vnet frames both ways: to a receiver that takes
        them as they are, to a plain one as segments.
        """
        node = self.makeNode(HubEngine(), (ALL, 0))
        host = node.openHost()

        @implementer(IVnetReceiver)
        class VnetCollector(FrameCollector):
            def __init__(self):
                super().__init__()
                self.vnet = []

            def vnetFrameReceived(self, frame):
                self.vnet.append(frame)
        atHost = VnetCollector()
        host.startReceiving(atHost)
        payload = payloadOf(4000)
        vframe = tcpSuperFrame(BCAST, A, payload)
        self.plugs[1].injectVnet(vframe)
        self.assertEqual(atHost.vnet, [vframe])
        host.sendVnet(tcpSuperFrame(BCAST, B, payload))
        self.assertEqual(len(self.plugs[1].sentVnet), 1)
        self.assertEqual(tcpPayloads(self.plugs[2].sentFrames[-3:], self), payload)
        plainHost, theirs = hostPair()
        collector = FrameCollector()
        plainHost.startReceiving(collector)
        theirs.startReceiving(FrameCollector())
        theirs.sendVnet(vframe)
        self.assertEqual(tcpPayloads(collector.frames, self), payload)
        theirs.sendVnet(withHeader(vframe, gsoSize=0))
        self.assertEqual(plainHost.stats.dropped, 1)


@implementer(IVnetReceiver)
class _Rebindable:
    """
    A receiver whose methods are instance attributes, as a node's port
    links are: a capture or mirror rebinds them.
    """

    def __init__(self) -> None:
        self.got: list = []
        self.frameReceived = self.got.append
        self.vnetFrameReceived = self.got.append

    def plugClosed(self, reason) -> None:
        pass


class DeliveryCacheTests(SynchronousTestCase):
    """
    L{vdetwist._transport.vnet.DeliveryCache}: a plug asks it once per read
    batch for what to deliver to; it must follow a receiver rebound since
    (a port capture started on a busy port of ours was bypassed).
    """

    def test_followsRebinding(self) -> None:
        from vdetwist._transport.vnet import DeliveryCache

        receiver = _Rebindable()
        deliveries = DeliveryCache(self.fail)
        deliveries(receiver)(b"one")
        captured: list = []

        def tapped(frame: bytes) -> None:
            captured.append(frame)
            receiver.got.append(frame)

        receiver.vnetFrameReceived = tapped
        deliveries(receiver)(b"two")
        self.assertEqual((receiver.got, captured), ([b"one", b"two"], [b"two"]))
        self.assertIs(deliveries(receiver), tapped)
