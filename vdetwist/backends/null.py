"""
C{null://}: a network with nothing on it.  Frames sent are discarded; none
ever arrive.  C{vde_plug null:// switch:///tmp/sw} runs a stand-alone switch.
"""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE, PlugBase
from vdetwist.reference import SchemeReference

REFERENCE = SchemeReference(
    scheme="null",
    synopsis="null://",
    description=(
        "A network with nothing on it: frames sent are discarded, none arrive. "
        "The argument is ignored."
    ),
    examples=(("vde_plug null:// switch:///tmp/sw", "(a command) a stand-alone switch"),),
    manual="libvdeplug_null",
)


@implementer(IVdePlug)
class NullPlug(PlugBase):
    def send(self, frame: bytes) -> None:
        # Like any plug's: after close, or not an Ethernet frame, it is
        # dropped, not sent.
        if self.closed or not ETH_HDRLEN <= len(frame) <= VDE_ETHBUFSIZE:
            self.stats.dropped += 1
        else:
            self.stats.sent += 1

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


@implementer(IPlugin, IVdeBackend)
class NullBackend:
    schemes = ("null",)
    summary = "a network with nothing on it (frames sent are discarded)"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        return succeed(NullPlug(vnl.text))
