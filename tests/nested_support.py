"""
What the interop tests of the nesting backends (C{vlan://}, C{agno://})
share: a C C{vde_switch} in hub mode and an observer on it, in the test's
reactor, with plug processes (C or ours, L{tests.support.StreamProcess})
driven through the VDE stream encoding on their stdio.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Callable, Optional

from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.task import deferLater
from twisted.plugin import IPlugin
from twisted.trial.unittest import TestCase

from tests.support import TIMEOUT, CSwitch, StreamProcess, describeAll, tmpdir
from vdetwist.registry import registry
from vdetwist.interfaces import IVdeBackend
from vdetwist.testing import FrameCollector, MemoryPlug, plugPair
from zope.interface import implementer

#: Ethertype of the test frames.
ETHERTYPE = 0x88B5


def mac(n: int) -> bytes:
    return bytes([0x02, 0, 0, 0, 0, n])


def testFrame(src: int, n: int, vlan: Optional[int] = None, size: int = 64,
              tpid: int = 0x8100, dst: bytes = b"\xff" * 6) -> bytes:
    """
    A frame from C{mac(src)}, numbered C{n} in its payload; C{size} bytes,
    plus 4 if tagged C{vlan} (the same frame with a tag inserted).
    """
    frame = (dst + mac(src) + struct.pack(">HI", ETHERTYPE, n)).ljust(size, bytes([n & 0xFF]))
    if vlan is not None:
        frame = frame[:12] + struct.pack(">HH", tpid, vlan) + frame[12:]
    return frame


def numberOf(frame: bytes) -> Optional[int]:
    """
    The number of a L{testFrame} (tagged once or not), or C{None}.
    """
    for offset in (12, 16, 20):
        if frame[offset : offset + 2] == struct.pack(">H", ETHERTYPE):
            return struct.unpack_from(">I", frame, offset + 2)[0]
    return None


def numbers(proc: StreamProcess, src: Optional[int] = None) -> list[Optional[int]]:
    """
    The numbers of the frames C{proc} delivered (from C{mac(src)} only, if
    given).
    """
    return [numberOf(f) for f in list(proc.frames) if src is None or f[6:12] == mac(src)]


class HubTestCase(TestCase):
    """
    Each test gets a C C{vde_switch -x} (a hub: tagged frames are not
    filtered) and an observer plug on it.
    """

    async def startHub(self) -> None:
        self.tmp = tmpdir(self, "vtn-")
        self.hub = CSwitch(self, "-x", mgmt=False)
        self.hubDir = self.hub.path
        await self.hub.started()
        self.observer = await registry.open(reactor, "vde://" + self.hubDir, "observer")
        self.addCleanup(self.observer.close)
        self.seen = FrameCollector()
        self.observer.startReceiving(self.seen)

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    async def probeUntilUp(self, procs: list[StreamProcess],
                           probe: Callable[[], bytes]) -> None:
        """
        Send C{probe()} frames (numbered 0, from C{mac(9)}) from the observer
        until every process has delivered one: they are all on the hub.
        """
        deadline = time.monotonic() + TIMEOUT
        while not all(0 in numbers(p, 9) for p in procs):
            if time.monotonic() > deadline or not all(p.running() for p in procs):
                raise AssertionError("the plugs did not come up" + describeAll(procs))
            self.observer.send(probe())
            await deferLater(reactor, 0.1)

    def seenFrom(self, src: int) -> list[bytes]:
        return [f for f in self.seen.frames if f[6:12] == mac(src)]


@implementer(IPlugin, IVdeBackend)
class MemoryBackend:
    """
    Opens in-memory plugs and records how it was called.
    """

    schemes = ("mem", "vde")
    summary = "test"

    def __init__(self) -> None:
        self.calls = []
        self.plugs: list[MemoryPlug] = []
        self.far: list[MemoryPlug] = []

    def open(self, reactor, vnl, description, args, registry):
        self.calls.append((vnl, description, args, registry))
        near, far = plugPair(vnl.text, "far", capacity=2)
        self.plugs.append(near)
        self.far.append(far)
        return succeed(near)
