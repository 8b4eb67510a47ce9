"""
What a slirp layer may use of the engine it runs in: the narrow, shared
context each layer (link, NDP, DHCP, UDP and ICMP NAT, TCP, TFTP) receives
instead of the engine itself.  The engine satisfies L{LayerContext}; no
layer imports the engine module, so the layers form no import circle with
it and a layer can run (and be tested) against anything that provides
these few things.
"""

from __future__ import annotations

from collections import Counter
from random import Random
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.hostapi import IHost
from vdetwist.slirp.policy import AddressPolicy
from vdetwist.slirp.timers import Timer
from vdetwist.wire.checksum import BytesLike

if TYPE_CHECKING:  # pragma: no cover
    from vdetwist.slirp.packets import Tcp4Frames


class LinkSender(Protocol):
    """
    The link layer as the other layers see it: IP packets out to a guest
    address (resolved, queued or fragmented as needed), the neighbour
    tables, and the MACs the engine sends from.
    """

    routerMac6: bytes

    def send4(self, destination: bytes, packet: bytes) -> None:
        ...

    def send6(self, destination: bytes, packet: bytes) -> None:
        ...

    def learn(self, address: bytes, mac: bytes) -> None:
        ...

    def lookup(self, address: bytes) -> Optional[bytes]:
        ...

    def sourceMac6(self, source: bytes) -> bytes:
        ...

    def sendOffloaded(self, destination: bytes, headers: bytes, payload: BytesLike,
                      segmentSize: int) -> bool:
        ...

    def sendTcp4(self, frames: Tcp4Frames, seq: int, ack: int, flags: int, window: int,
                 payload: BytesLike) -> bool:
        ...


class LayerContext(Protocol):
    """
    The clock and timers, statistics, configuration, address policy,
    random numbers, the host side, and the way out to the guests.

    @ivar host: the host sockets (a L{vdetwist.slirp.hostapi.IHost}).
    @ivar writable: whether the guests' link takes frames now (else TCP
        holds its segments back until the engine resumes it).
    @ivar offload: whether the guests' link takes vnet frames (L{emitVnet}):
        then TCP sends segments of many MSSs with partial checksums.
    """

    config: SlirpConfig
    stats: Counter
    random: Random
    policy: AddressPolicy
    writable: bool
    offload: bool
    now: Callable[[], float]

    # Read-only members: the engine may hold a richer link and any IHost.
    @property
    def link(self) -> LinkSender:
        ...

    @property
    def host(self) -> IHost:
        ...

    def timer(self, callback: Callable[[], None]) -> Timer:
        """
        A new, unarmed timer calling C{callback}.
        """

    def ensureHousekeeping(self) -> None:
        """
        Make sure the periodic expiry of flows and fragments runs.
        """

    def emit(self, frame: bytes) -> None:
        """
        Send an Ethernet frame to the guests.
        """

    def emitVnet(self, frame: bytes) -> None:
        """
        Send a vnet frame (virtio-net header, then the Ethernet frame) to
        the guests; only while L{offload}.
        """
