"""
Tests for L{vdetwist.node.mactable}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vdetwist.node.mactable import (
    MacEntry,
    MacTable,
    formatMac,
    parseMac,
    roundUpPowerOfTwo,
    vde2Bucket,
    vdeplug4Bucket,
)

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")


class Recorder:
    def __init__(self):
        self.events = []

    def macAdded(self, mac, vlan, port):
        self.events.append(("+", mac, vlan, port))

    def macRemoved(self, mac, vlan, port):
        self.events.append(("-", mac, vlan, port))

    def macMoved(self, mac, vlan, old, new):
        self.events.append(("move", mac, vlan, old, new))


def collidingMacs(size, count):
    """
    MACs that the C direct-mapped table of C{size} buckets puts in one
    bucket (so C would keep only the last).
    """
    found = {}
    i = 1
    while True:
        mac = bytes.fromhex("02") + i.to_bytes(5, "big")
        found.setdefault(vdeplug4Bucket(mac, 0, size), []).append(mac)
        for macs in found.values():
            if len(macs) == count:
                return macs
        i += 1


class HelperTests(SynchronousTestCase):
    def test_formatParse(self):
        self.assertEqual(formatMac(A), "02:00:00:00:00:01")
        self.assertEqual(parseMac("02:00:00:00:00:01"), A)
        self.assertEqual(parseMac("02.00.00.00.00.01"), A)
        self.assertEqual(parseMac("2:0:0:0:0:1"), A)
        self.assertRaises(ValueError, parseMac, "02:00:00:00:00")
        self.assertRaises(ValueError, parseMac, "zz:00:00:00:00:01")

    def test_vde2Bucket(self):
        """
        The vde2 hash (spec B.3): 02:00:00:00:00:01 VLAN 0 is bucket 43 of 128.
        """
        self.assertEqual(vde2Bucket(A, 0, 128), 43)

    def test_roundUp(self):
        self.assertEqual(
            [roundUpPowerOfTwo(n) for n in (1, 2, 3, 100, 128, 129)],
            [1, 2, 4, 128, 128, 256],
        )
        self.assertRaises(ValueError, roundUpPowerOfTwo, 0)


class MacTableTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.table = MacTable(self.clock, hashsize=16, expiretime=120)

    def test_learnLookup(self):
        self.assertTrue(self.table.learn(A, 0, "p1"))
        self.assertEqual(self.table.lookup(A, 0), "p1")
        self.assertIsNone(self.table.lookup(B, 0))
        self.assertEqual(len(self.table), 1)

    def test_vlanSeparates(self):
        """
        The key is (MAC, VLAN): the same MAC on two VLANs is two entries, and
        VLAN 1024 does not alias VLAN 0 (the vdeplug4 10-bit bug is not
        reproduced).
        """
        self.table.learn(A, 0, "p0")
        self.table.learn(A, 1024, "p1024")
        self.table.learn(A, 5, "p5")
        self.assertEqual(self.table.lookup(A, 0), "p0")
        self.assertEqual(self.table.lookup(A, 1024), "p1024")
        self.assertEqual(self.table.lookup(A, 5), "p5")
        self.assertIsNone(self.table.lookup(A, 6))

    def test_groupAddresses(self):
        """
        Group (multicast/broadcast) sources are not learned, and group
        destinations are never found.
        """
        self.assertFalse(self.table.learn(BCAST, 0, "p"))
        self.assertFalse(self.table.learn(MCAST, 0, "p"))
        self.assertEqual(len(self.table), 0)
        self.assertIsNone(self.table.lookup(BCAST, 0))

    def test_expiry(self):
        """
        An entry is used while its age is at most C{expiretime}, and not
        after, without any garbage collection; a lookup does not refresh.
        """
        self.table.learn(A, 0, "p1")
        self.clock.advance(120)
        self.assertEqual(self.table.lookup(A, 0), "p1")
        self.clock.advance(0.5)
        self.assertIsNone(self.table.lookup(A, 0))
        self.assertIsNone(self.table.find(A, 0))
        self.assertEqual(self.table.entries(), [])

    def test_refresh(self):
        self.table.learn(A, 0, "p1")
        self.clock.advance(100)
        self.table.learn(A, 0, "p1")
        self.clock.advance(100)
        self.assertEqual(self.table.lookup(A, 0), "p1")

    def test_expireCollects(self):
        rec = self.table.observer = Recorder()
        self.table.learn(A, 0, "p1")
        self.clock.advance(100)
        self.table.learn(B, 0, "p2")
        self.clock.advance(21)
        self.assertEqual(self.table.expire(), 1)
        self.assertEqual(len(self.table), 1)
        self.assertEqual(rec.events[-1], ("-", A, 0, "p1"))
        self.assertEqual(self.table.lookup(B, 0), "p2")

    def test_move(self):
        """
        Without minimum persistence (vdeplug4) an address moves at once.
        """
        rec = self.table.observer = Recorder()
        self.table.learn(A, 0, "p1")
        self.assertTrue(self.table.learn(A, 0, "p2"))
        self.assertEqual(self.table.lookup(A, 0), "p2")
        self.assertEqual(rec.events, [("+", A, 0, "p1"), ("move", A, 0, "p1", "p2")])

    def test_minPersistence(self):
        """
        With vde_switch's minimum persistence an entry moves only once it
        was last refreshed at least that long ago.
        """
        self.table.minPersistence = 3
        self.table.learn(A, 0, "p1")
        self.clock.advance(2)
        self.assertFalse(self.table.learn(A, 0, "p2"))
        self.assertEqual(self.table.lookup(A, 0), "p1")
        self.clock.advance(1)
        self.assertTrue(self.table.learn(A, 0, "p2"))
        self.assertEqual(self.table.lookup(A, 0), "p2")

    def test_expiredEntryReplaced(self):
        """
        An expired entry is replaced without regard to persistence, and
        reported as removed + added rather than moved.
        """
        rec = self.table.observer = Recorder()
        self.table.minPersistence = 500
        self.table.learn(A, 0, "p1")
        self.clock.advance(121)
        self.assertTrue(self.table.learn(A, 0, "p2"))
        self.assertEqual(rec.events[1:], [("-", A, 0, "p1"), ("+", A, 0, "p2")])

    def test_purgePort(self):
        self.table.learn(A, 0, "p1")
        self.table.learn(B, 3, "p1")
        self.table.learn(C, 0, "p2")
        self.assertEqual(self.table.purgePort("p1"), 2)
        self.assertIsNone(self.table.lookup(A, 0))
        self.assertIsNone(self.table.lookup(B, 3))
        self.assertEqual(self.table.lookup(C, 0), "p2")
        self.assertEqual(len(self.table), 1)

    def test_noCollisions(self):
        """
        Unlike the C direct-mapped table, addresses that share a bucket
        there all stay learned here.
        """
        macs = collidingMacs(16, 4)
        for i, mac in enumerate(macs):
            self.table.learn(mac, 0, i)
        self.assertEqual([self.table.lookup(m, 0) for m in macs], [0, 1, 2, 3])

    def test_capacityRefusesNew(self):
        """
        A full table of live entries refuses new addresses (they will be
        flooded) and keeps the known ones; refusals are counted.
        """
        table = MacTable(self.clock, hashsize=3, expiretime=120)
        self.assertEqual(table.capacity, 4)
        macs = [bytes([2, 0, 0, 0, 0, i]) for i in range(1, 6)]
        for m in macs[:4]:
            self.assertTrue(table.learn(m, 0, "p"))
        self.assertFalse(table.learn(macs[4], 0, "p"))
        self.assertEqual(table.refused, 1)
        self.assertIsNone(table.lookup(macs[4], 0))
        self.assertEqual([table.lookup(m, 0) for m in macs[:4]], ["p"] * 4)
        # A known address still refreshes and moves when full.
        self.assertTrue(table.learn(macs[0], 0, "q"))
        self.assertEqual(table.lookup(macs[0], 0), "q")

    def test_capacityReclaimsExpired(self):
        """
        When full, expired entries make room for new ones.
        """
        table = MacTable(self.clock, hashsize=2, expiretime=10)
        table.learn(A, 0, "p")
        self.clock.advance(5)
        table.learn(B, 0, "p")
        self.assertFalse(table.learn(C, 0, "p"))
        self.clock.advance(6)  # A is 11 s old: expired; B is 6 s old.
        self.assertTrue(table.learn(C, 0, "p"))
        self.assertEqual(table.lookup(B, 0), "p")
        self.assertEqual(table.lookup(C, 0), "p")
        self.assertEqual(len(table), 2)

    def test_fullTableNotRescanned(self):
        """
        While nothing can have expired, a full table is not scanned again
        for each refused address.
        """
        table = MacTable(self.clock, hashsize=2, expiretime=10)
        table.learn(A, 0, "p")
        table.learn(B, 0, "p")
        scans = []
        original = table.expire
        table.expire = lambda now=None: scans.append(now) or original(now)
        for i in range(50):
            table.learn(bytes([2, 1, 0, 0, 0, i]), 0, "p")
        self.assertEqual(len(scans), 1)
        self.assertEqual(table.refused, 50)

    def test_explicitCapacity(self):
        table = MacTable(self.clock, hashsize=128, capacity=1000)
        self.assertEqual((table.hashsize, table.capacity), (128, 1000))

    def test_hashseedAccepted(self):
        """
        hashseed is kept for display and does not change behaviour.
        """
        table = MacTable(self.clock, hashsize=16, hashseed=1234)
        self.assertEqual(table.hashseed, 1234)
        table.learn(A, 0, "p")
        self.assertEqual(table.lookup(A, 0), "p")

    def test_entriesListing(self):
        self.table.learn(A, 5, "p1")
        self.clock.advance(7)
        self.table.learn(B, 0, "p2")
        self.assertEqual(
            self.table.entries(),
            [MacEntry(B, 0, "p2", 0), MacEntry(A, 5, "p1", 7)],
        )
        self.assertEqual(self.table.find(A, 5), MacEntry(A, 5, "p1", 7))
        self.assertIsNone(self.table.find(A, 0))

    def test_setHashsizeFlushes(self):
        rec = self.table.observer = Recorder()
        self.table.learn(A, 0, "p1")
        self.table.setHashsize(100)
        self.assertEqual((self.table.hashsize, self.table.capacity), (128, 128))
        self.assertEqual(len(self.table), 0)
        self.assertIsNone(self.table.lookup(A, 0))
        self.assertEqual(rec.events[-1], ("-", A, 0, "p1"))

    def test_vlanDictStable(self):
        """
        The per-VLAN mapping engines cache survives flushes.
        """
        d = self.table.vlanDict(7)
        self.table.learn(A, 7, "p")
        self.assertIn(A, d)
        self.table.flush()
        self.assertIs(self.table.vlanDict(7), d)
        self.table.learn(B, 7, "p")
        self.assertIn(B, d)
