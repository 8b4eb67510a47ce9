"""
C{slirp://[/OPTION]...}: a virtual gateway with DHCP, DNS proxy and NAT to
the host's sockets, in pure Python (L{vdetwist.slirp}).

The options and defaults are libvdeplug_slirp's (C{verbose} prints the same
configuration table).  Frames sent on the plug are the guests' frames; the
engine's answers are delivered to the receiver.  Pausing the plug (a full
outgoing queue downstream) holds back the engine's TCP output instead of
losing frames.  The DNS proxy reads C{/etc/resolv.conf}, or the file named
by C{$VDETWIST_RESOLV_CONF}.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Optional, cast

from twisted.internet.defer import fail, succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.errors import VdeError
from vdetwist.interfaces import IVdeBackend, IVnetPlug, IVnetReceiver
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, PlugBase
from vdetwist.reference import Option, SchemeReference
from vdetwist.slirp.config import (
    DEFAULT_ADDR,
    DEFAULT_ADDR6,
    DEFAULT_DHCP,
    DEFAULT_DNS,
    DEFAULT_DNS6,
    DEFAULT_FWD,
    DEFAULT_MTU,
    DEFAULT_PREFIX,
    DEFAULT_PREFIX6,
    RESOLV_CONF,
    HostForward,
    RESOLV_CONF_ENV,
    SLIRP_OPTIONS,
    TCP_HALFOPEN,
    TCP_HALFOPEN_TIMEOUT,
    TCP_MAX,
    TCP_PER_GUEST,
    SlirpConfig,
    forwardLine,
    fromVNL,
)
from vdetwist.slirp.api import MAX_REQUEST, REQUEST_TIMEOUT, ApiServer, ForwardApi
from vdetwist.slirp.driver import Driver
from vdetwist.slirp.engine import SlirpEngine
from vdetwist.slirp.host import TwistedHost
from vdetwist.slirp.vnet import SOFTWARE, TRUSTED, classify
from vdetwist.wire.gso import BadVnetFrame, segment
from vdetwist.wire.vnethdr import (
    PLAIN, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, VNET_HDRLEN,
)

log = Logger()

#: The largest vnet frame a guest may send: header, Ethernet (and a VLAN
#: tag) and an IP packet of at most 64 KiB (IPv6: its 40-byte header on top).
MAX_VNET_FRAME = VNET_HDRLEN + ETH_HDRLEN + 4 + 40 + 0xFFFF

_HOSTFWD = "`[HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT[,...]`"
_GUESTFWD = "`[SLIRPIP:]SLIRPPORT:{target}[,...]`"

REFERENCE = SchemeReference(
    scheme="slirp",
    synopsis="slirp://[/OPTION...]",
    description=(
        "A virtual gateway to the host's network, as QEMU's user networking: "
        "DHCP, a DNS proxy, NAT of TCP, UDP and ICMP echo to the host's sockets, "
        "TFTP, and port forwards both ways, all in Python, with no privileges. The "
        "address part is ignored, hence `slirp:///OPTION`. The guests' frames are "
        "what is sent on the plug. Options and defaults are libvdeplug_slirp's. Cabled "
        "to an offloading plug (`vde_plug tap://T slirp://`, a tap's default), TCP "
        "crosses in 64 KiB super-frames with partial checksums, both ways."
    ),
    grammar="slash",
    table=SLIRP_OPTIONS,
    options=(
        Option("restricted", "Isolate the guests: no outgoing connections, only forwards."),
        Option("v4", "IPv4 service (alone: IPv4 only).", default="both families"),
        Option("v6", "IPv6 service (alone: IPv6 only).", default="both families"),
        Option("host", "Same as `addr` (`addr` wins when both are given).", "IPv4[/PREFIX]"),
        Option(
            "addr",
            "The gateway's address and the network; the DHCP and DNS addresses keep "
            "their host part in the new network.",
            "IPv4[/PREFIX]",
            f"{DEFAULT_ADDR}/{DEFAULT_PREFIX}",
        ),
        Option("host6", "Same as `addr6`.", "IPv6[/PREFIX]"),
        Option(
            "addr6", "The gateway's IPv6 address and prefix.", "IPv6[/PREFIX]",
            f"{DEFAULT_ADDR6}/{DEFAULT_PREFIX6}",
        ),
        Option("hostname", "The guest's host name, sent by DHCP.", "NAME", "slirp"),
        Option("tftp_server_name", "TFTP server name sent by DHCP (option 66).", "NAME"),
        Option("tftp_path", "Serve this directory, read-only, by TFTP on the gateway.", "DIR"),
        Option("bootfile", "Boot file name sent by BOOTP/DHCP.", "PATH"),
        Option("dhcp", "First address DHCP hands out.", "IPv4", str(DEFAULT_DHCP)),
        Option("vnameserver", "Address of the IPv4 DNS proxy.", "IPv4", str(DEFAULT_DNS)),
        Option("vnameserver6", "Address of the IPv6 DNS proxy.", "IPv6", str(DEFAULT_DNS6)),
        Option("vdnssearch", "Search domains sent by DHCP, comma separated.", "DOMAIN,..."),
        Option("vdomainname", "Domain name sent by DHCP.", "NAME"),
        Option("mtu", "MTU of the virtual link (0: the default).", "N", str(DEFAULT_MTU)),
        Option("mru", "MRU of the virtual link (0: the default).", "N", str(DEFAULT_MTU)),
        Option(
            "disable_host_loopback",
            "Guests cannot reach the host's loopback through the gateway address.",
        ),
        Option(
            "tcpfwd",
            f"{_HOSTFWD}: the host listens on HOSTIP:HOSTPORT (HOSTIP empty: all) and "
            "connects each connection to the guest.",
            "FWD",
        ),
        Option("udpfwd", f"{_HOSTFWD}: the same for UDP datagrams.", "FWD"),
        Option(
            "unixfwd",
            f"{_GUESTFWD.format(target='PATH')}: guest connections to SLIRPIP:SLIRPPORT "
            f"go to the UNIX socket PATH (SLIRPIP defaults to the network's "
            f"`{DEFAULT_FWD}`).",
            "FWD",
        ),
        Option(
            "cmdfwd",
            f"{_GUESTFWD.format(target='COMMAND')}: guest connections to "
            "SLIRPIP:SLIRPPORT go to a new COMMAND's stdin/stdout.",
            "FWD",
        ),
        Option("verbose", "Print the configuration table and one line per forward on stderr."),
        Option("tcp_max", "TCP connections at most (a vdetwist option).", "N", str(TCP_MAX)),
        Option(
            "tcp_per_guest",
            "TCP connections at most per guest address; beyond, a guest's SYN is reset.",
            "N", str(TCP_PER_GUEST),
        ),
        Option(
            "tcp_halfopen",
            "TCP connections not yet established at most; a new one evicts the oldest "
            "(its guest's SYN retransmission starts over), so a SYN flood cannot lock "
            "the other guests out.",
            "N", str(TCP_HALFOPEN),
        ),
        Option(
            "tcp_halfopen_timeout",
            "Seconds a TCP connection may take to be established (host connect and "
            "handshake).",
            "SECONDS", str(TCP_HALFOPEN_TIMEOUT),
        ),
        Option(
            "api",
            "Serve slirp4netns's API socket at PATH (mode 0600, removed on close): "
            "`add_hostfwd`, `list_hostfwd` and `remove_hostfwd` as JSON requests, one per "
            "connection, so tools written for slirp4netns add and remove forwards, IPv6 "
            f"ones too. A request must be under {MAX_REQUEST} bytes and complete within "
            f"{REQUEST_TIMEOUT:g} s. Quote a path with slashes: `api='/tmp/slirp.sock'`.",
            "PATH",
        ),
    ),
    examples=(
        ("slirp://", "IPv4 and IPv6 with the defaults: the guest gets 10.0.2.15 by DHCP"),
        ("slirp:///verbose", "the same, printing the configuration"),
        ("slirp:///tcpfwd=8080:10.0.2.15:80", "host port 8080 (any address) to the guest's port 80"),
        ("slirp:///addr=192.168.5.1%2f24/restricted", "another network, no way out but forwards"),
        (
            "slirp:///api='/tmp/slirp.sock'",
            "forwards added and removed while running: `echo -n '{\"execute\": "
            "\"list_hostfwd\"}' | nc -U /tmp/slirp.sock`",
        ),
        (
            "slirp:///cmdfwd=10.0.2.5:6000:'socat STDIO UNIX:/tmp/.X11-unix/X0'",
            "the guest's X clients of 10.0.2.5:0 reach the host's display :0",
        ),
    ),
    differences=(
        "No libslirp: the engine is vdetwist's own (`vdetwist.slirp`); `unixfwd` "
        "connects to the socket itself instead of running `nc -UN PATH`.",
        "Forward addresses may be IPv6, in brackets (`tcpfwd=[::1]:8080:10.0.2.15:80`).",
        f"The DNS proxy reads `{RESOLV_CONF}`, or the file `${RESOLV_CONF_ENV}` names.",
        "Values that cannot be used (`addr=10.0.2.0/24`, `dhcp=` outside the network, "
        "`mtu=` out of range) are errors naming the option.",
        "The TCP connection table is bounded per guest address and for connections "
        "not yet established (`tcp_*` options); libslirp has no such limits.",
        "`api=` (slirp4netns's `--api-socket`, which libvdeplug_slirp has not) also takes "
        "IPv6 addresses, lists the VNL's `tcpfwd`/`udpfwd` forwards, answers errors with "
        "what to change, and refuses a request larger than 4 KB or slower than "
        f"{REQUEST_TIMEOUT:g} s; `list_hostfwd` answers `{{\"entries\": [...]}}` bare, "
        "as slirp4netns does (its manual shows `return` around it).",
    ),
    manual="libvdeplug_slirp",
)


@implementer(IVnetPlug)
class SlirpPlug(PlugBase):
    """
    A plug whose network is a slirp engine.

    It takes the guests' vnet frames (L{sendVnet}): TSO super-segments go
    into the engine's TCP whole, and partial checksums are not checked (see
    L{vdetwist.slirp.vnet}).  To a receiver providing L{IVnetReceiver} it
    delivers vnet frames, TCP data in segments of up to 64 KiB with partial
    checksums; to any other, plain frames.

    @ivar engine: the L{SlirpEngine} (its C{stats} count what it did).
    """

    offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN

    def __init__(self, reactor, config: SlirpConfig, description: str, host=None) -> None:
        super().__init__(description)
        self.reactor = reactor
        self.config = config
        self.driver = Driver(reactor)
        self.engine = SlirpEngine(config, host or TwistedHost(reactor), self._output,
                                  clock=reactor.seconds, timerChanged=self.driver.timerChanged)
        self.driver.attach(self.engine)
        self.forwardResults = self.engine.start()
        #: The API socket's server (L{serveApi}), or C{None}.
        self.apiServer: Optional[ApiServer] = None

    def serveApi(self, path: str) -> None:
        """
        Serve slirp4netns's API socket at C{path}, until the plug closes.

        @raise OSError: the socket cannot be made.
        """
        self.apiServer = ApiServer(self.reactor, path, ForwardApi(self.engine))

    def _output(self, frame: bytes) -> None:
        if self.receiving:
            self.stats.received += 1
            self.receiver.frameReceived(frame)
        else:
            self.stats.dropped += 1

    def _startReading(self) -> None:
        receiver = self.receiver
        if IVnetReceiver.providedBy(receiver):
            deliver = receiver.vnetFrameReceived
            stats = self.stats

            def outputVnet(frame: bytes) -> None:
                stats.received += 1
                deliver(frame)

            self.engine.output = lambda frame: outputVnet(PLAIN + frame)
            self.engine.offloadTo(outputVnet)

    def send(self, frame: bytes) -> None:
        if self.closed or not ETH_HDRLEN <= len(frame) <= VDE_ETHBUFSIZE:
            self.stats.dropped += 1
            return
        self.stats.sent += 1
        self.driver.input(bytes(frame))

    def sendVnet(self, frame: bytes) -> None:
        if self.closed or not VNET_HDRLEN + ETH_HDRLEN <= len(frame) <= MAX_VNET_FRAME:
            self.stats.dropped += 1
            return
        frame = bytes(frame)
        try:
            kind = classify(frame)
            if kind == SOFTWARE:
                for plain in segment(frame):
                    self.send(plain)
                return
        except BadVnetFrame as e:
            self.stats.dropped += 1
            self.engine.stats["vnet_bad"] += 1
            if self.engine.stats["vnet_bad"] == 1:
                log.warn("{plug}: dropped a guest frame with a bad virtio-net header "
                         "(and any more, counted): {error}", plug=self.description, error=e)
            return
        self.stats.sent += 1
        if kind == TRUSTED:
            if frame[1]:
                self.engine.stats["tcp_super_in"] += 1
                # a TSO super-segment (a TCP segment, classify checked):
                # its payload goes to the host socket uncopied (the engine
                # takes a view of a TCP segment where it takes bytes)
                self.engine.input(cast(bytes, memoryview(frame)[VNET_HDRLEN:]), True)
            else:
                self.engine.input(frame[VNET_HDRLEN:], True)
            # handled now, its ACK sent with the batch's
            self.driver.flushSoon()
        else:
            self.driver.input(frame[VNET_HDRLEN:])

    def pauseProducing(self) -> None:
        self.engine.pauseOutput()

    def resumeProducing(self) -> None:
        if not self.closed:
            self.engine.resumeOutput()

    def _release(self) -> None:
        if self.apiServer is not None:
            self.apiServer.close()
            self.apiServer = None
        self.driver.stop()
        self.engine.close()


def openSlirp(reactor, vnl, description: str = "slirp", stderr=None, host=None) -> SlirpPlug:
    """
    Open the engine and its forwards.

    @raise VdeError: a bad option, or a host forward that cannot listen
        (its port is busy, say).  The C plugin then still opens and prints
        C{Success}; QEMU, libslirp's main user, refuses to start, and so
        does this: the user asked for that forward.
    """
    config = fromVNL(vnl)
    plug = SlirpPlug(reactor, config, vnl.text, host)
    if config.verbose:
        out = stderr or sys.stderr
        out.write(config.table())
        for forward, error in plug.forwardResults:
            out.write(forwardLine(forward, error))
        out.flush()
    for forward, error in plug.forwardResults:
        if error and isinstance(forward, HostForward):  # guest forwards never fail
            plug.close()
            host = forward.hostAddr
            where = f"[{host}]" if host.version == 6 else str(host)
            raise VdeError(
                f"{forward.proto}fwd: cannot listen on {where}:{forward.hostPort}: "
                f"{os.strerror(error)}; choose another host port",
                error,
            )
    if config.apiSocket is not None:
        try:
            plug.serveApi(config.apiSocket)
        except OSError as e:
            plug.close()
            raise VdeError(
                f"api={config.apiSocket}: cannot serve the API socket: {e.strerror or e}; "
                "choose another path", e.errno or errno.EINVAL, vnl.text,
            ) from None
    return plug


@implementer(IPlugin, IVdeBackend)
class SlirpBackend:
    schemes = ("slirp",)
    summary = "user-mode NAT to the host's network: DHCP, DNS proxy, TCP/UDP/ICMP, forwards"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        try:
            return succeed(openSlirp(reactor, vnl, description))
        except VdeError as e:
            return fail(e)
