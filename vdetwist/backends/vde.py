"""
C{vde://PATH[PORT/port=N/portgroup=NAME/group=G/mode=M]}: join a vde2 switch
(C{vde_switch}, a vdeplug4 C{switch://}/C{hub://}..., or ours) with the
connection protocol of L{vdetwist.vde2}.  A VNL without C{://} is a
C{vde://} path, so C{/tmp/sw} and C{/tmp/sw[3]} work too.

  - PATH: the switch directory; empty: C{/var/run/vde.ctl}, then
    C{/tmp/vde.ctl};
  - C{[N]}, C{port=N}, C{portgroup=N}: ask for port N (C{[0]}: port 0, the
    management port of vde_switch); a non-numeric value is a portgroup
    socket name tried before C{ctl};
  - C{group=}, C{mode=} (octal, default 0700): group and mode of our data
    socket, so that a switch running as another user can reach it;
  - C{offload=off} (ours, only with C{=}: C{[off]} stays a portgroup as in
    C): never ask a switch of ours for vnet frames.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist._transport.device import offloadWanted
from vdetwist.interfaces import IVdeBackend
from vdetwist.vde2.client import connectVde
from vdetwist.reference import Option, SchemeReference
from vdetwist.vnl import parseOctal

#: The options, in C's order: a key names the first entry it abbreviates;
#: the C{""} entry takes a bare element (C{vde:///tmp/sw[3]}: port 3).
VDE_OPTIONS = ("", "port", "portgroup", "group", "mode")
#: Ours, after C's table, named only with C{=} (see L{vdetwist.vnl.parsePath}).
VDE_EXTENSIONS = ("offload",)

REFERENCE = SchemeReference(
    scheme="vde",
    synopsis="vde://[PATH][[PORT/OPTION...]]",
    description=(
        "Joins a vde2 switch through its directory: `vde_switch`, a `switch://` "
        "or `hub://` node, or `twistd vde`. A VNL without `://` is a `vde://` path, "
        "so `/tmp/sw` and `/tmp/sw[3]` work as well. An empty PATH tries "
        "`/var/run/vde.ctl`, then `/tmp/vde.ctl`."
    ),
    grammar="path",
    table=VDE_OPTIONS,
    extensions=VDE_EXTENSIONS,
    options=(
        Option(
            "",
            "A bare element that names no option: a number asks for that port "
            "(`[0]`: port 0, vde_switch's management port), a name is a portgroup.",
            value="PORT",
            default="any free port",
        ),
        Option("port", "The port to ask for; same variable as the bare element.", "N"),
        Option(
            "portgroup",
            "A portgroup socket `PATH/NAME` tried before `PATH/ctl`; a number is a port.",
            "NAME",
        ),
        Option(
            "group",
            "Group of our data socket, so a switch running as another user can reach it.",
            "GROUP",
            "none (`vde_plug -g`)",
        ),
        Option("mode", "Octal mode of our data socket.", "MODE", "0700 (`vde_plug -m`)"),
        Option(
            "offload",
            "`off`: never ask a switch of ours for super-frames and partial "
            "checksums (plain frames, as with a C switch). Only with `=`: a bare "
            "`[off]` is a portgroup, as in C.",
            "on/off",
            "on",
        ),
    ),
    examples=(
        ("vde:///tmp/sw", "any free port of the switch in `/tmp/sw` (same as `/tmp/sw`)"),
        ("/tmp/sw[3]", "port 3 of that switch"),
        ("vde:///tmp/sw[lan/mode=0660/g=kvm]", "portgroup `lan`, data socket 0660 of group kvm"),
        ("/tmp/sw[3/offload=off]", "port 3, plain frames even if the switch is ours"),
    ),
    differences=(
        "A malformed `mode=` (`0o666`, `rw`) is refused with a message where C "
        "reads what it can.",
        "On a switch of ours (`twistd vde`, `switch://`, `hub://`) frames keep "
        "their offload metadata: a tap's 64 KiB super-frames cross whole. The "
        "two agree through the sticky bit of their data socket files, so C "
        "switches and C clients see the vde2 protocol unchanged and only plain "
        "frames. `offload=off` (which C refuses as an unknown key) keeps them "
        "plain; `twistd vde --offload=off` does the same for every client.",
    ),
    manual="libvdeplug_vde",
)


def vdeOptions(vnl, args):
    """
    (path, portgroup, port, group, mode, offload) of a C{vde://} VNL and
    open_args.
    """
    path, options = vnl.parsePath(VDE_OPTIONS, VDE_EXTENSIONS)
    portgroup = None
    # The positional value, port= and portgroup= are one variable in C:
    # the last one given wins.
    for key, value in options.items():
        if key in ("", "port", "portgroup"):
            portgroup = value
    mode = args.mode
    if "mode" in options:
        mode = parseOctal(vnl.text, "mode", options["mode"])
    group = options.get("group") or args.group
    return path, portgroup, args.port, group, mode, offloadWanted(vnl, options)


@implementer(IPlugin, IVdeBackend)
class VdeBackend:
    schemes = ("vde",)
    summary = "a vde2 switch (vde_switch, switch://, hub://...) over its ctl socket"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        path, portgroup, port, group, mode, offload = vdeOptions(vnl, args)
        return connectVde(
            reactor,
            path,
            description=description,
            port=port,
            portgroup=portgroup,
            group=group,
            mode=mode,
            offload=offload,
            plugDescription=vnl.text or "vde://",
        )
