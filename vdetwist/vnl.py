"""
Virtual Network Locators: the strings naming a VDE network
(C{vde:///tmp/sw[3]}, C{vxvde://239.1.2.3/port=5000}, C{/tmp/sw}).

This module reproduces libvdeplug4's parsing byte for byte, quirks included,
so that a VNL means the same network here as in the C tools.  The C library
works on bytes and C{%XX} escapes produce arbitrary bytes, so everything is
parsed as bytes; C{str} values cross the API through C{os.fsencode} and
C{os.fsdecode}, which round-trip any byte.  Like a C string, every input ends
at its first NUL, and so does every token a C{%00} escape puts a NUL in.

This is the grammar and the option lookup every scheme shares; each backend
holds its own option table, beside the code that reads the options.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Iterator, Mapping, Sequence

from vdetwist.errors import VNLError

__all__ = [
    "VNL",
    "resolve",
    "tokenize",
    "cutAtLast",
    "parsePath",
    "parseSlash",
    "splitNested",
    "parseOctal",
    "strtol",
]

_SCHEME_SEPARATOR = "://"
# What C's fgets reads of an indirection file into its PATH_MAX buffer.
_LINE_MAX = 4095
_OCTAL = re.compile(r"\s*\+?[0-7]+", re.ASCII)
_HEX = frozenset(b"0123456789abcdefABCDEF")

# Lexer states and the actions it takes on each byte.
_PLAIN, _SQ, _DQ, _BS, _PCT1, _PCT2 = range(6)
_KEEP, _DROP, _DECODE, _SEP = range(4)
_OPENERS = {ord("'"): _SQ, ord('"'): _DQ, ord("\\"): _BS}
_CLOSERS = {_SQ: ord("'"), _DQ: ord('"')}
_PERCENT = ord("%")


@dataclass(frozen=True)
class VNL:
    """
    A VNL split into the module that handles it and that module's argument.

    @ivar scheme: the module name before C{://}; C{"vde"} when there is none.
    @ivar argument: what follows C{://}, or the whole string.
    @ivar text: the VNL as the user gave it, to name it in error messages.
    """

    scheme: str
    argument: str
    text: str

    def parsePath(
        self, table: Sequence[str], extensions: Sequence[str] = ()
    ) -> tuple[str, dict[str, str]]:
        """
        Parse the argument as C{PATH[OPT/OPT...]}; see L{parsePath}.
        """
        return parsePath(self.argument, table, self.text, extensions)

    def parseSlash(self, table: Sequence[str]) -> tuple[str, dict[str, str]]:
        """
        Parse the argument as C{ADDR/OPT/OPT...}; see L{parseSlash}.
        """
        return parseSlash(self.argument, table, self.text)

    def splitNested(self) -> tuple[str, str | None]:
        """
        Split the argument as C{PREFIXE{lb}NESTEDE{rb}}; see L{splitNested}.
        """
        return splitNested(self.argument)


def resolve(text: str | None, environ: Mapping[str, str] | None = None) -> VNL:
    """
    Find the module and argument a VNL names, as C{vde_open} does.

    The empty VNL (or C{None}) means the user's default network, if there is
    one; a VNL without C{://} that names a regular file is replaced by the
    file's first line; anything else without C{://} is a C{vde://} path.

    @param environ: where to find C{HOME}; defaults to C{os.environ}.
    """
    given = "" if text is None else text
    vnl = os.fsdecode(_cstring(given))
    if _SCHEME_SEPARATOR not in vnl:
        if not vnl:
            vnl = _defaultNetwork(os.environ if environ is None else environ)
        vnl = _indirect(vnl)
    scheme, separator, argument = vnl.partition(_SCHEME_SEPARATOR)
    if not separator:
        return VNL("vde", vnl, given)
    return VNL(scheme, argument, given)


def _defaultNetwork(environ: Mapping[str, str]) -> str:
    """
    The first of the user's default network entries that exists (a dangling
    symlink does), or C{""}.
    """
    home = environ.get("HOME")
    if home is None:
        return ""
    for entry in (f"{home}/.vdeplug/default", f"{home}/.vde2/default.switch"):
        if os.path.lexists(entry):
            return entry
    return ""


def _indirect(vnl: str) -> str:
    """
    The first line of the regular file C{vnl} names, or C{vnl} itself.

    C drops the last byte read, newline or not, so a file without a final
    newline loses a real character; that is kept for compatibility.
    """
    if not os.path.isfile(vnl):
        return vnl
    try:
        with open(vnl, "rb") as f:
            line = f.readline(_LINE_MAX)
    except OSError:
        return vnl
    if not line:
        return vnl
    return os.fsdecode(line.partition(b"\0")[0][:-1])


def _cstring(text: str) -> bytes:
    """
    The bytes C sees of C{text}: encoded, and ending at the first NUL.
    """
    return os.fsencode(text).partition(b"\0")[0]


def _lex(data: bytes, delimiters: bytes) -> Iterator[int]:
    """
    Run the lexer over C{data}, yielding the action taken on each byte.

    After a separator the next token starts in the plain state; quotes left
    open simply run to the end.
    """
    state = _PLAIN
    for byte in data:
        if state in _CLOSERS:
            if byte == _CLOSERS[state]:
                state = _PLAIN
                yield _DROP
            else:
                yield _KEEP
        elif state == _BS:
            state = _PLAIN
            yield _KEEP
        elif byte in _OPENERS:
            state = _OPENERS[byte]
            yield _DROP
        elif byte == _PERCENT:
            state = _PCT1
            yield _KEEP
        elif byte in delimiters:
            state = _PLAIN
            yield _SEP
        elif state == _PCT1:
            state = _PCT2
            yield _KEEP
        elif state == _PCT2:
            state = _PLAIN
            yield _DECODE
        else:
            yield _KEEP


def _separators(data: bytes, delimiters: bytes) -> list[int]:
    """
    The offsets of the delimiters in C{data} that are not quoted or escaped.
    """
    actions = enumerate(_lex(data, delimiters))
    return [i for i, action in actions if action == _SEP]


def _unquote(data: bytes) -> bytes:
    """
    One token without its quotes and escapes, C{%XX} decoded, cut at a NUL.
    """
    token = bytearray()
    for byte, action in zip(data, _lex(data, b"")):
        if action == _DROP:
            continue
        token.append(byte)
        # The decoded byte replaces "%XY" and is never looked at again.
        if action == _DECODE and _HEX.issuperset(token[-2:]):
            token[-3:] = bytes([int(token[-2:], 16)])
    return bytes(token).partition(b"\0")[0]


def _split(data: bytes, delimiters: bytes) -> list[bytes]:
    """
    Split C{data} at its unquoted delimiters into unquoted tokens.
    """
    bounds = [-1, *_separators(data, delimiters), len(data)]
    return [_unquote(data[start + 1 : end]) for start, end in pairwise(bounds)]


def _cut(data: bytes, delimiter: bytes) -> bytes:
    """
    Cut C{data} at its last unquoted C{delimiter}, keeping the quotes.
    """
    separators = _separators(data, delimiter)
    return data[: separators[-1]] if separators else data


def tokenize(text: str, delimiters: str) -> list[str]:
    """
    Split C{text} at each of C{delimiters} that is not quoted (C{'...'},
    C{"..."}) or escaped (C{\\}), removing the quotes and escapes and
    decoding C{%XX}.
    """
    tokens = _split(_cstring(text), os.fsencode(delimiters))
    return [os.fsdecode(token) for token in tokens]


def cutAtLast(text: str, delimiter: str) -> str:
    """
    Drop everything from the last unquoted C{delimiter} of C{text} on; quotes
    and escapes stay.  This is how C{]} and C{E{rb}} close a block, so the block
    may contain them quoted or not.
    """
    return os.fsdecode(_cut(_cstring(text), os.fsencode(delimiter)))


def parsePath(
    argument: str, table: Sequence[str], vnl: str | None = None,
    extensions: Sequence[str] = (),
) -> tuple[str, dict[str, str]]:
    """
    Parse C{PATH[OPT/OPT/...]}: text after the last C{]} is ignored.

    @param table: the scheme's option names, in C's order: a key names the
        first entry it is a prefix of, so the order decides what abbreviations
        mean; a C{""} first entry takes a bare element (C{vde:///tmp/sw[3]}).
    @param vnl: the VNL to name in errors; defaults to C{argument}.
    @param extensions: options of ours after C's C{table}, named only with
        C{=} (C{offload=off}): a bare element still names what it names in
        C (C{[off]} is a portgroup), and a key C rejects is all they take.
    @return: the path and a dict from full option names to values; an option
        given without C{=} has the value C{""}.
    @raise VNLError: an option matches no name in C{table}.
    """
    data = _cstring(argument)
    brackets = _separators(data, b"[")
    if not brackets:
        return os.fsdecode(_unquote(data)), {}
    start = brackets[0]
    elements = _split(_cut(data[start + 1 :], b"]"), b"/")
    options = _options(elements, table, _vnl(vnl, argument), positional=True,
                       extensions=extensions)
    return os.fsdecode(_unquote(data[:start])), options


def parseSlash(
    argument: str, table: Sequence[str], vnl: str | None = None
) -> tuple[str, dict[str, str]]:
    """
    Parse C{ADDR/OPT/OPT/...}; a C{/} inside a value must be quoted or
    written C{%2f}.

    @return: the address and options, as for L{parsePath}.
    @raise VNLError: an option matches no name in C{table}.
    """
    address, *elements = _split(_cstring(argument), b"/")
    options = _options(elements, table, _vnl(vnl, argument), positional=False)
    return os.fsdecode(address), options


def splitNested(argument: str) -> tuple[str, str | None]:
    """
    Split C{PREFIXE{lb}NESTED-VNLE{rb}}: text after the last C{E{rb}} is ignored and the
    nested VNL keeps its quotes, for the nested C{vde_open} to parse.

    @return: the prefix, and the nested VNL or C{None} when there is no
        unquoted C{E{lb}} (meaning the default network).
    """
    data = _cstring(argument)
    braces = _separators(data, b"{")
    # C shortens the prefix by one byte per quoted or escaped "{" before the
    # split (by one less when nothing splits); kept to stay bit-exact.
    if not braces:
        protected = data.count(b"{")
        if protected:
            data = data[: len(data) - protected + 1]
        return os.fsdecode(data), None
    start = braces[0]
    prefix = data[: start - data.count(b"{", 0, start)]
    return os.fsdecode(prefix), os.fsdecode(_cut(data[start + 1 :], b"}"))


def _vnl(vnl: str | None, argument: str) -> str:
    """
    The text to name in errors: the VNL if known, else the argument.
    """
    return argument if vnl is None else vnl


def _options(
    elements: list[bytes], table: Sequence[str], vnl: str, positional: bool,
    extensions: Sequence[str] = (),
) -> dict[str, str]:
    """
    Map option elements (C{key=value} or C{key}) to the full table names.

    A key names the first entry it is a prefix of, later elements overwrite
    earlier ones and empty keys are skipped.  With C{positional}, an element
    without C{=} that names nothing is the value of a leading C{""} entry.
    An element with C{=} that names nothing in C{table} may name one of
    C{extensions} (see L{parsePath}).
    """
    names = [os.fsencode(name) for name in table]
    ours = [os.fsencode(name) for name in extensions]
    options: dict[bytes, bytes] = {}
    for element in elements:
        key, equals, value = element.partition(b"=")
        if not key:
            continue
        name = next((name for name in names if name.startswith(key)), None)
        if name is None and equals:
            name = next((name for name in ours if name.startswith(key)), None)
        if name is None:
            if equals or not (positional and names[:1] == [b""]):
                raise _unknownKey(vnl, os.fsdecode(key), (*table, *extensions))
            name, value = b"", key
        options[name] = value
    return {os.fsdecode(n): os.fsdecode(v) for n, v in options.items()}


def _unknownKey(vnl: str, key: str, table: Sequence[str]) -> VNLError:
    """
    The error for an option C{key} that names nothing in C{table}.
    """
    valid = ", ".join(name for name in table if name)
    hint = f"valid keys: {valid}" if valid else "the scheme takes no options"
    return VNLError(vnl, key, f"unknown key: {key} ({hint})")


# C's strtol/strtoul with base 0: C-locale white space, a sign, then decimal,
# 0x hexadecimal ("0x" without a hex digit is the number 0) or 0 octal.
_STRTOL = re.compile(
    r"[ \t\n\v\f\r]*([+-]?)(0[xX](?=[0-9a-fA-F])[0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)?",
    re.ASCII,
)
_LONG_MAX = (1 << 63) - 1
_LONG_MIN = -(1 << 63)
_ULONG_MAX = (1 << 64) - 1


def strtol(text: str, unsigned: bool = False) -> tuple[int, int]:
    """
    C's C{strtol(text, &end, 0)} (C{strtoul} if C{unsigned}) on LP64, which
    the C plugins use to read numbers: the value and the index where reading
    stopped (0 when no number was read, and then the value is 0).  Trailing
    text is ignored, so a caller that wants all of C{text} compares the index
    with its length.  Out-of-range values are clamped as C clamps them
    (C{strtoul} wraps a negative number, C{-1} is C{ULONG_MAX}).
    """
    match = _STRTOL.match(text)
    assert match is not None, "every part of the pattern is optional"
    sign, digits = match.groups()
    if not digits:
        return 0, 0
    if digits[:2] in ("0x", "0X"):
        value = int(digits, 16)
    else:
        value = int(digits, 8 if digits.startswith("0") else 10)
    if unsigned:
        if value > _ULONG_MAX:
            return _ULONG_MAX, match.end()
        return (-value if sign == "-" else value) & _ULONG_MAX, match.end()
    value = -value if sign == "-" else value
    return max(_LONG_MIN, min(_LONG_MAX, value)), match.end()


def parseOctal(vnl: str, key: str, value: str) -> int:
    """
    Read a file mode option as C's C{strtol(value, NULL, 8)} does, but refuse
    what C would silently misread (C{mode=0o666}, C{mode=rw}).  An empty value
    (C{[mode]}) is 0, as in C.

    @raise VNLError: C{value} is not octal.
    """
    if not value:
        return 0
    if not _OCTAL.fullmatch(value):
        raise VNLError(vnl, key, f"{key}={value}: not an octal number")
    return int(value, 8)
