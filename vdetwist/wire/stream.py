"""
The VDE stream encoding: each frame as a 2-byte big-endian length and the
frame.  It carries cables over pipes (C{vde_plug} on stdio, C{cmd://},
C{dpipe}, ssh) and, here, over any Twisted stream transport.

L{StreamDecoder} is sans-IO.  It decodes everything the C sender produces
exactly as libvdeplug4 does, and is more robust than the C receiver on bad
streams: a header split across reads is buffered instead of lost, and after
an oversized length it discards what it holds and resynchronises on the next
chunk, as the C receiver does.
"""

from __future__ import annotations

import struct
from typing import Callable

from vdetwist.plug import VDE_ETHBUFSIZE

#: Largest record length the C stream receiver accepts (VDE_ETHBUFSIZE + 2).
MAX_STREAM_FRAME = VDE_ETHBUFSIZE + 2

_header = struct.Struct(">H").pack


def encode(frame: bytes) -> bytes:
    """
    One record of the stream encoding, or C{b""} for a frame too large to
    encode (the C sender drops those silently too).
    """
    if len(frame) > MAX_STREAM_FRAME:
        return b""
    return _header(len(frame)) + frame


class StreamDecoder:
    """
    Splits a byte stream into frames.

    @ivar frameReceived: called with each decoded frame.
    @ivar lengthError: called with C{(length, discarded)} when a record
        header announces more than L{MAX_STREAM_FRAME} bytes; C{discarded} is
        how many buffered bytes were thrown away to resynchronise.
    @ivar paused: while true, L{feed} only buffers: set it (even from within
        C{frameReceived}) to stop delivery after the current frame, clear it
        and call C{feed(b"")} to deliver what was held back.
    """

    __slots__ = ("frameReceived", "lengthError", "_pending", "paused")

    def __init__(
        self,
        frameReceived: Callable[[bytes], None],
        lengthError: Callable[[int, int], None],
    ) -> None:
        self.frameReceived = frameReceived
        self.lengthError = lengthError
        self._pending = b""
        self.paused = False

    @property
    def buffered(self) -> int:
        """
        Bytes held waiting for the rest of a record.
        """
        return len(self._pending)

    def feed(self, data: bytes) -> None:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        if self.paused:
            self._pending = data
            return
        deliver = self.frameReceived
        end = len(data)
        pos = 0
        while end - pos >= 2:
            length = (data[pos] << 8) | data[pos + 1]
            if length == 0:
                pos += 2
                continue
            if length > MAX_STREAM_FRAME:
                self.lengthError(length, end - pos)
                return
            stop = pos + 2 + length
            if stop > end:
                break
            deliver(data[pos + 2 : stop])
            pos = stop
            if self.paused:
                break
        if pos < end:
            self._pending = data[pos:]
