"""
The C{vdestack:} endpoints: a Twisted program's servers and clients as a
host on a VDE network, with no kernel interface.

  - server: C{vdestack:vnl=VNL:ip=A.B.C.D/N|dhcp:port=P} (also C{ip6=},
    C{gw=}, C{mac=}, C{mtu=}, C{interface=});
  - client: C{vdestack:vnl=VNL:ip=...:host=ADDRESS|NAME:port=P} (also
    C{timeout=}; a name is resolved over the stack, with the name servers
    DHCP gave or C{dns=}).

Values with colons (VNLs, IPv6 addresses) are quoted with
C{twisted.internet.endpoints.quoteStringArgument}.  Within one reactor,
endpoints naming the same network and address share one stack
(L{vdetwist.stack.api.sharedStack}): a program's servers and clients are
one machine; their other settings must agree (a conflict fails naming the
key).
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from typing import Optional

from twisted.internet import defer
from twisted.internet.interfaces import (
    IStreamClientEndpoint, IStreamClientEndpointStringParserWithReactor, IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.stack.api import sharedStack
from vdetwist.stack.config import StackConfigError, parseStackOptions

STACK_KEYS = ("vnl", "ip", "ip6", "gw", "mac", "mtu", "dns")
SERVER_KEYS = STACK_KEYS + ("port", "interface")
CLIENT_KEYS = STACK_KEYS + ("host", "port", "timeout")


class _Endpoint:
    def __init__(self, reactor, vnl: str, options: dict[str, Optional[str]]) -> None:
        self.reactor = reactor
        self.vnl = vnl
        self.options = options

    def stack(self) -> defer.Deferred:
        o = self.options
        return sharedStack(self.reactor, self.vnl, ip=o["ip"], ip6=o["ip6"], gw=o["gw"],
                           mac=o["mac"], mtu=o["mtu"], dns=o["dns"])


@implementer(IStreamServerEndpoint)
class StackServerEndpoint(_Endpoint):
    """
    Listens on C{port} of a stack on C{vnl} (of its C{interface} address,
    or all of them).
    """

    def __init__(self, reactor, vnl: str, options: dict[str, Optional[str]], port: int,
                 interface: str = "") -> None:
        super().__init__(reactor, vnl, options)
        self.port = port
        self.interface = interface

    def listen(self, protocolFactory) -> defer.Deferred:
        return self.stack().addCallback(
            lambda stack: stack.listenTCP(self.port, protocolFactory, self.interface))


@implementer(IStreamClientEndpoint)
class StackClientEndpoint(_Endpoint):
    """
    Connects from a stack on C{vnl} to C{host}:C{port}.
    """

    def __init__(self, reactor, vnl: str, options: dict[str, Optional[str]], host: str,
                 port: int, timeout: float = 30.0) -> None:
        super().__init__(reactor, vnl, options)
        self.host = host
        self.port = port
        self.timeout = timeout

    def connect(self, protocolFactory) -> defer.Deferred:
        return self.stack().addCallback(
            lambda stack: stack.clientEndpoint(self.host, self.port, self.timeout)
            .connect(protocolFactory))


def _check(args: tuple, kwargs: dict, keys: tuple[str, ...], needed: tuple[str, ...]) -> None:
    if args:
        raise StackConfigError(
            f"vdestack: {args[0]!r} has no key: every value is KEY=VALUE ({', '.join(keys)});"
            " quote colons with twisted.internet.endpoints.quoteStringArgument")
    for key in kwargs:
        if key not in keys:
            raise StackConfigError(f"vdestack: unknown key {key!r} (known: {', '.join(keys)})")
    for key in needed:
        if not kwargs.get(key):
            raise StackConfigError(f"vdestack: {key}= is missing")
    if "ip" not in kwargs and "ip6" not in kwargs:
        raise StackConfigError("vdestack: ip= (A.B.C.D/N or dhcp) or ip6= is missing")
    stack = {k: kwargs.get(k) for k in STACK_KEYS if k != "vnl"}
    try:
        parseStackOptions(**stack)
    except StackConfigError as e:
        raise StackConfigError(f"vdestack: {e}") from None


#: A host name (RFC 1123 labels; a trailing dot allowed).
_HOSTNAME = re.compile(r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+$")


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise StackConfigError(f"vdestack: port={value!r} is not a port number (0 to 65535)")
    return port


def _options(kwargs: dict) -> dict[str, Optional[str]]:
    return {k: kwargs.get(k) for k in STACK_KEYS if k != "vnl"}


@implementer(IPlugin, IStreamServerEndpointStringParser,
             IStreamClientEndpointStringParserWithReactor)
class StackParser:
    """
    The C{vdestack:} endpoint strings, server and client.
    """

    prefix = "vdestack"

    # Twisted's parser hands strings: the interface's object is any value.
    def parseStreamServer(self, reactor, *args: object, **words: object) -> StackServerEndpoint:
        kwargs = {k: str(v) for k, v in words.items()}
        _check(args, kwargs, SERVER_KEYS, ("vnl", "port"))
        interface = kwargs.get("interface", "")
        if interface:
            try:
                ip_address(interface)
            except ValueError:
                raise StackConfigError(
                    f"vdestack: interface={interface!r} is not an IP address") from None
        return StackServerEndpoint(reactor, kwargs["vnl"], _options(kwargs),
                                   _port(kwargs["port"]), interface)

    def parseStreamClient(self, reactor, *args: object, **words: object) -> StackClientEndpoint:
        kwargs = {k: str(v) for k, v in words.items()}
        _check(args, kwargs, CLIENT_KEYS, ("vnl", "host", "port"))
        host = kwargs["host"]
        try:
            ip_address(host)
        except ValueError:
            if not _HOSTNAME.match(host):
                raise StackConfigError(
                    f"vdestack: host={host!r} is neither an IP address nor a host name") \
                    from None
        timeout = kwargs.get("timeout", "30")
        try:
            seconds = float(timeout)
        except ValueError:
            seconds = -1
        if not seconds > 0:
            raise StackConfigError(f"vdestack: timeout={timeout!r} is not a positive number")
        return StackClientEndpoint(reactor, kwargs["vnl"], _options(kwargs), host,
                                   _port(kwargs["port"]), seconds)
