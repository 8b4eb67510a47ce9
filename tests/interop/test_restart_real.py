"""
Links that come back for real: vdetwist's switch (C{vde_plug null://
switch:///DIR}, a process) killed and started again under a C{restart://}
cable or a switch's C{--plug}.  The logic itself is tested on a L{Clock} in
L{tests.unit.test_restart}.
"""

from __future__ import annotations

import os
import shutil
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.nested_support import numberOf, testFrame
from tests.support import (
    TIMEOUT, describeAll, isListening, ourPlug, tmpdir, until,
)
from vdetwist.registry import openVNL
from vdetwist.service import Options, VdeSwitchService
from vdetwist.testing import FrameCollector

#: The polling period of the real restart:// test, and what the machine may
#: add to two of them (the cable and the switch are processes; the machine
#: may be busy).
PERIOD = 1
SLACK = 3.0


class OurSwitch:
    """
    vdetwist's switch, C{vde_plug null:// switch:///DIR}, as a process that
    the test kills and starts again.
    """

    def __init__(self, test, path: str) -> None:
        self.test = test
        self.path = path
        self.process = None

    async def start(self) -> None:
        self.process = ourPlug(self.test, "switch", "null://", "switch://" + self.path)
        ctl = os.path.join(self.path, "ctl")
        await until(lambda: isListening(ctl), "the switch to listen", procs=[self.process],
                    failIfEnded=True)

    def kill(self) -> None:
        """
        SIGKILL it, and remove what it left, as its restart would need.
        """
        self.process.kill()
        shutil.rmtree(self.path)


async def carries(sender, receiver: FrameCollector, procs, src: int) -> float:
    """
    Send numbered frames from the stream process C{sender} until
    C{receiver} has one: the seconds it took.
    """
    start = time.monotonic()
    n = 0
    while not any(numberOf(f) is not None and f[11] == src for f in receiver.frames):
        if time.monotonic() - start > TIMEOUT:
            raise AssertionError("no frame came through" + describeAll(procs))
        sender.send(testFrame(src, n))
        n += 1
        await deferLater(reactor, 0.05)
    return time.monotonic() - start


class RealRestartTests(TestCase):
    """
    Real links through vdetwist's switch, killed and started again.
    """

    timeout = 6 * TIMEOUT

    async def observe(self, path: str) -> FrameCollector:
        plug = await openVNL(reactor, "vde://" + path, "observer")
        self.addCleanup(plug.close)
        seen = FrameCollector()
        plug.startReceiving(seen)
        return seen

    async def test_cableComesBack(self) -> None:
        """
        A cable through C{restart://1{vde:///SW}} carries frames again
        within two polling periods of the switch coming back.
        """
        path = os.path.join(tmpdir(self), "sw")
        switch = OurSwitch(self, path)
        await switch.start()
        cable = ourPlug(self, "cable", f"restart://{PERIOD}{{vde://{path}}}")
        seen = await self.observe(path)
        await carries(cable, seen, [cable, switch.process], 1)
        switch.kill()
        await deferLater(reactor, 0.5)
        self.assertTrue(cable.running(), cable.describe())
        await switch.start()
        seen = await self.observe(path)
        took = await carries(cable, seen, [cable, switch.process], 2)
        self.assertLess(took, 2 * PERIOD + SLACK)
        self.assertIn("the nested network dropped", cable.stderrText())

    async def test_plugComesBack(self) -> None:
        """
        C{twistd vde --plug vde:///SW2} reconnects when the switch at SW2
        comes back, within the backoff's cap.
        """
        tmp = tmpdir(self)
        far = os.path.join(tmp, "sw2")
        switch = OurSwitch(self, far)
        await switch.start()
        options = Options()
        options.parseOptions(["--switch", os.path.join(tmp, "sw1"), "--rcfile=",
                              "--plug", "vde://" + far, "--reconnect", "1"])
        service = VdeSwitchService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: service.plugs, "the --plug to attach")
        client = ourPlug(self, "client", "vde://" + os.path.join(tmp, "sw1"))
        seen = await self.observe(far)
        await carries(client, seen, [client, switch.process], 1)
        switch.kill()
        await until(lambda: not service.plugs, "the switch to see its --plug drop")
        await switch.start()
        seen = await self.observe(far)
        took = await carries(client, seen, [client, switch.process], 2)
        self.assertLess(took, 2 * 1 + SLACK)
        self.assertEqual(service.node.getPort(1).endpoints[0], service.plugs[0][1])
