"""
Real IP traffic through vdetwist: two network namespaces, each with a tap
that a C{vde_plug tap://NAME NETWORK} process holds, the two plugs joined by
a cable (ptp://, udp://), a switch (switch://, twistd vde) or a vxvde group.
Ping and a byte-exact 2 MB TCP transfer must pass.

Every address and interface lives in namespaces the test makes and removes:
the taps are made (persistent) in a third, "cable" namespace where the
vde_plug processes run, so that even the udp:// cable's loopback datagrams
stay private; once a plug holds its tap, the tap moves into its host
namespace (the plug's descriptor keeps working across the move) and gets
10.77.0.1/24 or 10.77.0.2/24.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import TestCase

from tests.interop.hashtransfer import assertHashedTransfer
from tests.support import (
    cTool, isListening, makeNamespace, ourEnv, ourTool, requireCommand, requireTun, stopProcess,
)
from vdetwist.testing import netns

IFF_LOWER_UP = 0x10000
ADDRESSES = ("10.77.0.1", "10.77.0.2")
ADDRESSES6 = ("fd77::1", "fd77::2")
PORT = 7777
TRANSFER = 2 * 1024 * 1024
SEED = 7



class TapHosts(TestCase):
    """
    Two host namespaces with a tap each, held by a plug process in a third,
    "cable" namespace (no tests of its own: a base for the traffic tests).

    @cvar ipv6: whether the hosts get IPv6 too (C{ADDRESSES6}).
    """

    ipv6 = False

    def setUp(self) -> None:
        requireTun()
        self.cable = makeNamespace(self)
        self.hosts = [makeNamespace(self, ipv6=self.ipv6) for _ in ADDRESSES]
        self.tmp = tempfile.mkdtemp(prefix="vtcable")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def plugTap(self, side: int, plug: list[str], cableVnl: str) -> str:
        """
        Make a tap in the cable namespace, run C{plug tap://TAP cableVnl} on
        it there, then move the tap to host C{side} and give it its address.
        """
        name = netns.uniqueName(f"vt{'ab'[side]}")
        netns.createTap(name, self.cable)
        netns.setUp(name, self.cable)
        log = open(os.path.join(self.tmp, f"{name}.log"), "w+")
        self.addCleanup(log.close)
        proc = self.cable.popen(
            plug + [f"tap://{name}", cableVnl], env=ourEnv(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        )
        self.addCleanup(stopProcess, proc)
        deadline = time.monotonic() + 15
        # The tap has carrier once somebody holds it open.
        while not netns.linkInfo(name, self.cable)["flags"] & IFF_LOWER_UP:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                self.fail(f"{' '.join(plug)} did not open {name}: {log.read()}")
            time.sleep(0.02)
        host = self.hosts[side]
        netns.moveLink(name, host, self.cable)
        netns.addAddress(name, f"{ADDRESSES[side]}/24", host)
        if self.ipv6:
            host.run(["ip", "-6", "address", "add", f"{ADDRESSES6[side]}/64", "dev", name,
                      "nodad"], check=True)
        netns.setUp(name, host)
        netns.waitOperational(name, host)
        return name

    def connect(self, plugs: tuple[list[str], list[str]], vnls: tuple[str, str]) -> None:
        for side in (0, 1):
            self.plugTap(side, plugs[side], vnls[side])

    def assertPing(self) -> None:
        requireCommand("ping", "iputils-ping")
        result = self.hosts[0].run(
            ["ping", "-c", "3", "-i", "0.2", "-W", "3", ADDRESSES[1]],
            capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"bytes from {ADDRESSES[1]}", result.stdout)

    def startTwistd(self, *options: str) -> str:
        """
        Start C{twistd vde --switch DIR} with C{options} in the cable
        namespace; return DIR once it listens.
        """
        switch = os.path.join(self.tmp, "sw")
        log = open(os.path.join(self.tmp, "twistd.log"), "w+")
        self.addCleanup(log.close)
        service = self.cable.popen(
            [sys.executable, "-m", "twisted", "vde", "--switch", switch, "--rcfile=", *options],
            env=ourEnv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        self.addCleanup(stopProcess, service)
        deadline = time.monotonic() + 15
        while not isListening(os.path.join(switch, "ctl")):
            if service.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                self.fail(f"twistd vde did not start: {log.read()}")
            time.sleep(0.05)
        return switch

    def assertTransfer(self, size: int = TRANSFER, addresses: tuple[str, str] = ADDRESSES,
                       timeout: float = 45) -> None:
        """
        C{size} bytes of TCP from host 0 to host 1 (at C{addresses[1]})
        arrive byte for byte.
        """
        assertHashedTransfer(self, self.hosts, "tcp", addresses[1], PORT, size, SEED, timeout)


class TrafficTests(TapHosts):
    timeout = 60

    def assertTraffic(self, plugs, vnls) -> None:
        self.connect(plugs, vnls)
        self.assertPing()
        self.assertTransfer()

    def test_ptp(self) -> None:
        path = os.path.join(self.tmp, "cable")
        ours = ourTool("vde_plug")
        self.assertTraffic((ours, ours), (f"ptp://{path}", f"ptp://{path}"))

    def test_udp(self) -> None:
        ours = ourTool("vde_plug")
        self.assertTraffic(
            (ours, ours),
            ("udp://127.0.0.1:5001->127.0.0.1:5002", "udp://127.0.0.1:5002->127.0.0.1:5001"),
        )

    def test_ptpWithC(self) -> None:
        """
        Our vde_plug on one tap, the C one on the other, one ptp:// cable.
        """
        path = os.path.join(self.tmp, "cable")
        self.assertTraffic(
            (ourTool("vde_plug"), [cTool("vde_plug")]), (f"ptp://{path}", f"ptp://{path}")
        )

    def test_ourSwitch(self) -> None:
        """
        vdeplug4's kind of switch: the first plug runs C{switch://} with its
        tap as the host port, the second joins it with C{vde://}.
        """
        switch = os.path.join(self.tmp, "sw")
        ours = ourTool("vde_plug")
        self.assertTraffic((ours, ours), (f"switch://{switch}", f"vde://{switch}"))

    def test_twistdSwitch(self) -> None:
        """
        Both taps plugged into a C{twistd vde} switch, one by our vde_plug
        and one by the C one.
        """
        switch = self.startTwistd()
        self.assertTraffic(
            (ourTool("vde_plug"), [cTool("vde_plug")]), (f"vde://{switch}", f"vde://{switch}")
        )

    def test_vxvde(self) -> None:
        """
        No switch at all: both taps' plugs in one vxvde group (multicast on
        the cable namespace's loopback).
        """
        self.cable.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
        self.cable.run(["ip", "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)
        vnl = "vxvde://239.77.0.7/port=14789/vni=77"
        ours = ourTool("vde_plug")
        self.assertTraffic((ours, ours), (vnl, vnl))
