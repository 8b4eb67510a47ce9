"""
IPv4 input checks, bounded reassembly of fragments and ICMP error messages.
"""

from __future__ import annotations

from typing import Callable, Optional

from vdetwist.slirp import packets as P
from vdetwist.wire.checksum import residue

#: Fragment queues kept at once, bytes held in all of them, and how long a
#: datagram may take to complete (RFC 791 suggests 15 s; libslirp 30 s).
MAX_QUEUES = 64
MAX_BYTES = 1 << 21
REASSEMBLY_TIMEOUT = 30.0
MAX_DATAGRAM = 65535

ICMP_ECHO_REPLY = 0
ICMP_UNREACH = 3
ICMP_ECHO = 8
ICMP_TIME_EXCEEDED = 11
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3


def parse(data: bytes) -> Optional[tuple[int, bytes]]:
    """
    Check an IPv4 packet (Ethernet payload, maybe padded): returns the
    header length and the packet cut to its total length, or C{None} if it
    is malformed or its header checksum is wrong.
    """
    if len(data) < 20:
        return None
    first = data[0]
    ihl = (first & 0x0F) << 2
    if first >> 4 != 4 or ihl < 20:
        return None
    total = (data[2] << 8) | data[3]
    if total < ihl or total > len(data):
        return None
    if residue(data[:ihl]) != 0:
        return None
    if total != len(data):
        data = data[:total]
    return ihl, data


def unreachable(packet: bytes, code: int, source: bytes, kind: int = ICMP_UNREACH) -> bytes:
    """
    The ICMP error message (destination unreachable, or C{kind}) with its IP
    header, from C{source}, answering C{packet}: its header and first 8
    bytes of data.
    """
    ihl = (packet[0] & 0x0F) << 2
    quoted = packet[: ihl + 8]
    message = P.icmp4(kind, code, b"\0\0\0\0" + quoted)
    return P.ipv4(source, packet[12:16], P.PROTO_ICMP, message)


def fragment(packet: bytes, mtu: int) -> list[bytes]:
    """
    C{packet} cut into fragments of at most C{mtu} bytes (a packet with
    the don't-fragment bit set is returned whole: the caller drops it).
    """
    from vdetwist.wire.checksum import checksum

    if len(packet) <= mtu or packet[6] & 0x40:
        return [packet]
    ihl = (packet[0] & 0x0F) << 2
    header = packet[:ihl]
    payload = packet[ihl:]
    step = (mtu - ihl) & ~7
    if step <= 0:
        return []
    pieces = []
    for offset in range(0, len(payload), step):
        piece = payload[offset : offset + step]
        more = offset + step < len(payload)
        flags = (0x2000 if more else 0) | (offset >> 3)
        h = header[:2] + P.U16.pack(ihl + len(piece)) + header[4:6] + P.U16.pack(flags) \
            + header[8:10] + b"\0\0" + header[12:]
        pieces.append(h[:10] + P.U16.pack(checksum(h)) + h[12:] + piece)
    return pieces


class _Queue:
    __slots__ = ("pieces", "size", "total", "expires", "header", "broken")

    def __init__(self, expires: float) -> None:
        # offset -> payload; no two overlap (an overlap spoils the datagram).
        self.pieces: dict[int, bytes] = {}
        self.size = 0
        self.total: Optional[int] = None
        self.expires = expires
        self.header = b""
        self.broken = False


class Reassembler:
    """
    Collects fragments by a key of the family (for IPv4: source,
    destination, protocol, identification).
    Overlapping fragments spoil the whole datagram (RFC 5722's rule, applied
    to IPv4 too; an exact duplicate is only dropped), as do datagrams over
    65535 bytes; the oldest queue is
    dropped when too many are open or too many bytes are held, and queues
    expire after C{timeout} seconds.  When a datagram whose first fragment
    came in expires, C{onTimeout} is called with the start of that fragment
    (for an ICMP time exceeded message).

    This class does IPv4; L{vdetwist.slirp.ipv6.Reassembler6} overrides
    L{locate}, L{rebuild} and L{quote} for IPv6.
    """

    timeout = REASSEMBLY_TIMEOUT
    #: Header bytes the reassembled length limit (C{MAX_DATAGRAM}) counts.
    headerRoom = 20

    def __init__(self, onTimeout: Optional[Callable[[bytes], None]] = None) -> None:
        self.queues: dict[tuple, _Queue] = {}
        self.held = 0
        self.dropped = 0
        self.onTimeout = onTimeout

    def locate(self, ihl: int, packet: bytes) -> tuple[tuple, int, bool]:
        """
        The queue key, payload offset and more-fragments flag of a fragment.
        """
        flags = (packet[6] << 8) | packet[7]
        return ((packet[12:16], packet[16:20], packet[9], packet[4:6]),
                (flags & 0x1FFF) << 3, bool(flags & 0x2000))

    def rebuild(self, header: bytes, body: bytes) -> bytes:
        """
        The reassembled packet: the first fragment's C{header} with its
        fragment fields cleared, then C{body}.
        """
        from vdetwist.wire.checksum import checksum

        total = len(header) + len(body)
        header = (header[:2] + P.U16.pack(total) + header[4:6] + b"\0\0"
                  + header[8:10] + b"\0\0" + header[12:])
        header = header[:10] + P.U16.pack(checksum(header)) + header[12:]
        return header + body

    def quote(self, header: bytes, first: bytes) -> bytes:
        """
        What an ICMP error about a datagram quotes, from its first
        fragment's C{header} and payload C{first}.
        """
        return header + first[:8]

    def add(self, ihl: int, packet: bytes, now: float) -> Optional[bytes]:
        """
        Add a fragment (whose headers take C{ihl} bytes); returns the
        complete packet (L{rebuild}) once all pieces are in.
        """
        self.expire(now)
        key, offset, more = self.locate(ihl, packet)
        payload = packet[ihl:]
        end = offset + len(payload)
        queue = self.queues.get(key)
        if queue is None:
            if len(self.queues) >= MAX_QUEUES:
                self._drop(next(iter(self.queues)))
            queue = self.queues[key] = _Queue(now + self.timeout)
        if queue.broken:
            return None
        bad = end + self.headerRoom > MAX_DATAGRAM or (more and len(payload) % 8) or (
            not payload and more)
        if not bad and not more:
            if queue.total is not None and queue.total != end:
                bad = True
            queue.total = end
        if not bad and queue.total is not None and end > queue.total:
            bad = True
        if not bad:
            if queue.pieces.get(offset) == payload:
                return None  # an exact duplicate: dropped alone (RFC 5722 4)
            for start, piece in queue.pieces.items():
                if start < end and offset < start + len(piece):
                    bad = True
                    break
        if bad:
            self._spoil(key, queue)
            return None
        if offset == 0:
            queue.header = packet[:ihl]
        queue.pieces[offset] = payload
        queue.size += len(payload)
        self.held += len(payload)
        while self.held > MAX_BYTES and self.queues:
            self._drop(next(iter(self.queues)))
        if key not in self.queues:
            return None
        if queue.total is None or queue.size != queue.total or not queue.header:
            return None
        del self.queues[key]
        self.held -= queue.size
        body = b"".join(queue.pieces[k] for k in sorted(queue.pieces))
        return self.rebuild(queue.header, body)

    def _spoil(self, key, queue: _Queue) -> None:
        """
        Keep the key until it expires (so the rest of the datagram is
        ignored too), but free its data.
        """
        self.held -= queue.size
        queue.pieces.clear()
        queue.size = 0
        queue.broken = True
        self.dropped += 1

    def _drop(self, key) -> None:
        queue = self.queues.pop(key)
        self.held -= queue.size
        self.dropped += 1

    def expire(self, now: float) -> None:
        if not self.queues:
            return
        for key in [k for k, q in self.queues.items() if q.expires <= now]:
            queue = self.queues[key]
            first = queue.pieces.get(0)
            self._drop(key)
            if first is not None and queue.header and self.onTimeout is not None:
                self.onTimeout(self.quote(queue.header, first))

    def nextExpiry(self) -> Optional[float]:
        if not self.queues:
            return None
        return min(q.expires for q in self.queues.values())
