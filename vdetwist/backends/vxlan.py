"""
C{vxlan://[GROUP][/OPTION...]}: a VXLAN segment (RFC 7348) that Linux
kernel VXLAN devices (C{ip link add ... type vxlan id N dstport 4789 group
G}) can join, wire-compatible with libvdeplug4's vxlan plugin.

One UDP socket, bound to the wildcard address and the VXLAN port (4789),
joined to the group, multicast loopback off: everything is sent from it.
Broadcast, multicast and frames to unknown MACs go to C{GROUP:port}; frames
to a learned MAC go to the IP address the MAC was last seen from, at the
VXLAN port (VTEPs send from arbitrary source ports but listen on the VXLAN
port).

B{The C plugin's unicast is broken} (vdeplug4 4.0.1 and later): its receive
path gives C{recvmsg} an uninitialised address length, so it never learns a
usable peer address and every frame to a known MAC fails with
EDESTADDRREQ; only flooded traffic (ARP) gets through.  This module does
what the C code means to do, unicast to C{<sender IP>:<port>}: the datagrams
are exactly those the C plugin would send if it worked, so nothing changes
on the wire for peers.

Also unlike C: C{v4}/C{v6} restrict the group's address family (in C the
restriction is computed before the options are parsed and never applies).

Options: C{port} (4789), C{vni} (1, a number), C{ttl} (1, multicast only),
C{rcvbuf}, C{v4}/C{v6}, C{hashsize} (1024), C{expiretime} (128 s), C{if}.
"""

from __future__ import annotations

import errno
import socket
from functools import partial
from typing import Any, Optional

from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist._transport.multicast import (
    joinGroup,
    openFirstGroupAddress,
    requireMulticast,
    scoped,
    setMulticastSending,
    setReceiveBuffer,
)
from vdetwist._transport.overlay import (
    VX_OPTIONS,
    VxBackendBase,
    VxPlugBase,
)
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.reference import Option, SchemeReference
from vdetwist.wire.vxlan import (
    DEFAULT_GROUP4,
    DEFAULT_VNI,
    LEARN_VLAN,
    RECV_SIZE,
    VNI_MASK,
    VXLAN_PORT,
    Verdict,
    VxConfig,
    checkVxlan,
    commonOptions,
    integerOption,
)


def _makeVxlanSocket(config: VxConfig, family: int, group: tuple, ifindex: int):
    requireMulticast(family, group)
    group = scoped(family, group, ifindex)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        setReceiveBuffer(sock, config.rcvbuf)
        wildcard = "0.0.0.0" if family == socket.AF_INET else "::"
        sock.bind((wildcard, config.port))
        joinGroup(sock, family, group, ifindex)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        setMulticastSending(sock, family, config.ttl, ifindex, unicastTTL=False)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock, group, family


def openVxlanSocket(
    config: VxConfig, ifindex: Optional[int] = None
) -> tuple[socket.socket, tuple, int]:
    """
    Resolve the group, make and join the socket: C{(socket, group sockaddr,
    family)}.

    @param ifindex: the C{if} interface's index, if already looked up.
    @raise VdeError: nothing worked (for instance the port is taken, by
        another vxlan:// or a kernel VXLAN device in this namespace).
    """
    def failed(failure: OSError) -> str:
        hint = ""
        if failure.errno == errno.EADDRINUSE:
            hint = " (another vxlan:// or a kernel VXLAN device uses that port here)"
        return (
            f"cannot open VXLAN port {config.port} for group {config.group}: "
            f"{failure.strerror or failure}{hint}"
        )

    return openFirstGroupAddress(config, ifindex, _makeVxlanSocket, failed)


#: The options, in C's order: a key names the first entry it abbreviates.
VXLAN_OPTIONS = (
    "port", "vni", "ttl", "rcvbuf", "v6", "v4", "hashsize", "expiretime", "if",
)

REFERENCE = SchemeReference(
    scheme="vxlan",
    synopsis="vxlan://[GROUP][/OPTION...]",
    description=(
        "A VXLAN segment (RFC 7348) that Linux VXLAN devices (`ip link add NAME type "
        f"vxlan id VNI dstport {VXLAN_PORT} group GROUP`) and the C plugin can join. "
        "Broadcast, multicast and frames to unknown addresses go to the multicast "
        "GROUP, frames to a learned address to the peer's IP address at the VXLAN "
        "port. One member per host and port: the socket is bound to the port."
    ),
    grammar="slash",
    table=VXLAN_OPTIONS,
    options=tuple(
        {
            "port": Option("port", VX_OPTIONS["port"].meaning, "PORT", str(VXLAN_PORT)),
            "vni": Option("vni", "Virtual network identifier, a number (24 bits).", "VNI",
                          str(DEFAULT_VNI)),
            "ttl": Option("ttl", "Time to live of multicast datagrams.", "TTL",
                          VX_OPTIONS["ttl"].default),
        }.get(name, VX_OPTIONS[name])
        for name in VXLAN_OPTIONS
    ),
    examples=(
        ("vxlan://", f"group `{DEFAULT_GROUP4}`, port {VXLAN_PORT}, VNI {DEFAULT_VNI}"),
        ("vxlan://239.1.2.3/vni=42", "VNI 42 on group 239.1.2.3"),
    ),
    differences=(
        "Unicast works: the C plugin (4.0.1 and later) never learns a usable peer "
        "address, so only flooded frames get through; the datagrams sent are those "
        "C means to send.",
        "`v4`/`v6` do restrict the group's family (in C they never apply).",
        "A malformed number (`vni=x`, `port=0`) is an error naming the option.",
    ),
    manual="libvdeplug_vxlan",
)


def parseVxlan(vnl) -> VxConfig:
    """
    Parse C{vxlan://[GROUP][/OPTION...]} (options C{port, vni, ttl, rcvbuf,
    v6, v4, hashsize, expiretime, if}).  C{vni} is a number only.

    Unlike the C plugin (whose C{v4}/C{v6} restriction is computed before
    the options are read, so it never applies) C{v4} and C{v6} do restrict
    the group's address family.

    @raise VNLError: an unknown option or a malformed value.
    """
    _, options, values = commonOptions(vnl, VXLAN_OPTIONS, VXLAN_PORT)
    vni = DEFAULT_VNI
    if "vni" in options:
        vni = integerOption(vnl.text, "vni", options["vni"], 0, VNI_MASK)
    return VxConfig(vni=vni, **values)


@implementer(IVdePlug)
class VxlanPlug(VxPlugBase):
    """
    One VXLAN tunnel endpoint; see the module docstring.
    """

    def __init__(self, reactor, description: str, config: VxConfig, sock: socket.socket, group: tuple, family: int) -> None:
        super().__init__(reactor, description, config, group, sock)
        self.socket = sock
        self.family = family
        self.port = config.port
        self.ipv6 = family == socket.AF_INET6
        self.watch(sock, partial(self.drain, sock.recvfrom, (RECV_SIZE,)))

    def check(self, datagram: bytes) -> Verdict:
        return checkVxlan(datagram, self.config.vni)

    def learn(self, mac: bytes, source: Any, now: float) -> None:
        # The sender's IP at the VXLAN port, where VTEPs listen whatever
        # port they send from.
        entry = self._learned.get(mac)
        if entry is not None and entry.port[0] == source[0]:
            entry.seen = now
        else:
            address: Any = (
                (source[0], self.port, 0, source[3]) if self.ipv6 else (source[0], self.port)
            )
            self.macs.learn(mac, LEARN_VLAN, address, now)

    def unusual(self, data: bytes, source: Any, now: float) -> None:
        # Reserved bytes are ignored (RFC 7348, and the C plugin): such a
        # frame is delivered here, off the path of exact headers.
        if self.check(data) is Verdict.FRAME:
            self.learn(data[14:20], source, now)
            self.stats.received += 1
            self.receiver.frameReceived(data[8:])
        else:
            self.reject(data, source)


@implementer(IPlugin, IVdeBackend)
class VxlanBackend(VxBackendBase):
    schemes = ("vxlan",)
    summary = "VXLAN segment over UDP multicast (interoperates with Linux VXLAN devices)"
    references = (REFERENCE,)

    def parse(self, vnl) -> VxConfig:
        return parseVxlan(vnl)

    def openSockets(self, config: VxConfig, ifindex: int) -> tuple[socket.socket, tuple, int]:
        return openVxlanSocket(config, ifindex)

    def makePlug(self, reactor, description: str, config: VxConfig, opened: tuple) -> VxlanPlug:
        return VxlanPlug(reactor, description, config, *opened)
