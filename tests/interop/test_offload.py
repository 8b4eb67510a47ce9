"""
Offloading taps end to end: two network namespaces joined by our
C{vde_plug tap://A tap://B} (offloads on, the default), TCP and UDP over
IPv4 and IPv6 (and IPv4 over an 802.1Q VLAN), 100 MiB each way checked by
sha256, with the super-frames crossing the plug in one piece; and the vnet
paths of the tap plug in-process: lying headers dropped and counted, plain
receivers given segmented frames.
"""

from __future__ import annotations

import socket
import subprocess
import time

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support import (
    makeNamespace, nsSocket, ourEnv, ourTool, requireTun, stopProcess, until,
)
from tests.interop.hashtransfer import assertHashedTransfer
from tests.unit.test_gso import payloadOf, superFrame
from vdetwist.testing import netns
from vdetwist._transport.device import IFF_VNET_HDR, TAP_FLAGS, WRITE_OFFLOADS
from vdetwist._transport.vnet import sendSegments, sendVnetFrame, vnetDelivery
from vdetwist.backends.tap import openTap, tapPlugFromDescriptor
from vdetwist.cable import Cable
from vdetwist.interfaces import IFrameReceiver, IVnetPlug, IVnetReceiver
from vdetwist.registry import registry
from vdetwist.testing import FrameCollector
from vdetwist.wire.checksum import pseudo4, verify
from vdetwist.wire.gso import BadVnetFrame, segment
from vdetwist.wire.vnethdr import (
    GSO_TCPV4, PLAIN, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, VnetHeader,
)

IFF_LOWER_UP = 0x10000
SIZE = 100 * 1024 * 1024
SEED = 11
PORT = 7711
UDP_SEGMENT = 103



class OffloadTrafficTests(TestCase):
    """
    Two namespaces joined by our vde_plug holding a tap in each.
    """

    timeout = 400
    #: Whether the super-frames must cross the plug in one piece.
    superFrames = True

    def setUp(self) -> None:
        requireTun()
        cable = makeNamespace(self)
        self.hosts = [makeNamespace(self, ipv6=True) for _ in range(2)]
        self.taps = [netns.uniqueName("vto"), netns.uniqueName("vto")]
        for tap in self.taps:
            netns.createTap(tap, cable)
            netns.setUp(tap, cable)
        self.plug = cable.popen(
            [*ourTool("vde_plug"), *(f"tap://{tap}" for tap in self.taps)], env=ourEnv(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.addCleanup(stopProcess, self.plug)
        deadline = time.monotonic() + 30
        while not all(netns.linkInfo(t, cable)["flags"] & IFF_LOWER_UP for t in self.taps):
            self.assertIsNone(self.plug.poll(), "vde_plug ended")
            self.assertLess(time.monotonic(), deadline, "vde_plug did not open its taps")
            time.sleep(0.02)
        for i, (tap, host) in enumerate(zip(self.taps, self.hosts)):
            netns.moveLink(tap, host, cable)
            netns.setUp(tap, host)
            ifname = self.configure(host, tap)
            host.run(["ip", "addr", "add", f"10.78.0.{i + 1}/24", "dev", ifname], check=True)
            host.run(["ip", "addr", "add", f"fd00:78::{i + 1}/64", "dev", ifname, "nodad"],
                     check=True)
            netns.setUp(ifname, host)
            netns.waitOperational(ifname, host)

    def configure(self, host: netns.Namespace, tap: str) -> str:
        """
        Return the interface of C{host} that gets the addresses: the tap.
        """
        return tap

    def framesWritten(self) -> int:
        """
        Frames the plug wrote into the receiving tap so far.
        """
        with netns.routing(self.hosts[1]) as ipr:
            (link,) = ipr.get_links(ipr.link_lookup(ifname=self.taps[1])[0])
        return dict(link.get_attr("IFLA_STATS64"))["rx_packets"]

    def transfer(self, proto: str, address: str) -> None:
        """
        L{SIZE} bytes from the first namespace to C{address} in the second
        arrive byte for byte; with L{superFrames}, in far fewer frames than
        MTU-sized segments would take.
        """
        before = self.framesWritten()
        assertHashedTransfer(self, self.hosts, proto, address, PORT, SIZE, SEED, timeout=300)
        written = self.framesWritten() - before
        if self.superFrames:
            self.assertLess(written, SIZE // 1400 // 4, "super-frames were segmented on the way")
        if self.plug.poll() is not None:
            self.fail(f"vde_plug ended: {self.plug.communicate()[1].decode(errors='replace')}")

    def test_tcp4(self) -> None:
        self.transfer("tcp", "10.78.0.2")

    def test_tcp6(self) -> None:
        self.transfer("tcp", "fd00:78::2")

    def test_udp4(self) -> None:
        self.transfer("udp", "10.78.0.2")

    def test_udp6(self) -> None:
        self.transfer("udp", "fd00:78::2")



class TaggedTrafficTests(OffloadTrafficTests):
    """
    The same with every frame on the taps tagged (802.1Q, VLAN 5): the
    hosts' addresses are on VLAN interfaces over the taps.  (Software
    segmentation of tagged super-frames is compared with the kernel's in
    L{tests.test_gso}.)  Whether the kernel offloads to a VLAN interface
    over a tap varies, so only the bytes are checked.
    """

    superFrames = False

    def configure(self, host: netns.Namespace, tap: str) -> str:
        made = host.run(["ip", "link", "add", "link", tap, "name", "v5", "type", "vlan",
                         "id", "5"], capture_output=True, text=True)
        if made.returncode:
            raise SkipTest(f"the kernel makes no 802.1Q interfaces (CONFIG_VLAN_8021Q):"
                           f" {made.stderr.strip()}")
        return "v5"


@implementer(IVnetReceiver)
class VnetCollector(FrameCollector):
    def __init__(self) -> None:
        super().__init__()
        self.vnetFrames: list[bytes] = []

    def vnetFrameReceived(self, frame: bytes) -> None:
        self.vnetFrames.append(frame)


class VnetHelperTests(TestCase):
    """
    L{vdetwist._transport.vnet}, in memory.
    """

    def test_deliveryToVnetReceiver(self) -> None:
        receiver = VnetCollector()
        deliver = vnetDelivery(receiver, self.fail)
        frame = superFrame(payloadOf(5000), 1448)
        deliver(frame)
        self.assertEqual(receiver.vnetFrames, [frame])
        self.assertEqual(receiver.frames, [])

    def test_deliveryToPlainReceiver(self) -> None:
        """
        A plain receiver gets the segments; a lying frame is reported, not
        delivered.
        """
        receiver = FrameCollector()
        errors: list[BadVnetFrame] = []
        deliver = vnetDelivery(receiver, errors.append)
        frame = superFrame(payloadOf(5000), 1448)
        deliver(frame)
        deliver(PLAIN + b"x" * 60)
        deliver(VnetHeader.unpack(frame)._replace(gsoSize=0).pack() + frame[10:])
        self.assertEqual(receiver.frames, segment(frame) + [b"x" * 60])
        self.assertEqual(len(errors), 1)

    def test_send(self) -> None:
        """
        A vnet frame goes out as it is when the far end takes its offloads,
        else segmented.
        """
        frame = superFrame(payloadOf(5000), 1448)
        written: list[bytes] = []
        sent: list[bytes] = []
        errors: list[BadVnetFrame] = []
        sendVnetFrame(frame, TUN_F_CSUM | TUN_F_TSO4, written.append, sent.append, errors.append)
        self.assertEqual((written, sent), ([frame], []))
        sendVnetFrame(frame, TUN_F_CSUM | TUN_F_TSO6, written.append, sent.append, errors.append)
        self.assertEqual(sent, segment(frame))
        sendVnetFrame(frame[:4], TUN_F_CSUM, written.append, sent.append, errors.append)
        sendSegments(frame[:40], sent.append, errors.append)
        lie = frame[:24] + b"\x45\x00\x00\x00\x00\x00\x00\x00\x40\x11" + frame[34:]
        sendVnetFrame(lie, TUN_F_CSUM | TUN_F_TSO4, written.append, sent.append, errors.append)
        self.assertEqual(len(errors), 3)
        self.assertIn("TCPv4 super-frame carries IPv4 protocol 17", str(errors[-1]))
        self.assertEqual(len(written), 1)

    def test_sendPartialChecksum(self) -> None:
        """
        A frame with a partial checksum goes as it is to a far end that
        takes those, completed to one that does not.
        """
        frame = superFrame(payloadOf(500), 1448)
        frame = VnetHeader.unpack(frame)._replace(gsoType=0, gsoSize=0).pack() + frame[10:]
        written: list[bytes] = []
        sent: list[bytes] = []
        sendVnetFrame(frame, TUN_F_CSUM, written.append, sent.append, self.fail)
        sendVnetFrame(frame, 0, written.append, sent.append, self.fail)
        self.assertEqual((written, sent), ([frame], segment(frame)))


class TapVnetTests(TestCase):
    """
    The vnet side of tap:// plugs, in-process, in a namespace of their own.
    """

    def setUp(self) -> None:
        requireTun()
        self.ns = makeNamespace(self)

    async def openPlug(self, vnl: str):
        with netns.entered(self.ns):
            plug = await registry.open(reactor, vnl)
        self.addCleanup(plug.close)
        return plug

    async def test_provides(self) -> None:
        """
        An offloading tap is an IVnetPlug accepting TSO and USO on writes;
        one with offload=off is not.
        """
        plug = await self.openPlug(f"tap://{netns.uniqueName('vtv')}")
        verifyObject(IVnetPlug, plug)
        self.assertEqual(plug.offloads & (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6),
                         TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        self.assertTrue(plug.offloads & TUN_F_USO4, "Linux >= 6.2 takes USO")
        plain = await self.openPlug(f"tap://{netns.uniqueName('vtv')}/offload=off")
        self.assertFalse(IVnetPlug.providedBy(plain))

    def test_fromDescriptor(self) -> None:
        """
        A tap descriptor opened elsewhere with the virtio-net header gives a
        vnet plug, writing the offloads its opener says the kernel took (by
        default those every kernel takes); one without, a plain plug.
        """
        for flags, vnet in ((TAP_FLAGS | IFF_VNET_HDR, True), (TAP_FLAGS, False)):
            for offloads in ((), (TUN_F_CSUM | TUN_F_USO4,)):
                with netns.entered(self.ns):
                    fd, name = openTap("", flags)
                plug = tapPlugFromDescriptor(reactor, fd, "passed", *offloads)
                self.addCleanup(plug.close)
                self.assertEqual(IVnetPlug.providedBy(plug), vnet)
                expected = (offloads or (WRITE_OFFLOADS,))[0] if vnet else 0
                self.assertEqual(plug.offloads, expected)

    async def test_lyingHeadersDropped(self) -> None:
        """
        Vnet frames whose headers lie, sent into an offloading tap (the kernel
        refuses them) and into one without offloads (the segmentation does),
        are dropped and counted; a good super-frame after them still goes.
        """
        good = superFrame(payloadOf(5000), 1448)
        header = VnetHeader.unpack(good)
        lies = [
            header._replace(gsoSize=0).pack() + good[10:],
            header._replace(gsoType=0x42).pack() + good[10:],
            header._replace(csumStart=60000).pack() + good[10:],
            VnetHeader(0, GSO_TCPV4, 0, 1448, 0, 0).pack() + good[10:22] + b"\x86\xdd" + good[24:],
            VnetHeader(0, GSO_TCPV4, 0, 1448, 0, 0).pack() + good[10:24] + b"\x86" + good[25:],
        ]
        for suffix in ("", "/offload=off"):
            name = netns.uniqueName("vtv")
            plug = await self.openPlug(f"tap://{name}{suffix}")
            netns.setUp(name, self.ns)
            for lie in lies:
                plug.sendVnet(lie)
            self.assertEqual((plug.stats.dropped, plug.stats.sent), (len(lies), 0), suffix)
            plug.sendVnet(good)
            self.assertEqual(plug.stats.sent, 1 if not suffix else len(segment(good)), suffix)

    async def test_cableCarriesVnet(self) -> None:
        """
        A cable between two offloading taps hands each plug's vnet frames to
        the other's sendVnet; with one plain plug it does not.
        """
        a = await self.openPlug(f"tap://{netns.uniqueName('vtv')}")
        b = await self.openPlug(f"tap://{netns.uniqueName('vtv')}")
        c = await self.openPlug(f"tap://{netns.uniqueName('vtv')}/offload=off")
        Cable(a, b)
        self.assertTrue(IVnetReceiver.providedBy(a.receiver))
        self.assertEqual(a.receiver.vnetFrameReceived, b.sendVnet)
        d = await self.openPlug(f"tap://{netns.uniqueName('vtv')}")
        Cable(c, d)
        self.assertFalse(IVnetReceiver.providedBy(d.receiver))
        self.assertTrue(IFrameReceiver.providedBy(d.receiver))

    async def test_plainReceiverGetsSegments(self) -> None:
        """
        A super-frame the kernel hands an offloading tap reaches a plain
        receiver as MTU datagrams with complete checksums: a 30000-byte
        UDP_SEGMENT send (USO) from the namespace.
        """
        name = netns.uniqueName("vtv")
        plug = await self.openPlug(f"tap://{name}")
        collector = FrameCollector()
        plug.startReceiving(collector)
        self.ns.run(["ip", "addr", "add", "10.78.9.1/24", "dev", name], check=True)
        self.ns.run(["ip", "neigh", "add", "10.78.9.2", "lladdr", "02:00:00:00:09:02",
                     "dev", name, "nud", "permanent"], check=True)
        netns.setUp(name, self.ns)
        netns.waitOperational(name, self.ns)
        sender = nsSocket(self.ns.name, socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
        payload = payloadOf(30000)
        sender.sendto(payload, ("10.78.9.2", 9))
        datagrams = lambda: [f for f in collector.frames if f[12:14] == b"\x08\x00"
                             and f[23] == 17]
        await until(lambda: len(datagrams()) >= 30, "30 datagrams")
        self.assertEqual(plug.stats.received, 1, "one super-frame read")
        data = b""
        for frame in datagrams():
            self.assertLessEqual(len(frame), 14 + 20 + 8 + 1000)
            self.assertTrue(verify(frame[14:34]))
            self.assertTrue(verify(frame[34:], pseudo4(frame[26:30], frame[30:34], 17,
                                                       len(frame) - 34)))
            data += frame[42:]
        self.assertEqual(data, payload)
        self.assertEqual(plug.stats.discarded, 0)
