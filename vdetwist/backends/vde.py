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
    socket, so that a switch running as another user can reach it.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.interfaces import IVdeBackend
from vdetwist.vde2.client import connectVde
from vdetwist.vnl import VDE_OPTIONS, parse_octal


def vdeOptions(vnl, args):
    """
    (path, portgroup, port, group, mode) of a C{vde://} VNL and open_args.
    """
    path, options = vnl.parse_path(VDE_OPTIONS)
    portgroup = None
    # The positional value, port= and portgroup= are one variable in C:
    # the last one given wins.
    for key, value in options.items():
        if key in ("", "port", "portgroup"):
            portgroup = value
    mode = args.mode
    if "mode" in options:
        mode = parse_octal(vnl.text, "mode", options["mode"])
    group = options.get("group") or args.group
    return path, portgroup, args.port, group, mode


@implementer(IPlugin, IVdeBackend)
class VdeBackend:
    schemes = ("vde",)
    summary = "a vde2 switch (vde_switch, switch://, hub://...) over its ctl socket"

    def open(self, reactor, vnl, description, args, registry):
        path, portgroup, port, group, mode = vdeOptions(vnl, args)
        return connectVde(
            reactor,
            path,
            description=description,
            port=port,
            portgroup=portgroup,
            group=group,
            mode=mode,
            plugDescription=vnl.text or "vde://",
        )
