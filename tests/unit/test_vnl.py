"""
Tests for L{vdetwist.vnl}: the examples of the VNL spec, the lexer's edge
cases, properties checked with hypothesis, and a differential test against
the parsers of the installed C library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import random
import unittest
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vdetwist.backends.agno import AGNO_OPTIONS
from vdetwist.backends.netnode import NETNODE_OPTIONS
from vdetwist.backends.vde import VDE_OPTIONS
from vdetwist.backends.vlan import VLAN_OPTIONS
from vdetwist.backends.vxlan import VXLAN_OPTIONS
from vdetwist.backends.vxvde import VXVDE_OPTIONS
from vdetwist.errors import VNLError
from vdetwist.slirp.config import SLIRP_OPTIONS
from vdetwist.vnl import (
    VNL,
    cutAtLast,
    parseOctal,
    parsePath,
    parseSlash,
    resolve,
    splitNested,
    strtol,
    tokenize,
)

ALL_TABLES = (
    VDE_OPTIONS,
    NETNODE_OPTIONS,
    AGNO_OPTIONS,
    VXVDE_OPTIONS,
    VXLAN_OPTIONS,
    VLAN_OPTIONS,
    SLIRP_OPTIONS,
)


class PathGrammarTests(SynchronousTestCase):
    """
    L{parsePath} on the spec's examples.
    """

    def assertPath(
        self,
        argument: str,
        path: str,
        options: dict[str, str],
        table: Sequence[str] = VDE_OPTIONS,
    ) -> None:
        self.assertEqual(parsePath(argument, table), (path, options))

    def test_vdeTable(self) -> None:
        """
        The vde table takes a positional port or portgroup, and full or
        abbreviated option names.
        """
        for argument, path, options in [
            ("/tmp/sw", "/tmp/sw", {}),
            ("/tmp/sw[3]", "/tmp/sw", {"": "3"}),
            ("/tmp/sw[port=3]", "/tmp/sw", {"port": "3"}),
            ("/tmp/sw[p=3]", "/tmp/sw", {"port": "3"}),
            ("/tmp/sw[portg=lan]", "/tmp/sw", {"portgroup": "lan"}),
            (
                "/tmp/sw[lan/mode=0666/g=kvm]",
                "/tmp/sw",
                {"": "lan", "mode": "0666", "group": "kvm"},
            ),
            ("/tmp/sw[3]junk", "/tmp/sw", {"": "3"}),
            ("/tmp/my%20sw[3]", "/tmp/my sw", {"": "3"}),
            ("'/tmp/a[b]'[4]", "/tmp/a[b]", {"": "4"}),
            ("/tmp/a\\[b[5]", "/tmp/a[b", {"": "5"}),
            ('/tmp/sw["a]b"]', "/tmp/sw", {"": "a]b"}),
            ("/tmp/sw[a][b]", "/tmp/sw", {"": "a][b"}),
            ("/tmp/sw[%41%4a%4G%%41]", "/tmp/sw", {"": "AJ%4G%A"}),
            ("/tmp/sw[=5/3]", "/tmp/sw", {"": "3"}),
            ("/tmp/sw[mode]", "/tmp/sw", {"mode": ""}),
            ("[7]", "", {"": "7"}),
            ("", "", {}),
        ]:
            self.assertPath(argument, path, options)

    def test_netnodeTable(self) -> None:
        """
        The hub/switch table has no positional entry; C{d} and C{h} are the
        first entries they prefix.
        """
        for vnl, path, options in [
            (
                "switch:///tmp/sw[mode=0666/hashsize=1024]",
                "/tmp/sw",
                {"mode": "0666", "hashsize": "1024"},
            ),
            ("hub://[m=0660]", "", {"mode": "0660"}),
            ("switch:///tmp/sw[d=2770]", "/tmp/sw", {"dirmode": "2770"}),
            ("switch:///tmp/sw[h=64]", "/tmp/sw", {"hashsize": "64"}),
        ]:
            self.assertEqual(
                resolve(vnl).parsePath(NETNODE_OPTIONS), (path, options)
            )

    def test_netnodeNoPositional(self) -> None:
        """
        A bare element is an unknown key when the table has no C{""} entry.
        """
        vnl = resolve("switch:///tmp/sw[3]")
        exc = self.assertRaises(VNLError, vnl.parsePath, NETNODE_OPTIONS)
        self.assertEqual(exc.part, "3")

    def test_unknownKey(self) -> None:
        """
        A key with C{=} is an error even when the table has a positional
        entry.
        """
        self.assertRaises(VNLError, parsePath, "/tmp/sw[x=1]", VDE_OPTIONS)

    def test_lastPositionalWins(self) -> None:
        """
        Of several bare elements the last one is the positional value, and
        an empty element is skipped.
        """
        self.assertPath("/s[a//b/]", "/s", {"": "b"})

    def test_bareOptionNameIsNotPositional(self) -> None:
        """
        A bare element that prefixes an option name sets that option to
        C{""} rather than being the positional value.
        """
        self.assertPath("/s[lan/p]", "/s", {"": "lan", "port": ""})

    def test_quotedEqualsSeparates(self) -> None:
        """
        The C{=} is looked for after unquoting, so a quoted or encoded one
        still separates key and value.
        """
        self.assertPath("/s['p=3']", "/s", {"port": "3"})
        self.assertPath("/s[p%3d3]", "/s", {"port": "3"})

    def test_unterminatedBlock(self) -> None:
        """
        Without a closing C{]} the options run to the end.
        """
        self.assertPath("/s[3/m=1", "/s", {"": "3", "mode": "1"})

    def test_agno(self) -> None:
        """
        agno's prefix is a key file with an C{ethtype} option.
        """
        prefix, nested = resolve(
            "agno:///tmp/key[ethtype=copy]{vde:///tmp/sw}"
        ).splitNested()
        self.assertEqual(nested, "vde:///tmp/sw")
        self.assertEqual(
            parsePath(prefix, AGNO_OPTIONS), ("/tmp/key", {"ethtype": "copy"})
        )


class SlashGrammarTests(SynchronousTestCase):
    """
    L{parseSlash} on the spec's examples.
    """

    def test_examples(self) -> None:
        """
        The first token is the address, the others are options.
        """
        for vnl, table, address, options in [
            ("vxvde://", VXVDE_OPTIONS, "", {}),
            (
                "vxvde://239.1.2.3/port=5000/vni=42",
                VXVDE_OPTIONS,
                "239.1.2.3",
                {"port": "5000", "vni": "42"},
            ),
            (
                "vxvde://ff15::3/port=12345/vni=42",
                VXVDE_OPTIONS,
                "ff15::3",
                {"port": "12345", "vni": "42"},
            ),
            ("vxvde:///v6", VXVDE_OPTIONS, "", {"v6": ""}),
            ("vxvde:///v=7", VXVDE_OPTIONS, "", {"vni": "7"}),
            ("vxvde:///v", VXVDE_OPTIONS, "", {"vni": ""}),
            ("vxvde:///p=1/t=3", VXVDE_OPTIONS, "", {"port": "1", "ttl": "3"}),
            ("vxvde://a%2fb/port=1", VXVDE_OPTIONS, "a/b", {"port": "1"}),
            ("vxlan:///v=7/t=2", VXLAN_OPTIONS, "", {"vni": "7", "ttl": "2"}),
            (
                "slirp:///addr=10.1.2.3%2f16",
                SLIRP_OPTIONS,
                "",
                {"addr": "10.1.2.3/16"},
            ),
            (
                "slirp:///addr='10.1.2.3/16'",
                SLIRP_OPTIONS,
                "",
                {"addr": "10.1.2.3/16"},
            ),
            ("slirp:///h=1.2.3.4", SLIRP_OPTIONS, "", {"host": "1.2.3.4"}),
            ("slirp:///t=x", SLIRP_OPTIONS, "", {"tftp_server_name": "x"}),
            ("slirp:///verb", SLIRP_OPTIONS, "", {"verbose": ""}),
            (
                "slirp:///tcpfwd=8080:10.0.2.15:80"
                '/cmdfwd=6000:"socat STDIO UNIX:/tmp/x"',
                SLIRP_OPTIONS,
                "",
                {
                    "tcpfwd": "8080:10.0.2.15:80",
                    "cmdfwd": "6000:socat STDIO UNIX:/tmp/x",
                },
            ),
        ]:
            self.assertEqual(
                resolve(vnl).parseSlash(table), (address, options)
            )

    def test_unknownKeys(self) -> None:
        """
        An unprotected C{/} inside a value starts an unknown option.
        """
        for vnl, table, key in [
            ("vxvde:///x=1", VXVDE_OPTIONS, "x"),
            ("slirp:///addr=10.1.2.3/16", SLIRP_OPTIONS, "16"),
        ]:
            exc = self.assertRaises(VNLError, resolve(vnl).parseSlash, table)
            self.assertEqual(exc.part, key)

    def test_noPositional(self) -> None:
        """
        The slash grammar has no positional value, even with a C{""} entry.
        """
        self.assertRaises(VNLError, parseSlash, "a/3", VDE_OPTIONS)

    def test_laterOccurrenceOverwrites(self) -> None:
        """
        The last occurrence of an option wins, whatever it is spelled.
        """
        self.assertEqual(
            parseSlash("/vn=3/vni=4", VXVDE_OPTIONS), ("", {"vni": "4"})
        )

    def test_vlanPrefixes(self) -> None:
        """
        In the vlan table C{u} and C{t} are themselves entries, so longer
        abbreviations are needed for C{untag} and C{tag}.
        """
        self.assertEqual(
            parseSlash("3/u=1/un=2/t=3/ta=4/tr/q", VLAN_OPTIONS),
            (
                "3",
                {
                    "u": "1",
                    "untag": "2",
                    "t": "3",
                    "tag": "4",
                    "trunk": "",
                    "q": "",
                },
            ),
        )


class NestedTests(SynchronousTestCase):
    """
    L{splitNested} on the spec's examples.
    """

    def test_examples(self) -> None:
        """
        The first unquoted C{{} splits, the last unquoted C{}} ends the nested
        VNL, which keeps its quotes.
        """
        for vnl, prefix, nested in [
            ("vlan://3{vde:///tmp/sw}", "3", "vde:///tmp/sw"),
            (
                "vlan://3/untag=4/tag=10:11-12/trunk{vde:///tmp/sw}",
                "3/untag=4/tag=10:11-12/trunk",
                "vde:///tmp/sw",
            ),
            (
                "vlan://3[untag=4/tag=10]{vde:///tmp/sw}",
                "3[untag=4/tag=10]",
                "vde:///tmp/sw",
            ),
            (
                "vlan://4{vlan://5/qinq{vxvde://234.1.2.3}}",
                "4",
                "vlan://5/qinq{vxvde://234.1.2.3}",
            ),
            ("vlan://3", "3", None),
            (
                "vlan://3{cmd://'ssh h vde_plug'}",
                "3",
                "cmd://'ssh h vde_plug'",
            ),
            ("agno://{vde:///tmp/sw}", "", "vde:///tmp/sw"),
            (
                "agno:///tmp/key[ethtype=copy]{vde:///tmp/sw}",
                "/tmp/key[ethtype=copy]",
                "vde:///tmp/sw",
            ),
            ("agno://~/k{vxvde://}", "~/k", "vxvde://"),
            ("vlan://3{vde://x}junk", "3", "vde://x"),
            ("vlan://3{vde://x", "3", "vde://x"),
            ("vlan://", "", None),
        ]:
            self.assertEqual(resolve(vnl).splitNested(), (prefix, nested))

    def test_bracketFormIsNotSpecial(self) -> None:
        """
        Brackets mean nothing to the slash grammar vlan uses: the man page's
        C{3[untag=4/tag=10]} sets no C{untag} and a C{tag} of C{10]}.
        """
        prefix, _ = splitNested("3[untag=4/tag=10]{vde:///tmp/sw}")
        self.assertEqual(
            parseSlash(prefix, VLAN_OPTIONS), ("3[untag=4", {"tag": "10]"})
        )

    def test_protectedBraceQuirk(self) -> None:
        """
        Like C, each quoted or escaped C{{} before the split shortens the
        prefix by one byte; by one less when nothing splits.
        """
        self.assertEqual(splitNested("a'{'b{c}"), ("a'{'", "c"))
        self.assertEqual(splitNested("a\\{b\\{c"), ("a\\{b\\{", None))
        self.assertEqual(splitNested("a\\{b"), ("a\\{b", None))


class _LibcStrtol:
    """
    The C library's C{strtol} and C{strtoul} with base 0, through ctypes.
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None)
        self._functions = {False: libc.strtol, True: libc.strtoul}
        self._functions[False].restype = ctypes.c_long
        self._functions[True].restype = ctypes.c_ulong
        for function in self._functions.values():
            function.argtypes = [
                ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
            ]

    def __call__(self, text: str, unsigned: bool) -> tuple[int, int]:
        buffer = ctypes.create_string_buffer(text.encode("ascii"))
        end = ctypes.c_char_p()
        value = self._functions[unsigned](buffer, ctypes.byref(end), 0)
        stop = ctypes.cast(end, ctypes.c_void_p).value or 0
        return value, stop - ctypes.addressof(buffer)


class StrtolTests(SynchronousTestCase):
    """
    L{strtol} reads numbers as C's C{strtol}/C{strtoul} with base 0, which
    the C plugins use for VLAN numbers, periods, descriptors and ethertypes.
    """

    CASES = {
        "3": (3, 1), "0x10": (16, 4), "0X1f": (31, 4), "010": (8, 3),
        "08": (0, 1), "0": (0, 1), "0x": (0, 1), "0xg": (0, 1), "  -0x1fz": (-31, 7),
        "+7": (7, 2), "-": (0, 0), "+-1": (0, 0), " 7x": (7, 2), "\t\n12 ": (12, 4),
        "": (0, 0), "z": (0, 0), "-1": (-1, 2), "1e3": (1, 1), "12-3": (12, 2),
        "99999999999999999999": ((1 << 63) - 1, 20),
        "-99999999999999999999": (-(1 << 63), 21),
        "0x8000000000000000": ((1 << 63) - 1, 18),
    }

    def test_examples(self) -> None:
        """
        Hexadecimal, octal, signs, white space, trailing text and overflow.
        """
        for text, expected in self.CASES.items():
            self.assertEqual(strtol(text), expected, repr(text))

    def test_unsigned(self) -> None:
        """
        C{strtoul} wraps negative numbers and clamps overflow to C{ULONG_MAX}.
        """
        self.assertEqual(strtol("-1", unsigned=True), ((1 << 64) - 1, 2))
        self.assertEqual(strtol("0xffffffffffffffff", unsigned=True), ((1 << 64) - 1, 18))
        self.assertEqual(strtol("0x10000000000000000", unsigned=True), ((1 << 64) - 1, 19))
        self.assertEqual(strtol("-99999999999999999999", unsigned=True), ((1 << 64) - 1, 21))
        self.assertEqual(strtol(" 0x600zz", unsigned=True), (0x600, 6))

    def test_againstLibc(self) -> None:
        """
        The examples give what the machine's C library gives.
        """
        libc = _LibcStrtol()
        for text in self.CASES:
            for unsigned in (False, True):
                self.assertEqual(strtol(text, unsigned), libc(text, unsigned), repr(text))

    @settings(max_examples=500, deadline=None)
    @given(
        text=st.text(alphabet=" \t+-0123456789abcdefxXg", max_size=24),
        unsigned=st.booleans(),
    )
    def test_randomAgainstLibc(self, text: str, unsigned: bool) -> None:
        """
        Random strings of signs, digits and letters: the same value and end
        as the C library's.
        """
        self.assertEqual(strtol(text, unsigned), _LibcStrtol()(text, unsigned))


class ResolveTests(SynchronousTestCase):
    """
    L{resolve}: the scheme split, the default network and indirection files.
    """

    def write(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def makeHome(self) -> dict[str, str]:
        """
        A temporary home directory with C{.vdeplug} and C{.vde2} in it, and
        an environment naming it.
        """
        home = self.mktemp()
        for subdir in (".vdeplug", ".vde2"):
            os.makedirs(os.path.join(home, subdir))
        return {"HOME": home}

    def test_schemeSplit(self) -> None:
        """
        The first C{://} anywhere splits module name and argument.
        """
        for text, scheme, argument in [
            ("tap://vde://x", "tap", "vde://x"),
            ("/tmp/a://b", "/tmp/a", "b"),
            ("://x", "", "x"),
            ("vde://", "vde", ""),
        ]:
            self.assertEqual(resolve(text), VNL(scheme, argument, text))

    def test_directory(self) -> None:
        """
        A path that is not a regular file is a C{vde://} switch path.
        """
        path = self.mktemp()
        os.mkdir(path)
        self.assertEqual(resolve(path), VNL("vde", path, path))
        missing = self.mktemp()
        self.assertEqual(resolve(missing), VNL("vde", missing, missing))

    def test_indirection(self) -> None:
        """
        A regular file is replaced by its first line without the newline.
        """
        path = self.write(b"vxvde://239.5.5.5/port=4444\nignored://\n")
        self.assertEqual(
            resolve(path), VNL("vxvde", "239.5.5.5/port=4444", path)
        )

    def test_indirectionDropsLastByte(self) -> None:
        """
        Like C, the last byte is dropped even when it is not a newline.
        """
        path = self.write(b"null://")
        self.assertEqual(resolve(path), VNL("vde", "null:/", path))

    def test_indirectionThroughSymlink(self) -> None:
        """
        The file is found through symlinks.
        """
        link = self.mktemp()
        os.symlink(os.path.abspath(self.write(b"null://\n")), link)
        self.assertEqual(resolve(link), VNL("null", "", link))

    def test_indirectionOnce(self) -> None:
        """
        The file's content is not itself looked up as a file.
        """
        inner = os.path.abspath(self.write(b"null://\n"))
        outer = self.write(inner.encode() + b"\n")
        self.assertEqual(resolve(outer), VNL("vde", inner, outer))

    def test_emptyFile(self) -> None:
        """
        An empty file leaves the path as it is.
        """
        path = self.write(b"")
        self.assertEqual(resolve(path), VNL("vde", path, path))

    def test_longLine(self) -> None:
        """
        At most 4095 bytes of the line are read, then the last is dropped.
        """
        path = self.write(b"null://" + b"x" * 5000 + b"\n")
        self.assertEqual(resolve(path), VNL("null", "x" * (4095 - 8), path))

    def test_nulInLine(self) -> None:
        """
        The line ends at a NUL, and loses the byte before it.
        """
        path = self.write(b"null://ab\0cd\n")
        self.assertEqual(resolve(path), VNL("null", "a", path))

    def test_binaryLine(self) -> None:
        """
        Bytes that are not UTF-8 survive as surrogate escapes.
        """
        path = self.write(b"null://\xff\n")
        self.assertEqual(resolve(path).argument, os.fsdecode(b"\xff"))

    def test_defaultVdeplug(self) -> None:
        """
        The empty VNL is C{~/.vdeplug/default}, looked up as an indirection
        file.
        """
        environ = self.makeHome()
        with open(os.path.join(environ["HOME"], ".vdeplug/default"), "w") as f:
            f.write("null://\n")
        self.assertEqual(resolve("", environ), VNL("null", "", ""))
        self.assertEqual(resolve(None, environ), VNL("null", "", ""))

    def test_defaultOrder(self) -> None:
        """
        C{~/.vdeplug/default} wins over C{~/.vde2/default.switch}, which is
        used when the first is absent; a dangling symlink exists.
        """
        environ = self.makeHome()
        home = environ["HOME"]
        vde2 = f"{home}/.vde2/default.switch"
        os.mkdir(vde2)
        self.assertEqual(resolve("", environ), VNL("vde", vde2, ""))
        vdeplug = f"{home}/.vdeplug/default"
        os.symlink(os.path.join(home, "nowhere"), vdeplug)
        self.assertEqual(resolve("", environ), VNL("vde", vdeplug, ""))

    def test_noDefault(self) -> None:
        """
        Without a default entry, or without C{HOME}, the empty VNL stays
        empty: C{vde://}'s fallback switch directories.
        """
        self.assertEqual(resolve("", self.makeHome()), VNL("vde", "", ""))
        self.assertEqual(resolve("", {}), VNL("vde", "", ""))

    def test_onlyEmptyUsesDefault(self) -> None:
        """
        The default lookup is for the empty VNL only.
        """
        environ = self.makeHome()
        os.mkdir(f"{environ['HOME']}/.vdeplug/default")
        self.assertEqual(resolve("vde://", environ), VNL("vde", "", "vde://"))

    def test_environDefault(self) -> None:
        """
        Without an C{environ}, C{os.environ} supplies C{HOME}.
        """
        environ = self.makeHome()
        with open(f"{environ['HOME']}/.vdeplug/default", "w") as f:
            f.write("null://\n")
        self.patch(os, "environ", environ)
        self.assertEqual(resolve(None), VNL("null", "", ""))

    def test_nul(self) -> None:
        """
        A VNL ends at a NUL, as a C string would.
        """
        text = "null://x\0tap://y"
        self.assertEqual(resolve(text), VNL("null", "x", text))

    def test_methodsNameTheText(self) -> None:
        """
        L{VNL}'s parse methods name the text the user gave in errors.
        """
        exc = self.assertRaises(
            VNLError, resolve("vde:///tmp/sw[x=1]").parsePath, VDE_OPTIONS
        )
        self.assertEqual(exc.vnl, "vde:///tmp/sw[x=1]")
        exc = self.assertRaises(
            VNLError, resolve("vxvde:///x=1").parseSlash, VXVDE_OPTIONS
        )
        self.assertEqual(exc.vnl, "vxvde:///x=1")


class TokenizeTests(SynchronousTestCase):
    """
    The lexer's quoting, escaping and C{%XX} rules.
    """

    def test_percent(self) -> None:
        """
        C{%XX} with two hex digits is one byte, never re-interpreted; any
        other C{%} is literal.
        """
        for text, token in [
            ("%2f", "/"),
            ("%2F", "/"),
            ("%20", " "),
            ("%41%4a", "AJ"),
            ("%%41", "%A"),
            ("%4G", "%4G"),
            ("%4", "%4"),
            ("%", "%"),
            ("%27", "'"),
            ("%5c", "\\"),
            ("%2541", "%41"),
            ("%ff", os.fsdecode(b"\xff")),
        ]:
            self.assertEqual(tokenize(text, "/"), [token])
        self.assertEqual(tokenize("a%2fb/c", "/"), ["a/b", "c"])

    def test_percentNotDecoded(self) -> None:
        """
        Inside quotes, after a backslash, or split by a quote, C{%XX} stays.
        """
        for text, token in [
            ("'%41'", "%41"),
            ('"%41"', "%41"),
            ("\\%41", "%41"),
            ("%4'1'", "%41"),
            ("%'4'1", "%41"),
        ]:
            self.assertEqual(tokenize(text, "/"), [token])

    def test_quotes(self) -> None:
        """
        Quotes are removed and protect delimiters, the other quote and
        backslashes; an unterminated quote runs to the end.
        """
        for text, tokens in [
            ("'a/b'/c", ["a/b", "c"]),
            ('"a/b"/c', ["a/b", "c"]),
            ("'a\"b'", ['a"b']),
            ("\"a'b\"", ["a'b"]),
            ("'a\\'b", ["a\\b"]),
            ("a'b/c", ["ab/c"]),
            ('a"b/c', ["ab/c"]),
            ("''", [""]),
            ("a''b", ["ab"]),
        ]:
            self.assertEqual(tokenize(text, "/"), tokens)

    def test_backslash(self) -> None:
        """
        A backslash protects the next byte, whatever it is; at the end it
        vanishes.
        """
        for text, tokens in [
            ("a\\/b/c", ["a/b", "c"]),
            ("\\'a", ["'a"]),
            ("\\\\/x", ["\\", "x"]),
            ("a\\", ["a"]),
        ]:
            self.assertEqual(tokenize(text, "/"), tokens)

    def test_nul(self) -> None:
        """
        C{%00} ends its token as a NUL ends a C string; other tokens go on.
        """
        self.assertEqual(tokenize("a%00b/c", "/"), ["a", "c"])
        self.assertEqual(tokenize("a\0b/c", "/"), ["a"])

    def test_split(self) -> None:
        """
        Every unquoted delimiter splits, leaving empty tokens where two meet.
        """
        self.assertEqual(tokenize("", "/"), [""])
        self.assertEqual(tokenize("a//b/", "/"), ["a", "", "b", ""])
        self.assertEqual(tokenize("a[b]c", "[]"), ["a", "b", "c"])

    def test_cutAtLast(self) -> None:
        """
        The text is cut at the last unquoted delimiter; quotes stay.
        """
        for text, cut in [
            ("3]junk", "3"),
            ("a][b]", "a][b"),
            ('"a]b"]x', '"a]b"'),
            ("a\\]b", "a\\]b"),
            ("'a]", "'a]"),
            ("%]x", "%"),
            ("abc", "abc"),
        ]:
            self.assertEqual(cutAtLast(text, "]"), cut)


class ErrorTests(SynchronousTestCase):
    """
    Unknown keys are reported with what the user needs to fix them.
    """

    def test_message(self) -> None:
        """
        The message names the VNL, the key and the valid keys.
        """
        exc = self.assertRaises(
            VNLError,
            parsePath,
            "/tmp/sw[x=1]",
            VDE_OPTIONS,
            "vde:///tmp/sw[x=1]",
        )
        self.assertEqual(
            exc.message,
            "unknown key: x (valid keys: port, portgroup, group, mode)",
        )
        self.assertIn("vde:///tmp/sw[x=1]", str(exc))
        self.assertIn(exc.message, str(exc))
        self.assertEqual(exc.vnl, "vde:///tmp/sw[x=1]")
        self.assertEqual(exc.part, "x")
        self.assertEqual(exc.errno, errno.EINVAL)

    def test_defaultVNL(self) -> None:
        """
        Without a VNL the argument is named.
        """
        exc = self.assertRaises(VNLError, parseSlash, "/x", VXVDE_OPTIONS)
        self.assertEqual(exc.vnl, "/x")
        self.assertIn("unknown key: x (valid keys: port, vni, grp,", str(exc))

    def test_noOptions(self) -> None:
        """
        With an empty table the message says no options are taken.
        """
        exc = self.assertRaises(VNLError, parseSlash, "a/b", (), "m://a/b")
        self.assertEqual(
            exc.message, "unknown key: b (the scheme takes no options)"
        )
        self.assertIn("m://a/b", str(exc))

    def test_parseOctal(self) -> None:
        """
        Modes are octal; empty is 0 as in C; anything else is an error naming
        the option.
        """
        for value, mode in [
            ("0666", 0o666),
            ("2770", 0o2770),
            ("", 0),
            (" +7", 7),
        ]:
            self.assertEqual(parseOctal("v", "mode", value), mode)
        for value in ["0o666", "8", "rw", "66 ", "-1", "0x1", "6_6"]:
            exc = self.assertRaises(
                VNLError, parseOctal, "v", "dirmode", value
            )
            self.assertEqual(exc.part, "dirmode")
            self.assertIn("dirmode", str(exc))


def quoteSingle(data: bytes) -> bytes:
    """
    Quote with C{'}, writing each C{'} of C{data} inside C{"}.
    """
    return b"'" + data.replace(b"'", b"'\"'\"'") + b"'"


def quoteBackslash(data: bytes) -> bytes:
    return b"".join(b"\\" + bytes([byte]) for byte in data)


def quotePercent(data: bytes) -> bytes:
    return b"".join(b"%%%02x" % byte for byte in data)


QUOTERS = (quoteSingle, quoteBackslash, quotePercent)
cstrings = st.binary(max_size=30).map(lambda data: data.replace(b"\0", b""))
lexemes = st.text(alphabet="ab/[]{}'\"\\%41=gpm\0é", max_size=40)


class PropertyTests(SynchronousTestCase):
    """
    Properties of the lexer and the parsers over arbitrary input.
    """

    @given(
        st.lists(cstrings, min_size=1, max_size=5), st.sampled_from(QUOTERS)
    )
    @settings(max_examples=300, deadline=None)
    def test_quoteRoundTrip(
        self, tokens: list[bytes], quote: Callable[[bytes], bytes]
    ) -> None:
        """
        Quoted tokens joined by a delimiter tokenize back to themselves.
        """
        text = os.fsdecode(b"/".join(quote(token) for token in tokens))
        self.assertEqual(tokenize(text, "/"), [os.fsdecode(t) for t in tokens])

    @given(cstrings, cstrings, st.sampled_from(QUOTERS))
    @settings(max_examples=200, deadline=None)
    def test_cutAtLast(
        self, kept: bytes, dropped: bytes, quote: Callable[[bytes], bytes]
    ) -> None:
        """
        The cut keeps exactly the text before the last unquoted delimiter.
        """
        head = os.fsdecode(quote(kept))
        tail = os.fsdecode(quote(dropped))
        self.assertEqual(cutAtLast(head + "]" + tail, "]"), head)
        self.assertEqual(cutAtLast(head, "]"), head)

    @given(lexemes, st.sampled_from("]}/"))
    @settings(max_examples=300, deadline=None)
    def test_cutIsPrefix(self, text: str, delimiter: str) -> None:
        """
        The cut is a prefix, ending where an unquoted delimiter was.
        """
        cut = cutAtLast(text, delimiter)
        self.assertTrue(text.startswith(cut))
        if cut != text.partition("\0")[0]:
            self.assertEqual(text[len(cut)], delimiter)

    @given(st.one_of(lexemes, st.text()), st.sampled_from(ALL_TABLES))
    @settings(max_examples=500, deadline=None)
    def test_onlyVNLError(self, text: str, table: tuple[str, ...]) -> None:
        """
        The parsers fail with nothing but L{VNLError} and return full option
        names only.
        """
        for parse in (parsePath, parseSlash):
            try:
                _, options = parse(text, table)
            except VNLError:
                continue
            self.assertLessEqual(set(options), set(table))
        splitNested(text)
        resolve(text, {})


# What the C parsers give: options, a parse (None when it fails), a split.
Options = dict[bytes, bytes]
Parsed = tuple[bytes, Options] | None
Nested = tuple[bytes, bytes | None]


def _buffer(data: bytes) -> ctypes.Array[ctypes.c_char]:
    """
    A mutable C string with room to spare: without a C{{},
    C{vde_parsenestparms} writes a NUL one byte past the terminating one.
    """
    return ctypes.create_string_buffer(data, len(data) + 2)


class _CParsers:
    """
    The C library's parsers, called through ctypes on byte strings.
    """

    class _Parm(ctypes.Structure):
        _fields_ = [
            ("tag", ctypes.c_char_p),
            ("value", ctypes.POINTER(ctypes.c_char_p)),
        ]

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._parseparms = lib.vde_parseparms
        self._parsepathparms = lib.vde_parsepathparms
        self._nest = lib.vde_parsenestparms
        for function in (self._parseparms, self._parsepathparms):
            function.argtypes = [ctypes.c_char_p, ctypes.POINTER(self._Parm)]
            function.restype = ctypes.c_int
        self._nest.argtypes = [ctypes.c_char_p]
        self._nest.restype = ctypes.c_void_p

    def _parse(
        self, function: Callable[..., int], data: bytes, table: Sequence[str]
    ) -> tuple[bytes, Options | None]:
        """
        Return the first token, and the options or C{None} if C failed.
        """
        buffer = _buffer(data)
        values = [ctypes.c_char_p() for _ in table]
        parms = (self._Parm * (len(table) + 1))()
        for parm, name, value in zip(parms, table, values):
            parm.tag = os.fsencode(name)
            parm.value = ctypes.pointer(value)
        status = function(buffer, parms)
        first = ctypes.string_at(buffer)
        if status != 0:
            return first, None
        return first, {
            os.fsencode(name): value.value
            for name, value in zip(table, values)
            if value.value is not None
        }

    def parseparms(
        self, data: bytes, table: Sequence[str]
    ) -> tuple[bytes, Options | None]:
        return self._parse(self._parseparms, data, table)

    def parsepathparms(
        self, data: bytes, table: Sequence[str]
    ) -> tuple[bytes, Options | None]:
        return self._parse(self._parsepathparms, data, table)

    def parsenestparms(self, data: bytes) -> Nested:
        buffer = _buffer(data)
        nested = self._nest(buffer)
        return (
            ctypes.string_at(buffer),
            None if nested is None else ctypes.string_at(nested),
        )


def loadCParsers() -> _CParsers:
    for name in (
        ctypes.util.find_library("vdeplug_mod"),
        "/usr/lib/x86_64-linux-gnu/libvdeplug_mod.so.2",
    ):
        if name is None:
            continue
        try:
            return _CParsers(ctypes.CDLL(name))
        except (OSError, AttributeError):
            continue
    raise unittest.SkipTest(
        "libvdeplug_mod.so.2 not installed: apt-get install libvdeplug2"
    )


@contextmanager
def silentStderr() -> Iterator[None]:
    """
    Hide what C prints for unknown keys.
    """
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# The spec's fuzzing alphabet, plus escapes of delimiters, a NUL and a byte
# that is not UTF-8.
PIECES = [
    *(bytes([byte]) for byte in b"ab/[]{}'\"\\%41=gpm"),
    *b"%2f %% mode= %00 %5d %7b %7d %3d %4G \xff".split(),
]
# Keys that match entries of TABLES, fully or as prefixes, or nothing.
KEYS = b"p port portg g m mode d h v vni t a ab gpm x".split()
TABLES = (
    VDE_OPTIONS,
    NETNODE_OPTIONS,
    VXVDE_OPTIONS,
    ("", "a", "ab", "b", "gpm", "m"),
    ("mode", "", "p"),
)
CASES = 10000


def randomText(rng: random.Random, pieces: int) -> bytes:
    return b"".join(rng.choices(PIECES, k=rng.randrange(pieces)))


def randomElements(rng: random.Random) -> bytes:
    """
    Option elements, mostly well formed so that they are not all errors.
    """
    elements = []
    for _ in range(rng.randrange(5)):
        key = rng.choice(KEYS) if rng.random() < 0.8 else randomText(rng, 4)
        value = b"=" + randomText(rng, 6) if rng.random() < 0.7 else b""
        elements.append(key + value)
    return b"/".join(elements)


def randomVNLs(seed: int) -> list[bytes]:
    """
    Random strings, some shaped like each grammar's VNLs.
    """
    rng = random.Random(seed)
    shapes = [
        lambda: randomText(rng, 25),
        lambda: randomText(rng, 8)
        + b"["
        + randomElements(rng)
        + rng.choice([b"]", b""])
        + randomText(rng, 4),
        lambda: randomText(rng, 8) + b"/" + randomElements(rng),
        lambda: randomText(rng, 8)
        + b"{"
        + randomText(rng, 12)
        + rng.choice([b"}", b""])
        + randomText(rng, 4),
    ]
    return [rng.choice(shapes)() for _ in range(CASES)]


class DifferentialTests(SynchronousTestCase):
    """
    The parsers agree with libvdeplug4's on thousands of random strings.
    """

    def setUp(self) -> None:
        self.c = loadCParsers()

    def assertAgree(
        self,
        seed: int,
        cFunction: Callable[[bytes, Sequence[str]], object],
        pyFunction: Callable[[bytes, Sequence[str]], object],
    ) -> None:
        """
        Call both on the same strings and option tables, and report the
        first few mismatches.
        """
        cases = [
            (data, TABLES[i % len(TABLES)])
            for i, data in enumerate(randomVNLs(seed))
        ]
        with silentStderr():
            expected = [cFunction(data, table) for data, table in cases]
        mismatches = [
            (data, table, want, got)
            for (data, table), want in zip(cases, expected)
            if want != (got := pyFunction(data, table))
        ]
        self.assertEqual(mismatches[:5], [])

    def assertParsersAgree(
        self,
        seed: int,
        cParse: Callable[[bytes, Sequence[str]], tuple[bytes, Options | None]],
        pyParse: Callable[[str, Sequence[str]], tuple[str, dict[str, str]]],
    ) -> None:
        """
        Both parsers fail on the same strings, and agree on the others.
        """

        def c(data: bytes, table: Sequence[str]) -> Parsed:
            first, options = cParse(data, table)
            return None if options is None else (first, options)

        def py(data: bytes, table: Sequence[str]) -> Parsed:
            try:
                first, options = pyParse(os.fsdecode(data), table)
            except VNLError:
                return None
            return os.fsencode(first), {
                os.fsencode(name): os.fsencode(value)
                for name, value in options.items()
            }

        self.assertAgree(seed, c, py)

    def test_tokenize(self) -> None:
        """
        L{tokenize}'s first token is C's address or path.
        """

        def c(data: bytes, table: Sequence[str]) -> tuple[bytes, bytes]:
            return (
                self.c.parseparms(data, table)[0],
                self.c.parsepathparms(data, table)[0],
            )

        def py(data: bytes, table: Sequence[str]) -> tuple[bytes, bytes]:
            text = os.fsdecode(data)
            return (
                os.fsencode(tokenize(text, "/")[0]),
                os.fsencode(tokenize(text, "[")[0]),
            )

        self.assertAgree(1, c, py)

    def test_parsePath(self) -> None:
        """
        L{parsePath} agrees with C{vde_parsepathparms}.
        """
        self.assertParsersAgree(2, self.c.parsepathparms, parsePath)

    def test_parseSlash(self) -> None:
        """
        L{parseSlash} agrees with C{vde_parseparms}.
        """
        self.assertParsersAgree(3, self.c.parseparms, parseSlash)

    def test_splitNested(self) -> None:
        """
        L{splitNested} agrees with C{vde_parsenestparms}, quirk included.
        """

        def c(data: bytes, table: Sequence[str]) -> Nested:
            return self.c.parsenestparms(data)

        def py(data: bytes, table: Sequence[str]) -> Nested:
            prefix, nested = splitNested(os.fsdecode(data))
            if nested is None:
                return os.fsencode(prefix), None
            return os.fsencode(prefix), os.fsencode(nested)

        self.assertAgree(4, c, py)
