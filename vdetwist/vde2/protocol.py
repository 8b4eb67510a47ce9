"""
The vde2 connection protocol's wire formats, without I/O.

A client connects a stream socket to C{<dir>/ctl} and sends one I{request}
naming its own (bound) datagram socket; the server answers with one
I{reply}, the C{struct sockaddr_un} of the datagram socket it made for the
client.  This is a native-struct protocol: integers are host byte order,
which on every platform VDE runs on in practice (x86_64, arm64) is
little-endian, as here.

Version 3 request (122 + n bytes, no padding)::

    offset  size  field
         0     4  magic 0xfeedface
         4     4  version 3
         8     4  type: bits 0-7 request code, bits 8-31 requested port
        12   110  struct sockaddr_un of the client's data socket
       122     n  description, 0 <= n <= 127, no NUL: the length delimits it

The legacy version 1 request, which vde_switch still accepts, has the type
where v3 has the version (a word of 0 or 1 there means version 1) and an
unused MAC address before the socket address.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import Optional, Union

from vdetwist.errors import VdeError

__all__ = [
    "MAGIC",
    "VERSION",
    "REQ_NEW_CONTROL",
    "REQ_NEW_PORT0",
    "SUN_PATH_SIZE",
    "SOCKADDR_UN_SIZE",
    "REQUEST_HEADER_SIZE",
    "V1_HEADER_SIZE",
    "MAX_DESCRIPTION",
    "MAX_REQUEST",
    "READ_SIZE",
    "ProtocolError",
    "ShortRequest",
    "BadMagic",
    "UnsupportedVersion",
    "BadRequestType",
    "BadReply",
    "Request",
    "requestType",
    "packSockaddr",
    "parseSockaddr",
    "packRequest",
    "parseRequest",
    "requestBytesNeeded",
    "packReply",
    "parseReply",
]

MAGIC = 0xFEEDFACE
VERSION = 3
#: Request codes (bits 0-7 of the type).
REQ_NEW_CONTROL = 0
REQ_NEW_PORT0 = 1
#: Linux C{struct sockaddr_un}: a 2-byte family and a 108-byte path.
SUN_PATH_SIZE = 108
SOCKADDR_UN_SIZE = 2 + SUN_PATH_SIZE
AF_UNIX = 1
#: A version 3 request without its description.
REQUEST_HEADER_SIZE = 12 + SOCKADDR_UN_SIZE
#: A version 1 request without its description.
V1_HEADER_SIZE = 8 + 6 + SOCKADDR_UN_SIZE
#: libvdeplug4 sends at most this much description (a 128-byte C string).
MAX_DESCRIPTION = 127
MAX_REQUEST = REQUEST_HEADER_SIZE + MAX_DESCRIPTION
#: What vde_switch and netnode read of a request, in one C{read}.
READ_SIZE = 256
#: Largest port number the 24 bits of the type can carry.
MAX_PORT = (1 << 24) - 1

_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<III")
_SOCKADDR = struct.Struct("<H108s")
_WORD = struct.Struct("<I")

Path = Union[bytes, str]


class ProtocolError(VdeError):
    """
    A request or reply does not follow the protocol.
    """

    def __init__(self, message: str, errno: int = errno.EPROTO) -> None:
        super().__init__(message, errno)


class ShortRequest(ProtocolError):
    """
    Fewer bytes than a request header.
    """


class BadMagic(ProtocolError):
    """
    The request does not start with 0xfeedface (vde_switch: "V0 request
    not supported").
    """


class UnsupportedVersion(ProtocolError):
    """
    A request version other than 1 and 3.
    """

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(
            f"request for a version {version} port, which this switch does not "
            f"support (only versions 1 and 3)"
        )


class BadRequestType(ProtocolError):
    """
    A request code other than REQ_NEW_CONTROL and REQ_NEW_PORT0.
    """

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"bad request type {code} (expected 0 or 1)")


class BadReply(ProtocolError):
    """
    The server's reply is not a usable C{sockaddr_un}.
    """


@dataclass(frozen=True)
class Request:
    """
    A parsed request.

    @ivar version: 3, or 1 for the legacy format.
    @ivar code: L{REQ_NEW_CONTROL} or L{REQ_NEW_PORT0}.
    @ivar port: the port number asked for (bits 8-31 of the type; 0 =
        any).  Not meaningful with L{REQ_NEW_PORT0}.
    @ivar path: the client's data socket address: a filesystem path up to
        its NUL, or, for an abstract address (first byte NUL), the whole 108
        bytes, as the C servers connect to it.
    @ivar description: the client's text (as bytes: it is opaque; cut at
        127 bytes and at a NUL as C's C{strdup} would).
    @ivar mac: the MAC address field of a version 1 request, else C{None}.
    """

    version: int
    code: int
    port: int
    path: bytes
    description: bytes = b""
    mac: Optional[bytes] = None

    @property
    def isAbstract(self) -> bool:
        return self.path[:1] == b"\0"

    @property
    def type(self) -> int:
        return self.code | (self.port << 8)

    @property
    def wantedPort(self) -> int:
        """
        The port wanted, as vde_switch reads it: 0 = any free port, -1 =
        port 0 (L{REQ_NEW_PORT0}), N = port N.
        """
        return -1 if self.code == REQ_NEW_PORT0 else self.port


def _bytesPath(path: Path) -> bytes:
    if isinstance(path, str):
        return os.fsencode(path)
    return bytes(path)


def requestType(port: int) -> int:
    """
    The type word libvdeplug sends when connected to C{ctl}: 0 for any
    port, C{port << 8} for a port N > 0, L{REQ_NEW_PORT0} for -1 (the way
    C{vde://sw[0]} asks for port 0).
    """
    if port == -1:
        return REQ_NEW_PORT0
    if not 0 <= port <= MAX_PORT:
        raise ValueError(f"port {port} out of range 0..{MAX_PORT} (or -1 for port 0)")
    return port << 8


def packSockaddr(path: Path) -> bytes:
    """
    A 110-byte C{struct sockaddr_un}: family AF_UNIX, C{path} NUL padded.
    """
    raw = _bytesPath(path)
    if len(raw) > SUN_PATH_SIZE:
        raise ValueError(f"socket path longer than {SUN_PATH_SIZE} bytes: {raw!r}")
    return _SOCKADDR.pack(AF_UNIX, raw)


def parseSockaddr(data: bytes) -> bytes:
    """
    The address in a C{struct sockaddr_un}: a filesystem path up to its
    first NUL (what follows may be garbage: netnode does not clear it), or
    the full 108-byte abstract name when it starts with NUL.
    """
    sunPath = bytes(data[2:SOCKADDR_UN_SIZE])
    if sunPath[:1] == b"\0":
        return sunPath
    return sunPath.split(b"\0", 1)[0]


def packRequest(
    path: Path,
    description: Union[bytes, str] = b"",
    port: int = 0,
    *,
    type: Optional[int] = None,
    version: int = VERSION,
) -> bytes:
    """
    A version 3 request, as libvdeplug4 sends it in one C{send}.

    @param path: the client's bound data socket.
    @param description: cut to 127 bytes.
    @param port: 0 any, N > 0 port N, -1 port 0; see L{requestType}.
    @param type: the raw type word instead of one computed from C{port}.
    @param version: for tests of servers' error handling.
    """
    if isinstance(description, str):
        description = os.fsencode(description)
    if type is None:
        type = requestType(port)
    return (
        _HEADER.pack(MAGIC, version, type)
        + packSockaddr(path)
        + description[:MAX_DESCRIPTION]
    )


def requestBytesNeeded(data: bytes) -> int:
    """
    How many bytes a request starting with C{data} needs at least before
    L{parseRequest} can decide: the header length of its version (the
    description's length is unknown: it is whatever came with the header).
    Returns C{len(data)} or less when C{data} can be judged already (a bad
    magic number).
    """
    if len(data) >= 4 and data[:4] != _MAGIC_BYTES:
        return len(data)
    if len(data) >= 8 and _WORD.unpack_from(data, 4)[0] in (0, 1):
        return V1_HEADER_SIZE
    return REQUEST_HEADER_SIZE


def _description(data: bytes) -> bytes:
    return bytes(data[:MAX_DESCRIPTION]).split(b"\0", 1)[0]


def parseRequest(data: bytes) -> Request:
    """
    Parse a request (version 3 or 1) from everything the client sent.

    @raise BadMagic: not a vde2 request.
    @raise ShortRequest: too short for its header.
    @raise UnsupportedVersion: version 2 or above 3.
    @raise BadRequestType: the request code is not 0 or 1.
    """
    data = bytes(data)
    if len(data) < 4:
        raise ShortRequest(f"request of {len(data)} bytes is too short")
    if data[:4] != _MAGIC_BYTES:
        raise BadMagic(
            f"bad magic number {data[:4].hex()} (expected cefaedfe): "
            f"not a vde2 request (V0 requests are not supported)"
        )
    if len(data) < 8:
        raise ShortRequest(f"request of {len(data)} bytes is too short")
    (word,) = _WORD.unpack_from(data, 4)
    if word in (0, 1):
        if len(data) < V1_HEADER_SIZE:
            raise ShortRequest(
                f"version 1 request of {len(data)} bytes is shorter than its "
                f"{V1_HEADER_SIZE}-byte header"
            )
        return Request(
            version=1,
            code=word,
            port=0,
            path=parseSockaddr(data[14:V1_HEADER_SIZE]),
            description=_description(data[V1_HEADER_SIZE:]),
            mac=data[8:14],
        )
    if word != VERSION:
        raise UnsupportedVersion(word)
    if len(data) < REQUEST_HEADER_SIZE:
        raise ShortRequest(
            f"request of {len(data)} bytes is shorter than its "
            f"{REQUEST_HEADER_SIZE}-byte header"
        )
    (type_,) = _WORD.unpack_from(data, 8)
    code = type_ & 0xFF
    if code not in (REQ_NEW_CONTROL, REQ_NEW_PORT0):
        raise BadRequestType(code)
    return Request(
        version=VERSION,
        code=code,
        port=type_ >> 8,
        path=parseSockaddr(data[12:REQUEST_HEADER_SIZE]),
        description=_description(data[REQUEST_HEADER_SIZE:]),
    )


def packReply(path: Path) -> bytes:
    """
    The reply: the 110-byte C{sockaddr_un} of the server's data socket,
    zero padded.
    """
    return packSockaddr(path)


def parseReply(data: bytes) -> bytes:
    """
    The server data socket's address from a reply (see L{parseSockaddr}).

    @raise BadReply: shorter than a C{sockaddr_un}, or an empty address.
    """
    if len(data) < SOCKADDR_UN_SIZE:
        raise BadReply(
            f"reply of {len(data)} bytes is shorter than a {SOCKADDR_UN_SIZE}-byte sockaddr_un"
        )
    path = parseSockaddr(data)
    if not path.strip(b"\0"):
        raise BadReply("the reply names no socket")
    return path
