"""
slirp with offloads (issue 11) and a real guest: a namespace on a tap
cabled in this process to slirp:// (what C{vde_plug tap://T slirp://} runs)
moves 100 MiB each way to a server on the host's loopback, through
10.0.2.2 and fd00::2, byte-identical (sha256).  When the tap offloads,
super-frames must have crossed both ways.
"""

from __future__ import annotations

import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from vdetwist.interfaces import IVnetPlug
from vdetwist.wire.vnethdr import TUN_F_TSO4

TRANSFER_SIZE = 100 * 1024 * 1024
TRANSFER_SEED = 9

#: The host's server: on the loopback (C{4} or C{6}), prints its port and
#: the sha256 of the bytes it serves; a connection starting with C{G} gets
#: them, one starting with C{P} sends bytes and gets their count and sha256.
HOST_SERVER = r"""
import hashlib, random, socket, sys
family, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(seed).randbytes(size)
server = socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET)
server.bind(("::1" if family == "6" else "127.0.0.1", 0))
server.listen(4)
print(server.getsockname()[1], hashlib.sha256(data).hexdigest(), flush=True)
while True:
    c, _ = server.accept()
    c.settimeout(200)
    if c.recv(1) == b"G":
        c.sendall(data)
    else:
        digest, count = hashlib.sha256(), 0
        while chunk := c.recv(1 << 20):
            digest.update(chunk)
            count += len(chunk)
        c.sendall(f"{count} {digest.hexdigest()}".encode())
    c.close()
"""

#: The guest's client: C{get} prints the count and sha256 of what it
#: received, C{put} sends the same seeded bytes and prints the server's
#: count and sha256 of them; then the seconds it took.
GUEST_CLIENT = r"""
import hashlib, random, socket, sys, time
mode, host, port, size, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
data = random.Random(seed).randbytes(size) if mode == "put" else b""
s = socket.create_connection((host, port), timeout=200)
start = time.monotonic()
if mode == "get":
    s.sendall(b"G")
    digest, count = hashlib.sha256(), 0
    while chunk := s.recv(1 << 20):
        digest.update(chunk)
        count += len(chunk)
    result = f"{count} {digest.hexdigest()}"
else:
    s.sendall(b"P" + data)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := s.recv(4096):
        reply += chunk
    result = reply.decode()
print(result, "%.3f" % (time.monotonic() - start))
"""


class OffloadGuestTests(TestCase):
    """
    A namespace guest on a tap cabled in this process to slirp:// (what
    C{vde_plug tap://T slirp://} runs): 100 MiB each way between the guest
    and a server on the host's loopback (through 10.0.2.2, fd00::2),
    byte-identical (sha256).  When the tap plug offloads, super-frames
    must have crossed both ways.
    """

    timeout = 600
    tapOptions = ""

    def setUp(self):
        from tests.interop.test_slirp_netns import requireGuest

        requireGuest()
        from vdetwist.testing import netns

        self.netns = netns
        self.ns = netns.Namespace.create(ipv6=True)
        self.addCleanup(self.ns.remove)
        self.tap = netns.uniqueName("vtso")
        link = netns.createTap(self.tap)
        self.addCleanup(link.remove)
        return self.plug(link)

    @defer.inlineCallbacks
    def plug(self, link):
        from vdetwist.backends.slirp import SlirpBackend
        from vdetwist.backends.tap import TapBackend
        from vdetwist.cable import Cable
        from vdetwist.registry import Registry

        registry = Registry([TapBackend(), SlirpBackend()])
        self.tapPlug = yield registry.open(reactor, f"tap://{self.tap}{self.tapOptions}")
        self.slirp = yield registry.open(reactor, "slirp://")
        cable = Cable(self.tapPlug, self.slirp)
        self.addCleanup(cable.close)
        link.moveTo(self.ns)
        for argv in (["ip", "link", "set", self.tap, "up"],
                     ["ip", "addr", "add", "10.0.2.15/24", "dev", self.tap],
                     ["ip", "-6", "addr", "add", "fd00::15/64", "dev", self.tap, "nodad"],
                     ["ip", "route", "add", "default", "via", "10.0.2.2"],
                     ["ip", "-6", "route", "add", "default", "via", "fe80::2", "dev",
                      self.tap]):
            result = yield deferToThread(self.ns.run, argv, capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, f"{argv}: {result.stderr}")

    @defer.inlineCallbacks
    def server(self, family: str):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOST_SERVER, family, str(TRANSFER_SIZE), str(TRANSFER_SEED)],
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        line = yield deferToThread(proc.stdout.readline)
        port, digest = line.split()
        return int(port), digest

    @defer.inlineCallbacks
    def client(self, mode: str, address: str, port: int):
        result = yield deferToThread(
            subprocess.run,
            self.ns.command([sys.executable, "-c", GUEST_CLIENT, mode, address, str(port),
                             str(TRANSFER_SIZE), str(TRANSFER_SEED)]),
            capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        count, digest, elapsed = result.stdout.split()
        rate = TRANSFER_SIZE * 8 / float(elapsed) / 1e6
        sys.stderr.write(f"\nslirp {mode} {address}{self.tapOptions}: {rate:.0f} Mbit/s\n")
        return int(count), digest

    @defer.inlineCallbacks
    def transfer(self, family: str, gateway: str):
        port, digest = yield self.server(family)
        for mode in ("get", "put"):
            got = yield self.client(mode, gateway, port)
            self.assertEqual(got, (TRANSFER_SIZE, digest), mode)
        stats = self.slirp.engine.stats
        self.assertEqual((stats["errors"], stats["vnet_bad"]), (0, 0))
        if IVnetPlug.providedBy(self.tapPlug) and self.tapPlug.offloads & TUN_F_TSO4:
            self.assertGreater(stats["tcp_super_out"], 0)
            self.assertGreater(stats["tcp_super_in"], 0)

    def test_ipv4(self):
        return self.transfer("4", "10.0.2.2")

    def test_ipv6(self):
        return self.transfer("6", "fd00::2")
