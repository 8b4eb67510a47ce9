"""
C{twistd vde}: a switch compatible with vde2's C{vde_switch}::

    twistd -n vde --switch /tmp/sw --mgmt /tmp/sw.mgmt
    twistd -n vde --hub --numports 8 --plug tap://tap0
    vde_plug /tmp/sw          # any vde2 client: QEMU, the C vde_plug, ours
    vdeterm /tmp/sw.mgmt      # the management console
    python -m twisted --log-file=+ vde --console    # stdin is a console

Clients connect exactly as to C{vde_switch}: the switch directory holds the
control socket C{ctl} and one datagram socket per endpoint
(C{<dir>/<port %03d>.<fd>}).  The options are vde_switch's long options
(spec: netnode-hub-switch.md B.1), with C{--switch} as the main name of
C{--sock}.

Defaults, as vde_switch: the directory is C{/var/run/vde.ctl} when running
as root and C{/tmp/vde.ctl} otherwise (created if missing, an existing one
is reused unless another switch answers in it, or it is unsafe: see below);
sockets 0600, directory 02700 (C{--mode} alone derives the directory mode,
C{--dirmode} alone the socket mode); 32 ports (0..31; port 0 is only given
to clients asking for it); MAC table of 128 buckets, entries expire after
100 s idle, an address moves to another port only if it was quiet for 3 s.
The table holds up to 65,536 addresses, at most C{--macsperport} (16,384)
of one port: a MAC flood recycles its own port's entries
(L{vdetwist.node.mactable}).

The rc file: C{--rcfile FILE}, else the first of
C{~/.vde2/vde_switch.rc} and C{/etc/vde2/vde_switch.rc} that exists, runs
once the sockets exist, as in vde_switch; C{--rcfile=} (empty) runs none.

C{--console} makes stdin a console as vde_switch's foreground one: the
commands of C{--mgmt}, answers on stdout, C{logout} does nothing,
C{shutdown} and the end of stdin stop the switch (as SIGTERM does).  The
prompt C{"\\nvde$ "} follows each answer only when stdin is a terminal, and
goes to stdout (vde_switch writes it to fd 0, which fails on a pipe).
Twisted logs to stdout by default: C{--log-file=+} (C{python -m twisted})
or C{--logfile FILE} (twistd) keeps the logs out of the answers.

Differences from vde_switch: an existing directory that another user owns,
or that group or others may write to beyond what C{--mode}/C{--dirmode} and
C{--group} ask for, is refused (its owner or writers could replace the
C{ctl} socket) unless C{--force-dir} is given; start errors are one line on
stderr, not a traceback; the stdin console is opt-in (C{--console}:
services usually run with stdin on /dev/null, which would end the switch
at once), and is refused when twistd would daemonize (without C{-n}); no
FSTP (C{--fstp} is refused); C{--macsperport} bounds the addresses of a
port; C{--plug VNL} attaches any network vdetwist can open (C{--tap IF} is
C{--plug tap://IF}); frames are not truncated at 1518 bytes; a command of
the rc file that fails is logged as an error (C{FILE:LINE: command:
problem}) and the switch stops with status 1, where vde_switch ignores it
silently.  C{--daemon} and C{--pidfile} are twistd's
own options (C{twistd --pidfile F vde ...}; without C{-n} twistd
daemonizes).

A C{--plug} network that drops while the switch runs (its switch was
restarted, its tap removed) is logged as a warning naming it and why, and
reopened: 1 s after the drop, then twice as late each time, at most
C{--reconnect} seconds (60) apart, until it opens; a link that stayed up
for that long starts again from 1 s.  It comes back on the same port if no
one took it meanwhile, logged at info level.  C{--reconnect 0} keeps the
switch going without it (logged as an error, a warning if it ended
cleanly).  A port removed on purpose (C{port/remove}) is not reopened.

C{--web ENDPOINT} serves a read-only view of the switch
(L{vdetwist.web}): a live page, C{/api/status}, C{/metrics}.

SIGTERM, SIGINT, C{shutdown} on a console and the end of stdin with
C{--console} stop the switch cleanly: clients see their control connection
close, the sockets and the directory (when empty) are removed.
"""

from __future__ import annotations

import atexit
import errno
import grp
import os
import socket
import sys
from typing import TYPE_CHECKING, NoReturn, Optional

from twisted.application.service import Service
from twisted.copyright import version as twistedVersion
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from vdetwist import fastDispatch
from vdetwist._version import versionLine
from vdetwist.errors import PlugClosed, VdeError, reasonText
from vdetwist.node import (
    HubEngine, LoggingObserver, MacTable, Node, NodeObserver, SwitchEngine, parseMac,
)
from vdetwist.node.mactable import roundUpPowerOfTwo
from vdetwist.reconnect import Redialer
from vdetwist._transport.sockets import groupId, isAlive, isSocket

if TYPE_CHECKING:  # imported when the switch is built
    from vdetwist.vde2.console import StdioConsoleProtocol
    from vdetwist.vde2.interpreter import VdeConsole
    from vdetwist.vde2.server import VdeServer
    from vdetwist.web.resources import WebStatus

__all__ = ["Options", "makeService", "VdeSwitchService", "StartFailed", "defaultSwitchPath"]

log = Logger()

#: vde_switch's defaults.
DEFAULT_NUMPORTS = 32
DEFAULT_HASHSIZE = 128
GC_INTERVAL = 2
GC_EXPIRE = 100
MIN_PERSISTENCE = 3
#: The MAC table holds at most this many addresses (vde_switch's chained
#: table has no bound; the hash size only sets its bucket count).
MAC_CAPACITY = 65536
#: The most addresses one port may hold (--macsperport): a quarter of the
#: table, so a MAC flood recycles its own port's entries and leaves the
#: rest of the table to the other ports.
MACS_PER_PORT = 16384
#: --reconnect: the longest delay between attempts to reopen a --plug.
RECONNECT_MAX = 60
#: The delay before the first attempt to reopen a --plug that dropped.
RECONNECT_FIRST = 1
#: The rc files tried, in order, when --rcfile is not given.
DEFAULT_RCFILES = ("~/.vde2/vde_switch.rc", "/etc/vde2/vde_switch.rc")


def defaultSwitchPath(euid: Optional[int] = None) -> str:
    """
    vde_switch's default directory: C{/var/run/vde.ctl} for root, else
    C{/tmp/vde.ctl}.
    """
    if euid is None:
        euid = os.geteuid()
    return "/var/run/vde.ctl" if euid == 0 else "/tmp/vde.ctl"


def defaultRcfile() -> Optional[str]:
    """
    vde_switch's rc file when none is given: the first of
    L{DEFAULT_RCFILES} that exists (C{~} is C{$HOME}), or C{None}.
    """
    for path in DEFAULT_RCFILES:
        path = os.path.expanduser(path)
        if os.path.exists(path):
            return path
    return None


def _octal(option: str, text: str) -> int:
    try:
        value = int(text, 8)
    except (TypeError, ValueError):
        value = -1
    if not 0 <= value <= 0o7777:
        raise usage.UsageError(
            f"--{option}: expected an octal permission mode such as 660, not {text!r}"
        )
    return value


def _positive(option: str, text, what: str, minimum: int = 1) -> int:
    try:
        value = int(str(text).strip(), 0)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer from {minimum}"
        raise usage.UsageError(f"--{option}: expected {what} ({kind}), not {text!r}")
    return value


def _group(option: str, text: str) -> str:
    try:
        grp.getgrnam(text)
        return text
    except KeyError:
        pass
    if text.isdigit():
        try:
            grp.getgrgid(int(text))
            return text
        except KeyError:
            pass
    raise usage.UsageError(f"--{option}: no such group: {text!r}")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a switch compatible with vde2's vde_switch: vde2 clients (QEMU, "
        "vde_plug, ...) connect to its directory; --mgmt gives it a management "
        "console for vdeterm/unixcmd, --console one on stdin.  Defaults: "
        "directory /var/run/vde.ctl as root, else /tmp/vde.ctl; 32 ports; "
        "sockets 0600, directory 02700."
    )

    optFlags = [
        ["hub", "x", "Hub mode: every frame to every port, no learning, no VLANs."],
        ["fstp", "F", "Fast spanning tree (not implemented: refused)."],
        ["console", None,
         "stdin is a command console as vde_switch's: answers on stdout, "
         "EOF on stdin stops the switch (needs twistd -n)."],
        ["force-dir", None,
         "Use an existing switch directory even if another user owns it or "
         "group/others may write to it beyond --mode/--dirmode/--group "
         "(refused by default: they could replace its ctl socket)."],
    ]
    optParameters = [
        ["switch", "s", None,
         "Switch directory (default: /var/run/vde.ctl as root, else /tmp/vde.ctl)."],
        ["mode", "m", None, "Octal mode of the sockets (default 600)."],
        ["dirmode", None, None,
         "Octal mode of the directory (default 2700, or derived from --mode)."],
        ["group", "g", None, "Group owning the directory and sockets."],
        ["numports", "n", str(DEFAULT_NUMPORTS), "Number of ports (0..N-1)."],
        ["mgmt", "M", None, "Management console socket path (vdeterm, unixcmd)."],
        ["mgmtmode", None, None, "Octal mode of the console socket (default 600)."],
        ["mgmtgroup", None, None, "Group of the console socket."],
        ["hashsize", None, str(DEFAULT_HASHSIZE),
         "MAC table buckets (a power of two; others are rounded up)."],
        ["macsperport", None, str(MACS_PER_PORT),
         "Most MAC addresses one port may hold; a port beyond it forgets its least "
         "recently seen (0: no limit; not in vde_switch)."],
        ["macaddr", None, None,
         "Switch MAC address xx:xx:xx:xx:xx:xx (default 00:ff + 4 random bytes)."],
        ["rcfile", "f", None,
         "Console commands to run at start (default: ~/.vde2/vde_switch.rc, "
         "else /etc/vde2/vde_switch.rc, if one exists; --rcfile= runs none)."],
        ["offload", None, "on",
         "off: never agree to super-frames and partial checksums with our own "
         "clients (vde:// of vdetwist), so every port is plain as on vde_switch "
         "(not in vde_switch; --no-offload is the same)."],
        ["reconnect", None, str(RECONNECT_MAX),
         "A --plug network that drops is reopened 1 s later, then twice as late "
         "each time, at most this many seconds apart; back on its port if free "
         "(0: never, the switch goes on without it)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["plugs"] = []
        self["listen"] = []
        self["web"] = []
        self["web-host"] = []

    def opt_listen(self, description: str) -> None:
        """
        Accept cables in the VDE stream encoding on a Twisted server
        endpoint (repeatable), e.g. tcp:5000:interface=127.0.0.1,
        ssl:5001:privateKey=key.pem:certKey=cert.pem, unix:/run/sw.sock;
        each connection is a port.  Clients: vde_plug
        endpoint://tcp:host=H:port=5000, or any vde_plug behind socat/ssh.
        """
        self["listen"].append(_serverEndpointString("listen", description))

    def opt_web(self, description: str) -> None:
        """
        Serve a read-only view of the switch on a Twisted server endpoint
        (repeatable): / a live page, /api/status as JSON, /metrics for
        Prometheus.  No authentication: bind it to 127.0.0.1
        (tcp:8080:interface=127.0.0.1) or to a unix socket with a mode
        (unix:/run/vde.web:mode=600).
        """
        self["web"].append(_serverEndpointString("web", description))

    def opt_web_host(self, name: str) -> None:
        """
        Answer --web requests for the host name NAME too (repeatable), e.g.
        the name a reverse proxy passes on; requests for other names than
        the address --web listens on and localhost are refused (421), so
        that no other site's page reads the switch through DNS rebinding.
        """
        if not name or any(c in name for c in "/ \t[]@"):
            raise usage.UsageError(f"--web-host {name!r}: give a host name, e.g. sw.example")
        self["web-host"].append(name)

    def opt_plug(self, vnl: str) -> None:
        """
        Attach the network VNL as a port at start (repeatable), e.g.
        tap://tap0, vde:///tmp/other, vxvde://239.1.2.3.
        """
        self["plugs"].append(vnl)

    def opt_tap(self, interface: str) -> None:
        """
        Attach the tap interface IF (same as --plug tap://IF; repeatable).
        """
        self["plugs"].append(f"tap://{interface}")

    opt_t = opt_tap

    # Aliases are separate methods: usage.Options cannot print the help of
    # long options that share one method.
    def opt_sock(self, path: str) -> None:
        """
        Same as --switch.
        """
        self["switch"] = path

    def opt_vdesock(self, path: str) -> None:
        """
        Same as --switch.
        """
        self["switch"] = path

    def opt_unix(self, path: str) -> None:
        """
        Same as --switch.
        """
        self["switch"] = path

    def opt_mod(self, mode: str) -> None:
        """
        Same as --mode.
        """
        self["mode"] = mode

    def opt_no_offload(self) -> None:
        """
        Same as --offload=off.
        """
        self["offload"] = "off"

    def opt_version(self) -> NoReturn:
        """
        Print vdetwist's and Twisted's versions and exit.
        """
        print(versionLine("twistd vde"))
        print(f"Twisted {twistedVersion}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self["fstp"]:
            raise usage.UsageError(
                "--fstp: the fast spanning tree protocol is not implemented"
            )
        if self["console"] and _daemonizes(getattr(self, "parent", None)):
            raise usage.UsageError(
                "--console needs twistd -n (--nodaemon, before 'vde'): a daemon has no stdin"
            )
        self["numports"] = _positive("numports", self["numports"], "a number of ports")
        self["hashsize"] = _positive("hashsize", self["hashsize"], "a MAC table size")
        if self["web-host"] and not self["web"]:
            raise usage.UsageError("--web-host is for --web: add --web ENDPOINT")
        self["reconnect"] = _positive(
            "reconnect", self["reconnect"], "a number of seconds", minimum=0
        )
        self["macsperport"] = _positive(
            "macsperport", self["macsperport"], "a number of MAC addresses", minimum=0
        )
        if self["offload"] not in ("on", "off"):
            raise usage.UsageError(
                f"--offload: write on or off, not {self['offload']!r}"
            )
        for option in ("mode", "dirmode", "mgmtmode"):
            if self[option] is not None:
                self[option] = _octal(option, self[option])
        for option in ("group", "mgmtgroup"):
            if self[option] is not None:
                self[option] = _group(option, self[option])
        if self["macaddr"] is not None:
            try:
                self["macaddr"] = parseMac(self["macaddr"])
            except ValueError:
                raise usage.UsageError(
                    f"--macaddr: expected a MAC address such as 02:00:00:00:00:01, "
                    f"not {self['macaddr']!r}"
                ) from None
        path = self["switch"] or defaultSwitchPath()
        self["switch"] = os.path.abspath(path)
        if self["mgmt"] is not None:
            self["mgmt"] = os.path.abspath(self["mgmt"])
        if self["rcfile"]:
            self["rcfile"] = os.path.abspath(self["rcfile"])


def _serverEndpointString(option: str, description: str) -> str:
    """
    C{description} if it is a server endpoint string Twisted can listen on.
    """
    from twisted.internet import reactor

    from vdetwist.endpointstrings import EndpointError, serverEndpoint

    try:
        serverEndpoint(reactor, description)
    except EndpointError as e:
        raise usage.UsageError(f"--{option} {description}: {e}") from None
    return description


def _foldHelp(options: type) -> None:
    """
    usage.Options wraps an C{opt_} method's docstring for C{--help} as it
    is, indentation included: fold each into single spaces.
    """
    for name in dir(options):
        method = getattr(options, name)
        if name.startswith("opt_") and method.__doc__:
            method.__doc__ = " ".join(method.__doc__.split())


_foldHelp(Options)


def _logFailures(results: list, what: str) -> None:
    """
    Log the failures of a L{DeferredList}'s C{results}: a stop goes on
    past one that fails, and the failure is told now rather than as an
    unhandled error when it is collected.
    """
    for ok, result in results:
        if not ok:
            log.failure("{what} failed", result, what=what)


def _daemonizes(parent) -> bool:
    """
    Whether the twistd that parsed our options (C{parent}) will daemonize:
    twistd's options have C{nodaemon} (C{-n}; C{--debug} implies it);
    C{python -m twisted} never daemonizes, and has none.
    """
    if parent is None or "nodaemon" not in parent:
        return False
    return not (parent["nodaemon"] or parent.get("debug"))


def _switchModes(mode: Optional[int], dirmode: Optional[int]) -> tuple[int, int]:
    from vdetwist.vde2.server import switchModes

    return switchModes(mode, dirmode)


def preflight(config) -> None:
    """
    Check what can be checked before anything is created, so that twistd
    can report the problem before it daemonizes.

    @raise VdeError: naming the option and the problem.
    """
    path = config["switch"]
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise VdeError(
            f"--switch {path}: the parent directory {parent} does not exist", errno.ENOENT
        )
    if os.path.lexists(path) and not os.path.isdir(path):
        raise VdeError(f"--switch {path}: exists and is not a directory", errno.ENOTDIR)
    if not config["force-dir"]:
        from vdetwist.vde2.server import directoryProblem

        group = config["group"]
        problem = directoryProblem(
            path,
            _switchModes(config["mode"], config["dirmode"])[1],
            None if group is None else groupId(group),
        )
        if problem:
            raise VdeError(
                f"--switch {path}: {problem}; remove it, choose another directory, "
                f"or add --force-dir to use it as it is",
                errno.EPERM,
            )
    ctl = os.path.join(path, "ctl")
    if isSocket(ctl) and isAlive(ctl, socket.SOCK_STREAM):
        raise VdeError(
            f"--switch {path}: another switch is running there ({ctl} accepts connections)",
            errno.EADDRINUSE,
        )
    mgmt = config["mgmt"]
    if mgmt is not None:
        if not os.path.isdir(os.path.dirname(mgmt)) and os.path.dirname(mgmt) != path:
            raise VdeError(
                f"--mgmt {mgmt}: the directory {os.path.dirname(mgmt)} does not exist",
                errno.ENOENT,
            )
        if os.path.lexists(mgmt):
            if not isSocket(mgmt):
                raise VdeError(f"--mgmt {mgmt}: exists and is not a socket", errno.EEXIST)
            if isAlive(mgmt, socket.SOCK_STREAM):
                raise VdeError(
                    f"--mgmt {mgmt}: in use (another switch answers on it)", errno.EADDRINUSE
                )
        if len(os.fsencode(mgmt)) > 107:
            raise VdeError(f"--mgmt {mgmt}: too long for a unix socket path", errno.ENAMETOOLONG)
    if len(os.fsencode(ctl)) > 107:
        raise VdeError(f"--switch {path}: too long for a unix socket path", errno.ENAMETOOLONG)
    rcfile = config["rcfile"]
    if rcfile and not os.access(rcfile, os.R_OK):
        raise VdeError(f"--rcfile {rcfile}: cannot be read", errno.ENOENT)
    if config["plugs"]:
        from vdetwist.registry import registry
        from vdetwist.vnl import resolve

        for vnl in config["plugs"]:
            try:
                parsed = resolve(vnl)
                registry.backendFor(parsed.text, parsed.scheme)
            except VdeError as e:
                raise VdeError(f"--plug {vnl}: {e.message}", e.errno) from None


class StartFailed(VdeError):
    """
    The switch could not start: the message names the option and the
    problem.
    """


def _reportStartFailures() -> None:
    """
    Make a L{StartFailed} that ends the process print one line on the real
    stderr, as the checks of L{makeService} do, instead of a traceback:
    twistd starts the service after its log took over C{sys.stderr}, and
    lets the exception end the process (once it removed its pid file).
    """
    previous = sys.excepthook
    if getattr(previous, "reportsStartFailures", False):
        return

    def excepthook(kind, value, traceback) -> None:
        if not isinstance(value, StartFailed):
            previous(kind, value, traceback)
        elif sys.__stderr__ is not None:
            sys.__stderr__.write(f"twistd vde: {value.message}\n")
            sys.__stderr__.flush()

    excepthook.reportsStartFailures = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook


def _listenError(error: BaseException) -> tuple[str, int]:
    """
    What a failed C{--listen} says, and its errno: Twisted's
    L{CannotListenError} repeats the errno and ends in a full stop.
    """
    cause = getattr(error, "socketError", None)
    if not isinstance(error, CannotListenError) or not isinstance(cause, OSError):
        return str(error), errno.EIO
    where = f"{error.interface}:{error.port}" if error.interface else str(error.port)
    problem = f"cannot listen on {where}: {cause.strerror or cause}"
    if cause.errno == errno.EADDRINUSE:
        problem += " (another program uses it: stop it or choose another)"
    return problem, cause.errno or errno.EIO


def _webAddress(address) -> str:
    """
    Where C{--web} listens, for the log: the URL of a TCP port (the port
    number of C{tcp:0} included), the path of a unix socket.
    """
    name = getattr(address, "name", None)
    if name is not None:
        return os.fsdecode(name)
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"http://{host}:{address.port}/"


class _DropObserver(NodeObserver):
    """
    Tells the service when an endpoint leaves, to report its dropped
    C{--plug} networks.
    """

    def __init__(self, service: "VdeSwitchService") -> None:
        self.service = service

    def endpointRemoved(self, port, plug, reason) -> None:
        self.service._plugDropped(port, plug, reason)


class VdeSwitchService(Service):
    """
    The switch: a L{Node} with vde_switch's engine, a
    L{vdetwist.vde2.server.VdeServer} on its directory, the management
    console, and the C{--plug} networks.

    @param config: parsed L{Options}.
    @param reactor: the reactor (the global one by default).
    @param standalone: the process is this switch (twistd): C{shutdown} on
        the console stops the reactor, and a C{--plug} that fails to open
        after the start, or a failing rc file command, stops it too and
        makes the process exit with status 1.  Otherwise C{shutdown} only
        stops this service, and the failures are logged and set L{failed}.
    @param opener: opens the C{--plug} VNLs, like (and by default)
        L{vdetwist.registry.openVNL}.

    @ivar node: the L{Node} (after start).
    @ivar server: the L{VdeServer} (after start).
    @ivar console: the L{VdeConsole} (after start; it exists even without
        C{--mgmt}: it runs C{--rcfile}).
    @ivar stdio: with C{--console}, the L{StdioConsoleProtocol} on stdin
        and stdout (after start).
    @ivar plugs: the C{--plug} networks attached: (VNL, plug) pairs.
    @ivar clock: times the reopening of C{--plug} networks that dropped
        (the reactor; tests give a L{twisted.internet.task.Clock}).
    @ivar web: with C{--web}, the L{vdetwist.web.resources.WebStatus}.
    @ivar listening: the C{--listen} and C{--web} ports (L{twisted.internet.interfaces.IListeningPort}s).
    @ivar failed: C{None}, or what failed after the start (a C{--plug}
        that did not open, the rc file).
    @ivar exitStatus: the status the process should end with: 1 once such
        a failure stopped a standalone switch, else 0 (L{makeService}
        makes twistd honour it).
    """

    name = "vde"

    def __init__(self, config, reactor=None, standalone: bool = False, opener=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if opener is None:
            from vdetwist.registry import openVNL as opener
        self.opener = opener
        self.config = config
        self.reactor = reactor
        self.standalone = standalone
        self.node: Optional[Node] = None
        self.server: Optional[VdeServer] = None
        self.console: Optional[VdeConsole] = None
        self.stdio: Optional[StdioConsoleProtocol] = None
        self.mgmtPort = None
        self.plugs: list[tuple[str, object]] = []
        self.clock = reactor
        # The reopening of each --plug that dropped once: by attached plug,
        # and all of them.
        self._redialerOf: dict[object, Redialer] = {}
        self._redialers: list[Redialer] = []
        self.listening: list = []
        self.web: Optional[WebStatus] = None
        self.failed: Optional[str] = None
        self.exitStatus = 0
        self._built = False
        self._opening = False
        self._syncErrors: list[str] = []
        self._pending: list[Deferred] = []

    # -- start ------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """
        Create the directory and sockets (before twistd drops privileges).
        """
        super().privilegedStartService()
        self._build()

    def _build(self) -> None:
        """
        Make the node, open the C{--plug} networks (a failure to open one at
        once fails the start before any socket is created), then the
        switch directory and the console socket.
        """
        if self._built:
            return
        from vdetwist.vde2.console import listenConsole
        from vdetwist.vde2.interpreter import VdeConsole
        from vdetwist.vde2.server import VdeServer

        config = self.config
        reactor = self.reactor
        hashsize = config["hashsize"]
        size = roundUpPowerOfTwo(hashsize)
        if size != hashsize:
            log.warn("Hash size must be a power of 2. {n} rounded to {size}", n=hashsize, size=size)
        table = MacTable(
            reactor,
            hashsize=size,
            expiretime=GC_EXPIRE,
            minPersistence=MIN_PERSISTENCE,
            capacity=max(MAC_CAPACITY, size),
            gcInterval=GC_INTERVAL,
            portLimit=config["macsperport"],
        )
        engine = HubEngine() if config["hub"] else SwitchEngine()
        node = Node(
            engine, reactor, table,
            numports=config["numports"], firstPort=1, keepInactivePorts=True,
        )
        node.addObserver(LoggingObserver(log))
        node.addObserver(_DropObserver(self))
        mode, dirmode = _switchModes(config["mode"], config["dirmode"])
        mgmtMode = config["mgmtmode"] if config["mgmtmode"] is not None else 0o600
        console = VdeConsole(
            node, reactor,
            ctlDir=config["switch"],
            sockMode=mode,
            mgmtPath=config["mgmt"],
            mgmtMode=mgmtMode,
            macaddr=config["macaddr"],
            shutdown=self._shutdownCommand,
        )
        self.node, self.console = node, console

        def undo():
            self.node = self.console = None
            console.close()
            node.close()

        self._syncErrors = []
        self._opening = True
        try:
            for vnl in config["plugs"]:
                self._open(vnl)
        finally:
            self._opening = False
        if self._syncErrors:
            undo()
            self._startFailed("; ".join(self._syncErrors), errno.EIO)

        server = VdeServer(
            reactor, node, config["switch"],
            mode=mode, dirmode=dirmode, group=config["group"], flavour="vde_switch",
            forceDir=config["force-dir"],
        )
        server.offloads = config["offload"] == "on"
        server.mgmtMode = mgmtMode
        server.mgmtGroup = config["mgmtgroup"]
        try:
            server.start()
        except VdeError as e:
            undo()
            self._startFailed(f"--switch {config['switch']}: {e.message}", e.errno)
        console.attachServer(server)
        if config["mgmt"] is not None:
            try:
                self.mgmtPort = listenConsole(
                    reactor, console, config["mgmt"], mgmtMode, config["mgmtgroup"]
                )
            except VdeError as e:
                server.stop()
                undo()
                self._startFailed(f"--mgmt {config['mgmt']}: {e.message}", e.errno)
            log.info("management console on {path}", path=config["mgmt"])
        self.server = server
        self._built = True
        from vdetwist.streamplug import StreamPlugFactory

        for description in config["listen"]:
            factory = StreamPlugFactory(f"cable via {description}", self._accept)
            self._listen("listen", description, factory)
            log.info("accepting cables on {endpoint}", endpoint=description)
        if config.get("web"):
            from vdetwist.web.resources import WebStatus

            web = self.web = WebStatus(node, console, reactor, hosts=config.get("web-host", ()))
            for description in config["web"]:
                port = self._listen("web", description, web.site)
                log.info("web status on {endpoint}: {where}", endpoint=description,
                         where=_webAddress(port.getHost()))

    def _listen(self, option: str, description: str, factory):
        """
        Listen with C{factory} on C{description}, given as C{--option}; a
        failure undoes the start.

        @return: the listening port.
        """
        from vdetwist.endpointstrings import serverEndpoint

        d = serverEndpoint(self.reactor, description).listen(factory)
        failures: list[Failure] = []
        d.addCallbacks(self.listening.append, failures.append)
        if failures:
            self._teardown()
            error = failures[0].value
            assert error is not None, "a Failure holds its exception"
            problem, code = _listenError(error)
            self._startFailed(f"--{option} {description}: {problem}", code)
        return self.listening[-1]

    def _accept(self, plug) -> None:
        if self.node is None or self.console is None:  # set and cleared together
            plug.close()
            return
        self.console.describePlug(plug, "stream")
        try:
            port = self.node.addPort(plug)
        except VdeError as e:
            log.warn("{plug}: refused: {why}", plug=plug.description, why=e.message)
            plug.close()
            return
        log.info("{plug} is port {port}", plug=plug.description, port=port.number)

    def _startFailed(self, message: str, code: int) -> NoReturn:
        # Not critical: before the log begins (python -m twisted starts the
        # service first), Twisted copies critical events to stderr, which
        # would say it twice.
        log.error("cannot start: {problem}", problem=message)
        if self.standalone:
            _reportStartFailures()
        raise StartFailed(message, code)

    def startService(self) -> None:
        """
        Start the node, the stdin console (it reads once the reactor runs,
        after the rc file, as vde_switch's main loop), then run the rc file.
        """
        self._build()
        super().startService()
        node, console = self.node, self.console
        assert node is not None and console is not None, "_build made them or raised"
        node.start()
        if self.web is not None:
            self.web.start()
        if self.config["console"]:
            from vdetwist.vde2.console import serveStdio

            self.stdio = serveStdio(self.reactor, console)
        rcfile = self.config["rcfile"]
        if rcfile is None:
            rcfile = defaultRcfile()
        if rcfile and not self._runRcfile(rcfile):
            return
        log.info(
            "{kind} ready at {path}: {n} ports",
            kind="hub" if self.config["hub"] else "switch",
            path=self.config["switch"], n=self.config["numports"],
        )

    def _runRcfile(self, path: str) -> bool:
        """
        Run the rc file.  Each command that fails is logged as an error
        with the file and line, and the switch then stops with status 1:
        vde_switch goes on silently, leaving a switch configured otherwise
        than written (a VLAN missing, a port not where it should be).

        @return: whether every command succeeded.
        """
        log.info("running the rc file {path}", path=path)
        failures: list[tuple[int, str, str]] = []
        assert self.console is not None, "run once built"
        code, text = self.console.runScript(
            path, onFailure=lambda *failure: failures.append(failure))
        for line in text.decode("utf-8", "replace").splitlines():
            log.info("rc: {line}", line=line)
        for number, line, problem in failures:
            log.error("{path}:{number}: {line}: {problem}",
                      path=path, number=number, line=line, problem=problem)
        if code:
            self._failAfterStart(f"rc file {path}: {os.strerror(code)}")
        elif failures:
            lines = ", ".join(str(number) for number, _, _ in failures)
            self._failAfterStart(
                f"rc file {path}: the command on line {lines} failed; correct or remove it"
                if len(failures) == 1 else
                f"rc file {path}: the commands on lines {lines} failed; correct or remove them"
            )
        return not (code or failures)

    def _open(self, vnl: str) -> None:
        from vdetwist.registry import OpenArgs

        description = f"vdetwist switch {self.config['switch']}"
        d = self.opener(self.reactor, vnl, description, OpenArgs())
        d.addCallbacks(self._attach, self._plugFailed, callbackArgs=(vnl,), errbackArgs=(vnl,))
        if not d.called:
            self._pending.append(d)
            d.addBoth(self._settled, d)

    def _settled(self, result, d: Deferred):
        if d in self._pending:
            self._pending.remove(d)
        return result

    def _attach(self, plug, vnl: str) -> None:
        if self.node is None or self.console is None:  # set and cleared together
            plug.close()
            return
        try:
            port = self._addPort(plug, vnl)
        except VdeError as e:
            self._plugFailed(Failure(VdeError(f"no port for it: {e.message}", e.errno)), vnl)
            return
        log.info("--plug {vnl} attached as port {port}", vnl=vnl, port=port.number)

    def _addPort(self, plug, vnl: str, number: Optional[int] = None):
        """
        Make C{plug}, opened for C{--plug vnl}, a port: C{number} if given
        and free, else the first free one.

        @raise VdeError: no port is free (C{plug} is closed).
        """
        node, console = self.node, self.console
        assert node is not None and console is not None, "callers check the switch is up"
        scheme = vnl.partition("://")[0] if "://" in vnl else "vde"
        module = "tuntap" if scheme in ("tap", "macvtap") else "vdeplug"
        console.describePlug(plug, module, vnl)
        if number is not None:
            taken = node.getPort(number)
            if taken is not None and taken.endpoints:
                number = None
        try:
            port = node.addPort(plug, number)
        except VdeError:
            plug.close()
            raise
        self.plugs.append((vnl, plug))
        return port

    def _plugDropped(self, port, plug, reason: Optional[Failure]) -> None:
        """
        A node observer's C{endpointRemoved}: a C{--plug} network that
        closes on its own is a warning naming the VNL and the reason, and
        is reopened (see L{_reopen}).  With C{--reconnect 0}, it is an error
        (a warning when it ended cleanly) and the switch goes on without it.
        """
        attached = [(vnl, p) for vnl, p in self.plugs if p is plug]
        if not attached or self.node is None:
            return
        self.plugs.remove(attached[0])
        redialer = self._redialerOf.pop(plug, None)
        if reason is None:  # removed on purpose (Node.removePort): not a drop
            if redialer is not None:
                redialer.stop()
                self._redialers.remove(redialer)
            return
        vnl, error = attached[0][0], reason.value
        why = reasonText(error).removeprefix(f"{vnl}: ").rstrip(".")
        if not self.config["reconnect"]:
            emit = log.warn if isinstance(error, PlugClosed) else log.error
            emit("--plug {vnl} (port {port}) dropped: {why}; the switch goes on without it",
                 vnl=vnl, port=port.number, why=why)
            return
        if redialer is None:
            redialer = self._reopen(vnl, port.number)
        delay = redialer.linkDown()
        log.warn("--plug {vnl} (port {port}) dropped: {why}; reopening it in {delay:g} s",
                 vnl=vnl, port=port.number, why=why, delay=delay)

    def _reopen(self, vnl: str, number: int) -> Redialer:
        """
        What reopens C{--plug vnl} each time it drops, and puts it back on
        port C{number} if that is free.
        """
        from vdetwist.registry import OpenArgs

        description = f"vdetwist switch {self.config['switch']}"
        maximum = self.config["reconnect"]

        def reopened(plug) -> None:
            if self.node is None:
                plug.close()
                return
            try:
                port = self._addPort(plug, vnl, number)
            except VdeError as e:
                log.warn("--plug {vnl}: reopened, but no port for it: {why}; retrying in "
                         "{delay:g} s", vnl=vnl, why=e.message, delay=redialer.linkDown())
                return
            self._redialerOf[plug] = redialer
            moved = "" if port.number == number else f" (port {number} was taken)"
            log.info("--plug {vnl} is back, as port {port}{moved}",
                     vnl=vnl, port=port.number, moved=moved)

        def failed(reason: Failure, attempt: int) -> None:
            if attempt == 1:
                log.info("--plug {vnl}: cannot reopen it yet: {why}; trying again, at most "
                         "{maximum} s apart", vnl=vnl, maximum=maximum,
                         why=reasonText(reason.value).removeprefix(f"{vnl}: "))

        redialer = Redialer(
            self.clock, lambda: self.opener(self.reactor, vnl, description, OpenArgs()),
            reopened, failed, min(RECONNECT_FIRST, maximum), maximum
        )
        self._redialers.append(redialer)
        return redialer

    def _plugFailed(self, failure: Failure, vnl: str) -> None:
        error = failure.value
        text = str(error) if not isinstance(error, VdeError) else error.message
        message = f"--plug {vnl}: {text}"
        if self._opening:
            self._syncErrors.append(message)
            return
        if self.node is None:
            return
        self._failAfterStart(message)

    def _failAfterStart(self, message: str) -> None:
        """
        Something the configuration asks for failed once the switch was
        built: log it and set L{failed}; standalone, end the process with
        status 1 (an application embedding the service decides).
        """
        self.failed = message
        if not self.standalone:
            log.critical("{problem}", problem=message)
            return
        log.critical("{problem}; stopping", problem=message)
        self.exitStatus = 1
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def _shutdownCommand(self) -> None:
        if self.standalone:
            if self.reactor.running:
                self.reactor.stop()
            else:
                # From the rc file, before the reactor runs: vde_switch
                # exits there too.
                self.reactor.callWhenRunning(self.reactor.stop)
        elif self.running:
            self.stopService()

    # -- stop -------------------------------------------------------------

    def stopService(self) -> Deferred:
        super().stopService()
        return self._teardown()

    def _teardown(self) -> Deferred:
        stdio, self.stdio = self.stdio, None
        console, self.console = self.console, None
        mgmtPort, self.mgmtPort = self.mgmtPort, None
        server, self.server = self.server, None
        node, self.node = self.node, None
        listening, self.listening = self.listening, []
        web, self.web = self.web, None
        if web is not None:
            web.stop()
        self._built = False
        for redialer in self._redialers:
            redialer.stop()
        self._redialers.clear()
        self._redialerOf.clear()
        # With no node, a cancelled open is not reported as a failure.
        for d in list(self._pending):
            d.cancel()
        # Stop reading stdin at once; its last answers may still be leaving.
        waits = [] if stdio is None else [stdio.close()]
        if console is not None:
            # Its sessions end; the capture files get what was captured
            # before the node goes.
            waits.append(console.close())
        d = succeed(None)
        if mgmtPort is not None:
            listening.append(mgmtPort)
        if listening:
            d = DeferredList([maybeDeferred(p.stopListening) for p in listening],
                             consumeErrors=True)
            d.addCallback(_logFailures, "stopping a listener")

        def stopServer(result):
            if server is not None:
                server.stop()
            if node is not None:
                node.close()
            self.plugs.clear()
            return None

        d.addBoth(stopServer)
        if not waits:
            return d
        return DeferredList([d, *waits], consumeErrors=True).addCallback(
            _logFailures, "stopping the switch")


def _exitWithStatusOf(service: VdeSwitchService) -> None:
    """
    End the process with C{service.exitStatus} when it is not 0.

    twistd and C{python -m twisted} honour no exit status of a service:
    they run the reactor, clean up (pid file, logs) and return, so the
    process ends with 0; the only outcome they carry over is the signal
    that stopped the reactor (C{reactor._exitSignal}), and a C{SystemExit}
    raised while the reactor runs (a callback, a shutdown trigger) is caught
    and logged.  So once they have returned, at interpreter exit, the
    status is replaced: C{atexit} cannot change it but by C{os._exit}.
    """

    def exitWithStatus() -> None:
        if not service.exitStatus:
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(service.exitStatus)

    atexit.register(exitWithStatus)


def makeService(config) -> VdeSwitchService:
    """
    The twistd entry point: check the configuration (so that problems are
    reported before twistd daemonizes: the process exits with status 1 and
    the message) and build the service.
    """
    try:
        preflight(config)
    except VdeError as e:
        raise SystemExit(f"twistd vde: {e.message}") from None
    service = VdeSwitchService(config, standalone=True)
    _exitWithStatusOf(service)
    fastDispatch(service.reactor)
    return service
