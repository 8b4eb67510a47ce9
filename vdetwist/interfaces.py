"""
The interfaces every part of vdetwist is written against.

A I{plug} is one attachment to a virtual Ethernet.  It is to frames what a
Twisted transport is to bytes: it sends frames, it hands received frames to
one L{IFrameReceiver}, it is a push producer (pausing it stops delivery, so a
slow consumer can hold back the network) and it accepts a producer of its own
(which it pauses while its outgoing queue is full).  Backends turn a VNL into
a plug; cables, stream adapters and switching nodes only ever see plugs.
"""

from __future__ import annotations

from textwrap import fill
from typing import Optional

from zope.interface import Attribute, Interface
from zope.interface.interface import InterfaceClass, Method
from twisted.internet.interfaces import IPushProducer


class IFrameReceiver(Interface):
    """
    Whatever consumes the frames a plug receives.
    """

    def frameReceived(frame: bytes) -> None:
        """
        One Ethernet frame (destination MAC first, no FCS) arrived.
        """

    def plugClosed(reason) -> None:
        """
        The plug is closed, by L{IVdePlug.close} or because its network went
        away; called exactly once.  C{reason} is a
        L{twisted.python.failure.Failure}: L{vdetwist.errors.PlugClosed} for
        a clean close, anything else for a failure.
        """


class IPlugStats(Interface):
    """
    Frame counters of one plug, for logs and management consoles.
    """

    received = Attribute("Frames handed to the receiver.")
    sent = Attribute("Frames accepted by the network.")
    dropped = Attribute(
        "Frames lost on the way out: queue full, too large, network refused."
    )
    discarded = Attribute(
        "Frames lost on the way in: what the network delivered that is not a"
        " frame the plug carries (too short or too long, a broken stream"
        " record or header), dropped instead of handed to the receiver."
    )


# Interface is named as well, redundantly for zope.interface, so that
# pydoctor, which does not analyse Twisted, knows this is an interface.
class IVdePlug(IPushProducer, Interface):
    """
    A frame-oriented connection to one virtual Ethernet.

    As an L{IPushProducer}, C{pauseProducing} stops frame delivery to the
    receiver (the network's own queues then fill and drop, as they would for
    any slow VDE peer) and C{stopProducing} closes the plug.
    """

    description = Attribute(
        "Human readable text naming this plug, e.g. the VNL it was opened with."
    )
    stats = Attribute("An L{IPlugStats} provider.")

    def startReceiving(receiver: IFrameReceiver) -> None:
        """
        Deliver received frames, and the close notification, to C{receiver}.
        Until this is called nothing is read from the network.
        """

    def send(frame: bytes) -> None:
        """
        Send one Ethernet frame.  Never blocks and never raises for a busy or
        absent peer: a frame that cannot be queued is dropped and counted in
        C{stats.dropped}, as on a real wire; so is one shorter than an
        Ethernet header or longer than the plug carries, and one sent after
        C{close}.
        """

    def registerProducer(producer: IPushProducer, streaming: bool) -> None:
        """
        Pause C{producer} while this plug's outgoing queue is full and resume
        it when the queue drains.  Only streaming producers are supported.
        """

    def unregisterProducer() -> None:
        """
        Forget the producer registered with L{registerProducer}.
        """

    def close() -> None:
        """
        Release the plug's resources.  The receiver's C{plugClosed} is called
        (once) when it is done; calling C{close} again does nothing.
        """


class IVnetReceiver(IFrameReceiver):
    """
    A receiver that also takes I{vnet frames}: a 10-byte virtio-net header
    (L{vdetwist.wire.vnethdr}) followed by an Ethernet frame that may be a
    super-frame (up to 64 KiB, TSO/USO, checksum left partial).

    An L{IVnetPlug} whose receiver provides this (checked when
    C{startReceiving} is called) delivers every frame through
    L{vnetFrameReceived}, super-frames as they came; to any other receiver it
    delivers plain frames through C{frameReceived}, segmented and checksummed
    in software first.  So code written against L{IFrameReceiver} never sees
    a frame above the MTU.
    """

    def vnetFrameReceived(frame: bytes) -> None:
        """
        One vnet frame arrived: header, then the Ethernet frame.
        """


class IVnetPlug(IVdePlug):
    """
    A plug that carries offload metadata: it sends and may deliver vnet
    frames (see L{IVnetReceiver}) so that super-frames cross a hop whose two
    ends are ours once instead of forty times.
    """

    offloads = Attribute(
        "The C{TUN_F_*} mask (L{vdetwist.wire.vnethdr}) of what L{sendVnet}"
        " passes on as it is; 0 if every super-frame is segmented and every"
        " partial checksum completed before it leaves.  It may change once,"
        " when the far end's capability becomes known."
    )

    def sendVnet(frame: bytes) -> None:
        """
        Send one vnet frame.  What the far end cannot take (a super-frame, a
        partial checksum) is segmented and checksummed here in software, so
        any vnet frame may be sent to any L{IVnetPlug}.  A frame whose header
        lies (see L{vdetwist.wire.vnethdr}) is dropped and counted in
        C{stats.dropped}, like any frame C{send} refuses.
        """


class IVdeBackend(Interface):
    """
    A Twisted plugin that opens the VNLs of one or more schemes.

    Dropins in C{twisted/plugins/} instantiate providers of this; the registry
    in L{vdetwist.registry} finds them with C{twisted.plugin.getPlugins}.
    """

    schemes = Attribute(
        "Sequence of the VNL scheme names (the part before C{://}) handled."
    )
    summary = Attribute("One line saying what the backend connects to.")
    references = Attribute(
        "Sequence of the L{vdetwist.reference.SchemeReference} pages of its"
        " schemes, which C{vdetwist-plugins SCHEME} prints."
    )

    def open(reactor, vnl, description: str, args, registry):
        """
        Open the network named by C{vnl}.

        @param reactor: the reactor the plug uses for all I/O.
        @param vnl: a L{vdetwist.vnl.VNL}; C{vnl.argument} is the text after
            C{://}, which the backend parses with its own grammar.
        @param description: the decorated description (C{"vdeplug: user=root
            pid=42"}), sent to switches that show it.
        @param args: a L{vdetwist.registry.OpenArgs} (port, group, mode).
        @param registry: the L{vdetwist.registry.Registry} that called; nested
            VNLs (C{vlan://3{vde:///tmp/sw}}) are opened through it.
        @return: a L{twisted.internet.defer.Deferred} firing with an
            L{IVdePlug}, or failing with a L{vdetwist.errors.VdeError}.
        """


class IVdeClient(Interface):
    """
    One vde2 client of a switch (QEMU, a C{vde_plug}...) as the switch's
    management console shows it: the switch's data plug for the client
    (L{vdetwist.vde2.server.ServerEndpoint}), found through
    L{IVdeServer.clientOf}.
    """

    endpointId = Attribute(
        "The id C{port/print} shows and C{port/epclose} takes: vde_switch"
        " numbers a client by its control connection's descriptor."
    )
    uid = Attribute(
        "The uid owning the client's data socket (C{port/print}'s Current"
        " User, what port access control checks), -1 if unknown (an"
        " abstract socket)."
    )
    pid = Attribute(
        "The pid of the process that connected (its control connection's"
        " peer credentials), C{None} if unknown."
    )


class IVdeServer(Interface):
    """
    What a switch's management console (L{vdetwist.vde2.interpreter}) may
    ask of the server its vde2 clients join through
    (L{vdetwist.vde2.server.VdeServer}): which ports are its clients, to
    close one, and a say in who may join a port.
    """

    accessPolicy = Attribute(
        "C{None}, or a callable C{(portNumber, uid) -> Optional[str]}"
        " consulted before a client joins a port (vde_switch C{port/setuser},"
        " C{port/setgroup}): a string refuses the client and says why."
    )

    def clientOf(plug) -> Optional[IVdeClient]:
        """
        The L{IVdeClient} that C{plug}, an endpoint of the node, is for;
        C{None} if it is not one of this server's clients (a C{--plug}
        network, an in-memory plug).
        """

    def closeEndpoint(endpointId: int) -> bool:
        """
        Close the client with this id (C{port/epclose}): it sees its control
        connection end.  Returns whether there was one.
        """


def _listMembers(*interfaces: InterfaceClass) -> None:
    """
    Append each interface's members, with the first paragraph of their
    docstrings, to its docstring: C{pydoc} shows an interface as its
    docstring alone.  (pydoctor lists the members itself.)
    """
    for interface in interfaces:
        entries = []
        for name, member in interface.namesAndDescriptions(all=True):
            signature = member.getSignatureString() if isinstance(member, Method) else ""
            summary = " ".join((member.getDoc() or "").strip().split("\n\n")[0].split())
            entries.append(
                fill(f"{name}{signature}: {summary}", 76,
                     initial_indent="      ", subsequent_indent="          ")
            )
        listing = "\n".join(entries)
        interface.__doc__ = f"{interface.__doc__.rstrip()}\n\n    Members:\n\n{listing}\n"


_listMembers(
    IFrameReceiver, IPlugStats, IVdePlug, IVnetReceiver, IVnetPlug, IVdeBackend,
    IVdeClient, IVdeServer,
)
