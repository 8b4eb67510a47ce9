"""
Tests for L{vdetwist.wire.pcap}: the classic pcap format, byte for byte.
"""

from __future__ import annotations

import struct
import sys

from twisted.trial.unittest import SynchronousTestCase

from vdetwist.wire.pcap import (
    DEFAULT_SNAPLEN,
    FILE_HEADER_SIZE,
    LINKTYPE_ETHERNET,
    PcapError,
    Record,
    encodeRecords,
    fileHeader,
    parseFile,
    parseHeader,
    parseRecords,
)

NATIVE = "<" if sys.byteorder == "little" else ">"


class HeaderTests(SynchronousTestCase):
    def test_fileHeader(self) -> None:
        """
        The header vdecapture writes: magic a1b2c3d4 (microseconds),
        version 2.4, zone 0, accuracy 0, snaplen 65535, Ethernet; native
        order.
        """
        self.assertEqual(
            fileHeader(),
            struct.pack(NATIVE + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1),
        )
        self.assertEqual(len(fileHeader()), FILE_HEADER_SIZE)
        self.assertEqual(
            fileHeader(96, 105)[16:], struct.pack(NATIVE + "II", 96, 105)
        )

    def test_parseHeader(self) -> None:
        header = parseHeader(fileHeader())
        self.assertEqual(
            (header.byteorder, header.nanoseconds, header.version, header.snaplen, header.linktype),
            (NATIVE, False, (2, 4), DEFAULT_SNAPLEN, LINKTYPE_ETHERNET),
        )

    def test_parseOtherOrderAndNanoseconds(self) -> None:
        """
        Files written on a machine of the other byte order, and nanosecond
        files (magic a1b23c4d), are read.
        """
        other = ">" if NATIVE == "<" else "<"
        data = struct.pack(other + "IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 128, 1)
        data += struct.pack(other + "IIII", 7, 999_999_999, 3, 60) + b"abc"
        header, records = parseFile(data)
        self.assertEqual((header.byteorder, header.nanoseconds, header.snaplen), (other, True, 128))
        self.assertEqual(records, [Record(7, 999_999_999, 60, b"abc")])

    def test_notPcap(self) -> None:
        self.assertRaises(PcapError, parseHeader, b"\x00" * 24)
        error = self.assertRaises(PcapError, parseHeader, b"\xa1\xb2")
        self.assertIn("24 header bytes", str(error))


class RecordTests(SynchronousTestCase):
    def test_records(self) -> None:
        """
        Each record: seconds, microseconds, captured and original lengths,
        then the frame.
        """
        frames = [(1700000000.25, b"A" * 60), (1700000001.000001, b"B" * 1514)]
        data = fileHeader() + encodeRecords(frames)
        self.assertEqual(
            data[24:40], struct.pack(NATIVE + "IIII", 1700000000, 250000, 60, 60)
        )
        _, records = parseFile(data)
        self.assertEqual(
            [(r.seconds, r.length, r.data) for r in records],
            [(1700000000, 60, b"A" * 60), (1700000001, 1514, b"B" * 1514)],
        )
        self.assertIn(records[1].fraction, (0, 1))  # float rounding of .000001

    def test_snaplen(self) -> None:
        """
        A frame longer than the snapshot length is cut, its original length
        kept.
        """
        data = fileHeader(96) + encodeRecords([(5.0, bytes(range(200)))], 96)
        _, records = parseFile(data)
        self.assertEqual(records, [Record(5, 0, 200, bytes(range(96)))])

    def test_truncated(self) -> None:
        """
        A record cut short is an error, not a silently short read.
        """
        data = fileHeader() + encodeRecords([(1.0, b"x" * 60)])
        for cut in (len(data) - 1, FILE_HEADER_SIZE + 3):
            self.assertRaises(PcapError, list, parseRecords(parseHeader(data), data[:cut]))

    def test_empty(self) -> None:
        self.assertEqual(parseFile(fileHeader())[1], [])
