"""
Tests for L{vdetwist.node.mactable}.
"""

import tracemalloc

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

    def test_fullTableEvictsLargestPort(self):
        """
        A full table forgets the least recently seen entry of the port
        holding the most entries, never a quiet port's, and keeps learning.
        """
        rec = self.table.observer = Recorder()
        table = MacTable(self.clock, hashsize=3, expiretime=120)
        table.observer = rec
        self.assertEqual(table.capacity, 4)
        table.learn(A, 0, "quiet")
        macs = [bytes([2, 0, 0, 0, 1, i]) for i in range(3)]
        for m in macs:
            table.learn(m, 0, "busy")
            self.clock.advance(1)
        table.learn(macs[0], 0, "busy")  # refreshed: macs[1] is now the stalest
        self.assertTrue(table.learn(B, 0, "new"))
        self.assertEqual(rec.events[-2:], [("-", macs[1], 0, "busy"), ("+", B, 0, "new")])
        self.assertEqual(
            [table.lookup(m, 0) for m in (A, B, macs[0], macs[1], macs[2])],
            ["quiet", "new", "busy", None, "busy"],
        )
        self.assertEqual((len(table), table.evicted), (4, 1))

    def test_fullTableReclaimsExpiredFirst(self):
        """
        When full, expired entries make room before any live one is
        forgotten.
        """
        table = MacTable(self.clock, hashsize=2, expiretime=10)
        table.learn(A, 0, "quiet")
        self.clock.advance(5)
        table.learn(B, 0, "busy")
        self.clock.advance(6)  # A is 11 s old: expired; B is 6 s old.
        self.assertTrue(table.learn(C, 0, "busy"))
        self.assertEqual([table.lookup(m, 0) for m in (A, B, C)], [None, "busy", "busy"])
        self.assertEqual((len(table), table.evicted), (2, 0))

    def test_portLimit(self):
        """
        A port at C{portLimit} forgets its own least recently seen entry for
        each new address; other ports are untouched.
        """
        rec = self.table.observer = Recorder()
        self.table.portLimit = 2
        self.table.learn(C, 0, "other")
        self.table.learn(A, 0, "p")
        self.clock.advance(1)
        self.table.learn(B, 0, "p")
        self.clock.advance(1)
        new = bytes.fromhex("020000000004")
        self.assertTrue(self.table.learn(new, 0, "p"))
        self.assertEqual(rec.events[-2:], [("-", A, 0, "p"), ("+", new, 0, "p")])
        self.assertEqual(
            [self.table.lookup(m, 0) for m in (A, B, C, new)], [None, "p", "other", "p"]
        )
        # A move into a port at its limit also costs that port its stalest.
        self.assertTrue(self.table.learn(C, 0, "p"))
        self.assertEqual(rec.events[-2:], [("-", B, 0, "p"), ("move", C, 0, "other", "p")])
        self.assertEqual(len(self.table), 2)

    def test_flood(self):
        """
        100,000 source addresses from one port, with and without a port
        limit: the stations of other ports learned before keep their entries,
        and new stations are still learned.
        """
        # A full table frees 1/64 of itself at a time.
        for portLimit, fewest, most in [(0, 65536 - 1024, 65536), (1000, 1001, 1001)]:
            clock = Clock()
            table = MacTable(clock, hashsize=65536, expiretime=100, portLimit=portLimit)
            table.learn(A, 0, "quiet")
            for i in range(100000):
                clock.advance(0.0001)
                table.learn(bytes([0x0A]) + i.to_bytes(5, "big"), 0, "flood")
            self.assertTrue(fewest <= len(table) <= most, len(table))
            self.assertTrue(table.learn(B, 0, "one"))
            self.assertTrue(table.learn(C, 0, "two"))
            self.assertEqual(
                [table.lookup(m, 0) for m in (A, B, C)], ["quiet", "one", "two"]
            )
            # The flood's newest addresses are the ones it still holds.
            last = bytes([0x0A]) + (99999).to_bytes(5, "big")
            self.assertEqual(table.lookup(last, 0), "flood")
            self.assertEqual(table.lookup(bytes([0x0A]) + bytes(5), 0), None)

    def test_memoryPerEntry(self):
        """
        An entry costs its dict slot, its key and a list slot: under 100
        bytes as tracemalloc counts them (~88; an object and a time per
        entry made it ~150).
        """
        clock = Clock()
        table = MacTable(clock, hashsize=65536, expiretime=100)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(65536):
            clock.advance(0.0001)
            # A new key each time, as the engines' slices of frames are.
            table.learn(b"\x0a" + i.to_bytes(5, "big"), 0, "p")
        perEntry = (tracemalloc.get_traced_memory()[0] - before) / len(table)
        self.assertEqual(len(table), 65536)
        self.assertLess(perEntry, 100)

    def test_memoryReturns(self):
        """
        Once a flood's entries are gone, so is the memory they took (a dict
        keeps its largest size unless rebuilt).
        """
        table = MacTable(self.clock, hashsize=65536, expiretime=100)
        table.learn(A, 0, "quiet")
        d = table.vlanDict(0)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(65535):
            table.learn(b"\x0a" + i.to_bytes(5, "big"), 0, "flood")
        self.assertGreater(tracemalloc.get_traced_memory()[0] - before, 5000000)
        self.assertEqual(table.purgePort("flood"), 65535)
        table.expire()
        # (What stays is Python's free list of tuples, ~130 KB.)
        self.assertLess(tracemalloc.get_traced_memory()[0] - before, 256000)
        self.assertIs(table.vlanDict(0), d)
        self.assertEqual(table.lookup(A, 0), "quiet")

    def test_refreshesStayBounded(self):
        """
        An address refreshed every second for an hour, beside an entry that
        stays in its first stamp, does not grow the table's bookkeeping.
        """
        table = MacTable(self.clock, hashsize=16, expiretime=4000)
        table.learn(A, 0, "p")
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        sizes = []
        for second in range(3600):
            self.clock.advance(1)
            table.learn(B, 0, "p")
            table.learn(C, 0, "q")
            if second % 2:
                table.expire()
            if second in (100, 3599):
                sizes.append(tracemalloc.get_traced_memory()[0])
        self.assertLess(sizes[1] - sizes[0], 4096)
        self.assertEqual([table.lookup(m, 0) for m in (A, B, C)], ["p", "p", "q"])

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
