"""
C{macvtap://IFNAME[/offload=off]}: a macvtap (or ipvtap) interface.

The character device C{/dev/tap<ifindex of IFNAME>} is opened and
C{TUNSETIFF} is issued with an empty name and C{IFF_TAP | IFF_NO_PI |
IFF_VNET_HDR}, then C{TUNSETOFFLOAD}: super-frames and partial checksums
pass as on C{tap://} (L{vdetwist.backends.tap}).  With C{offload=off} it is
opened as libvdeplug4's macvtap plug (HEAD; not in 4.0.1) opens it, with
C{IFF_TAP | IFF_NO_PI} (0x1002), which turns off the virtio-net header
macvtap enables by default: one read or write per frame.  The macvtap
itself is made beforehand, e.g. C{ip link add link eth0 name mvt0 type
macvtap mode bridge}.

A deleted macvtap gives its open descriptors no sign at all (reads just find
nothing, writes vanish), so the plug also listens to the kernel's link
notifications (rtnetlink, C{RTMGRP_LINK}) in the namespace the plug was
opened in, and closes with a L{vdetwist.errors.PlugLost} when its interface
is deleted.  The descriptor is non-blocking and close-on-exec (the C plug's
is neither).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Callable, Optional

from twisted.internet.defer import succeed
from twisted.internet.interfaces import IReadDescriptor
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist._transport.device import (
    IFF_VNET_HDR,
    OFFLOAD_OPTION,
    TAP_FLAGS,
    TAP_OPTIONS,
    FramePlug,
    checkInterfaceName,
    interfaceExists,
    openDevice,
    openOffloading,
    parseDeviceVnl,
    setIff,
)
from vdetwist.errors import VdeError, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.reference import SchemeReference

REFERENCE = SchemeReference(
    scheme="macvtap",
    synopsis="macvtap://IFNAME[/offload=off]",
    description=(
        "The macvtap (or ipvtap) interface IFNAME, opened as `/dev/tap<ifindex>`; "
        "make it first, e.g. `ip link add link eth0 "
        "name mvt0 type macvtap mode bridge`. IFNAME is taken as written. Offloads "
        "as for `tap://`: on by default, `offload=off` opens it as C does (the "
        "virtio-net header off)."
    ),
    grammar="slash",
    table=TAP_OPTIONS,
    options=(OFFLOAD_OPTION,),
    examples=(
        ("macvtap://mvt0", "the macvtap `mvt0`"),
        ("macvtap://mvt0/offload=off", "the macvtap `mvt0`, one MTU frame per read and write"),
    ),
    differences=(
        "Offloads are on unless `offload=off`; C turns the virtio-net header off.",
        "From vdeplug4's development version (4.0.1 has no macvtap plugin).",
        "A deleted interface closes the plug (the kernel gives its descriptor no "
        "sign); the descriptor is non-blocking and close-on-exec.",
    ),
)

RTMGRP_LINK = 1
RTM_DELLINK = 17
_NLMSGHDR = struct.Struct("IHHII")
_IFINFOMSG = struct.Struct("BxHiII")


@implementer(IReadDescriptor)
class LinkWatcher:
    """
    Calls C{gone()} once when interface C{ifindex} is deleted from the
    network namespace the watcher was made in.
    """

    def __init__(self, reactor, ifindex: int, gone: Callable[[], None]) -> None:
        self.reactor = reactor
        self.ifindex = ifindex
        self.gone = gone
        self.socket = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        self.socket.bind((0, RTMGRP_LINK))

    def start(self) -> None:
        self.reactor.addReader(self)
        # It may have gone between the open and the subscription.
        if not interfaceExists(self.socket, self.ifindex):
            self._fire()

    def stop(self) -> None:
        if self.socket.fileno() >= 0:
            self.reactor.removeReader(self)
            self.socket.close()

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "macvtap link watcher"

    def doRead(self) -> None:
        while self.socket.fileno() >= 0:
            try:
                data = self.socket.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                # ENOBUFS: notifications were lost; ask directly.
                if e.errno == errno.ENOBUFS:
                    if not interfaceExists(self.socket, self.ifindex):
                        self._fire()
                    continue
                return
            if self._deleted(data):
                self._fire()
                return

    def _deleted(self, data: bytes) -> bool:
        offset = 0
        end = len(data) - _NLMSGHDR.size - _IFINFOMSG.size
        while offset <= end:
            length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size:
                return False
            if kind == RTM_DELLINK:
                _, _, index, _, _ = _IFINFOMSG.unpack_from(data, offset + _NLMSGHDR.size)
                if index == self.ifindex:
                    return True
            offset += (length + 3) & ~3
        return False

    def _fire(self) -> None:
        gone, self.gone = self.gone, lambda: None
        self.stop()
        gone()

    def connectionLost(self, reason: Failure) -> None:
        self.stop()


class MacvtapPlug(FramePlug):
    """
    A plug on a macvtap interface; closes when the interface is deleted.
    """

    def __init__(self, reactor, fd, ifname, description, ifindex, offloads=None) -> None:
        super().__init__(reactor, fd, ifname, description, offloads)
        self.ifindex = ifindex
        self.watcher = LinkWatcher(reactor, ifindex, self._gone)
        self.watcher.start()

    def _release(self) -> None:
        self.watcher.stop()
        super()._release()


def openMacvtap(ifname: str, flags: int = TAP_FLAGS) -> tuple[int, int]:
    """
    Open the character device of the macvtap C{ifname} (looked up in the
    calling thread's network namespace), by default as the C plug does;
    return the descriptor and the interface index.
    """
    try:
        checkInterfaceName(ifname)
    except ValueError as e:
        raise VdeError(str(e), errno.EINVAL) from None
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        raise VdeError(f"there is no interface named {ifname!r}", errno.ENODEV) from None
    path = f"/dev/tap{ifindex}"
    try:
        fd = openDevice(path, f"macvtap {ifname}")
    except FileNotFoundError:
        raise VdeError(
            f"{ifname} is not a macvtap or ipvtap interface: {path} does not "
            f"exist (make one with 'ip link add link LOWER name {ifname} type "
            "macvtap mode bridge')",
            errno.ENODEV,
        ) from None
    except OSError as e:
        raise VdeError(f"cannot open {path}: {e.strerror}", e.errno or errno.EIO) from None
    try:
        setIff(fd, b"", flags)
    except OSError as e:
        os.close(fd)
        raise VdeError(
            f"{path} refused TUNSETIFF (flags {flags:#x}): {e.strerror}",
            e.errno or errno.EIO,
        ) from None
    return fd, ifindex


@implementer(IPlugin, IVdeBackend)
class MacvtapBackend:
    schemes = ("macvtap",)
    summary = "a macvtap interface (/dev/tap<ifindex>), with offloads unless offload=off"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        ifname, offload = parseDeviceVnl(vnl, "interface name")
        if not ifname:
            raise VNLError(vnl.text, "", "macvtap:// needs an interface name, e.g. macvtap://mvt0")
        if offload:
            fd, ifindex = openMacvtap(ifname, TAP_FLAGS | IFF_VNET_HDR)
            offloads: Optional[int] = openOffloading(fd, ifname)
        else:
            fd, ifindex = openMacvtap(ifname)
            offloads = None
        try:
            plug = MacvtapPlug(reactor, fd, ifname, vnl.text, ifindex, offloads)
        except OSError as e:
            os.close(fd)
            raise VdeError(f"cannot watch {ifname}: {e.strerror}", e.errno or errno.EIO) from None
        return succeed(plug)
