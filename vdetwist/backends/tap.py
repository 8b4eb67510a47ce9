"""
C{tap://NAME[/offload=off]}: a Linux tap interface.

C{/dev/net/tun} is opened and C{TUNSETIFF} (0x400454ca) is issued with a
40-byte C{struct ifreq} holding NAME and the flags C{IFF_TAP | IFF_NO_PI |
IFF_VNET_HDR}: a missing tap is created (and vanishes with the plug), an
existing persistent one (C{ip tuntap add dev NAME mode tap user U}) is
attached to.  An empty NAME lets the kernel pick C{tapN}.

By default every read and write carries a virtio-net header and
C{TUNSETOFFLOAD} asks for checksum, TSO4/6, ECN and (Linux >= 6.2) USO
offloads: the kernel hands over 64 KiB super-frames with partial checksums,
which cross a cable to another offloading plug as they are, and are
segmented in software for anything else (L{vdetwist.wire.gso}).  With
C{offload=off} the tap is opened as libvdeplug4's tap plug opens it
(C{IFF_TAP | IFF_NO_PI}, 0x1002): one C{read}/C{write} is one Ethernet
frame, no header.

Unlike the C plug, the descriptor is non-blocking (the reactor must never
wait on it) and close-on-exec, and NAME is checked: the C plug cuts a long
name to 15 bytes silently, this one refuses it.  Reads drain the device in
batches until it would block; a write the device refuses (queue full,
interface down, frame too short) drops the frame and counts it.  A tap
deleted while open (C{ip link del NAME}) closes the plug with a
L{vdetwist.errors.PlugLost} naming the interface, logged once.

The plug is L{vdetwist._transport.device.FramePlug}, shared with
C{macvtap://} and C{pcap://}.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from typing import Optional

from twisted.internet.defer import succeed
from twisted.internet.interfaces import IReactorFDSet
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist._transport.device import (
    IFF_TAP,
    IFF_VNET_HDR,
    IFREQ,
    TAP_FLAGS,
    TUN_DEVICE,
    TUNGETIFF,
    OFFLOAD_OPTION,
    TAP_OPTIONS,
    WRITE_OFFLOADS,
    FramePlug,
    checkInterfaceName,
    openDevice,
    openOffloading,
    parseDeviceVnl,
    setIff,
)
from vdetwist.errors import VdeError
from vdetwist.interfaces import IVdeBackend
from vdetwist.reference import SchemeReference

REFERENCE = SchemeReference(
    scheme="tap",
    synopsis="tap://NAME[/offload=off]",
    description=(
        "The Linux tap interface NAME (`/dev/net/tun`): a "
        "missing tap is created and vanishes with the plug (that needs "
        "CAP_NET_ADMIN), an existing persistent one (`ip tuntap add dev NAME mode tap "
        "user USER`) is attached to. An empty NAME lets the kernel pick `tapN`. "
        "NAME is taken as written: no quotes or escapes. By default the tap is "
        "opened with the virtio-net header and the kernel's offloads (checksum, "
        "TSO, USO), so 64 KiB super-frames cross to another offloading plug "
        "(`vde_plug tap://A tap://B`) in one piece and are segmented in software "
        "for anything else; `offload=off` opens it as C does (`IFF_TAP|IFF_NO_PI`)."
    ),
    grammar="slash",
    table=TAP_OPTIONS,
    options=(
        OFFLOAD_OPTION,
    ),
    examples=(
        ("tap://tap0", "the tap `tap0`"),
        ("tap://tap0/offload=off", "the tap `tap0`, one MTU frame per read and write"),
        ("vde_plug tap://tap0 switch:///tmp/sw", "(a command) a switch with a tap on its host port"),
    ),
    differences=(
        "Offloads are on unless `offload=off`; C never uses the virtio-net header.",
        "A name longer than 15 bytes is refused; C cuts it silently.",
        "The descriptor is non-blocking and close-on-exec; a tap deleted while "
        "open closes the plug.",
    ),
    manual="libvdeplug_tap",
)

TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE


def _exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


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
    fd = openDevice(TUN_DEVICE, f"tap {name!r}")
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


class TapPlug(FramePlug):
    """
    A plug on a tap interface.
    """


def tapPlugFromDescriptor(
    reactor: IReactorFDSet, fd: int, description: str, offloads: int = WRITE_OFFLOADS
) -> TapPlug:
    """
    A plug on C{fd}, a tap descriptor opened elsewhere (by another process,
    in another network namespace, and passed here): the plug owns it from
    now on, made non-blocking as the plug needs.  If the tap was opened with
    the virtio-net header, the plug is an offloading one that writes the
    C{TUN_F_*} C{offloads} (what the opener's C{TUNSETOFFLOAD} found the
    kernel to take: USO only from Linux 6.2).

    @raise VdeError: C{fd} is not a tap.
    """
    try:
        name, flags = IFREQ.unpack(fcntl.ioctl(fd, TUNGETIFF, bytes(IFREQ.size)))
    except OSError as e:
        raise VdeError(f"descriptor {fd} is not a tap: {e.strerror}", e.errno or errno.EIO) from None
    if not flags & IFF_TAP:
        raise VdeError(f"descriptor {fd} is a tun device, not a tap", errno.EINVAL)
    os.set_blocking(fd, False)
    return TapPlug(reactor, fd, os.fsdecode(name.split(b"\0", 1)[0]), description,
                   offloads if flags & IFF_VNET_HDR else None)


@implementer(IPlugin, IVdeBackend)
class TapBackend:
    schemes = ("tap",)
    summary = "a Linux tap interface (/dev/net/tun), with offloads unless offload=off"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        name, offload = parseDeviceVnl(vnl, "tap name")
        if not offload:
            fd, ifname = openTap(name)
            return succeed(TapPlug(reactor, fd, ifname, vnl.text))
        fd, ifname = openTap(name, TAP_FLAGS | IFF_VNET_HDR)
        offloads = openOffloading(fd, ifname)
        return succeed(TapPlug(reactor, fd, ifname, vnl.text, offloads))
