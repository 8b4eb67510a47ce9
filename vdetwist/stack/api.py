"""
A Twisted program as a host on a VDE network: L{VdeStack} joins a
sans-IO L{vdetwist.stack.host.HostStack} to a plug and to the reactor, and
gives the program its addresses, C{ping}, its neighbour tables and TCP and
UDP (C{listenTCP}, C{connectTCP}, C{listenUDP}).  L{openStack} opens one
on a VNL; L{sharedStack} is what the C{vdestack:} endpoints use, one stack
per (reactor, network, address).
"""

from __future__ import annotations

import weakref
from ipaddress import IPv4Interface, IPv6Address, ip_address, ip_interface
from typing import Any, Optional

from twisted.internet import defer, error
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.interfaces import IFrameReceiver, IVdePlug
from vdetwist.registry import OpenArgs, Registry, registry
from vdetwist.slirp.driver import Driver
from vdetwist.stack.config import StackConfig, StackConfigError, parseMac, parseStackOptions
from vdetwist.stack.host import HostStack
from vdetwist.stack.transport import (
    EngineSide, StackPort, StackTCPTransport, StackUDPPort, ntop,
)

log = Logger()

#: The description a stack's plug gives a switch.
DESCRIPTION = "vdestack"


class PingTimeout(Exception):
    """
    No echo reply came in time.
    """


@implementer(IFrameReceiver, IPushProducer)
class VdeStack:
    """
    A host on the network of C{plug}.

    @ivar host: the sans-IO L{HostStack}.
    @ivar closed: a Deferred that fires once the stack is closed.
    """

    def __init__(self, reactor, plug: IVdePlug, settings: StackConfig,
                 name: str = "") -> None:
        self.reactor = reactor
        self.plug = plug
        self.name = name
        self.driver = Driver(reactor)
        self.host = HostStack(settings, plug.send, clock=reactor.seconds,
                              timerChanged=self.driver.timerChanged)
        self.driver.attach(self.host)
        self.host.addressChanged = self._addressChanged
        self._waiting: list[defer.Deferred] = []
        self.users = 0
        #: closed when its last user goes (the endpoints' stacks)
        self.shared = False
        self.closed: defer.Deferred = defer.Deferred()
        self.onClose: list = []
        self._pingSeq = 0
        self._resolver: Any = None
        plug.registerProducer(self, True)
        plug.startReceiving(self)
        self.host.start()

    def __repr__(self) -> str:
        return f"<VdeStack {self.name or self.plug!r} {', '.join(self.addresses())}>"

    # -- the plug's receiver and producer ----------------------------------------

    def frameReceived(self, frame: bytes) -> None:
        self.driver.input(frame)

    def plugClosed(self, reason: Failure) -> None:
        log.info("vdestack {name}: network closed: {why}", name=self.name,
                 why=reason.getErrorMessage())
        self._shutDown()

    def pauseProducing(self) -> None:
        self.host.pauseOutput()

    def resumeProducing(self) -> None:
        self.host.resumeOutput()

    def stopProducing(self) -> None:
        self.close()

    # -- addresses ---------------------------------------------------------------

    def addresses(self) -> list[str]:
        """
        The stack's addresses, IPv4 first, as C{"A.B.C.D/N"} and
        C{"ADDR/N"}.
        """
        host = self.host
        out = []
        if host.address4 is not None:
            prefix = bin(int.from_bytes(host.mask4, "big")).count("1")
            out.append(str(IPv4Interface((ntop(host.address4), prefix))))
        for address in host.addresses6:
            out.append(f"{IPv6Address(address)}/64")
        return out

    def _addressChanged(self) -> None:
        if self.host.address4 is not None:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(self)

    def whenConfigured(self) -> defer.Deferred:
        """
        A Deferred firing with the stack once it has an IPv4 address (at
        once when static; when DHCP binds otherwise).
        """
        if self.host.address4 is not None or self.host.dhcp is None:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        return d

    def neighbours(self) -> dict[str, tuple[str, float]]:
        """
        The ARP and neighbour tables: each address's MAC and the seconds
        since it was last confirmed.
        """
        return {ntop(a): (mac.hex(":"), age)
                for a, (mac, age) in self.host.link.entries().items()}

    # -- ping --------------------------------------------------------------------

    def ping(self, address: str, timeout: float = 5.0, payload: bytes = b"vdestack") \
            -> defer.Deferred:
        """
        One ICMP (or ICMPv6) echo request to C{address}: a Deferred firing
        with the round-trip time in seconds, or failing with L{PingTimeout}.
        """
        destination = ip_address(address).packed
        self._pingSeq = seq = (self._pingSeq + 1) & 0xFFFF
        started = self.reactor.seconds()
        d: defer.Deferred = defer.Deferred()
        call = None

        def answered(data: bytes) -> None:
            if call is not None and call.active():
                call.cancel()
            d.callback(self.reactor.seconds() - started)

        def expired() -> None:
            self.host.forgetPing(seq)
            d.errback(PingTimeout(f"no echo reply from {address} in {timeout} s"))

        if not self.host.ping(destination, seq, payload, answered):
            return defer.fail(error.NoRouteError(string=f"no route to {address}"))
        call = self.reactor.callLater(timeout, expired)
        return d

    # -- names -------------------------------------------------------------------

    def resolve(self, name: str, timeout: float = 10.0) -> defer.Deferred:
        """
        The address of C{name} (an IPv4 one when the stack has IPv4, else
        an IPv6 one), asked with twisted.names over the stack's own UDP of
        the name servers the stack was given (C{dns=}) or DHCP gave: a
        Deferred address string (at once for an address literal), or
        failing with C{DNSLookupError} naming C{name}.
        """
        try:
            return defer.succeed(str(ip_address(name)))
        except ValueError:
            pass
        servers = self.host.nameServers()
        if not servers:
            return defer.fail(error.DNSLookupError(
                f"vdestack: cannot resolve {name!r}: no name server (DHCP gave none; give dns=)"))
        resolver = self.resolver()
        seconds = (1, 3, max(1.0, timeout - 4))
        if self.host.address4 is not None:
            looked = resolver.getHostByName(name, seconds)
        else:
            looked = resolver.lookupIPV6Address(name, seconds).addCallback(_firstAAAA)

        def failed(reason: Failure) -> Failure:
            from twisted.names import error as dnsError

            if reason.check(dnsError.DNSNameError):
                why = "no such name"
            elif reason.check(defer.TimeoutError, dnsError.DNSQueryTimeoutError):
                why = "no answer from " + ", ".join(ntop(s) for s in servers)
            elif reason.check(error.DNSLookupError):
                why = "no address"
            else:
                why = type(reason.value).__name__
            return Failure(error.DNSLookupError(f"vdestack: {name!r} does not resolve ({why})"))

        return looked.addErrback(failed)

    def resolver(self) -> Any:
        """
        The stack's twisted.names client resolver (made on first use, of
        the name servers known then), asking over the stack's own UDP, and
        TCP for truncated answers.
        """
        if self._resolver is None:
            from twisted.names import client

            servers = [(ntop(s), 53) for s in self.host.nameServers()]
            self._resolver = client.Resolver(servers=servers, reactor=_ResolverReactor(self))
        return self._resolver

    # -- TCP and UDP -------------------------------------------------------------

    def _local(self, interface: str) -> Optional[bytes]:
        return ip_address(interface).packed if interface else None

    def listenTCP(self, port: int, factory, interface: str = "") -> StackPort:
        """
        Listen on C{port} of C{interface} (default: every address of the
        stack); the factory builds a protocol for each connection once its
        handshake completes.  As C{IReactorTCP.listenTCP}.

        @raise error.CannotListenError: the port is taken.
        """
        listening = StackPort(self, self._local(interface), port, factory)
        try:
            listening.startListening()
        except OSError as e:
            raise error.CannotListenError(interface, port, e)
        return listening

    def connectTCP(self, host: str, port: int, factory, timeout: float = 30.0) \
            -> defer.Deferred:
        """
        Connect to C{host} (an address, or a name: L{resolve}) and C{port}: a
        Deferred firing with the protocol C{factory} built once the
        connection is established, or failing with
        C{ConnectionRefusedError}, C{TCPTimedOutError}, C{NoRouteError} or
        C{DNSLookupError}.  (Unlike C{IReactorTCP.connectTCP}, which returns
        a connector, as an endpoint's C{connect} does.)
        """
        try:
            peer = ip_address(host).packed
        except ValueError:
            self.hold()  # the stack stays while the name is looked up

            def resolved(address: str) -> defer.Deferred:
                self.release()
                return self.connectTCP(address, port, factory, timeout)

            def notResolved(reason: Failure) -> Failure:
                self.release()
                return reason

            return self.resolve(host).addCallbacks(resolved, notResolved)
        local = self.host.source(peer)
        if local is None:
            return defer.fail(error.NoRouteError(string=f"no route to {host}"))
        d: defer.Deferred = defer.Deferred()
        self.hold()

        def established(transport: StackTCPTransport) -> Any:
            self.release()
            if call.active():
                call.cancel()
            protocol = factory.buildProtocol(transport.getPeer())
            if protocol is None:
                d.errback(error.ConnectError(string=f"{factory} refused the connection"))
            return protocol

        def failed(reason: Failure) -> None:
            self.release()
            if call.active():
                call.cancel()
            if not d.called:
                d.errback(reason)

        transport = StackTCPTransport(self, established, failed, d.callback)

        def timedOut() -> None:
            if not transport.connected and not transport.disconnected:
                conn = transport.conn
                if conn is not None:
                    conn.connectionLost(clean=False)
                failed(Failure(error.TCPTimedOutError(string=f"connecting to {host}:{port}")))
                transport.disconnected = True

        call = self.reactor.callLater(timeout, timedOut)
        try:
            transport.conn = self.host.tcp.connect(local, peer, port, EngineSide(transport))
        except OSError as e:
            failed(Failure(error.ConnectError(string=str(e))))
        return d

    def clientEndpoint(self, host: str, port: int, timeout: float = 30.0) -> "StackEndpoint":
        """
        An C{IStreamClientEndpoint} connecting from this stack to
        C{host}:C{port} (for an Agent's endpoint factory, say).
        """
        return StackEndpoint(self, host, port, timeout)

    def listenUDP(self, port: int, protocol, interface: str = "",
                  maxPacketSize: int = 8192) -> StackUDPPort:
        """
        A UDP port (0: an ephemeral one) for C{protocol}, a
        C{DatagramProtocol}, as C{IReactorUDP.listenUDP}; C{interface}
        C{"::"} (or an IPv6 address) makes it an IPv6 port.

        @raise error.CannotListenError: the port is taken.
        """
        family = 6 if ":" in interface else 4
        address = self._local(interface)
        if address is not None and not any(address):
            address = None
        udp = StackUDPPort(self, family, address, port, protocol, maxPacketSize)
        try:
            udp.startListening()
        except OSError as e:
            raise error.CannotListenError(interface, port, e)
        return udp

    # -- lifetime ----------------------------------------------------------------

    def hold(self) -> None:
        """
        One more user (a listening port, a connection): the stack stays.
        """
        self.users += 1

    def release(self) -> None:
        """
        One user less; for a shared stack, the last closes it.
        """
        self.users -= 1
        if self.users <= 0 and self.shared:
            self.reactor.callLater(0, self._closeIfUnused)

    def _closeIfUnused(self) -> None:
        if self.users <= 0:
            self.close()

    def close(self) -> defer.Deferred:
        """
        Reset every connection and close the plug; returns L{closed}.
        """
        if not self.host.closed:
            self.plug.close()
        return self.closed

    def _shutDown(self) -> None:
        if self.host.closed:
            return
        self.host.close()
        self.driver.stop()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(error.ConnectionDone("the stack was closed"))
        for hook in self.onClose:
            hook()
        self.closed.callback(None)


def _firstAAAA(answers: tuple) -> str:
    from twisted.names import dns

    for record in answers[0]:
        if record.type == dns.AAAA:
            return ntop(record.payload.address)
    raise error.DNSLookupError("no AAAA record")


class _ResolverReactor:
    """
    The reactor twisted.names' resolver of a stack uses: the stack's UDP
    and TCP, the real reactor's time.
    """

    def __init__(self, stack: VdeStack) -> None:
        self.stack = stack
        self.v6 = stack.host.address4 is None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stack.reactor, name)

    def listenUDP(self, port: int, protocol, interface: str = "",
                  maxPacketSize: int = 8192) -> StackUDPPort:
        return self.stack.listenUDP(port, protocol, interface or ("::" if self.v6 else ""),
                                    maxPacketSize)

    def connectTCP(self, host: str, port: int, factory, timeout: float = 30,
                   bindAddress: Any = None) -> None:
        # (a truncated answer is asked again over TCP)
        def failed(reason: Failure) -> None:
            # (later: the resolver queues the query after this call)
            self.stack.reactor.callLater(0, factory.clientConnectionFailed, None, reason)

        self.stack.connectTCP(host, port, factory, timeout).addErrback(failed)


@implementer(IStreamClientEndpoint)
class StackEndpoint:
    """
    Connects from a given L{VdeStack} (L{VdeStack.clientEndpoint}).
    """

    def __init__(self, stack: VdeStack, host: str, port: int, timeout: float) -> None:
        self.stack = stack
        self.host = host
        self.port = port
        self.timeout = timeout

    def connect(self, protocolFactory) -> defer.Deferred:
        return self.stack.connectTCP(self.host, self.port, protocolFactory, self.timeout)


def openStack(reactor, vnl: str, ip: Optional[str] = None, ip6: Optional[str] = None,
              gw: Optional[str] = None, mac: Optional[str] = None,
              mtu: Optional[str] = None, dns: Optional[str] = None,
              registry: Registry = registry, description: str = DESCRIPTION,
              timeout: float = 30.0) -> defer.Deferred:
    """
    Open a host stack on C{vnl}: a Deferred firing with the L{VdeStack}
    once it has its IPv4 address (DHCP: once bound).  The settings are the
    C{vdestack:} endpoint's words (C{ip="10.0.0.2/24"} or C{"dhcp"},
    C{ip6="fd00::2/64"}, C{gw=}, C{mac=}, C{mtu=}, C{dns=}).  Without a lease in
    C{timeout} seconds, it is closed and the Deferred fails.

    @raise vdetwist.stack.config.StackConfigError: a malformed setting.
    """
    settings = parseStackOptions(ip=ip, ip6=ip6, gw=gw, mac=mac, mtu=mtu, dns=dns)

    def opened(plug: IVdePlug) -> defer.Deferred:
        stack = VdeStack(reactor, plug, settings, vnl)
        configured = stack.whenConfigured()
        if configured.called:
            return configured

        def noLease(reason: Failure) -> Failure:
            stack.close()
            if reason.check(defer.TimeoutError):
                return Failure(error.ConnectError(
                    string=f"vdestack: no DHCP lease on {vnl} in {timeout:g} s"))
            return reason

        return configured.addTimeout(timeout, reactor).addErrback(noLease)

    return registry.open(reactor, vnl, description, OpenArgs()).addCallback(opened)


#: The stacks endpoints share, per reactor: (vnl, address) -> the stack, or
#: the Deferreds waiting for it to open.
_shared: "weakref.WeakKeyDictionary[Any, dict[tuple, Any]]" = weakref.WeakKeyDictionary()
#: The other settings each shared stack was opened with, per reactor.
_sharedSettings: "weakref.WeakKeyDictionary[Any, dict[tuple, dict[str, Optional[str]]]]" = \
    weakref.WeakKeyDictionary()


def _normal(key: str, value: str) -> object:
    """
    A setting's value in a form where equal settings compare equal
    (C{02:00:00:00:00:0A} and C{2:0:0:0:0:a}, C{fd00::1} and C{fd00:0::1}).
    """
    if key == "mac":
        return parseMac(value)
    if key == "mtu":
        return int(value)
    if key == "ip6" and value != "slaac":
        return ip_interface(value)
    if key in ("gw", "dns"):
        return frozenset(ip_address(word) for word in value.split(","))
    return value


def _checkShared(where: str, opened: dict[str, Optional[str]],
                 asked: dict[str, Optional[str]]) -> None:
    """
    @raise StackConfigError: C{asked} sets a key differently from the
        settings the shared stack was C{opened} with (a setting left out is
        no conflict: the endpoint takes the stack as it is).
    """
    for key, value in asked.items():
        if value is None:
            continue
        was = opened.get(key)
        if was is None:
            raise StackConfigError(
                f"vdestack: {key}={value!r} but the stack {where} was opened without {key}=:"
                f" give endpoints sharing a stack the same settings")
        if _normal(key, value) != _normal(key, was):
            raise StackConfigError(
                f"vdestack: {key}={value!r} conflicts with {key}={was!r} of the stack {where}:"
                f" give endpoints sharing a stack the same settings")


def sharedStack(reactor, vnl: str, ip: Optional[str], ip6: Optional[str] = None,
                gw: Optional[str] = None, mac: Optional[str] = None,
                mtu: Optional[str] = None, dns: Optional[str] = None,
                registry: Registry = registry) -> defer.Deferred:
    """
    The stack of this reactor on C{vnl} with address C{ip} (or, without
    one, C{ip6}): opened on first use, shared by every endpoint naming the
    same network and address (one host per address), closed when its last
    port or connection ends.  An endpoint giving another value for a
    setting than the one the stack was opened with fails with a
    L{StackConfigError} naming the key and both values.
    """
    stacks = _shared.setdefault(reactor, {})
    settings = _sharedSettings.setdefault(reactor, {})
    key = (vnl, ip or ip6)
    asked = {"ip6": ip6, "gw": gw, "mac": mac, "mtu": mtu, "dns": dns}
    found = stacks.get(key)
    if found is not None:
        try:
            _checkShared(f"on {vnl} at {ip or ip6}", settings[key], asked)
        except StackConfigError:
            return defer.fail()
    if isinstance(found, VdeStack):
        return defer.succeed(found)
    result: defer.Deferred = defer.Deferred()
    if found is not None:
        found.append(result)
        return result
    waiting = stacks[key] = [result]
    settings[key] = asked
    opening = openStack(reactor, vnl, ip=ip, ip6=ip6, gw=gw, mac=mac, mtu=mtu, dns=dns,
                        registry=registry)

    def forget() -> None:
        stacks.pop(key, None)
        settings.pop(key, None)

    def opened(stack: VdeStack) -> None:
        stack.shared = True
        stack.onClose.append(forget)
        stacks[key] = stack
        for d in waiting:
            d.callback(stack)

    def failed(reason: Failure) -> None:
        forget()
        for d in waiting:
            d.errback(reason)

    opening.addCallbacks(opened, failed)
    return result
