"""
Exceptions.  Each carries the C errno the equivalent libvdeplug4 failure sets,
so the scripts can print the same C{strerror} text as the C tools, and a
message that tells the user what to change.
"""

from __future__ import annotations

import errno as _errno
import os


class VdeError(Exception):
    """
    Opening or using a VDE network failed.

    @ivar message: what went wrong and what to change, without the VNL.
    @ivar vnl: the VNL concerned, if known (the registry fills it in).
    """

    def __init__(
        self, message: str, errno: int = _errno.EIO, vnl: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.vnl = vnl

    @property
    def strerror(self) -> str:
        return os.strerror(self.errno)

    def __str__(self) -> str:
        if self.vnl is None:
            return self.message
        return f"{self.vnl or 'default network'}: {self.message}"


class VNLError(VdeError, ValueError):
    """
    A VNL is malformed: names the VNL and the offending part.
    """

    def __init__(
        self, vnl: str, part: str, message: str, errno: int = _errno.EINVAL
    ) -> None:
        self.part = part
        super().__init__(message, errno, vnl)


class NoBackendError(VNLError):
    """
    No installed backend handles the VNL's scheme (C: EPROTONOSUPPORT).
    """

    def __init__(self, vnl: str, scheme: str, installed: list[str]) -> None:
        self.scheme = scheme
        self.installed = installed
        super().__init__(
            vnl,
            scheme,
            f"no backend for scheme {scheme!r}; installed: {', '.join(installed)}",
            _errno.EPROTONOSUPPORT,
        )


class PlugClosed(Exception):
    """
    The reason a plug closed cleanly: by C{close()} or because the peer ended
    the connection the normal way.
    """


class PlugLost(VdeError):
    """
    The reason a plug closed because its network failed or vanished.
    """


class CommandFailed(PlugLost):
    """
    The reason a plug over a command (C{cmd://}, C{vde_plug = CMD}) closed:
    the command exited with a status that reports a failure, rather than
    its network going away (C{vde_plug} then exits with status 1).

    @ivar status: the command's exit status.
    """

    def __init__(self, status: int, vnl: str | None = None) -> None:
        super().__init__(f"the command exited with status {status}", _errno.EIO, vnl)
        self.status = status


def reasonText(error: BaseException | None) -> str:
    """
    What to show a user of why something failed or closed: a L{VdeError}'s
    message, else the exception's text, else its type's name.
    """
    if isinstance(error, VdeError):
        return error.message
    return str(error) or type(error).__name__
