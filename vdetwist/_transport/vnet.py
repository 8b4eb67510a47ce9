"""
What every plug that carries vnet frames (L{vdetwist.interfaces.IVnetPlug})
shares: delivering them to a receiver that takes vnet frames as they are and
to one that takes plain frames only, and sending them to a far end that
accepts only some offloads.
"""

from __future__ import annotations

from typing import Callable

from vdetwist.interfaces import IFrameReceiver, IVnetReceiver
from vdetwist.wire.gso import BadVnetFrame, checkSuperFrame, segment
from vdetwist.wire.vnethdr import NEEDS_CSUM, TUN_F_CSUM, VNET_HDRLEN, neededOffloads

__all__ = ["vnetDelivery", "sendVnetFrame", "sendSegments"]


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
        try:
            frames = segment(vframe)
        except BadVnetFrame as e:
            bad(e)
            return
        for frame in frames:
            frameReceived(frame)

    return deliverPlain


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
