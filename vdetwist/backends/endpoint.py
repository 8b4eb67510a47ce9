"""
C{endpoint://DESCRIPTION}: a cable over any Twisted stream client endpoint,
in the VDE stream encoding, e.g. C{endpoint://tcp:host=sw.example:port=5000},
C{endpoint://ssl:host=...:port=...:caCertsDir=...} or
C{endpoint://unix:path=/run/sw.sock}.  The other end is anything that speaks
the encoding: C{twistd vde --listen ...}, or C{vde_plug} behind socat/ssh.

A vdetwist extension: the C libvdeplug has no such scheme.
"""

from __future__ import annotations

from twisted.internet.endpoints import clientFromString
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.errors import VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.reference import SchemeReference
from vdetwist.streamplug import connectStreamPlug

REFERENCE = SchemeReference(
    scheme="endpoint",
    synopsis="endpoint://DESCRIPTION",
    description=(
        "A cable in the VDE stream encoding over any Twisted client endpoint "
        "(`tcp:`, `ssl:`, `unix:`, ...; see Twisted's `clientFromString`). The other "
        "end is anything that speaks the encoding: `twistd vde --listen ...`, or "
        "`vde_plug` behind socat or ssh."
    ),
    examples=(
        ("endpoint://tcp:host=sw.example:port=5000", "a `twistd vde --listen tcp:5000` switch"),
        ("endpoint://unix:path=/run/sw.sock", "the same over a UNIX socket"),
    ),
    differences=("A vdetwist scheme: the C library has none like it.",),
)


@implementer(IPlugin, IVdeBackend)
class EndpointBackend:
    schemes = ("endpoint",)
    summary = "a cable over a Twisted client endpoint (tcp:, ssl:, unix:, ...) in the stream encoding"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        try:
            endpoint = clientFromString(reactor, vnl.argument)
        except (ValueError, KeyError, TypeError) as e:
            raise VNLError(
                vnl.text, vnl.argument,
                f"not a Twisted client endpoint description ({e or type(e).__name__});"
                " e.g. endpoint://tcp:host=192.0.2.1:port=5000",
            ) from None
        return connectStreamPlug(endpoint, vnl.text)
