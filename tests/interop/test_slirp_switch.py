"""
slirp:// as one port of our switch, a real guest on another: the guest
namespace's tap is held by our C{vde_plug}, plugged into a vdetwist switch,
and our C{vde_plug slirp:///... vde://DIR} is another port of it, each in a
process of its own:

    [guest ns: tap] <- vde_plug tap://T switch://DIR -> <- vde_plug slirp:/// vde://DIR

or, with the C{twistd vde} switch:

    [guest ns: tap] <- vde_plug tap://T vde://DIR -> twistd vde --switch DIR
                                                    <- vde_plug slirp:/// vde://DIR

The guest gets 10.0.2.15 by DHCP (busybox udhcpc; the broadcasts cross the
switch), pings 10.0.2.2, resolves a name through 10.0.2.3 against a DNS
server this test runs on a loopback address, and fetches a file byte-exact
over HTTP from a server on the host's 127.0.0.1 through 10.0.2.2.  The
guest side, the servers and the checks are those of L{tests.interop.test_slirp_netns}.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

from twisted.internet import defer

from tests.interop import test_slirp_netns as guestTests
from tests.support import isListening, ourEnv, ourTool
from tests.support import stopProcess

IFF_LOWER_UP = 0x10000


class SlirpThroughSwitchNodeTests(guestTests.SlirpGuestTests):
    """
    The switch is vdeplug4's kind, C{switch://DIR}, run by the tap's plug.
    """

    timeout = 60

    def plug(self, registry, link):
        """
        Instead of cabling the tap to slirp:// in this process (what
        L{guestTests.SlirpGuestTests.setUp} asks for), run the switch and
        the plugs, then hand the tap to the guest.
        """
        self.switch = os.path.join(self.tmp, "sw")
        self.startSwitch()
        # each port of either switch has a data socket in its directory
        # (vde_switch's "NNN.FD", vdeplug4's "fdN"): a new one is slirp's
        ports = set(os.listdir(self.switch))
        self.slirpPlug = self.start(
            "slirp", [*ourTool("vde_plug"), "slirp:///v4", f"vde://{self.switch}"])
        self.waitFor(lambda: set(os.listdir(self.switch)) - ports,
                     "the slirp:// plug to join the switch", self.slirpPlug)
        link.moveTo(self.ns)
        self.netns.setUp(self.tap, self.ns)

    def startSwitch(self):
        self.tapPlug = self.start(
            "tap", [*ourTool("vde_plug"), f"tap://{self.tap}", f"switch://{self.switch}"])
        self.waitForTap(self.tapPlug)
        self.waitFor(lambda: isListening(os.path.join(self.switch, "ctl")),
                     "the switch:// node", self.tapPlug)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        """
        Start one of our programs (stderr to a log file, checked at the
        end).
        """
        log = open(os.path.join(self.tmp, f"{name}.log"), "w+")
        self.addCleanup(log.close)
        process = subprocess.Popen(argv, env=ourEnv(), stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log)
        process.log = log
        process.name = name
        self.addCleanup(stopProcess, process)
        return process

    def waitFor(self, condition, what: str, process: subprocess.Popen,
                timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}: {self.logOf(process)}")
            time.sleep(0.02)

    def waitForTap(self, process: subprocess.Popen) -> None:
        """
        Wait until C{process} holds the tap open (up, it then has carrier).
        """
        self.netns.setUp(self.tap)
        self.waitFor(lambda: self.netns.linkInfo(self.tap)["flags"] & IFF_LOWER_UP,
                     f"{process.name} to open {self.tap}", process)

    @staticmethod
    def logOf(process: subprocess.Popen) -> str:
        process.log.seek(0)
        return f"{process.args} (exit status {process.poll()}) wrote: {process.log.read()}"

    def assertHealthy(self):
        for process in self.processes():
            self.assertIsNone(process.poll(), self.logOf(process))
            process.log.seek(0)
            text = process.log.read()
            for sign in ("Traceback", "Unhandled"):
                self.assertNotIn(sign, text, self.logOf(process))

    def processes(self):
        return [self.tapPlug, self.slirpPlug]

    @defer.inlineCallbacks
    def test_guest(self):
        lease = yield self.dhcp()
        self.assertEqual(lease, ["lease", "10.0.2.15", "255.255.255.0", "10.0.2.2", "10.0.2.3"])

        pings = yield self.python(guestTests.GUEST_PING, "10.0.2.2")
        self.assertEqual(pings.stdout.strip(), "3", pings.stderr)

        for transport in ("udp", "tcp"):
            result = yield self.python(guestTests.GUEST_DNS, "10.0.2.3", guestTests.NAME,
                                       transport)
            self.assertEqual(result.stdout.strip(), guestTests.ANSWER,
                             transport + result.stderr)
        self.assertGreaterEqual(self.dnsUdp.queries, 1)

        result = yield self.python(guestTests.GUEST_HTTP,
                                   f"http://10.0.2.2:{self.httpPort}/file", timeout=45)
        self.assertEqual(result.returncode, 0, result.stderr)
        size, digest, elapsed = result.stdout.split()
        self.assertEqual((int(size), digest),
                         (guestTests.FILE_SIZE, hashlib.sha256(self.payload).hexdigest()))
        rate = guestTests.FILE_SIZE * 8 / float(elapsed) / 1e6
        sys.stderr.write(f"\nslirp through {type(self).__name__}: HTTP {size} bytes in "
                         f"{elapsed} s = {rate:.0f} Mbit/s\n")
        self.assertHealthy()


class SlirpThroughTwistdSwitchTests(SlirpThroughSwitchNodeTests):
    """
    The switch is C{twistd vde}; the tap joins it with C{vde://DIR}.
    """

    def startSwitch(self):
        self.service = self.start("twistd", [sys.executable, "-m", "twisted", "vde",
                                             "--switch", self.switch, "--rcfile="])
        self.waitFor(lambda: isListening(os.path.join(self.switch, "ctl")),
                     "twistd vde", self.service)
        self.tapPlug = self.start(
            "tap", [*ourTool("vde_plug"), f"tap://{self.tap}", f"vde://{self.switch}"])
        self.waitForTap(self.tapPlug)

    def processes(self):
        return [self.service, self.tapPlug, self.slirpPlug]
