"""
What the interop tests of the nesting backends (C{vlan://}, C{agno://})
share: a C C{vde_switch} in hub mode, plug processes (C or ours) driven
through the VDE stream encoding on their stdio, all in the test's reactor.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import tempfile
import time
from typing import Callable, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.plugin import IPlugin
from twisted.trial.unittest import TestCase

from tests.support import cTool, ourEnv, ourTool, records
from vdetwist.registry import registry
from vdetwist.stream import StreamDecoder
from vdetwist.interfaces import IVdeBackend
from vdetwist.testing import FrameCollector, MemoryPlug, plugPair
from zope.interface import implementer

#: Upper bound of any single wait; passing runs are far below.
TIMEOUT = 10.0
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


async def until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT,
                describe: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{describe()}")
        await deferLater(reactor, 0.01)


class StreamProcess(ProcessProtocol):
    """
    A C{vde_plug VNL}-like process: frames in on stdin, out on stdout.
    """

    def __init__(self, test: TestCase, name: str, argv: list[str],
                 env: Optional[dict] = None) -> None:
        self.name = name
        self.frames: list[bytes] = []
        self.stderr = b""
        self.ended: Deferred = Deferred()
        self.running = True
        self._decoder = StreamDecoder(self.frames.append, lambda n, d: None)
        reactor.spawnProcess(self, argv[0], argv, env=env or dict(os.environ))
        test.addCleanup(self.stop)

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._decoder.feed(data)
        else:
            self.stderr += data

    def processEnded(self, reason) -> None:
        self.running = False
        self.ended.callback(None)

    def send(self, *frames: bytes) -> None:
        self.transport.write(records(frames))

    def numbers(self, src: Optional[int] = None) -> list[Optional[int]]:
        return [numberOf(f) for f in self.frames if src is None or f[6:12] == mac(src)]

    def describe(self) -> str:
        return f"\n--- {self.name} stderr:\n{self.stderr.decode('utf-8', 'replace')}"

    async def stop(self) -> None:
        if self.running:
            try:
                self.transport.signalProcess(signal.SIGTERM)
            except Exception:
                pass
            killer = reactor.callLater(3, self._kill)
            await self.ended
            if killer.active():
                killer.cancel()

    def _kill(self) -> None:
        if self.running:
            self.transport.signalProcess(signal.SIGKILL)


class HubTestCase(TestCase):
    """
    Each test gets a C C{vde_switch -x} (a hub: tagged frames are not
    filtered) and an observer plug on it.
    """

    async def startHub(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="vtn-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.hubDir = os.path.join(self.tmp, "hub")
        switch = [cTool("vde_switch"), "-x", "-s", self.hubDir]
        self.hub = StreamProcess(self, "vde_switch", switch)
        await until(lambda: os.path.exists(os.path.join(self.hubDir, "ctl")),
                    "vde_switch to start", describe=self.hub.describe)
        self.observer = await registry.open(reactor, "vde://" + self.hubDir, "observer")
        self.addCleanup(self.observer.close)
        self.seen = FrameCollector()
        self.observer.startReceiving(self.seen)

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def cPlug(self, vnl: str) -> StreamProcess:
        return StreamProcess(self, f"C vde_plug {vnl}", [cTool("vde_plug"), vnl])

    def ourPlug(self, vnl: str) -> StreamProcess:
        return StreamProcess(self, f"our vde_plug {vnl}", ourTool("vde_plug") + [vnl],
                             env=ourEnv())

    async def probeUntilUp(self, procs: list[StreamProcess],
                           probe: Callable[[], bytes]) -> None:
        """
        Send C{probe()} frames (numbered 0, from C{mac(9)}) from the observer
        until every process has delivered one: they are all on the hub.
        """
        deadline = time.monotonic() + TIMEOUT
        while not all(0 in p.numbers(9) for p in procs):
            if time.monotonic() > deadline or not all(p.running for p in procs):
                raise AssertionError("the plugs did not come up" +
                                     "".join(p.describe() for p in procs))
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
