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
  - C{expiretime}: an entry stops being used once its last refresh is more
    than C{expiretime} seconds old (checked on every lookup, so expiry needs
    no timer; refresh times are kept to L{RESOLUTION}, so an entry may stop
    being used up to that much early); L{MacTable.expire} removes stale
    entries (the node runs it every C{gcInterval} seconds, like
    vde_switch's garbage collector, so memory and the listing stay tidy).
  - C{hashseed} is accepted and shown, but a C{dict} has no seed: it has no
    effect.
  - C{minPersistence} (vde_switch's C{hash/setminper}, 3 s there, 0 in
    vdeplug4): an address learned on one port moves to another only if its
    entry was last refreshed at least that long ago.

A MAC flood (one port sending from ever new source addresses) cannot take
the table over, and the table never stops learning:

  - C{portLimit} (none in C; C{twistd vde --macsperport},
    C{hash/setportmax}): a port holding that many entries forgets its own
    least recently seen entry for each new address it sends from;
  - a full table collects its expired entries, then forgets the least
    recently seen entries of the port holding the B{most} entries (1/64 of
    the capacity at a time): a flood only ever recycles the flooding port's
    entries, and a quiet port never loses a live one.  (Refusing new
    addresses instead, as the Linux bridge's C{fdb_max_learned} does, would
    let a flood freeze the table: every station arriving later would be
    flooded to every port for as long as the flood's entries live.)

Storage: no object per entry.  A VLAN's dict maps the 6 MAC bytes to a
L{_Stamp} shared by every entry one port learned or refreshed on that VLAN
within the same L{RESOLUTION} seconds; the stamp holds that port and time,
and lists its MACs, so expiry, purges and eviction find their entries
without scanning the table, and each port's stamps, oldest first, give its
least recently seen entries.  An entry costs its dict slot, its key and a
list slot: ~90 bytes of resident memory in all (an object and a time per
entry made it ~160; C's C{vde_switch} spends ~47).  Engines refresh an
entry through L{MacTable.learn} only once its stamp is L{RESOLUTION} old,
so the per-frame path reads the dict and compares, and allocates nothing.
A dict keeps its largest size: L{MacTable.expire} rebuilds one that is far
larger than its entries, so a flood's memory is given back once its entries
are gone.

VLAN ids are the full 12 bits of the 802.1Q TCI (vdeplug4 keeps only 10, so
that VLAN 1024 and VLAN 0 share entries: that bug is not reproduced).

Time comes from an injected L{twisted.internet.interfaces.IReactorTime}.
"""

from __future__ import annotations

import sys
from collections import deque
from itertools import islice
from operator import attrgetter
from typing import Any, Callable, NamedTuple, Optional

from twisted.logger import Logger

#: The untagged VLAN of a port that carries no untagged traffic.
NOVLAN = 4095

#: Seconds: the entries one port refreshes within this time share their
#: refresh time (and its storage); an engine refreshes an entry through
#: L{MacTable.learn} once this old.
RESOLUTION = 1.0

_M64 = 0xFFFFFFFFFFFFFFFF

log = Logger()


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


class _Stamp:
    """
    The value of every entry that C{port} learned or refreshed on C{vlan}
    within L{RESOLUTION} seconds after C{seen} (until C{renew}).

    @ivar keys: the MACs set to this stamp, from index C{head} on; some may
        have moved on since (an entry is this stamp's while its dict maps it
        to this object), and one may appear twice.
    @ivar live: how many entries are this stamp's.
    """

    __slots__ = ("port", "vlan", "seen", "renew", "keys", "head", "live")

    def __init__(self, port: Any, vlan: int, seen: float) -> None:
        self.port = port
        self.vlan = vlan
        self.seen = seen
        self.renew = seen + RESOLUTION
        self.keys: list[bytes] = []
        self.head = 0
        self.live = 0


class _PortEntries:
    """
    One port's part of the table.

    @ivar count: its entries (expired ones included until collected).
    @ivar stamps: its stamps, oldest first (some may have no entry left).
    @ivar current: its newest stamp of each VLAN.
    @ivar warned: whether its reaching C{portLimit} was logged.
    """

    __slots__ = ("count", "stamps", "current", "warned")

    def __init__(self) -> None:
        self.count = 0
        self.stamps: deque[_Stamp] = deque()
        self.current: dict[int, _Stamp] = {}
        self.warned = False


class MacTable:
    """
    (MAC, VLAN) -> port, with expiry, a capacity bound, a per-port bound
    and move persistence.

    Ports are any objects compared by identity.

    @ivar observer: C{None}, or an object with C{macAdded(mac, vlan, port)},
        C{macRemoved(mac, vlan, port)} and C{macMoved(mac, vlan, old, new)}
        methods, called when entries appear, disappear (expiry, eviction,
        purge, flush) or change port.  Never called for a mere refresh.
    @ivar portLimit: the most entries one port may hold (0: no limit).
    @ivar evicted: how many live entries were forgotten to make room (port
        limit or full table).
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
        portLimit: int = 0,
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
        self.portLimit = portLimit
        self.observer: Any = None
        self.evicted = 0
        # VLAN id -> {mac bytes: _Stamp}.  An inner dict, once created, is
        # never replaced (only emptied), so engines may keep references.
        self._vlans: dict[int, dict[bytes, _Stamp]] = {}
        self._ports: dict[Any, _PortEntries] = {}
        self._count = 0
        self._warnedFull = False

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

    def vlanDict(self, vlan: int) -> dict[bytes, _Stamp]:
        """
        The C{{mac: stamp}} mapping of one VLAN, for engines' hot paths: they
        read C{stamp.port}, check C{stamp.seen} against C{expiretime}, and
        call L{learn} for a source whose stamp is another port's or is due
        for renewal (C{now >= stamp.renew}); they never write to it.  The
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
            sources and moves refused by C{minPersistence}).
        """
        if mac[0] & 1:
            return False
        if now is None:
            now = self._seconds()
        d = self._vlans.get(vlan)
        if d is None:
            d = self._vlans[vlan] = {}
        old = d.get(mac)
        entries = self._ports.get(port)
        if entries is None:
            entries = self._ports[port] = _PortEntries()
        if old is not None:
            if old.port is port:
                stamp = self._stamp(entries, port, vlan, now)
                if stamp is not old:
                    self._set(d, mac, stamp)
                    self._leave(d, old)
                return True
            age = now - old.seen
            if age <= self.expiretime and age < self.minPersistence:
                return False
            self._ports[old.port].count -= 1
        if self.portLimit and entries.count >= self.portLimit:
            self._evictOwn(entries, port, entries.count - self.portLimit + 1)
        elif old is None and self._count >= self.capacity:
            self._makeRoom(now)
        self._set(d, mac, self._stamp(entries, port, vlan, now))
        entries.count += 1
        observer = self.observer
        if old is None:
            self._count += 1
            if observer is not None:
                observer.macAdded(mac, vlan, port)
            return True
        self._leave(d, old)
        if observer is not None:
            if now - old.seen > self.expiretime:
                observer.macRemoved(mac, vlan, old.port)
                observer.macAdded(mac, vlan, port)
            else:
                observer.macMoved(mac, vlan, old.port, port)
        return True

    def _stamp(self, entries: _PortEntries, port: Any, vlan: int, now: float) -> _Stamp:
        """
        The stamp for an entry C{port} sets on C{vlan} at C{now}.
        """
        stamp = entries.current.get(vlan)
        if stamp is None or now >= stamp.renew or now < stamp.seen:
            stamp = entries.current[vlan] = _Stamp(port, vlan, now)
            entries.stamps.append(stamp)
        return stamp

    @staticmethod
    def _set(d: dict[bytes, _Stamp], mac: bytes, stamp: _Stamp) -> None:
        d[mac] = stamp
        stamp.keys.append(mac)
        stamp.live += 1

    @staticmethod
    def _leave(d: dict[bytes, _Stamp], stamp: _Stamp) -> None:
        """
        An entry of C{stamp} was set to another: forget the stale keys once
        they outnumber the live ones, so a stamp's list stays in proportion.
        """
        stamp.live -= 1
        if not stamp.live:
            stamp.keys = []
            stamp.head = 0
        elif len(stamp.keys) - stamp.head > 2 * stamp.live + 8:
            stamp.keys = [k for k in islice(stamp.keys, stamp.head, None) if d.get(k) is stamp]
            stamp.head = 0

    def _evictOwn(self, entries: _PortEntries, port: Any, n: int) -> None:
        """
        C{port} is at its limit: forget its C{n} least recently seen
        entries (one, unless the limit was just lowered).
        """
        if not entries.warned:
            entries.warned = True
            log.warn(
                "MAC table: {port} holds {limit} addresses, its limit: it now "
                "forgets its least recently seen address for each new one (a MAC flood?)",
                port=port, limit=self.portLimit,
            )
        self._evict(entries, n)

    def _makeRoom(self, now: float) -> None:
        """
        The table is full: collect expired entries, then, if still full,
        forget the least recently seen entries of the port holding the most.
        """
        self.expire(now)
        if self._count < self.capacity:
            return
        entries = max(self._ports.values(), key=_byCount)
        if not self._warnedFull:
            self._warnedFull = True
            log.warn(
                "MAC table full ({capacity} addresses): forgetting the least recently "
                "seen addresses of the port holding the most (a MAC flood?)",
                capacity=self.capacity,
            )
        self._evict(entries, max(1, self.capacity // 64))

    def _evict(self, entries: _PortEntries, n: int) -> None:
        """
        Forget up to C{n} of a port's live entries, least recently seen
        first.
        """
        removed: list[tuple[bytes, int, Any]] = []
        stamps = entries.stamps
        while stamps:
            stamp = stamps[0]
            if stamp.live:
                d = self._vlans[stamp.vlan]
                keys, head = stamp.keys, stamp.head
                while n and stamp.live:
                    mac = keys[head]
                    head += 1
                    if d.get(mac) is stamp:
                        del d[mac]
                        stamp.live -= 1
                        n -= 1
                        removed.append((mac, stamp.vlan, stamp.port))
                if stamp.live:
                    if head > 64 and head * 2 > len(keys):
                        del keys[:head]
                        head = 0
                    stamp.head = head
                    break
            self._drop(entries, stamps.popleft())
            if not n:
                break
        self.evicted += len(removed)
        self._removed(entries, removed)

    @staticmethod
    def _drop(entries: _PortEntries, stamp: _Stamp) -> None:
        """
        C{stamp}, without entries, leaves its port's list.
        """
        stamp.keys = []
        stamp.live = 0
        if entries.current.get(stamp.vlan) is stamp:
            del entries.current[stamp.vlan]

    def _clear(self, stamp: _Stamp, removed: list[tuple[bytes, int, Any]]) -> None:
        """
        Remove the entries of C{stamp}, adding them to C{removed}.
        """
        if stamp.live:
            d = self._vlans[stamp.vlan]
            for mac in islice(stamp.keys, stamp.head, None):
                if d.get(mac) is stamp:
                    del d[mac]
                    removed.append((mac, stamp.vlan, stamp.port))

    def _removed(self, entries: Optional[_PortEntries], removed: list[tuple[bytes, int, Any]]) -> None:
        """
        Account for C{removed} entries (all of one port if C{entries} is
        given) and tell the observer.
        """
        if entries is not None:
            entries.count -= len(removed)
        self._count -= len(removed)
        observer = self.observer
        if observer is not None:
            for mac, vlan, port in removed:
                observer.macRemoved(mac, vlan, port)

    def lookup(self, mac: bytes, vlan: int, now: Optional[float] = None) -> Any:
        """
        The port C{mac} was last seen on in C{vlan}, or C{None} if unknown,
        expired, or a group address.  Does not refresh the entry.
        """
        if mac[0] & 1:
            return None
        entry = self.find(mac, vlan, now)
        return None if entry is None else entry.port

    def find(self, mac: bytes, vlan: int, now: Optional[float] = None) -> Optional[MacEntry]:
        """
        The live entry for (C{mac}, C{vlan}) as a L{MacEntry}, or C{None}.
        """
        d = self._vlans.get(vlan)
        stamp = None if d is None else d.get(mac)
        if stamp is None:
            return None
        if now is None:
            now = self._seconds()
        age = now - stamp.seen
        if age > self.expiretime:
            return None
        return MacEntry(mac, vlan, stamp.port, age)

    def entries(self, now: Optional[float] = None) -> list[MacEntry]:
        """
        The live entries (for C{hash/print}), by VLAN then learning order.
        """
        if now is None:
            now = self._seconds()
        expiretime = self.expiretime
        result = []
        for vlan in sorted(self._vlans):
            for mac, stamp in self._vlans[vlan].items():
                age = now - stamp.seen
                if age <= expiretime:
                    result.append(MacEntry(mac, vlan, stamp.port, age))
        return result

    def expire(self, now: Optional[float] = None) -> int:
        """
        Remove the entries not refreshed for more than C{expiretime}
        seconds.

        @return: how many were removed.
        """
        if now is None:
            now = self._seconds()
        limit = now - self.expiretime
        total = 0
        for entries in self._ports.values():
            removed: list[tuple[bytes, int, Any]] = []
            stamps = entries.stamps
            while stamps and (not stamps[0].live or stamps[0].seen < limit):
                stamp = stamps.popleft()
                self._clear(stamp, removed)
                self._drop(entries, stamp)
            if len(stamps) > 32:
                # Stamps whose entries all moved on, behind a live one.
                current = entries.current
                entries.stamps = deque(
                    s for s in stamps if s.live or current.get(s.vlan) is s
                )
            self._removed(entries, removed)
            total += len(removed)
            if entries.count * 2 < self.portLimit:
                entries.warned = False
        if self._count * 2 < self.capacity:
            self._warnedFull = False
        for d in self._vlans.values():
            if sys.getsizeof(d) > 256 * len(d) + 65536:
                # A dict keeps its largest size: give back what a flood took.
                kept = d.copy()
                d.clear()
                d.update(kept)
        return total

    def purgePort(self, port: Any) -> int:
        """
        Forget every address learned on C{port} (it went away, or its VLANs
        changed).

        @return: how many entries were removed.
        """
        entries = self._ports.pop(port, None)
        if entries is None:
            return 0
        removed: list[tuple[bytes, int, Any]] = []
        for stamp in entries.stamps:
            self._clear(stamp, removed)
            self._drop(entries, stamp)
        self._removed(None, removed)
        return len(removed)

    def flush(self) -> int:
        """
        Forget everything.
        """
        self._warnedFull = False
        return sum(self.purgePort(port) for port in list(self._ports))

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


_byCount = attrgetter("count")
