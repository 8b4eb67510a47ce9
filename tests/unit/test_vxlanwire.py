"""
The VXLAN encapsulation without I/O: headers, the byte traces observed with
the C tools, datagram validation, option parsing, reject counting.
"""

from __future__ import annotations

import grp
import os
import socket

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from vdetwist.errors import VNLError
from vdetwist.vnl import resolve
from vdetwist.backends.vxlan import parseVxlan
from vdetwist.backends.vxvde import parseVxvde
from vdetwist.wire.vxlan import (
    DEFAULT_GROUP4,
    DEFAULT_GROUP6,
    HEADER_SIZE,
    MAX_DATAGRAM,
    Header,
    RejectCounter,
    Verdict,
    applyGid,
    checkVxlan,
    checkVxvde,
    gidFromText,
    isMulticast,
    packHeader,
    parseHeader,
    parseSize,
)

ARP = bytes.fromhex(
    "ffffffffffff02aa0000000108060001080006040001"
    "02aa000000010a0909010000000000000a090902"
)


def vxvde(text: str):
    return parseVxvde(resolve("vxvde://" + text))


def vxlan(text: str):
    return parseVxlan(resolve("vxlan://" + text))


class HeaderTests(TestCase):
    def test_layout(self) -> None:
        self.assertEqual(packHeader(1), bytes.fromhex("0800000000000100"))
        self.assertEqual(packHeader(42), bytes.fromhex("0800000000002a00"))
        self.assertEqual(packHeader(0xABCDEF), bytes.fromhex("08000000abcdef00"))
        self.assertEqual(len(packHeader(0)), HEADER_SIZE)

    def test_roundTrip(self) -> None:
        for vni in (0, 1, 42, 255, 256, 66000, 0xFFFFFF):
            header = parseHeader(packHeader(vni) + ARP)
            self.assertEqual(header, Header(0x08, vni, b"\0\0\0\0"))
            self.assertTrue(header.valid)

    def test_outOfRange(self) -> None:
        self.assertRaises(ValueError, packHeader, -1)
        self.assertRaises(ValueError, packHeader, 1 << 24)

    def test_parseOdd(self) -> None:
        header = parseHeader(bytes.fromhex("0801020300000109"))
        self.assertEqual(header, Header(0x08, 1, b"\x01\x02\x03\x09"))
        self.assertFalse(header.valid)
        self.assertFalse(parseHeader(bytes.fromhex("0c00000000000100")).valid)
        self.assertRaises(ValueError, parseHeader, b"\x08\0\0")

    def test_observedTrace(self) -> None:
        """
        The start of a broadcast ARP as the C vxvde put it on the wire (VNI
        1), and the IPv6 header for C{vni=42} (vxvde-vxlan.md section 1, 3.5).
        """
        datagram = packHeader(vxvde("").vni) + ARP
        self.assertEqual(
            datagram[:22],
            bytes.fromhex("08000000000001 00 ffffffffffff 02aa00000001 0806".replace(" ", "")),
        )
        # No padding: a 42-byte ARP frame travels as 42 bytes.
        self.assertEqual(len(datagram), 8 + 42)
        self.assertEqual(vxvde("/v6/vni=42").header, bytes.fromhex("0800000000002a00"))


class CheckTests(TestCase):
    def test_vxvdeAccepts(self) -> None:
        self.assertEqual(checkVxvde(packHeader(5) + ARP, 5), Verdict.FRAME)
        self.assertEqual(checkVxvde(packHeader(5) + bytes(15), 5), Verdict.FRAME)
        self.assertEqual(checkVxvde(packHeader(5) + bytes(9234), 5), Verdict.FRAME)
        self.assertEqual(checkVxvde(packHeader(5), 5), Verdict.GOODBYE)

    def test_vxvdeRejects(self) -> None:
        """
        The header must be exactly the local one; a frame must be longer
        than 14 bytes; jumbo frames end at 9234.
        """
        cases = [
            (packHeader(6) + ARP, Verdict.WRONG_VNI),
            (bytes.fromhex("0c00000000000500") + ARP, Verdict.BAD_FLAGS),
            (bytes.fromhex("0000000000000500") + ARP, Verdict.BAD_FLAGS),
            (bytes.fromhex("0801020300000509") + ARP, Verdict.BAD_RESERVED),
            (bytes.fromhex("0800000000000501") + ARP, Verdict.BAD_RESERVED),
            (packHeader(5) + bytes(14), Verdict.TRUNCATED),
            (packHeader(5) + bytes(1), Verdict.TRUNCATED),
            (packHeader(5)[:7], Verdict.TRUNCATED),
            (b"", Verdict.TRUNCATED),
            (packHeader(5) + bytes(9235), Verdict.OVERSIZED),
            (packHeader(6), Verdict.WRONG_VNI),
        ]
        for datagram, verdict in cases:
            self.assertEqual(checkVxvde(datagram, 5), verdict, datagram[:8].hex())
            self.assertFalse(verdict.accepted)
        self.assertEqual(MAX_DATAGRAM, 9242)

    def test_vxlan(self) -> None:
        """
        vxlan ignores the reserved bytes (verified with the C plugin:
        C{08 01 02 03 00 00 01 09} is accepted) and has no goodbye.
        """
        self.assertEqual(checkVxlan(packHeader(1) + ARP, 1), Verdict.FRAME)
        self.assertEqual(
            checkVxlan(bytes.fromhex("0801020300000109") + ARP, 1), Verdict.FRAME
        )
        self.assertEqual(checkVxlan(packHeader(2) + ARP, 1), Verdict.WRONG_VNI)
        self.assertEqual(
            checkVxlan(bytes.fromhex("0c00000000000100") + ARP, 1), Verdict.BAD_FLAGS
        )
        self.assertEqual(checkVxlan(packHeader(1), 1), Verdict.TRUNCATED)
        self.assertEqual(checkVxlan(packHeader(1) + bytes(14), 1), Verdict.TRUNCATED)
        self.assertEqual(checkVxlan(packHeader(1) + bytes(9235), 1), Verdict.OVERSIZED)
        self.assertEqual(checkVxlan(packHeader(1) + bytes(9234), 1), Verdict.FRAME)


class OptionTests(TestCase):
    def test_vxvdeDefaults(self) -> None:
        config = vxvde("")
        self.assertEqual(
            (config.group, config.port, config.vni, config.ttl, config.rcvbuf,
             config.family, config.hashsize, config.expiretime, config.interface,
             config.gid, config.bind),
            (DEFAULT_GROUP4, 14789, 1, 1, None, socket.AF_UNSPEC, 1024, 128, None,
             None, None),
        )
        self.assertEqual(config.header, bytes.fromhex("0800000000000100"))

    def test_vxlanDefaults(self) -> None:
        config = vxlan("")
        self.assertEqual(
            (config.group, config.port, config.vni, config.ttl, config.hashsize,
             config.expiretime),
            (DEFAULT_GROUP4, 4789, 1, 1, 1024, 128),
        )

    def test_v6(self) -> None:
        config = vxvde("/v6")
        self.assertEqual((config.group, config.family), (DEFAULT_GROUP6, socket.AF_INET6))
        self.assertEqual(vxvde("/v4").family, socket.AF_INET)
        both = vxvde("/v4/v6")
        self.assertEqual((both.group, both.family), (DEFAULT_GROUP6, socket.AF_UNSPEC))
        self.assertEqual(vxlan("/v6").group, DEFAULT_GROUP6)
        self.assertEqual(vxlan("/v6").family, socket.AF_INET6)

    def test_vniPrefix(self) -> None:
        """
        C{v} is a prefix of C{vni} (the first table entry it starts).
        """
        self.assertEqual(vxvde("/v=7").vni, 7)
        self.assertEqual(vxvde("/vn=3/vni=4").vni, 4)
        self.assertEqual(vxlan("/v=7").vni, 7)
        self.assertEqual(vxvde("/v").vni, os.getegid() & 0xFFFFFF)

    def test_vniGroupName(self) -> None:
        group = grp.getgrgid(os.getegid())
        self.assertEqual(vxvde(f"/vni={group.gr_name}").vni, group.gr_gid)
        # C reads these as absent (VNI 1): refused, naming the option.
        for value in ("no-such-group-78", "12x", "-1"):
            error = self.assertRaises(VNLError, vxvde, f"/vni={value}")
            self.assertEqual(error.message, f"vni={value}: neither a number nor the name of a"
                                            " group; give a number, a group name, or nothing"
                                            " (your own group)")
        # vxlan takes numbers only.
        self.assertRaises(VNLError, vxlan, f"/vni={group.gr_name}")
        self.assertRaises(VNLError, vxlan, "/vni=16777216")

    def test_grp(self) -> None:
        """
        C{grp} sets the VNI default and the group's last 3 bytes
        (C{vxvde://239.1.2.3/grp=66000} -> 239.1.1.208, VNI 66000).
        """
        config = vxvde("239.1.2.3/grp=66000")
        self.assertEqual((config.gid, config.vni), (66000, 66000))
        self.assertEqual(config.header[4:7], bytes.fromhex("0101d0"))
        packed = applyGid(socket.inet_aton("239.1.2.3"), config.gid)
        self.assertEqual(socket.inet_ntoa(packed), "239.1.1.208")
        v6 = applyGid(socket.inet_pton(socket.AF_INET6, "ff15::78:1"), 0x4E0005)
        self.assertEqual(socket.inet_ntop(socket.AF_INET6, v6), "ff15::4e:5")
        self.assertEqual(vxvde("/grp=66000/vni=9").vni, 9)
        self.assertEqual(vxvde("/grp").gid, os.getegid())
        self.assertRaises(VNLError, vxvde, "/grp=no-such-group-78")

    def test_gidFromText(self) -> None:
        self.assertEqual(gidFromText(""), os.getegid())
        self.assertEqual(gidFromText("123"), 123)
        self.assertEqual(gidFromText(grp.getgrgid(0).gr_name), 0)
        self.assertIsNone(gidFromText("no-such-group-78"))

    def test_values(self) -> None:
        config = vxvde(
            "ff15::78:1/p=5000/t=3/rcvbuf=2m/hashsize=64/expiretime=30/if=eth0/bind=fd78::1"
        )
        self.assertEqual(
            (config.group, config.port, config.ttl, config.rcvbuf, config.hashsize,
             config.expiretime, config.interface, config.bind),
            ("ff15::78:1", 5000, 3, 2 << 20, 64, 30, "eth0", "fd78::1"),
        )
        self.assertEqual(vxvde("/expiretime=0").expiretime, 128)
        self.assertEqual(vxvde("/expiretime=-5").expiretime, 128)
        self.assertEqual(vxvde("a%2fb/port=1").group, "a/b")

    def test_sizes(self) -> None:
        for text, value in [("100", 100), ("4k", 4096), ("4K", 4096), ("1g", 1 << 30),
                            ("2T", 2 << 40), ("3M", 3 << 20)]:
            self.assertEqual(parseSize("v", "rcvbuf", text), value)
        for bad in ["", "k", "4x", "-1", "4kb"]:
            self.assertRaises(VNLError, parseSize, "v", "rcvbuf", bad)

    def test_errors(self) -> None:
        with self.assertRaises(VNLError) as caught:
            vxvde("/x=1")
        self.assertIn("unknown key: x", str(caught.exception))
        # bind is vxvde's only.
        self.assertRaises(VNLError, vxlan, "/bind=1.2.3.4")
        for bad in ["/port=", "/port=0", "/port=70000", "/port=12ab", "/ttl=256",
                    "/ttl=x", "/hashsize=0", "/expiretime=soon"]:
            self.assertRaises(VNLError, vxvde, bad)

    def test_isMulticast(self) -> None:
        self.assertTrue(isMulticast(socket.AF_INET, socket.inet_aton("239.78.0.1")))
        self.assertFalse(isMulticast(socket.AF_INET, socket.inet_aton("10.78.0.1")))
        self.assertTrue(isMulticast(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "ff15::78:1")))
        self.assertFalse(isMulticast(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "fd78::1")))


class RejectCounterTests(TestCase):
    def test_rateLimited(self) -> None:
        """
        The first rejection is reported at once; later ones are summed into
        one report per interval, and nothing is reported when all is quiet.
        """
        clock = Clock()
        reports = []
        counter = RejectCounter(clock, lambda counts, sample: reports.append((counts, sample)), 10)
        counter.reject(Verdict.WRONG_VNI, ("10.78.0.1", 5))
        self.assertEqual(reports, [({Verdict.WRONG_VNI: 1}, "wrong VNI from 10.78.0.1:5")])
        for _ in range(1000):
            counter.reject(Verdict.BAD_FLAGS, ("fd78::2", 6))
        counter.reject(Verdict.TRUNCATED, ("fd78::2", 6))
        self.assertEqual(len(reports), 1)
        clock.advance(10)
        self.assertEqual(
            reports[1],
            ({Verdict.BAD_FLAGS: 1000, Verdict.TRUNCATED: 1}, "truncated from [fd78::2]:6"),
        )
        clock.advance(10)
        clock.advance(100)
        self.assertEqual(len(reports), 2)
        counter.reject(Verdict.OVERSIZED, ("10.78.0.1", 5))
        self.assertEqual(len(reports), 3)
        counter.reject(Verdict.OVERSIZED, ("10.78.0.1", 5))
        counter.stop()
        self.assertEqual(reports[3][0], {Verdict.OVERSIZED: 1})
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(counter.total, 1004)
        self.assertEqual(counter.counts[Verdict.OVERSIZED], 2)
