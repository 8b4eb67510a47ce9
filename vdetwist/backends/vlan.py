"""
C{vlan://[UNTAGGED][/OPTION...]{NESTED-VNL}}: 802.1Q / 802.1ad tagging done
in the plug, compatible with libvdeplug_vlan.

The user of the plug (the "VM") sees VLAN C{UNTAGGED} untagged; the nested
network sees the tags.  Options (slash grammar, prefixes allowed):

  - C{u=N}, C{untag=N}: network-side untagged traffic reaches the VM tagged
    N, and VM frames tagged N leave untagged;
  - C{t=LIST}, C{tag=LIST}: VLANs the VM uses tagged, C{A} or C{A-B} (VM
    VLAN A is network VLAN B) separated by C{:} or C{.}, e.g.
    C{tag=10:11-12};
  - C{x}, C{trunk}: the VM may use any other valid VLAN, unchanged;
  - C{q}, C{qinq}, C{ad}: tag with 802.1ad (0x88a8) instead of 802.1Q.

Without C{{...}} the nested network is the user's default network.  Nested
VNLs nest: C{vlan://4{vlan://5/qinq{vxvde://234.1.2.3}}} is VLAN 4 inside
the 802.1ad service VLAN 5.

As in libvdeplug_vlan, the bracket form of its manual
(C{vlan://3[untag=4/tag=10]{...}}) does not work: brackets are not special,
use slashes.  C{tag=} with a single one-character VLAN (C{tag=5}) is ignored
as the C plugin ignores it (a warning says so): write C{tag=5:} or
C{tag=05}.  The rules are in L{vdetwist.wire.vlan}.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.interfaces import IVdeBackend
from vdetwist._transport.nested import TransformPlug, openNested
from vdetwist.reference import Option, SchemeReference
from vdetwist.wire.vlan import VlanRules, quirkIgnoresTagList
from vdetwist.vnl import parseSlash

#: The options, in C's order: a key names the first entry it abbreviates.
VLAN_OPTIONS = ("u", "untag", "t", "tag", "x", "trunk", "q", "qinq", "ad")

REFERENCE = SchemeReference(
    scheme="vlan",
    synopsis="vlan://[UNTAGGED][/OPTION...][{NESTED-VNL}]",
    description=(
        "802.1Q/802.1ad tagging done in the plug: the plug's user (the VM) sees "
        "VLAN UNTAGGED untagged (0: none; 4095: the VM's untagged frames are "
        "dropped), the NESTED-VNL network sees the tags. Without `{...}` the nested "
        "network is the user's default one. Nested VNLs nest, and the nested VNL "
        "keeps its own quotes."
    ),
    grammar="slash",
    nested=True,
    table=VLAN_OPTIONS,
    options=(
        Option("u", "Same as `untag`.", "N"),
        Option(
            "untag",
            "The network's untagged frames reach the VM tagged N; VM frames tagged N "
            "leave untagged.",
            "N",
            "none",
        ),
        Option("t", "Same as `tag`.", "LIST"),
        Option(
            "tag",
            "VLANs the VM uses tagged: `A` or `A-B` (VM VLAN A is network VLAN B), "
            "separated by `:` or `.`, e.g. `tag=10:11-12`.",
            "LIST",
        ),
        Option("x", "Same as `trunk`."),
        Option("trunk", "The VM may use any other valid VLAN (not 0, 1, 4095) unchanged."),
        Option("q", "Same as `qinq`."),
        Option("qinq", "Tag with 802.1ad (TPID 0x88a8) instead of 802.1Q (0x8100)."),
        Option("ad", "Same as `qinq`."),
    ),
    examples=(
        ("vlan://3{vde:///tmp/sw}", "VLAN 3 of the switch `/tmp/sw`, untagged for the VM"),
        ("vlan://3/untag=4/tag=10:11-12{vde:///tmp/sw}", "plus tagged VLANs, with a remap"),
        ("vlan://4{vlan://5/qinq{vxvde://234.1.2.3}}", "VLAN 4 inside 802.1ad service VLAN 5"),
    ),
    differences=(
        "`tag=` with a single one-character VLAN (`tag=5`) is ignored as in C, but "
        "with a warning: write `tag=5:` or `tag=05`.",
        "As in C, the manual's bracket form (`vlan://3[untag=4]{...}`) does not "
        "work: options take slashes.",
    ),
    manual="libvdeplug_vlan",
)

log = Logger()


class VlanPlug(TransformPlug):
    """
    A plug tagging and untagging by L{VlanRules} over a nested plug.
    """

    def __init__(self, description: str, inner, rules: VlanRules) -> None:
        super().__init__(description, inner)
        self.rules = rules
        # The rules' methods bound in place of TransformPlug's: no extra call
        # per frame (mypy refuses any assignment to a method).
        self.outgoing = rules.toNetwork  # type: ignore[method-assign]
        self.incoming = rules.toVM  # type: ignore[method-assign]


def vlanRules(vnl) -> tuple[VlanRules, str | None]:
    """
    The rules and the nested VNL (C{None}: default network) of a C{vlan://}
    VNL.
    """
    prefix, nested = vnl.splitNested()
    address, options = parseSlash(prefix, VLAN_OPTIONS, vnl.text)
    for name in ("t", "tag"):
        if name in options and quirkIgnoresTagList(options[name]):
            log.warn(
                "{vnl}: {name}={value} is ignored, as libvdeplug_vlan ignores a "
                "tag list made of one single-character VLAN; write {name}={value}: "
                "to use VLAN {value}",
                vnl=vnl.text, name=name, value=options[name],
            )
    return VlanRules.fromOptions(address, options), nested


@implementer(IPlugin, IVdeBackend)
class VlanBackend:
    schemes = ("vlan",)
    summary = "802.1Q/802.1ad VLAN tagging over a nested VNL (vlan://3{vde:///tmp/sw})"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        rules, nested = vlanRules(vnl)
        opened = maybeDeferred(openNested, reactor, registry, nested, description, args)
        return opened.addCallback(lambda inner: VlanPlug(vnl.text, inner, rules))
