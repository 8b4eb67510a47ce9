"""
C{endpoint://DESCRIPTION}: a cable over any Twisted stream client endpoint,
in the VDE stream encoding, e.g. C{endpoint://tcp:host=sw.example:port=5000},
C{endpoint://ssl:host=sw.example:port=5001:caCertsDir=DIR} or
C{endpoint://unix:path=/run/sw.sock}.  The other end is anything that speaks
the encoding: C{twistd vde --listen ...}, or C{vde_plug} behind socat/ssh.

TLS (C{ssl:}, C{tls:}) needs C{pip install 'vdetwist[tls]'}.  An C{ssl:}
client given a CA directory checks the server's certificate and name; one
without is encrypted but unauthenticated, and says so in a warning (see
L{vdetwist.endpointstrings}).

A vdetwist extension: the C libvdeplug has no such scheme.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.endpointstrings import EndpointError, clientEndpoint
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
            endpoint = clientEndpoint(reactor, vnl.argument)
        except EndpointError as e:
            raise VNLError(vnl.text, vnl.argument, str(e)) from None
        return connectStreamPlug(endpoint, vnl.text, reactor)
