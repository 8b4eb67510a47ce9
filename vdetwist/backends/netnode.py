"""
C{hub://}, C{switch://}, C{multi://}, C{bonding://}: the plug I{is} the
node, as vdeplug4's netnode modules.

Opening C{switch:///tmp/sw} creates the switch directory C{/tmp/sw}, which
vde2 clients join (C{vde:///tmp/sw}, QEMU, C{vde_plug /tmp/sw}); the plug
returned is the node's I{host port}, the process's own side.  Closing it
disconnects the clients, removes the sockets and the directory.

C{TYPE://[PATH][[mode=M/dirmode=D/grp=G/hashsize=N/hashseed=N/expiretime=S]]}:

  - PATH: default C{/tmp/vdenode_<user>}; its parent must exist and the
    directory itself must not (as in C: a stale directory must be removed);
  - C{mode=} (octal, exec bits cleared, default 0600): mode of the sockets;
  - C{dirmode=} (octal): mode of the directory, default 02700 or derived
    from C{mode=};
  - C{grp=}: group (name or number) of the directory and control socket;
  - C{hashsize=} (256), C{hashseed=} (0), C{expiretime=} (120 s): the
    switch's learning table.

Like vdeplug4 4.0.1, the open arguments (C{vde_plug -m/-g}) are ignored.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
from typing import Optional

from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.errors import VdeError, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.node import HostPlug, MacTable, Node, netnodeEngine
from vdetwist.reference import Option, SchemeReference
from vdetwist.vde2.server import VdeServer, netnodeModes
from vdetwist.vnl import parseOctal, strtol

#: The options, in C's order: a key names the first entry it abbreviates.
NETNODE_OPTIONS = (
    "mode", "dirmode", "grp", "hashsize", "hashseed", "expiretime",
)

_ATOI = re.compile(r"\s*([+-]?\d+)")
#: The learning table's defaults, as text since C reads them with atoi.
DEFAULT_HASHSIZE = "256"
DEFAULT_HASHSEED = "0"
DEFAULT_EXPIRETIME = "120"

_WHAT = {
    "hub": "a hub: every frame goes to every other port and to the host",
    "switch": (
        "a learning switch that forwards 802.1Q-tagged frames unchanged "
        "(a trunk switch: the table is keyed by MAC address and VLAN)"
    ),
    "multi": (
        "a multiplexer: frames from any port go to the host only, each frame "
        "of the host goes to every port (so duplicates across links are expected)"
    ),
    "bonding": (
        "a bond: frames from any port go to the host only, each frame of the "
        "host goes to one port, round robin as in vdeplug4"
    ),
}

#: Commands worth showing with a node.
_COMMANDS = {
    "switch": (
        ("vde_plug null:// switch:///tmp/sw", "(a command) a stand-alone switch"),
        ("vde_plug tap://tap0 switch:///tmp/sw", "(a command) a switch with a tap on its host port"),
    ),
}


def _reference(scheme: str) -> SchemeReference:
    return SchemeReference(
        scheme=scheme,
        synopsis=f"{scheme}://[PATH][[OPTION/OPTION...]]",
        description=(
            f"Creates the directory PATH and serves vde2 clients there (`vde://PATH`, "
            f"QEMU, `vde_plug PATH`) as {_WHAT[scheme]}. The plug is the node's host "
            "port: what the process itself sends and receives. Closing it disconnects "
            "the clients and removes the directory. PATH defaults to "
            "`/tmp/vdenode_USER`; its parent must exist and PATH itself must not. "
            "As in vdeplug4 4.0.1, `vde_plug -m`/`-g` do not apply: use `mode`/`grp`."
        ),
        grammar="path",
        table=NETNODE_OPTIONS,
        options=(
            Option("mode", "Octal mode of the sockets (execute bits cleared).", "MODE", "0600"),
            Option("dirmode", "Octal mode of the directory.", "MODE", "02700, or derived from `mode`"),
            Option("grp", "Group (name or number) of the directory and control socket.", "GROUP"),
            Option("hashsize", "Buckets of the learning table.", "N", DEFAULT_HASHSIZE),
            Option("hashseed", "Seed of the learning table's hash.", "N", DEFAULT_HASHSEED),
            Option("expiretime", "Seconds a learned address lasts.", "SECONDS", DEFAULT_EXPIRETIME),
        ),
        examples=(
            (f"{scheme}:///tmp/sw", "clients join with `vde:///tmp/sw` or `/tmp/sw`"),
            (f"{scheme}:///tmp/sw[mode=0666/hashsize=1024]", "anyone may join; 1024 buckets"),
        ) + _COMMANDS.get(scheme, ()),
        differences=(
            "`mode=`/`dirmode=` values that are not octal and a `hashsize` below 1 "
            "are refused with a message, where C reads what it can.",
        ),
        manual=f"libvdeplug_{scheme}",
    )


def atoi(text: str) -> int:
    """
    C's C{atoi}: leading blanks, a sign, digits; anything else ends it, and
    nothing parsable is 0.
    """
    match = _ATOI.match(text)
    return int(match.group(1)) if match else 0


def defaultPath() -> str:
    euid = os.geteuid()
    try:
        return f"/tmp/vdenode_{pwd.getpwuid(euid).pw_name}"
    except KeyError:
        return f"/tmp/vdenode_u{euid}"


def nodePath(vnl, path: str) -> str:
    """
    C{realpath(dirname(PATH)) + "/" + basename(PATH)}: the parent must
    exist, the node directory itself is made.
    """
    if not path:
        return defaultPath()
    stripped = path.rstrip("/") or "/"
    parent, base = os.path.split(stripped)
    try:
        parent = os.path.realpath(parent or ".", strict=True)
    except OSError as e:
        raise VdeError(
            f"the parent directory of {path} does not exist ({e.strerror})",
            e.errno or errno.ENOENT,
        ) from None
    return os.path.join(parent, base)


def nodeGroup(vnl, value: str) -> str:
    """
    C{grp=}: a group name, else a number read by C{strtol(x, 0)}.
    """
    try:
        grp.getgrnam(value)
        return value
    except KeyError:
        pass
    if value[:1].isdigit():
        return str(strtol(value)[0])
    raise VNLError(vnl.text, value, f"grp={value}: no such group")


class NetnodePlug(HostPlug):
    """
    The host port of a netnode; closing it shuts the node down.

    @ivar node: the L{Node}.
    @ivar server: the L{VdeServer} serving the directory.
    """

    node: Optional[Node] = None
    server: Optional[VdeServer] = None

    def _release(self) -> None:
        super()._release()
        if self.server is not None:
            self.server.stop()
        if self.node is not None:
            self.node.close()


def openNetnode(reactor, vnl, description: str) -> NetnodePlug:
    path, options = vnl.parsePath(NETNODE_OPTIONS)
    mode = dirmode = None
    if "mode" in options:
        mode = parseOctal(vnl.text, "mode", options["mode"])
    if "dirmode" in options:
        dirmode = parseOctal(vnl.text, "dirmode", options["dirmode"])
    mode, dirmode = netnodeModes(mode, dirmode)
    group = nodeGroup(vnl, options["grp"]) if options.get("grp") else None
    hashsize = atoi(options.get("hashsize", DEFAULT_HASHSIZE))
    hashseed = atoi(options.get("hashseed", DEFAULT_HASHSEED))
    expiretime = atoi(options.get("expiretime", DEFAULT_EXPIRETIME))
    if hashsize < 1:
        raise VNLError(vnl.text, "hashsize", f"hashsize={options['hashsize']}: must be at least 1")
    engine = netnodeEngine(vnl.scheme)
    if engine is None:
        raise VNLError(vnl.text, vnl.scheme, f"{vnl.scheme}:// is not a netnode scheme")
    directory = nodePath(vnl, path)
    table = MacTable(reactor, hashsize=hashsize, expiretime=expiretime, hashseed=hashseed)
    node = Node(engine, reactor, table)
    server = VdeServer(
        reactor, node, directory, mode=mode, dirmode=dirmode, group=group,
        flavour="netnode",
    )
    server.start()
    node.start()
    mine = NetnodePlug(vnl.text or f"{vnl.scheme}://")
    theirs = HostPlug(f"{mine.description} (node side)")
    mine.peer, theirs.peer = theirs, mine
    mine.node, mine.server = node, server
    try:
        node.addPort(theirs, host=True)
    except BaseException:
        server.stop()
        node.close()
        raise
    return mine


@implementer(IPlugin, IVdeBackend)
class NetnodeBackend:
    schemes = ("hub", "switch", "multi", "bonding")
    summary = "a hub/switch/multi/bonding node serving vde2 clients; the plug is its host port"
    references = tuple(_reference(scheme) for scheme in schemes)

    def open(self, reactor, vnl, description, args, registry):
        return succeed(openNetnode(reactor, vnl, description))
