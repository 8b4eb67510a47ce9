"""
The vde2 connection protocol's wire formats (L{vdetwist.vde2.protocol}),
without sockets, and the pure helpers of the client, server and backends.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from vdetwist.backends.netnode import atoi
from vdetwist.backends.vde import vdeOptions
from vdetwist.errors import VNLError
from vdetwist.registry import OpenArgs
from vdetwist.vde2 import protocol as p
from vdetwist.vde2.client import choosePort
from vdetwist.vde2.server import derivedDirmode, netnodeModes, switchModes
from vdetwist.vnl import resolve

#: The request vde_plug 4.0.1 sent in the spec's strace (149 bytes).
SPEC_HEX = (
    "cefaedfe" "03000000" "00000000" "0100"
    "2f746d702f76742f7377312f2e30383934312d3030303030"
    + "00" * (108 - 24)
    + "766465706c75673a20757365723d726f6f74207069643d38393431"
)
SPEC_PATH = b"/tmp/vt/sw1/.08941-00000"
SPEC_DESCRIPTION = b"vdeplug: user=root pid=8941"


class RequestPackingTests(SynchronousTestCase):
    def test_specExample(self) -> None:
        """
        The request matches the spec's captured bytes exactly.
        """
        request = p.packRequest(SPEC_PATH, SPEC_DESCRIPTION)
        self.assertEqual(len(request), 149)
        self.assertEqual(request, bytes.fromhex(SPEC_HEX))

    def test_strArguments(self) -> None:
        self.assertEqual(
            p.packRequest(SPEC_PATH.decode(), SPEC_DESCRIPTION.decode()),
            bytes.fromhex(SPEC_HEX),
        )

    def test_portTypes(self) -> None:
        """
        Port 40 is C{40 << 8}, port "0" (-1) is REQ_NEW_PORT0, any is 0.
        """
        self.assertEqual(p.requestType(0), 0)
        self.assertEqual(p.requestType(40), 0x2800)
        self.assertEqual(p.requestType(-1), p.REQ_NEW_PORT0)
        request = p.packRequest(b"/x", b"", 40)
        self.assertEqual(request[8:12], b"\x00\x28\x00\x00")
        self.assertEqual(p.packRequest(b"/x", b"", 3)[8:12], b"\x00\x03\x00\x00")
        self.assertEqual(p.packRequest(b"/x", b"", -1)[8:12], b"\x01\x00\x00\x00")
        self.assertRaises(ValueError, p.requestType, -2)
        self.assertRaises(ValueError, p.requestType, 1 << 24)

    def test_descriptionCut(self) -> None:
        request = p.packRequest(b"/x", b"d" * 300)
        self.assertEqual(len(request), p.MAX_REQUEST)
        self.assertEqual(len(request), 249)

    def test_pathTooLong(self) -> None:
        self.assertRaises(ValueError, p.packRequest, b"/" * 109)
        self.assertEqual(len(p.packRequest(b"/" * 108)), 122)

    def test_rawType(self) -> None:
        request = p.packRequest(b"/x", type=0x1234)
        self.assertEqual(struct.unpack_from("<I", request, 8)[0], 0x1234)


class RequestParsingTests(SynchronousTestCase):
    def test_specExample(self) -> None:
        request = p.parseRequest(bytes.fromhex(SPEC_HEX))
        self.assertEqual(
            request,
            p.Request(version=3, code=0, port=0, path=SPEC_PATH, description=SPEC_DESCRIPTION),
        )
        self.assertEqual(request.wantedPort, 0)
        self.assertFalse(request.isAbstract)

    def test_roundTrip(self) -> None:
        for port, code, number, wanted in [(0, 0, 0, 0), (3, 0, 3, 3), (-1, 1, 0, -1),
                                           (40, 0, 40, 40)]:
            request = p.parseRequest(p.packRequest(b"/a/b", b"descr", port))
            self.assertEqual((request.code, request.port, request.wantedPort),
                             (code, number, wanted))
            self.assertEqual(request.type, p.requestType(port))
            self.assertEqual(request.description, b"descr")

    def test_emptyDescription(self) -> None:
        request = p.parseRequest(p.packRequest(b"/a", b""))
        self.assertEqual(request.description, b"")

    def test_descriptionStopsAtNul(self) -> None:
        request = p.parseRequest(p.packRequest(b"/a", b"") + b"abc\0def")
        self.assertEqual(request.description, b"abc")

    def test_longDescriptionCut(self) -> None:
        request = p.parseRequest(p.packRequest(b"/a", b"") + b"x" * 200)
        self.assertEqual(request.description, b"x" * 127)

    def test_garbageAfterPathNul(self) -> None:
        """
        The path ends at its NUL, whatever follows in sun_path.
        """
        raw = bytearray(p.packRequest(b"/a/b"))
        raw[12 + 2 + 10] = 7
        self.assertEqual(p.parseRequest(bytes(raw)).path, b"/a/b")

    def test_abstract(self) -> None:
        """
        An abstract address is the full 108 bytes, as the C server
        connects to it.
        """
        name = b"\0abstract" + b"\0" * 99
        request = p.parseRequest(p.packRequest(name, b"x"))
        self.assertTrue(request.isAbstract)
        self.assertEqual(request.path, name)
        self.assertEqual(len(request.path), 108)

    def test_badMagic(self) -> None:
        data = b"\x00\x00\x00\x00" + p.packRequest(b"/a")[4:]
        e = self.assertRaises(p.BadMagic, p.parseRequest, data)
        self.assertIn("magic", str(e))
        self.assertIsInstance(e, p.ProtocolError)
        self.assertRaises(p.BadMagic, p.parseRequest, b"GET / HTTP/1.0\r\n\r\n")

    def test_short(self) -> None:
        full = p.packRequest(b"/a", b"d")
        for n in (0, 3, 4, 7, 8, 100, 121):
            self.assertRaises(p.ShortRequest, p.parseRequest, full[:n])
        p.parseRequest(full[:122])

    def test_unsupportedVersions(self) -> None:
        for version in (2, 4, 0x100):
            data = p.packRequest(b"/a", version=version)
            e = self.assertRaises(p.UnsupportedVersion, p.parseRequest, data)
            self.assertEqual(e.version, version)
            self.assertIn(f"version {version}", str(e))

    def test_badType(self) -> None:
        e = self.assertRaises(p.BadRequestType, p.parseRequest, p.packRequest(b"/a", type=2))
        self.assertEqual(e.code, 2)
        self.assertRaises(p.BadRequestType, p.parseRequest, p.packRequest(b"/a", type=0x3FF))

    def test_version1(self) -> None:
        """
        A magic followed by 0 or 1 is a version 1 request: type, MAC,
        sockaddr, description.
        """
        data = (struct.pack("<II", p.MAGIC, 1) + b"\x02\x00\x00\x00\x00\x07"
                + p.packSockaddr(b"/v1/sock") + b"old qemu")
        request = p.parseRequest(data)
        self.assertEqual(request.version, 1)
        self.assertEqual(request.code, p.REQ_NEW_PORT0)
        self.assertEqual(request.wantedPort, -1)
        self.assertEqual(request.path, b"/v1/sock")
        self.assertEqual(request.mac, b"\x02\x00\x00\x00\x00\x07")
        self.assertEqual(request.description, b"old qemu")
        self.assertRaises(p.ShortRequest, p.parseRequest, data[:123])

    def test_bytesNeeded(self) -> None:
        full = p.packRequest(b"/a", b"d")
        self.assertEqual(p.requestBytesNeeded(b""), 122)
        self.assertEqual(p.requestBytesNeeded(full[:10]), 122)
        v1 = struct.pack("<II", p.MAGIC, 0)
        self.assertEqual(p.requestBytesNeeded(v1), 124)
        # A bad magic can be judged at once.
        self.assertLessEqual(p.requestBytesNeeded(b"abcd"), 4)


class ReplyTests(SynchronousTestCase):
    def test_pack(self) -> None:
        reply = p.packReply("/tmp/sw/001.6")
        self.assertEqual(len(reply), 110)
        self.assertEqual(reply, b"\x01\x00/tmp/sw/001.6" + b"\0" * (108 - 13))

    def test_parse(self) -> None:
        self.assertEqual(p.parseReply(p.packReply(b"/tmp/sw/001.6")), b"/tmp/sw/001.6")

    def test_netnodeGarbage(self) -> None:
        """
        netnode leaves stack garbage after the path's NUL.
        """
        reply = b"\x01\x00/tmp/sw/fd6\0\0\2\0\0\0\0\0\0\0\6" + b"\0" * 80
        reply = reply[:110].ljust(110, b"\x09")
        self.assertEqual(p.parseReply(reply), b"/tmp/sw/fd6")

    def test_bad(self) -> None:
        self.assertRaises(p.BadReply, p.parseReply, b"\x01\x00/tmp")
        self.assertRaises(p.BadReply, p.parseReply, b"\x01\x00" + b"\0" * 108)


class PortChoiceTests(SynchronousTestCase):
    """
    vnl.md section 5: which portgroup socket to try and which port to ask.
    """

    def test_choices(self) -> None:
        cases = [
            ((None, 0), (None, 0)),
            (("", 0), (None, 0)),
            (("3", 0), ("3", 3)),
            (("0", 0), ("0", -1)),
            (("00", 0), ("00", -1)),
            (("lan", 0), ("lan", 0)),
            (("3a", 0), ("3a", 0)),
            (("-1", 0), ("-1", 0)),
            ((" 3", 0), (" 3", 0)),
            ((None, 5), ("5", 5)),
            ((None, -1), ("0", -1)),
            (("lan", 7), ("lan", 7)),
        ]
        for args, expected in cases:
            self.assertEqual(choosePort(*args), expected, args)

    def test_vdeOptions(self) -> None:
        def opts(text, args=OpenArgs()):
            return vdeOptions(resolve(text), args)

        self.assertEqual(opts("vde:///tmp/sw[3]"), ("/tmp/sw", "3", 0, None, 0o700, True))
        self.assertEqual(opts("/tmp/sw[port=4/mode=666/group=kvm]"),
                         ("/tmp/sw", "4", 0, "kvm", 0o666, True))
        self.assertEqual(opts("/tmp/sw[portgroup=lan]"),
                         ("/tmp/sw", "lan", 0, None, 0o700, True))
        self.assertEqual(opts("vde://", OpenArgs(port=2, group="g", mode=0o770)),
                         ("", None, 2, "g", 0o770, True))

    def test_vdeOffloadOption(self) -> None:
        """
        C{offload=off} (ours) refuses vnet frames; only with C{=}: a bare
        C{[off]} or C{[offload]} is a portgroup, as in C; a bad value says
        what to write.
        """
        def opts(text):
            return vdeOptions(resolve(text), OpenArgs())

        self.assertEqual(opts("/tmp/sw[3/offload=off]"), ("/tmp/sw", "3", 0, None, 0o700, False))
        self.assertEqual(opts("/tmp/sw[o=off]")[5], False)
        self.assertEqual(opts("/tmp/sw[offload=on]")[5], True)
        self.assertEqual(opts("/tmp/sw[off]")[1:], ("off", 0, None, 0o700, True))
        self.assertEqual(opts("/tmp/sw[offload]")[1], "offload")
        error = self.assertRaises(VNLError, opts, "/tmp/sw[offload=no]")
        self.assertIn("write offload=on or offload=off", str(error))
        error = self.assertRaises(VNLError, opts, "/tmp/sw[x=1]")
        self.assertIn("offload", str(error))


class ModeTests(SynchronousTestCase):
    def test_derived(self) -> None:
        self.assertEqual(derivedDirmode(0o600), 0o2700)
        self.assertEqual(derivedDirmode(0o666), 0o2777)
        self.assertEqual(derivedDirmode(0o660), 0o2770)
        self.assertEqual(derivedDirmode(0o640), 0o2750)

    def test_switch(self) -> None:
        self.assertEqual(switchModes(None, None), (0o600, 0o2700))
        self.assertEqual(switchModes(0o666, None), (0o666, 0o2777))
        self.assertEqual(switchModes(None, 0o2775), (0o664, 0o2775))
        self.assertEqual(switchModes(0o600, 0o755), (0o600, 0o755))

    def test_netnode(self) -> None:
        self.assertEqual(netnodeModes(None, None), (0o600, 0o2700))
        self.assertEqual(netnodeModes(0o777, None), (0o666, 0o2777))
        self.assertEqual(netnodeModes(0o660, 0o700), (0o660, 0o700))
        self.assertEqual(netnodeModes(None, 0o750), (0o600, 0o750))

    def test_atoi(self) -> None:
        self.assertEqual(atoi("42"), 42)
        self.assertEqual(atoi(" -3x"), -3)
        self.assertEqual(atoi("x"), 0)
        self.assertEqual(atoi(""), 0)
