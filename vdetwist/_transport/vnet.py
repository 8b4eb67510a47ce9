"""
What every plug that carries vnet frames (L{vdetwist.interfaces.IVnetPlug})
shares: delivering them to a receiver that takes vnet frames as they are and
to one that takes plain frames only, and sending them to a far end that
accepts only some offloads.
"""

from __future__ import annotations

import socket
from typing import Callable

from vdetwist.interfaces import IFrameReceiver, IVnetReceiver
from vdetwist.plug import ETH_HDRLEN
from vdetwist.wire.gso import BadVnetFrame, checkSuperFrame, segment
from vdetwist.wire.vnethdr import (
    NEEDS_CSUM,
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    TUN_F_TSO_ECN,
    TUN_F_UFO,
    TUN_F_USO4,
    TUN_F_USO6,
    VNET_HDRLEN,
    neededOffloads,
)

__all__ = [
    "vnetDelivery", "DeliveryCache", "sendVnetFrame", "sendSegments", "SOFTWARE_OFFLOADS", "VNET_FRAME_MIN",
    "VNET_FRAME_MAX", "VNET_SOCKET_BUFFER", "enlargeBuffers",
]

#: What L{segment} undoes: a hop between two of our processes may carry
#: any of it, since whoever finally needs plain frames makes them.
SOFTWARE_OFFLOADS = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO | TUN_F_USO4 | TUN_F_USO6
)
#: The shortest vnet frame: the header and an Ethernet header.
VNET_FRAME_MIN = VNET_HDRLEN + ETH_HDRLEN
#: The longest: the header, an Ethernet header with two VLAN tags, an IPv6
#: header and the largest IP payload (a 64 KiB super-frame).
VNET_FRAME_MAX = VNET_HDRLEN + 14 + 8 + 40 + 0xFFFF
#: Socket buffer asked for on a datagram socket carrying vnet frames: a few
#: super-frames in flight (a Unix datagram larger than the sending socket's
#: buffer is refused; the default, net.core.wmem_default, holds three).
VNET_SOCKET_BUFFER = 2 << 20
# <asm-generic/socket.h>; Python's socket module lacks them.
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33


def enlargeBuffers(sock: socket.socket) -> None:
    """
    Give C{sock} send and receive buffers for super-frames: as root beyond
    net.core.wmem_max/rmem_max (C{SO_SNDBUFFORCE}), else up to them.
    """
    for force, plain in ((SO_SNDBUFFORCE, socket.SO_SNDBUF),
                         (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, VNET_SOCKET_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, VNET_SOCKET_BUFFER)


def vnetDelivery(
    receiver: IFrameReceiver, bad: Callable[[BadVnetFrame], None]
) -> Callable[[bytes], None]:
    """
    What to call with each vnet frame a plug receives: C{receiver}'s
    C{vnetFrameReceived} if it takes vnet frames, else a function that hands
    it the plain frames of each (segmented, checksums completed) and calls
    C{bad} with the reason for one whose header lies.
    """
    if IVnetReceiver.providedBy(receiver):
        return receiver.vnetFrameReceived
    frameReceived = receiver.frameReceived

    def deliverPlain(vframe: bytes) -> None:
        if not vframe[1] and not vframe[0] & NEEDS_CSUM:
            frameReceived(vframe[VNET_HDRLEN:])
            return
        sendSegments(vframe, frameReceived, bad)

    return deliverPlain


def _unset(frame: bytes) -> None:
    """
    What a L{DeliveryCache} delivers to before its first call.
    """


class DeliveryCache:
    """
    L{vnetDelivery} for a plug's current receiver, made again only when the
    receiver or its methods change: a switch rebinds a port's
    C{vnetFrameReceived} when a capture or mirror starts, and a plug that
    kept the old one would bypass it.  Asked once per read batch, not per
    frame.
    """

    __slots__ = ("_bad", "_key", "_deliver")

    def __init__(self, bad: Callable[[BadVnetFrame], None]) -> None:
        self._bad = bad
        self._key: tuple = ()
        self._deliver: Callable[[bytes], None] = _unset

    def __call__(self, receiver: IFrameReceiver) -> Callable[[bytes], None]:
        # Bound methods are made anew at each lookup, equal but not
        # identical: compare with ==.
        key = (receiver, receiver.frameReceived, getattr(receiver, "vnetFrameReceived", None))
        if key != self._key:
            self._key = key
            self._deliver = vnetDelivery(receiver, self._bad)
        return self._deliver


def sendSegments(
    vframe: bytes, send: Callable[[bytes], None], bad: Callable[[BadVnetFrame], None]
) -> None:
    """
    Send the plain frames of C{vframe} with C{send}, or call C{bad} with the
    reason if its header lies.
    """
    try:
        frames = segment(vframe)
    except BadVnetFrame as e:
        bad(e)
        return
    for frame in frames:
        send(frame)


def sendVnetFrame(
    vframe: bytes,
    offloads: int,
    write: Callable[[bytes], None],
    send: Callable[[bytes], None],
    bad: Callable[[BadVnetFrame], None],
) -> None:
    """
    L{vdetwist.interfaces.IVnetPlug.sendVnet} for a far end that accepts the
    C{TUN_F_*} C{offloads}: C{write} the vnet frame as it is if it needs no
    more (a super-frame once its headers are checked), else C{send} its
    plain frames (see L{sendSegments}).
    """
    if len(vframe) < VNET_HDRLEN:
        sendSegments(vframe, send, bad)
    elif not vframe[1]:
        # The common case, a frame of at most one MTU: no lookup.
        if vframe[0] & NEEDS_CSUM and not offloads & TUN_F_CSUM:
            sendSegments(vframe, send, bad)
        else:
            write(vframe)
    elif neededOffloads(vframe) & ~offloads:
        sendSegments(vframe, send, bad)
    else:
        try:
            checkSuperFrame(vframe)
        except BadVnetFrame as e:
            bad(e)
            return
        write(vframe)
