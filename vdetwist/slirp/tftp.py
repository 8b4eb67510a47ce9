"""
A read-only TFTP server on the gateway's port 69 (RFC 1350, with the
C{blksize} and C{tsize} options of RFC 2348/2349), serving the files under
C{tftp_path}.  As libslirp does, it answers from port 69.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Optional

from vdetwist.slirp import packets as P

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.context import LayerContext
    from vdetwist.slirp.timers import Timer

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
ERR_NOT_FOUND = 1
ERR_ACCESS = 2
ERR_ILLEGAL = 4
ERR_OPTION = 8
MAX_SESSIONS = 16
TIMEOUT = 5.0
TRIES = 5
DEFAULT_BLOCK = 512
MAX_BLOCK = 1428


class _Session:
    __slots__ = ("key", "file", "blksize", "block", "last", "tries", "timer", "done", "size")

    timer: Timer  # set as soon as the session is made: it times itself out

    def __init__(self, key, file, blksize: int, size: int) -> None:
        self.key = key
        self.file = file
        self.blksize = blksize
        self.block = 0
        self.last = b""
        self.tries = 0
        self.done = False
        self.size = size


class TftpServer:
    def __init__(self, context: "LayerContext", root: str) -> None:
        self.context = context
        self.root = os.path.realpath(root)
        self.sessions: dict[tuple, _Session] = {}

    def _resolve(self, name: str) -> Optional[str]:
        """
        The file C{name} names under the root, or C{None} if it would leave
        it (C{..}, symlinks out).
        """
        parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            return None
        path = os.path.realpath(os.path.join(self.root, *parts))
        if not path.startswith(self.root + os.sep):
            return None
        return path

    def input(self, packet: bytes, ihl: int) -> None:
        guest = packet[12:16]
        sport = (packet[ihl] << 8) | packet[ihl + 1]
        data = packet[ihl + 8 :]
        if len(data) < 2:
            return
        opcode = (data[0] << 8) | data[1]
        key = (guest, sport)
        if opcode == RRQ:
            self._request(key, data[2:])
        elif opcode == WRQ:
            self._send(key, self._error(ERR_ACCESS, "read-only server"))
        elif opcode == ACK and len(data) >= 4:
            session = self.sessions.get(key)
            if session is not None and ((data[2] << 8) | data[3]) == session.block:
                if session.done:
                    self._end(session)
                else:
                    self._next(session)
        elif opcode == ERROR:
            session = self.sessions.get(key)
            if session is not None:
                self._end(session)

    def _error(self, code: int, message: str) -> bytes:
        return struct.pack("!HH", ERROR, code) + message.encode() + b"\0"

    def _send(self, key, message: bytes) -> None:
        guest, port = key
        context = self.context
        context.link.send4(guest, P.udpPacket(context.policy.host4, guest, 69, port, message))

    def _request(self, key, body: bytes) -> None:
        fields = body.split(b"\0")
        if len(fields) < 3:
            self._send(key, self._error(ERR_ILLEGAL, "malformed request"))
            return
        name = fields[0].decode("latin-1")
        mode = fields[1].decode("latin-1").lower()
        if mode not in ("octet", "netascii"):
            self._send(key, self._error(ERR_ILLEGAL, "unsupported mode"))
            return
        options = {}
        for i in range(2, len(fields) - 1, 2):
            options[fields[i].decode("latin-1").lower()] = fields[i + 1].decode("latin-1")
        old = self.sessions.pop(key, None)
        if old is not None:
            self._close(old)
        path = self._resolve(name)
        if path is None:
            self._send(key, self._error(ERR_ACCESS, "access violation"))
            return
        try:
            f = open(path, "rb")
            size = os.fstat(f.fileno()).st_size
        except OSError:
            self._send(key, self._error(ERR_NOT_FOUND, "file not found"))
            return
        if len(self.sessions) >= MAX_SESSIONS:
            f.close()
            self._send(key, self._error(0, "too many transfers"))
            return
        blksize = DEFAULT_BLOCK
        accepted = []
        if "blksize" in options and options["blksize"].isdigit():
            blksize = max(8, min(int(options["blksize"]), MAX_BLOCK,
                                 self.context.config.mtu - 32))
            accepted.append(("blksize", str(blksize)))
        if "tsize" in options:
            accepted.append(("tsize", str(size)))
        session = _Session(key, f, blksize, size)
        session.timer = self.context.timer(lambda: self._timeout(session))
        self.sessions[key] = session
        if accepted:
            message = struct.pack("!H", OACK) + b"".join(
                k.encode() + b"\0" + v.encode() + b"\0" for k, v in accepted)
            self._transmit(session, message)
        else:
            self._next(session)

    def _next(self, session: _Session) -> None:
        try:
            chunk = session.file.read(session.blksize)
        except OSError:
            self._send(session.key, self._error(0, "read error"))
            self._end(session)
            return
        session.block = (session.block + 1) & 0xFFFF
        session.done = len(chunk) < session.blksize
        self._transmit(session, struct.pack("!HH", DATA, session.block) + chunk)

    def _transmit(self, session: _Session, message: bytes) -> None:
        session.last = message
        session.tries = 0
        self._send(session.key, message)
        session.timer.reset(self.context.now() + TIMEOUT)

    def _timeout(self, session: _Session) -> None:
        if self.sessions.get(session.key) is not session:
            return
        session.tries += 1
        if session.tries >= TRIES:
            self._end(session)
            return
        self._send(session.key, session.last)
        session.timer.reset(self.context.now() + TIMEOUT)

    def _close(self, session: _Session) -> None:
        session.timer.cancel()
        session.file.close()

    def _end(self, session: _Session) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        self._close(session)

    def close(self) -> None:
        for session in list(self.sessions.values()):
            self._close(session)
        self.sessions.clear()
