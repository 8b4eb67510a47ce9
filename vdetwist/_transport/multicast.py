"""
The multicast socket setup vxvde and vxlan share: resolving the group (with
C{grp}'s gid), joining it, the sending options, and trying each of the
group's addresses until one works.  All of it blocks (name resolution): it
runs in a thread.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Callable, Optional, TypeVar

from twisted.logger import Logger

from vdetwist.errors import VdeError
from vdetwist.wire.vxlan import VxConfig, applyGid, isMulticast

log = Logger()

_INT_MAX = (1 << 31) - 1

_Opened = TypeVar("_Opened")


def interfaceIndex(config: VxConfig, description: str = "") -> int:
    """
    The index of the C{if} interface; 0 (any) when absent or unknown, as in
    C (an unknown name is logged).
    """
    if not config.interface:
        return 0
    try:
        return socket.if_nametoindex(config.interface)
    except OSError:
        log.warn(
            "{vnl}: no interface {name!r}: the kernel chooses one",
            vnl=description or config.group, name=config.interface,
        )
        return 0


def groupAddresses(config: VxConfig) -> list[tuple[int, Any]]:
    """
    The candidate C{(family, sockaddr)} of the group, in getaddrinfo order,
    with C{grp}'s gid applied.

    @raise VdeError: the group does not resolve.
    """
    try:
        infos = socket.getaddrinfo(
            config.group, config.port, config.family, socket.SOCK_DGRAM
        )
    except (OSError, UnicodeError) as e:
        raise VdeError(
            f"cannot resolve group {config.group!r}: {e}", errno.EINVAL
        ) from None
    result: list[tuple[int, Any]] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address: tuple = tuple(sockaddr)
        if config.gid is not None:
            packed = applyGid(socket.inet_pton(family, address[0]), config.gid)
            address = (socket.inet_ntop(family, packed),) + address[1:]
        result.append((family, address))
    return result


def scoped(family: int, sockaddr: tuple, ifindex: int) -> tuple:
    """
    An IPv6 link-local group needs a scope: the C{if} interface's.
    """
    if family == socket.AF_INET6 and ifindex and not sockaddr[3]:
        packed = socket.inet_pton(family, sockaddr[0])
        if packed[1] & 0x0F in (1, 2):
            return (sockaddr[0], sockaddr[1], sockaddr[2], ifindex)
    return sockaddr


def requireMulticast(family: int, sockaddr: tuple) -> None:
    if not isMulticast(family, socket.inet_pton(family, sockaddr[0])):
        raise OSError(errno.EINVAL, f"{sockaddr[0]} is not a multicast address")


def joinGroup(sock: socket.socket, family: int, sockaddr: tuple, ifindex: int) -> None:
    packed = socket.inet_pton(family, sockaddr[0])
    if family == socket.AF_INET:
        mreqn = struct.pack("4s4si", packed, b"\0\0\0\0", ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    else:
        mreq = struct.pack("16sI", packed, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)


def setMulticastSending(
    sock: socket.socket, family: int, ttl: int, ifindex: int, unicastTTL: bool
) -> None:
    """
    TTL (hop limit) and outgoing interface of a socket that sends to the
    group; with C{unicastTTL} the IPv4 unicast TTL too (vxvde's C does).
    """
    if family == socket.AF_INET:
        if unicastTTL:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        if ifindex:
            mreqn = struct.pack("4s4si", b"\0" * 4, b"\0" * 4, ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        if ifindex:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)


def setReceiveBuffer(sock: socket.socket, size: Optional[int]) -> None:
    if size is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, min(size, _INT_MAX))


def openFirstGroupAddress(
    config: VxConfig,
    ifindex: Optional[int],
    make: Callable[[VxConfig, int, tuple, int], _Opened],
    failed: Callable[[OSError], str],
) -> _Opened:
    """
    C{make(config, family, group, ifindex)} for each of the group's
    addresses until one works, as the C plugins do.

    @param ifindex: the C{if} interface's index, if already looked up.
    @param failed: the message for the last failure, when none worked.
    @raise VdeError: nothing worked.
    """
    if ifindex is None:
        ifindex = interfaceIndex(config)
    failure: Optional[OSError] = None
    for family, group in groupAddresses(config):
        try:
            return make(config, family, group, ifindex)
        except OSError as e:
            failure = e
    if failure is None:
        raise VdeError(f"group {config.group!r}: no IPv4 or IPv6 address", errno.EINVAL)
    raise VdeError(failed(failure), failure.errno or errno.EIO)
