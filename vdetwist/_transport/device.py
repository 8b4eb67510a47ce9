"""
Network devices opened as a descriptor (tap, macvtap) or bound to
(C{AF_PACKET}): interface names, the tun driver's C{TUNSETIFF}, and
L{FramePlug}, the plug over a device on which one C{read} is one frame.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import socket
import struct
from typing import Callable, Optional

from twisted.internet.interfaces import IReactorFDSet
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from vdetwist._transport.fdplug import GONE, READ_SIZE, FdPlug
from vdetwist._transport.vnet import DeliveryCache, sendSegments, sendVnetFrame
from vdetwist.errors import PlugLost, VdeError, VNLError
from vdetwist.interfaces import IVdePlug, IVnetPlug
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE
from vdetwist.reference import Option
from vdetwist.vnl import VNL, parseSlash
from vdetwist.wire.gso import BadVnetFrame
from vdetwist.wire.vnethdr import (
    PLAIN, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO, TUN_F_USO4,
    TUN_F_USO6, VNET_HDRLEN,
)

#: The clone device of the tun driver.
TUN_DEVICE = "/dev/net/tun"

TUNSETIFF = 0x400454CA
#: _IOR('T', 210, unsigned int): the name and flags of an open tun/tap.
TUNGETIFF = 0x800454D2

IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
#: Every read and write starts with a virtio-net header.
IFF_VNET_HDR = 0x4000
#: The flags libvdeplug4 (and vde_switch -t) open taps with.
TAP_FLAGS = IFF_TAP | IFF_NO_PI

#: _IOW('T', 208, unsigned int): the offloads the reader accepts.
TUNSETOFFLOAD = 0x400454D0
#: What a device with the virtio-net header accepts on write whatever the
#: kernel's version; USO (Linux 6.2) is added where TUNSETOFFLOAD takes it.
WRITE_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO
#: The offloads asked for on reads: all but UFO, which the kernel no longer
#: makes.
READ_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
USO = TUN_F_USO4 | TUN_F_USO6
#: A read of a device with the header: the header, a 64 KiB IP packet, its
#: Ethernet header and two VLAN tags, with room to show a longer one.
VNET_READ_SIZE = VNET_HDRLEN + 14 + 8 + 65535 + 1

#: Interface names are at most this many bytes (IFNAMSIZ 16 with the NUL).
MAX_IFNAME = 15

#: C{struct ifreq} as TUNSETIFF reads it: the name, the flags, padding to 40.
IFREQ = struct.Struct("16sH22x")

SIOCGIFNAME = 0x8910
_IFREQ_INDEX = struct.Struct("16si20x")

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


def interfaceExists(sock: socket.socket, ifindex: int) -> bool:
    """
    Whether interface C{ifindex} exists in C{sock}'s network namespace.
    """
    try:
        fcntl.ioctl(sock.fileno(), SIOCGIFNAME, _IFREQ_INDEX.pack(b"", ifindex))
    except OSError as e:
        return e.errno != errno.ENODEV
    return True


def setIff(fd: int, name: bytes, flags: int = TAP_FLAGS) -> tuple[str, int]:
    """
    Issue TUNSETIFF on C{fd}; return the interface name the kernel settled
    on and the flags it reports back.
    """
    answer = fcntl.ioctl(fd, TUNSETIFF, IFREQ.pack(name, flags))
    rawName, gotFlags = IFREQ.unpack(answer)
    return os.fsdecode(rawName.split(b"\0", 1)[0]), gotFlags


def enableOffloads(fd: int) -> int:
    """
    Ask the device C{fd} (opened with L{IFF_VNET_HDR}) for super-frames and
    partial checksums on reads, with USO where the kernel has it; return the
    C{TUN_F_*} mask it accepts on writes.
    """
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, READ_OFFLOADS | USO)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        fcntl.ioctl(fd, TUNSETOFFLOAD, READ_OFFLOADS)
        return WRITE_OFFLOADS
    return WRITE_OFFLOADS | USO


#: The options after the name of C{tap://NAME/offload=off} and
#: C{macvtap://}, and their reference.
TAP_OPTIONS = ("offload",)
OFFLOAD_OPTION = Option(
    "offload",
    "`off`: no virtio-net header and no offloads, one MTU frame per read "
    "and write, as the C plugin; `on`: super-frames and partial checksums.",
    "on/off",
    "on",
)


def parseDeviceVnl(vnl: VNL, what: str) -> tuple[str, bool]:
    """
    Split C{NAME[/offload=on|off]} (tap://, macvtap://): the interface name,
    taken as written up to the first C{/}, and whether to offload.

    @raise VNLError: a bad name or option, saying what to write.
    """
    name, slash, rest = vnl.argument.partition("/")
    try:
        checkInterfaceName(name, what)
    except ValueError as e:
        raise VNLError(vnl.text, vnl.argument, str(e)) from None
    options = parseSlash("/" + rest, TAP_OPTIONS, vnl.text)[1] if slash else {}
    return name, offloadWanted(vnl, options)


def offloadWanted(vnl: VNL, options: dict[str, str]) -> bool:
    """
    Whether the C{offload=} of C{options} (parsed from C{vnl}) leaves the
    offloads on: C{on}, empty or absent.

    @raise VNLError: another value, saying what to write.
    """
    offload = options.get("offload", "on")
    if offload not in ("on", "off", ""):
        raise VNLError(vnl.text, offload, f"offload={offload}: write offload=on or offload=off")
    return offload != "off"


def openOffloading(fd: int, ifname: str) -> int:
    """
    Turn the offloads on for C{fd}, opened with C{IFF_VNET_HDR}; return what
    it accepts on writes.

    @raise VdeError: the device refuses (C{fd} is closed then).
    """
    try:
        return enableOffloads(fd)
    except OSError as e:
        os.close(fd)
        raise VdeError(
            f"{ifname} refused the offloads (TUNSETOFFLOAD): {e.strerror}; "
            "open it with offload=off",
            e.errno or errno.EIO,
        ) from None


def openDevice(path: str, purpose: str) -> int:
    """
    Open a character device read-write, non-blocking and close-on-exec.

    @raise VdeError: the tun driver is missing, or permission is denied.
    """
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
            e.errno or errno.EACCES,
        ) from None


@implementer(IVdePlug)
class FramePlug(FdPlug):
    """
    A plug over a descriptor on which one C{read} is one received frame and
    one C{write} sends one frame: a tap or macvtap device.

    Writes never wait: a frame the device does not take at once is dropped
    and counted, as on a wire (the kernel's own queue is the buffer).
    Received frames longer than C{VDE_ETHBUFSIZE} are counted in
    C{stats.discarded} and not delivered.

    Given C{offloads}, the device was opened with L{IFF_VNET_HDR}: the plug
    provides L{IVnetPlug} and reads vnet frames, which a receiver that is not
    an L{IVnetReceiver} gets segmented (a frame whose header lies is counted
    in C{stats.discarded}); C{send} puts the plain header before each frame.

    @ivar ifname: the interface's name, for messages.
    @ivar offloads: the C{TUN_F_*} the device accepts on writes.
    """

    offloads = 0

    def __init__(
        self, reactor: IReactorFDSet, fd: int, ifname: str, description: str,
        offloads: Optional[int] = None,
    ) -> None:
        super().__init__(reactor, description, fd, functools.partial(os.read, fd))
        self.ifname = ifname
        self._closing = False
        self._header = b""
        if offloads is not None:
            alsoProvides(self, IVnetPlug)
            self.offloads = offloads
            self._header = PLAIN
            self.readSize = VNET_READ_SIZE
            self.minFrame = VNET_HDRLEN + ETH_HDRLEN
            self.maxFrame = VNET_READ_SIZE - 1
            self._deliveries = DeliveryCache(self._badReceived)

    def _delivery(self) -> Callable[[bytes], None]:
        if not self._header:
            return self.receiver.frameReceived
        return self._deliveries(self.receiver)

    def _badReceived(self, error: BadVnetFrame) -> None:
        if not self.stats.discarded:
            log.info("{plug}: dropping a bad vnet frame ({why}); later ones are only counted",
                     plug=self.description, why=error)
        self.stats.discarded += 1

    def _unusual(self, frame: bytes) -> bool:
        if len(frame) > self.maxFrame or (self._header and len(frame) <= VNET_HDRLEN):
            self.stats.discarded += 1
            return False
        # A device's short frame is passed on, as it came.
        self._delivery()(frame)
        return True

    def send(self, frame: bytes) -> None:
        if len(frame) > VDE_ETHBUFSIZE or len(frame) < ETH_HDRLEN or self.closed:
            self.stats.dropped += 1
            return
        self._write(self._header + frame)

    def sendVnet(self, frame: bytes) -> None:
        if self.closed:
            self.stats.dropped += 1
        elif self._header:
            sendVnetFrame(frame, self.offloads, self._write, self.send, self._badSent)
        else:
            sendSegments(frame, self.send, self._badSent)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as e:
            self.stats.dropped += 1
            if e.errno in GONE:
                self._goneLater()
        else:
            self.stats.sent += 1

    def _readFailed(self, error: OSError) -> None:
        """
        A read failed with something that is not harmless.  Every such
        error is permanent for a device: close rather than spin.
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

    def _closeDescriptor(self, fd: int) -> None:
        os.close(fd)
