"""
Software segmentation (L{vdetwist.wire.gso}): the segments of vnet
super-frames built here, checked field by field.
L{tests.interop.test_gso_kernel} compares them byte for byte with the
kernel's own segmentation.
"""

from __future__ import annotations

import socket
import struct
from typing import Optional

from twisted.trial.unittest import TestCase

from vdetwist.wire.checksum import pseudo4, pseudo6, residue, verify
from vdetwist.wire.gso import BadVnetFrame, completeChecksum, segment
from vdetwist.wire.vnethdr import (
    GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, NEEDS_CSUM,
    PLAIN, VnetHeader,
)

SRC_MAC = b"\x02\x00\x00\x00\x0a\x01"
DST_MAC = b"\x02\x00\x00\x00\x0a\x02"
SRC4, DST4 = socket.inet_aton("10.9.0.1"), socket.inet_aton("10.9.0.2")
SRC6 = socket.inet_pton(socket.AF_INET6, "fd00:9::1")
DST6 = socket.inet_pton(socket.AF_INET6, "fd00:9::2")

FIN, SYN, PSH, ACK, ECE, CWR = 0x01, 0x02, 0x08, 0x10, 0x40, 0x80


def payloadOf(size: int, seed: int = 0) -> bytes:
    """
    C{size} bytes that differ from segment to segment.
    """
    return bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(size))


def superFrame(
    payload: bytes, mss: int, *, v6: bool = False, udp: bool = False,
    ufo: bool = False, vlan: Optional[int] = None, tcpFlags: int = ACK | PSH,
    options: bytes = b"", ipOptions: bytes = b"", ident: int = 0xFFFE,
    seq: int = 0xFFFFF000, ecn: bool = False, needsCsum: bool = True,
) -> bytes:
    """
    A vnet super-frame as a sender would make it: the L4 checksum field holds
    the pseudo-header sum when C{needsCsum}.
    """
    proto = 17 if udp or ufo else 6
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", 40000, 5001, seq, 77, (5 + len(options) // 4) << 4,
                         tcpFlags, 512, 0, 0) + options
        offset = 16
    else:
        l4 = struct.pack("!HHHH", 40000, 5001, 8 + len(payload), 0)
        offset = 6
    length = len(l4) + len(payload)
    if v6:
        ip = struct.pack("!IHBB", 0x60000000, length, proto, 64) + SRC6 + DST6
        partial = pseudo6(SRC6, DST6, proto, length)
        etherType = b"\x86\xdd"
    else:
        ihl = 5 + len(ipOptions) // 4
        ip = bytearray(struct.pack("!BBHHHBBH", 0x40 | ihl, 0, ihl * 4 + length, ident, 0x4000,
                                   64, proto, 0) + SRC4 + DST4 + ipOptions)
        struct.pack_into("!H", ip, 10, 0xFFFF - residue(bytes(ip)))
        partial = pseudo4(SRC4, DST4, proto, length)
        etherType = b"\x08\x00"
    l2 = DST_MAC + SRC_MAC + (b"\x81\x00" + struct.pack("!H", vlan) if vlan is not None else b"")
    start = len(l2) + 2 + len(ip)
    l4 = bytearray(l4)
    if needsCsum:
        struct.pack_into("!H", l4, offset, partial)
    if ufo:
        gsoType = GSO_UDP
    elif udp:
        gsoType = GSO_UDP_L4
    else:
        gsoType = GSO_TCPV6 if v6 else GSO_TCPV4
    header = VnetHeader(
        NEEDS_CSUM if needsCsum else 0, gsoType | (GSO_ECN if ecn else 0),
        start + len(l4), mss, start if needsCsum else 0, offset if needsCsum else 0,
    )
    return header.pack() + l2 + etherType + bytes(ip) + bytes(l4) + payload


class Segment:
    """
    The fields of one plain TCP/UDP segment, its checksums verified.
    """

    def __init__(self, test: TestCase, frame: bytes) -> None:
        l3 = 18 if frame[12:14] == b"\x81\x00" else 14
        self.v6 = frame[l3] >> 4 == 6
        if self.v6:
            self.ipLength, proto = struct.unpack_from("!HB", frame, l3 + 4)
            l4 = l3 + 40
            test.assertEqual(self.ipLength, len(frame) - l4)
            pseudo = pseudo6(frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40], proto, len(frame) - l4)
            self.ident = None
        else:
            l4 = l3 + (frame[l3] & 15) * 4
            self.ipLength, self.ident, self.fragment = struct.unpack_from("!2xHHH", frame, l3)
            proto = frame[l3 + 9]
            test.assertEqual(self.ipLength, len(frame) - l3)
            test.assertTrue(verify(frame[l3:l4]), "bad IPv4 header checksum")
            pseudo = pseudo4(frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20], proto, len(frame) - l4)
        if proto == 6:
            self.seq, self.flags = struct.unpack_from("!4xI5xB", frame, l4)
            self.payload = frame[l4 + (frame[l4 + 12] >> 4) * 4:]
        else:
            self.udpLength = struct.unpack_from("!4xH", frame, l4)[0]
            self.payload = frame[l4 + 8:]
        test.assertTrue(verify(frame[l4:], pseudo), "bad L4 checksum")
        self.headers = frame[:l3]


class SegmentTests(TestCase):
    """
    L{segment} on super-frames built here.
    """

    def checkTcp(self, vframe: bytes, payload: bytes, mss: int, tcpFlags: int,
                 ident: int = 0xFFFE, seq: int = 0xFFFFF000) -> list[Segment]:
        frames = segment(vframe)
        self.assertEqual(len(frames), max(1, -(-len(payload) // mss)))
        segments = [Segment(self, f) for f in frames]
        self.assertEqual(b"".join(s.payload for s in segments), payload)
        offset = 0
        for i, s in enumerate(segments):
            self.assertEqual(s.headers, vframe[10:10 + len(s.headers)])
            self.assertEqual(s.seq, (seq + offset) & 0xFFFFFFFF)
            offset += len(s.payload)
            wanted = tcpFlags
            if i:
                wanted &= ~CWR
            if i != len(segments) - 1:
                wanted &= ~(FIN | PSH)
                self.assertEqual(len(s.payload), mss)
            self.assertEqual(s.flags, wanted)
            if not s.v6:
                self.assertEqual(s.ident, (ident + i) & 0xFFFF)
                self.assertEqual(s.fragment, 0x4000)
        return segments

    def test_tcp4(self) -> None:
        """
        A TSO IPv4 super-frame becomes segments of gso_size payload bytes,
        identifications counting up (wrapping), sequence numbers advancing
        (wrapping), PSH and FIN on the last only, CWR on the first only.
        """
        payload = payloadOf(5000)
        flags = ACK | PSH | FIN | CWR | ECE
        self.checkTcp(superFrame(payload, 1448, tcpFlags=flags, ecn=True), payload, 1448, flags)

    def test_tcp6(self) -> None:
        payload = payloadOf(9001, 3)
        self.checkTcp(superFrame(payload, 1428, v6=True), payload, 1428, ACK | PSH)

    def test_options(self) -> None:
        """
        TCP and IPv4 options are copied into every segment.
        """
        payload = payloadOf(4000, 9)
        options = b"\x01\x01\x08\x0a" + bytes(range(8))
        vframe = superFrame(payload, 1000, options=options, ipOptions=b"\x01\x01\x01\x00")
        self.checkTcp(vframe, payload, 1000, ACK | PSH)

    def test_vlan(self) -> None:
        payload = payloadOf(3000, 1)
        for v6 in (False, True):
            segments = self.checkTcp(superFrame(payload, 1400, v6=v6, vlan=7), payload, 1400,
                                     ACK | PSH)
            self.assertEqual(segments[0].headers[12:16], b"\x81\x00\x00\x07")

    def test_withoutNeedsCsum(self) -> None:
        """
        A super-frame that does not say where its checksum is gets every
        checksum computed all the same.
        """
        payload = payloadOf(3000, 5)
        self.checkTcp(superFrame(payload, 1448, needsCsum=False), payload, 1448, ACK | PSH)

    def test_oneSegment(self) -> None:
        """
        A super-frame no longer than gso_size is one segment; one without
        payload too.
        """
        for size in (1448, 0):
            payload = payloadOf(size)
            self.checkTcp(superFrame(payload, 1448, tcpFlags=ACK | FIN), payload, 1448, ACK | FIN)

    def test_oddSizes(self) -> None:
        """
        Odd segment sizes and an odd tail are checksummed right.
        """
        payload = payloadOf(3001, 2)
        self.checkTcp(superFrame(payload, 999), payload, 999, ACK | PSH)

    def test_uso(self) -> None:
        """
        A USO super-frame becomes datagrams of gso_size bytes each, with
        their own UDP length and checksum.
        """
        for v6 in (False, True):
            payload = payloadOf(4001, 4)
            segments = [Segment(self, f) for f in segment(superFrame(payload, 1200, udp=True,
                                                                     v6=v6))]
            self.assertEqual([len(s.payload) for s in segments], [1200, 1200, 1200, 401])
            self.assertEqual([s.udpLength for s in segments], [1208, 1208, 1208, 409])
            self.assertEqual(b"".join(s.payload for s in segments), payload)
            if not v6:
                self.assertEqual([s.ident for s in segments], [0xFFFE, 0xFFFF, 0, 1])

    def test_ufo(self) -> None:
        """
        A legacy UFO super-frame becomes IPv4 fragments of one datagram.
        """
        payload = payloadOf(3000, 6)
        frames = segment(superFrame(payload, 1480, ufo=True))
        self.assertEqual([len(f) for f in frames], [14 + 20 + 1480] * 2 + [14 + 20 + 48])
        fragments = [struct.unpack_from("!4xHH", f, 14) for f in frames]
        self.assertEqual(fragments, [(0xFFFE, 0x2000), (0xFFFE, 0x2000 | 185), (0xFFFE, 370)])
        for f in frames:
            self.assertTrue(verify(f[14:34]))
        datagram = b"".join(f[34:] for f in frames)
        self.assertTrue(verify(datagram, pseudo4(SRC4, DST4, 17, len(datagram))))
        self.assertEqual(datagram[8:], payload)

    def test_plain(self) -> None:
        """
        A plain vnet frame is its Ethernet frame, untouched.
        """
        frame = DST_MAC + SRC_MAC + b"\x88\xb5" + payloadOf(50)
        self.assertEqual(segment(PLAIN + frame), [frame])

    def test_needsCsum(self) -> None:
        """
        A NEEDS_CSUM frame that is not a super-frame gets its checksum
        completed and nothing else changed.
        """
        for udp in (False, True):
            vframe = superFrame(payloadOf(301), 1448, udp=udp)
            vframe = VnetHeader(*VnetHeader.unpack(vframe)[:1], GSO_NONE, 0, 0,
                                *VnetHeader.unpack(vframe)[4:]).pack() + vframe[10:]
            (frame,) = segment(vframe)
            self.assertEqual(frame, completeChecksum(vframe))
            s = Segment(self, frame)
            self.assertEqual(s.payload, payloadOf(301))
            self.assertEqual(frame[:40], vframe[10:50])

    def test_bad(self) -> None:
        """
        A header that lies is refused with a one-line reason.
        """
        good = superFrame(payloadOf(3000), 1448)
        header = VnetHeader.unpack(good)
        udp = superFrame(payloadOf(3000), 1448, udp=True)
        cases = {
            "short": good[:6],
            "gso_size 0": header._replace(gsoSize=0).pack() + good[10:],
            "unknown type": header._replace(gsoType=2).pack() + good[10:],
            "TCPv4 on UDP": VnetHeader.unpack(udp)._replace(gsoType=GSO_TCPV4).pack() + udp[10:],
            "TCPv6 on IPv4": header._replace(gsoType=GSO_TCPV6).pack() + good[10:],
            "csum_start past": header._replace(gsoType=GSO_NONE, csumStart=5000).pack()
            + good[10:],
            "csum_start wrong": header._replace(csumStart=40).pack() + good[10:],
            "not IP": good[:22] + b"\x88\xb5" + good[24:],
            "truncated": good[:10 + 40],
            "truncated IPv4": good[:10 + 20],
            "bad IHL": good[:24] + b"\x43" + good[25:],
            "UFO odd size": header._replace(gsoType=GSO_UDP, gsoSize=1001,
                                            csumOffset=6).pack() + udp[10:],
        }
        for name, vframe in cases.items():
            with self.assertRaises(BadVnetFrame, msg=name) as caught:
                segment(vframe)
            self.assertNotIn("\n", str(caught.exception))
            self.assertTrue(str(caught.exception), name)
