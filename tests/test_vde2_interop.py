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
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import cTool, ourEnv, ourTool, records, requireRoot
from vdetwist.errors import PlugClosed, VdeError
from vdetwist.node import MacTable, Node, SwitchEngine, TrunkSwitchEngine
from vdetwist.registry import registry
from vdetwist.stream import StreamDecoder
from vdetwist.testing import FrameCollector
from vdetwist.vde2 import protocol
from vdetwist.vde2.client import connectVde
from vdetwist.vde2.server import VdeServer

#: Upper bound of any single wait; a passing run is far below.
TIMEOUT = 10.0
#: Ethertype of the test frames.
ETHERTYPE = b"\x88\xb5"
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
    header += ETHERTYPE
    body = struct.pack(">I", tag)
    return (header + body).ljust(size, b"\xa5")


def tagOf(frame: bytes) -> int:
    offset = 18 if frame[12:14] == b"\x81\x00" else 14
    return struct.unpack_from(">I", frame, offset)[0]


def tags(frames: Sequence[bytes]) -> list[int]:
    return [tagOf(f) for f in list(frames) if ETHERTYPE in f[12:18]]


def settle(seconds: float = 0.02):
    return deferLater(reactor, seconds)


async def until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT,
                procs: Sequence["Proc"] = (), interval: float = 0.01) -> None:
    """
    Let the reactor run until C{predicate} holds; fail naming C{what} (and
    showing the processes' stderr) after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            details = "".join(
                f"\n--- {p.name} (status {p.proc.poll()}) stderr:\n{p.stderrText()}"
                for p in procs
            )
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{details}")
        await deferLater(reactor, interval)


class Proc:
    """
    A process speaking the VDE stream encoding on stdin/stdout.
    """

    def __init__(self, test: TestCase, name: str, argv: list[str],
                 env: Optional[dict] = None) -> None:
        self.name = name
        self.frames: list[bytes] = []
        self._stderr = bytearray()
        decoder = StreamDecoder(self.frames.append, lambda n, d: None)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, process_group=0,
        )
        self.pid = self.proc.pid
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, decoder.feed), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr.extend),
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        test.addCleanup(self.stop)

    @staticmethod
    def _pump(pipe, sink) -> None:
        fd = pipe.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            sink(data)

    def send(self, *frames: bytes) -> None:
        self.proc.stdin.write(records(frames))
        self.proc.stdin.flush()

    def tags(self) -> list[int]:
        return tags(self.frames)

    def stderrText(self) -> str:
        return bytes(self._stderr).decode("utf-8", "replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        for thread in self._threads:
            thread.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


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


class LogCapture:
    def __init__(self, test: TestCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def text(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events)


class Vde2TestCase(TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="vt2-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.log = LogCapture(self)

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def cPlug(self, name: str, *vnls: str) -> Proc:
        return Proc(self, name, [cTool("vde_plug"), *vnls])

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


class CSwitch:
    """
    A C C{vde_switch} with a management socket; stdin kept open (EOF on its
    stdin ends it).
    """

    def __init__(self, test: Vde2TestCase, *args: str) -> None:
        self.dir = test.path("csw")
        self.mgmtPath = test.path("mgmt")
        self.stderr = open(test.path("csw.err"), "w+b")
        self.proc = subprocess.Popen(
            [cTool("vde_switch"), "-s", self.dir, "-M", self.mgmtPath, *args],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.stderr,
        )
        test.addCleanup(self.stop)

    async def started(self) -> None:
        await until(lambda: os.path.exists(os.path.join(self.dir, "ctl"))
                    and os.path.exists(self.mgmtPath), "vde_switch to start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.stderr.close()

    def mgmt(self, command: str) -> str:
        """
        Run a console command; its output (blocking: the switch is another
        process).
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.mgmtPath)
            data = b""
            while not data.endswith(b"vde$ "):
                data += s.recv(4096)
            s.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\nvde$ "):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.sendall(b"logout\n")
            return data.decode("utf-8", "replace")


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
        plug = await registry.open(reactor, "vde://" + switch.dir, "vdetwist-test")
        self.addCleanup(plug.close)
        ours = FrameCollector()
        plug.startReceiving(ours)
        expected = f"vdetwist-test user=root pid={os.getpid()}" if os.geteuid() == 0 else \
            "vdetwist-test user="
        printed = switch.mgmt("port/print")
        self.assertIn("module unix prog   : " + expected, printed)
        other = self.cPlug("c", switch.dir)
        await until(lambda: switch.mgmt("port/print").count("endpoint ID") == 2,
                    "the C plug to join", procs=[other])
        # Learning frames both ways, then unicast both ways.
        other.send(mkframe(BROADCAST, mac(2), 1))
        await until(lambda: tags(ours.frames) == [1], "C -> ours broadcast", procs=[other])
        plug.send(mkframe(BROADCAST, mac(1), 2))
        await until(lambda: other.tags() == [2], "ours -> C broadcast", procs=[other])
        # (Sizes up to 1514: vde_switch 2.3.2 truncates longer frames.)
        for n in range(10, 30):
            plug.send(mkframe(mac(2), mac(1), n, size=60 + 70 * (n - 10)))
            other.send(mkframe(mac(1), mac(2), 100 + n, size=60 + 70 * (n - 10)))
            await settle(0.005)
        await until(lambda: len(other.tags()) == 21 and len(tags(ours.frames)) == 21,
                    "20 unicast frames each way", procs=[other])
        self.assertEqual(other.tags(), [2] + list(range(10, 30)))
        self.assertEqual(tags(ours.frames), [1] + list(range(110, 130)))
        self.assertEqual(ours.frames[-1], mkframe(mac(1), mac(2), 129, size=60 + 70 * 19))
        # Leaving: the port is inactive, our socket files are gone.
        plug.close()
        await until(lambda: expected not in switch.mgmt("port/print"), "our port to go")
        self.assertEqual(switch.mgmt("port/print").count("endpoint ID"), 1)
        names = self.files(switch.dir)
        self.assertEqual(len(names), 2, names)  # ctl and the C plug's socket
        self.assertFalse([n for n in names if n.startswith(".")])

    async def test_kickedByEpclose(self) -> None:
        """
        C{port/epclose} closes our plug cleanly.
        """
        switch = await self.startSwitch()
        plug = await connectVde(reactor, switch.dir, description=b"kick-me")
        ours = FrameCollector()
        plug.startReceiving(ours)
        printed = switch.mgmt("port/print")
        match = re.search(r"Port (\d+) .*?endpoint ID (\d+) module unix prog   : kick-me",
                          printed, re.S)
        self.assertIsNotNone(match, printed)
        self.assertIn("1000 Success", switch.mgmt(f"port/epclose {int(match[1])} {int(match[2])}"))
        await until(lambda: ours.reason is not None, "our plug to close")
        ours.reason.trap(PlugClosed)
        self.assertTrue(plug.closed)

    async def test_switchExits(self) -> None:
        """
        When the switch exits, the plug closes cleanly.
        """
        switch = await self.startSwitch()
        plug = await connectVde(reactor, switch.dir, description=b"t")
        ours = FrameCollector()
        plug.startReceiving(ours)
        switch.proc.stdin.close()
        await until(lambda: ours.reason is not None, "our plug to close")
        ours.reason.trap(PlugClosed)

    async def test_port0AndPortN(self) -> None:
        """
        C{[0]} gets the management port's socket C{000.N}, C{[5]} C{005.N}.
        """
        switch = await self.startSwitch()
        zero = await registry.open(reactor, f"vde://{switch.dir}[0]")
        self.addCleanup(zero.close)
        five = await registry.open(reactor, f"{switch.dir}[5]")
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
            await connectVde(reactor, switch.dir, port=40, timeout=0.3)
        self.assertEqual(caught.exception.errno, errno.ETIMEDOUT)
        self.assertIn("no answer", str(caught.exception))
        self.assertFalse([n for n in self.files(switch.dir) if n.startswith(".")])

    async def test_ourScript(self) -> None:
        """
        Our C{vde_plug} script (stdio <-> vde://) on the C switch, with a
        C client; it exits with status 0 when the switch goes away.
        """
        switch = await self.startSwitch()
        ours = Proc(self, "our vde_plug", ourTool("vde_plug") + [switch.dir], env=ourEnv())
        other = self.cPlug("c", switch.dir)
        await until(lambda: switch.mgmt("port/print").count("endpoint ID") == 2,
                    "both plugs to join", procs=[ours, other])
        ours.send(mkframe(BROADCAST, mac(1), 1))
        other.send(mkframe(BROADCAST, mac(2), 2))
        await until(lambda: ours.tags() == [2] and other.tags() == [1], "frames",
                    procs=[ours, other])
        switch.proc.stdin.close()
        self.assertEqual(await deferToThread(ours.proc.wait, TIMEOUT), 0)
        self.assertNotIn("Traceback", ours.stderrText())

    async def test_cNetnode(self) -> None:
        """
        Our client on the C vdeplug4 C{switch://} (reply C{.../fdN} with
        garbage after the path), exchanging frames with a C client.
        """
        directory = self.path("cnode")
        node = Proc(self, "C switch://", [cTool("vde_plug"), "null://", "switch://" + directory])
        await until(lambda: os.path.exists(directory + "/ctl"), "the C node", procs=[node])
        plug = await connectVde(reactor, directory, description=b"ours")
        self.addCleanup(plug.close)
        self.assertRegex(plug.serverPath, r"/fd\d+$")
        ours = FrameCollector()
        plug.startReceiving(ours)
        other = self.cPlug("c", directory)
        other.send(mkframe(BROADCAST, mac(2), 1))
        await until(lambda: tags(ours.frames) == [1], "C -> ours", procs=[node, other])
        plug.send(mkframe(mac(2), mac(1), 2, size=9000))
        await until(lambda: other.tags() == [2], "ours -> C (jumbo)", procs=[node, other])
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
    async def joinC(self, server: VdeServer, directory: str, n: int) -> list[Proc]:
        procs = [self.cPlug(f"c{i}", directory) for i in range(n)]
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
                    and all(len(p.tags()) == 2 for p in procs), "broadcasts", procs=procs)
        self.assertEqual(sorted(a.tags()), [1, 2])
        self.assertEqual(sorted(b.tags()), [0, 2])
        host.send(mkframe(BROADCAST, mac(1), 3))
        await until(lambda: all(p.tags()[-1:] == [3] for p in procs), "host broadcast", procs=procs)
        # Unicast A -> B, B -> host, host -> C.
        a.send(mkframe(mac(11), mac(10), 4))
        b.send(mkframe(mac(1), mac(11), 5))
        host.send(mkframe(mac(12), mac(1), 6))
        await until(lambda: b.tags()[-1] == 4 and tags(atHost.frames)[-1] == 5
                    and c.tags()[-1] == 6, "unicast", procs=procs)
        await settle(0.2)
        self.assertEqual(a.tags()[2:], [3])
        self.assertEqual(b.tags()[2:], [3, 4])
        self.assertEqual(c.tags()[2:], [3, 6])
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
        await until(lambda: a.tags() == [1], "learning", procs=[a, b])
        tagged = mkframe(BROADCAST, mac(10), 2, size=100, vlan=5)
        a.send(tagged)
        await until(lambda: b.tags() == [2], "a tagged broadcast", procs=[a, b])
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
        await until(lambda: sorted(c.tags()) == [1, 2] and sorted(tags(atHost.frames)) == [1, 2]
                    and b.tags() == [2] and a.tags() == [1], "flooding", procs=[a, b, c])
        host.send(mkframe(mac(10), mac(1), 3))
        await until(lambda: [p.tags()[-1] for p in (a, b, c)] == [3, 3, 3], "host flooding",
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
        hub = Proc(self, "our hub", ourTool("vde_plug") + ["null://", "hub://" + directory],
                   env=ourEnv())
        await until(lambda: os.path.exists(directory + "/ctl"), "our hub to start", procs=[hub])
        a, b = self.cPlug("a", directory), self.cPlug("b", directory)
        await until(lambda: len([n for n in os.listdir(directory) if n.startswith("fd")]) == 2,
                    "clients to join", procs=[hub, a, b])
        a.send(mkframe(BROADCAST, mac(10), 1))
        b.send(mkframe(BROADCAST, mac(11), 2))
        await until(lambda: a.tags() == [2] and b.tags() == [1], "frames", procs=[hub, a, b])
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
        three, zero, anyp = self.cPlug("3", d + "[3]"), self.cPlug("0", d + "[0]"), self.cPlug("any", d)
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
        await until(lambda: anyp.tags() == [1] and three.tags() == [2], "frames", procs=procs)
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
        self.assertEqual(endpoint.description, f"ours user=root pid={os.getpid()}"
                         if os.geteuid() == 0 else endpoint.description)
        c = self.cPlug("c", server.path)
        await until(lambda: len(server.endpoints) == 2, "the C client", procs=[c])
        c.send(mkframe(BROADCAST, mac(2), 1))
        await until(lambda: tags(ours.frames) == [1], "C -> ours", procs=[c])
        big = mkframe(mac(2), mac(1), 2, size=9000)
        plug.send(big)
        await until(lambda: c.tags() == [2], "ours -> C (jumbo)", procs=[c])
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
        other = self.cPlug("c", long)
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

    async def test_portOutOfRangeAndBusy(self) -> None:
        """
        A port beyond the switch's ports, or held by another user, is
        refused by closing the connection (never left hanging); the same
        user may share a port.
        """
        server = self.ourServer(numports=8)
        high = self.rawClient(server.path)
        high.request(8)
        await self.assertRefused(high)
        self.assertIn("port 8 does not exist", self.log.text())
        first = await self.rawJoin(server.path, 2)
        second = await self.rawJoin(server.path, 2)
        self.assertEqual([e.port.number for e in server.endpoints.values()], [2, 2])
        if os.geteuid() != 0:
            return
        other = self.rawClient(server.path)
        os.chown(other.path, 65534, -1)
        other.request(2)
        await self.assertRefused(other)
        self.assertIn("port 2 is in use by another user", self.log.text())
        # Frames between the two endpoints of port 2 are not exchanged, the
        # port still works with a third client.
        third = await self.rawJoin(server.path)
        first.data.send(mkframe(BROADCAST, mac(1), 1))
        await until(lambda: bool(third.recvAll()), "a frame from port 2")
        self.assertEqual(second.recvAll(), [])

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
        a, b = self.cPlug("a", server.path), self.cPlug("b", server.path)
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

    async def test_stopEndsClients(self) -> None:
        server = self.ourServer()
        a = self.cPlug("a", server.path)
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

    async def test_permissions(self) -> None:
        requireRoot()
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

PING = r"""
import os, socket, struct, sys, time
def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
dst = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.5)
ident = os.getpid() & 0xffff
deadline = time.monotonic() + 8
seq = 0
while time.monotonic() < deadline:
    seq += 1
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"vdetwist ping"
    packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    s.sendto(packet, (dst, 0))
    try:
        while True:
            data, addr = s.recvfrom(2048)
            icmp = data[(data[0] & 15) * 4:]
            if addr[0] == dst and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                print("reply from", dst, "seq", seq)
                sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"""


class NamespaceTests(Vde2TestCase):
    def run_(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=15)

    async def test_pingThroughOurSwitch(self) -> None:
        requireRoot()
        if shutil.which("ip") is None:
            raise SkipTest("the ip command (iproute2) is not installed")
        cTool("vde_plug")
        if not os.path.exists("/dev/net/tun"):
            raise SkipTest("no /dev/net/tun")
        tag = f"{os.getpid() % 100000}"
        namespaces = [f"vt2ns{tag}a", f"vt2ns{tag}b"]
        taps = [f"vt2t{tag}a", f"vt2t{tag}b"]
        for ns in namespaces:
            try:
                self.run_("ip", "netns", "add", ns)
            except subprocess.CalledProcessError as e:
                raise SkipTest(f"cannot create network namespaces: {e.stderr.strip()}")
            self.addCleanup(self.run_, "ip", "netns", "del", ns, check=False)
        host, atHost, server = await self.openNode("switch")
        procs = []
        for tap in taps:
            procs.append(self.cPlug(tap, "tap://" + tap, self.path("node")))
        await until(lambda: len(server.endpoints) == 2, "both tap plugs to join", procs=procs)
        for i, (ns, tap) in enumerate(zip(namespaces, taps)):
            await deferToThread(self.run_, "ip", "link", "set", tap, "netns", ns)
            for command in (["ip", "addr", "add", f"10.77.0.{i + 1}/24", "dev", tap],
                            ["ip", "link", "set", tap, "up"],
                            ["ip", "link", "set", "lo", "up"]):
                await deferToThread(self.run_, "ip", "netns", "exec", ns, *command)
        result = await deferToThread(
            self.run_, "ip", "netns", "exec", namespaces[0], sys.executable, "-c", PING,
            "10.77.0.2", check=False,
        )
        self.assertEqual(result.returncode, 0, f"ping failed: {result.stdout} {result.stderr}")
        self.assertIn("reply from 10.77.0.2", result.stdout)
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
        requireRoot()
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
