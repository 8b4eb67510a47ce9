"""
The server side of the vde2 connection protocol: what turns C{vde://}
clients (QEMU, the C C{vde_plug}, ours) into ports of a
L{vdetwist.node.Node}.

L{VdeServer} owns a switch directory: it listens on C{<dir>/ctl} (Twisted's
UNIX listener, C{listenUNIX}), reads each client's request, makes a datagram socket connected to the client's and
binds it in the directory, and adds it to the node as a L{ServerEndpoint}.
The control connection then stays silent; it is the liveness channel: when
the client closes it, the endpoint goes, and closing the endpoint from this
side (L{VdeServer.closeEndpoint}, the node removing the port) closes it, so
the client sees EOF.

Two flavours, as the C servers differ:

  - C{"vde_switch"} (vde2's C{vde_switch}): data sockets C{<dir>/%03d.%d}
    (port, fd), requested ports honoured (C{[N]}, C{[0]} = port 0), a port
    shared only by clients of the same uid, the client socket must be
    accessible, an existing directory is reused (only if it is the switch
    user's and nobody else may write to it beyond the asked mode, unlike
    vde_switch: see L{directoryProblem});
  - C{"netnode"} (vdeplug4's C{hub://}, C{switch://}...): data sockets
    C{<dir>/fd<ctl fd>}, port numbers ignored (every client is a port of its
    own), port 0 requests refused, the directory must not exist.

Everything that goes wrong with a client (a bad request, a port it may not
have, a client that never sends) is logged as a warning naming the client,
and its connection is closed: clients fail at once instead of waiting
forever, as with vde-2 HEAD (the installed vde_switch 2.3.2 leaves some of
them hanging).

Frames: shorter than 14 bytes are dropped (by the engines); frames are
I{not} truncated at 1518 bytes as vde_switch 2.3.2 does: jumbo frames up to
VDE_ETHBUFSIZE (9234 bytes, libvdeplug4's limit) are forwarded whole, and
short frames are not padded.

Vnet frames: a client that is ours sets the sticky bit (C{S_ISVTX}) on the
data socket file it names in its request, and a server that is ours and
agrees sets it on the data socket file it names in its reply; from then on
every datagram of that pair, both ways, is a vnet frame (a virtio-net
header, then an Ethernet frame that may be a 64 KiB super-frame:
L{vdetwist._transport.dgram.VnetDatagramPlug}).  Both sides C{stat} the other's
socket file anyway (the server for its owner, the client can since it may
connect to it), nothing in the C peers reads that bit, and no byte of the
handshake changes: a C client never sets it, so our server treats it as
today; a C server never sets it, so our client sends it plain frames.
What else was weighed: a name or description of our own in the request
(the C switch would show or keep it), a version or request code (refused
by C servers), a probe datagram (a C peer would take it for a frame).

Flow control: the node never waits for a port.  Each endpoint sends without
blocking; what the kernel queue (net.unix.max_dgram_qlen, 10 by default)
cannot take waits in a short per-endpoint queue and is dropped and counted
in C{stats.dropped} beyond that.  Ingress is never paused for a slow
egress port.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import struct
from typing import Callable, Optional, cast

from twisted.internet import unix
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist._transport.dgram import DatagramPlug, VnetDatagramPlug
from vdetwist.errors import PlugLost, VdeError
from vdetwist.interfaces import IVdeClient, IVdeServer
from vdetwist.node.node import Port
from vdetwist._transport.sockets import groupId, isAlive, isSocket, removeStale, unlinkQuietly
from vdetwist.vde2.protocol import (
    READ_SIZE,
    REQ_NEW_CONTROL,
    REQ_NEW_PORT0,
    VERSION,
    ProtocolError,
    Request,
    packReply,
    parseRequest,
    requestBytesNeeded,
)

__all__ = [
    "VdeServer",
    "ServerEndpoint",
    "FLAVOURS",
    "derivedDirmode",
    "directoryProblem",
    "switchModes",
    "netnodeModes",
    "BACKLOG",
    "REQUEST_TIMEOUT",
    "VnetServerEndpoint",
]

log = Logger()

FLAVOURS = ("vde_switch", "netnode")
#: Listen backlog of the control socket, as in both C servers.
BACKLOG = 15
#: Seconds a client may take to send its request.
REQUEST_TIMEOUT = 10.0

_PEERCRED = struct.Struct("3i")


def derivedDirmode(mode: int) -> int:
    """
    The directory mode both C servers derive from a socket mode: setgid,
    plus the mode, plus the x bit for each class that may read or write.
    C{0o600} gives C{0o2700}, C{0o666} C{0o2777}, C{0o660} C{0o2770}.
    """
    mode &= 0o777
    return 0o2000 | mode | ((mode & 0o444) >> 2) | ((mode & 0o222) >> 1)


def switchModes(mode: Optional[int], dirmode: Optional[int]) -> tuple[int, int]:
    """
    The (socket mode, directory mode) of C{vde_switch -m MODE --dirmode
    DIRMODE}, either of which may be omitted (C{None}): neither gives 0600
    and 02700; only C{-m} derives the directory mode (L{derivedDirmode});
    only C{--dirmode} gives sockets C{dirmode & 0o666}.
    """
    if mode is None:
        if dirmode is None:
            return 0o600, 0o2700
        return dirmode & 0o666, dirmode
    if dirmode is None:
        return mode, derivedDirmode(mode)
    return mode, dirmode


def netnodeModes(mode: Optional[int], dirmode: Optional[int]) -> tuple[int, int]:
    """
    The (socket mode, directory mode) of C{hub://...[mode=M/dirmode=D]}:
    exec bits are cleared from the socket mode (default 0600); the directory
    mode defaults to 02700, or is derived from C{mode=} when only that is
    given.
    """
    sockMode = 0o600 if mode is None else mode & ~0o111
    if dirmode is None:
        dirmode = 0o2700 if mode is None else derivedDirmode(sockMode)
    return sockMode, dirmode


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def directoryProblem(path: str, dirmode: int, gid: Optional[int] = None) -> Optional[str]:
    """
    Why an existing switch directory is not safe to reuse, or C{None}.

    Whoever owns the directory, or may write to it, can replace its C{ctl}
    socket and so stand between the clients and the switch: the directory
    (and a symbolic link leading to it) must belong to the user running the
    switch, and group and others may write to it only as far as C{dirmode}
    grants (a switch made for a group has a group-writable directory, then
    of the group C{gid} if one is given).  A missing path, or one that is
    not a directory, is no concern here.
    """
    euid = os.geteuid()
    try:
        link = os.lstat(path)
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    if stat.S_ISLNK(link.st_mode) and link.st_uid != euid:
        return (
            f"{path} is a symbolic link of {_user(link.st_uid)}, not of {_user(euid)} "
            f"who runs the switch: its owner could point it elsewhere, and so replace "
            f"the ctl socket"
        )
    if info.st_uid != euid:
        return (
            f"{path} belongs to {_user(info.st_uid)}, not to {_user(euid)} who runs "
            f"the switch: its owner could replace the ctl socket"
        )
    mode = stat.S_IMODE(info.st_mode)
    extra = mode & 0o022 & ~dirmode
    if mode & dirmode & 0o020 and gid is not None and info.st_gid != gid:
        extra |= 0o020
    if not extra:
        return None
    who = "others" if extra & 0o002 else f"the group {_group(info.st_gid)}"
    return (
        f"{path} is writable by {who} (mode {mode:04o}, this switch asks for "
        f"{dirmode:04o}): they could replace the ctl socket"
    )


def _credentials(sock: socket.socket) -> Optional[tuple[int, int, int]]:
    """
    C{(pid, uid, gid)} of the process at the other end of a control
    connection, if the kernel tells.
    """
    try:
        return _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
    except OSError:
        return None


def _strerror(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


@implementer(IVdeClient)
class ServerEndpoint(DatagramPlug):
    """
    The switch's data socket for one client: a plug added to the node.

    @ivar endpointId: the file descriptor number of the client's control
        connection (what vde_switch shows as "endpoint ID" and
        C{port/epclose} takes).
    @ivar description: the client's description text (decoded as UTF-8,
        undecodable bytes replaced); C{rawDescription} has the bytes.
    @ivar uid: owner uid of the client's socket file (-1 when unknown:
        abstract address).
    @ivar port: the node L{Port} it joined.
    @ivar path: the data socket's path in the switch directory.
    @ivar request: the client's L{Request}.
    """

    def __init__(
        self,
        reactor,
        sock: socket.socket,
        server: "VdeServer",
        control: "_Control",
        request: Request,
        uid: int,
    ) -> None:
        super().__init__(
            reactor, sock, request.description.decode("utf-8", "replace")
        )
        self.server = server
        self.control = control
        self.request = request
        self.rawDescription = request.description
        self.endpointId = control.fd
        self.uid = uid
        self.port: Optional[Port] = None
        self.path: Optional[str] = None

    def __repr__(self) -> str:
        number = None if self.port is None else self.port.number
        return f"<ServerEndpoint id={self.endpointId} port={number} {self.description!r}>"

    @property
    def pid(self) -> Optional[int]:
        """
        The client's pid, from its control connection's peer credentials.
        """
        return self.control.pid

    def connectionLost(self, reason: Failure) -> None:
        self._lost(
            Failure(
                PlugLost(
                    f"endpoint {self.endpointId} ({self.description}): "
                    f"{reason.getErrorMessage()}"
                )
            )
        )

    def _sendFailed(self, error: OSError) -> None:
        """
        C{ECONNREFUSED}: the client's data socket is closed, and the kernel
        has just dissolved this socket's association with it, which until
        then refused datagrams from any other sender.  The port cannot reach
        its client any more, and would take frames from anybody allowed to
        write to its socket file: it is closed (the client sees its control
        connection end).
        """
        super()._sendFailed(error)
        if error.errno == errno.ECONNREFUSED:
            problem = (
                f"endpoint {self.endpointId} ({self.description}): the client's "
                f"data socket is closed"
            )
            log.warn("{path}: {problem}; closing the port", path=self.server.path,
                     problem=problem)
            self._lost(Failure(PlugLost(problem)))

    def _release(self) -> None:
        super()._release()
        unlinkQuietly(self.path)
        self.server._endpointReleased(self)


class VnetServerEndpoint(VnetDatagramPlug, ServerEndpoint):
    """
    A L{ServerEndpoint} for a client of ours that agreed to vnet frames.
    """


def offersVnet(info: os.stat_result) -> bool:
    """
    Whether the data socket whose C{stat} is C{info} is one of ours that
    asks for (client) or agrees to (server) vnet frames: its sticky bit.
    """
    return bool(info.st_mode & stat.S_ISVTX)


def markVnet(path: str) -> None:
    """
    Set the sticky bit of the socket file C{path} (see L{offersVnet}).
    """
    os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | stat.S_ISVTX)


class _Control(Protocol, TimeoutMixin):
    """
    One accepted control connection: reads the request, then watches for
    the client's end.
    """

    #: The transport as what it is: a connected UNIX stream.
    stream: unix.Server
    endpoint: Optional[ServerEndpoint] = None
    fd = -1
    uid: Optional[int] = None
    #: The client's pid (the web status page shows it), C{None} if unknown.
    pid: Optional[int] = None
    who = "unknown client"

    def __init__(self, server: "VdeServer") -> None:
        self.server = server
        self.buffer = b""

    def callLater(self, period: float, func: Callable[[], object]):
        """
        L{TimeoutMixin}'s timer, on the server's reactor.
        """
        return self.server.reactor.callLater(period, func)

    def connectionMade(self) -> None:
        self.stream = transport = cast(unix.Server, self.transport)
        # Read a request the way vde_switch and netnode do (one read of
        # READ_SIZE): bytes sent beyond it are data after the handshake.
        transport.bufferSize = READ_SIZE
        self.fd = transport.fileno()
        credentials = _credentials(transport.getHandle())
        if credentials is not None:
            self.pid, self.uid = credentials[0], credentials[1]
            self.who = f"client pid {self.pid} uid {self.uid}"
        self.server._controls.add(self)
        self.setTimeout(self.server.requestTimeout)

    def dataReceived(self, data: bytes) -> None:
        if self.endpoint is not None:
            log.warn(
                "{path}: endpoint {id} ({description}) wrote on its control "
                "connection after the handshake; closing it",
                path=self.server.path, id=self.fd,
                description=self.endpoint.description,
            )
            self.endpoint.close()
            return
        self.buffer += data
        if len(self.buffer) < requestBytesNeeded(self.buffer):
            return
        request, self.buffer = self.buffer, b""
        self.server._handleRequest(self, request)

    def timeoutConnection(self) -> None:
        log.warn(
            "{path}: {who}: no request within {t:g} s; closing the connection",
            path=self.server.path, who=self.who, t=self.server.requestTimeout,
        )
        self.close()

    def handshakeDone(self) -> None:
        self.setTimeout(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        self.server._controls.discard(self)
        if self.endpoint is not None:
            self.endpoint.close()
        elif not reason.check(ConnectionDone):
            log.warn(
                "{path}: {who}: control connection failed: {error}",
                path=self.server.path, who=self.who, error=reason.getErrorMessage(),
            )
        elif self.buffer:
            log.warn(
                "{path}: {who}: closed the connection in the middle of its "
                "request ({n} bytes)",
                path=self.server.path, who=self.who, n=len(self.buffer),
            )

    def close(self) -> None:
        """
        End the connection (after what was written): the client sees EOF.
        """
        self.setTimeout(None)
        self.buffer = b""
        self.stream.loseConnection()


class _ControlFactory(Factory):
    noisy = False

    def __init__(self, server: "VdeServer") -> None:
        self.server = server

    def buildProtocol(self, addr) -> _Control:
        return _Control(self.server)


@implementer(IVdeServer)
class VdeServer:
    """
    Accepts C{vde://} clients on C{<path>/ctl}; each becomes a port
    (endpoint) of C{node}.

    @param reactor: an C{IReactorFDSet} and C{IReactorTime}.
    @param node: the L{vdetwist.node.Node} the clients join.
    @param path: the switch directory.
    @param mode: mode of the control and data sockets.
    @param dirmode: mode of the directory; C{None}: derived from C{mode}
        (L{derivedDirmode}; see L{switchModes} and L{netnodeModes} for the
        C tools' defaults).
    @param group: group (name or number) of the directory and sockets.
    @param flavour: C{"vde_switch"} or C{"netnode"} (see the module doc).
    @param forceDir: reuse an existing directory even if another user owns
        it or group or others may write to it beyond C{dirmode} (refused
        otherwise: see L{directoryProblem}).

    @ivar endpoints: the connected clients by endpoint id.
    @ivar requestTimeout: seconds a client may take to send its request.
    @ivar mgmtMode: mode of port 0 data sockets (vde_switch C{--mgmtmode}).
    @ivar mgmtGroup: their group (C{--mgmtgroup}), or C{None}.
    @ivar accessPolicy: C{None}, or a callable C{(portNumber, uid) ->
        Optional[str]} consulted before a client joins a requested port
        (after allocation for "any port"): a string refuses the client and
        says why (vde_switch C{port/setuser}, C{port/setgroup}).
    @ivar offloads: whether clients of ours are offered vnet frames (see
        the module docstring); C{False} keeps every port plain.
    """

    requestTimeout = REQUEST_TIMEOUT
    offloads = True

    def __init__(
        self,
        reactor,
        node,
        path: str,
        *,
        mode: int = 0o600,
        dirmode: Optional[int] = None,
        group: Optional[str] = None,
        flavour: str = "vde_switch",
        forceDir: bool = False,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
        self.reactor = reactor
        self.node = node
        self.path = path
        self.ctlPath = os.path.join(path, "ctl")
        self.mode = mode
        self.dirmode = derivedDirmode(mode) if dirmode is None else dirmode
        self.group = group
        self.flavour = flavour
        self.forceDir = forceDir
        self.netnode = flavour == "netnode"
        self.endpoints: dict[int, ServerEndpoint] = {}
        self.mgmtMode = 0o600
        self.mgmtGroup: Optional[str] = None
        self.accessPolicy: Optional[Callable[[int, int], Optional[str]]] = None
        self.listener: Optional[unix.Port] = None
        self.running = False
        self._controls: set[_Control] = set()
        self._gid: Optional[int] = None
        self._madeDir = False

    def __repr__(self) -> str:
        return f"<VdeServer {self.flavour} {self.path!r} endpoints={len(self.endpoints)}>"

    # -- life -----------------------------------------------------------

    def start(self) -> None:
        """
        Create the directory and listen on C{ctl}.

        @raise VdeError: the directory cannot be made or used, another
            switch is running there, the group does not exist.
        """
        if self.running:
            return
        self._gid = None if self.group is None else groupId(self.group)
        self._makeDirectory()
        try:
            self._listen()
        except BaseException:
            if self._madeDir:
                try:
                    os.rmdir(self.path)
                except OSError:
                    pass
                self._madeDir = False
            raise
        self.running = True
        log.info(
            "{flavour} listening on {ctl}",
            flavour="switch" if not self.netnode else "node", ctl=self.ctlPath,
        )

    def _makeDirectory(self) -> None:
        path = self.path
        try:
            # Nobody else may write to it before it gets its mode.
            os.mkdir(path, 0o700)
            self._madeDir = True
        except FileExistsError:
            if self.netnode:
                hint = (
                    "another switch is running there"
                    if isSocket(self.ctlPath) and isAlive(self.ctlPath, socket.SOCK_STREAM)
                    else "remove it (it may be left over by a switch that crashed) "
                    "or choose another path"
                )
                raise VdeError(f"{path} already exists: {hint}", errno.EEXIST) from None
            if not os.path.isdir(path):
                raise VdeError(
                    f"{path} exists and is not a directory", errno.ENOTDIR
                ) from None
        except OSError as e:
            raise VdeError(
                f"cannot create the switch directory {path}: {_strerror(e)}",
                e.errno or errno.EIO,
            ) from None
        if not self._madeDir and not self.forceDir:
            problem = directoryProblem(path, self.dirmode, self._gid)
            if problem:
                raise VdeError(
                    f"{problem}; remove it or choose another directory", errno.EPERM
                )
        if not self._madeDir:
            # An existing directory: is another switch alive in it?
            removeStale(
                self.ctlPath, socket.SOCK_STREAM,
                inUse=f"another switch is running at {path} ({self.ctlPath} accepts "
                f"connections): stop it or choose another directory",
            )
        try:
            if self._gid is not None:
                os.chown(path, -1, self._gid)
            os.chmod(path, self.dirmode)
        except OSError as e:
            if self._madeDir:
                os.rmdir(path)
                self._madeDir = False
            raise VdeError(
                f"cannot set the owner or mode of {path}: {_strerror(e)}",
                e.errno or errno.EIO,
            ) from None

    def _listen(self) -> None:
        ctl = self.ctlPath
        try:
            port = self.reactor.listenUNIX(
                ctl, _ControlFactory(self), backlog=BACKLOG, mode=self.mode
            )
        except CannotListenError as e:
            error = e.socketError
            if isinstance(error, OSError) and error.errno is None:
                raise VdeError(
                    f"{ctl}: the path is too long for a unix socket (at most 107 bytes)",
                    errno.ENAMETOOLONG,
                ) from None
            if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
                raise VdeError(
                    f"{ctl} is in use: another switch is running at {self.path}",
                    errno.EADDRINUSE,
                ) from None
            raise VdeError(
                f"cannot bind {ctl}: {_strerror(error)}",
                getattr(error, "errno", None) or errno.EIO,
            ) from None
        self.listener = port
        if self._gid is not None:
            try:
                os.chown(ctl, -1, self._gid)
            except OSError as e:
                self._stopListening()
                raise VdeError(
                    f"cannot set up {ctl}: {_strerror(e)}", e.errno or errno.EIO
                ) from None

    def _stopListening(self) -> None:
        """
        Close the control socket and unlink C{ctl} now: C{stopListening}
        would do it on the next reactor turn, which never comes when a
        netnode closes as the reactor stops, and leave the directory behind.
        """
        listener, self.listener = self.listener, None
        if listener is None:
            return
        listener.stopReading()
        try:
            listener.connectionLost(Failure(ConnectionDone()))
        except FileNotFoundError:
            # ctl was removed under the switch: the port stopped at
            # unlinking it, before closing its socket.
            listener.socket.close()

    def stop(self) -> None:
        """
        Close every endpoint (clients see EOF), stop listening, unlink the
        data sockets and C{ctl} and remove the directory.
        """
        self._stopListening()
        for endpoint in list(self.endpoints.values()):
            endpoint.close()
        for control in list(self._controls):
            control.close()
        if self.running:
            self.running = False
            try:
                os.rmdir(self.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warn(
                    "{path}: not removed: {error}", path=self.path, error=_strerror(e)
                )
            log.info("{path}: switch stopped", path=self.path)

    def clientOf(self, plug) -> Optional[ServerEndpoint]:
        """
        C{plug} if it is the data plug of one of this server's clients.
        """
        if isinstance(plug, ServerEndpoint) and plug.server is self:
            return plug
        return None

    def closeEndpoint(self, endpointId: int) -> bool:
        """
        Close the endpoint with this id (vde_switch C{port/epclose}); its
        client sees EOF.  Returns whether there was one.
        """
        endpoint = self.endpoints.get(endpointId)
        if endpoint is None:
            return False
        endpoint.close()
        return True

    # -- clients --------------------------------------------------------

    def _reject(self, control: _Control, problem: str, request: Optional[Request] = None) -> None:
        if request is not None:
            description = request.description.decode("utf-8", "replace")
            client = f"{control.who} ({description!r}, socket {request.path!r})"
        else:
            client = control.who
        log.warn(
            "{path}: refused {client}: {problem}",
            path=self.path, client=client, problem=problem,
        )
        control.close()

    def _handleRequest(self, control: _Control, data: bytes) -> None:
        try:
            request = parseRequest(data)
        except ProtocolError as e:
            self._reject(control, e.message)
            return
        if self.netnode:
            if request.version != VERSION:
                self._reject(control, "version 1 requests are not supported by this node", request)
                return
            if request.code != REQ_NEW_CONTROL:
                self._reject(control, "this node has no port 0 (hub://, switch:// ... "
                             "number no ports)", request)
                return
        path = os.fsdecode(request.path) if not request.isAbstract else request.path
        uid = -1
        vnet = False
        if not request.isAbstract:
            if not self.netnode and not os.access(path, os.R_OK | os.W_OK):
                self._reject(
                    control,
                    "cannot access the client's socket (it must exist and be "
                    "readable and writable by the switch)",
                    request,
                )
                return
            try:
                info = os.stat(path)
            except OSError:
                pass
            else:
                uid = info.st_uid
                vnet = self.offloads and offersVnet(info)
            if control.uid not in (None, 0, uid):
                # Unlike vde_switch: a client may only name its own socket,
                # or a switch running as root could be made to send frames
                # to any socket on the system (/dev/log, say).
                self._reject(
                    control,
                    f"the client's socket belongs to uid {uid}, not to the "
                    f"connecting uid {control.uid}",
                    request,
                )
                return
        number = self._portFor(control, request, uid)
        if number is False:
            return
        dsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            dsock.setblocking(False)
            dsock.connect(path)
        except OSError as e:
            dsock.close()
            self._reject(control, f"cannot connect to the client's socket: {_strerror(e)}", request)
            return
        endpointType = VnetServerEndpoint if vnet else ServerEndpoint
        endpoint = endpointType(self.reactor, dsock, self, control, request, uid)
        try:
            port = endpoint.port = self.node.addPort(endpoint, number=number)
        except VdeError as e:
            endpoint.closed = True  # never started: release quietly
            dsock.close()
            self._reject(control, e.message, request)
            return
        if endpoint.closed:
            self._reject(control, "the node closed the new endpoint", request)
            return
        if number is None and self.accessPolicy is not None and not self.netnode:
            # An automatically allocated port may have access control too.
            problem = self.accessPolicy(port.number, uid)
            if problem:
                endpoint.close()
                self._reject(control, f"port {port.number}: {problem}", request)
                return
        control.endpoint = endpoint
        self.endpoints[endpoint.endpointId] = endpoint
        try:
            dataPath = self._bindData(endpoint, port, request, uid)
            if vnet:
                markVnet(dataPath)
            reply = packReply(dataPath)
        except (OSError, ValueError) as e:
            log.warn(
                "{path}: dropped {who} ({description!r}): {error}",
                path=self.path, who=control.who, description=endpoint.description,
                error=_strerror(e),
            )
            endpoint.close()
            return
        control.stream.write(reply)
        control.handshakeDone()

    def _portFor(self, control: _Control, request: Request, uid: int):
        """
        The port number to ask the node for (C{None}: any), or C{False}
        after refusing the client.
        """
        if self.netnode:
            return None
        wanted = request.wantedPort
        if wanted == 0:
            return None
        number = 0 if wanted == -1 else wanted
        node = self.node
        if number < 0 or (node.numports is not None and number >= node.numports):
            limit = "" if node.numports is None else f" (this switch has ports 0..{node.numports - 1})"
            self._reject(control, f"port {number} does not exist{limit}", request)
            return False
        port = node.getPort(number)
        if port is not None and port.endpoints:
            owners = {getattr(ep, "uid", -1) for ep in port.endpoints}
            if owners != {uid}:
                self._reject(
                    control,
                    f"port {number} is in use by another user (uid "
                    f"{', '.join(map(str, sorted(owners)))}; this client's socket "
                    f"belongs to uid {uid})",
                    request,
                )
                return False
        if self.accessPolicy is not None:
            problem = self.accessPolicy(number, uid)
            if problem:
                self._reject(control, f"port {number}: {problem}", request)
                return False
        return number

    def _bindData(
        self, endpoint: ServerEndpoint, port: Port, request: Request, uid: int
    ) -> str:
        """
        Bind C{endpoint}'s data socket in the switch directory, set its
        owner and mode; return its path.
        """
        sock = endpoint.socket
        if self.netnode:
            path = os.path.join(self.path, f"fd{endpoint.endpointId}")
        else:
            path = os.path.join(self.path, f"{port.number:03d}.{sock.fileno()}")
        unlinkQuietly(path)
        try:
            sock.bind(path)
        except OSError as e:
            if e.errno is None:
                raise OSError(errno.ENAMETOOLONG, f"{path}: too long for a unix socket") from None
            raise OSError(e.errno, f"cannot bind {path}: {_strerror(e)}") from None
        endpoint.path = path
        try:
            if self.netnode:
                if self.mode > 0:
                    os.chmod(path, self.mode)
                return path
            if os.geteuid() == 0 and uid != -1:
                os.chmod(path, self.mode & 0o700)
                os.chown(path, uid, -1 if self._gid is None else self._gid)
            else:
                os.chmod(path, self.mode)
                if self._gid is not None:
                    os.chown(path, -1, self._gid)
            if request.code == REQ_NEW_PORT0:
                os.chmod(path, self.mgmtMode)
                if self.mgmtGroup is not None:
                    os.chown(path, -1, groupId(self.mgmtGroup))
        except (OSError, VdeError) as e:
            log.warn(
                "{path}: cannot set the owner or mode of {sock}: {error}",
                path=self.path, sock=path, error=str(e),
            )
        return path

    def _endpointReleased(self, endpoint: ServerEndpoint) -> None:
        if self.endpoints.get(endpoint.endpointId) is endpoint:
            del self.endpoints[endpoint.endpointId]
        endpoint.control.close()
