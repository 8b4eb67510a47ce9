"""
C{slirp://[/OPTION]...}: a virtual gateway with DHCP, DNS proxy and NAT to
the host's sockets, in pure Python (L{vdetwist.slirp}).

The options and defaults are libvdeplug_slirp's (C{verbose} prints the same
configuration table).  Frames sent on the plug are the guests' frames; the
engine's answers are delivered to the receiver.  Pausing the plug (a full
outgoing queue downstream) holds back the engine's TCP output instead of
losing frames.  The DNS proxy reads C{/etc/resolv.conf}, or the file named
by C{$VDETWIST_RESOLV_CONF}.
"""

from __future__ import annotations

import sys

from twisted.internet.defer import fail, succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from vdetwist.errors import VdeError
from vdetwist.interfaces import IVdeBackend, IVdePlug
from vdetwist.plug import PlugBase
from vdetwist.slirp.config import SlirpConfig, forwardLine, fromVNL
from vdetwist.slirp.engine import Driver, Engine
from vdetwist.slirp.host import TwistedHost


@implementer(IVdePlug)
class SlirpPlug(PlugBase):
    """
    A plug whose network is a slirp engine.

    @ivar engine: the L{Engine} (its C{stats} count what it did).
    """

    def __init__(self, reactor, config: SlirpConfig, description: str, host=None) -> None:
        super().__init__(description)
        self.reactor = reactor
        self.config = config
        self.driver = Driver(reactor)
        self.engine = Engine(config, host or TwistedHost(reactor), self._output,
                             clock=reactor.seconds, timerChanged=self.driver.timerChanged)
        self.driver.attach(self.engine)
        self.forwardResults = self.engine.start()

    def _output(self, frame: bytes) -> None:
        if self.receiving:
            self.stats.received += 1
            self.receiver.frameReceived(frame)
        else:
            self.stats.dropped += 1

    def send(self, frame: bytes) -> None:
        if self.closed:
            self.stats.dropped += 1
            return
        self.stats.sent += 1
        self.driver.input(bytes(frame))

    def pauseProducing(self) -> None:
        self.engine.pauseOutput()

    def resumeProducing(self) -> None:
        if not self.closed:
            self.engine.resumeOutput()

    def _release(self) -> None:
        self.driver.stop()
        self.engine.close()


def openSlirp(reactor, vnl, description: str = "slirp", stderr=None, host=None) -> SlirpPlug:
    config = fromVNL(vnl)
    plug = SlirpPlug(reactor, config, vnl.text, host)
    if config.verbose:
        out = stderr or sys.stderr
        out.write(config.table())
        for forward, result in plug.forwardResults:
            out.write(forwardLine(forward, result))
        out.flush()
    return plug


@implementer(IPlugin, IVdeBackend)
class SlirpBackend:
    schemes = ("slirp",)
    summary = "user-mode NAT to the host's network: DHCP, DNS proxy, TCP/UDP/ICMP, forwards"

    def open(self, reactor, vnl, description, args, registry):
        try:
            return succeed(openSlirp(reactor, vnl, description))
        except VdeError as e:
            return fail(e)
