"""
tap://, macvtap:// and pcap:// on real kernel interfaces, each test in
network namespaces of its own (made and removed with L{vdetwist.testing.netns}), so
no frame reaches anything the test did not create.  An AF_PACKET socket on
the interface plays the other side of the wire.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import re
import socket
import stat
import subprocess
from contextlib import contextmanager
from typing import Iterator

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from pyroute2.netlink.exceptions import NetlinkError
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from tests.support import (
    cTool, frame, linkExists, makeNamespace, ourEnv, ourTool, requireCommand, requireTun,
    until,
)
from vdetwist.testing import netns
from vdetwist.backends.tap import TUN_DEVICE, checkInterfaceName
from vdetwist.errors import PlugClosed, PlugLost, VdeError
from vdetwist.interfaces import IVdePlug, IVnetPlug
from vdetwist.registry import registry
from vdetwist.testing import FrameCollector

ETH_P_ALL = 3
#: The unprivileged user of the tests that need one.
NOBODY = 65534
#: Frames the tests send carry this EtherType (local experimental), so that
#: anything else on the wire is ignored.
TEST_ETHERTYPE = b"\x88\xb5"


def ours(received: list[bytes]) -> list[bytes]:
    """
    The test's frames among C{received}, tagged (802.1Q) or not.
    """
    return [
        f for f in received
        if f[12:14] == TEST_ETHERTYPE or (f[12:14] == b"\x81\x00" and f[16:18] == TEST_ETHERTYPE)
    ]


def vlanFrame(n: int, size: int, vid: int = 5) -> bytes:
    plain = frame(n, size - 4)
    return plain[:12] + b"\x81\x00" + vid.to_bytes(2, "big") + plain[12:]


class Wire:
    """
    An AF_PACKET socket on one interface in a namespace: the far end of the
    wire for the plug under test.
    """

    def __init__(self, test: TestCase, ifname: str, namespace) -> None:
        with netns.entered(namespace):
            self.socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.socket.bind((ifname, ETH_P_ALL))
        self.socket.setsockopt(263, 8, 1)  # PACKET_AUXDATA, to put VLAN tags back
        self.socket.setblocking(False)
        self.received: list[bytes] = []
        test.addCleanup(self.socket.close)

    def send(self, data: bytes) -> None:
        self.socket.send(data)

    def drain(self) -> list[bytes]:
        while True:
            try:
                data, ancillary, _, address = self.socket.recvmsg(65536, 64)
            except BlockingIOError:
                return ours(self.received)
            if address[2] == 4:  # PACKET_OUTGOING: our own sends
                continue
            for level, kind, aux in ancillary:
                if kind == 8 and int.from_bytes(aux[0:4], "little") & 0x10:
                    tci = aux[16:18][::-1]
                    data = data[:12] + b"\x81\x00" + tci + data[12:]
            self.received.append(data)

    async def expect(self, count: int) -> list[bytes]:
        await until(lambda: len(self.drain()) >= count, f"{count} frames on the wire")
        return ours(self.received)


class Watch:
    """
    Twisted log events, as text, while a test runs.
    """

    def __init__(self, test: TestCase) -> None:
        self.texts: list[str] = []
        globalLogPublisher.addObserver(self)
        test.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event) -> None:
        from twisted.logger import formatEvent

        self.texts.append(formatEvent(event))


class DeviceTestCase(TestCase):
    def setUp(self) -> None:
        requireTun()
        self.ns = makeNamespace(self)

    async def openPlug(self, vnl: str, namespace=None):
        """
        Open C{vnl} with the thread inside the test's namespace, so the
        device is looked up (and created) there.
        """
        with netns.entered(namespace or self.ns):
            opening = registry.open(reactor, vnl)
        plug = await opening
        self.addCleanup(plug.close)
        self.assertTrue(verifyObject(IVdePlug, plug))
        collector = FrameCollector()
        plug.startReceiving(collector)
        return plug, collector

    async def openFails(self, vnl: str, namespace=None) -> VdeError:
        with self.assertRaises(VdeError) as caught:
            await self.openPlug(vnl, namespace)
        return caught.exception

    def ipDetails(self, ifname: str, namespace=None) -> str:
        """
        The tun line of C{ip -d link show}: C{tun type tap pi off vnet_hdr
        off persist off ...}.
        """
        shown = netns.run(namespace or self.ns, ["ip", "-d", "link", "show", ifname],
                          capture_output=True, text=True, check=True).stdout
        found = re.search(r"^\s*(tun type .*?)\s+addrgenmode", shown, re.M)
        self.assertIsNotNone(found, shown)
        return found.group(1)


class TapTests(DeviceTestCase):
    async def test_sameFlagsAsC(self) -> None:
        """
        Our tap:// with offload=off makes the same kind of tap as the C
        vde_plug: a tap, no packet information, no vnet header, not
        persistent.
        """
        name = netns.uniqueName("vtc")
        c = self.ns.popen([cTool("vde_plug"), f"tap://{name}", "null://"],
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(c.wait)
        self.addCleanup(c.kill)
        await until(lambda: linkExists(name, self.ns), f"the C plug's tap {name}")
        theirs = self.ipDetails(name)
        c.kill()

        ourName = netns.uniqueName("vto")
        plug, _ = await self.openPlug(f"tap://{ourName}/offload=off")
        self.assertEqual(self.ipDetails(ourName), theirs)
        self.assertFalse(IVnetPlug.providedBy(plug))
        self.assertIn("tun type tap pi off vnet_hdr off persist off", theirs)
        self.assertEqual(plug.ifname, ourName)
        self.assertTrue(fcntl.fcntl(plug.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)
        plug.close()
        await until(lambda: not linkExists(ourName, self.ns), "the tap to go with the plug")

    async def test_kernelChoosesName(self) -> None:
        """
        tap:// with no name gets a tapN from the kernel.
        """
        plug, _ = await self.openPlug("tap://")
        self.assertRegex(plug.ifname, r"^tap\d+$")
        self.assertTrue(linkExists(plug.ifname, self.ns))

    async def test_framesBothWays(self) -> None:
        """
        Frames the plug sends come out of the interface byte for byte, and
        frames sent on the interface reach the plug, up to the largest VDE
        frame (9234 bytes, tagged) with the MTU raised to 9216.
        """
        name = netns.uniqueName("vtf")
        plug, collector = await self.openPlug(f"tap://{name}")
        netns.setUp(name, self.ns, mtu=9216)
        netns.waitOperational(name, self.ns)
        wire = Wire(self, name, self.ns)
        out = [frame(1, 60), frame(2, 1514), frame(3, 9000), vlanFrame(4, 9234)]
        for f in out:
            plug.send(f)
        self.assertEqual(await wire.expect(len(out)), out)
        self.assertEqual((plug.stats.sent, plug.stats.dropped), (len(out), 0))

        back = [frame(11, 60), frame(12, 1514), frame(13, 9000), vlanFrame(14, 9234)]
        for f in back:
            wire.send(f)
        await until(lambda: len(ours(collector.frames)) >= len(back), "frames at the plug")
        self.assertEqual(ours(collector.frames), back)

    async def test_downAndOversizeDropped(self) -> None:
        """
        Frames the device refuses (interface down), shorter than a header
        or longer than VDE_ETHBUFSIZE are dropped and counted, not raised.
        """
        name = netns.uniqueName("vtd")
        plug, _ = await self.openPlug(f"tap://{name}")
        plug.send(frame(1, 100))  # the interface is down: EIO
        plug.send(b"short")
        plug.send(frame(2, 9235))
        self.assertEqual((plug.stats.sent, plug.stats.dropped), (0, 3))
        self.assertFalse(plug.closed)

    async def test_persistentTap(self) -> None:
        """
        A persistent tap made beforehand (as C{ip tuntap add} does) is
        attached to, works, and outlives the plug; a second plug on it is
        refused with a clear reason.
        """
        name = netns.uniqueName("vtp")
        netns.createTap(name, self.ns)
        self.assertIn("persist on", self.ipDetails(name))
        plug, collector = await self.openPlug(f"tap://{name}")
        netns.setUp(name, self.ns)
        netns.waitOperational(name, self.ns)
        wire = Wire(self, name, self.ns)
        plug.send(frame(1, 500))
        self.assertEqual(await wire.expect(1), [frame(1, 500)])
        wire.send(frame(2, 600))
        await until(lambda: ours(collector.frames), "a frame at the plug")
        self.assertEqual(ours(collector.frames), [frame(2, 600)])

        error = await self.openFails(f"tap://{name}")
        self.assertEqual(error.errno, errno.EBUSY)
        self.assertIn("already open", str(error))

        plug.close()
        self.assertTrue(linkExists(name, self.ns))
        again, _ = await self.openPlug(f"tap://{name}")
        self.assertEqual(again.ifname, name)

    async def test_ipTuntapPersistent(self) -> None:
        """
        A tap made by C{ip tuntap add ... mode tap} is attached to as well.
        """
        name = netns.uniqueName("vti")
        self.ns.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)
        plug, _ = await self.openPlug(f"tap://{name}")
        self.assertIn("tun type tap pi off", self.ipDetails(name))

    async def test_notATap(self) -> None:
        """
        A name taken by another kind of interface is refused, naming it.
        """
        name = netns.uniqueName("vtv")
        netns.createVeth(name, name + "p", self.ns)
        error = await self.openFails(f"tap://{name}")
        self.assertEqual(error.errno, errno.EINVAL)
        self.assertIn(f"{name} exists but is not a tap", str(error))

    async def test_deletedWhileOpen(self) -> None:
        """
        A tap deleted under the plug (C{ip link del}) closes it with a
        logged reason: no traceback, and the descriptor leaves the reactor.
        """
        watch = Watch(self)
        name = netns.uniqueName("vtx")
        plug, collector = await self.openPlug(f"tap://{name}")
        self.ns.run(["ip", "link", "del", name], check=True)
        await until(lambda: collector.reason is not None, "the plug to close")
        self.assertIsInstance(collector.reason.value, PlugLost)
        self.assertIn(f"interface {name} was deleted", str(collector.reason.value))
        self.assertTrue(plug.closed)
        self.assertEqual(plug.fileno(), -1)
        self.assertNotIn(plug, reactor.getReaders())
        self.assertTrue([t for t in watch.texts if "was deleted" in t], watch.texts)
        self.assertFalse([t for t in watch.texts if "Traceback" in t], watch.texts)

    async def test_deletedWhilePaused(self) -> None:
        """
        A paused plug notices the deletion on its next send.
        """
        name = netns.uniqueName("vty")
        plug, collector = await self.openPlug(f"tap://{name}")
        plug.pauseProducing()
        self.ns.run(["ip", "link", "del", name], check=True)
        plug.send(frame(1))
        self.assertEqual(plug.stats.dropped, 1)
        await until(lambda: collector.reason is not None, "the plug to close")
        self.assertIsInstance(collector.reason.value, PlugLost)

    async def test_closeIsClean(self) -> None:
        name = netns.uniqueName("vtz")
        plug, collector = await self.openPlug(f"tap://{name}")
        plug.close()
        plug.close()
        self.assertIsInstance(collector.reason.value, PlugClosed)

    def test_withoutNetAdmin(self) -> None:
        """
        Without CAP_NET_ADMIN the open fails with EPERM, as the C tool's
        does, and the message says what is needed.
        """
        setpriv = requireCommand("setpriv", "util-linux")
        name = netns.uniqueName("vte")
        drop = [setpriv, "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"]
        results = {}
        for who, argv in (("C", [cTool("vde_plug")]), ("ours", ourTool("vde_plug"))):
            results[who] = self.ns.run(
                drop + argv + [f"tap://{name}", "null://"], env=ourEnv(),
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
            )
        self.assertEqual(results["ours"].returncode, results["C"].returncode)
        self.assertEqual(
            results["ours"].stderr.splitlines()[0], results["C"].stderr.splitlines()[0]
        )
        self.assertIn(f"vde_open tap://{name}: Operation not permitted", results["C"].stderr)
        self.assertIn("CAP_NET_ADMIN", results["ours"].stderr)
        self.assertIn(f"ip tuntap add dev {name} mode tap user", results["ours"].stderr)


class UserTapTests(DeviceTestCase):
    """
    The advice of the message for a user without CAP_NET_ADMIN, followed as
    written: a tap made for the user (C{ip tuntap add dev NAME mode tap user
    U}) is opened by that user.  The test's own process opens it, its
    effective user switched for the open only.
    """

    def setUp(self) -> None:
        super().setUp()
        try:
            self.user = pwd.getpwuid(NOBODY).pw_name
        except KeyError:
            raise SkipTest(f"no user with uid {NOBODY}")
        # The user opens the device itself; it is left as it was found.
        mode = stat.S_IMODE(os.stat(TUN_DEVICE).st_mode)
        self.addCleanup(os.chmod, TUN_DEVICE, mode)
        # The backends are found as root (root's own install may not be
        # readable by the user).
        self.assertIn("tap", registry.backends())

    @contextmanager
    def asUser(self) -> Iterator[None]:
        """
        The body runs in the test's namespace with the user's effective uid
        (effective capabilities go with uid 0, and come back with it).
        """
        with netns.entered(self.ns):
            os.seteuid(NOBODY)
            try:
                yield
            finally:
                os.seteuid(0)

    async def openAsUser(self, vnl: str):
        with self.asUser():
            opening = registry.open(reactor, vnl)
        plug = await opening
        self.addCleanup(plug.close)
        return plug

    async def openFailsAsUser(self, vnl: str) -> VdeError:
        with self.assertRaises(VdeError) as caught:
            await self.openAsUser(vnl)
        return caught.exception

    async def test_madeForTheUser(self) -> None:
        name = netns.uniqueName("vtu")
        os.chmod(TUN_DEVICE, 0o600)
        error = await self.openFailsAsUser(f"tap://{name}")
        self.assertEqual(error.errno, errno.EACCES, str(error))
        self.assertIn(f"read-write access to {TUN_DEVICE}", str(error))
        # Read-write for all, as distributions ship it.
        os.chmod(TUN_DEVICE, 0o666)
        error = await self.openFailsAsUser(f"tap://{name}")
        self.assertEqual(error.errno, errno.EPERM)
        advice = f"ip tuntap add dev {name} mode tap user {self.user}"
        self.assertIn(f"'{advice}'", str(error))

        self.ns.run(advice.split(), check=True)
        plug = await self.openAsUser(f"tap://{name}")
        self.assertEqual(plug.ifname, name)
        netns.setUp(name, self.ns)
        netns.waitOperational(name, self.ns)
        wire = Wire(self, name, self.ns)
        plug.send(frame(1, 500))
        self.assertEqual(await wire.expect(1), [frame(1, 500)])


class NameTests(TestCase):
    """
    Names are checked before anything is opened (no root needed).
    """

    async def assertRefused(self, name: str, words: str) -> None:
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, f"tap://{name}")
        self.assertEqual(caught.exception.errno, errno.EINVAL)
        self.assertIn(words, str(caught.exception))
        self.assertIn(repr(name), str(caught.exception))

    async def test_tooLong(self) -> None:
        await self.assertRefused("a" * 16, "too long: 16 bytes, at most 15")

    async def test_badCharacters(self) -> None:
        for name in ("a:b", "a b", "tab\tx"):
            await self.assertRefused(name, "contains")
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, "tap://a/b")
        self.assertEqual(str(caught.exception), "tap://a/b: unknown key: b (valid keys: offload)")

    async def test_badOffload(self) -> None:
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, "tap://a/offload=maybe")
        self.assertIn("offload=maybe: write offload=on or offload=off", str(caught.exception))

    async def test_dots(self) -> None:
        await self.assertRefused("..", "not allowed")

    def test_checker(self) -> None:
        self.assertEqual(checkInterfaceName("a" * 15), b"a" * 15)
        self.assertEqual(checkInterfaceName("tap%d"), b"tap%d")


class MacvtapTests(DeviceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.lower = netns.uniqueName("vml")
        netns.createVeth(self.lower, self.lower + "p", self.ns)
        self.name = netns.uniqueName("vmt")
        try:
            netns.createMacvtap(self.name, self.lower, self.ns)
        except NetlinkError as e:
            raise SkipTest(f"the kernel cannot make a macvtap (CONFIG_MACVTAP?): {e}")
        for ifname in (self.lower, self.lower + "p", self.name):
            netns.setUp(ifname, self.ns)

    async def test_framesBothWays(self) -> None:
        """
        Frames written to the macvtap leave through its lower device;
        frames for its MAC arriving there are read by the plug, unchanged
        (no virtio-net header: TUNSETIFF cleared it).
        """
        plug, collector = await self.openPlug(f"macvtap://{self.name}")
        self.assertEqual(plug.ifindex, netns.ifindex(self.name, self.ns))
        for ifname in (self.lower, self.lower + "p", self.name):
            netns.waitOperational(ifname, self.ns)
        wire = Wire(self, self.lower + "p", self.ns)
        mac = netns.macAddress(self.name, self.ns)
        out = [frame(1, 60), frame(2, 1514)]
        for f in out:
            plug.send(f)
        self.assertEqual(await wire.expect(2), out)
        back = [frame(3, 60, dst=mac), frame(4, 1514, dst=mac)]
        for f in back:
            wire.send(f)
        await until(lambda: len(ours(collector.frames)) >= 2, "frames at the plug")
        self.assertEqual(ours(collector.frames), back)

    async def test_deleted(self) -> None:
        """
        The kernel gives a deleted macvtap's descriptor no sign; the plug
        learns it from link notifications and closes.
        """
        watch = Watch(self)
        plug, collector = await self.openPlug(f"macvtap://{self.name}")
        netns.removeLink(self.name, self.ns)
        await until(lambda: collector.reason is not None, "the plug to close")
        self.assertIsInstance(collector.reason.value, PlugLost)
        self.assertIn(f"interface {self.name} was deleted", str(collector.reason.value))
        self.assertNotIn(plug.watcher, reactor.getReaders())
        self.assertTrue([t for t in watch.texts if "was deleted" in t])

    async def test_errors(self) -> None:
        error = await self.openFails(f"macvtap://{self.lower}")
        self.assertIn(f"{self.lower} is not a macvtap", str(error))
        error = await self.openFails("macvtap://vtnosuch0")
        self.assertEqual(error.errno, errno.ENODEV)
        self.assertIn("no interface named 'vtnosuch0'", str(error))


class PcapTests(DeviceTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.a = netns.uniqueName("vpa")
        self.b = self.a + "p"
        netns.createVeth(self.a, self.b, self.ns)
        netns.setUp(self.a, self.ns)
        netns.setUp(self.b, self.ns)
        netns.waitOperational(self.a, self.ns)
        netns.waitOperational(self.b, self.ns)

    async def test_captureAndInject(self) -> None:
        """
        pcap:// on one end of a veth sees what is sent on the other (VLAN
        tags kept), and what it injects arrives there; its own injected
        frames are not captured back.
        """
        plug, collector = await self.openPlug(f"pcap://{self.a}")
        wire = Wire(self, self.b, self.ns)
        sent = [frame(1, 60), frame(2, 1514), vlanFrame(3, 1518, vid=42),
                frame(4, 200, dst=b"\x02\x00\x00\x00\x00\x99")]
        for f in sent:
            wire.send(f)
        await until(lambda: len(ours(collector.frames)) >= len(sent), "captured frames")
        self.assertEqual(ours(collector.frames), sent)

        injected = [frame(11, 60), frame(12, 1514), vlanFrame(13, 1000, vid=7)]
        for f in injected:
            plug.send(f)
        self.assertEqual(await wire.expect(len(injected)), injected)
        await deferLater(reactor, 0.1)
        self.assertEqual(ours(collector.frames), sent)
        self.assertEqual(plug.stats.sent, len(injected))

    async def test_promiscuous(self) -> None:
        """
        The interface is promiscuous while the plug is open, and not after.
        """
        plug, _ = await self.openPlug(f"pcap://{self.a}")
        self.assertIn("promiscuity 1", self.linkText(self.a))
        plug.close()
        self.assertIn("promiscuity 0", self.linkText(self.a))

    def linkText(self, ifname: str) -> str:
        return self.ns.run(["ip", "-d", "link", "show", ifname],
                           capture_output=True, text=True, check=True).stdout

    async def test_unknownInterface(self) -> None:
        error = await self.openFails("pcap://vtnosuch0")
        self.assertEqual(error.errno, errno.ENODEV)
        self.assertIn("no interface named 'vtnosuch0'", str(error))

    async def test_downThenUp(self) -> None:
        """
        An interface going down drops injected frames (counted) but keeps
        the plug; when it is back up, frames flow again.
        """
        plug, collector = await self.openPlug(f"pcap://{self.a}")
        netns.setUp(self.a, self.ns, up=False)
        await deferLater(reactor, 0.1)
        plug.send(frame(1))
        self.assertEqual(plug.stats.dropped, 1)
        self.assertFalse(plug.closed)
        netns.setUp(self.a, self.ns)
        netns.waitOperational(self.a, self.ns)
        netns.waitOperational(self.b, self.ns)
        wire = Wire(self, self.b, self.ns)
        wire.send(frame(2))
        await until(lambda: ours(collector.frames), "a frame after up")
        self.assertEqual(ours(collector.frames), [frame(2)])
        self.assertIsNone(collector.reason)

    async def test_deleted(self) -> None:
        watch = Watch(self)
        plug, collector = await self.openPlug(f"pcap://{self.a}")
        netns.removeLink(self.a, self.ns)
        await until(lambda: collector.reason is not None, "the plug to close")
        self.assertIsInstance(collector.reason.value, PlugLost)
        self.assertIn(f"interface {self.a} was deleted", str(collector.reason.value))
        self.assertNotIn(plug, reactor.getReaders())
        self.assertFalse([t for t in watch.texts if "Traceback" in t], watch.texts)
