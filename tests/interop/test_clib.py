"""
Tests for C{clib://VNL}: VNLs opened by the installed C libvdeplug through
ctypes, with the data descriptor in the reactor.

The reference use is last: libslirp (through C{clib://slirp://}) and
vdetwist's pure-Python C{slirp://} are given the same synthetic guest frames,
in this process, and their answers are compared field by field where the
spec (slirp-engine.md, "Defaults to match") says they must agree.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Optional

from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import frame, settle, tmpdir, until
from tests.interop.test_slirp_interop import withoutIdent
from vdetwist.backends import clib
from vdetwist.errors import PlugClosed, PlugLost, VdeError
from vdetwist.registry import OpenArgs, decorate, registry
from vdetwist.slirp import packets as P
from vdetwist.slirp.dhcp import DISCOVER, OFFER
from vdetwist.slirp.testing import (
    DNS, GATEWAY, GATEWAY_MAC, GUEST_IP, Guest, decode, decodeDhcp, describe,
)
from vdetwist.testing import FrameCollector


def requireLibrary() -> None:
    try:
        clib.loadLibrary()
    except VdeError as e:
        raise SkipTest(f"the C libvdeplug is not installed ({e.message}); "
                       f"apt-get install libvdeplug2")


class LibraryTestCase(TestCase):
    timeout = 60

    def setUp(self):
        requireLibrary()

    async def open(self, vnl: str, description: str = "vdeplug:", args: OpenArgs = OpenArgs()):
        plug = await registry.open(reactor, vnl, description, args)
        self.addCleanup(plug.close)
        collector = FrameCollector()
        plug.startReceiving(collector)
        return plug, collector


class DescriptionTests(TestCase):
    """
    L{clib.undecorated} undoes the registry's decoration, which the C
    library would add a second time.
    """

    def test_decorated(self):
        self.assertEqual(clib.undecorated(decorate("vdeplug:")), "vdeplug:")
        self.assertEqual(clib.undecorated(decorate("QEMU user=x")), "QEMU user=x")

    def test_notDecorated(self):
        self.assertEqual(clib.undecorated("vdeplug:"), "vdeplug:")
        self.assertEqual(clib.undecorated("a user=root pid=1"), "a user=root pid=1")

    def test_cutDecoration(self):
        """
        Cut at 127 bytes within the decoration: stripped all the same.
        """
        long = "d" * 115
        self.assertEqual(clib.undecorated(decorate(long)), long)

    def test_decorationCutAway(self):
        """
        Nothing of the decoration left: unchanged (the C library's own cut
        drops what it appends).
        """
        long = "d" * 130
        self.assertEqual(clib.undecorated(decorate(long)), long[:127])


class MissingLibraryTests(TestCase):
    def test_loadFails(self):
        e = self.assertRaises(VdeError, clib.loadLibrary, "/nonexistent/libvdeplug.so.2")
        self.assertEqual(e.errno, errno.ELIBACC)
        self.assertIn("apt-get install libvdeplug2", str(e))

    async def test_openFails(self):
        """
        Without the library, opening C{clib://} fails with a clear
        L{VdeError}; the dropin and the registry still work.
        """
        self.patch(clib, "LIBRARY", "/nonexistent/libvdeplug.so.2")
        self.patch(clib, "_library", None)
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, "clib://null://")
        self.assertEqual(caught.exception.errno, errno.ELIBACC)
        self.assertIn("apt-get install libvdeplug2", str(caught.exception))
        self.assertIn("clib://null://", str(caught.exception))


class OpenTests(LibraryTestCase):
    async def test_null(self):
        plug, collector = await self.open("clib://null://")
        self.assertIsInstance(plug, clib.CLibPlug)
        self.assertEqual(plug.description, "clib://null://")
        self.assertEqual(plug.module, "null")
        plug.send(frame(1))
        self.assertEqual(plug.stats.sent, 1)
        await settle(0.05)
        self.assertEqual(collector.frames, [])
        plug.close()
        collector.reason.trap(PlugClosed)
        self.assertIsNone(plug.conn)
        plug.close()  # once only
        plug.send(frame(2))
        self.assertEqual(plug.stats.dropped, 1)

    async def test_unknownModule(self):
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, "clib://nosuch://")
        e = caught.exception
        self.assertEqual(e.errno, errno.EPROTONOSUPPORT)
        self.assertIn("clib://nosuch://", str(e))
        self.assertIn("libvdeplug_nosuch.so", str(e))

    async def test_noSwitch(self):
        path = os.path.join(tmpdir(self, "vtclib-"), "absent")
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, f"clib://vde://{path}")
        self.assertEqual(caught.exception.errno, errno.ENOENT)
        self.assertIn(path, str(caught.exception))

    async def test_commandEnds(self):
        """
        C{cmd://}: the command ending closes the plug with L{PlugLost}
        (where the C module would leave a dead link).
        """
        plug, collector = await self.open("clib://cmd://true")
        await until(lambda: collector.reason is not None, "the plug to close")
        collector.reason.trap(PlugLost)
        self.assertIn("the command ended", collector.reason.getErrorMessage())

    async def test_cancel(self):
        """
        Cancelling an open that waits for a switch that never answers fails
        at once with L{CancelledError}.
        """
        directory = tmpdir(self, "vtclib-")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(os.path.join(directory, "ctl"))
        listener.listen(1)
        opening = registry.open(reactor, f"clib://vde://{directory}")
        await settle(0.2)
        opening.cancel()
        with self.assertRaises(CancelledError):
            await opening
        # Let the C client give up: it sees EOF instead of an answer.
        listener.setblocking(False)
        try:
            accepted, _ = listener.accept()
            accepted.close()
        except BlockingIOError:
            pass


class SwitchTests(LibraryTestCase):
    """
    The C C{vde://} client on vdetwist's own switch, served by this reactor
    (which is why C{vde_open} runs in a thread).
    """

    async def setUpSwitch(self):
        self.path = os.path.join(tmpdir(self, "vtclib-"), "sw")
        self.switch, _ = await self.open(f"switch://{self.path}")
        self.theirs, self.theirFrames = await self.open(f"clib://vde://{self.path}")
        self.ours, self.ourFrames = await self.open(f"vde://{self.path}")

    async def test_bothWays(self):
        await self.setUpSwitch()
        a = b"\x02\x00\x00\x00\x00\x0a"
        b = b"\x02\x00\x00\x00\x00\x0b"
        for n in range(5):
            self.theirs.send(frame(n, 60 + n * 500, src=a, dst=b))
            self.ours.send(frame(100 + n, 1500, src=b, dst=a))
        await until(lambda: len(self.theirFrames.frames) == 5 and len(self.ourFrames.frames) == 5,
                    "frames both ways")
        self.assertEqual(self.ourFrames.frames, [frame(n, 60 + n * 500, src=a, dst=b)
                                                 for n in range(5)])
        self.assertEqual(self.theirFrames.frames, [frame(100 + n, 1500, src=b, dst=a)
                                                   for n in range(5)])
        self.assertEqual((self.theirs.stats.sent, self.theirs.stats.received), (5, 5))

    async def test_jumbo(self):
        await self.setUpSwitch()
        big = frame(7, 9234)
        self.ours.send(big)
        await until(lambda: self.theirFrames.frames, "a jumbo frame")
        self.assertEqual(self.theirFrames.frames, [big])

    async def test_descriptionOnce(self):
        """
        The switch sees the description decorated once, as from the C tools.
        """
        await self.setUpSwitch()
        descriptions = [e.description for e in self.switch.server.endpoints.values()]
        self.assertEqual(descriptions, [decorate("vdeplug:")] * 2)

    async def test_pause(self):
        await self.setUpSwitch()
        self.theirs.pauseProducing()
        self.ours.send(frame(1))
        await settle(0.1)
        self.assertEqual(self.theirFrames.frames, [])
        self.theirs.resumeProducing()
        await until(lambda: self.theirFrames.frames, "the frame held back")
        self.assertEqual(self.theirFrames.frames, [frame(1)])

    async def test_switchGoes(self):
        """
        The switch closing (the control connection hanging up) closes the
        plug with L{PlugLost}, even while it is paused.
        """
        await self.setUpSwitch()
        self.theirs.pauseProducing()
        self.switch.close()
        await until(lambda: self.theirFrames.reason is not None, "the plug to close")
        self.theirFrames.reason.trap(PlugLost)
        self.assertIn("went away", self.theirFrames.reason.getErrorMessage())
        self.assertTrue(self.theirs.closed)


class SlirpReferenceTests(LibraryTestCase):
    """
    libslirp (C{clib://slirp://}) against the Python engine (C{slirp://}):
    the same guest frames, the answers compared.

    Differences found: one, in how the guest's MAC is found (see
    L{test_pingFromUnknownGuest}): libslirp ARPs for a guest it has no entry
    for before answering it, the Python engine learns the MAC from the
    guest's IPv4 frames.  Otherwise both answer byte for byte alike, the
    IPv4 identification included (each counts from 0 in a fresh instance);
    only the identification and header checksum are allowed to differ
    (L{withoutIdent}), as they depend on what each sent before.  Both
    leave the DHCP broadcast flag at 0 in the OFFER, send it to
    ff:ff:ff:ff:ff:ff / 255.255.255.255 with TOS 0x10, and pad the ARP reply
    to 60 bytes.  Options 15, 66 and 119 are absent from both by default
    (they appear only when configured).
    """

    async def setUp(self):
        super().setUp()
        try:
            self.c, self.cFrames = await self.open("clib://slirp://")
        except VdeError as e:
            if e.errno == errno.EPROTONOSUPPORT:
                raise SkipTest("libvdeplug_slirp is not installed "
                               "(apt-get install libvdeplug-slirp)")
            raise
        self.py, self.pyFrames = await self.open("slirp://")
        self.guest = Guest()

    async def both(self, request: bytes, expect: int = 1, expectOurs: Optional[int] = None):
        """
        The answers of each to C{request}: (C's, ours), C{expect} frames
        from each (from ours C{expectOurs}, when given).
        """
        if expectOurs is None:
            expectOurs = expect
        self.cFrames.frames.clear()
        self.pyFrames.frames.clear()
        self.c.send(request)
        self.py.send(request)
        await until(lambda: len(self.cFrames.frames) >= expect
                    and len(self.pyFrames.frames) >= expectOurs, "both answers", timeout=5)
        await settle(0.05)  # anything extra?
        theirs, ours = list(self.cFrames.frames), list(self.pyFrames.frames)
        self.assertEqual(len(theirs), expect, [describe(decode(f)) for f in theirs])
        self.assertEqual(len(ours), expectOurs, [describe(decode(f)) for f in ours])
        return theirs, ours

    def assertEchoReply(self, raw: bytes, ident: int, seq: int, data: bytes) -> None:
        f = decode(raw)  # checksums verified
        self.assertEqual((f.proto, f.icmptype, f.icmpcode), ("icmp", 0, 0), describe(f))
        self.assertEqual((f.id, f.seq, f.data), (ident, seq, data))
        self.assertEqual((f.ipsrc, f.ipdst), (GATEWAY, GUEST_IP))
        self.assertEqual((f.src, f.dst), (GATEWAY_MAC, self.guest.mac))

    async def test_dhcpDiscover(self):
        """
        DISCOVER: both OFFER 10.0.2.15 with the options of the spec (53, 54,
        1, 3, 6, 51, 12) and the same values.
        """
        guest = Guest(ip=P.IP4_ANY)
        (theirs,), (ours,) = await self.both(guest.dhcp(DISCOVER, xid=0xC11B))
        for raw in (theirs, ours):
            f = decode(raw)
            self.assertEqual((f.proto, f.sport, f.dport), ("udp", 67, 68))
            self.assertEqual((f.src, f.ipsrc), (GATEWAY_MAC, GATEWAY))
            self.assertEqual((f.dst, f.ipdst), (P.BROADCAST_MAC, P.IP4_BROADCAST))
            dhcp = decodeDhcp(f)
            self.assertEqual((dhcp.op, dhcp.type, dhcp.xid), (2, OFFER, 0xC11B))
            self.assertEqual((dhcp.yiaddr, dhcp.siaddr, dhcp.chaddr),
                             (GUEST_IP, GATEWAY, guest.mac))
            self.assertEqual(dhcp.options[54], GATEWAY)
            self.assertEqual(dhcp.options[1], bytes([255, 255, 255, 0]))
            self.assertEqual(dhcp.options[3], GATEWAY)
            self.assertEqual(dhcp.options[6], DNS)
            self.assertEqual(dhcp.options[51], (86400).to_bytes(4, "big"))
            self.assertEqual(dhcp.options[12], b"slirp")
        c, py = decodeDhcp(decode(theirs)), decodeDhcp(decode(ours))
        self.assertEqual(py.options, c.options)
        self.assertEqual(list(py.options), list(c.options), "option order")
        self.assertEqual((py.flags, py.ciaddr, py.file), (c.flags, c.ciaddr, c.file))
        self.assertEqual(withoutIdent(ours), withoutIdent(theirs))

    async def test_arpGateway(self):
        """
        ARP for the gateway: the same reply bytes.
        """
        (theirs,), (ours,) = await self.both(self.guest.arpRequest(GATEWAY))
        f = decode(theirs)
        self.assertEqual((f.proto, f.op, f.sha, f.spa, f.tha, f.tpa),
                         ("arp", 2, GATEWAY_MAC, GATEWAY, self.guest.mac, GUEST_IP))
        self.assertEqual(ours, theirs)

    async def test_pingGateway(self):
        """
        ICMP echo to 10.0.2.2 from a guest that has ARPed the gateway: both
        reply with the same identifier, sequence and payload (and the same
        bytes apart from the IPv4 identification and checksum).
        """
        await self.both(self.guest.arpRequest(GATEWAY))
        data = bytes(range(56))
        (theirs,), (ours,) = await self.both(
            self.guest.ping(GATEWAY, ident=0x4242, seq=17, data=data))
        self.assertEchoReply(theirs, 0x4242, 17, data)
        self.assertEchoReply(ours, 0x4242, 17, data)
        c, py = decode(theirs), decode(ours)
        self.assertEqual((py.ttl, py.tos), (c.ttl, c.tos))
        self.assertEqual(withoutIdent(ours), withoutIdent(theirs))

    async def test_pingFromUnknownGuest(self):
        """
        A difference: an echo request from a guest neither has an ARP entry
        for.  libslirp first asks for the guest's MAC (ARP request from the
        gateway) and replies once the guest answers; the Python engine
        learns the MAC from the request's Ethernet source (a guest address
        inside the slirp network) and replies at once.  The replies are the
        same.
        """
        data = b"unknown guest"
        (theirs,), (ours,) = await self.both(
            self.guest.ping(GATEWAY, ident=0x4243, seq=1, data=data))
        f = decode(theirs)
        self.assertEqual((f.proto, f.op, f.sha, f.spa, f.tpa, f.dst),
                         ("arp", 1, GATEWAY_MAC, GATEWAY, GUEST_IP, P.BROADCAST_MAC))
        self.assertEchoReply(ours, 0x4243, 1, data)
        (theirs,), () = await self.both(self.guest.arpReply(GATEWAY, GATEWAY_MAC),
                                        expectOurs=0)
        self.assertEchoReply(theirs, 0x4243, 1, data)
        self.assertEqual(withoutIdent(ours), withoutIdent(theirs))
