"""
The vde2 connection protocol on real sockets, against the C tools: our
C{vde://} client on the C C{vde_switch}, C C{vde_plug} clients on our
C{switch://}, C{hub://} and vde_switch-flavoured L{VdeServer}, our client on
our server, malformed and hostile clients, and (as root) two network
namespaces pinging each other through our switch.

Our servers run in the test's reactor; the C tools are processes whose
stdin takes and whose stdout gives the VDE stream encoding, decoded by
reader threads.  Switch directories are made in /tmp (not under trial's
working directory) because unix socket paths are limited to 107 bytes.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time
from typing import Optional, Sequence

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from tests.support import (
    DATA_TYPE, TIMEOUT, CSwitch, LogCapture, StreamProcess, cPlug, cTool, describeAll,
    isListening, makeNamespace, makeUser, ourPlug, ping, requireRoot, requireTun, settle, tmpdir,
    until, userName,
)
from vdetwist.testing import netns
from vdetwist.errors import PlugClosed, PlugLost, VdeError
from vdetwist.interfaces import IVdeClient, IVdeServer
from vdetwist.node import MacTable, Node, SwitchEngine, TrunkSwitchEngine
from vdetwist.plug import VDE_ETHBUFSIZE
from vdetwist.registry import registry
from vdetwist.testing import FrameCollector, MemoryPlug
from vdetwist.vde2 import protocol
from vdetwist.vde2.client import connectVde
from vdetwist.vde2.interpreter import VdeConsole
from vdetwist.vde2.server import VdeServer

BROADCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([0x02, 0x00, 0x00, 0x00, 0x00, n])


def mkframe(dst: bytes, src: bytes, tag: int, size: int = 64, vlan: Optional[int] = None) -> bytes:
    """
    A test frame; C{tag} is in the payload so frames can be told apart.
    """
    header = dst + src
    if vlan is not None:
        header += b"\x81\x00" + struct.pack(">H", vlan)
    header += DATA_TYPE
    body = struct.pack(">I", tag)
    return (header + body).ljust(size, b"\xa5")


def tagOf(frame: bytes) -> int:
    offset = 18 if frame[12:14] == b"\x81\x00" else 14
    return struct.unpack_from(">I", frame, offset)[0]


def tags(frames: Sequence[bytes]) -> list[int]:
    return [tagOf(f) for f in list(frames) if DATA_TYPE in f[12:18]]


class RawClient:
    """
    A hand-made vde2 client: lets the tests send anything.
    """

    count = 0

    def __init__(self, directory: str, connect: bool = True) -> None:
        RawClient.count += 1
        self.directory = directory
        self.path = os.path.join(directory, f".raw-{os.getpid()}-{RawClient.count}")
        self.data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.data.bind(self.path)
        self.data.setblocking(False)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.setblocking(False)
        self.received = b""
        self.eof = False
        self.serverPath: Optional[str] = None
        if connect:
            self.ctl.connect(os.path.join(directory, "ctl"))

    def request(self, port: int = 0, description: bytes = b"raw client", **kw) -> None:
        self.ctl.send(protocol.packRequest(self.path, description, port, **kw))

    def poll(self) -> bool:
        """
        Read what the server wrote; whether it replied or closed.
        """
        while not self.eof:
            try:
                chunk = self.ctl.recv(256)
            except BlockingIOError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.received += chunk
        return self.eof or len(self.received) >= protocol.SOCKADDR_UN_SIZE

    def finish(self) -> None:
        """
        Connect to the server's socket from the reply, unlink our path.
        """
        self.serverPath = os.fsdecode(protocol.parseReply(self.received))
        self.data.connect(self.serverPath)
        os.unlink(self.path)

    def recvAll(self) -> list[bytes]:
        frames = []
        while True:
            try:
                frames.append(self.data.recv(65536))
            except (BlockingIOError, ConnectionRefusedError):
                return frames

    def close(self) -> None:
        self.ctl.close()
        self.data.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class Vde2TestCase(TestCase):
    def setUp(self) -> None:
        self.tmp = tmpdir(self, "vt2-")
        self.log = LogCapture(self)

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def ourServer(self, name: str = "sw", flavour: str = "vde_switch", engine=None,
                  numports: int = 32, **kw) -> VdeServer:
        if flavour == "vde_switch":
            node = Node(engine or SwitchEngine(), reactor,
                        MacTable(reactor, hashsize=128, expiretime=100, minPersistence=3),
                        numports=numports, keepInactivePorts=True)
        else:
            node = Node(engine or TrunkSwitchEngine(), reactor)
        server = VdeServer(reactor, node, self.path(name), flavour=flavour, **kw)
        server.start()
        self.addCleanup(node.close)
        self.addCleanup(server.stop)
        return server

    async def openNode(self, scheme: str, name: str = "node"):
        plug = await registry.open(reactor, f"{scheme}://{self.path(name)}", "test host")
        self.addCleanup(plug.close)
        collector = FrameCollector()
        plug.startReceiving(collector)
        return plug, collector, plug.server

    def rawClient(self, directory: str, connect: bool = True) -> RawClient:
        client = RawClient(directory, connect)
        self.addCleanup(client.close)
        return client

    async def rawJoin(self, directory: str, port: int = 0, description: bytes = b"raw") -> RawClient:
        client = self.rawClient(directory)
        client.request(port, description)
        await until(client.poll, "the reply")
        self.assertEqual(len(client.received), 110, "the server did not reply")
        client.finish()
        return client

    async def assertRefused(self, client: RawClient, timeout: float = 3.0) -> None:
        """
        The server closes C{client}'s connection without a reply.
        """
        await until(client.poll, "the server to close the connection", timeout)
        self.assertTrue(client.eof)
        self.assertEqual(client.received, b"")

    def files(self, directory: str) -> set[str]:
        return set(os.listdir(directory))


# ---------------------------------------------------------------------------
# Our client on the C vde_switch


class OurClientOnCSwitchTests(Vde2TestCase):
    async def startSwitch(self, *args: str) -> CSwitch:
        switch = CSwitch(self, *args)
        await switch.started()
        return switch

    async def test_describedExchangeAndLeave(self) -> None:
        """
        Our plug shows its description in C{port/print}, exchanges frames
        with a C C{vde_plug} on the same switch both ways, and frees its
        port on close.
        """
        switch = await self.startSwitch()
        plug = await registry.open(reactor, "vde://" + switch.path, "vdetwist-test")
        self.addCleanup(plug.close)
        ours = FrameCollector()
        plug.startReceiving(ours)
        expected = f"vdetwist-test user={userName()} pid={os.getpid()}"
        printed = switch.command("port/print")
        self.assertIn("module unix prog   : " + expected, printed)
        other = cPlug(self, "c", switch.path)
        await until(lambda: switch.command("port/print").count("endpoint ID") == 2,
                    "the C plug to join", procs=[other])
        # Learning frames both ways, then unicast both ways.
        other.send(mkframe(BROADCAST, mac(2), 1))
        await until(lambda: tags(ours.frames) == [1], "C -> ours broadcast", procs=[other])
        plug.send(mkframe(BROADCAST, mac(1), 2))
        await until(lambda: tags(other.frames) == [2], "ours -> C broadcast", procs=[other])
        # (Sizes up to 1514: vde_switch 2.3.2 truncates longer frames.)
        for n in range(10, 30):
            plug.send(mkframe(mac(2), mac(1), n, size=60 + 70 * (n - 10)))
            other.send(mkframe(mac(1), mac(2), 100 + n, size=60 + 70 * (n - 10)))
            await settle(0.005)
        await until(lambda: len(tags(other.frames)) == 21 and len(tags(ours.frames)) == 21,
                    "20 unicast frames each way", procs=[other])
        self.assertEqual(tags(other.frames), [2] + list(range(10, 30)))
        self.assertEqual(tags(ours.frames), [1] + list(range(110, 130)))
        self.assertEqual(ours.frames[-1], mkframe(mac(1), mac(2), 129, size=60 + 70 * 19))
        # Leaving: the port is inactive, our socket files are gone.
        plug.close()
        await until(lambda: expected not in switch.command("port/print"), "our port to go")
        self.assertEqual(switch.command("port/print").count("endpoint ID"), 1)
        names = self.files(switch.path)
        self.assertEqual(len(names), 2, names)  # ctl and the C plug's socket
        self.assertFalse([n for n in names if n.startswith(".")])

    async def test_kickedByEpclose(self) -> None:
        """
        C{port/epclose} closes our plug cleanly.
        """
        switch = await self.startSwitch()
        plug = await connectVde(reactor, switch.path, description=b"kick-me")
        ours = FrameCollector()
        plug.startReceiving(ours)
        printed = switch.command("port/print")
        match = re.search(r"Port (\d+) .*?endpoint ID (\d+) module unix prog   : kick-me",
                          printed, re.S)
        self.assertIsNotNone(match, printed)
        self.assertIn("1000 Success",
                      switch.command(f"port/epclose {int(match[1])} {int(match[2])}"))
        await until(lambda: ours.reason is not None, "our plug to close")
        ours.reason.trap(PlugClosed)
        self.assertTrue(plug.closed)

    async def test_switchExits(self) -> None:
        """
        When the switch exits, the plug closes cleanly.
        """
        _, reason = await self.plugWhenSwitchEnds(lambda process: process.closeStdin())
        reason.trap(PlugClosed)

    async def plugWhenSwitchEnds(self, end) -> tuple:
        """
        A switch with our plug on it ended by C{end(its process)}: the
        switch and the reason our plug closed.
        """
        switch = await self.startSwitch()
        plug = await connectVde(reactor, switch.path, description=b"t")
        ours = FrameCollector()
        plug.startReceiving(ours)
        end(switch.process)
        await until(lambda: ours.reason is not None, "our plug to close")
        return switch, ours.reason

    async def test_switchKilled(self) -> None:
        """
        A switch killed (its data socket left behind, refusing connections)
        is a lost network, not a clean end: the reason names the switch.
        """
        switch, reason = await self.plugWhenSwitchEnds(lambda process: process.kill())
        reason.trap(PlugLost)
        self.assertEqual(
            reason.getErrorMessage(),
            f"vde://{switch.path}: the switch {os.path.realpath(switch.path)} went away "
            f"(killed or crashed: its data socket refuses connections)",
        )

    async def test_dataSocketOutlivesControl(self) -> None:
        """
        A killed switch's descriptors close one by one: when its data socket
        still answers just after the control connection ended and refuses
        connections a moment later, the network is lost (it was once taken
        for a clean end: test_plugbehaviour's VdeToCSwitchBehaviour failed
        now and then).
        """
        from vdetwist.vde2.client import VdeClientPlug

        directory = tmpdir(self)
        serverPath = os.path.join(directory, "data")
        switchData = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        switchData.bind(serverPath)
        control, switchControl = socket.socketpair()
        ours = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(ours.close)
        plug = VdeClientPlug(reactor, ours, control, "vde://test", directory, serverPath)
        self.addCleanup(plug.close)
        collector = FrameCollector()
        plug.startReceiving(collector)
        switchControl.close()
        # The data socket closes (its file left behind) after two probes.
        reactor.callLater(plug.goneProbeInterval * 2.5, switchData.close)
        await until(lambda: collector.reason is not None, "the plug to close")
        collector.reason.trap(PlugLost)

    async def test_scriptsWhenSwitchKilled(self) -> None:
        """
        The C C{vde_plug} exits with status 0, saying nothing, when its
        switch is killed; ours exits with the same status, and says why in
        one line.
        """
        switch = await self.startSwitch()
        theirs = cPlug(self, "C vde_plug", switch.path)
        ours = ourPlug(self, "our vde_plug", switch.path)
        await until(lambda: switch.command("port/print").count("endpoint ID") == 2,
                    "both plugs to join", procs=[ours, theirs])
        switch.process.kill()
        cStatus = await deferToThread(theirs.wait, TIMEOUT)
        self.assertEqual(await deferToThread(ours.wait, TIMEOUT), cStatus)
        self.assertEqual(cStatus, 0)
        lines = (await deferToThread(ours.finish)).splitlines()
        self.assertEqual(len(lines), 1, lines)
        switchPath = re.escape(os.path.realpath(switch.path))
        self.assertRegex(lines[0], rf"^vde_plug: .*the switch {switchPath} went away")

    async def test_port0AndPortN(self) -> None:
        """
        C{[0]} gets the management port's socket C{000.N}, C{[5]} C{005.N}.
        """
        switch = await self.startSwitch()
        zero = await registry.open(reactor, f"vde://{switch.path}[0]")
        self.addCleanup(zero.close)
        five = await registry.open(reactor, f"{switch.path}[5]")
        self.addCleanup(five.close)
        self.assertTrue(os.path.basename(zero.serverPath).startswith("000."), zero.serverPath)
        self.assertTrue(os.path.basename(five.serverPath).startswith("005."), five.serverPath)

    async def test_oldSwitchNeverAnswers(self) -> None:
        """
        vde_switch 2.3.2 never answers a request for a port that does not
        exist: we give up after the timeout instead of hanging.
        """
        switch = await self.startSwitch("-n", "8")
        with self.assertRaises(VdeError) as caught:
            await connectVde(reactor, switch.path, port=40, timeout=0.3)
        self.assertEqual(caught.exception.errno, errno.ETIMEDOUT)
        self.assertIn("no answer", str(caught.exception))
        self.assertFalse([n for n in self.files(switch.path) if n.startswith(".")])

    async def test_ourScript(self) -> None:
        """
        Our C{vde_plug} script (stdio <-> vde://) on the C switch, with a
        C client; it exits with status 0 when the switch goes away.
        """
        switch = await self.startSwitch()
        ours = ourPlug(self, "our vde_plug", switch.path)
        other = cPlug(self, "c", switch.path)
        await until(lambda: switch.command("port/print").count("endpoint ID") == 2,
                    "both plugs to join", procs=[ours, other])
        ours.send(mkframe(BROADCAST, mac(1), 1))
        other.send(mkframe(BROADCAST, mac(2), 2))
        await until(lambda: tags(ours.frames) == [2] and tags(other.frames) == [1], "frames",
                    procs=[ours, other])
        switch.process.closeStdin()
        self.assertEqual(await deferToThread(ours.proc.wait, TIMEOUT), 0)
        self.assertNotIn("Traceback", ours.stderrText())

    async def test_cNetnode(self) -> None:
        """
        Our client on the C vdeplug4 C{switch://} (reply C{.../fdN} with
        garbage after the path), exchanging frames with a C client.
        """
        directory = self.path("cnode")
        node = cPlug(self, "C switch://", "null://", "switch://" + directory)
        await until(lambda: isListening(directory + "/ctl"), "the C node", procs=[node])
        plug = await connectVde(reactor, directory, description=b"ours")
        self.addCleanup(plug.close)
        self.assertRegex(plug.serverPath, r"/fd\d+$")
        ours = FrameCollector()
        plug.startReceiving(ours)
        other = cPlug(self, "c", directory)
        other.send(mkframe(BROADCAST, mac(2), 1))
        await until(lambda: tags(ours.frames) == [1], "C -> ours", procs=[node, other])
        plug.send(mkframe(mac(2), mac(1), 2, size=9000))
        await until(lambda: tags(other.frames) == [2], "ours -> C (jumbo)", procs=[node, other])
        node.proc.terminate()
        await until(lambda: ours.reason is not None, "our plug to close")
        ours.reason.trap(PlugClosed)

    async def test_noSwitch(self) -> None:
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, "vde://" + self.path("nothing"))
        self.assertEqual(caught.exception.errno, errno.ENOENT)
        os.mkdir(self.path("empty"))
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, "vde://" + self.path("empty"))
        self.assertEqual(caught.exception.errno, errno.ENOENT)
        self.assertIn("no switch", str(caught.exception))


# ---------------------------------------------------------------------------
# C clients on our netnode switch:// and hub://


class NetnodeTests(Vde2TestCase):
    async def joinC(self, server: VdeServer, directory: str, n: int) -> list[StreamProcess]:
        procs = [cPlug(self, f"c{i}", directory) for i in range(n)]
        await until(lambda: len(server.endpoints) == n, f"{n} C clients to join", procs=procs)
        return procs

    async def test_switchForwarding(self) -> None:
        """
        switch://: broadcast goes to every other port and the host; after
        learning, unicast goes only to its port (or the host).
        """
        host, atHost, server = await self.openNode("switch")
        a, b, c = await self.joinC(server, self.path("node"), 3)
        procs = [a, b, c]
        for i, p in enumerate(procs):
            p.send(mkframe(BROADCAST, mac(10 + i), i))
        await until(lambda: sorted(tags(atHost.frames)) == [0, 1, 2]
                    and all(len(tags(p.frames)) == 2 for p in procs), "broadcasts", procs=procs)
        self.assertEqual(sorted(tags(a.frames)), [1, 2])
        self.assertEqual(sorted(tags(b.frames)), [0, 2])
        host.send(mkframe(BROADCAST, mac(1), 3))
        await until(lambda: all(tags(p.frames)[-1:] == [3] for p in procs), "host broadcast", procs=procs)
        # Unicast A -> B, B -> host, host -> C.
        a.send(mkframe(mac(11), mac(10), 4))
        b.send(mkframe(mac(1), mac(11), 5))
        host.send(mkframe(mac(12), mac(1), 6))
        await until(lambda: tags(b.frames)[-1] == 4 and tags(atHost.frames)[-1] == 5
                    and tags(c.frames)[-1] == 6, "unicast", procs=procs)
        await settle(0.2)
        self.assertEqual(tags(a.frames)[2:], [3])
        self.assertEqual(tags(b.frames)[2:], [3, 4])
        self.assertEqual(tags(c.frames)[2:], [3, 6])
        self.assertEqual(tags(atHost.frames)[3:], [5])
        # The description of C clients is kept (netnode ignores it, we log it).
        self.assertTrue(all(e.description.startswith("vdeplug: user=")
                            for e in server.endpoints.values()))

    async def test_vlanTaggedAsIs(self) -> None:
        """
        switch:// is a trunk: tagged frames pass unchanged; a tagged
        unicast to a MAC learned on VLAN 0 floods.
        """
        host, atHost, server = await self.openNode("switch")
        a, b = await self.joinC(server, self.path("node"), 2)
        b.send(mkframe(BROADCAST, mac(11), 1))
        await until(lambda: tags(a.frames) == [1], "learning", procs=[a, b])
        tagged = mkframe(BROADCAST, mac(10), 2, size=100, vlan=5)
        a.send(tagged)
        await until(lambda: tags(b.frames) == [2], "a tagged broadcast", procs=[a, b])
        self.assertEqual(b.frames[-1], tagged)
        unicast = mkframe(mac(11), mac(10), 3, vlan=5)
        a.send(unicast)
        await until(lambda: tags(atHost.frames)[-1:] == [3], "tagged unicast flooding",
                    procs=[a, b])
        self.assertEqual(atHost.frames[-1], unicast)

    async def test_hubFloods(self) -> None:
        host, atHost, server = await self.openNode("hub")
        a, b, c = await self.joinC(server, self.path("node"), 3)
        b.send(mkframe(BROADCAST, mac(11), 1))
        a.send(mkframe(mac(11), mac(10), 2))
        await until(lambda: sorted(tags(c.frames)) == [1, 2] and sorted(tags(atHost.frames)) == [1, 2]
                    and tags(b.frames) == [2] and tags(a.frames) == [1], "flooding", procs=[a, b, c])
        host.send(mkframe(mac(10), mac(1), 3))
        await until(lambda: [tags(p.frames)[-1] for p in (a, b, c)] == [3, 3, 3], "host flooding",
                    procs=[a, b, c])

    async def test_layoutAndLife(self) -> None:
        """
        Sockets are C{fd<N>} (the control connection's fd), modes 0600, dir
        02700; a client that leaves takes its socket file; closing the host
        plug ends the clients (status 0) and removes the directory; the
        directory must not exist beforehand.
        """
        directory = self.path("node")
        host, atHost, server = await self.openNode("switch")
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o2700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, "ctl")).st_mode), 0o600)
        a, b = await self.joinC(server, directory, 2)
        names = self.files(directory)
        self.assertEqual(names, {"ctl"} | {f"fd{i}" for i in server.endpoints})
        for i, endpoint in server.endpoints.items():
            self.assertEqual(stat.S_IMODE(os.stat(endpoint.path).st_mode) & 0o077, 0)
        a.proc.kill()
        await until(lambda: len(server.endpoints) == 1, "a to leave")
        self.assertEqual(len(self.files(directory)), 2)
        b.send(mkframe(BROADCAST, mac(11), 1))
        await until(lambda: tags(atHost.frames) == [1], "b still forwarding", procs=[b])
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, "hub://" + directory)
        self.assertEqual(caught.exception.errno, errno.EEXIST)
        host.close()
        self.assertFalse(os.path.exists(directory))
        self.assertEqual(await deferToThread(b.proc.wait, TIMEOUT), 0)

    async def test_options(self) -> None:
        directory = self.path("opt")
        plug = await registry.open(reactor, f"switch://{directory}[mode=666/hashsize=5/expiretime=7]")
        self.addCleanup(plug.close)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o2777)
        self.assertEqual(stat.S_IMODE(os.stat(directory + "/ctl").st_mode), 0o666)
        self.assertEqual((plug.node.table.hashsize, plug.node.table.expiretime), (8, 7))
        with self.assertRaises(VdeError):
            await registry.open(reactor, f"switch://{self.path('x')}[3]")
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, "hub:///nonexistent-parent/x")
        self.assertEqual(caught.exception.errno, errno.ENOENT)

    async def test_portZeroRefused(self) -> None:
        """
        netnode has no port 0: refused with a warning (the C node never
        answers, leaving the client hanging).
        """
        host, atHost, server = await self.openNode("switch")
        client = self.rawClient(self.path("node"))
        client.request(-1)
        await self.assertRefused(client)
        self.assertIn("no port 0", self.log.text())

    async def test_ourScript(self) -> None:
        """
        Our C{vde_plug null:// hub://DIR} as a stand-alone hub for C
        clients; stopping it ends them cleanly and removes the directory.
        """
        directory = self.path("hub")
        hub = ourPlug(self, "our hub", "null://", "hub://" + directory)
        await until(lambda: isListening(directory + "/ctl"), "our hub to start", procs=[hub])
        a, b = cPlug(self, "a", directory), cPlug(self, "b", directory)
        await until(lambda: len([n for n in os.listdir(directory) if n.startswith("fd")]) == 2,
                    "clients to join", procs=[hub, a, b])
        a.send(mkframe(BROADCAST, mac(10), 1))
        b.send(mkframe(BROADCAST, mac(11), 2))
        await until(lambda: tags(a.frames) == [2] and tags(b.frames) == [1], "frames", procs=[hub, a, b])
        hub.proc.terminate()
        self.assertEqual(await deferToThread(a.proc.wait, TIMEOUT), 0)
        self.assertEqual(await deferToThread(b.proc.wait, TIMEOUT), 0)
        await deferToThread(hub.proc.wait, TIMEOUT)
        self.assertNotIn("Traceback", hub.stderrText())
        self.assertFalse(os.path.exists(directory))


# ---------------------------------------------------------------------------
# Our vde_switch-flavoured server


class SwitchServerTests(Vde2TestCase):
    async def test_cClientsAndPortRequests(self) -> None:
        """
        C clients asking for C{[3]}, C{[0]} and any port get those ports,
        sockets C{003.N}, C{000.N}, C{001.N}, and their descriptions.
        """
        server = self.ourServer()
        d = server.path
        three, zero, anyp = cPlug(self, "3", d + "[3]"), cPlug(self, "0", d + "[0]"), cPlug(self, "any", d)
        procs = [three, zero, anyp]
        await until(lambda: len(server.endpoints) == 3, "3 clients", procs=procs)
        byPid = {int(re.search(r"pid=(\d+)", e.description)[1]): e
                 for e in server.endpoints.values()}
        self.assertEqual(byPid[three.pid].port.number, 3)
        self.assertEqual(byPid[zero.pid].port.number, 0)
        self.assertEqual(byPid[anyp.pid].port.number, 1)
        for proc, prefix in ((three, "003."), (zero, "000."), (anyp, "001.")):
            e = byPid[proc.pid]
            self.assertEqual(os.path.basename(e.path), f"{prefix}{e.socket.fileno()}")
            self.assertEqual(e.uid, os.geteuid())
            self.assertTrue(e.description.startswith("vdeplug: user="))
            self.assertEqual(stat.S_IMODE(os.stat(e.path).st_mode) & 0o077, 0)
        # Frames between C clients through our SwitchEngine.
        three.send(mkframe(BROADCAST, mac(3), 1))
        anyp.send(mkframe(mac(3), mac(1), 2))
        await until(lambda: tags(anyp.frames) == [1] and tags(three.frames) == [2], "frames", procs=procs)
        self.assertIn("port 3 connected: vdeplug: user=", self.log.text())
        three.proc.kill()
        await until(lambda: len(server.endpoints) == 2, "a client to leave", procs=procs)
        self.assertIn("port 3 disconnected: vdeplug: user=", self.log.text())

    async def test_version1Request(self) -> None:
        """
        A legacy version 1 request is accepted by the vde_switch flavour
        (code 1: port 0), refused by netnode.
        """
        server = self.ourServer()
        client = self.rawClient(server.path)
        client.ctl.send(struct.pack("<II", protocol.MAGIC, 1) + bytes(6)
                        + protocol.packSockaddr(client.path) + b"old")
        await until(client.poll, "the reply")
        self.assertEqual(len(client.received), 110)
        (endpoint,) = server.endpoints.values()
        self.assertEqual((endpoint.port.number, endpoint.description), (0, "old"))
        host, atHost, node = await self.openNode("switch")
        client = self.rawClient(node.path)
        client.ctl.send(struct.pack("<II", protocol.MAGIC, 0) + bytes(6)
                        + protocol.packSockaddr(client.path) + b"old")
        await self.assertRefused(client)

    async def test_ourClient(self) -> None:
        """
        Our vde:// client on our switch, frames with a C client, and
        closeEndpoint kicks it.
        """
        server = self.ourServer()
        plug = await registry.open(reactor, f"vde://{server.path}[7]", "ours")
        ours = FrameCollector()
        plug.startReceiving(ours)
        (endpoint,) = server.endpoints.values()
        self.assertEqual(endpoint.port.number, 7)
        self.assertEqual(endpoint.description, f"ours user={userName()} pid={os.getpid()}")
        c = cPlug(self, "c", server.path)
        await until(lambda: len(server.endpoints) == 2, "the C client", procs=[c])
        c.send(mkframe(BROADCAST, mac(2), 1))
        await until(lambda: tags(ours.frames) == [1], "C -> ours", procs=[c])
        big = mkframe(mac(2), mac(1), 2, size=9000)
        plug.send(big)
        await until(lambda: tags(c.frames) == [2], "ours -> C (jumbo)", procs=[c])
        self.assertEqual(c.frames[-1], big)
        self.assertTrue(server.closeEndpoint(endpoint.endpointId))
        self.assertFalse(server.closeEndpoint(endpoint.endpointId))
        await until(lambda: ours.reason is not None, "our plug to close")
        ours.reason.trap(PlugClosed)
        self.assertFalse(os.path.exists(endpoint.path))

    async def test_clientSocketNames(self) -> None:
        """
        Our client binds C{<dir>/.<pid>-<seq>}, taking the next seq when a
        name is taken, and unlinks it once connected; a named portgroup
        that does not exist falls back to C{ctl} and any port.
        """
        server = self.ourServer()
        taken = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(taken.close)
        taken.bind(server.path + f"/.{os.getpid():05d}-00000")
        plug = await registry.open(reactor, f"vde://{server.path}[lan]", "seq")
        self.addCleanup(plug.close)
        (endpoint,) = server.endpoints.values()
        self.assertEqual(endpoint.request.path.decode(), server.path + f"/.{os.getpid():05d}-00001")
        self.assertEqual(endpoint.port.number, 1)
        self.assertFalse(os.path.exists(endpoint.request.path))

    async def test_clientFallbackDirectory(self) -> None:
        """
        When the switch directory's path leaves no room for our socket's
        name, the client binds in /var/run, /var/tmp or /tmp instead.
        """
        long = os.path.join(self.tmp, "d" * (96 - len(self.tmp) - 1))
        self.assertEqual(len(long), 96)
        server = self.ourServer(name=long)
        plug = await connectVde(reactor, long, description=b"fallback")
        self.addCleanup(plug.close)
        (endpoint,) = server.endpoints.values()
        where = os.path.dirname(endpoint.request.path.decode())
        self.assertIn(where, ("/var/run", "/var/tmp", "/tmp"))
        self.assertTrue(os.path.basename(endpoint.request.path.decode()).startswith("vde."))
        self.assertFalse(os.path.exists(endpoint.request.path))
        ours = FrameCollector()
        plug.startReceiving(ours)
        # The C client falls back the same way.
        other = cPlug(self, "c", long)
        await until(lambda: len(server.endpoints) == 2, "the C client", procs=[other])
        other.send(mkframe(BROADCAST, mac(9), 1))
        await until(lambda: tags(ours.frames) == [1], "a frame", procs=[other])

    async def test_badRequests(self) -> None:
        """
        Wrong magic, an unsupported version, a bad type, an inaccessible
        client socket: closed at once, with a warning naming the problem.
        """
        server = self.ourServer()
        bad = self.rawClient(server.path)
        bad.ctl.send(b"\x00\x00\x00\x00" + protocol.packRequest(bad.path)[4:])
        version = self.rawClient(server.path)
        version.request(version=2)
        kind = self.rawClient(server.path)
        kind.request(type=7)
        missing = self.rawClient(server.path)
        missing.ctl.send(protocol.packRequest(server.path + "/.nobody", b"x"))
        for client in (bad, version, kind, missing):
            await self.assertRefused(client)
        text = self.log.text()
        for words in ("magic", "version 2", "bad request type 7", "cannot access"):
            self.assertIn(words, text)
        self.assertEqual(server.endpoints, {})
        self.assertEqual(self.files(server.path) - {".raw-" + p.path.split(".raw-")[1]
                                                     for p in (bad, version, kind, missing)},
                         {"ctl"})

    async def test_segmentedRequest(self) -> None:
        """
        A request split in two segments is read whole.
        """
        server = self.ourServer()
        client = self.rawClient(server.path)
        request = protocol.packRequest(client.path, b"in two parts", 4)
        client.ctl.send(request[:50])
        await settle(0.05)
        client.ctl.send(request[50:])
        await until(client.poll, "the reply")
        client.finish()
        (endpoint,) = server.endpoints.values()
        self.assertEqual((endpoint.port.number, endpoint.description), (4, "in two parts"))

    async def test_shortAndSilent(self) -> None:
        """
        A short request followed by EOF is closed at once; a client that
        never sends (or never finishes) is dropped after the timeout.
        """
        server = self.ourServer()
        server.requestTimeout = 0.3
        short = self.rawClient(server.path)
        short.ctl.send(protocol.packRequest(short.path)[:60])
        short.ctl.shutdown(socket.SHUT_WR)
        await self.assertRefused(short, timeout=0.25)
        silent = self.rawClient(server.path)
        partial = self.rawClient(server.path)
        partial.ctl.send(protocol.packRequest(partial.path)[:60])
        started = time.monotonic()
        await self.assertRefused(silent)
        await self.assertRefused(partial)
        self.assertLess(time.monotonic() - started, 2)
        self.assertIn("no request within", self.log.text())
        # And the switch still works.
        await self.rawJoin(server.path)

    async def test_portOutOfRangeAndShared(self) -> None:
        """
        A port beyond the switch's ports is refused by closing the
        connection (never left hanging); the same user may share a port.
        """
        server = self.ourServer(numports=8)
        high = self.rawClient(server.path)
        high.request(8)
        await self.assertRefused(high)
        self.assertIn("port 8 does not exist", self.log.text())
        first = await self.rawJoin(server.path, 2)
        second = await self.rawJoin(server.path, 2)
        self.assertEqual([e.port.number for e in server.endpoints.values()], [2, 2])
        # Frames between the two endpoints of port 2 are not exchanged, the
        # port still works with a third client.
        third = await self.rawJoin(server.path)
        first.data.send(mkframe(BROADCAST, mac(1), 1))
        await until(lambda: bool(third.recvAll()), "a frame from port 2")
        self.assertEqual(second.recvAll(), [])

    async def test_portOfAnotherUser(self) -> None:
        """
        A port held by another user is refused by closing the connection.
        """
        requireRoot("to give a client's socket to another user")
        server = self.ourServer(numports=8)
        await self.rawJoin(server.path, 2)
        other = self.rawClient(server.path)
        os.chown(other.path, 65534, -1)
        other.request(2)
        await self.assertRefused(other)
        self.assertIn("port 2 is in use by another user", self.log.text())

    async def test_accessPolicy(self) -> None:
        """
        The access policy (the console's port/setuser) refuses clients of
        requested and of automatically allocated ports.
        """
        server = self.ourServer()
        server.accessPolicy = lambda number, uid: "not for you" if number in (1, 3) else None
        for port in (3, 0):
            client = self.rawClient(server.path)
            client.request(port)
            await self.assertRefused(client)
        self.assertIn("port 3: not for you", self.log.text())
        self.assertIn("port 1: not for you", self.log.text())
        self.assertEqual(server.endpoints, {})
        joined = await self.rawJoin(server.path, 2)
        self.assertTrue(joined.serverPath.rsplit("/", 1)[1].startswith("002."))

    async def test_abstractClient(self) -> None:
        """
        A client bound at an abstract address (all 108 bytes) is accepted
        with uid -1.
        """
        server = self.ourServer()
        name = b"\0vdetwist-" + str(os.getpid()).encode()
        name = name.ljust(108, b"\0")
        data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(data.close)
        data.bind(name)
        client = self.rawClient(server.path)
        client.ctl.send(protocol.packRequest(name, b"abstract"))
        await until(client.poll, "the reply")
        self.assertEqual(len(client.received), 110)
        (endpoint,) = server.endpoints.values()
        self.assertEqual(endpoint.uid, -1)

    async def test_vanishingClient(self) -> None:
        """
        A client killed without warning: its endpoint and socket go, the
        port is inactive (vde_switch keeps it), the others keep working.
        """
        server = self.ourServer()
        a, b = cPlug(self, "a", server.path), cPlug(self, "b", server.path)
        await until(lambda: len(server.endpoints) == 2, "clients", procs=[a, b])
        ports = {e.port.number for e in server.endpoints.values()}
        a.proc.kill()
        await until(lambda: len(server.endpoints) == 1, "a to go")
        self.assertEqual(self.files(server.path),
                         {"ctl", os.path.basename(next(iter(server.endpoints.values())).path)})
        self.assertEqual(set(server.node.ports), ports)
        raw = await self.rawJoin(server.path)
        b.send(mkframe(BROADCAST, mac(11), 1))
        await until(lambda: bool(raw.recvAll()), "b still forwarding", procs=[b])

    async def test_cycles(self) -> None:
        """
        1000 connect/disconnect cycles: no endpoint, port or socket file
        left behind; two other ports keep exchanging frames meanwhile.
        """
        server = self.ourServer()
        p1 = await self.rawJoin(server.path, description=b"steady 1")
        p2 = await self.rawJoin(server.path, description=b"steady 2")
        steady = {p1.serverPath, p2.serverPath}
        got = []
        batch = 10  # below the listen backlog (15)
        for round_ in range(1000 // batch):
            clients = [RawClient(server.path) for _ in range(batch)]
            for c in clients:
                c.request(0, b"cycle")
            p1.data.send(mkframe(BROADCAST, mac(1), round_))
            await until(lambda: all(c.poll() for c in clients), "replies", interval=0.001)
            for c in clients:
                self.assertEqual(len(c.received), 110)
                c.finish()
                c.close()
            await until(lambda: len(server.endpoints) == 2, "cycle clients to go",
                        interval=0.001)
            got.extend(tagOf(f) for f in p2.recvAll())
        self.assertEqual(got, list(range(1000 // batch)))
        self.assertEqual({e.path for e in server.endpoints.values()}, steady)
        self.assertEqual(self.files(server.path),
                         {"ctl"} | {os.path.basename(p) for p in steady})
        # Ports are reused: the cycles never needed more than one batch.
        self.assertLessEqual(max(server.node.ports), batch + 2)

    async def test_receiveDrops(self) -> None:
        """
        What a client sends that is not a frame (too short, too long) is
        dropped and counted on the way in, apart from the way out: the
        console's DROP line, after the lines vde_switch prints.
        """
        server = self.ourServer()
        console = VdeConsole(server.node, reactor, server=server)
        client = await self.rawJoin(server.path)
        client.data.send(b"short")
        client.data.send(b"x" * (VDE_ETHBUFSIZE + 1))
        client.data.send(mkframe(BROADCAST, mac(1), 1))
        port = server.node.getPort(1)
        await until(lambda: port.inFrames == 1, "the good frame")
        self.assertEqual((port.receiveDropped, port.outDropped), (2, 0))
        lines = console.execute("port/print")[0].decode().splitlines()
        first = next(i for i, line in enumerate(lines) if line.startswith("Port 0001 "))
        self.assertRegex(lines[first + 1], r"^ Current User: ")
        self.assertRegex(lines[first + 2], r"^ IN:  pkts +1 +bytes +\d+$")
        self.assertRegex(lines[first + 3], r"^ OUT: pkts +0 +bytes +0$")
        self.assertEqual(lines[first + 4], " DROP: in          2          out          0")
        self.assertRegex(lines[first + 5], r"^  -- endpoint ID ")

    async def test_stopEndsClients(self) -> None:
        server = self.ourServer()
        a = cPlug(self, "a", server.path)
        await until(lambda: len(server.endpoints) == 1, "a to join", procs=[a])
        server.stop()
        self.assertFalse(os.path.exists(server.path))
        self.assertEqual(await deferToThread(a.proc.wait, TIMEOUT), 0)

    async def test_staleAndLiveCtl(self) -> None:
        """
        A ctl left by a dead switch is replaced; a live one is an error
        that names the path.
        """
        directory = self.path("sw")
        os.mkdir(directory)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(directory + "/ctl")
        stale.close()
        server = self.ourServer()
        await self.rawJoin(server.path)
        node = Node(SwitchEngine(), reactor)
        second = VdeServer(reactor, node, directory)
        with self.assertRaises(VdeError) as caught:
            second.start()
        self.assertEqual(caught.exception.errno, errno.EADDRINUSE)
        self.assertIn(directory, str(caught.exception))
        self.assertIn("another switch", str(caught.exception))
        # The failed start did not disturb the running one.
        await self.rawJoin(server.path)

    async def test_interfaces(self) -> None:
        """
        The server is what its console may ask (L{IVdeServer}); its clients'
        endpoints are L{IVdeClient}s, and only they.
        """
        server = self.ourServer()
        verifyObject(IVdeServer, server)
        await self.rawJoin(server.path)
        (endpoint,) = server.endpoints.values()
        verifyObject(IVdeClient, endpoint)
        self.assertEqual((endpoint.pid, endpoint.uid), (os.getpid(), os.geteuid()))
        self.assertIs(server.clientOf(endpoint), endpoint)
        self.assertIsNone(server.clientOf(MemoryPlug("not a client")))

    def test_ctlNotASocket(self) -> None:
        """
        Something other than a socket at ctl is refused, naming it, and
        left as it is.
        """
        directory = self.path("sw")
        os.mkdir(directory, 0o700)
        with open(directory + "/ctl", "w") as f:
            f.write("keep me")
        server = VdeServer(reactor, Node(SwitchEngine(), reactor), directory)
        with self.assertRaises(VdeError) as caught:
            server.start()
        self.assertEqual(caught.exception.errno, errno.EEXIST)
        self.assertIn(f"{directory}/ctl exists and is not a socket", str(caught.exception))
        with open(directory + "/ctl") as f:
            self.assertEqual(f.read(), "keep me")

    async def test_ctlRemovedUnderTheSwitch(self) -> None:
        """
        A ctl somebody removed while the switch ran: stopping still closes
        the listener and removes the directory.
        """
        server = self.ourServer()
        client = await self.rawJoin(server.path)
        os.unlink(server.ctlPath)
        server.stop()
        self.assertFalse(os.path.exists(server.path))
        self.assertIsNone(server.listener)
        await until(lambda: client.poll() and client.eof, "the client to see EOF")

    async def test_dataAfterTheHandshake(self) -> None:
        """
        The request is read as vde_switch reads it, in one read of 256
        bytes: what a client sends beyond, in the same write or later, is
        data on the control connection after the handshake, and the
        endpoint is closed, with a warning.
        """
        server = self.ourServer()
        glued = self.rawClient(server.path)
        request = protocol.packRequest(glued.path, b"glued")
        glued.ctl.send(request.ljust(protocol.READ_SIZE, b"\0") + b"more")
        later = await self.rawJoin(server.path, description=b"later")
        later.ctl.send(b"more")
        await until(lambda: glued.poll() and glued.eof, "the glued client to be closed")
        await until(lambda: later.poll() and later.eof, "the later client to be closed")
        self.assertEqual(len(glued.received), protocol.SOCKADDR_UN_SIZE)
        self.assertEqual(server.endpoints, {})
        self.assertEqual(self.log.text().count("after the handshake; closing it"), 2)

    async def test_permissions(self) -> None:
        requireRoot("to give a client's socket to another user")
        server = self.ourServer(mode=0o660, group="0")
        self.assertEqual(stat.S_IMODE(os.stat(server.path).st_mode), 0o2770)
        self.assertEqual(stat.S_IMODE(os.stat(server.ctlPath).st_mode), 0o660)
        client = self.rawClient(server.path)
        os.chown(client.path, 65534, -1)
        client.request()
        await until(client.poll, "the reply")
        client.finish()
        (endpoint,) = server.endpoints.values()
        st = os.stat(endpoint.path)
        # Running as root: owned by the client, mode & 0700.
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (65534, 0o600))


# ---------------------------------------------------------------------------
# Two network namespaces, a C tap plug in each, through our switch.


class NamespaceTests(Vde2TestCase):
    async def test_pingThroughOurSwitch(self) -> None:
        requireTun()
        cTool("vde_plug")
        namespaces = [makeNamespace(self), makeNamespace(self)]
        tag = f"{os.getpid() % 100000}"
        taps = [f"vt2t{tag}a", f"vt2t{tag}b"]
        host, atHost, server = await self.openNode("switch")
        procs = [cPlug(self, tap, "tap://" + tap, self.path("node")) for tap in taps]
        await until(lambda: len(server.endpoints) == 2, "both tap plugs to join", procs=procs)
        for i, (ns, tap) in enumerate(zip(namespaces, taps)):
            netns.moveLink(tap, ns)
            netns.addAddress(tap, f"10.77.0.{i + 1}/24", ns)
            netns.setUp(tap, ns)
        # In a thread: our switch, in the reactor, carries the ping.
        replies = await deferToThread(ping, namespaces[0].name, "10.77.0.2", 1)
        self.assertEqual(replies, 1, "no ping reply from 10.77.0.2" + describeAll(procs))
        # The switch saw the traffic (ARP broadcasts reach the host port too).
        self.assertTrue(atHost.frames)


_NOBODY_CLIENT = r"""
import os, socket, struct, sys
ctl_path, data_path = sys.argv[1], sys.argv[2]
if data_path == "own":
    data_path = os.path.join(os.path.dirname(ctl_path), ".nobody-%d" % os.getpid())
    data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    data.bind(data_path)
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.settimeout(5)
ctl.connect(ctl_path)
ctl.send(struct.pack("<III", 0xfeedface, 3, 0) + struct.pack("<H108s", 1, data_path.encode()) + b"nobody")
print("replied" if len(ctl.recv(256)) == 110 else "closed")
"""


class ForeignSocketTests(Vde2TestCase):
    async def test_onlyOwnSocket(self) -> None:
        """
        Unlike vde_switch, a client cannot make the switch send frames to a
        socket that is not its own: a switch run by root would otherwise
        write to any socket of the system.
        """
        requireRoot("to run a client as another user")
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise SkipTest("setpriv is not installed: apt-get install util-linux")
        os.chmod(self.tmp, 0o755)
        server = self.ourServer(mode=0o666)
        victim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(victim.close)
        victimPath = self.path("victim")
        victim.bind(victimPath)
        os.chmod(victimPath, 0o666)

        async def asNobody(dataPath: str) -> str:
            argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                    sys.executable, "-c", _NOBODY_CLIENT, server.ctlPath, dataPath]
            result = await deferToThread(
                subprocess.run, argv, capture_output=True, text=True, timeout=20
            )
            self.assertEqual(result.stderr, "")
            return result.stdout.strip()

        self.assertEqual(await asNobody(victimPath), "closed")
        self.assertIn("belongs to uid 0, not to the connecting uid 65534", self.log.text())
        self.assertEqual(await asNobody("own"), "replied", self.log.text())


class SwitchDirectoryTests(Vde2TestCase):
    """
    An existing directory is reused only if nobody but the switch's user can
    replace its C{ctl} socket (issue 8); C{forceDir} takes it anyway.
    """

    def assertDirectoryRefused(self, directory: str, *words: str, **kw) -> None:
        before = os.lstat(directory)
        node = Node(SwitchEngine(), reactor)
        self.addCleanup(node.close)
        with self.assertRaises(VdeError) as caught:
            VdeServer(reactor, node, directory, **kw).start()
        message = str(caught.exception)
        self.assertEqual(caught.exception.errno, errno.EPERM)
        self.assertEqual(len(message.splitlines()), 1)
        for word in (directory, "replace the ctl socket", "choose another directory", *words):
            self.assertIn(word, message)
        after = os.lstat(directory)
        self.assertEqual((after.st_uid, after.st_gid, after.st_mode),
                         (before.st_uid, before.st_gid, before.st_mode))
        self.assertNotIn("ctl", os.listdir(directory))

    def test_anotherUsersDirectory(self) -> None:
        """
        A directory of another (real, made for the test) user, in the
        C{/tmp} layout a user's C{vde_switch} leaves: refused, untouched;
        C{forceDir} takes it.
        """
        user = makeUser(self)
        directory = self.path("sw")
        os.mkdir(directory)
        os.chown(directory, user.pw_uid, user.pw_gid)
        os.chmod(directory, 0o2700)
        self.assertDirectoryRefused(
            directory, f"belongs to {user.pw_name} (uid {user.pw_uid})", "not to root (uid 0)"
        )
        server = self.ourServer(forceDir=True)
        self.assertTrue(isListening(server.ctlPath))

    def test_anotherUsersLink(self) -> None:
        """
        A symbolic link of another user leading to the switch user's own
        directory is refused too: its owner could point it elsewhere.
        """
        user = makeUser(self)
        target = self.path("target")
        os.mkdir(target, 0o700)
        link = self.path("sw")
        os.symlink(target, link)
        os.lchown(link, user.pw_uid, user.pw_gid)
        self.assertDirectoryRefused(link, f"a symbolic link of {user.pw_name}")

    def test_writableBeyondTheMode(self) -> None:
        """
        Group or others may write to the directory only as far as the
        switch's mode grants: a C{--mode 666} switch has a world-writable
        directory, a C{--mode 660} one a group-writable one (of the
        C{--group}, when one is given).
        """
        directory = self.path("sw")
        os.mkdir(directory)
        os.chmod(directory, 0o777)
        self.assertDirectoryRefused(directory, "writable by others (mode 0777", "asks for 2700")
        os.chmod(directory, 0o770)
        self.assertDirectoryRefused(directory, "writable by the group", "(mode 0770")
        server = self.ourServer(mode=0o660)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o2770)
        server.stop()
        os.mkdir(directory)
        os.chmod(directory, 0o777)
        server = self.ourServer(mode=0o666)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o2777)
        server.stop()

    def test_writableByAnotherGroup(self) -> None:
        """
        A C{--mode 660} switch for one group refuses a directory writable by
        another group.
        """
        requireRoot("to give a directory to another group")
        directory = self.path("sw")
        os.mkdir(directory)
        os.chown(directory, -1, 65534)
        os.chmod(directory, 0o770)
        self.assertDirectoryRefused(directory, "writable by the group", mode=0o660, group="0")


class DeadPortTests(Vde2TestCase):
    async def test_spoofingSender(self) -> None:
        """
        A port whose client closed its data socket (keeping its control
        connection) takes no frames from another local sender: the kernel
        refuses them while the association stands, and the switch closes
        the port the moment a send finds the client gone (which dissolves
        it), so the socket file is gone too.  Nothing the spoofer sends is
        forwarded.
        """
        server = self.ourServer(mode=0o666)
        victim = await self.rawJoin(server.path, description=b"victim")
        witness = await self.rawJoin(server.path, description=b"witness")
        (endpoint,) = [e for e in server.endpoints.values() if e.rawDescription == b"victim"]
        dataPath = endpoint.path
        spoofer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(spoofer.close)
        spoofed = 0

        def spoof() -> Optional[int]:
            nonlocal spoofed
            spoofed += 1
            try:
                spoofer.sendto(mkframe(BROADCAST, mac(66), 1000 + spoofed), dataPath)
            except OSError as e:
                return e.errno
            return None

        self.assertEqual(spoof(), errno.EPERM)
        victim.data.close()
        self.assertEqual(spoof(), errno.EPERM)
        witness.data.send(mkframe(BROADCAST, mac(2), 1))
        await until(lambda: victim.poll() and victim.eof, "the switch to close the dead port")
        self.assertNotIn(endpoint.endpointId, server.endpoints)
        self.assertFalse(os.path.exists(dataPath))
        self.assertEqual(endpoint.port.endpoints, [])
        self.assertEqual(endpoint.stats.dropped, 1)
        self.assertEqual(spoof(), errno.ENOENT)
        self.assertIn("the client's data socket is closed; closing the port", self.log.text())
        # The others still exchange frames, and never saw a spoofed one.
        other = await self.rawJoin(server.path, description=b"other")
        other.data.send(mkframe(BROADCAST, mac(3), 2))
        seen: list[int] = []
        await until(lambda: 2 in seen or seen.extend(tags(witness.recvAll())),
                    "the witness to get frame 2")
        seen += tags(other.recvAll())
        self.assertEqual([t for t in seen if t > 1000], [])
