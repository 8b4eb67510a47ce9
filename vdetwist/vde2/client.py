"""
The C{vde://} client: join a vde2 switch (C{vde_switch}, a vdeplug4
C{switch://} or C{hub://}, or ours) as libvdeplug4 does.

The handshake: connect a stream socket to C{<dir>/ctl} (after trying
C{<dir>/<portgroup>}), bind a datagram socket at C{<dir>/.<pid>-<seq>},
send the request in one C{send}, read the 110-byte reply naming the switch's
data socket, connect to it and unlink our own socket file (the association
survives).  The control stream then stays silent: when the switch closes it
(it stopped, or kicked the port) the plug closes cleanly; when the switch
was killed (its data socket is left behind, refusing connections) the plug
is lost.

When the switch is ours, the plug carries vnet frames (super-frames and
partial checksums, L{vdetwist._transport.dgram.VnetDatagramPlug}): our data socket
file has its sticky bit set, which asks for them, and the switch's has it
when the switch agrees (see L{vdetwist.vde2.server} for why that signal).
Otherwise every datagram is a plain frame, as for libvdeplug4, and
C{sendVnet} segments.

Unlike libvdeplug4 the reply is awaited for at most L{REPLY_TIMEOUT}
seconds: vde_switch 2.3.2 never answers a request for a busy or
nonexistent port, and the connection attempt should fail rather than hang.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Optional, Union

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist._transport.fdplug import FdReader
from vdetwist._transport.dgram import DatagramPlug, VnetDatagramPlug
from vdetwist._transport.sockets import groupId, unlinkQuietly
from vdetwist._transport.vnet import sendSegments
from vdetwist.errors import PlugClosed, PlugLost, VdeError
from vdetwist.interfaces import IVnetPlug
from vdetwist.vde2.protocol import (
    SOCKADDR_UN_SIZE,
    ProtocolError,
    packRequest,
    parseReply,
)
from vdetwist.vde2.server import markVnet, offersVnet

__all__ = [
    "DEFAULT_SWITCHES",
    "REPLY_TIMEOUT",
    "VdeClientPlug",
    "VnetClientPlug",
    "connectVde",
    "choosePort",
]

#: Where a C{vde://} without a path looks for a switch, in order.
DEFAULT_SWITCHES = ("/var/run/vde.ctl", "/tmp/vde.ctl")
#: Directories for the client's data socket when the switch directory is
#: not writable.
FALLBACK_DIRS = ("/var/run", "/var/tmp", "/tmp")
#: Seconds to wait for the switch's reply.
REPLY_TIMEOUT = 5.0
#: Give up binding after this many names in one directory are taken.
MAX_SEQ = 100000

PathLike = Union[str, bytes]


def choosePort(portgroup: Optional[str], port: int = 0) -> tuple[Optional[str], int]:
    """
    libvdeplug4's reading of the C{vde://} port selection: returns the
    portgroup socket name to try first (or C{None}) and the port to request
    (0 any, N, or -1 for port 0).

    @param portgroup: the positional C{[X]}, C{port=} or C{portgroup=} value.
    @param port: C{open_args.port} (C{vde_plug --port}, QEMU's C{port=}).
    """
    if not portgroup:
        portgroup = None
        if port != 0:
            portgroup = str(max(port, 0))
    if portgroup is not None and portgroup.isascii() and portgroup.isdigit():
        port = int(portgroup)
        if port == 0:
            port = -1
    return portgroup, port


@implementer(IVnetPlug)
class VdeClientPlug(DatagramPlug):
    """
    A plug connected to a vde2 switch that is not ours (or did not agree to
    vnet frames): plain frames only, so C{offloads} is 0 and C{sendVnet}
    sends segments.

    @ivar switchPath: the switch directory.
    @ivar serverPath: the switch's data socket for this connection.
    @ivar control: the control stream socket (the liveness channel).
    """

    def __init__(
        self,
        reactor,
        sock: socket.socket,
        control: socket.socket,
        description: str,
        switchPath: str,
        serverPath: PathLike,
    ) -> None:
        super().__init__(reactor, sock, description)
        self.control = control
        self.switchPath = switchPath
        self.serverPath = serverPath
        self._watch = FdReader(
            control.fileno(), self._switchGone, description, lambda reason: self._switchGone()
        )
        self._probing: Optional[IDelayedCall] = None

    offloads = 0

    def sendVnet(self, frame: bytes) -> None:
        sendSegments(frame, self.send, self._badSent)

    def _startReading(self) -> None:
        super()._startReading()
        self.reactor.addReader(self._watch)

    #: A killed switch's descriptors close one by one, so its data socket
    #: may still accept a connection just after the control connection
    #: ended: probe this many times, this many seconds apart, before taking
    #: a socket that still answers for a switch that closed on purpose.
    goneProbes = 10
    goneProbeInterval = 0.02

    def _switchGone(self) -> None:
        if self._probing is not None or self.closed:
            return
        self.reactor.removeReader(self._watch)
        self._probeGone(self.goneProbes)

    def _probeGone(self, left: int) -> None:
        """
        Why the switch ended the control connection.  A switch that removes
        the port or stops unlinks the port's data socket before (a clean
        end); one that was killed or crashed leaves it behind, refusing
        connections: the network is lost.  A connect probe tells them apart
        without sending the switch anything.
        """
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(self.serverPath)
        except OSError as e:
            answered = False
            refused = e.errno == errno.ECONNREFUSED
        else:
            answered, refused = True, False
        finally:
            probe.close()
        if answered and left:
            self._probing = self.reactor.callLater(
                self.goneProbeInterval, self._probeGone, left - 1)
            return
        self._probing = None
        if refused:
            self._lost(Failure(PlugLost(
                f"{self.description}: the switch {self.switchPath} went away "
                f"(killed or crashed: its data socket refuses connections)",
                errno.ECONNRESET,
            )))
        else:
            self._lost(Failure(PlugClosed(f"{self.description}: the switch closed the connection")))

    def _release(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            self._probing = None
        self.reactor.removeReader(self._watch)
        self.control.close()
        super()._release()


class VnetClientPlug(VnetDatagramPlug, VdeClientPlug):
    """
    A plug connected to a switch of ours that agreed to vnet frames.
    """


def _connectError(path: str, e: OSError) -> VdeError:
    code = e.errno or errno.EIO
    if code == errno.ENOENT:
        message = f"no switch at {path} ({_strerror(e)})"
    elif code == errno.ECONNREFUSED:
        message = f"nobody accepts connections on {path} (a switch that died left it?)"
    elif code == errno.EAGAIN:
        message = f"{path} does not accept more connections now (its backlog is full)"
    elif code == errno.EACCES:
        message = (
            f"cannot connect to {path}: {_strerror(e)} (the switch's --mode and "
            f"--group decide who may connect)"
        )
    else:
        message = f"cannot connect to {path}: {_strerror(e)}"
    return VdeError(message, code)


def _strerror(e: OSError) -> str:
    return e.strerror or str(e)


def _connectControl(directory: str, portgroup: Optional[str], port: int):
    """
    Connect the control stream: C{<dir>/<portgroup>} first if there is a
    portgroup, then C{<dir>/ctl} if that failed or a port number is wanted.

    @return: (socket, path connected to, whether it is C{ctl}).
    @raise VdeError: neither accepted.
    """
    attempts = []
    if portgroup is not None:
        attempts.append((os.path.join(directory, portgroup), False))
    attempts.append((os.path.join(directory, "ctl"), True))
    error: Optional[VdeError] = None
    for path, isCtl in attempts:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            if e.errno is None:
                e = OSError(errno.ENAMETOOLONG, "path too long for a unix socket")
            if error is None or isCtl:
                error = _connectError(path, e)
            continue
        return sock, path, isCtl
    assert error is not None
    raise error


def _bindData(sock: socket.socket, directory: str) -> str:
    """
    Bind the data socket at C{<dir>/.<pid>-<seq>}, or, if the directory is
    not usable, at C{vde.<pid>-<seq>} in /var/run, /var/tmp or /tmp.
    """
    pid = os.getpid()
    places = [(directory, ".")] + [(d, "vde.") for d in FALLBACK_DIRS]
    lastError: Optional[OSError] = None
    for place, prefix in places:
        for seq in range(MAX_SEQ):
            path = os.path.join(place, f"{prefix}{pid:05d}-{seq:05d}")
            try:
                sock.bind(path)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    continue
                lastError = e
                break
            return path
    raise VdeError(
        f"cannot bind a socket in {directory} or {', '.join(FALLBACK_DIRS)}: "
        f"{_strerror(lastError) if lastError else 'every name is taken'}",
        (lastError.errno if lastError else None) or errno.EADDRINUSE,
    )


def _fixPermissions(path: str, ctlPath: str, mode: int, group: Optional[str],
                    offload: bool) -> None:
    """
    Make the data socket connectable by the switch, as libvdeplug4 does,
    and ask for vnet frames if C{offload}.
    """
    if group:
        os.chown(path, -1, groupId(group))
    elif mode & 0o077 == 0:
        try:
            st = os.stat(ctlPath)
        except OSError:
            st = None
        if st is not None and st.st_uid not in (0, os.geteuid()):
            try:
                os.chown(path, -1, st.st_gid)
                mode |= 0o070
            except OSError:
                mode |= 0o077
    os.chmod(path, mode)
    if offload:
        markVnet(path)


@implementer(IReadDescriptor)
class _Handshake:
    """
    Waits for the reply on the control stream, with a timeout.
    """

    def __init__(self, reactor, control, data, dataPath, switchPath, ctlPath,
                 plugDescription, timeout) -> None:
        self.reactor = reactor
        self.control = control
        self.data = data
        self.dataPath = dataPath
        self.switchPath = switchPath
        self.ctlPath = ctlPath
        self.plugDescription = plugDescription
        self.timeout = timeout
        self.fd = control.fileno()
        self.buffer = b""
        self.deferred: Deferred = Deferred(self._cancel)
        self.timer = reactor.callLater(timeout, self._timedOut)
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "vde-client"

    def doRead(self) -> None:
        try:
            chunk = self.control.recv(SOCKADDR_UN_SIZE - len(self.buffer))
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(VdeError(f"{self.ctlPath}: {_strerror(e)}", e.errno or errno.EIO))
            return
        if not chunk:
            self._fail(
                VdeError(
                    f"the switch at {self.switchPath} closed the connection without "
                    f"answering: it refused the request (port busy, out of range or "
                    f"not allowed for this user?)",
                    errno.ECONNREFUSED,
                )
            )
            return
        self.buffer += chunk
        if len(self.buffer) < SOCKADDR_UN_SIZE:
            return
        self._finish()

    def connectionLost(self, reason: Failure) -> None:
        self._fail(VdeError(f"{self.ctlPath}: {reason.getErrorMessage()}", errno.EIO))

    def _finish(self) -> None:
        self._stop()
        try:
            serverPath: PathLike = parseReply(self.buffer)
            if serverPath[:1] != b"\0":
                serverPath = os.fsdecode(serverPath)
            try:
                self.data.connect(serverPath)
            except OSError as e:
                raise VdeError(
                    f"cannot connect to the switch's data socket {serverPath!r}: "
                    f"{_strerror(e)}",
                    e.errno or errno.EIO,
                ) from None
        except (ProtocolError, VdeError) as e:
            self._fail(e)
            return
        unlinkQuietly(self.dataPath)
        plugType = VdeClientPlug
        if isinstance(serverPath, str):
            try:
                if offersVnet(os.stat(serverPath)):
                    plugType = VnetClientPlug
            except OSError:
                pass
        plug = plugType(
            self.reactor, self.data, self.control, self.plugDescription,
            self.switchPath, serverPath,
        )
        self.deferred.callback(plug)

    def _timedOut(self) -> None:
        self.timer = None
        self._fail(
            VdeError(
                f"no answer from the switch at {self.switchPath} within "
                f"{self.timeout:g} s (vde_switch 2.3.2 does not answer requests "
                f"for a busy or nonexistent port)",
                errno.ETIMEDOUT,
            )
        )

    def _cancel(self, deferred: Deferred) -> None:
        self._stop()
        self._cleanup()

    def _stop(self) -> None:
        self.reactor.removeReader(self)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _cleanup(self) -> None:
        self.control.close()
        self.data.close()
        unlinkQuietly(self.dataPath)

    def _fail(self, error: Exception) -> None:
        self._stop()
        self._cleanup()
        if not self.deferred.called:
            self.deferred.errback(Failure(error))


def connectVde(
    reactor,
    path: str = "",
    *,
    description: Union[str, bytes] = "",
    port: int = 0,
    portgroup: Optional[str] = None,
    group: Optional[str] = None,
    mode: int = 0o700,
    timeout: float = REPLY_TIMEOUT,
    plugDescription: Optional[str] = None,
    offload: bool = True,
) -> Deferred:
    """
    Join the vde2 switch at C{path}.

    @param path: the switch directory; empty: C{/var/run/vde.ctl}, then
        C{/tmp/vde.ctl}.
    @param description: the text the switch shows for this connection
        (cut to 127 bytes).
    @param port: 0 any port, N port N, -1 port 0 (see L{choosePort}).
    @param portgroup: a socket name in the switch directory to try before
        C{ctl} (a numeric one is also the port to request).
    @param group: group (name or number) for our data socket.
    @param mode: mode of our data socket (libvdeplug4's default 0700).
    @param timeout: seconds to wait for the switch's answer.
    @param plugDescription: the plug's C{description} (for logs); default
        C{"vde://" + path}.
    @param offload: ask a switch of ours for vnet frames (C{False}: plain
        frames whatever the switch).
    @return: a Deferred firing with a L{VdeClientPlug}, or failing with a
        L{VdeError}.
    """
    try:
        return _start(reactor, path, description, port, portgroup, group, mode,
                      timeout, plugDescription, offload)
    except VdeError as e:
        return fail(e)


def _start(reactor, path, description, port, portgroup, group, mode, timeout,
           plugDescription, offload) -> Deferred:
    portgroup, port = choosePort(portgroup, port)
    if plugDescription is None:
        plugDescription = f"vde://{path}"
    if path:
        try:
            directories = [os.path.realpath(path, strict=True)]
        except OSError as e:
            raise VdeError(
                f"no switch directory {path} ({_strerror(e)})", e.errno or errno.ENOENT
            ) from None
    else:
        directories = list(DEFAULT_SWITCHES)
    error: Optional[VdeError] = None
    for directory in directories:
        try:
            control, ctlPath, isCtl = _connectControl(directory, portgroup, port)
        except VdeError as e:
            # A default switch that is there but refuses us tells more than
            # one that is missing.
            if error is None or (error.errno == errno.ENOENT and e.errno != errno.ENOENT):
                error = e
            continue
        break
    else:
        assert error is not None
        if not path and error.errno == errno.ENOENT:
            error.message = (
                f"no default switch ({', '.join(DEFAULT_SWITCHES)}): {error.message}"
            )
        raise error
    data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dataPath = None
    try:
        dataPath = _bindData(data, directory)
        _fixPermissions(dataPath, ctlPath, mode, group, offload)
        try:
            request = packRequest(dataPath, description, port if isCtl else 0)
        except ValueError as e:
            raise VdeError(str(e), errno.EINVAL) from None
        try:
            sent = control.send(request)
        except OSError as e:
            raise VdeError(f"cannot send the request to {ctlPath}: {_strerror(e)}",
                           e.errno or errno.EIO) from None
        if sent != len(request):
            raise VdeError(f"the request to {ctlPath} was cut short", errno.EIO)
    except BaseException as e:
        control.close()
        data.close()
        unlinkQuietly(dataPath)
        if isinstance(e, OSError):
            raise VdeError(f"{dataPath}: {_strerror(e)}", e.errno or errno.EIO) from None
        raise
    data.setblocking(False)
    handshake = _Handshake(reactor, control, data, dataPath, directory, ctlPath,
                           plugDescription, timeout)
    return handshake.deferred
