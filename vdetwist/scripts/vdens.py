"""
C{vdens}: run a command in a network namespace of its own, whose
interface is plugged into a VNL (or, with C{-m}, whose interfaces are each
plugged into one of several VNLs), without root (the command line of
rd235/vdens)::

    vdens [OPTIONS] [VNL [COMMAND [ARGS]]]
    vdens -m [OPTIONS] VNL [VNL...] [-- COMMAND [ARGS]]

The user namespace must be made by a single-threaded process, and the plug
must stay in the caller's network namespace (where C{slirp://} reaches the
host's loopback), so C{vdens} forks before anything starts a thread: the
child makes the namespaces and the taps in them, passes the taps'
descriptors back over a socket pair and, once the parent has opened the
VNLs, executes the command with the network capabilities over its
namespace.  The parent cables each tap to its VNL until the command ends,
and exits with its status.  The taps carry the virtio-net header with the
kernel's offloads on (unless C{--no-offload}), so the namespace's TCP moves
64 KiB super-frames that cross whole to a VNL that takes them (C{slirp://},
our switch) and are segmented in software for any other.  Without a
network (C{-}, C{no}) there is no parent: the process enters the namespaces
and executes the command itself.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import NoReturn, Optional, Sequence

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist._version import versionLine
from vdetwist.backends.tap import checkInterfaceName, tapPlugFromDescriptor
from vdetwist.cable import Cable
from vdetwist.errors import VdeError
from vdetwist.interfaces import IVdePlug
from vdetwist.registry import openVNL
from vdetwist.scripts.cli import UsageError, getopts, logWarningsToStderr
from vdetwist.userns import NamespaceError, Setup, dieWithParent, enter, grantCapabilities

USAGE = """\
Usage: vdens [OPTIONS] [VNL [COMMAND [ARGS...]]]
       vdens -m [OPTIONS] VNL [VNL...] [-- COMMAND [ARGS...]]
  Run COMMAND ($SHELL if omitted) in a network namespace of its own whose
  interface is plugged into VNL; no interface but lo if VNL is omitted,
  "-" or "no".  With -m, one interface per VNL: vde0 on the first, vde1 on
  the second, and so on.
OPTIONS:
  -h | --help           print this short usage message
  --version             print vdetwist's version and exit
  -m | --multi          several VNLs, up to "--" (then the command)
  -i | --iface NAME     the interface's name (default "vde0"); with -m the
                        names' prefix (default "vde")
  -r | --resolvconf FILE
                        the file to show as /etc/resolv.conf in the namespace
  -R | --resolvaddr ADDR[,ADDR...]
                        the name servers of the namespace's /etc/resolv.conf
  -s | --sysadm         grant CAP_SYS_ADMIN too (over the namespace)
  --no-offload          taps without the virtio-net header and the kernel's
                        offloads: one MTU frame per read and write
  -c | --clone, -u | --unshare
                        accepted for the C tool's scripts; vdens always forks
"""

SHORT = "i:hsucmr:R:"
LONG = ["help", "multi", "iface=", "sysadm", "unshare", "clone", "resolvconf=",
        "resolvaddr=", "version", "no-offload"]

#: VNL arguments that mean "no network".
NO_NETWORK = ("", "-", "no")
DEFAULT_IFNAME = "vde0"
#: With C{-m}: interface N is named this prefix (or C{-i}'s) and N.
DEFAULT_PREFIX = "vde"
#: With C{-m}: at most this many VNLs (the taps' descriptors travel in one
#: message, and the kernel passes at most 253 descriptors in one).
MAX_NETWORKS = 253
#: The child's message with the taps: this, then each tap's C{TUN_F_*}
#: write offloads.
READY = b"ready"
_OFFLOADS = struct.Struct("=I")
#: How long the namespace may take to be ready (a few milliseconds when well).
READY_TIMEOUT = 30.0
#: Signals passed on to the command; those a terminal sends to its whole
#: foreground group (SIGINT, SIGQUIT) reach it without us.
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
TERMINAL = (signal.SIGINT, signal.SIGQUIT)


@dataclass
class Options:
    setup: Setup = field(default_factory=Setup)
    #: One per interface of C{setup.ifnames}, in order.
    vnls: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    help: bool = False
    version: bool = False


def parseArgs(args: list[str], environ: dict[str, str]) -> Options:
    """
    The C tool's command line (options stop at the VNL, so the command keeps
    its own; with C{-m} the VNLs end at C{--}), into L{Options};
    C{VDE_RESOLVCONF} and C{VDE_RESOLVADDR} are the defaults of C{-r} and
    C{-R}.
    """
    opts, rest = getopts(args, SHORT, LONG, permute=False)
    options = Options()
    ifname: Optional[str] = None
    multi = False
    resolvConf = environ.get("VDE_RESOLVCONF") or None
    resolvAddr = environ.get("VDE_RESOLVADDR") or None
    for name, value in opts:
        if name in ("-h", "--help"):
            options.help = True
        elif name == "--version":
            options.version = True
        elif name in ("-i", "--iface"):
            ifname = value
        elif name in ("-r", "--resolvconf"):
            resolvConf = value
        elif name in ("-R", "--resolvaddr"):
            resolvAddr = value
        elif name in ("-s", "--sysadm"):
            options.setup.sysadm = True
        elif name in ("-m", "--multi"):
            multi = True
        elif name == "--no-offload":
            options.setup.offload = False
    if multi and rest:
        options.vnls = rest[: rest.index("--")] if "--" in rest else rest
        options.command = rest[len(options.vnls) + 1 :]
        options.setup.ifnames = _multiNames(options.vnls, ifname or DEFAULT_PREFIX)
    elif rest:
        options.command = rest[1:]
        if rest[0] not in NO_NETWORK:
            options.vnls = rest[:1]
            options.setup.ifnames = (_checkedName(ifname or DEFAULT_IFNAME),)
    if resolvAddr:
        options.setup.resolvAddresses = _addresses(resolvAddr)
    elif resolvConf:
        if not os.path.isfile(resolvConf):
            raise UsageError(f"-r: {resolvConf} is not a file")
        options.setup.resolvConf = os.path.abspath(resolvConf)
    return options


def _multiNames(vnls: list[str], prefix: str) -> tuple[str, ...]:
    """
    The interfaces of C{-m}'s C{vnls}: C{prefix} numbered from 0.
    """
    if not vnls:
        raise UsageError("-m: no VNL before --: name at least one network")
    if len(vnls) > MAX_NETWORKS:
        raise UsageError(f"-m: {len(vnls)} VNLs, at most {MAX_NETWORKS}")
    for vnl in vnls:
        if vnl in NO_NETWORK:
            raise UsageError(f"-m: {vnl!r} is not a VNL: with -m each argument before -- "
                             "is a network")
    return tuple(_checkedName(f"{prefix}{n}") for n in range(len(vnls)))


def _checkedName(ifname: str) -> str:
    try:
        checkInterfaceName(ifname)
    except ValueError as e:
        raise UsageError(f"-i: {e}") from None
    return ifname


def _addresses(text: str) -> tuple[str, ...]:
    found = []
    for item in filter(None, text.split(",")):
        try:
            found.append(str(ipaddress.ip_address(item.strip())))
        except ValueError:
            raise UsageError(f"-R: {item!r} is not an IPv4 or IPv6 address") from None
    return tuple(found)


def _fail(message: str, status: int = 1) -> NoReturn:
    os.write(2, f"vdens: {message}\n".encode(errors="replace"))
    os._exit(status)


def _execute(setup: Setup, command: list[str]) -> NoReturn:
    """
    Give the command its capabilities and become it (in the namespaces).
    """
    try:
        grantCapabilities(setup.capabilities)
    except OSError as e:
        _fail(f"cannot grant the capabilities: {e}")
    # Python ignores these; the command must not inherit that.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, *TERMINAL, *FORWARDED):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except OSError as e:
        _fail(f"{command[0]}: {e.strerror}", 127 if e.errno == errno.ENOENT else 126)


def _child(sock: socket.socket, setup: Setup, command: list[str], parent: int) -> NoReturn:
    """
    In the fork: make the namespaces and the taps, hand the taps to the
    parent, and run the command once the parent says the VNLs are open.
    """
    try:
        taps = enter(setup)
        fds = [fd for fd, _ in taps]
        socket.send_fds(sock, [READY, *(_OFFLOADS.pack(offloads) for _, offloads in taps)],
                        fds)
        for fd in fds:
            os.close(fd)
        dieWithParent(signal.SIGHUP)
        if sock.recv(16) != b"go" or os.getppid() != parent:
            os._exit(1)
        sock.close()
        _execute(setup, command)
    except NamespaceError as e:
        _fail(str(e))
    except BaseException as e:  # never a traceback, nor a return into the parent's code
        _fail(f"setting up the namespace failed: {e}")


def _receiveTaps(sock: socket.socket, pid: int, count: int) -> list[tuple[int, int]]:
    """
    Wait (bounded) for the child's C{count} taps, each with its write
    offloads; if the child gave up instead (it said why), exit with its
    status.
    """
    sock.settimeout(READY_TIMEOUT)
    size = len(READY) + count * _OFFLOADS.size
    try:
        message, fds, _, _ = socket.recv_fds(sock, size + 1, count, socket.MSG_CMSG_CLOEXEC)
    except socket.timeout:
        os.kill(pid, signal.SIGKILL)
        message, fds = b"", []
        sys.stderr.write(f"vdens: the namespace was not ready in {READY_TIMEOUT:g} s\n")
    if len(message) != size or not message.startswith(READY) or len(fds) != count:
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(_exitCode(status) or 1)
    offloads = [value for (value,) in _OFFLOADS.iter_unpack(message[len(READY):])]
    return list(zip(fds, offloads))


def _exitCode(status: int) -> int:
    """
    A wait status as a shell reports it: the exit code, or 128 + signal.
    """
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


@implementer(IReadDescriptor)
class _ExitWatcher:
    """
    Readable when the process behind a pidfd ends: reaps it and fires
    C{ended} with its exit code.
    """

    def __init__(self, reactor, pid: int) -> None:
        self.reactor = reactor
        self.pid = pid
        self.fd = os.pidfd_open(pid)
        self.ended: Deferred[int] = Deferred()
        reactor.addReader(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "vdens"

    def doRead(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.reactor.removeReader(self)
            os.close(self.fd)
            self.ended.callback(_exitCode(status))

    def connectionLost(self, reason: Failure) -> None:
        pass


async def _plug(reactor, vnls: list[str], ifnames: Sequence[str], command: list[str],
                pid: int, sock: socket.socket, taps: list[tuple[int, int]]) -> int:
    """
    Open C{vnls}, cable each tap to its VNL, let the command run, and
    return its exit code once it ends.
    """
    watcher = _ExitWatcher(reactor, pid)
    # Tap N, then VNL N: a plug owns its descriptor, so on a failure the
    # descriptors from (len(plugs) + 1) // 2 on are still ours to close.
    plugs: list[IVdePlug] = []
    try:
        for vnl, ifname, (fd, offloads) in zip(vnls, ifnames, taps):
            plugs.append(tapPlugFromDescriptor(reactor, fd, f"tap://{ifname} (vdens)", offloads))
            plugs.append(await openVNL(reactor, vnl, "vdens"))
    except VdeError as e:
        for plug in plugs:
            plug.close()
        for fd, _ in taps[(len(plugs) + 1) // 2 :]:
            os.close(fd)
        sys.stderr.write(f"vdens: {e}\n")
        sock.close()
        await watcher.ended
        return 1
    cables = [Cable(tap, plug) for tap, plug in zip(plugs[::2], plugs[1::2])]
    sock.send(b"go")
    sock.close()

    def networkGone(reason: BaseException) -> None:
        if not watcher.ended.called:
            sys.stderr.write(f"vdens: the network closed ({reason}): hanging up {command[0]}\n")
            os.kill(pid, signal.SIGHUP)

    for cable in cables:
        cable.done.addCallback(networkGone)
    try:
        return await watcher.ended
    finally:
        for cable in cables:
            cable.close()


def runPlug(vnls: list[str], command: list[str], pid: int, sock: socket.socket,
            ifnames: Sequence[str]) -> int:
    """
    The parent: cable the child's taps to C{vnls} until the command ends.
    """
    for signum in TERMINAL:
        signal.signal(signum, signal.SIG_IGN)
    forward = lambda signum, frame: os.kill(pid, signum)
    for signum in FORWARDED:
        signal.signal(signum, forward)
    taps = _receiveTaps(sock, pid, len(ifnames))
    logWarningsToStderr()
    from twisted.internet import reactor

    result: list[int] = []

    def start() -> None:
        # The reactor has installed its handlers: ours again on top.
        for signum in TERMINAL:
            signal.signal(signum, signal.SIG_IGN)
        for signum in FORWARDED:
            signal.signal(signum, forward)
        d = ensureDeferred(_plug(reactor, vnls, ifnames, command, pid, sock, taps))
        d.addCallback(result.append)

        def failed(failure: Failure) -> None:
            sys.stderr.write(f"vdens: {failure.getErrorMessage()}\n")
            result.append(1)

        d.addErrback(failed)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    return result[0] if result else 1


def main(argv: Optional[list[str]] = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    try:
        options = parseArgs(argv[1:], dict(os.environ))
    except UsageError as e:
        sys.stderr.write(f"vdens: {e} (vdens --help lists the options)\n")
        raise SystemExit(1)
    if options.help:
        sys.stderr.write(USAGE)
        raise SystemExit(1)
    if options.version:
        sys.stdout.write(f"{versionLine('vdens')}\n")
        raise SystemExit(0)
    command = options.command or [os.environ.get("SHELL", "")]
    if not command[0]:
        _fail("$SHELL is not set: name the command to run")
    if shutil.which(command[0]) is None:
        _fail(f"{command[0]}: command not found", 127)
    sys.stdout.flush()
    sys.stderr.flush()
    if not options.setup.ifnames:
        try:
            enter(options.setup)
        except NamespaceError as e:
            _fail(str(e))
        _execute(options.setup, command)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        ours.close()
        _child(theirs, options.setup, command, parent)
    theirs.close()
    raise SystemExit(runPlug(options.vnls, command, pid, ours, options.setup.ifnames))


if __name__ == "__main__":
    main()
