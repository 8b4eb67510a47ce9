"""
C{agno://}: key files (with the C plugin's uppercase-A quirk), ethertype
modes, the frame format, the freshness window on an injected clock, the plug
over a nested plug, and interop with the C libvdeplug_agno on a C hub.
"""

from __future__ import annotations

import errno
import os
import pwd
import struct
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.nested_support import HubTestCase, MemoryBackend, mac, numberOf, numbers, testFrame
from tests.support import cPlug, ourPlug, until
from vdetwist.wire import agno
from vdetwist.wire.agno import (
    DEFAULT_ETHTYPE,
    AgnoCipher,
    encryptedLength,
    fresh,
    keyPath,
    parseEthtype,
    parseKey,
    readKey,
)
from vdetwist.backends.agno import AgnoBackend
from vdetwist.backends.vlan import VlanBackend
from vdetwist.errors import VdeError
from vdetwist.registry import OpenArgs, Registry, decorate
from vdetwist.testing import FrameCollector

SKIP = None if agno.available() else (
    "cryptography is not installed: pip install 'vdetwist[agno]'")

KEYTEXT = "00112233445566778899aabbccddeeff"
KEY = bytes.fromhex(KEYTEXT)
NOW = 1_700_000_000
RANDOM = b"\x01\x02\x03\x04"


def fixedRandom(n: int) -> bytes:
    return (RANDOM * n)[:n]


def reference(key: bytes, frame: bytes, sent: int, rnd: bytes, outer: bytes) -> bytes:
    """
    The encryption of C{frame}, written straight from the spec.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    payload = frame[14:]
    pad = (16 - len(payload) % 16) % 16
    header = frame[12:14] + bytes([pad, 0]) + b"agno" + struct.pack(">I", sent) + rnd
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out = frame[:12] + outer + ecb.update(header) + ecb.finalize()
    if payload:
        cbc = Cipher(algorithms.AES(key), modes.CBC(header)).encryptor()
        out += cbc.update(payload + bytes(pad)) + cbc.finalize()
    return out


def header(key: bytes, encrypted: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(key), modes.ECB()).decryptor().update(encrypted[14:30])


class KeyTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        The first 32 hex digits anywhere in the file, high nibble first.
        """
        self.assertEqual(parseKey(KEYTEXT.encode() + b"\n"), KEY)
        self.assertEqual(parseKey(b"kyz: 00-11-22-33 44.55.66.77|8899aabb ccddeeff99 junk"), KEY)
        self.assertEqual(parseKey(KEYTEXT.encode() + b"ffff"), KEY)
        self.assertEqual(parseKey(b"BCDEF"), bytes.fromhex("bcdef0") + bytes(13))
        self.assertEqual(parseKey(b"12"), b"\x12" + bytes(15))

    def test_uppercaseA(self) -> None:
        """
        Uppercase A is 1, as in the C plugin (verified): replicated so that a
        key file gives both the same key.  B-F and lowercase are right.
        """
        self.assertEqual(parseKey(b"AABBCCDDEEFF" + b"0" * 20),
                         bytes.fromhex("11bbccddeeff") + bytes(10))
        self.assertEqual(parseKey(b"aabbccddeeff" + b"0" * 20),
                         bytes.fromhex("aabbccddeeff") + bytes(10))

    def test_tooFewDigits(self) -> None:
        for text in (b"", b"x", b"1", b"zzA\n"):
            error = self.assertRaises(VdeError, parseKey, text)
            self.assertEqual(error.errno, errno.EINVAL)

    def test_paths(self) -> None:
        """
        Empty: ~/.vde_agno_key; ~REST: home + REST; absolute as is;
        anything else: EINVAL.  Home is the passwd one, not $HOME.
        """
        home = pwd.getpwuid(os.geteuid()).pw_dir
        self.patch(os, "environ", dict(os.environ, HOME="/nonexistent"))
        self.assertEqual(keyPath(""), os.path.join(home, ".vde_agno_key"))
        self.assertEqual(keyPath("~/k"), home + "/k")
        self.assertEqual(keyPath("~k"), home + "k")
        self.assertEqual(keyPath("/etc/k"), "/etc/k")
        self.assertEqual(self.assertRaises(VdeError, keyPath, "k").errno, errno.EINVAL)

    def test_read(self) -> None:
        path = os.path.abspath(self.mktemp())
        self.assertEqual(self.assertRaises(VdeError, readKey, path).errno, errno.ENOENT)
        with open(path, "w") as f:
            f.write("A\n")
        error = self.assertRaises(VdeError, readKey, path)
        self.assertEqual(error.errno, errno.EINVAL)
        self.assertIn(path, str(error))
        with open(path, "w") as f:
            f.write(KEYTEXT + "\n")
        self.assertEqual(readKey(path), KEY)


class EthtypeTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        As checked against the C plugin: C{strtoul} base 0, trailing text
        ignored, 0 is the default.
        """
        cases = {
            None: DEFAULT_ETHTYPE, "": DEFAULT_ETHTYPE, "0": DEFAULT_ETHTYPE,
            "0x0": DEFAULT_ETHTYPE, "00": DEFAULT_ETHTYPE, "0x": DEFAULT_ETHTYPE,
            "1536": 0x600, "1536abc": 0x600, "0x600": 0x600, " 1536": 0x600,
            "+1536": 0x600, "0xfffe": 0xFFFE, "0177776": 0xFFFE,
            "copy": "copy", "rand": "rand", "ipv4": 0x0800, "ipv6": 0x86DD,
        }
        for text, expected in cases.items():
            self.assertEqual(parseEthtype(text), expected, text)

    def test_invalid(self) -> None:
        for text in ("0x5ff", "0xffff", "0177777", "-1", "Copy", "abc", "x", "  ",
                     "99999999999999999999", "0x10600", "IPV4"):
            error = self.assertRaises(VdeError, parseEthtype, text)
            self.assertEqual(error.errno, errno.EINVAL, text)


class CipherTests(SynchronousTestCase):
    skip = SKIP

    def cipher(self, ethtype=DEFAULT_ETHTYPE, key=KEY) -> AgnoCipher:
        return AgnoCipher(key, ethtype, fixedRandom)

    def test_format(self) -> None:
        """
        Byte-exact with the spec: MACs in clear, outer ethertype, ECB header,
        CBC payload padded to 16; length 30 + roundup16(L - 14).
        """
        cipher = self.cipher()
        for size in (14, 15, 20, 29, 30, 31, 45, 46, 64, 1514, 9234):
            frame = testFrame(1, size, size=max(size, 20))[:size]
            encrypted = cipher.encrypt(frame, NOW + 0.9)
            self.assertEqual(
                encrypted, reference(KEY, frame, NOW, RANDOM, b"\xa6\xde"), size)
            self.assertEqual(len(encrypted), encryptedLength(size))
            self.assertEqual(len(encrypted), 30 + -(-(size - 14) // 16) * 16)
            self.assertEqual(cipher.decrypt(encrypted, NOW), frame)
        self.assertEqual(encryptedLength(14), 30)
        self.assertIsNone(cipher.encrypt(b"x" * 13, NOW))

    def test_header(self) -> None:
        encrypted = self.cipher().encrypt(testFrame(1, 7, size=21), NOW)
        self.assertEqual(header(KEY, encrypted),
                         b"\x88\xb5\x09\x00agno" + struct.pack(">I", NOW) + RANDOM)

    def test_freshness(self) -> None:
        """
        Accepted when sent in [now - 2, now + 1].
        """
        cipher = self.cipher()
        frame = testFrame(1, 1)
        encrypted = cipher.encrypt(frame, NOW)
        accepted = [d for d in range(-5, 6) if cipher.decrypt(encrypted, NOW + d)]
        self.assertEqual(accepted, [-1, 0, 1, 2])
        self.assertTrue(fresh(0xFFFFFFFF, 1))  # 32-bit wrap-around
        self.assertFalse(fresh(5, 1))

    def test_wrongKeyAndGarbage(self) -> None:
        encrypted = self.cipher().encrypt(testFrame(1, 1), NOW)
        self.assertIsNone(self.cipher(key=b"\x01" * 16).decrypt(encrypted, NOW))
        self.assertIsNone(self.cipher().decrypt(encrypted[:29], NOW))
        self.assertIsNone(self.cipher().decrypt(testFrame(1, 1, size=100), NOW))

    def test_truncatedCiphertext(self) -> None:
        """
        A frame cut short (not whole blocks) gives what can be decrypted.
        """
        frame = testFrame(1, 1, size=100)
        encrypted = self.cipher().encrypt(frame, NOW)
        self.assertEqual(self.cipher().decrypt(encrypted[:-20], NOW), frame[:14 + 64])

    def test_ethtypeModes(self) -> None:
        frame = testFrame(1, 1)
        for ethtype, outer in [(DEFAULT_ETHTYPE, b"\xa6\xde"), ("copy", b"\x88\xb5"),
                               (0x0800, b"\x08\x00"), (0x86DD, b"\x86\xdd"),
                               (0x1234, b"\x12\x34")]:
            encrypted = self.cipher(ethtype).encrypt(frame, NOW)
            self.assertEqual(encrypted[12:14], outer)
            self.assertEqual(self.cipher().decrypt(encrypted, NOW), frame)

    def test_randomEthtype(self) -> None:
        """
        C{rand}: drawn per frame from [0x600, 0xfffe].
        """
        values = iter([RANDOM, b"\x00\x00", RANDOM, b"\xff\xff", RANDOM, b"\xf9\xfe"])
        cipher = AgnoCipher(KEY, "rand", lambda n: next(values))
        outers = [struct.unpack(">H", cipher.encrypt(testFrame(1, 1), NOW)[12:14])[0]
                  for _ in range(3)]
        self.assertEqual(outers, [0x600, 0x600 + 0xFFFF % 0xF9FF, 0x600 + 0xF9FE])
        cipher = AgnoCipher(KEY, "rand")
        outers = {cipher.encrypt(testFrame(1, 1), NOW)[12:14] for _ in range(50)}
        self.assertGreater(len(outers), 40)
        for outer in outers:
            self.assertTrue(0x600 <= struct.unpack(">H", outer)[0] <= 0xFFFE)


class PlugTests(SynchronousTestCase):
    skip = SKIP

    def setUp(self) -> None:
        self.memory = MemoryBackend()
        self.registry = Registry([AgnoBackend(), VlanBackend(), self.memory])
        self.clock = Clock()
        self.clock.advance(NOW)
        self.keyfile = os.path.abspath(self.mktemp())
        with open(self.keyfile, "w") as f:
            f.write(KEYTEXT + "\n")

    def open(self, vnl: str, description: str = "test", args: OpenArgs = OpenArgs()):
        plug = self.successResultOf(self.registry.open(self.clock, vnl, description, args))
        self.addCleanup(plug.close)
        return plug

    def test_plug(self) -> None:
        """
        Sent frames are encrypted with the reactor's time, received ones
        decrypted and checked against it; the nested VNL is opened through
        the same registry with the same description and args.
        """
        args = OpenArgs(port=3)
        plug = self.open(f"agno://{self.keyfile}[ethtype=ipv4]{{mem://x}}", "vm", args)
        [(nested, description, nestedArgs, registry)] = self.memory.calls
        self.assertEqual((nested.text, description), ("mem://x", decorate("vm")))
        self.assertIs(nestedArgs, args)
        self.assertIs(registry, self.registry)
        far = self.memory.far[0]
        wire, user = FrameCollector(), FrameCollector()
        far.startReceiving(wire)
        plug.startReceiving(user)
        cipher = AgnoCipher(KEY)
        frame = testFrame(1, 1)
        plug.send(frame)
        plug.send(b"short")
        [encrypted] = wire.frames
        self.assertEqual(encrypted[12:14], b"\x08\x00")
        self.assertEqual(header(KEY, encrypted)[8:12], struct.pack(">I", NOW))
        self.assertEqual(cipher.decrypt(encrypted, NOW), frame)
        # Received: fresh, stale (3 s), future (2 s), wrong key.
        far.send(cipher.encrypt(testFrame(2, 2), NOW))
        far.send(cipher.encrypt(testFrame(2, 3), NOW - 3))
        far.send(cipher.encrypt(testFrame(2, 4), NOW + 2))
        far.send(AgnoCipher(b"k" * 16).encrypt(testFrame(2, 5), NOW))
        self.clock.advance(2)
        far.send(cipher.encrypt(testFrame(2, 6), NOW))
        self.assertEqual([numberOf(f) for f in user.frames], [2, 6])
        self.assertEqual((plug.stats.sent, plug.stats.dropped, plug.stats.received), (1, 1, 2))

    def test_defaultNetworkAndNesting(self) -> None:
        """
        Without C{{...}}: the default network; agno nests in vlan and back.
        """
        home = self.mktemp()
        os.mkdir(home)
        self.patch(os, "environ", dict(os.environ, HOME=home))
        self.open(f"agno://{self.keyfile}")
        self.assertEqual(self.memory.calls[0][0].text, "")
        plug = self.open(f"vlan://3{{agno://{self.keyfile}{{mem://}}}}")
        far = self.memory.far[1]
        wire = FrameCollector()
        far.startReceiving(wire)
        plug.send(testFrame(1, 1))
        tagged = testFrame(1, 1, vlan=3)
        self.assertEqual(AgnoCipher(KEY).decrypt(wire.frames[0], NOW), tagged)

    def test_errors(self) -> None:
        """
        Bad options and key files fail the open, naming the VNL.
        """
        for vnl, code in [(f"agno://{self.keyfile}[ethtype=x]{{mem://}}", errno.EINVAL),
                          (f"agno://{self.keyfile}[e=1/x=2]{{mem://}}", errno.EINVAL),
                          ("agno:///nonexistent/key{mem://}", errno.ENOENT),
                          ("agno://relative{mem://}", errno.EINVAL)]:
            failure = self.failureResultOf(self.registry.open(self.clock, vnl))
            failure.trap(VdeError)
            self.assertEqual(failure.value.errno, code, vnl)
            self.assertIn(vnl, str(failure.value))
        self.assertEqual(self.memory.calls, [])

    def test_noCryptography(self) -> None:
        """
        Without the cryptography package, opening says how to install it.
        """
        self.patch(agno, "_HAVE_CRYPTOGRAPHY", False)
        failure = self.failureResultOf(
            self.registry.open(self.clock, f"agno://{self.keyfile}{{mem://}}"))
        failure.trap(VdeError)
        self.assertIn("pip install 'vdetwist[agno]'", str(failure.value))
        self.assertEqual(self.memory.calls, [])


class InteropTests(HubTestCase):
    """
    The C libvdeplug_agno and ours as C{vde_plug} processes on a C hub with
    the same key file: an observer decrypts what both send, both decrypt
    what the other and the observer send, and both apply the same
    freshness window.
    """

    skip = SKIP
    timeout = 30

    async def exchange(self, keytext: str, options: str, key: bytes, outer,
                       notKey: bytes | None = None) -> None:
        await self.startHub()
        keyfile = self.path("key")
        with open(keyfile, "w") as f:
            f.write(keytext)
        vnl = f"agno://{keyfile}{options}{{vde://{self.hubDir}}}"
        c = cPlug(self, f"C vde_plug {vnl}", vnl)
        ours = ourPlug(self, f"our vde_plug {vnl}", vnl)
        procs = [c, ours]
        cipher = AgnoCipher(key)

        await self.probeUntilUp(procs, lambda: cipher.encrypt(testFrame(9, 0), time.time()))

        # (vde_switch truncates frames to 1518 bytes: 1488 encrypts to 1518.)
        sizes = [20, 29, 30, 31, 64, 1000, 1488]
        sent = {src: [testFrame(src, n, size=size) for n, size in enumerate(sizes, 1)]
                for src in (1, 2)}
        c.send(*sent[1])
        ours.send(*sent[2])
        await until(lambda: len(self.seenFrom(1)) == len(sizes) == len(self.seenFrom(2)),
                    "the encrypted frames on the wire", procs=procs)
        for src in (1, 2):
            for frame, encrypted in zip(sent[src], self.seenFrom(src)):
                self.assertEqual(len(encrypted), encryptedLength(len(frame)))
                self.assertEqual(encrypted[12:14], outer(frame))
                self.assertEqual(cipher.decrypt(encrypted, time.time()), frame)
                if notKey is not None:
                    self.assertIsNone(AgnoCipher(notKey).decrypt(encrypted, time.time()))
        # Each decrypted the other's.
        await until(lambda: numbers(ours, 1)[-1:] == [len(sizes)] and
                    numbers(c, 2)[-1:] == [len(sizes)], "the plugs to hear each other",
                    procs=procs)
        self.assertEqual([f for f in ours.frames if f[6:12] == mac(1)], sent[1])
        self.assertEqual([f for f in c.frames if f[6:12] == mac(2)], sent[2])

        # Frames made here: fresh, 3 s old, 5 s ahead (dropped), 1 s ahead
        # (accepted), wrong key (dropped), fresh.
        now = int(time.time())
        other = AgnoCipher(b"\x5a" * 16)
        for frame in [cipher.encrypt(testFrame(9, 101, size=100), now),
                      cipher.encrypt(testFrame(9, 102), now - 3),
                      cipher.encrypt(testFrame(9, 103), now + 5),
                      cipher.encrypt(testFrame(9, 104), now + 1),
                      other.encrypt(testFrame(9, 105), now),
                      cipher.encrypt(testFrame(9, 106, size=18), now)]:
            self.observer.send(frame)
        await until(lambda: numbers(ours, 9)[-1:] == [106] and numbers(c, 9)[-1:] == [106],
                    "the observer's frames", procs=procs)
        for proc in procs:
            got = [f for f in proc.frames if f[6:12] == mac(9) and numberOf(f) != 0]
            self.assertEqual(got, [testFrame(9, 101, size=100), testFrame(9, 104),
                                   testFrame(9, 106, size=18)], proc.name)

    def test_exchange(self) -> None:
        return self.exchange(KEYTEXT + "\n", "", KEY, lambda frame: b"\xa6\xde")

    def test_uppercaseKeyAndCopiedEthertype(self) -> None:
        """
        A key file with uppercase A: both read A as 1 (the C quirk), so the
        key is 11bb... and not aabb....
        """
        key = parseKey(b"AABBCCDDEEFF00112233445566778899")
        self.assertEqual(key[:2], b"\x11\xbb")
        return self.exchange("AABBCCDDEEFF00112233445566778899\n", "[ethtype=copy]", key,
                             lambda frame: frame[12:14],
                             notKey=bytes.fromhex("AABBCCDDEEFF00112233445566778899"))
