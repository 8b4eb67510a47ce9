"""
vdetwist: Virtual Distributed Ethernet for Twisted.

Open any VNL with L{openVNL}; everything it returns is an
L{vdetwist.interfaces.IVdePlug}.  L{fastDispatch} lets a program that
moves many frames give its epoll reactor a cheaper event dispatch for
vdetwist's descriptor plugs (our commands and C{twistd vde} do).
"""

from vdetwist._transport.dispatch import install as fastDispatch
from vdetwist._version import __version__
from vdetwist.cable import Cable
from vdetwist.errors import PlugClosed, PlugLost, VdeError, VNLError
from vdetwist.registry import OpenArgs, openVNL

__all__ = [
    "Cable",
    "OpenArgs",
    "PlugClosed",
    "PlugLost",
    "VNLError",
    "VdeError",
    "__version__",
    "fastDispatch",
    "openVNL",
]
