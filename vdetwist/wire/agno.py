"""
The link-layer encryption of C{agno://}, sans-IO and byte-compatible with
libvdeplug_agno: key files, ethertype modes and the frame format.

A frame C{DST SRC ETYPE PAYLOAD} (at least 14 bytes) becomes::

    DST SRC OUTER_ETYPE | AES128-ECB(key, H) | AES128-CBC(key, IV=H, PAYLOAD + pad)

where the 16-byte header C{H} is the original ethertype (2 bytes), the pad
length (1), a zero byte, ASCII C{agno}, the sender's clock in seconds
(32 bits, big-endian) and 4 random bytes; the payload is padded with zero
bytes to a multiple of 16.  The result is C{30 + roundup16(len - 14)} bytes.
The MAC addresses stay in clear so that switches forward the frames.

A receiver accepts a frame when the header decrypts to C{agno} (else the key
is wrong) and its time C{t} is in C{[now - 2, now + 1]} (the only replay
protection; peers' clocks must agree within about 2 s).  There is no
authentication tag: the ciphertext is malleable, as in C.

Times and random bytes are parameters, so all of it is testable without a
clock.  AES comes from the C{cryptography} package (the C{agno} extra).
"""

from __future__ import annotations

import errno
import os
import pwd
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

from vdetwist.errors import VdeError
from vdetwist.vnl import strtol

try:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    _HAVE_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - depends on the installation
    _HAVE_CRYPTOGRAPHY = False

#: Why agno:// cannot work without the cryptography package.
MISSING_CRYPTOGRAPHY = (
    "agno:// needs the 'cryptography' package: pip install 'vdetwist[agno]'"
)

KEY_SIZE = 16
BLOCK = 16
ETH_HDRLEN = 14
#: Bytes added in front of the payload: the encrypted header.
HEADER_LEN = 16
#: Length of an encrypted frame with an empty payload.
MIN_ENCRYPTED = ETH_HDRLEN + HEADER_LEN
MAGIC = b"agno"
#: C{ethtype=} absent, empty or 0.
DEFAULT_ETHTYPE = 0xA6DE
ETHTYPE_MIN = 0x0600
ETHTYPE_MAX = 0xFFFE
#: C{ethtype=copy}: the frame's own ethertype stays in clear.
COPY = "copy"
#: C{ethtype=rand}: a random ethertype for every frame.
RAND = "rand"
_NAMED = {"ipv4": 0x0800, "ipv6": 0x86DD}
#: Key file of C{agno://{...}}, in the home directory of the effective user.
DEFAULT_KEYFILE = ".vde_agno_key"

_HEX = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}
# libvdeplug_agno decodes an uppercase "A" as 1, not 10 ("AABB..." is the key
# 11BB...); B-F and lowercase are right.  Replicated so that a key file gives
# the same key to vdetwist as to the C plugin, or the peers could not talk.
_HEX["A"] = 1


def available() -> bool:
    """
    Whether the C{cryptography} package is installed.
    """
    return _HAVE_CRYPTOGRAPHY


def requireCryptography() -> None:
    """
    @raise VdeError: C{cryptography} is not installed (says how to get it).
    """
    if not available():
        raise VdeError(MISSING_CRYPTOGRAPHY, errno.EPROTONOSUPPORT)


def parseKey(text: bytes) -> bytes:
    """
    The AES-128 key of a key file's contents: the first 32 hex digits found
    anywhere (everything else is skipped), high nibble first; missing digits
    leave zero bytes.  An uppercase C{A} counts as 1, as in C (see above):
    write keys in lowercase (C{md5sum}-style) to avoid the difference.

    @raise VdeError: fewer than 2 hex digits (EINVAL).
    """
    digits = []
    for char in text.decode("latin-1"):
        value = _HEX.get(char)
        if value is not None:
            digits.append(value)
            if len(digits) == 2 * KEY_SIZE:
                break
    if len(digits) < 2:
        raise VdeError(
            "the key file holds no key (write 32 lowercase hex digits, e.g. "
            "head -c 16 /dev/urandom | md5sum)",
            errno.EINVAL,
        )
    digits += [0] * (2 * KEY_SIZE - len(digits))
    return bytes(digits[i] << 4 | digits[i + 1] for i in range(0, 2 * KEY_SIZE, 2))


def homeDirectory() -> str:
    """
    The home directory of the effective user, from the passwd database (not
    C{$HOME}, as in C).
    """
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        raise VdeError(
            f"user {os.geteuid()} has no passwd entry, hence no home directory "
            "for the key file: give its absolute path",
            errno.ENOENT,
        ) from None


def keyPath(path: str) -> str:
    """
    The key file a C{agno://PATH} names: empty, the default C{~/.vde_agno_key};
    C{~REST}, the effective user's home followed by C{REST} (C{~/k}: C{<home>/k});
    absolute paths as they are.

    @raise VdeError: a relative path (EINVAL).
    """
    if not path:
        return os.path.join(homeDirectory(), DEFAULT_KEYFILE)
    if path.startswith("~"):
        return homeDirectory() + path[1:]
    if path.startswith("/"):
        return path
    raise VdeError(
        f"key file {path!r}: give an absolute path, ~/PATH, or nothing for "
        f"~/{DEFAULT_KEYFILE}",
        errno.EINVAL,
    )


def readKey(path: str) -> bytes:
    """
    The key in the key file C{agno://PATH} names (see L{keyPath}).

    @raise VdeError: no such file (ENOENT) or no key in it (EINVAL).
    """
    filename = keyPath(path)
    try:
        with open(filename, "rb") as f:
            text = f.read(1 << 16)
    except OSError as e:
        raise VdeError(
            f"key file {filename}: {e.strerror}", e.errno or errno.EIO
        ) from None
    try:
        return parseKey(text)
    except VdeError as e:
        e.message = f"key file {filename}: {e.message}"
        raise


def parseEthtype(value: Optional[str]) -> int | str:
    """
    The C{ethtype=} option: C{DEFAULT_ETHTYPE} (absent, empty or a number
    that is 0), L{COPY}, L{RAND}, or the number of C{ipv4}, C{ipv6} or a
    number (C's C{strtoul}, base 0, trailing text ignored) in
    [0x600, 0xfffe].

    @raise VdeError: anything else (EINVAL).
    """
    if not value:
        return DEFAULT_ETHTYPE
    if value in (COPY, RAND):
        return value
    if value in _NAMED:
        return _NAMED[value]
    number, end = strtol(value, unsigned=True)
    if end:
        if number == 0:
            return DEFAULT_ETHTYPE
        if ETHTYPE_MIN <= number <= ETHTYPE_MAX:
            return number
    raise VdeError(
        f"ethtype={value}: use copy, rand, ipv4, ipv6 or a number in "
        "0x600-0xfffe (default 0xa6de)",
        errno.EINVAL,
    )


def encryptedLength(length: int) -> int:
    """
    The length of the encryption of a C{length}-byte frame (C{length >= 14}).
    """
    payload = length - ETH_HDRLEN
    return MIN_ENCRYPTED + (payload + BLOCK - 1) // BLOCK * BLOCK


def fresh(sent: int, now: int) -> bool:
    """
    Whether a frame stamped C{sent} is accepted at C{now}: C{sent} in
    C{[now - 2, now + 1]}, in 32-bit arithmetic as in C.
    """
    return (now - sent + 1) & 0xFFFFFFFF <= 3


@dataclass
class AgnoCipher:
    """
    Encrypts and decrypts frames with one key.

    @ivar ethtype: the outer ethertype: a number, L{COPY} or L{RAND}.
    @ivar randomBytes: source of the header's random bytes and of L{RAND}
        ethertypes.
    """

    key: bytes
    ethtype: int | str = DEFAULT_ETHTYPE
    randomBytes: Callable[[int], bytes] = field(default=os.urandom, repr=False)

    def __post_init__(self) -> None:
        requireCryptography()
        if len(self.key) != KEY_SIZE:
            raise ValueError("agno keys are 16 bytes (AES-128)")
        self._algorithm = algorithms.AES(self.key)
        # ECB has no state between blocks: one context serves every header.
        ecb = Cipher(self._algorithm, modes.ECB())
        self._ecbEncrypt = ecb.encryptor().update
        self._ecbDecrypt = ecb.decryptor().update

    def _outerEthtype(self, frame: bytes) -> bytes:
        if self.ethtype == COPY:
            return frame[12:14]
        if self.ethtype == RAND:
            (n,) = struct.unpack(">H", self.randomBytes(2))
            return struct.pack(">H", ETHTYPE_MIN + n % (ETHTYPE_MAX - ETHTYPE_MIN + 1))
        return struct.pack(">H", self.ethtype)

    def encrypt(self, frame: bytes, now: float) -> Optional[bytes]:
        """
        The encryption of C{frame} sent at time C{now} (seconds since the
        epoch), or C{None} for a frame shorter than 14 bytes.
        """
        if len(frame) < ETH_HDRLEN:
            return None
        payload = frame[ETH_HDRLEN:]
        pad = -len(payload) % BLOCK
        header = (
            frame[12:14]
            + bytes((pad, 0))
            + MAGIC
            + struct.pack(">I", int(now) & 0xFFFFFFFF)
            + self.randomBytes(4)
        )
        body = b""
        if payload:
            cbc = Cipher(self._algorithm, modes.CBC(header)).encryptor()
            body = cbc.update(payload + bytes(pad)) + cbc.finalize()
        return frame[:12] + self._outerEthtype(frame) + self._ecbEncrypt(header) + body

    def decrypt(self, frame: bytes, now: float) -> Optional[bytes]:
        """
        The frame C{frame} encrypts, if it was made with this key and sent
        within the freshness window around C{now}; else C{None}.
        """
        if len(frame) < MIN_ENCRYPTED:
            return None
        header = self._ecbDecrypt(frame[ETH_HDRLEN:MIN_ENCRYPTED])
        if header[4:8] != MAGIC:
            return None  # another key, or not agno at all
        (sent,) = struct.unpack_from(">I", header, 8)
        if not fresh(sent, int(now) & 0xFFFFFFFF):
            return None
        length = len(frame) - MIN_ENCRYPTED - (header[2] & 0xF)
        if length < 0:
            return None
        body = frame[MIN_ENCRYPTED:]
        body = body[: len(body) // BLOCK * BLOCK]
        payload = b""
        if body:
            cbc = Cipher(self._algorithm, modes.CBC(header)).decryptor()
            payload = cbc.update(body) + cbc.finalize()
        return frame[:12] + header[:2] + payload[:length]
