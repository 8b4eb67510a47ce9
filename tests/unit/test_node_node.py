"""
Tests for L{vdetwist.node.node}: ports, endpoints, the host port, counters,
observers, VLAN configuration and the garbage collector.
"""

import errno

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from vdetwist.errors import PlugClosed, VdeError
from vdetwist.interfaces import IFrameReceiver, IVdePlug
from vdetwist.node import (
    NOVLAN,
    HubEngine,
    INodeObserver,
    LoggingObserver,
    Node,
    NodeObserver,
    SwitchEngine,
    TrunkSwitchEngine,
)
from vdetwist.testing import FrameCollector, MemoryPlug, plugPair

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BCAST = b"\xff" * 6


def eth(dst, src, size=60):
    return dst + src + b"\x08\x00" + b"x" * (size - 14)


class Recorder(NodeObserver):
    def __init__(self):
        self.events = []

    def portAdded(self, port):
        self.events.append(("port+", port.number))

    def portRemoved(self, port):
        self.events.append(("port-", port.number))

    def endpointAdded(self, port, plug):
        self.events.append(("ep+", port.number, plug.description))

    def endpointRemoved(self, port, plug, reason):
        self.events.append(("ep-", port.number, plug.description))

    def macAdded(self, mac, vlan, port):
        self.events.append(("mac+", mac, vlan, port.number))

    def macRemoved(self, mac, vlan, port):
        self.events.append(("mac-", mac, vlan, port.number))

    def macMoved(self, mac, vlan, old, new):
        self.events.append(("mac>", mac, vlan, old.number, new.number))


class Base(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)

    def node(self, engine=None, **kw):
        return Node(engine or TrunkSwitchEngine(), self.clock, **kw)


class InterfaceTests(Base):
    def test_receiver(self):
        node = self.node()
        plug = MemoryPlug()
        node.addPort(plug)
        self.assertTrue(verifyObject(IFrameReceiver, plug.receiver))

    def test_hostPlug(self):
        host = self.node().openHost()
        self.assertTrue(verifyObject(IVdePlug, host))

    def test_observer(self):
        self.assertTrue(verifyObject(INodeObserver, NodeObserver()))
        self.assertTrue(verifyObject(INodeObserver, LoggingObserver()))


class NumberingTests(Base):
    def test_lowestFree(self):
        node = self.node()
        ports = [node.addPort(MemoryPlug(str(i))) for i in range(3)]
        self.assertEqual([p.number for p in ports], [1, 2, 3])
        ports[1].endpoints[0].close()
        self.assertIsNone(node.getPort(2))
        self.assertEqual(node.addPort(MemoryPlug()).number, 2)

    def test_explicitNumber(self):
        node = self.node(numports=8)
        port = node.addPort(MemoryPlug(), 5)
        self.assertEqual(port.number, 5)
        self.assertIs(node.getPort(5), port)
        self.assertEqual(node.addPort(MemoryPlug()).number, 1)
        self.assertEqual(list(node.ports), [1, 5])

    def test_outOfRange(self):
        node = self.node(numports=4)
        e = self.assertRaises(VdeError, node.addPort, MemoryPlug(), 4)
        self.assertEqual(e.errno, errno.EINVAL)
        self.assertRaises(VdeError, node.addPort, MemoryPlug(), -1)

    def test_full(self):
        """
        Automatic allocation uses 1..numports-1; then ENOSPC.
        """
        node = self.node(numports=3)
        node.addPort(MemoryPlug())
        node.addPort(MemoryPlug())
        e = self.assertRaises(VdeError, node.addPort, MemoryPlug())
        self.assertEqual(e.errno, errno.ENOSPC)
        # Port 0 can still be asked for explicitly.
        self.assertEqual(node.addPort(MemoryPlug(), 0).number, 0)

    def test_createPort(self):
        """
        port/create: inactive, persistent, skipped by automatic allocation,
        joinable by number.
        """
        node = self.node(numports=8)
        created = node.createPort(1)
        self.assertFalse(created.active)
        self.assertFalse(created.allocatable)
        self.assertEqual(node.addPort(MemoryPlug()).number, 2)
        plug = MemoryPlug()
        self.assertIs(node.addPort(plug, 1), created)
        plug.close()
        self.assertIs(node.getPort(1), created)
        e = self.assertRaises(VdeError, node.createPort, 1)
        self.assertEqual(e.errno, errno.EEXIST)
        self.assertEqual(node.createPort().number, 3)

    def test_createAutoFull(self):
        node = self.node(numports=2)
        node.createPort()
        e = self.assertRaises(VdeError, node.createPort)
        self.assertEqual(e.errno, errno.ENOSPC)

    def test_setNumports(self):
        node = self.node(numports=8)
        node.addPort(MemoryPlug(), 6)
        e = self.assertRaises(VdeError, node.setNumports, 6)
        self.assertEqual(e.errno, errno.EADDRINUSE)
        node.setNumports(7)
        self.assertEqual(node.numports, 7)


class PortLifeTests(Base):
    def test_closedPlugRemovedOthersForward(self):
        """
        A plug that closes takes its port (and addresses) away; the other
        ports keep forwarding.
        """
        node = self.node()
        p1, p2, p3 = MemoryPlug("1"), MemoryPlug("2"), MemoryPlug("3")
        for p in (p1, p2, p3):
            node.addPort(p)
        p2.inject(eth(BCAST, B))
        p2.close()
        self.assertIsNone(node.getPort(2))
        self.assertIsNone(node.table.lookup(B, 0))
        p1.sentFrames.clear()
        p3.sentFrames.clear()
        f = eth(BCAST, A)
        p1.inject(f)
        self.assertEqual(p3.sentFrames, [f])
        g = eth(A, C)
        p3.inject(g)
        self.assertEqual(p1.sentFrames, [g])

    def test_removePort(self):
        """
        removePort closes the plugs of the port and purges its addresses.
        """
        node = self.node()
        p1, p2 = MemoryPlug("1"), MemoryPlug("2")
        port1 = node.addPort(p1)
        node.addPort(p2)
        p1.inject(eth(BCAST, A))
        node.removePort(port1)
        self.assertTrue(p1.closed)
        self.assertIsNone(node.getPort(1))
        self.assertIsNone(node.table.lookup(A, 0))
        e = self.assertRaises(VdeError, node.removePort, port1)
        self.assertEqual(e.errno, errno.ENXIO)
        p2.inject(eth(BCAST, B))
        self.assertEqual(p1.sentFrames, [])

    def test_closeDuringFlood(self):
        """
        A plug that closes another port from inside its C{send} does not
        disturb the flood in progress or later frames.
        """
        node = self.node(HubEngine())
        p1, p2, p3 = MemoryPlug("1"), MemoryPlug("2"), MemoryPlug("3")
        for p in (p1, p2, p3):
            node.addPort(p)
        original = p2.send

        def send(frame):
            original(frame)
            p3.close()

        p2.send = send
        node.getPort(2)._updateOutput()
        f = eth(BCAST, A)
        p1.inject(f)
        self.assertEqual(p2.sentFrames, [f])
        self.assertIsNone(node.getPort(3))
        p1.inject(f)
        self.assertEqual(p2.sentFrames, [f, f])

    def test_pendingFramesAfterAttach(self):
        """
        Frames a plug queued before the node started receiving are
        forwarded once it does.
        """
        node = self.node(HubEngine())
        early = MemoryPlug("early")
        f = eth(BCAST, A)
        early.inject(f)
        other = MemoryPlug("other")
        node.addPort(other)
        node.addPort(early)
        self.assertEqual(other.sentFrames, [f])

    def test_alreadyClosedPlug(self):
        """
        A plug closed before it is added does not leave a dead port behind.
        """
        node = self.node()
        dead = MemoryPlug("dead")
        dead.close()
        node.addPort(dead)
        self.assertEqual(node.allPorts(), [])

    def test_close(self):
        node = self.node()
        p1 = MemoryPlug()
        node.addPort(p1)
        host = node.openHost()
        collector = FrameCollector()
        host.startReceiving(collector)
        node.close()
        self.assertTrue(p1.closed)
        self.assertTrue(host.closed)
        self.assertIsInstance(collector.reason.value, PlugClosed)
        self.assertEqual(node.allPorts(), [])


class CounterTests(Base):
    def test_counters(self):
        node = self.node(HubEngine())
        p1, p2 = MemoryPlug(), MemoryPlug()
        port1, port2 = node.addPort(p1), node.addPort(p2)
        p1.inject(eth(BCAST, A, 60))
        p1.inject(eth(BCAST, A, 100))
        p2.inject(eth(BCAST, B, 64))
        p1.inject(b"short")
        self.assertEqual(
            (port1.inFrames, port1.inBytes, port1.outFrames, port1.outBytes),
            (2, 160, 1, 64),
        )
        self.assertEqual(
            (port2.inFrames, port2.inBytes, port2.outFrames, port2.outBytes),
            (1, 64, 2, 160),
        )
        self.assertEqual(port1.inDropped, 1)
        self.assertEqual((port1.receiveDropped, port1.outDropped), (1, 0))
        port1.resetCounters()
        self.assertEqual(
            (port1.inFrames, port1.inBytes, port1.outFrames, port1.outBytes, port1.dropped),
            (0, 0, 0, 0, 0),
        )

    def test_receiveDropped(self):
        """
        A port's drops on the way in are the node's own and what its plugs
        discarded as not frames (their C{stats.discarded}), apart from its
        drops on the way out; a plug that leaves keeps its share; a reset
        zeroes them, and a plug that joins counts from then on.
        """
        node = self.node(HubEngine())
        plug, other = MemoryPlug("a"), MemoryPlug("b")
        plug.stats.discarded = 4  # before joining: not the port's
        port = node.addPort(plug)
        node.addPort(other)
        plug.stats.discarded += 2
        plug.inject(b"short")
        plug.stats.dropped += 5
        self.assertEqual((port.inDropped, port.receiveDropped, port.outDropped, port.dropped),
                         (1, 3, 5, 8))
        plug.close()
        self.assertEqual((port.receiveDropped, port.outDropped), (3, 5))
        port.resetCounters()
        self.assertEqual((port.receiveDropped, port.outDropped), (0, 0))
        again = MemoryPlug("c")
        again.stats.discarded = 7
        joined = node.addPort(again, port.number)
        again.stats.discarded += 1
        self.assertEqual(joined.receiveDropped, 1)

    def test_slowPortDropsAlone(self):
        """
        A port whose peer does not read loses its own frames (counted from
        the plug's stats) and does not hold back the others.
        """
        node = self.node(HubEngine())
        fast = MemoryPlug("fast")
        slowNear, slowFar = plugPair("slow", "far", capacity=4)
        slowFar.pauseProducing()
        slowFar.startReceiving(FrameCollector())
        src = MemoryPlug("src")
        node.addPort(src)
        node.addPort(fast)
        slowPort = node.addPort(slowNear)
        for i in range(10):
            src.inject(eth(BCAST, A))
        self.assertEqual(len(fast.sentFrames), 10)
        self.assertEqual(slowPort.outFrames, 10)
        self.assertEqual(slowPort.outDropped, 6)
        self.assertEqual(slowPort.dropped, 6)
        self.assertFalse(src.paused)
        slowPort.resetCounters()
        self.assertEqual(slowPort.outDropped, 0)
        src.inject(eth(BCAST, A))
        self.assertEqual(slowPort.outDropped, 1)

    def test_droppedSurvivesEndpoint(self):
        """
        Drops of an endpoint that left stay in the (persistent) port's count.
        """
        node = self.node(HubEngine(), keepInactivePorts=True)
        near, far = plugPair(capacity=1)
        far.pauseProducing()
        src = MemoryPlug()
        node.addPort(src)
        port = node.addPort(near)
        src.inject(eth(BCAST, A))
        src.inject(eth(BCAST, A))
        self.assertEqual(port.outDropped, 1)
        near.close()
        self.assertEqual(port.outDropped, 1)


class HostTests(Base):
    def test_hostRoundTrip(self):
        node = self.node(HubEngine())
        p1 = MemoryPlug()
        node.addPort(p1)
        host = node.openHost("me")
        collector = FrameCollector()
        host.startReceiving(collector)
        self.assertTrue(node.hostPort.isHost)
        self.assertIsNone(node.hostPort.number)
        f = eth(BCAST, A)
        p1.inject(f)
        self.assertEqual(collector.frames, [f])
        g = eth(BCAST, B)
        host.send(g)
        self.assertEqual(p1.sentFrames, [g])
        self.assertEqual((host.stats.sent, host.stats.received), (1, 1))

    def test_hostNotReadingOrPaused(self):
        """
        Frames for a host that is not receiving, or paused, are dropped and
        counted on the host port; the other ports are unaffected.
        """
        node = self.node(HubEngine())
        p1, p2 = MemoryPlug(), MemoryPlug()
        node.addPort(p1)
        node.addPort(p2)
        host = node.openHost()
        p1.inject(eth(BCAST, A))
        self.assertEqual(node.hostPort.outDropped, 1)
        collector = FrameCollector()
        host.startReceiving(collector)
        host.pauseProducing()
        p1.inject(eth(BCAST, A))
        self.assertEqual(node.hostPort.outDropped, 2)
        self.assertEqual(len(p2.sentFrames), 2)
        host.resumeProducing()
        p1.inject(eth(BCAST, A))
        self.assertEqual(len(collector.frames), 1)

    def test_hostCloseRemovesHostPort(self):
        node = self.node()
        p1 = MemoryPlug()
        node.addPort(p1)
        host = node.openHost()
        host.startReceiving(FrameCollector())
        host.send(eth(BCAST, A))
        hostPort = node.hostPort
        host.close()
        self.assertIsNone(node.hostPort)
        self.assertIsNone(node.table.lookup(A, 0))
        self.assertNotIn(hostPort, node.allPorts())
        host.send(eth(BCAST, A))
        self.assertEqual(host.stats.dropped, 1)
        # A new host can be opened.
        node.openHost()
        self.assertIsNotNone(node.hostPort)

    def test_oneHost(self):
        node = self.node()
        node.openHost()
        e = self.assertRaises(VdeError, node.openHost)
        self.assertEqual(e.errno, errno.EEXIST)

    def test_anyPlugAsHost(self):
        """
        Any plug can be the host (e.g. a tap joined without a cable).
        """
        from vdetwist.node import MultiEngine

        node = self.node(MultiEngine())
        tap, p1 = MemoryPlug("tap"), MemoryPlug("p1")
        node.addPort(tap, host=True)
        node.addPort(p1)
        f = eth(BCAST, A)
        p1.inject(f)
        self.assertEqual(tap.sentFrames, [f])


class ObserverTests(Base):
    def test_events(self):
        node = self.node(numports=8)
        rec = Recorder()
        node.addObserver(rec)
        p1, p2 = MemoryPlug("one"), MemoryPlug("two")
        node.addPort(p1)
        node.addPort(p2)
        p1.inject(eth(BCAST, A))
        p2.inject(eth(BCAST, A))
        p1.close()
        self.assertEqual(
            rec.events,
            [
                ("port+", 1),
                ("ep+", 1, "one"),
                ("port+", 2),
                ("ep+", 2, "two"),
                ("mac+", A, 0, 1),
                ("mac>", A, 0, 1, 2),
                ("ep-", 1, "one"),
                ("port-", 1),
            ],
        )
        node.removeObserver(rec)
        p2.close()
        self.assertEqual(len(rec.events), 8)

    def test_purgeEvents(self):
        node = self.node()
        rec = Recorder()
        node.addObserver(rec)
        p1 = MemoryPlug("one")
        node.addPort(p1)
        p1.inject(eth(BCAST, A))
        p1.close()
        self.assertEqual(rec.events[-3:], [("ep-", 1, "one"), ("mac-", A, 0, 1), ("port-", 1)])

    def test_logsConnectDisconnect(self):
        node = self.node()
        plug = MemoryPlug("vde client 42")
        with capturedLogs() as events:
            node.addPort(plug)
            plug.inject(eth(BCAST, A))
            plug.close()
        texts = [e["log_format"].format(**e) for e in events]
        self.assertEqual(
            texts,
            [
                "port 1 connected: vde client 42",
                "port 1 disconnected: vde client 42",
            ],
        )

    def test_loggingObserverMoves(self):
        node = self.node()
        node.addObserver(LoggingObserver())
        p1, p2 = MemoryPlug(), MemoryPlug()
        node.addPort(p1)
        node.addPort(p2)
        p1.inject(eth(BCAST, A))
        with capturedLogs() as events:
            p2.inject(eth(BCAST, A))
        self.assertEqual(
            [e["log_format"].format(**e) for e in events],
            ["MAC 02:00:00:00:00:01 moved from port 1 to port 2"],
        )


class GCTests(Base):
    def test_collects(self):
        node = self.node()
        rec = Recorder()
        node.addObserver(rec)
        p1, p2 = MemoryPlug(), MemoryPlug()
        node.addPort(p1)
        node.addPort(p2)
        node.start()
        p1.inject(eth(BCAST, A))
        self.clock.advance(60)
        p2.inject(eth(BCAST, B))
        self.clock.pump([2] * 31)  # t = 122: A is 122 s old, B 62 s
        self.assertEqual(len(node.table), 1)
        self.assertIn(("mac-", A, 0, 1), rec.events)
        node.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_setInterval(self):
        node = self.node()
        node.start()
        node.setGCInterval(10)
        calls = self.clock.getDelayedCalls()
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].getTime(), self.clock.seconds() + 10)
        node.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class VlanConfigTests(Base):
    def setUp(self):
        super().setUp()
        self.n = self.node(SwitchEngine(), numports=8, keepInactivePorts=True)
        self.ports = [self.n.addPort(MemoryPlug(str(i))) for i in range(3)]

    def test_create(self):
        for bad in (0, 4094, 4095, -1):
            e = self.assertRaises(VdeError, self.n.createVlan, bad)
            self.assertEqual(e.errno, errno.EINVAL)
        self.n.createVlan(4093)
        e = self.assertRaises(VdeError, self.n.createVlan, 4093)
        self.assertEqual(e.errno, errno.EEXIST)
        self.assertEqual(self.n.vlans, {0, 4093})

    def test_remove(self):
        self.n.createVlan(5)
        self.n.addPortVlan(5, self.ports[0])
        e = self.assertRaises(VdeError, self.n.removeVlan, 5)
        self.assertEqual(e.errno, errno.EADDRINUSE)
        self.n.removePortVlan(5, self.ports[0])
        self.n.removeVlan(5)
        self.assertNotIn(5, self.n.vlans)
        self.assertEqual(self.assertRaises(VdeError, self.n.removeVlan, 5).errno, errno.ENXIO)
        self.assertEqual(self.assertRaises(VdeError, self.n.removeVlan, 0).errno, errno.EINVAL)

    def test_membership(self):
        self.n.createVlan(5)
        p1, p2, p3 = self.ports
        self.n.setPortVlan(p2, 5)
        self.n.addPortVlan(5, p3)
        self.assertEqual(self.n.vlanMembers(5), [(p2, False), (p3, True)])
        self.assertEqual(self.n.vlanMembers(0), [(p1, False), (p3, False)])
        self.assertEqual(p3.taggedVlans, {5})
        self.assertEqual(p2.untaggedVlan, 5)

    def test_errors(self):
        self.n.createVlan(5)
        p1 = self.ports[0]
        self.assertEqual(self.assertRaises(VdeError, self.n.addPortVlan, 6, p1).errno, errno.ENXIO)
        self.assertEqual(self.assertRaises(VdeError, self.n.setPortVlan, p1, 6).errno, errno.ENXIO)
        self.assertEqual(
            self.assertRaises(VdeError, self.n.addPortVlan, 0, p1).errno, errno.EADDRINUSE
        )
        self.assertEqual(
            self.assertRaises(VdeError, self.n.removePortVlan, 0, p1).errno, errno.EADDRINUSE
        )
        self.assertEqual(
            self.assertRaises(VdeError, self.n.removePortVlan, 5, p1).errno, errno.ENXIO
        )
        self.n.addPortVlan(5, p1)
        self.assertEqual(self.assertRaises(VdeError, self.n.addPortVlan, 5, p1).errno, errno.EEXIST)
        self.n.setPortVlan(p1, NOVLAN)
        self.assertEqual(p1.untaggedVlan, NOVLAN)

    def test_untaggedReplacesTagged(self):
        self.n.createVlan(5)
        p1 = self.ports[0]
        self.n.addPortVlan(5, p1)
        self.n.setPortVlan(p1, 5)
        self.assertEqual((p1.untaggedVlan, p1.taggedVlans), (5, set()))

    def test_delportPurges(self):
        self.n.createVlan(5)
        p1, p2, _ = self.ports
        self.n.addPortVlan(5, p1)
        self.n.addPortVlan(5, p2)
        frame = BCAST + A + b"\x81\x00\x00\x05\x08\x00" + b"x" * 46
        p1.endpoints[0].inject(frame)
        self.assertIs(self.n.table.lookup(A, 5), p1)
        self.n.removePortVlan(5, p1)
        self.assertIsNone(self.n.table.lookup(A, 5))
