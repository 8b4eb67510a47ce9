"""
The host side of the engine: the few socket operations it needs, as
interfaces.  L{vdetwist.slirp.host.TwistedHost} implements them with the
reactor; L{vdetwist.slirp.memhost.MemoryHost} in memory, for tests.

Addresses crossing this boundary are text (C{"127.0.0.1"}, C{"::1"}), as
the socket module takes them.  A host socket's family follows from the
address it is opened for (4 or 6).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from vdetwist.wire.checksum import BytesLike


class IStream(Interface):
    """
    One host connection (TCP, UNIX socket or a command's stdio).
    """

    def write(data: BytesLike) -> None:
        """
        Queue C{data} (a C{memoryview} too: a view of a guest's frame,
        copied if kept); the handler's C{pauseWriting} says when to stop.
        """

    def writeEOF() -> None:
        """
        Shut down the sending half once queued data is written.
        """

    def close() -> None:
        """
        Close both halves once queued data is written.
        """

    def abort() -> None:
        """
        Close now (a TCP reset where the transport has one).
        """

    def pauseReading() -> None:
        """
        Stop delivering data (the engine's buffer toward the guest is full).
        """

    def resumeReading() -> None:
        """
        Deliver data again.
        """


class IStreamHandler(Interface):
    """
    The engine side of a stream (a guest TCP connection).
    """

    def connected(stream: IStream) -> None:
        """
        The outgoing connection succeeded.
        """

    def connectFailed(errno: int) -> None:
        """
        The outgoing connection failed with C{errno}.
        """

    def dataReceived(data: bytes) -> None:
        """
        Data from the host side.
        """

    def readEOF() -> None:
        """
        The host side will send no more (a FIN, or a command's stdout
        closed).
        """

    def connectionLost(clean: bool) -> None:
        """
        The stream is gone; C{clean} is false for a reset or an error.
        """

    def pauseWriting() -> None:
        """
        The stream's write buffer is full.
        """

    def resumeWriting() -> None:
        """
        The stream's write buffer has drained.
        """


class IPendingConnect(Interface):
    """
    A connect that L{IHost.connect} started.
    """

    def cancel() -> None:
        """
        Give it up if it is still pending (its socket closes at once); the
        handler hears nothing more of it.  Does nothing once it has been
        reported.
        """


class IDatagramHandler(Interface):
    def datagramReceived(data: bytes, address: tuple) -> None:
        """
        A datagram from C{(host, port)}; for ICMP sockets the ICMP message
        (no IP header) from C{(host, 0)}.
        """


class IDatagramSocket(Interface):
    family = Attribute("4 or 6.")
    rewritesIdentifier = Attribute(
        "ICMP sockets only: true for a datagram ping socket, whose echo "
        "identifier the kernel replaces with its port, false for a raw one."
    )

    def sendto(data: bytes, address: tuple) -> None:
        """
        Send; errors (unreachable, buffer full) drop the datagram.
        """

    def close() -> None:
        pass


class IListening(Interface):
    def close() -> None:
        """
        Stop listening.
        """


class IHost(Interface):
    def openUDP(family: int, handler: IDatagramHandler) -> IDatagramSocket:
        """
        A UDP socket bound to an ephemeral port of the wildcard address.

        @raise OSError: none could be made.
        """

    def openICMP(family: int, handler: IDatagramHandler) -> IDatagramSocket:
        """
        A socket sending ICMP echo requests: a datagram ping socket if the
        host allows it, else a raw socket.

        @raise OSError: neither could be made.
        """

    def connect(target: tuple, handler: IStreamHandler) -> IPendingConnect:
        """
        Connect to C{("tcp", host, port)}, C{("unix", path)} or
        C{("cmd", command line)}; the handler hears C{connected} or
        C{connectFailed} (possibly before this returns), unless the
        connect is cancelled first.
        """

    def listenTCP(address: str, port: int, onAccept) -> IListening:
        """
        Accept connections; C{onAccept(stream, (host, port))} returns the
        L{IStreamHandler} for each (or C{None} to refuse it).

        @raise OSError: the port could not be bound.
        """

    def listenUDP(address: str, port: int, handler: IDatagramHandler) -> IDatagramSocket:
        """
        A UDP socket bound to C{address:port}.

        @raise OSError: the port could not be bound.
        """
