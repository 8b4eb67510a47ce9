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


def removeStale(path: str, kind: int = socket.SOCK_DGRAM) -> None:
    """
    Unlink the socket at C{path} unless somebody is bound to it, in which
    case fail with EADDRINUSE.
    """
    if not isSocket(path):
        return
    if isAlive(path, kind):
        raise VdeError(f"{path} is in use by another process", errno.EADDRINUSE)
    os.unlink(path)


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
