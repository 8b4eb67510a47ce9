"""
User and network namespaces without root, for C{vdens}.

A process may create a user namespace (C{unshare(CLONE_NEWUSER)}) only while
it has a single thread, and in the namespace it gets every capability over
the namespaces it creates with it: a private network namespace, in which it
may create a tap, and a private mount namespace, in which it may bind-mount
a C{resolv.conf}.  The calls here are the few system calls that needs,
through C{ctypes} where Python has no wrapper; they raise
L{NamespaceError} with a one-line message saying what to change.

Nothing here uses the reactor: the process calling these is a fresh fork
about to C{exec} the user's command.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Optional, Sequence

from vdetwist._transport.device import IFF_VNET_HDR, TAP_FLAGS, enableOffloads
from vdetwist.backends.tap import TUN_DEVICE, openTap
from vdetwist.errors import VdeError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2

#: The capabilities C{vdens} gives the command, as the C tool does: enough
#: to configure the interface and serve on it, only over the namespace.
CAP_NET_BIND_SERVICE = 10
CAP_NET_BROADCAST = 11
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
NET_CAPABILITIES = (CAP_NET_BIND_SERVICE, CAP_NET_BROADCAST, CAP_NET_ADMIN, CAP_NET_RAW)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sh22x")

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(Exception):
    """
    A namespace step failed; the message is one line saying what to change.
    """


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(result: int, what: str) -> None:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _readSysctl(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userNamespaceAdvice(code: int) -> str:
    """
    What to change when C{unshare(CLONE_NEWUSER)} failed with C{code}, from
    the sysctls this kernel has.
    """
    if code == errno.EINVAL:
        return "this kernel has no user namespaces (CONFIG_USER_NS)"
    if _readSysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return ("unprivileged user namespaces are disabled: enable them with "
                "'sysctl kernel.unprivileged_userns_clone=1' (as root)")
    if _readSysctl("/proc/sys/user/max_user_namespaces") == "0" or code == errno.ENOSPC:
        return ("user namespaces are disabled or used up (user.max_user_namespaces is "
                f"{_readSysctl('/proc/sys/user/max_user_namespaces')}): raise it with "
                "'sysctl user.max_user_namespaces=10000' (as root)")
    if _readSysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces: "
                "'sysctl kernel.apparmor_restrict_unprivileged_userns=0' (as root)")
    return ("this system does not permit user namespaces here (a container's seccomp "
            "policy?): run vdens where unshare -Urn works")


def unshareNetwork(mounts: bool) -> None:
    """
    Move the calling (single-threaded) process into a new user namespace
    that maps only its own uid and gid, with a new network namespace and,
    if C{mounts}, a new mount namespace whose changes stay private.

    @raise NamespaceError: user namespaces are not available.
    """
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWUSER | CLONE_NEWNET | (CLONE_NEWNS if mounts else 0)
    if _libc.unshare(flags) < 0:
        code = ctypes.get_errno()
        raise NamespaceError(
            f"cannot create a user namespace: {os.strerror(code)}: "
            f"{userNamespaceAdvice(code)}"
        )
    try:
        # A process may map its own ids in the namespace it made, one line
        # each, the groups once setgroups is denied.
        for name, text in (("uid_map", f"{uid} {uid} 1\n"), ("setgroups", "deny\n"),
                           ("gid_map", f"{gid} {gid} 1\n")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as e:
        raise NamespaceError(
            f"cannot map uid {uid} in the new user namespace: {e.strerror}: "
            f"{userNamespaceAdvice(e.errno or errno.EPERM)}"
        ) from None
    if mounts:
        try:
            _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount")
        except OSError as e:
            raise NamespaceError(f"cannot make the mount namespace private: {e}") from None


def setLinkUp(name: str) -> None:
    """
    Bring the interface C{name} of this network namespace up.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        raw = os.fsencode(name)
        answer = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ_FLAGS.pack(raw, 0))
        _, flags = _IFREQ_FLAGS.unpack(answer)
        fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ_FLAGS.pack(raw, flags | IFF_UP))


def tunAdvice(st: Optional[os.stat_result], user: str) -> str:
    """
    Why C{/dev/net/tun} (as C{st} saw it, outside the user namespace where
    its owner has a name) cannot be opened by C{user}, and the fix.
    """
    if st is None:
        return f"{TUN_DEVICE} is not accessible to {user}"
    import pwd

    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return (
        f"{TUN_DEVICE} (mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}) is not "
        f"accessible to {user}: make it 0666 as stock Debian and Ubuntu have it "
        f"('chmod 0666 {TUN_DEVICE}' as root, or a udev rule), or run vdens as root"
    )


def _userName() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def makeTap(name: str, advice: str, offload: bool) -> tuple[int, int]:
    """
    Create the tap C{name} in this network namespace, bring it up, and
    return its (non-blocking, close-on-exec) descriptor and, if C{offload},
    the C{TUN_F_*} it accepts on writes (else 0); C{advice} is the message
    if C{/dev/net/tun} may not be opened.

    With C{offload}, the tap carries the virtio-net header and has the
    kernel's offloads on (checksum, TSO4/6, ECN, and USO where the kernel
    has it), so the plug outside reads and writes 64 KiB super-frames.
    """
    try:
        fd, _ = openTap(name, TAP_FLAGS | IFF_VNET_HDR if offload else TAP_FLAGS)
    except VdeError as e:
        if e.errno == errno.EACCES:
            raise NamespaceError(advice) from None
        raise NamespaceError(str(e)) from None
    offloads = 0
    if offload:
        try:
            offloads = enableOffloads(fd)
        except OSError as e:
            os.close(fd)
            raise NamespaceError(f"the tap {name} refused the offloads (TUNSETOFFLOAD): "
                                 f"{e.strerror}: run vdens with --no-offload") from None
    setLinkUp(name)
    return fd, offloads


def bindResolvConf(path: Optional[str], addresses: Sequence[str]) -> None:
    """
    Bind-mount over C{/etc/resolv.conf}, in this (private) mount namespace,
    a file naming C{addresses} as name servers, or else the file C{path}.
    """
    source = path
    temporary = None
    if addresses:
        fd, temporary = tempfile.mkstemp(prefix="vdens-resolv.")
        with os.fdopen(fd, "w") as f:
            f.writelines(f"nameserver {address}\n" for address in addresses)
        os.chmod(temporary, 0o444)
        source = temporary
    assert source is not None, "callers give addresses or a file"
    try:
        _check(_libc.mount(os.fsencode(source), b"/etc/resolv.conf", None, MS_BIND, None),
               f"mount {source} on /etc/resolv.conf")
    except OSError as e:
        raise NamespaceError(f"cannot bind-mount {source} on /etc/resolv.conf: "
                             f"{os.strerror(e.errno or errno.EIO)}") from None
    finally:
        if temporary is not None:
            os.unlink(temporary)


def grantCapabilities(capabilities: Sequence[int]) -> None:
    """
    Make C{capabilities} (held in the namespace) ambient, so the command
    this process executes keeps them though it is not root there.
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for cap in capabilities:
        data[cap // 32].inheritable |= 1 << (cap % 32)
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    for cap in capabilities:
        _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0),
               f"raising ambient capability {cap}")


def dieWithParent(signum: int) -> None:
    """
    Have the kernel send C{signum} to this process when its parent ends.
    """
    _check(_libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


@dataclass
class Setup:
    """
    What the namespace holds before the command runs.

    @ivar ifnames: the taps to create, one per VNL; none for no network
        (only lo).
    @ivar resolvConf: a file to show as C{/etc/resolv.conf}, if any.
    @ivar resolvAddresses: name servers to list in a private
        C{/etc/resolv.conf} (wins over C{resolvConf}).
    @ivar sysadm: also grant C{CAP_SYS_ADMIN} (over the namespace).
    @ivar offload: open the taps with the virtio-net header and the
        kernel's offloads (C{--no-offload} turns it off).
    """

    ifnames: Sequence[str] = field(default_factory=tuple)
    resolvConf: Optional[str] = None
    resolvAddresses: Sequence[str] = field(default_factory=tuple)
    sysadm: bool = False
    offload: bool = True

    @property
    def mounts(self) -> bool:
        """
        Whether the namespace needs a mount namespace of its own.
        """
        return self.sysadm or bool(self.resolvConf or self.resolvAddresses)

    @property
    def capabilities(self) -> tuple[int, ...]:
        return NET_CAPABILITIES + ((CAP_SYS_ADMIN,) if self.sysadm else ())


def enter(setup: Setup) -> list[tuple[int, int]]:
    """
    Move this single-threaded process into new namespaces set up as
    C{setup} says; return the descriptor of each tap C{setup.ifnames} names,
    in order, with the offloads it accepts on writes (see L{makeTap}).

    @raise NamespaceError: a step failed.
    """
    if setup.ifnames:
        try:
            tun: Optional[os.stat_result] = os.stat(TUN_DEVICE)
        except OSError:
            tun = None
        advice = tunAdvice(tun, _userName())
    unshareNetwork(setup.mounts)
    try:
        setLinkUp("lo")
    except OSError as e:
        raise NamespaceError(f"cannot bring lo up: {e.strerror}") from None
    taps = [makeTap(name, advice, setup.offload) for name in setup.ifnames]
    if setup.resolvAddresses or setup.resolvConf:
        bindResolvConf(setup.resolvConf, setup.resolvAddresses)
    return taps
