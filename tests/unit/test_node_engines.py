"""
Forwarding semantics of L{vdetwist.node.engines}, through a L{Node} with
in-memory plugs.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vdetwist.node import (
    NOVLAN,
    BondingEngine,
    HubEngine,
    MacTable,
    MultiEngine,
    Node,
    SwitchEngine,
    TrunkSwitchEngine,
    netnodeEngine,
)
from vdetwist.testing import FrameCollector, MemoryPlug

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
H = bytes.fromhex("0200000000ff")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")


def eth(dst, src, payload=b"payload-payload-payload-payload!", ethertype=b"\x08\x00"):
    return dst + src + ethertype + payload


def tag(frame, vid, prio=0):
    """
    Insert an 802.1Q tag after the source MAC.
    """
    tci = (prio << 13) | vid
    return frame[:12] + b"\x81\x00" + tci.to_bytes(2, "big") + frame[12:]


class NodeMixin:
    """
    A node with in-memory plugs: C{self.plugs[n]} is port n's plug.
    """

    def makeNode(self, engine, nports=3, host=False, tableArgs=None, **kw):
        """
        @param tableArgs: if given, the node's L{MacTable} is made with them
            (and the node's clock).
        """
        self.clock = Clock()
        self.clock.advance(1000)
        if tableArgs is not None:
            kw["table"] = MacTable(self.clock, **tableArgs)
        self.node = Node(engine, self.clock, **kw)
        self.plugs = {}
        for _ in range(nports):
            plug = MemoryPlug(f"p{len(self.plugs) + 1}")
            port = self.node.addPort(plug)
            self.plugs[port.number] = plug
        if host:
            self.host = self.node.openHost("host")
            self.hostFrames = FrameCollector()
            self.host.startReceiving(self.hostFrames)
        return self.node

    def sent(self):
        """
        Frames each port's plug was given, by port number, then cleared.
        """
        result = {n: list(p.sentFrames) for n, p in self.plugs.items()}
        for p in self.plugs.values():
            p.sentFrames.clear()
        return result

    def hostGot(self):
        frames = list(self.hostFrames.frames)
        self.hostFrames.frames.clear()
        return frames


class HubTests(NodeMixin, SynchronousTestCase):
    def test_portToOthersAndHost(self):
        self.makeNode(HubEngine(), 3, host=True)
        f = eth(A, B)
        self.plugs[1].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [f]})
        self.assertEqual(self.hostGot(), [f])

    def test_hostToEveryPort(self):
        self.makeNode(HubEngine(), 3, host=True)
        f = eth(A, H)
        self.host.send(f)
        self.assertEqual(self.sent(), {1: [f], 2: [f], 3: [f]})
        self.assertEqual(self.hostGot(), [])

    def test_noLearning(self):
        """
        A hub floods even unicast to a station it has heard from.
        """
        self.makeNode(HubEngine(), 3)
        self.plugs[1].inject(eth(BCAST, A))
        self.sent()
        f = eth(A, B)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [f], 2: [], 3: [f]})
        self.assertEqual(len(self.node.table), 0)

    def test_vlanTagsUntouched(self):
        self.makeNode(HubEngine(), 2)
        f = tag(eth(A, B), 5)
        self.plugs[1].inject(f)
        self.assertEqual(self.sent()[2], [f])

    def test_portZeroGetsNothing(self):
        """
        vde_switch hub mode sends nothing to port 0, but port 0 may talk.
        """
        self.makeNode(HubEngine(), 2)
        zero = MemoryPlug("zero")
        self.node.addPort(zero, 0)
        f = eth(BCAST, A)
        self.plugs[1].inject(f)
        self.assertEqual(zero.sentFrames, [])
        self.assertEqual(self.sent()[2], [f])
        g = eth(BCAST, C)
        zero.inject(g)
        self.assertEqual(self.sent(), {1: [g], 2: [g]})

    def test_shortFramesDropped(self):
        self.makeNode(HubEngine(), 2, host=True)
        self.plugs[1].inject(b"\xff" * 13)
        self.host.send(b"\xff" * 13)
        self.assertEqual(self.sent(), {1: [], 2: []})
        self.assertEqual(self.hostGot(), [])
        self.assertEqual(self.node.getPort(1).inDropped, 1)
        # The host plug itself drops what is not a frame, as every plug does.
        self.assertEqual(self.host.stats.dropped, 1)
        self.assertEqual(self.node.getPort(1).inFrames, 0)
        # Exactly 14 bytes is a frame.
        self.plugs[1].inject(b"\xff" * 14)
        self.assertEqual(self.sent()[2], [b"\xff" * 14])


class TrunkSwitchTests(NodeMixin, SynchronousTestCase):
    """
    vdeplug4 C{switch://}.
    """

    def setUp(self):
        self.makeNode(TrunkSwitchEngine(), 3, host=True)

    def test_broadcastToAllOthersAndHost(self):
        f = eth(BCAST, A)
        self.plugs[1].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [f]})
        self.assertEqual(self.hostGot(), [f])

    def test_multicastFlooded(self):
        self.plugs[1].inject(eth(BCAST, B))
        self.plugs[2].inject(eth(BCAST, MCAST))  # group source: not learned
        self.sent()
        self.hostGot()
        f = eth(MCAST, A)
        self.plugs[3].inject(f)
        self.assertEqual(self.sent(), {1: [f], 2: [f], 3: []})
        self.assertEqual(self.hostGot(), [f])
        self.assertIsNone(self.node.table.lookup(MCAST, 0))

    def test_unknownUnicastFlooded(self):
        f = eth(C, A)
        self.plugs[1].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [f]})
        self.assertEqual(self.hostGot(), [f])

    def test_unicastAfterLearning(self):
        self.plugs[1].inject(eth(BCAST, A))
        self.plugs[2].inject(eth(BCAST, B))
        self.sent()
        self.hostGot()
        f = eth(A, B)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [f], 2: [], 3: []})
        self.assertEqual(self.hostGot(), [])

    def test_hostLearnedAndReached(self):
        """
        The host learns like a port: a frame to its MAC goes to it only, and
        host-to-port unicast goes to that port only.
        """
        self.host.send(eth(BCAST, H))
        self.plugs[1].inject(eth(BCAST, A))
        self.sent()
        self.hostGot()
        f = eth(H, A)
        self.plugs[1].inject(f)
        self.assertEqual(self.hostGot(), [f])
        self.assertEqual(self.sent(), {1: [], 2: [], 3: []})
        g = eth(A, H)
        self.host.send(g)
        self.assertEqual(self.sent(), {1: [g], 2: [], 3: []})
        self.assertEqual(self.hostGot(), [])

    def test_noEchoToIngress(self):
        """
        A frame whose destination was learned on its own ingress port is
        dropped.
        """
        self.plugs[1].inject(eth(BCAST, A))
        self.sent()
        self.hostGot()
        self.plugs[1].inject(eth(A, C))
        self.assertEqual(self.sent(), {1: [], 2: [], 3: []})
        self.assertEqual(self.hostGot(), [])

    def test_expiry(self):
        self.plugs[1].inject(eth(BCAST, A))
        self.sent()
        self.clock.advance(120)
        f = eth(A, B)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [f], 2: [], 3: []})
        self.clock.advance(121)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [f], 2: [], 3: [f]})

    def test_relearnOnMove(self):
        self.plugs[1].inject(eth(BCAST, A))
        self.plugs[3].inject(eth(BCAST, A))
        self.sent()
        f = eth(A, B)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [f]})

    def test_tagsForwardedUnchangedVlanKeys(self):
        """
        Tagged frames pass unchanged; their VID separates the table, so a
        VLAN 5 unicast to a MAC learned on VLAN 0 floods.
        """
        self.plugs[1].inject(eth(BCAST, A))
        self.sent()
        f = tag(eth(A, B), 5)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [f], 2: [], 3: [f]})
        self.assertEqual(self.node.table.lookup(B, 5), self.node.getPort(2))
        self.assertIsNone(self.node.table.lookup(B, 0))
        g = tag(eth(B, C), 5, prio=3)
        self.plugs[3].inject(g)
        self.assertEqual(self.sent(), {1: [], 2: [g], 3: []})

    def test_vlan1024IsNotVlan0(self):
        self.plugs[1].inject(eth(BCAST, A))
        self.sent()
        f = tag(eth(A, B), 1024)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [f], 2: [], 3: [f]})

    def test_portRemovalPurges(self):
        self.plugs[1].inject(eth(BCAST, A))
        self.plugs[1].close()
        self.assertIsNone(self.node.table.lookup(A, 0))
        self.sent()
        self.hostGot()
        f = eth(A, B)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [f]})
        self.assertEqual(self.hostGot(), [f])

    def test_netnodeEngine(self):
        self.assertIsInstance(netnodeEngine("switch"), TrunkSwitchEngine)
        self.assertIsInstance(netnodeEngine("hub"), HubEngine)
        self.assertIsInstance(netnodeEngine("multi"), MultiEngine)
        self.assertIsInstance(netnodeEngine("bonding"), BondingEngine)
        self.assertIsNone(netnodeEngine("vde"))


class MultiTests(NodeMixin, SynchronousTestCase):
    def setUp(self):
        self.makeNode(MultiEngine(), 3, host=True)

    def test_portToHostOnly(self):
        f = eth(BCAST, A)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: []})
        self.assertEqual(self.hostGot(), [f])

    def test_hostToEveryPort(self):
        f = eth(A, H)
        self.host.send(f)
        self.host.send(f)
        self.assertEqual(self.sent(), {1: [f, f], 2: [f, f], 3: [f, f]})

    def test_noHost(self):
        """
        Without a host, frames from ports go nowhere.
        """
        self.host.close()
        self.assertIsNone(self.node.hostPort)
        self.plugs[1].inject(eth(BCAST, A))
        self.assertEqual(self.sent(), {1: [], 2: [], 3: []})
        self.assertEqual(self.node.getPort(1).inFrames, 1)


class BondingTests(NodeMixin, SynchronousTestCase):
    def setUp(self):
        self.makeNode(BondingEngine(), 3, host=True)

    def who(self, count):
        """
        Send C{count} frames from the host; the port numbers that got them.
        """
        got = []
        for i in range(count):
            self.host.send(eth(A, H, payload=bytes([i]) * 40))
            for n, frames in self.sent().items():
                got.extend([n] * len(frames))
        return got

    def test_roundRobinStartsAtIndexOne(self):
        self.assertEqual(self.who(7), [2, 3, 1, 2, 3, 1, 2])

    def test_portToHostOnly(self):
        f = eth(BCAST, A)
        self.plugs[1].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: []})
        self.assertEqual(self.hostGot(), [f])

    def test_swapLastIntoHole(self):
        """
        Removing a link moves the last link into its slot; the index is
        not adjusted.
        """
        self.assertEqual(self.who(1), [2])  # last = 1
        self.plugs[1].close()  # links [p1, p2, p3] -> [p3, p2]
        del self.plugs[1]
        self.assertEqual(self.node.engine.links, [self.node.getPort(3), self.node.getPort(2)])
        self.assertEqual(self.who(4), [3, 2, 3, 2])

    def test_newLinkAppended(self):
        self.plugs[2].close()  # [p1, p3]
        del self.plugs[2]
        plug = MemoryPlug("p4")
        port = self.node.addPort(plug)
        self.plugs[port.number] = plug
        self.assertEqual(port.number, 2)  # lowest free number...
        # ...but last in the array: [p1, p3, p(2)]
        self.assertEqual(self.who(3), [3, 2, 1])

    def test_singleAndNoLink(self):
        self.plugs[1].close()
        self.plugs[2].close()
        self.plugs = {3: self.plugs[3]}
        self.assertEqual(self.who(3), [3, 3, 3])
        self.plugs[3].close()
        self.plugs = {}
        self.host.send(eth(A, H))
        self.assertEqual(self.node.hostPort.inDropped, 1)


class VlanSwitchMixin(NodeMixin):
    """
    vde_switch: ports 1..4; VLAN 5 created.
    """

    def setUp(self):
        self.makeNode(
            SwitchEngine(),
            4,
            table=None,
            numports=32,
            keepInactivePorts=True,
        )
        self.node.createVlan(5)

    def port(self, n):
        return self.node.getPort(n)


class SwitchTests(VlanSwitchMixin, SynchronousTestCase):
    def test_defaultVlan0(self):
        f = eth(BCAST, A)
        self.plugs[1].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [f], 4: [f]})

    def test_learningUnicast(self):
        self.plugs[1].inject(eth(BCAST, A))
        self.plugs[3].inject(eth(BCAST, C))
        self.sent()
        f = eth(A, C)
        self.plugs[3].inject(f)
        self.assertEqual(self.sent(), {1: [f], 2: [], 3: [], 4: []})

    def test_noEcho(self):
        self.plugs[1].inject(eth(BCAST, A))
        self.sent()
        self.plugs[1].inject(eth(A, B))
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: []})

    def test_untaggedIsolation(self):
        """
        Untagged ports of different VLANs do not hear each other, even
        for a unicast destination learned on another VLAN.
        """
        self.node.setPortVlan(self.port(1), 5)
        self.node.setPortVlan(self.port(2), 5)
        f = eth(BCAST, A)
        self.plugs[1].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [], 4: []})
        g = eth(BCAST, C)
        self.plugs[3].inject(g)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: [g]})
        h = eth(A, C)  # A is known, but on VLAN 5
        self.plugs[3].inject(h)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: [h]})

    def test_untaggedToTrunkAddsTag(self):
        """
        Spec C: C{port/setvlan 2 5}, C{vlan/addport 5 3}: untagged in on
        port 2 arrives tagged 0x8100/0005 on port 3.
        """
        self.node.setPortVlan(self.port(2), 5)
        self.node.addPortVlan(5, self.port(3))
        f = eth(BCAST, B)
        self.plugs[2].inject(f)
        out = self.sent()
        self.assertEqual(out[3], [tag(f, 5)])
        self.assertEqual(out[3][0][12:16], b"\x81\x00\x00\x05")
        # Port 3 is still an untagged member of VLAN 0; 1 and 4 are only in 0.
        self.assertEqual((out[1], out[4]), ([], []))

    def test_trunkToUntaggedStripsTag(self):
        """
        The reverse: tagged in on the trunk leaves port 2 untagged; the
        priority bits do not matter for membership.
        """
        self.node.setPortVlan(self.port(2), 5)
        self.node.addPortVlan(5, self.port(3))
        f = eth(BCAST, C)
        self.plugs[3].inject(tag(f, 5, prio=6))
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [], 4: []})

    def test_knownUnicastTagging(self):
        """
        Known unicast gets the tag right too, in both directions.
        """
        self.node.setPortVlan(self.port(2), 5)
        self.node.addPortVlan(5, self.port(3))
        self.plugs[2].inject(eth(BCAST, B))
        self.plugs[3].inject(tag(eth(BCAST, C), 5))
        self.sent()
        f = eth(C, B)
        self.plugs[2].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [tag(f, 5)], 4: []})
        g = eth(B, C)
        self.plugs[3].inject(tag(g, 5))
        self.assertEqual(self.sent(), {1: [], 2: [g], 3: [], 4: []})

    def test_trunkToTrunkUnchanged(self):
        self.node.addPortVlan(5, self.port(3))
        self.node.addPortVlan(5, self.port(4))
        f = tag(eth(BCAST, C), 5, prio=2)
        self.plugs[3].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: [f]})

    def test_taggedFromNonMemberDropped(self):
        """
        An 802.1Q frame for a VLAN the port is not a member of (here: an
        untagged port of VLAN 0 sending VLAN 5) is dropped and counted.
        """
        self.node.setPortVlan(self.port(2), 5)
        self.plugs[1].inject(tag(eth(BCAST, A), 5))
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: []})
        self.assertEqual(self.port(1).inDropped, 1)
        # Unknown VLAN: dropped as well.
        self.plugs[1].inject(tag(eth(BCAST, A), 77))
        self.assertEqual(self.port(1).inDropped, 2)

    def test_taggedForOwnUntaggedVlan(self):
        """
        A tagged frame for the port's own untagged VLAN is accepted (the
        port is a member): kept tagged for trunks, stripped for untagged
        members.
        """
        self.node.addPortVlan(5, self.port(4))
        self.node.setPortVlan(self.port(2), 5)
        self.node.setPortVlan(self.port(3), 5)
        f = eth(BCAST, B)
        self.plugs[2].inject(tag(f, 5))
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [f], 4: [tag(f, 5)]})

    def test_priorityTaggedVlan0(self):
        """
        VID 0 is VLAN 0: a priority-tagged frame from a VLAN 0 port reaches
        the other untagged VLAN 0 ports without its tag.
        """
        f = eth(BCAST, A)
        self.plugs[1].inject(tag(f, 0, prio=5))
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [f], 4: [f]})

    def test_shortTaggedDropped(self):
        self.plugs[1].inject(BCAST + A + b"\x81\x00\x00")
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: []})
        self.assertEqual(self.port(1).inDropped, 1)

    def test_novlan(self):
        """
        NOVLAN: a port carries no untagged traffic but still its tagged
        VLANs.
        """
        self.node.setPortVlan(self.port(1), NOVLAN)
        self.node.addPortVlan(5, self.port(1))
        self.node.setPortVlan(self.port(2), 5)
        self.plugs[1].inject(eth(BCAST, A))
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: []})
        self.assertEqual(self.port(1).inDropped, 1)
        f = eth(BCAST, C)
        self.plugs[3].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: [f]})
        g = eth(BCAST, B)
        self.plugs[2].inject(g)
        self.assertEqual(self.sent()[1], [tag(g, 5)])

    def test_setvlanPurgesPortEntries(self):
        self.plugs[1].inject(eth(BCAST, A))
        self.assertIsNotNone(self.node.table.lookup(A, 0))
        self.node.setPortVlan(self.port(1), 5)
        self.assertIsNone(self.node.table.lookup(A, 0))

    def test_minPersistenceDelaysMove(self):
        self.node.table.minPersistence = 3
        self.plugs[1].inject(eth(BCAST, A))
        self.clock.advance(1)
        self.plugs[2].inject(eth(BCAST, A))  # too soon: stays on port 1
        self.sent()
        f = eth(A, C)
        self.plugs[3].inject(f)
        self.assertEqual(self.sent()[1], [f])
        self.clock.advance(3)
        self.plugs[2].inject(eth(BCAST, A))
        self.sent()
        self.plugs[3].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [], 4: []})

    def test_multipleEndpoints(self):
        """
        A port with two endpoints: both get its frames, neither hears the
        other, and the port counts each frame once.
        """
        extra = MemoryPlug("p1b")
        self.assertIs(self.node.addPort(extra, 1), self.port(1))
        f = eth(BCAST, A)
        self.plugs[1].inject(f)
        self.assertEqual(extra.sentFrames, [])
        g = eth(BCAST, B)
        self.plugs[2].inject(g)
        self.assertEqual(self.plugs[1].sentFrames, [g])
        self.assertEqual(extra.sentFrames, [g])
        self.assertEqual(self.port(1).outFrames, 1)
        # One endpoint leaving keeps the port and its addresses.
        extra.close()
        self.assertTrue(self.port(1).active)
        self.assertEqual(self.node.table.lookup(A, 0), self.port(1))

    def test_inactivePortKept(self):
        """
        keepInactivePorts (vde_switch): the port survives with its VLAN and
        counters, loses its addresses, and is reused first.
        """
        self.node.setPortVlan(self.port(2), 5)
        self.plugs[2].inject(eth(BCAST, B))
        self.plugs[2].close()
        port = self.port(2)
        self.assertIsNotNone(port)
        self.assertFalse(port.active)
        self.assertEqual((port.untaggedVlan, port.inFrames), (5, 1))
        self.assertIsNone(self.node.table.lookup(B, 5))
        again = MemoryPlug("again")
        self.assertIs(self.node.addPort(again), port)

    def test_hubModeSwitch(self):
        """
        C{port/sethub 1}: the engine changes under the same ports.
        """
        self.node.setPortVlan(self.port(1), 5)
        self.node.setEngine(HubEngine())
        f = eth(BCAST, A)
        self.plugs[1].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [f], 3: [f], 4: [f]})
        self.node.setEngine(SwitchEngine())
        self.plugs[1].inject(f)
        self.assertEqual(self.sent(), {1: [], 2: [], 3: [], 4: []})


class MacFloodTests(NodeMixin, SynchronousTestCase):
    """
    100,000 frames from ever new source addresses on port 1 (issue 8,
    defect 3: they used to fill the table, after which new stations were
    never learned and their unicast was flooded to every port).
    """

    def floodThenTalk(self, engine, **tableArgs):
        """
        Q (port 4) is known before the flood; after it, the new stations A
        (port 2) and B (port 3) exchange unicast that reaches only each
        other, and Q is still switched.
        """
        self.makeNode(engine, 4, tableArgs=dict(hashsize=65536, expiretime=100, **tableArgs))
        Q = bytes.fromhex("020000000004")
        self.plugs[4].inject(eth(BCAST, Q))
        for i in range(100000):
            self.clock.advance(0.0001)
            self.plugs[1].inject(eth(BCAST, bytes([0x0A]) + i.to_bytes(5, "big")))
            if i % 1000 == 999:
                self.sent()
        self.plugs[2].inject(eth(BCAST, A))
        self.plugs[3].inject(eth(BCAST, B))
        self.sent()
        ab, ba, aq = eth(B, A), eth(A, B), eth(Q, A)
        for _ in range(100):
            self.plugs[2].inject(ab)
            self.plugs[3].inject(ba)
        self.plugs[2].inject(aq)
        self.assertEqual(self.sent(), {1: [], 2: [ba] * 100, 3: [ab] * 100, 4: [aq]})
        self.assertLessEqual(len(self.node.table), 65536)
        return self.node.table

    def test_portLimit(self):
        """
        vde_switch's engine with twistd vde's port limit: the flood recycles
        its own port's 16,384 entries.
        """
        table = self.floodThenTalk(SwitchEngine(), portLimit=16384)
        self.assertEqual(len(table), 16384 + 3)

    def test_fullTable(self):
        """
        switch:// (no port limit): the flood fills the table, which then
        forgets the flooding port's least recently seen entries.
        """
        table = self.floodThenTalk(TrunkSwitchEngine())
        self.assertGreater(table.evicted, 100000 - 65536)
