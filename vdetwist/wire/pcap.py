"""
The classic libpcap file format (what C{tcpdump -w} writes and C{tcpdump -r},
Wireshark and C{vdecapture} read), without I/O: bytes in, bytes out.

A file is a 24-byte header (magic, version 2.4, time zone 0, accuracy 0,
snapshot length, link type) followed by records: a 16-byte header (seconds,
microseconds, captured length, original length) and the captured bytes.
Fields are in the writer's byte order; the magic tells a reader which one.
vdeplug4's C{vdecapture} writes microsecond timestamps, link type Ethernet,
snapshot length 65535, in native order: so does this module, so that a file
either tool wrote can be appended to by the other.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

__all__ = [
    "DEFAULT_SNAPLEN",
    "FILE_HEADER_SIZE",
    "LINKTYPE_ETHERNET",
    "RECORD_HEADER_SIZE",
    "FileHeader",
    "PcapError",
    "Record",
    "encodeRecords",
    "fileHeader",
    "parseFile",
    "parseHeader",
    "parseRecords",
]

MAGIC_MICRO = 0xA1B2C3D4
MAGIC_NANO = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
#: The snapshot length vdecapture writes: no frame is cut.
DEFAULT_SNAPLEN = 65535

_HEADER = struct.Struct("=IHHiIII")
_RECORD = struct.Struct("=IIII")
FILE_HEADER_SIZE = _HEADER.size
RECORD_HEADER_SIZE = _RECORD.size


class PcapError(ValueError):
    """
    The bytes are not a classic pcap file (or are cut short).
    """


@dataclass(frozen=True)
class FileHeader:
    """
    A parsed file header.

    @ivar byteorder: C{"<"} or C{">"}: the order of every field of the file.
    @ivar nanoseconds: whether record timestamps count nanoseconds (magic
        C{a1b23c4d}) rather than microseconds.
    """

    byteorder: str
    nanoseconds: bool
    version: tuple[int, int]
    snaplen: int
    linktype: int


@dataclass(frozen=True)
class Record:
    """
    One captured frame: C{seconds} and C{fraction} (micro- or nanoseconds,
    as the file header says), the original C{length} and the captured
    C{data} (C{len(data)} is the captured length).
    """

    seconds: int
    fraction: int
    length: int
    data: bytes


def fileHeader(snaplen: int = DEFAULT_SNAPLEN, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    """
    The 24-byte header of a new file (microsecond timestamps, native order).
    """
    return _HEADER.pack(MAGIC_MICRO, 2, 4, 0, 0, snaplen, linktype)


def encodeRecords(frames: Iterable[tuple[float, bytes]], snaplen: int = DEFAULT_SNAPLEN) -> bytes:
    """
    The records of C{frames}, pairs of (POSIX time in seconds, frame), each
    frame cut to C{snaplen} bytes.
    """
    pack = _RECORD.pack
    chunks = []
    for when, frame in frames:
        seconds, micros = divmod(int(when * 1_000_000), 1_000_000)
        n = len(frame)
        if n > snaplen:
            chunks.append(pack(seconds, micros, snaplen, n))
            chunks.append(frame[:snaplen])
        else:
            chunks.append(pack(seconds, micros, n, n))
            chunks.append(frame)
    return b"".join(chunks)


def parseHeader(data: bytes) -> FileHeader:
    """
    The header at the start of C{data}.

    @raise PcapError: too short, or not a pcap magic number.
    """
    if len(data) < FILE_HEADER_SIZE:
        raise PcapError(f"a pcap file starts with {FILE_HEADER_SIZE} header bytes, not {len(data)}")
    for order in ("<", ">"):
        (magic,) = struct.unpack_from(order + "I", data)
        if magic in (MAGIC_MICRO, MAGIC_NANO):
            _, major, minor, _, _, snaplen, linktype = struct.unpack_from(
                order + _HEADER.format[1:], data
            )
            return FileHeader(order, magic == MAGIC_NANO, (major, minor), snaplen, linktype)
    raise PcapError(f"not a pcap file: magic number {data[:4].hex()}")


def parseRecords(header: FileHeader, data: bytes, offset: int = FILE_HEADER_SIZE) -> Iterator[Record]:
    """
    The records of C{data} from C{offset} (just after the file header by
    default).

    @raise PcapError: when a record is cut short (the file was truncated).
    """
    record = struct.Struct(header.byteorder + _RECORD.format[1:])
    end = len(data)
    while offset < end:
        if offset + RECORD_HEADER_SIZE > end:
            raise PcapError(f"record header cut short at byte {offset}")
        seconds, fraction, caplen, length = record.unpack_from(data, offset)
        offset += RECORD_HEADER_SIZE
        if offset + caplen > end:
            raise PcapError(f"record of {caplen} bytes cut short at byte {offset}")
        yield Record(seconds, fraction, length, data[offset : offset + caplen])
        offset += caplen


def parseFile(data: bytes) -> tuple[FileHeader, list[Record]]:
    """
    A whole file: its header and records.
    """
    header = parseHeader(data)
    return header, list(parseRecords(header, data))
