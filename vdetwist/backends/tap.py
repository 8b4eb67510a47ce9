"""
C{tap://NAME}: a Linux tap interface, opened as libvdeplug4's tap plug does.

C{/dev/net/tun} is opened and C{TUNSETIFF} (0x400454ca) is issued with a
40-byte C{struct ifreq} holding NAME and the flags C{IFF_TAP | IFF_NO_PI}
(0x1002): a missing tap is created (and vanishes with the plug), an existing
persistent one (C{ip tuntap add dev NAME mode tap user U}) is attached to.
One C{read}/C{write} is one Ethernet frame, no header.  An empty NAME lets
the kernel pick C{tapN}.

Unlike the C plug, the descriptor is non-blocking (the reactor must never
wait on it) and close-on-exec, and NAME is checked: the C plug cuts a long
name to 15 bytes silently, this one refuses it.  Reads drain the device in
batches until it would block; a write the device refuses (queue full,
interface down, frame too short) drops the frame and counts it.  A tap
deleted while open (C{ip link del NAME}) closes the plug with a
L{vdetwist.errors.PlugLost} naming the interface, logged once.

L{FramePlug}, the reactor-facing plug over a frame-per-read descriptor, is
shared with C{macvtap://} and C{pcap://}.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from typing import Optional

from twisted.internet.defer import succeed
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist.errors import PlugLost, VdeError, VNLError
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, ReaderPlug
from vdetwist.reference import SchemeReference

REFERENCE = SchemeReference(
    scheme="tap",
    synopsis="tap://NAME",
    description=(
        "The Linux tap interface NAME (`/dev/net/tun`, `IFF_TAP|IFF_NO_PI`): a "
        "missing tap is created and vanishes with the plug (that needs "
        "CAP_NET_ADMIN), an existing persistent one (`ip tuntap add dev NAME mode tap "
        "user USER`) is attached to. An empty NAME lets the kernel pick `tapN`. "
        "NAME is taken as written: no quotes, escapes or options."
    ),
    examples=(
        ("tap://tap0", "the tap `tap0`"),
        ("vde_plug tap://tap0 switch:///tmp/sw", "(a command) a switch with a tap on its host port"),
    ),
    differences=(
        "A name longer than 15 bytes is refused; C cuts it silently.",
        "The descriptor is non-blocking and close-on-exec; a tap deleted while "
        "open closes the plug.",
    ),
    manual="libvdeplug_tap",
)

#: The clone device of the tun driver.
TUN_DEVICE = "/dev/net/tun"

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
TUNGETIFF = 0x800454D2

IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
#: The flags libvdeplug4 (and vde_switch -t) open taps with.
TAP_FLAGS = IFF_TAP | IFF_NO_PI

#: Interface names are at most this many bytes (IFNAMSIZ 16 with the NUL).
MAX_IFNAME = 15

#: C{struct ifreq} as TUNSETIFF reads it: the name, the flags, padding to 40.
IFREQ = struct.Struct("16sH22x")

#: Read this many frames at most per readiness event, so one busy device
#: cannot starve the other descriptors.
READ_BATCH = 256
#: Read buffer: one byte more than the largest VDE frame, so that a longer
#: (truncated) frame shows and is discarded instead of delivered cut.
READ_SIZE = VDE_ETHBUFSIZE + 1

#: Errors that mean the device behind a descriptor is gone for good.
GONE = frozenset({errno.EBADFD, errno.ENODEV, errno.ENXIO, errno.EBADF})

log = Logger()


def checkInterfaceName(name: str, what: str = "interface name") -> bytes:
    """
    Apply the kernel's rules for interface names (C{dev_valid_name}) and
    return the name as bytes.

    @raise ValueError: with a message naming the problem.
    """
    raw = os.fsencode(name)
    if len(raw) > MAX_IFNAME:
        raise ValueError(
            f"{what} {name!r} is too long: {len(raw)} bytes, at most {MAX_IFNAME}"
        )
    if raw in (b".", b".."):
        raise ValueError(f"{what} {name!r} is not allowed")
    for byte in raw:
        if byte in b"/: \t\n\v\f\r" or byte == 0:
            raise ValueError(
                f"{what} {name!r} contains {chr(byte)!r}: names may not "
                "contain '/', ':', NUL or whitespace"
            )
    return raw


def _exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def setIff(fd: int, name: bytes, flags: int = TAP_FLAGS) -> tuple[str, int]:
    """
    Issue TUNSETIFF on C{fd}; return the interface name the kernel settled
    on and the flags it reports back.
    """
    answer = fcntl.ioctl(fd, TUNSETIFF, IFREQ.pack(name, flags))
    rawName, gotFlags = IFREQ.unpack(answer)
    return os.fsdecode(rawName.split(b"\0", 1)[0]), gotFlags


def _openDevice(path: str, purpose: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if path == TUN_DEVICE:
            raise VdeError(
                f"{path} does not exist: load the tun module (modprobe tun) "
                "or create the node (mknod /dev/net/tun c 10 200)",
                errno.ENOENT,
            ) from None
        raise
    except PermissionError as e:
        raise VdeError(
            f"permission denied opening {path} for {purpose}: needs root "
            f"(CAP_NET_ADMIN) or read-write access to {path}",
            e.errno,
        ) from None


def openTap(name: str, flags: int = TAP_FLAGS) -> tuple[int, str]:
    """
    Open (creating it if missing) the tap C{name}, as the C plug does but
    non-blocking.  Returns the descriptor and the interface's name.

    @raise VdeError: with a message saying what to change.
    """
    try:
        raw = checkInterfaceName(name, "tap name")
    except ValueError as e:
        raise VdeError(str(e), errno.EINVAL) from None
    fd = _openDevice(TUN_DEVICE, f"tap {name!r}")
    try:
        actual, _ = setIff(fd, raw, flags)
    except OSError as e:
        os.close(fd)
        raise _setIffError(name, e) from None
    return fd, actual


def _setIffError(name: str, error: OSError) -> VdeError:
    code = error.errno or errno.EIO
    shown = name or "(any free tapN)"
    if code == errno.EPERM:
        user = _userName()
        return VdeError(
            f"not permitted to open tap {shown}: needs CAP_NET_ADMIN (run as "
            f"root), or a persistent tap owned by this user, made with "
            f"'ip tuntap add dev {name or 'NAME'} mode tap user {user}'",
            code,
        )
    if code == errno.EBUSY:
        return VdeError(f"tap {shown} is already open in another process", code)
    if code == errno.EINVAL and name and _exists(name):
        return VdeError(
            f"{name} exists but is not a tap (a tun device or another kind "
            "of interface); choose another name",
            code,
        )
    if code == errno.EINVAL:
        return VdeError(f"the kernel refused the tap name {shown!r}", code)
    return VdeError(f"cannot open tap {shown}: {os.strerror(code)}", code)


def _userName() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def makePersistentTap(
    name: str, owner: Optional[int] = None, group: Optional[int] = None
) -> str:
    """
    Create the persistent tap C{name} (what C{ip tuntap add dev NAME mode
    tap [user U] [group G]} does) in the calling thread's network namespace,
    and return its name.  It stays until deleted (C{ip link del NAME}).
    """
    fd, actual = openTap(name)
    try:
        if owner is not None:
            fcntl.ioctl(fd, TUNSETOWNER, owner)
        if group is not None:
            fcntl.ioctl(fd, TUNSETGROUP, group)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)
    return actual


@implementer(IVdePlug, IReadDescriptor)
class FramePlug(ReaderPlug):
    """
    A plug over a descriptor on which one C{read} is one received frame and
    one C{write} sends one frame: a tap or macvtap device.

    Writes never wait: a frame the device does not take at once is dropped
    and counted, as on a wire (the kernel's own queue is the buffer).
    Received frames longer than C{VDE_ETHBUFSIZE} are counted in
    C{discarded} and not delivered.

    @ivar ifname: the interface's name, for messages.
    """

    def __init__(
        self, reactor: IReactorFDSet, fd: int, ifname: str, description: str
    ) -> None:
        super().__init__(reactor, description)
        self.ifname = ifname
        self.discarded = 0
        self._fd = fd
        self._closing = False

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return self.description

    def doRead(self) -> None:
        read = os.read
        fd = self._fd
        stats = self.stats
        for _ in range(READ_BATCH):
            try:
                frame = read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as e:
                self._readFailed(e)
                return
            if len(frame) > VDE_ETHBUFSIZE:
                self.discarded += 1
                continue
            stats.received += 1
            self.receiver.frameReceived(frame)
            if self.paused or self.closed:
                return

    def send(self, frame: bytes) -> None:
        if len(frame) > VDE_ETHBUFSIZE or len(frame) < ETH_HDRLEN or self.closed:
            self.stats.dropped += 1
            return
        try:
            os.write(self._fd, frame)
        except OSError as e:
            self.stats.dropped += 1
            if e.errno in GONE:
                self._goneLater()
        else:
            self.stats.sent += 1

    def _readFailed(self, error: OSError) -> None:
        """
        A read failed with something other than "nothing to read".  Every
        such error is permanent for a tap: close rather than spin.
        """
        if error.errno in GONE:
            self._gone()
        else:
            self._fail(f"reading {self.ifname} failed: {error.strerror}", error.errno)

    def _goneLater(self) -> None:
        # A write noticed the loss; close outside the sender's call chain.
        if not self._closing:
            self._closing = True
            self.reactor.callLater(0, self._gone)

    def _gone(self) -> None:
        self._fail(f"interface {self.ifname} was deleted", errno.ENODEV)

    def _fail(self, message: str, code: Optional[int]) -> None:
        if self.closed:
            return
        log.info("{plug}: closing: {why}", plug=self.description, why=message)
        self._lost(Failure(PlugLost(message, code or errno.EIO, self.description)))

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor saw an error condition (EPOLLERR) without readable data,
        or gave up on the descriptor: find out what happened with one read.
        """
        if self.closed:
            return
        try:
            os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            pass
        except OSError as e:
            self._readFailed(e)
            return
        self._fail(f"{self.ifname}: {reason.getErrorMessage()}", errno.EIO)

    def _release(self) -> None:
        self.reactor.removeReader(self)
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class TapPlug(FramePlug):
    """
    A plug on a tap interface.
    """


@implementer(IPlugin, IVdeBackend)
class TapBackend:
    schemes = ("tap",)
    summary = "a Linux tap interface (/dev/net/tun, IFF_TAP|IFF_NO_PI)"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        try:
            checkInterfaceName(vnl.argument, "tap name")
        except ValueError as e:
            raise VNLError(vnl.text, vnl.argument, str(e)) from None
        fd, ifname = openTap(vnl.argument)
        return succeed(TapPlug(reactor, fd, ifname, vnl.text))
