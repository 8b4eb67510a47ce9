"""
Forwarding engines: what a node does with each frame.

An engine is pure logic.  It is attached to a L{vdetwist.node.node.Node},
reads the node's ports (L{vdetwist.node.node.Port}), VLANs and MAC table, and
delivers frames by calling C{port.output(frame)}, a callable the node
precomputes for each port (a plug's C{send}, or a loop over a port's
endpoints).  The node calls C{engine.input(port, frame)} for every frame a
port receives (C{engine.hostInput} for the host port) through a per-endpoint
C{functools.partial}, so a frame costs one call into the engine.

Every engine:
  - drops frames shorter than 14 bytes (counted in C{port.inDropped});
  - counts C{inFrames}/C{inBytes} on the ingress port and
    C{outFrames}/C{outBytes} on every port it hands the frame to;
  - never sends a frame back to its ingress port;
  - never pauses anything: output is C{plug.send}, which drops and counts
    when a plug's queue is full, so a slow port loses its own frames and
    never stalls the others.

Frames are C{bytes} (the dict lookups key on slices of them); the same
object is handed to every egress port, and a new one is built only when a
tag is added or removed.  Flood order is port number order, then the host.

Vnet frames (L{vdetwist.interfaces.IVnetReceiver}: a virtio-net header,
then an Ethernet frame that may be a 64 KiB super-frame) take the same
code: every C{input} takes the two functions that send, C{deliver} and
C{flood}, as defaults of two trailing parameters, and
L{vdetwist.node.vnet} calls it with the Ethernet frame (the header cut off,
so learning, VLANs and tags see what they always see) and its own pair,
which sends the super-frame as it is to ports that take it and its
segments to the others.  A plain frame pays nothing for this: defaults are
filled in by the call, and are local variables after it.

Engines keep precomputed, immutable flood lists, rebuilt by L{Engine.rebuild}
whenever the node's topology or VLAN configuration changes, so a port that
closes while a flood is iterating (a plug may close synchronously inside
C{send}) does not disturb the loop.

  - L{HubEngine}: C{hub://} and vde_switch's hub mode.
  - L{TrunkSwitchEngine}: C{switch://} (vdeplug4 netnode): learning bridge,
    tagged frames forwarded unchanged, the VLAN only separates the table.
  - L{SwitchEngine}: vde_switch: 802.1Q-aware learning bridge.
  - L{MultiEngine}, L{BondingEngine}: C{multi://} and C{bonding://}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from vdetwist.plug import ETH_HDRLEN

if TYPE_CHECKING:
    from vdetwist.node.mactable import MacTable
    from vdetwist.node.node import Node, Port

__all__ = [
    "Engine",
    "HubEngine",
    "TrunkSwitchEngine",
    "SwitchEngine",
    "MultiEngine",
    "BondingEngine",
    "netnodeEngine",
]

_TPID = b"\x81\x00"


class Engine:
    """
    Base class.  Subclasses implement L{input}, and L{hostInput} if the host
    is special, and L{rebuild} to refresh their precomputed state.

    @cvar name: C{"hub"}, C{"switch"}, C{"multi"} or C{"bonding"}.
    """

    name = "?"
    node: Optional[Node] = None

    def attach(self, node: Node) -> None:
        """
        Start serving C{node}; called by the node.
        """
        self.node = node
        self.rebuild()

    def detach(self) -> None:
        """
        Stop serving the node (it is switching to another engine).
        """
        self.node = None

    def rebuild(self) -> None:
        """
        Recompute the precomputed state from the node.
        """

    def portUp(self, port) -> None:
        """
        C{port} got its first endpoint (or is the host, just attached).
        """
        self.rebuild()

    def portDown(self, port) -> None:
        """
        C{port} lost its last endpoint (or is being removed).
        """
        self.rebuild()

    def input(self, port, frame: bytes, *outputs) -> None:
        """
        C{port} received C{frame}.  C{outputs}, when given, are the
        C{deliver} and C{flood} to use instead of this module's (see the
        module docstring).
        """
        raise NotImplementedError()

    def hostInput(self, port, frame: bytes, *outputs) -> None:
        """
        The host (C{port} is the node's host port) sent C{frame}.
        """
        self.input(port, frame, *outputs)


def arrived(port, frame: bytes) -> int:
    """
    Count C{frame} in at C{port}: its length, or 0 for a frame too short to
    be Ethernet (counted as dropped).
    """
    n = len(frame)
    if n < ETH_HDRLEN:
        port.inDropped += 1
        return 0
    port.inFrames += 1
    port.inBytes += n
    return n


def deliver(port, frame: bytes, n: int) -> None:
    """
    Send C{frame} (C{n} bytes) out of C{port}, counting it.
    """
    port.outFrames += 1
    port.outBytes += n
    port.output(frame)


def flood(ports, ingress, frame: bytes, n: int) -> None:
    """
    L{deliver} C{frame} to every port of C{ports} but C{ingress}.
    """
    for p in ports:
        if p is not ingress:
            p.outFrames += 1
            p.outBytes += n
            p.output(frame)


class HubEngine(Engine):
    """
    Every frame to every active port except its ingress port, unchanged: no
    learning, no VLANs.  The host is a port like the others (C{hub://}:
    from a port to every other port and the host; from the host to every
    port).

    As in vde_switch's hub mode, a port numbered 0 (vde_switch's management
    port, only reachable with C{vde://sw[0]}) receives nothing; netnode
    nodes never number a port 0.
    """

    name = "hub"

    def __init__(self) -> None:
        self._outputs: tuple = ()

    def rebuild(self) -> None:
        assert self.node is not None, "rebuild of a detached engine"
        self._outputs = tuple(p for p in self.node.activePorts() if p.number != 0)

    def input(self, port, frame: bytes, deliver=deliver, flood=flood) -> None:
        n = arrived(port, frame)
        if not n:
            return
        flood(self._outputs, port, frame, n)

    hostInput = input


class TrunkSwitchEngine(Engine):
    """
    vdeplug4's C{switch://}: a learning bridge that forwards every frame
    unchanged ("trunk" switch, no VLAN filtering).  The host is a port like
    the others and learns too.

    The learning key is (source MAC, VLAN): the VLAN is the 12-bit VID of
    an 802.1Q tag (TPID 0x8100, frame >= 18 bytes), else 0.  Known unicast
    goes to its port only (dropped if that is the ingress port); group
    addresses and unknown or expired destinations are flooded to every other
    port and the host.
    """

    name = "switch"

    def __init__(self) -> None:
        self._outputs: tuple = ()
        self._macs0: dict = {}
        self._vlans: dict = {}

    _table: MacTable

    def attach(self, node: Node) -> None:
        self._table = node.table
        self._seconds = node.clock.seconds
        self._macs0 = node.table.vlanDict(0)
        self._vlans = node.table._vlans
        super().attach(node)

    def rebuild(self) -> None:
        assert self.node is not None, "rebuild of a detached engine"
        self._outputs = tuple(self.node.activePorts())

    def input(self, port, frame: bytes, deliver=deliver, flood=flood) -> None:
        n = arrived(port, frame)
        if not n:
            return
        if frame[12] == 0x81 and frame[13] == 0 and n >= 18:
            vid = ((frame[14] & 0x0F) << 8) | frame[15]
            macs = self._vlans.get(vid)
            if macs is None:
                macs = self._table.vlanDict(vid)
        else:
            vid = 0
            macs = self._macs0
        now = self._seconds()
        if not frame[6] & 1:
            src = frame[6:12]
            e = macs.get(src)
            if e is None or e.port is not port or now >= e.renew:
                self._table.learn(src, vid, port, now)
        if not frame[0] & 1:
            e = macs.get(frame[0:6])
            if e is not None and now - e.seen <= self._table.expiretime:
                p = e.port
                if p is not port:
                    deliver(p, frame, n)
                return
        flood(self._outputs, port, frame, n)

    hostInput = input


class _Vlan:
    """
    The switch engine's view of one VLAN: its active members and table.
    """

    __slots__ = ("vid", "tag", "untagged", "tagged", "macs")

    def __init__(self, vid: int, macs: dict) -> None:
        self.vid = vid
        #: What is inserted after the source MAC to tag a frame: TPID 0x8100,
        #: priority 0, CFI 0, this VID.
        self.tag = _TPID + vid.to_bytes(2, "big")
        self.untagged: tuple = ()
        self.tagged: tuple = ()
        self.macs = macs


class SwitchEngine(Engine):
    """
    vde2's C{vde_switch} in switch mode: an 802.1Q-aware learning bridge.

    Each port has one untagged VLAN (C{port.untaggedVlan}, 0 by default,
    L{vdetwist.node.mactable.NOVLAN} = no untagged traffic) and any number
    of tagged VLANs (C{port.taggedVlans}).  Only VLANs in C{node.vlans}
    count.

    Ingress: a frame with TPID 0x8100 belongs to VLAN C{TCI & 0xfff} and is
    dropped unless the port is a member of it (tagged or untagged) or it is
    shorter than 18 bytes; any other frame belongs to the port's untagged
    VLAN (dropped if C{NOVLAN}).  802.1ad (0x88a8) is not special.

    Then: learn (source MAC, VLAN) -> port, unless the source is a group
    address; a known unicast destination goes to its port (dropped if it is
    the ingress port); anything else is flooded within the VLAN, never to
    the ingress port.  On the way out a frame carries a tag exactly when the
    egress port is a tagged member of the VLAN: a frame that arrived tagged
    loses its tag (4 bytes after the source MAC) towards untagged members,
    and one that arrived untagged gains C{81 00} + VID (priority 0) towards
    tagged members.  Tags are built once per frame, not once per port.

    No FSTP: every port is forwarding, and BPDUs are flooded like any
    multicast frame (vde_switch with FSTP off).
    """

    name = "switch"

    def __init__(self) -> None:
        self._vlanmap: dict[int, _Vlan] = {}

    _table: MacTable

    def attach(self, node: Node) -> None:
        self._table = node.table
        self._seconds = node.clock.seconds
        super().attach(node)

    def rebuild(self) -> None:
        node = self.node
        assert node is not None, "rebuild of a detached engine"
        table = self._table
        vlans = {vid: _Vlan(vid, table.vlanDict(vid)) for vid in node.vlans}
        untagged: dict[int, list] = {vid: [] for vid in vlans}
        tagged: dict[int, list] = {vid: [] for vid in vlans}
        for port in node.allPorts():
            uv = vlans.get(port.untaggedVlan)
            members = {vid: vlans[vid] for vid in port.taggedVlans if vid in vlans}
            if uv is not None:
                members[uv.vid] = uv
            port._uvlan = uv
            port._vmembers = members
            if port.forwarding:
                if uv is not None:
                    untagged[uv.vid].append(port)
                for vid in port.taggedVlans:
                    if vid in vlans and vid != port.untaggedVlan:
                        tagged[vid].append(port)
        for vid, vl in vlans.items():
            vl.untagged = tuple(untagged[vid])
            vl.tagged = tuple(tagged[vid])
        self._vlanmap = vlans

    def input(self, port, frame: bytes, deliver=deliver, flood=flood) -> None:
        n = arrived(port, frame)
        if not n:
            return
        if frame[12] == 0x81 and frame[13] == 0:
            if n < 18:
                port.inDropped += 1
                return
            vl = port._vmembers.get(((frame[14] & 0x0F) << 8) | frame[15])
            if vl is None:
                port.inDropped += 1
                return
            wasTagged = True
        else:
            vl = port._uvlan
            if vl is None:
                port.inDropped += 1
                return
            wasTagged = False
        macs = vl.macs
        now = self._seconds()
        if not frame[6] & 1:
            src = frame[6:12]
            e = macs.get(src)
            if e is None or e.port is not port or now >= e.renew:
                self._table.learn(src, vl.vid, port, now)
        if not frame[0] & 1:
            e = macs.get(frame[0:6])
            if e is not None and now - e.seen <= self._table.expiretime:
                p = e.port
                if p is port:
                    return
                if p._uvlan is vl:
                    if wasTagged:
                        frame = frame[:12] + frame[16:]
                elif not wasTagged:
                    frame = frame[:12] + vl.tag + frame[12:]
                deliver(p, frame, len(frame))
                return
        if wasTagged:
            same, other = vl.tagged, vl.untagged
        else:
            same, other = vl.untagged, vl.tagged
        flood(same, port, frame, n)
        if other:
            if wasTagged:
                frame = frame[:12] + frame[16:]
                n -= 4
            else:
                frame = frame[:12] + vl.tag + frame[12:]
                n += 4
            flood(other, port, frame, n)

    hostInput = input


class MultiEngine(Engine):
    """
    C{multi://}: frames from any port go to the host only; frames from the
    host go to every port (the same frame once per link: duplicates are
    expected).  Ports never talk to each other.  Without a host port,
    frames from ports go nowhere.
    """

    name = "multi"

    def __init__(self) -> None:
        self._ports: tuple = ()
        self._host: Optional[Port] = None

    def rebuild(self) -> None:
        node = self.node
        assert node is not None, "rebuild of a detached engine"
        self._ports = tuple(p for p in node.activePorts() if not p.isHost)
        host = node.hostPort
        self._host = host if host is not None and host.endpoints else None

    def input(self, port, frame: bytes, deliver=deliver, flood=flood) -> None:
        n = arrived(port, frame)
        if not n:
            return
        if self._host is not None:
            deliver(self._host, frame, n)

    def hostInput(self, port, frame: bytes, deliver=deliver, flood=flood) -> None:
        n = arrived(port, frame)
        if not n:
            return
        flood(self._ports, None, frame, n)


class BondingEngine(MultiEngine):
    """
    C{bonding://}: frames from any port go to the host only; each frame from
    the host goes to B{one} port, round robin exactly as vdeplug4 does it:
    C{last = (last + 1) % nports}, then C{links[last]}, with C{last}
    starting at 0 (so with two or more links the first frame goes to the
    second link).

    C{links} is kept in vdeplug4's endpoint-array order: a new link is
    appended; a link that goes away is replaced by the last one ("swap the
    last into the hole"), and C{last} is not adjusted.  With links A, B, C
    the host's frames go to B, C, A, B, ...; if A leaves after the first
    frame the array is [C, B] and the next frames go to C, B, C, ...

    With no link, frames from the host are dropped (counted in the host
    port's C{inDropped}).
    """

    name = "bonding"

    def __init__(self) -> None:
        super().__init__()
        self.links: list = []
        self.last = 0

    def attach(self, node) -> None:
        self.links = [p for p in node.activePorts() if not p.isHost]
        self.last = 0
        super().attach(node)

    def portUp(self, port) -> None:
        if not port.isHost and port not in self.links:
            self.links.append(port)
        self.rebuild()

    def portDown(self, port) -> None:
        links = self.links
        if port in links:
            i = links.index(port)
            last = links.pop()
            if i < len(links):
                links[i] = last
        self.rebuild()

    def hostInput(self, port, frame: bytes, deliver=deliver, flood=flood) -> None:
        n = arrived(port, frame)
        if not n:
            return
        links = self.links
        if not links:
            port.inDropped += 1
            return
        self.last = last = (self.last + 1) % len(links)
        deliver(links[last], frame, n)


def netnodeEngine(kind: str) -> Optional[Engine]:
    """
    A new engine for a vdeplug4 netnode scheme (C{hub}, C{switch}, C{multi},
    C{bonding}), or C{None} for anything else.
    """
    factory = {
        "hub": HubEngine,
        "switch": TrunkSwitchEngine,
        "multi": MultiEngine,
        "bonding": BondingEngine,
    }.get(kind)
    return None if factory is None else factory()
