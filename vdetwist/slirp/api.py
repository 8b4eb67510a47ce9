"""
slirp's API socket, compatible with slirp4netns's C{--api-socket}: tools
written for slirp4netns (rootlesskit, podman, scripts with C{nc -U}) add,
list and remove host forwards of a running C{slirp://} unchanged.

One JSON request per connection, ended by the client's C{shutdown(SHUT_WR)}
(or, as slirp4netns reads one chunk, as soon as it is a whole JSON object:
C{echo -n $json | nc -U PATH} works without C{-N}); one JSON answer, then
the connection closes:

    - C{{"execute": "add_hostfwd", "arguments": {"proto": "tcp",
      "host_addr": "127.0.0.1", "host_port": 8080, "guest_addr":
      "10.0.2.15", "guest_port": 80}}} answers C{{"return": {"id": 1}}};
    - C{{"execute": "list_hostfwd"}} answers C{{"entries": [{"id": 1,
      "proto": ..., "host_addr": ..., "host_port": ..., "guest_addr": ...,
      "guest_port": ...}]}} (bare, as slirp4netns answers, although its
      manual shows a C{return} around it);
    - C{{"execute": "remove_hostfwd", "arguments": {"id": 1}}} answers
      C{{"return": {}}};
    - a request that cannot be served answers C{{"error": {"desc":
      "bad request: ..."}}}, with slirp4netns's texts followed by what to
      change.

Unlike slirp4netns's, addresses may be IPv6 (C{"host_addr": "::"}, a
C{guest_addr} of the guest's IPv6 address), and C{list_hostfwd} also lists
the C{tcpfwd}/C{udpfwd} forwards of the VNL.

L{ForwardApi} is the sans-IO request handler over the engine's forward
table; L{ApiServer} serves it on a UNIX socket (L{ApiFactory}'s protocol).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Callable, Optional

from twisted.internet.interfaces import (
    IDelayedCall, IHalfCloseableProtocol, IReadDescriptor, ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.slirp.config import HostForward

log = Logger()

#: A request must be shorter than this (slirp4netns: "less than 4096 bytes").
MAX_REQUEST = 4096
#: Seconds a client has to send its request and read the answer.
REQUEST_TIMEOUT = 10.0
#: Connections served at once; more are refused (each holds a request).
MAX_CLIENTS = 32

_ANY4 = IPv4Address("0.0.0.0")


class BadRequest(Exception):
    """
    A request that cannot be served; the message is the answer's C{desc}
    after C{"bad request: "}.
    """


def _whole(value: Any) -> Optional[int]:
    """
    A JSON number with an integral value (not C{true}/C{false}), or C{None}.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def isWholeObject(request: bytes) -> bool:
    """
    Whether C{request} is already a whole JSON object (a client that sent
    its request without shutting down its side is answered).
    """
    try:
        return isinstance(json.loads(request), dict)
    except (ValueError, RecursionError):
        return False


def _where(address: IPv4Address | IPv6Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


class ForwardApi:
    """
    Answers API requests over an engine's host forward table.

    @param engine: a L{vdetwist.slirp.engine.SlirpEngine} (its C{config},
        C{forwards}, C{addForward} and C{removeForward}).
    """

    def __init__(self, engine) -> None:
        self.engine = engine
        self._commands: dict[str, Callable[[dict], dict]] = {
            "add_hostfwd": self.addHostForward,
            "list_hostfwd": self.listHostForwards,
            "remove_hostfwd": self.removeHostForward,
        }

    def handle(self, request: bytes) -> bytes:
        """
        The answer to one request (never raises for any input).
        """
        try:
            answer = self.answer(request)
        except BadRequest as e:
            answer = {"error": {"desc": f"bad request: {e}"}}
        return json.dumps(answer, separators=(",", ":")).encode()

    def answer(self, request: bytes) -> dict:
        """
        The answer to C{request} as a JSON object.

        @raise BadRequest: the request cannot be served.
        """
        if len(request) >= MAX_REQUEST:
            raise BadRequest(f"too large message: a request must be under {MAX_REQUEST} bytes")
        try:
            message = json.loads(request)
        except (ValueError, RecursionError) as e:
            raise BadRequest(f"cannot parse JSON: {e}") from None
        if not isinstance(message, dict):
            raise BadRequest("json_object() failed: the request must be a JSON object")
        execute = message.get("execute")
        if not isinstance(execute, str):
            raise BadRequest('no execute found: the request needs "execute": "COMMAND"')
        command = self._commands.get(execute)
        if command is None:
            raise BadRequest(f"unknown execute {execute!r}: expected one of "
                             + ", ".join(self._commands))
        arguments = message.get("arguments")
        return command(arguments if isinstance(arguments, dict) else {})

    # -- the commands ----------------------------------------------------------

    def addHostForward(self, arguments: dict) -> dict:
        proto = arguments.get("proto")
        if proto not in ("tcp", "udp"):
            raise BadRequest('add_hostfwd: bad arguments.proto: expected "tcp" or "udp"')
        config = self.engine.config
        hostAddr = self._address(arguments, "host_addr", _ANY4)
        hostPort = self._port(arguments, "host_port")
        guestAddr = self._address(arguments, "guest_addr", config.dhcpStart)
        guestPort = self._port(arguments, "guest_port")
        if guestAddr.is_unspecified and guestAddr.version == 6:
            raise BadRequest("add_hostfwd: bad arguments.guest_addr: :: is no guest address")
        if not (config.ipv4 if guestAddr.version == 4 else config.ipv6):
            raise BadRequest(f"add_hostfwd: bad arguments.guest_addr: this slirp has no "
                             f"IPv{guestAddr.version} (its v4/v6 options)")
        forward = HostForward(proto, hostAddr, hostPort, guestAddr, guestPort)
        try:
            forwardId = self.engine.addForward(forward)
        except OSError as e:
            raise BadRequest(f"add_hostfwd: cannot listen on {proto} "
                             f"{_where(hostAddr, hostPort)}: {e.strerror or e}; "
                             "choose another host_port") from None
        log.info("slirp API: {proto} forward {id}: host {host} to guest {guest}",
                 proto=proto, id=forwardId, host=_where(hostAddr, hostPort),
                 guest=_where(guestAddr, guestPort))
        return {"return": {"id": forwardId}}

    def listHostForwards(self, arguments: dict) -> dict:
        dhcpStart = self.engine.config.dhcpStart
        entries = [
            {
                "id": forwardId,
                "proto": forward.proto,
                "host_addr": str(forward.hostAddr),
                "host_port": forward.hostPort,
                "guest_addr": str(dhcpStart if forward.guestAddr == _ANY4 else forward.guestAddr),
                "guest_port": forward.guestPort,
            }
            for forwardId, forward in self.engine.forwards.items()
        ]
        return {"entries": entries}

    def removeHostForward(self, arguments: dict) -> dict:
        forwardId = _whole(arguments.get("id"))
        if forwardId is None:
            raise BadRequest("remove_hostfwd: bad arguments.id: expected the number "
                             "add_hostfwd answered")
        try:
            forward = self.engine.removeForward(forwardId)
        except KeyError:
            raise BadRequest(f"remove_hostfwd: bad arguments.id: no forward {forwardId} "
                             "(list_hostfwd lists them)") from None
        log.info("slirp API: {proto} forward {id} on host {host} removed",
                 proto=forward.proto, id=forwardId,
                 host=_where(forward.hostAddr, forward.hostPort))
        return {"return": {}}

    # -- arguments -------------------------------------------------------------

    @staticmethod
    def _address(arguments: dict, key: str, default) -> IPv4Address | IPv6Address:
        text = arguments.get(key)
        if text is None or text == "":
            return default
        if isinstance(text, str):
            try:
                return ip_address(text.removeprefix("[").removesuffix("]"))
            except ValueError:
                pass
        raise BadRequest(f"add_hostfwd: bad arguments.{key}: expected an IPv4 or IPv6 "
                         "address")

    @staticmethod
    def _port(arguments: dict, key: str) -> int:
        port = _whole(arguments.get(key))
        if port is None or not 0 < port < 65536:
            raise BadRequest(f"add_hostfwd: bad arguments.{key}: expected a port number "
                             "from 1 to 65535")
        return port


@implementer(IHalfCloseableProtocol)
class ApiProtocol(Protocol):
    """
    One client: its request up to its C{shutdown(SHUT_WR)}, then the
    answer.  A request of L{MAX_REQUEST} bytes or more is answered with an
    error at once; a client still connected after L{REQUEST_TIMEOUT}
    seconds is cut off.
    """

    # A UNIX stream connection, from makeConnection on (abortConnection
    # is declared by ITCPTransport only).
    transport: ITCPTransport

    def __init__(self, factory: "ApiFactory") -> None:
        self.factory = factory
        self.received: list[bytes] = []
        self.size = 0
        self.answered = False
        self.timeout: Optional[IDelayedCall] = None

    def connectionMade(self) -> None:
        self.factory.clients += 1
        if self.factory.clients > MAX_CLIENTS:
            log.warn("slirp API: more than {n} clients at once; one refused", n=MAX_CLIENTS)
            self.answered = True
            self.transport.abortConnection()
            return
        self.timeout = self.factory.clock.callLater(REQUEST_TIMEOUT, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        if self.answered:
            return
        self.size += len(data)
        self.received.append(data)
        if self.size >= MAX_REQUEST or (data.rstrip().endswith(b"}") and
                                        isWholeObject(b"".join(self.received))):
            self._answer()

    def readConnectionLost(self) -> None:
        if not self.answered:
            self._answer()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def _answer(self) -> None:
        request, self.received = b"".join(self.received), []
        self.answered = True
        self.transport.write(self.factory.api.handle(request))
        self.transport.loseConnection()

    def _timedOut(self) -> None:
        self.timeout = None
        log.warn("slirp API: a client sent no complete request within {t} s; closed",
                 t=REQUEST_TIMEOUT)
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.clients -= 1
        self.received = []
        if self.timeout is not None and self.timeout.active():
            self.timeout.cancel()
        self.timeout = None


class ApiFactory(Factory):
    """
    Serves a L{ForwardApi}; C{clock} times the clients out.
    """

    noisy = False

    def __init__(self, api: ForwardApi, clock) -> None:
        self.api = api
        self.clock = clock
        self.clients = 0

    def buildProtocol(self, addr) -> ApiProtocol:
        return ApiProtocol(self)


def _clearStale(path: str) -> None:
    """
    Remove a socket left at C{path} by a process that is gone (as a
    restarted slirp4netns does); refuse to replace anything else.

    @raise OSError: C{path} is not a socket, or something listens on it.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another process listens on it")


@implementer(IReadDescriptor)
class ApiServer:
    """
    The listening API socket: accepted connections are adopted by the
    reactor and served by an L{ApiFactory}.  Unlike a Twisted UNIX port,
    which removes its file a reactor turn after it stops (too late when the
    reactor is stopping), L{close} removes the file at once, if it is still
    the one this server made.
    """

    def __init__(self, reactor, path: str, api: ForwardApi) -> None:
        self.reactor = reactor
        self.path = path
        self.factory = ApiFactory(api, reactor)
        _clearStale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # on Linux the file takes the socket's mode: never open to others
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(path)
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
            made = os.lstat(path)
        except OSError:
            sock.close()
            raise
        self.identity = (made.st_dev, made.st_ino)
        self.socket: Optional[socket.socket] = sock
        self._resume = None
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.socket.fileno() if self.socket is not None else -1

    def logPrefix(self) -> str:
        return "slirp-api"

    def doRead(self) -> None:
        sock = self.socket
        assert sock is not None, "read only while listening"
        for _ in range(MAX_CLIENTS):
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                # out of descriptors, say: try again later, not in a busy loop
                log.warn("slirp API: cannot accept a client: {error}", error=e)
                self.reactor.removeReader(self)
                self._resume = self.reactor.callLater(1, self._resumeAccepting)
                return
            try:
                conn.setblocking(False)
                self.reactor.adoptStreamConnection(conn.fileno(), socket.AF_UNIX, self.factory)
            finally:
                conn.close()  # the reactor has its own duplicate

    def _resumeAccepting(self) -> None:
        self._resume = None
        if self.socket is not None:
            self.reactor.addReader(self)

    def connectionLost(self, reason) -> None:
        pass

    def close(self) -> None:
        """
        Stop accepting and remove the socket file (clients being served
        carry on).
        """
        if self.socket is None:
            return
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self.reactor.removeReader(self)
        self.socket.close()
        self.socket = None
        try:
            found = os.lstat(self.path)
            if (found.st_dev, found.st_ino) == self.identity:
                os.unlink(self.path)
        except OSError:
            pass


__all__ = ["ForwardApi", "ApiFactory", "ApiProtocol", "ApiServer", "BadRequest",
           "MAX_REQUEST", "REQUEST_TIMEOUT", "MAX_CLIENTS"]
