"""
The MAC learning table of the switching nodes.

The C tools use two different tables: vdeplug4's C{switch://} a
direct-mapped array (one entry per bucket: a collision silently overwrites a
live entry, so two busy stations whose keys collide keep evicting each other
and their traffic is flooded) and vde2's C{vde_switch} a chained hash
collected by a periodic garbage collector.  L{MacTable} is neither: it is a
real mapping (one Python C{dict} per VLAN, keyed on the 6 MAC bytes), so no
live entry is ever lost to a collision.  The C parameters keep a meaning:

  - C{hashsize} is rounded up to a power of two, as in C (so a console can
    print the same C{Hash size}), and is the B{capacity}: the largest number
    of entries the table holds (a C direct-mapped table of that size can
    never hold more).  Pass C{capacity} to decouple the two (vde_switch's
    chained table has no hard bound).
  - When the table is full, expired entries are reclaimed first; if it is
    still full the new address is B{not learned} (and counted in
    L{MacTable.refused}): its frames are flooded, which is always correct,
    while the stations already known keep their entries.  This is what
    hardware switches and the Linux bridge (C{fdb_max_learned}) do; evicting
    the oldest entry instead would let anyone who sends frames from random
    source addresses wipe the table of a busy switch.
  - C{expiretime}: an entry stops being used once its last refresh is more
    than C{expiretime} seconds old (checked on every lookup, so expiry is
    exact without a timer); L{MacTable.expire} removes stale entries (the
    node runs it every C{gcInterval} seconds, like vde_switch's garbage
    collector, so memory and the listing stay tidy).
  - C{hashseed} is accepted and shown, but a C{dict} has no seed: it has no
    effect.
  - C{minPersistence} (vde_switch's C{hash/setminper}, 3 s there, 0 in
    vdeplug4): an address learned on one port moves to another only if its
    entry was last refreshed at least that long ago.

VLAN ids are the full 12 bits of the 802.1Q TCI (vdeplug4 keeps only 10, so
that VLAN 1024 and VLAN 0 share entries: that bug is not reproduced).

Time comes from an injected L{twisted.internet.interfaces.IReactorTime}.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

#: The untagged VLAN of a port that carries no untagged traffic.
NOVLAN = 4095

_M64 = 0xFFFFFFFFFFFFFFFF


def formatMac(mac: bytes) -> str:
    """
    C{b"\\x02\\0\\0\\0\\0\\x01"} -> C{"02:00:00:00:00:01"}.
    """
    return ":".join(f"{b:02x}" for b in mac)


def parseMac(text: str) -> bytes:
    """
    Parse C{xx:xx:xx:xx:xx:xx} or C{xx.xx.xx.xx.xx.xx} (the forms vde_switch
    accepts) into 6 bytes.

    @raise ValueError: for anything else.
    """
    parts = text.strip().replace(".", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def _key(mac: bytes, vlan: int) -> int:
    return (int.from_bytes(mac, "little") + (vlan << 48)) & _M64


def vdeplug4Bucket(mac: bytes, vlan: int, size: int, seed: int = 0) -> int:
    """
    The bucket vdeplug4's direct-mapped table uses for (C{mac}, C{vlan});
    C{size} must be a power of two.  For consoles and comparisons only: the
    table does not need it.
    """
    k = _key(mac, vlan)
    k ^= (k >> 33) ^ seed
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    k ^= k >> 33
    return k & (size - 1)


def vde2Bucket(mac: bytes, vlan: int, size: int) -> int:
    """
    The bucket vde2's vde_switch shows in C{hash/print} (C{Hash: %04d}) for
    (C{mac}, C{vlan}) in a table of C{size} buckets (a power of two).
    """
    k = _key(mac, vlan)
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    return k & (size - 1)


def roundUpPowerOfTwo(n: int) -> int:
    """
    The smallest power of two >= C{n} (C{n} >= 1).
    """
    if n < 1:
        raise ValueError(f"hash size must be at least 1, not {n}")
    return 1 << (n - 1).bit_length()


class MacEntry(NamedTuple):
    """
    One line of the table's listing.

    @ivar age: seconds since the entry was last refreshed (a float).
    """

    mac: bytes
    vlan: int
    port: Any
    age: float


class _Entry:
    """
    A stored entry.  Engines refresh C{seen} in place on their hot path, so
    learning a known address allocates nothing.
    """

    __slots__ = ("port", "seen")

    def __init__(self, port: Any, seen: float) -> None:
        self.port = port
        self.seen = seen


class MacTable:
    """
    (MAC, VLAN) -> port, with expiry, a capacity bound and move persistence.

    Ports are any objects compared by identity.

    @ivar observer: C{None}, or an object with C{macAdded(mac, vlan, port)},
        C{macRemoved(mac, vlan, port)} and C{macMoved(mac, vlan, old, new)}
        methods, called when entries appear, disappear (expiry, purge,
        flush) or change port.  Never called for a mere refresh.
    @ivar refused: how many new addresses were not learned because the table
        was full of live entries.
    """

    def __init__(
        self,
        clock,
        hashsize: int = 256,
        expiretime: float = 120,
        hashseed: int = 0,
        minPersistence: float = 0,
        capacity: Optional[int] = None,
        gcInterval: float = 2,
    ) -> None:
        self.clock = clock
        self._seconds: Callable[[], float] = clock.seconds
        self.hashsize = roundUpPowerOfTwo(hashsize)
        self._capacityFollowsSize = capacity is None
        self.capacity = self.hashsize if capacity is None else capacity
        self.expiretime = expiretime
        self.hashseed = hashseed
        self.minPersistence = minPersistence
        self.gcInterval = gcInterval
        self.observer: Any = None
        self.refused = 0
        # VLAN id -> {mac bytes: _Entry}.  An inner dict, once created, is
        # never replaced (only cleared), so engines may keep references.
        self._vlans: dict[int, dict[bytes, _Entry]] = {}
        self._count = 0
        # A lower bound of the refresh times of the stored entries, as known
        # after the last full scan: nothing can have expired before
        # _oldest + expiretime, so a full table is not rescanned per frame.
        self._oldest = float("-inf")

    def __len__(self) -> int:
        """
        Stored entries, including expired ones not yet collected.
        """
        return self._count

    def __repr__(self) -> str:
        return (
            f"<MacTable {self._count}/{self.capacity} entries "
            f"expiretime={self.expiretime}>"
        )

    def vlanDict(self, vlan: int) -> dict[bytes, _Entry]:
        """
        The C{{mac: entry}} mapping of one VLAN, for engines' hot paths (they
        read C{entry.port}, check C{entry.seen} against C{expiretime} and may
        refresh C{entry.seen}; everything else goes through L{learn}).  The
        same object is returned for the table's whole life.
        """
        d = self._vlans.get(vlan)
        if d is None:
            d = self._vlans[vlan] = {}
        return d

    def learn(self, mac: bytes, vlan: int, port: Any, now: Optional[float] = None) -> bool:
        """
        Record that C{mac} on C{vlan} was seen on C{port}.

        @return: whether C{mac} now maps to C{port} (C{False} for multicast
            sources, moves refused by C{minPersistence}, and a full table).
        """
        if mac[0] & 1:
            return False
        if now is None:
            now = self._seconds()
        d = self._vlans.get(vlan)
        if d is None:
            d = self._vlans[vlan] = {}
        e = d.get(mac)
        if e is not None:
            old = e.port
            if old is port:
                e.seen = now
                return True
            age = now - e.seen
            expired = age > self.expiretime
            if not expired and age < self.minPersistence:
                return False
            e.port = port
            e.seen = now
            observer = self.observer
            if observer is not None:
                if expired:
                    observer.macRemoved(mac, vlan, old)
                    observer.macAdded(mac, vlan, port)
                else:
                    observer.macMoved(mac, vlan, old, port)
            return True
        if self._count >= self.capacity and not self._reclaim(now):
            self.refused += 1
            return False
        d[mac] = _Entry(port, now)
        self._count += 1
        if self.observer is not None:
            self.observer.macAdded(mac, vlan, port)
        return True

    def _reclaim(self, now: float) -> bool:
        """
        The table is full: collect expired entries if some may exist.
        """
        if now - self._oldest > self.expiretime:
            self.expire(now)
        return self._count < self.capacity

    def lookup(self, mac: bytes, vlan: int, now: Optional[float] = None) -> Any:
        """
        The port C{mac} was last seen on in C{vlan}, or C{None} if unknown,
        expired, or a group address.  Does not refresh the entry.
        """
        if mac[0] & 1:
            return None
        d = self._vlans.get(vlan)
        if d is None:
            return None
        e = d.get(mac)
        if e is None:
            return None
        if now is None:
            now = self._seconds()
        if now - e.seen > self.expiretime:
            return None
        return e.port

    def find(self, mac: bytes, vlan: int, now: Optional[float] = None) -> Optional[MacEntry]:
        """
        The live entry for (C{mac}, C{vlan}) as a L{MacEntry}, or C{None}.
        """
        d = self._vlans.get(vlan)
        e = None if d is None else d.get(mac)
        if e is None:
            return None
        if now is None:
            now = self._seconds()
        age = now - e.seen
        if age > self.expiretime:
            return None
        return MacEntry(mac, vlan, e.port, age)

    def entries(self, now: Optional[float] = None) -> list[MacEntry]:
        """
        The live entries (for C{hash/print}), by VLAN then learning order.
        """
        if now is None:
            now = self._seconds()
        expiretime = self.expiretime
        result = []
        for vlan in sorted(self._vlans):
            for mac, e in self._vlans[vlan].items():
                age = now - e.seen
                if age <= expiretime:
                    result.append(MacEntry(mac, vlan, e.port, age))
        return result

    def _remove(self, predicate: Callable[[_Entry], bool]) -> int:
        removed = 0
        observer = self.observer
        events = []
        for vlan, d in self._vlans.items():
            dead = [mac for mac, e in d.items() if predicate(e)]
            for mac in dead:
                e = d.pop(mac)
                if observer is not None:
                    events.append((mac, vlan, e.port))
            removed += len(dead)
        self._count -= removed
        if observer is not None:
            for mac, vlan, port in events:
                observer.macRemoved(mac, vlan, port)
        return removed

    def expire(self, now: Optional[float] = None) -> int:
        """
        Remove the entries not refreshed for more than C{expiretime}
        seconds.

        @return: how many were removed.
        """
        if now is None:
            now = self._seconds()
        limit = now - self.expiretime
        removed = self._remove(lambda e: e.seen < limit)
        oldest = now
        for d in self._vlans.values():
            for e in d.values():
                if e.seen < oldest:
                    oldest = e.seen
        self._oldest = oldest
        return removed

    def purgePort(self, port: Any) -> int:
        """
        Forget every address learned on C{port} (it went away, or its VLANs
        changed).

        @return: how many entries were removed.
        """
        return self._remove(lambda e: e.port is port)

    def flush(self) -> int:
        """
        Forget everything.
        """
        return self._remove(lambda e: True)

    def setHashsize(self, hashsize: int) -> None:
        """
        Change the size (vde_switch C{hash/setsize}): the table is flushed,
        and the capacity follows the size unless it was set explicitly.
        """
        size = roundUpPowerOfTwo(hashsize)
        self.flush()
        self.hashsize = size
        if self._capacityFollowsSize:
            self.capacity = size
        self._oldest = float("-inf")
