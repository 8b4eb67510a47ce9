"""
A node joins plugs with a forwarding engine.

Ports are numbered like vde_switch's.  Each port holds zero or more
I{endpoints} (plugs: vde_switch lets several cables share a port; netnode
gives every client its own port); a frame for a port goes to all its
endpoints, and a frame never goes back to the port it came from.  A port
without endpoints is I{inactive}: it is deleted, unless it is persistent
(created with L{Node.createPort}, or every port when the node was made with
C{keepInactivePorts=True}, as vde_switch keeps counters and VLANs of
inactive ports).

The I{host port} is the process's own side, as in vdeplug4's netnode: the
plug returned by L{Node.openHost} (or any plug added with C{host=True})
receives what the engine gives the host, and what it sends enters the node
from the host port.

Flow control: the node never pauses a plug's delivery because another port
is slow.  Output is C{plug.send}, which drops (and counts, in
C{plug.stats.dropped}, shown as L{Port.outDropped}) what its queue cannot
take, the way vde_switch drops on EAGAIN; a slow port loses its own frames
and the others keep going.

Taps and mirrors (captures, L{Node.mirror}): a I{tap} is a callable given
every frame a port receives or is sent (or, on the node, every frame any
port receives).  Tapped ports get other bound callables (L{Node._bind},
L{Port._updateOutput}); the others keep theirs, so while nothing is tapped
no frame pays for the feature.

Time comes from an injected L{twisted.internet.interfaces.IReactorTime}; this
module never imports the global reactor.
"""

from __future__ import annotations

import errno
from functools import partial
from typing import Any, Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from vdetwist.errors import PlugClosed, VdeError
from vdetwist._transport.vnet import (
    SOFTWARE_OFFLOADS,
    VNET_FRAME_MAX,
    VNET_FRAME_MIN,
    DeliveryCache,
)
from vdetwist.interfaces import IFrameReceiver, IVdePlug, IVnetPlug, IVnetReceiver
from vdetwist.node.engines import Engine, _Vlan
from vdetwist.node.mactable import NOVLAN, MacTable, formatMac
from vdetwist.node.vnet import vnetIngress
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, PlugBase
from vdetwist.wire.gso import BadVnetFrame, segment
from vdetwist.wire.vnethdr import VNET_HDRLEN

log = Logger()

#: Largest VLAN id vlan/create accepts (4094 and 4095 are reserved).
MAX_VLAN = 4093


class INodeObserver(Interface):
    """
    Told about a node's changes (for logs and the vde_switch console's
    C{debug} categories).  Subclass L{NodeObserver} to implement only some.
    None of these is called per frame.
    """

    def portAdded(port) -> None:
        """
        A port was allocated (C{port/+}).
        """

    def portRemoved(port) -> None:
        """
        A port was deleted (C{port/-}); its addresses are already purged.
        """

    def endpointAdded(port, plug) -> None:
        """
        A plug joined C{port} (C{port/ep/+}).
        """

    def endpointRemoved(port, plug, reason) -> None:
        """
        A plug left C{port} (C{port/ep/-}); C{reason} is the L{twisted.python.failure.Failure}
        its C{plugClosed} gave, or C{None} when the node removed it.
        """

    def macAdded(mac, vlan, port) -> None:
        """
        An address was learned (C{hash/+}).
        """

    def macRemoved(mac, vlan, port) -> None:
        """
        An address was forgotten (C{hash/-}): expiry, port gone, flush.
        """

    def macMoved(mac, vlan, oldPort, newPort) -> None:
        """
        A live address moved to another port.
        """


@implementer(INodeObserver)
class NodeObserver:
    """
    An L{INodeObserver} that ignores everything.
    """

    def portAdded(self, port) -> None:
        pass

    def portRemoved(self, port) -> None:
        pass

    def endpointAdded(self, port, plug) -> None:
        pass

    def endpointRemoved(self, port, plug, reason) -> None:
        pass

    def macAdded(self, mac, vlan, port) -> None:
        pass

    def macRemoved(self, mac, vlan, port) -> None:
        pass

    def macMoved(self, mac, vlan, oldPort, newPort) -> None:
        pass


class LoggingObserver(NodeObserver):
    """
    Logs MAC moves like vde_switch (C{MAC xx:.. moved from port A to port
    B}).  Port and endpoint changes are always logged by the node itself.
    """

    def __init__(self, logger: Optional[Logger] = None) -> None:
        self.log = logger if logger is not None else log

    def macMoved(self, mac, vlan, oldPort, newPort) -> None:
        self.log.warn(
            "MAC {mac} moved from port {old} to port {new}",
            mac=formatMac(mac),
            vlan=vlan,
            old=_portName(oldPort),
            new=_portName(newPort),
        )


def _portName(port) -> str:
    return "host" if port.isHost else str(port.number)


def _discard(frame: bytes) -> None:
    pass


def _sendAll(sends: tuple, frame: bytes) -> None:
    for send in sends:
        send(frame)


def _tapped(taps: tuple, forward, frame: bytes) -> None:
    for tap in taps:
        tap(frame)
    forward(frame)


def _vnetTapped(taps: tuple, forward, frame: bytes) -> None:
    """
    L{_tapped} for a vnet frame: taps see its Ethernet frame (as a capture
    on an offloading interface does), mirror ports its segments, plain and
    checksummed (made once, whatever the number of mirror ports).
    """
    eth = frame[VNET_HDRLEN:]
    plain = None
    for tap in taps:
        if type(tap) is _MirrorTap:
            if plain is None:
                try:
                    plain = segment(frame)
                except BadVnetFrame:
                    plain = []
            for one in plain:
                tap(one)
        else:
            tap(eth)
    forward(frame)


class _MirrorTap:
    """
    The tap a mirror port puts on each port it mirrors: it sends the frames
    it is given to the mirror port.  Its own type, so that L{_vnetTapped}
    gives it plain frames: a mirror port's plugs may take nothing else, and
    a super-frame would be dropped as too long.
    """

    __slots__ = ("port",)

    def __init__(self, port: "Port") -> None:
        self.port = port

    def __call__(self, frame: bytes) -> None:
        self.port.mirrorFrame(frame)

    def __eq__(self, other: object) -> bool:
        return type(other) is _MirrorTap and other.port is self.port

    def __hash__(self) -> int:
        return id(self.port)


def _refused(port: "Port", frame: bytes) -> None:
    """
    What a mirror port sends: it does not enter the node.
    """
    port.inDropped += 1


class Port:
    """
    One port of a L{Node}.

    @ivar number: the port number (C{None} for the host port).
    @ivar isHost: whether this is the host port.
    @ivar endpoints: the plugs attached, in joining order (do not mutate).
    @ivar allocatable: whether automatic allocation may reuse this port
        while inactive (C{False} for ports made by L{Node.createPort}).
    @ivar persistent: whether the port survives losing its last endpoint.
    @ivar untaggedVlan: the VLAN of untagged frames (0; C{NOVLAN} = none).
    @ivar taggedVlans: the VLANs this port carries tagged (a set; change it
        through L{Node.addPortVlan}/L{Node.removePortVlan}).
    @ivar inFrames: frames received (not counting frames dropped as too
        short); C{inBytes} likewise.
    @ivar outFrames: frames given to this port's endpoints (once per frame,
        whatever the number of endpoints); C{outBytes} likewise.
    @ivar inDropped: received frames the node dropped: too short, VLAN not
        allowed on this port, or (bonding host) no link (L{receiveDropped}
        adds what the endpoints' plugs discarded before).
    @ivar output: the callable the engines use to send a frame to this
        port's endpoints.
    @ivar offloads: the C{TUN_F_*} offloads every endpoint takes in vnet
        frames (L{vdetwist.interfaces.IVnetPlug.offloads}; 0 if one is not
        an C{IVnetPlug}): what L{vnetOutput} may be given as it is.  Read
        when an endpoint joins or leaves (our plugs know theirs from the
        start).
    @ivar vnetOutput: the callable that sends a vnet frame to this port's
        endpoints.
    @ivar vnetIn: vnet frames with a header that is not plain received
        (super-frames, partial checksums); a lying one is counted in
        C{inDropped} instead.
    @ivar vnetOut: such frames sent as they are (C{outFrames} counts them
        too, and every segment of those sent segmented).
    @ivar taps: callables given every frame this port receives or is sent
        (change them through L{Node.addTap}).
    @ivar mirrorSources: the ports this port mirrors (L{Node.mirror}): while
        there are any, it is a I{mirror port}, out of forwarding.
    """

    __slots__ = (
        "node",
        "number",
        "isHost",
        "endpoints",
        "_links",
        "allocatable",
        "persistent",
        "untaggedVlan",
        "taggedVlans",
        "inFrames",
        "inBytes",
        "outFrames",
        "outBytes",
        "inDropped",
        "_droppedBase",
        "_discardedBase",
        "output",
        "offloads",
        "vnetOutput",
        "vnetIn",
        "vnetOut",
        "taps",
        "mirrorSources",
        "_mirrorOutput",
        "_uvlan",
        "_vmembers",
        "__weakref__",
    )

    def __init__(
        self,
        node: "Node",
        number: Optional[int],
        isHost: bool = False,
        allocatable: bool = True,
        persistent: bool = False,
    ) -> None:
        self.node = node
        self.number = number
        self.isHost = isHost
        self.endpoints: list = []
        self._links: list[_PortReceiver] = []
        self.allocatable = allocatable
        self.persistent = persistent
        self.untaggedVlan = 0
        self.taggedVlans: set[int] = set()
        self.inFrames = 0
        self.inBytes = 0
        self.outFrames = 0
        self.outBytes = 0
        self.inDropped = 0
        # outDropped = _droppedBase + sum(plug.stats.dropped of endpoints)
        self._droppedBase = 0
        # likewise for the endpoints' plug.stats.discarded
        self._discardedBase = 0
        self.output = _discard
        self.offloads = 0
        self.vnetOutput = _discard
        self.vnetIn = self.vnetOut = 0
        self.taps: tuple = ()
        self.mirrorSources: tuple = ()
        self._mirrorOutput = _discard
        self._uvlan: Optional[_Vlan] = None
        self._vmembers: dict = {}

    def __repr__(self) -> str:
        state = "active" if self.endpoints else "inactive"
        return f"<Port {_portName(self)} {state} endpoints={len(self.endpoints)}>"

    @property
    def active(self) -> bool:
        """
        Whether the port has at least one endpoint.
        """
        return bool(self.endpoints)

    @property
    def forwarding(self) -> bool:
        """
        Whether the engines use this port: it is active and not a mirror
        port.
        """
        return bool(self.endpoints) and not self.mirrorSources

    @property
    def outDropped(self) -> int:
        """
        Frames the endpoints' plugs could not send (their C{stats.dropped}),
        including plugs that have since left the port.
        """
        return self._droppedBase + sum(p.stats.dropped for p in self.endpoints)

    @property
    def receiveDropped(self) -> int:
        """
        Frames lost on the way in: those the node dropped (L{inDropped}) and
        those the endpoints' plugs read and discarded as not frames (their
        C{stats.discarded}: too short or long, a broken stream record),
        including plugs that have since left the port.
        """
        return (self.inDropped + self._discardedBase
                + sum(p.stats.discarded for p in self.endpoints))

    @property
    def dropped(self) -> int:
        """
        C{receiveDropped + outDropped}.
        """
        return self.receiveDropped + self.outDropped

    def resetCounters(self) -> None:
        """
        Zero every counter (vde_switch C{port/resetcounter}).
        """
        self.inFrames = self.inBytes = self.outFrames = self.outBytes = 0
        self.inDropped = self.vnetIn = self.vnetOut = 0
        self._droppedBase = -sum(p.stats.dropped for p in self.endpoints)
        self._discardedBase = -sum(p.stats.discarded for p in self.endpoints)

    def _updateOutput(self) -> None:
        plugs = [link.plug for link in self._links]
        output = _sender([plug.send for plug in plugs], _tapped, self.taps)
        if self.mirrorSources:
            self._mirrorOutput, self.output = output, _discard
        else:
            self._mirrorOutput = self.output = output
        offloads = -1
        for plug in plugs:
            offloads &= plug.offloads if IVnetPlug.providedBy(plug) else 0
        if offloads <= 0 or self.mirrorSources:
            self.offloads, self.vnetOutput = 0, _discard
        else:
            self.offloads = offloads
            # A plug that can skip checking what the ingress checked says so
            # with sendCheckedVnet (VnetDatagramPlug).
            self.vnetOutput = _sender(
                [getattr(plug, "sendCheckedVnet", plug.sendVnet) for plug in plugs],
                _vnetTapped, self.taps)

    def mirrorFrame(self, frame: bytes) -> None:
        """
        Send a copy of a mirrored port's frame (this port's tap on each of
        its L{mirrorSources}).
        """
        self.outFrames += 1
        self.outBytes += len(frame)
        self._mirrorOutput(frame)


def _sender(sends: list, tapped, taps: tuple):
    """
    One callable sending a frame with each of C{sends}, giving it to
    C{taps} first (through C{tapped}).
    """
    if not sends:
        output = _discard
    elif len(sends) == 1:
        output = sends[0]
    else:
        output = partial(_sendAll, tuple(sends))
    if taps:
        output = partial(tapped, taps, output)
    return output


@implementer(IVnetReceiver)
class _PortReceiver:
    """
    What the node gives each endpoint plug as its receiver.
    C{frameReceived} and C{vnetFrameReceived} are instance attributes:
    C{partial}s of the engine's input bound to the port, so delivering a
    frame is one call.
    """

    __slots__ = ("node", "port", "plug", "frameReceived", "vnetFrameReceived")

    def __init__(self, node: "Node", port: Port, plug: Any) -> None:
        self.node = node
        self.port: Optional[Port] = port
        self.plug = plug
        self.frameReceived = _discard
        self.vnetFrameReceived = _discard

    def plugClosed(self, reason: Failure) -> None:
        self.node._endpointClosed(self, reason)


class Node:
    """
    Ports joined by a forwarding engine.

    @param engine: an L{Engine} (see L{vdetwist.node.engines}).
    @param clock: an C{IReactorTime} (C{reactor}, or a
        L{twisted.internet.task.Clock} in tests).
    @param table: the L{MacTable} (a new default one if omitted); the node
        becomes its observer.
    @param numports: ports are numbered below this (C{None}: unbounded).
    @param firstPort: the lowest number automatic allocation uses (1, as
        vde_switch keeps port 0 for explicit requests).
    @param keepInactivePorts: keep ports (counters, VLANs) when their last
        endpoint leaves, as vde_switch does; netnode nodes delete them.

    @ivar vlans: the existing VLAN ids (VLAN 0 always exists).
    @ivar hostPort: the host L{Port}, or C{None}.
    """

    def __init__(
        self,
        engine: Engine,
        clock,
        table: Optional[MacTable] = None,
        *,
        numports: Optional[int] = None,
        firstPort: int = 1,
        keepInactivePorts: bool = False,
    ) -> None:
        self.clock = clock
        self.table = table if table is not None else MacTable(clock)
        self.table.observer = self
        self.numports = numports
        self.firstPort = firstPort
        self.keepInactivePorts = keepInactivePorts
        self.vlans: set[int] = {0}
        self.hostPort: Optional[Port] = None
        #: Taps given every frame any port receives.
        self.taps: tuple = ()
        self._ports: dict[int, Port] = {}
        self._observers: list = []
        self._gc: Optional[LoopingCall] = None
        self.engine: Engine = engine
        engine.attach(self)

    def __repr__(self) -> str:
        return f"<Node {self.engine.name} ports={len(self._ports)}>"

    # -- engine ---------------------------------------------------------

    def setEngine(self, engine: Engine) -> None:
        """
        Switch to another engine (vde_switch C{port/sethub}); ports, VLANs
        and the MAC table are kept.
        """
        self.engine.detach()
        self.engine = engine
        engine.attach(self)
        for port in self.allPorts():
            for link in port._links:
                self._bind(link)

    def _bind(self, link: _PortReceiver) -> None:
        port = link.port
        assert port is not None, "binding a detached link"
        if port.mirrorSources:
            link.frameReceived = link.vnetFrameReceived = partial(_refused, port)
            return
        engine = self.engine
        inp = engine.hostInput if port.isHost else engine.input
        taps = port.taps + self.taps
        link.frameReceived = partial(inp, port)
        link.vnetFrameReceived = partial(vnetIngress, inp, port)
        if taps:
            link.frameReceived = partial(_tapped, taps, link.frameReceived)
            link.vnetFrameReceived = partial(_vnetTapped, taps, link.vnetFrameReceived)

    def _rewire(self, port: Port) -> None:
        for link in port._links:
            self._bind(link)
        port._updateOutput()

    # -- ports ----------------------------------------------------------

    @property
    def ports(self) -> dict[int, Port]:
        """
        The numbered ports (active or not) by number; a copy.
        """
        return dict(sorted(self._ports.items()))

    def getPort(self, number: int) -> Optional[Port]:
        """
        The port numbered C{number}, or C{None}.
        """
        return self._ports.get(number)

    def allPorts(self) -> list[Port]:
        """
        The numbered ports in number order, then the host port if any.
        """
        result = [p for _, p in sorted(self._ports.items())]
        if self.hostPort is not None:
            result.append(self.hostPort)
        return result

    def activePorts(self) -> list[Port]:
        """
        L{allPorts} that forward (L{Port.forwarding}): active, not mirror
        ports.
        """
        return [p for p in self.allPorts() if p.forwarding]

    def _checkNumber(self, number: int) -> None:
        if number < 0 or (self.numports is not None and number >= self.numports):
            raise VdeError(
                f"port {number} out of range (0..{self.numports - 1 if self.numports else 'any'})",
                errno.EINVAL,
            )

    def _newPort(self, number: int, allocatable: bool, persistent: bool) -> Port:
        port = Port(self, number, allocatable=allocatable, persistent=persistent)
        self._ports[number] = port
        self.engine.rebuild()
        for o in self._observers:
            o.portAdded(port)
        return port

    def createPort(self, number: Optional[int] = None, allocatable: bool = False) -> Port:
        """
        Create an inactive, persistent port (vde_switch C{port/create N},
        or C{port/createauto} with no number: the lowest free number).
        Such a port is not reused by automatic allocation unless
        C{allocatable}, but L{addPort} with its number joins it.

        @raise VdeError: C{EEXIST} if the number is taken, C{EINVAL} if out
            of range, C{ENOSPC} if no number is free.
        """
        if number is None:
            number = self.firstPort
            while number in self._ports:
                number += 1
            if self.numports is not None and number >= self.numports:
                raise VdeError("no free port", errno.ENOSPC)
        else:
            self._checkNumber(number)
            if number in self._ports:
                raise VdeError(f"port {number} exists", errno.EEXIST)
        return self._newPort(number, allocatable, True)

    def addPort(self, plug: Any, number: Optional[int] = None, host: bool = False) -> Port:
        """
        Attach C{plug} (an L{IVdePlug}) as an endpoint and start receiving
        from it.

        @param number: C{None}: the lowest port >= C{firstPort} that does
            not exist or is inactive and allocatable; a number: that port,
            created if needed, joined as one more endpoint if it exists.
        @param host: attach C{plug} as the host port instead (C{number} is
            ignored; a node has at most one host port, with one endpoint).
        @return: the L{Port}.
        @raise VdeError: C{ENOSPC} when every port is taken, C{EINVAL} for
            a number out of range, C{EEXIST} for a second host.
        """
        if host:
            if self.hostPort is not None:
                raise VdeError("the node already has a host port", errno.EEXIST)
            port = self.hostPort = Port(self, None, isHost=True)
            for o in self._observers:
                o.portAdded(port)
        elif number is None:
            port = self._allocate()
        else:
            self._checkNumber(number)
            found = self._ports.get(number)
            if found is None:
                found = self._newPort(number, True, self.keepInactivePorts)
            port = found
        link = _PortReceiver(self, port, plug)
        self._bind(link)
        wasActive = bool(port.endpoints)
        port._links = port._links + [link]
        port.endpoints = port.endpoints + [plug]
        port._droppedBase -= plug.stats.dropped
        port._discardedBase -= plug.stats.discarded
        port._updateOutput()
        if not wasActive and port.forwarding:
            self.engine.portUp(port)
        log.info(
            "port {port} connected: {description}",
            port=_portName(port),
            description=getattr(plug, "description", ""),
        )
        for o in self._observers:
            o.endpointAdded(port, plug)
        plug.startReceiving(link)
        if link.port is not None and getattr(plug, "closed", False):
            # A plug that was closed before it was added never calls
            # plugClosed again: do not keep a dead endpoint.
            self._endpointClosed(
                link, Failure(PlugClosed(f"{getattr(plug, 'description', plug)} closed"))
            )
        return port

    def _allocate(self) -> Port:
        number = self.firstPort
        while self.numports is None or number < self.numports:
            port = self._ports.get(number)
            if port is None:
                return self._newPort(number, True, self.keepInactivePorts)
            if port.allocatable and not port.endpoints:
                return port
            number += 1
        raise VdeError("no free port", errno.ENOSPC)

    def _unlink(self, port: Port, link: _PortReceiver, reason) -> None:
        """
        Take one endpoint off C{port} (bookkeeping and notifications only).
        """
        link.port = None
        link.frameReceived = link.vnetFrameReceived = _discard
        plug = link.plug
        port._links = [l for l in port._links if l is not link]
        port.endpoints = [p for p in port.endpoints if p is not plug]
        port._droppedBase += plug.stats.dropped
        port._discardedBase += plug.stats.discarded
        port._updateOutput()
        log.info(
            "port {port} disconnected: {description}",
            port=_portName(port),
            description=getattr(plug, "description", ""),
        )
        for o in self._observers:
            o.endpointRemoved(port, plug, reason)

    def _endpointClosed(self, link: _PortReceiver, reason: Failure) -> None:
        port = link.port
        if port is None:
            return
        self._unlink(port, link, reason)
        if port.endpoints:
            return
        self.engine.portDown(port)
        self.table.purgePort(port)
        if port.isHost or not port.persistent:
            self._delete(port)

    def _delete(self, port: Port) -> None:
        for target in [p for p in self.allPorts() if port in p.mirrorSources]:
            self.unmirror(port, target)
        for source in port.mirrorSources:
            self.unmirror(source, port)
        if port.isHost:
            if self.hostPort is not port:
                return
            self.hostPort = None
        else:
            number = port.number
            if number is None or self._ports.get(number) is not port:
                return
            del self._ports[number]
        self.engine.rebuild()
        for o in self._observers:
            o.portRemoved(port)

    def removePort(self, port: Port) -> None:
        """
        Delete C{port}: its endpoints are detached and closed, its addresses
        forgotten.  (vde_switch's C{port/remove} refuses active ports: that
        check is the console's.)

        @raise VdeError: C{ENXIO} if C{port} is not a port of this node.
        """
        if port.isHost:
            known = self.hostPort is port
        else:
            number = port.number
            known = number is not None and self._ports.get(number) is port
        if not known:
            raise VdeError(f"no port {port.number}", errno.ENXIO)
        links = list(port._links)
        for link in links:
            self._unlink(port, link, None)
        if links:
            self.engine.portDown(port)
        self.table.purgePort(port)
        self._delete(port)
        for link in links:
            link.plug.close()

    def openHost(self, description: str = "host") -> "HostPlug":
        """
        Create the host port and return the plug that is the process's side
        of it (what C{switch://...} returns to its opener): frames sent on it
        enter the node from the host port; frames the engine gives the host
        are delivered to its receiver.  Closing it removes the host port;
        closing the node (L{close}) closes it.
        """
        mine, node = hostPair(description)
        self.addPort(node, host=True)
        return mine

    # -- VLANs ----------------------------------------------------------

    def _vlanMembers(self, vid: int) -> list[Port]:
        return [
            p
            for p in self.allPorts()
            if p.untaggedVlan == vid or vid in p.taggedVlans
        ]

    def vlanMembers(self, vid: int) -> list[tuple[Port, bool]]:
        """
        The ports (active or not) that are members of VLAN C{vid}, in port
        order, each with whether it is a tagged member.
        """
        return [(p, p.untaggedVlan != vid) for p in self._vlanMembers(vid)]

    def createVlan(self, vid: int) -> None:
        """
        vde_switch C{vlan/create}.

        @raise VdeError: C{EINVAL} outside 1..4093, C{EEXIST} if it exists.
        """
        if not 1 <= vid <= MAX_VLAN:
            raise VdeError(f"VLAN {vid} out of range 1..{MAX_VLAN}", errno.EINVAL)
        if vid in self.vlans:
            raise VdeError(f"VLAN {vid} exists", errno.EEXIST)
        self.vlans.add(vid)
        self.engine.rebuild()

    def removeVlan(self, vid: int) -> None:
        """
        vde_switch C{vlan/remove}.

        @raise VdeError: C{ENXIO} if it does not exist, C{EINVAL} for VLAN 0
            (the default VLAN cannot go), C{EADDRINUSE} while ports are
            members.
        """
        if vid == 0:
            raise VdeError("VLAN 0 cannot be removed", errno.EINVAL)
        if vid not in self.vlans:
            raise VdeError(f"no VLAN {vid}", errno.ENXIO)
        if self._vlanMembers(vid):
            raise VdeError(f"VLAN {vid} has member ports", errno.EADDRINUSE)
        self.vlans.discard(vid)
        self.engine.rebuild()

    def setPortVlan(self, port: Port, vid: int) -> None:
        """
        Set C{port}'s untagged VLAN (vde_switch C{port/setvlan}); C{NOVLAN}
        (4095) means no untagged traffic.  A tagged membership of C{vid} is
        replaced by the untagged one.  The port's addresses are forgotten.

        @raise VdeError: C{ENXIO} if the VLAN does not exist.
        """
        if vid != NOVLAN and vid not in self.vlans:
            raise VdeError(f"no VLAN {vid}", errno.ENXIO)
        port.untaggedVlan = vid
        port.taggedVlans.discard(vid)
        self.table.purgePort(port)
        self.engine.rebuild()

    def addPortVlan(self, vid: int, port: Port) -> None:
        """
        Make C{port} a tagged member of C{vid} (vde_switch C{vlan/addport}).

        @raise VdeError: C{ENXIO} if the VLAN does not exist, C{EADDRINUSE}
            if it is the port's untagged VLAN, C{EEXIST} if already tagged.
        """
        if vid not in self.vlans:
            raise VdeError(f"no VLAN {vid}", errno.ENXIO)
        if port.untaggedVlan == vid:
            raise VdeError(f"VLAN {vid} is untagged on this port", errno.EADDRINUSE)
        if vid in port.taggedVlans:
            raise VdeError(f"port is already in VLAN {vid}", errno.EEXIST)
        port.taggedVlans.add(vid)
        self.engine.rebuild()

    def removePortVlan(self, vid: int, port: Port) -> None:
        """
        End C{port}'s tagged membership of C{vid} (vde_switch
        C{vlan/delport}); the port's addresses are forgotten.

        @raise VdeError: C{ENXIO} if the VLAN does not exist or the port is
            not a tagged member, C{EADDRINUSE} if it is the port's untagged
            VLAN.
        """
        if vid not in self.vlans:
            raise VdeError(f"no VLAN {vid}", errno.ENXIO)
        if port.untaggedVlan == vid:
            raise VdeError(f"VLAN {vid} is untagged on this port", errno.EADDRINUSE)
        if vid not in port.taggedVlans:
            raise VdeError(f"port is not in VLAN {vid}", errno.ENXIO)
        port.taggedVlans.discard(vid)
        self.table.purgePort(port)
        self.engine.rebuild()

    def setNumports(self, numports: int) -> None:
        """
        vde_switch C{port/setnumports}.

        @raise VdeError: C{EADDRINUSE} if a port numbered C{numports} or
            more exists, C{EINVAL} if C{numports} < 1.
        """
        if numports < 1:
            raise VdeError("the number of ports must be positive", errno.EINVAL)
        if any(n >= numports for n in self._ports):
            raise VdeError("ports above the new limit exist", errno.EADDRINUSE)
        self.numports = numports

    # -- taps and mirrors -----------------------------------------------

    def addTap(self, port: Optional[Port], tap) -> None:
        """
        Give C{tap} every frame C{port} receives (before the engine sees it)
        or is sent; with C{port} C{None}, every frame any port receives
        (each frame entering the node once).
        """
        if port is None:
            self.taps = self.taps + (tap,)
            for p in self.allPorts():
                for link in p._links:
                    self._bind(link)
        else:
            port.taps = port.taps + (tap,)
            self._rewire(port)

    def removeTap(self, port: Optional[Port], tap) -> None:
        """
        Undo L{addTap}.
        """
        self.replaceTap(port, tap, None)

    def replaceTap(self, port: Optional[Port], old, new) -> None:
        """
        Put C{new} (or nothing) where C{old} was, without a frame in
        between going to neither.
        """
        owner = self if port is None else port
        taps = tuple(t for t in owner.taps if t != old)
        owner.taps = taps if new is None else taps + (new,)
        if port is None:
            for p in self.allPorts():
                for link in p._links:
                    self._bind(link)
        else:
            self._rewire(port)

    def mirror(self, source: Port, target: Port) -> None:
        """
        Make C{target} a mirror port of C{source}: it gets a copy of every
        frame C{source} receives or is sent, and nothing else (it leaves
        forwarding: frames its endpoints send are dropped, counted in its
        C{inDropped}, and its addresses are forgotten).

        @raise VdeError: C{EINVAL} if the ports are the same, or if
            C{source} is a mirror port or C{target} is mirrored (mirrors do
            not chain, so they cannot loop); C{EEXIST} if already mirrored.
        """
        if source is target:
            raise VdeError("a port cannot mirror itself", errno.EINVAL)
        if source.mirrorSources:
            raise VdeError(f"port {_portName(source)} is a mirror port", errno.EINVAL)
        if any(target in p.mirrorSources for p in self.allPorts()):
            raise VdeError(f"port {_portName(target)} is mirrored", errno.EINVAL)
        if source in target.mirrorSources:
            raise VdeError(
                f"port {_portName(target)} mirrors port {_portName(source)} already",
                errno.EEXIST,
            )
        wasForwarding = target.forwarding
        target.mirrorSources = target.mirrorSources + (source,)
        if wasForwarding:
            self.engine.portDown(target)
        self.table.purgePort(target)
        self._rewire(target)
        self.addTap(source, _MirrorTap(target))

    def unmirror(self, source: Port, target: Port) -> None:
        """
        Undo L{mirror}; a port mirroring nothing more forwards again.

        @raise VdeError: C{ENXIO} if C{target} does not mirror C{source}.
        """
        if source not in target.mirrorSources:
            raise VdeError(
                f"port {_portName(target)} does not mirror port {_portName(source)}",
                errno.ENXIO,
            )
        self.removeTap(source, _MirrorTap(target))
        target.mirrorSources = tuple(p for p in target.mirrorSources if p is not source)
        self._rewire(target)
        if target.forwarding:
            self.engine.portUp(target)

    # -- observers ------------------------------------------------------

    def addObserver(self, observer: INodeObserver) -> None:
        """
        Start telling C{observer} about ports, endpoints and addresses.
        """
        self._observers.append(observer)

    def removeObserver(self, observer: INodeObserver) -> None:
        self._observers.remove(observer)

    # MacTable observer protocol: fan out.
    def macAdded(self, mac: bytes, vlan: int, port: Port) -> None:
        for o in self._observers:
            o.macAdded(mac, vlan, port)

    def macRemoved(self, mac: bytes, vlan: int, port: Port) -> None:
        for o in self._observers:
            o.macRemoved(mac, vlan, port)

    def macMoved(self, mac: bytes, vlan: int, oldPort: Port, newPort: Port) -> None:
        for o in self._observers:
            o.macMoved(mac, vlan, oldPort, newPort)

    # -- life -----------------------------------------------------------

    def start(self) -> None:
        """
        Start collecting expired addresses every C{table.gcInterval}
        seconds (expiry itself does not need it: lookups check age).
        """
        if self._gc is not None:
            return
        self._gc = LoopingCall(self.table.expire)
        self._gc.clock = self.clock
        self._gc.start(self.table.gcInterval, now=False)

    def stop(self) -> None:
        """
        Stop the collector.
        """
        gc, self._gc = self._gc, None
        if gc is not None and gc.running:
            gc.stop()

    def setGCInterval(self, seconds: float) -> None:
        """
        vde_switch C{hash/setgcint}: change the collector's period.
        """
        self.table.gcInterval = seconds
        if self._gc is not None:
            self.stop()
            self.start()

    def close(self) -> None:
        """
        Stop, remove every port and close every plug (the host plug too).
        """
        self.stop()
        for port in self.allPorts():
            # Closing one port's plug may already have removed another.
            if port is self.hostPort or (
                port.number is not None and self._ports.get(port.number) is port
            ):
                self.removePort(port)


@implementer(IVnetPlug)
class HostPlug(PlugBase):
    """
    One side of a direct, unbuffered link: what one side sends is handed at
    once to the other side's receiver.  L{Node.openHost} gives one side to
    the node as its host endpoint and returns the other.

    Vnet frames cross it whole (to a receiver that takes them; a plain
    receiver gets their segments), so it accepts every offload software
    segmentation undoes.

    While a side is paused or not yet receiving, frames for it are dropped
    and counted in the I{sender's} C{stats.dropped} (for the node side,
    that is the host port's L{Port.outDropped}): the node never waits for
    its host.
    """

    offloads = SOFTWARE_OFFLOADS

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.peer: Optional[HostPlug] = None
        self.paused = False
        self.reading = False
        self._vnetSinks = DeliveryCache(self._badSent)

    def send(self, frame: bytes) -> None:
        peer = self.peer
        if (peer is None or peer.paused or not peer.reading
                or not ETH_HDRLEN <= len(frame) <= VDE_ETHBUFSIZE):
            self.stats.dropped += 1
            return
        self.stats.sent += 1
        peer.stats.received += 1
        peer.receiver.frameReceived(frame)

    def sendVnet(self, frame: bytes) -> None:
        peer = self.peer
        if (peer is None or peer.paused or not peer.reading
                or not VNET_FRAME_MIN <= len(frame) <= VNET_FRAME_MAX):
            self.stats.dropped += 1
            return
        self.stats.sent += 1
        peer.stats.received += 1
        peer._vnetSinks(peer.receiver)(frame)

    def _startReading(self) -> None:
        self.reading = True

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def _release(self) -> None:
        self.reading = False
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            peer._lost(Failure(PlugClosed(f"{self.description} closed")))


def hostPair(description: str = "host") -> tuple[HostPlug, HostPlug]:
    """
    Two L{HostPlug}s linked to each other: (the process's side, the node's
    side).
    """
    mine = HostPlug(description)
    theirs = HostPlug(f"{description} (node side)")
    mine.peer, theirs.peer = theirs, mine
    return mine, theirs

