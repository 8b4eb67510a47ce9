"""
The reference of every VNL scheme: its syntax, options, defaults, examples
and deliberate differences from the C plugin.

Each backend carries the L{SchemeReference} of each scheme it opens (its
C{references}), written beside the code that parses the scheme and built
on the option table that code hands to the parser (L{vdetwist.vnl}), so a
page cannot name an option the parser lacks or miss one it has: building
the reference fails instead.  The abbreviations a page lists are computed by
running the parser itself.  C{vdetwist-plugins SCHEME} prints one page;
C{python3 -m vdetwist.reference} prints them all, as checked in at
C{docs/reference/vnl.md}.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from vdetwist.vnl import parseSlash

#: Where the generated pages are checked in, relative to the project root.
REFERENCE_PATH = "docs/reference/vnl.md"

#: How each grammar of L{vdetwist.vnl} reads options, for the pages.
GRAMMARS = {
    "path": (
        "Options go in one bracket block after the path, separated by `/`: "
        "`PATH[OPTION/OPTION...]`; text after the last `]` is ignored."
    ),
    "slash": (
        "Options follow the address, each after a `/`: `ADDRESS/OPTION/OPTION...`; "
        "a value holding `/` must be quoted (`'10.1.2.3/16'`) or written `%2f`."
    ),
}

_NESTED = (
    "The network underneath is the VNL in braces at the end (`{NESTED-VNL}`, "
    "text after the last `}` is ignored), passed on with its quotes; the options "
    "come before it."
)
_COMMON_RULES = (
    "An option is `NAME=VALUE` or a bare `NAME` (value empty); any prefix of a name "
    "names the first option in this table that starts with it (the *short* column "
    "gives the shortest), a later option overrides an earlier one, and an unknown "
    "name is an error. Quotes (`'...'`, `\"...\"`), `\\` and `%XX` escapes work as "
    "in the C library."
)


@dataclass(frozen=True)
class Option:
    """
    One entry of a scheme's option table.

    @ivar name: the full name, as in the parser's table (C{""}: the value of
        an element that names no option, as C{vde:///tmp/sw[3]}).
    @ivar meaning: what it does, in one or two sentences (Markdown).
    @ivar value: a placeholder for its value (C{"PORT"}); empty for a flag.
    @ivar default: what applies when it is not given; empty for nothing.
    """

    name: str
    meaning: str
    value: str = ""
    default: str = ""


@dataclass(frozen=True)
class SchemeReference:
    """
    The reference page of one scheme.

    @ivar scheme: the scheme, without C{://}.
    @ivar synopsis: the VNL's form, e.g. C{vxvde://[GROUP][/OPTION...]}.
    @ivar description: what the scheme connects to and how (Markdown).
    @ivar grammar: C{"path"} or C{"slash"} when the options are parsed by
        L{vdetwist.vnl.parsePath} or L{vdetwist.vnl.parseSlash}; C{None}
        when the argument has a form of its own.
    @ivar nested: the argument ends with a nested VNL in braces, split off
        (L{vdetwist.vnl.splitNested}) before the options are parsed.
    @ivar table: the option table the backend hands the parser.
    @ivar extensions: options of ours after C's C{table}, named only with
        C{=} (L{vdetwist.vnl.parsePath}'s C{extensions}).
    @ivar options: one L{Option} per entry of C{table}, then of
        C{extensions}, in their order.
    @ivar examples: (VNL, what it means) pairs.
    @ivar differences: deliberate differences from the C plugin.
    @ivar manual: the C plugin's manual page, if there is one.
    """

    scheme: str
    synopsis: str
    description: str
    grammar: Optional[str] = None
    nested: bool = False
    table: Sequence[str] = ()
    extensions: Sequence[str] = ()
    options: Sequence[Option] = ()
    examples: Sequence[tuple[str, str]] = ()
    differences: Sequence[str] = ()
    manual: Optional[str] = None

    def __post_init__(self) -> None:
        documented = [option.name for option in self.options]
        if documented != [*self.table, *self.extensions]:
            raise ValueError(
                f"{self.scheme}:// reference documents options {documented},"
                f" the parser's table is {[*self.table, *self.extensions]}"
            )
        if self.table and self.grammar not in GRAMMARS:
            raise ValueError(f"{self.scheme}:// has options but no grammar")

    def markdown(self) -> str:
        """
        The page, in Markdown (also what C{vdetwist-plugins SCHEME} prints).
        """
        parts = [f"## {self.scheme}://", f"    {self.synopsis}", self.description]
        if self.options:
            assert self.grammar is not None, "__post_init__ checks it"
            rules = f"{GRAMMARS[self.grammar]} {_COMMON_RULES}"
            if self.nested:
                rules = f"{_NESTED} {rules}"
            parts.append(f"**Options.** {rules}")
            parts.append(self._optionTable())
        if self.examples:
            parts.append("**Examples.**")
            parts.append(
                "\n".join(f"- `{vnl}`: {meaning}" for vnl, meaning in self.examples)
            )
        if self.differences:
            parts.append("**Differences from the C plugin.**")
            parts.append("\n".join(f"- {text}" for text in self.differences))
        if self.manual:
            parts.append(f"The C plugin's manual: `man {self.manual}`.")
        return "\n\n".join(parts) + "\n"

    def _optionTable(self) -> str:
        rows = ["| option | short | default | meaning |", "|---|---|---|---|"]
        for option in self.options:
            if option.name:
                written = option.name + (f"={option.value}" if option.value else "")
                short = shortest(option.name, (*self.table, *self.extensions))
            else:
                written, short = option.value, ""
            rows.append(
                f"| `{written}` | {_code(short)} | {option.default or '-'} | {option.meaning} |"
            )
        return "\n".join(rows)


def _code(text: str) -> str:
    return f"`{text}`" if text else "-"


def shortest(name: str, table: Sequence[str]) -> str:
    """
    The shortest key the parser reads as option C{name} of C{table}: each
    prefix is put through L{vdetwist.vnl.parseSlash}, the parser itself.
    """
    for length in range(1, len(name) + 1):
        key = name[:length]
        if parseSlash(f"/{key}", table)[1] == {name: ""}:
            return key
    raise ValueError(f"option {name!r} cannot be named in {list(table)}")


def referencesOf(backends: Iterable[object]) -> dict[str, SchemeReference]:
    """
    The pages of C{backends} by scheme (the first backend of a scheme wins,
    as in the registry); backends without C{references} have none.
    """
    pages: dict[str, SchemeReference] = {}
    for backend in backends:
        for page in getattr(backend, "references", ()):
            pages.setdefault(page.scheme, page)
    return pages


def vdetwistReferences() -> dict[str, SchemeReference]:
    """
    The pages of vdetwist's own backends (not of other installed plugins),
    sorted by scheme.
    """
    from twisted.plugin import getPlugins

    from vdetwist.interfaces import IVdeBackend

    ours = [
        backend
        for backend in getPlugins(IVdeBackend)
        if type(backend).__module__.startswith("vdetwist.")
    ]
    return dict(sorted(referencesOf(ours).items()))


def document(pages: dict[str, SchemeReference]) -> str:
    """
    The whole reference, as checked in at L{REFERENCE_PATH}.
    """
    index = "\n".join(
        f"- [`{scheme}://`](#{scheme}): `{page.synopsis}`" for scheme, page in pages.items()
    )
    head = (
        "# VNL reference\n\n"
        "<!-- Generated by `python3 -m vdetwist.reference > docs/reference/vnl.md`"
        " from the backends' option tables; do not edit by hand. -->\n\n"
        "A VNL (Virtual Network Locator) names a network: `SCHEME://ARGUMENT`; a VNL "
        "without `://` is a `vde://` path, and the empty VNL is the user's default "
        "network (`~/.vdeplug/default`, `~/.vde2/default.switch`). "
        "`vdetwist-plugins SCHEME` prints one of these pages; `vdetwist-plugins` lists "
        "the installed schemes. The parsing rules are exactly libvdeplug4's.\n\n"
        f"{index}\n"
    )
    return "\n".join([head, *(page.markdown() for page in pages.values())])


def main() -> None:
    sys.stdout.write(document(vdetwistReferences()))


if __name__ == "__main__":
    main()
