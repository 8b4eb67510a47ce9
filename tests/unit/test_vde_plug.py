"""
vde_plug's command line and its IP log, without processes (the processes
are in test_interop_plug).
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from vdetwist.scripts.iplog import IpLogger
from vdetwist.registry import OpenArgs
from vdetwist.scripts.cli import UsageError
from vdetwist.scripts.vde_plug import NOT_A_SHELL, parseArgs


class ParseTests(SynchronousTestCase):
    def test_modes(self) -> None:
        """
        Zero, one and two VNLs, and the command forms with C{=}.
        """
        cases = [
            ([], [None], []),
            ([""], [""], []),
            (["/tmp/sw"], ["/tmp/sw"], []),
            (["a", "b"], ["a", "b"], []),
            (["=", "ssh"], [None], ["ssh"]),
            (["=", "ssh", "h"], [None], ["ssh", "h"]),
            (["vnl", "=", "ssh", "h", "vde_plug"], ["vnl"], ["ssh", "h", "vde_plug"]),
        ]
        for argv, vnls, command in cases:
            options = parseArgs(argv)
            self.assertEqual((options.vnls, options.command), (vnls, command), argv)

    def test_tooMany(self) -> None:
        self.assertRaises(UsageError, parseArgs, ["a", "b", "c"])

    def test_permutation(self) -> None:
        """
        As GNU getopt: options anywhere, even inside the command, unless
        C{--} ends them.
        """
        options = parseArgs(["null://", "=", "ssh", "-p", "pf", "host"])
        self.assertEqual((options.pidfile, options.command), ("pf", ["ssh", "host"]))
        options = parseArgs(["null://", "--", "=", "echo", "-n", "hi"])
        self.assertEqual(options.command, ["echo", "-n", "hi"])
        with self.assertRaises(UsageError) as caught:
            parseArgs(["null://", "=", "echo", "-n", "hi"])
        self.assertEqual(str(caught.exception), "vde_plug: invalid option -- 'n'")

    def test_openArgs(self) -> None:
        options = parseArgs(
            ["-m", "660", "-G", "kvm", "--port", "3", "--port2=4", "--mod2", "0600", "a", "b"]
        )
        self.assertEqual(
            options.args,
            [OpenArgs(port=3, mode=0o660), OpenArgs(port=4, group="kvm", mode=0o600)],
        )

    def test_abbreviations(self) -> None:
        self.assertEqual(parseArgs(["--desc", "qemu"]).description, "qemu")
        self.assertEqual(parseArgs(["--descr="]).description, "vdeplug:")
        with self.assertRaises(UsageError) as caught:
            parseArgs(["--mo", "7"])
        self.assertEqual(
            str(caught.exception),
            "vde_plug: option '--mo' is ambiguous; possibilities: '--mod' '--mod2'",
        )

    def test_badValues(self) -> None:
        for argv in (["--port", "0"], ["--port", "x"], ["-m", "9"]):
            self.assertRaises(UsageError, parseArgs, argv)

    def test_flags(self) -> None:
        options = parseArgs(["-d", "-L", "-p", "/run/x.pid"])
        self.assertEqual(
            (options.daemon, options.log, options.iplog, options.pidfile),
            (True, True, True, "/run/x.pid"),
        )

    def test_loginShell(self) -> None:
        """
        Run as a login shell, only C{-c vde_plug} is accepted.
        """
        self.assertTrue(parseArgs(["-c", "vde_plug"]).log)
        with self.assertRaises(UsageError) as caught:
            parseArgs(["-c", "ls"])
        self.assertEqual(str(caught.exception), NOT_A_SHELL.rstrip("\n"))


def ipv4(source: bytes, vlan: int | None = None) -> bytes:
    tag = b"" if vlan is None else b"\x81\x00" + struct.pack(">H", vlan)
    header = b"\x45\x00" + b"\x00" * 10 + source + b"\x0a\x00\x00\x01"
    return b"\xff" * 6 + b"\x02" * 6 + tag + b"\x08\x00" + header


class IpLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lines: list[str] = []
        self.logger = IpLogger("alice", "192.0.2.1", self.lines.append)

    def test_onceEach(self) -> None:
        self.logger.inspect(ipv4(b"\x0a\x00\x00\x05"))
        self.logger.inspect(ipv4(b"\x0a\x00\x00\x05"))
        self.logger.inspect(ipv4(b"\x0a\x00\x00\x06", vlan=7))
        self.assertEqual(
            self.lines,
            [
                "user alice Real-IP 192.0.2.1 has got VDE-IP4 10.0.0.5 on vlan 0",
                "user alice Real-IP 192.0.2.1 has got VDE-IP4 10.0.0.6 on vlan 7",
            ],
        )

    def test_ipv6(self) -> None:
        header = b"\x60" + b"\x00" * 7 + b"\xfe\x80" + b"\x00" * 13 + b"\x01" + b"\x00" * 16
        self.logger.inspect(b"\xff" * 6 + b"\x02" * 6 + b"\x86\xdd" + header)
        self.assertEqual(self.lines, ["user alice Real-IP 192.0.2.1 has got VDE-IP6 fe80::1 on vlan 0"])

    def test_ignored(self) -> None:
        """
        Options in the IPv4 header (first byte not 0x45), other protocols
        and runts are not logged, as in C.
        """
        self.logger.inspect(ipv4(b"\x01\x02\x03\x04")[:14] + b"\x46" + b"\x00" * 30)
        self.logger.inspect(b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28)
        self.logger.inspect(b"\xff" * 14)
        self.assertEqual(self.lines, [])
