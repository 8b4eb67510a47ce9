"""
Small helpers for the AF_UNIX sockets plugs and switches create: probing a
socket path for a live owner, and giving a socket file its group and mode.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import stat
from typing import Optional

from vdetwist.errors import VdeError


def isSocket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def isAlive(path: str, kind: int = socket.SOCK_DGRAM) -> bool:
    """
    Whether somebody is bound to the socket at C{path}; a stale file left by
    a dead process refuses connections.
    """
    with socket.socket(socket.AF_UNIX, kind) as probe:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            # EPERM: a datagram socket already paired with another one.
            return True
    return True


def removeStale(path: str, kind: int = socket.SOCK_DGRAM, inUse: Optional[str] = None) -> None:
    """
    Make way for binding a socket at C{path}: a socket file left there by a
    process that is gone is unlinked; nothing there is fine.

    @param kind: the socket type to probe with (C{SOCK_STREAM} for a
        listener).
    @param inUse: the message when somebody answers on C{path}.
    @raise VdeError: EADDRINUSE when somebody answers on C{path}; EEXIST when
        C{path} is not a socket (never unlinked: a typo must not cost a file).
    """
    if not os.path.lexists(path):
        return
    if not isSocket(path):
        raise VdeError(f"{path} exists and is not a socket", errno.EEXIST)
    if isAlive(path, kind):
        raise VdeError(inUse or f"{path} is in use by another process", errno.EADDRINUSE)
    unlinkQuietly(path)


def unlinkQuietly(path: Optional[str]) -> None:
    """
    Remove a socket file this process made, if there is one: cleaning up
    must not fail because it is gone already.
    """
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def groupId(group: str) -> int:
    """
    A group name, or a number, as libvdeplug4 accepts them.
    """
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.strip().lstrip("+-").isdigit():
            return int(group)
        raise VdeError(f"unknown group {group!r}", errno.EINVAL) from None


def setOwnership(path: str, mode: int, group: Optional[str]) -> None:
    if group:
        os.chown(path, -1, groupId(group))
    os.chmod(path, mode)
