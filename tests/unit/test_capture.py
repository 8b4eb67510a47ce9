"""
Tests for capture inside a switch: the node's taps and mirror ports
(L{vdetwist.node.node}), the threaded pcap writer and the console's capture
commands (L{vdetwist.lab.capture}, C{pdump/*}, C{port/capture},
C{port/mirror}).  In-memory plugs for the node, real files and the real
reactor for the writer.
"""

from __future__ import annotations

import errno
import os
from functools import partial

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from vdetwist.errors import VdeError
from vdetwist.lab.capture import CaptureFile, SwitchCaptures, openPcap
from vdetwist.wire.pcap import PcapError, fileHeader, parseFile
from vdetwist.node import HubEngine, Node, SwitchEngine
from vdetwist.node.mactable import MacTable
from vdetwist.testing import MemoryPlug
from vdetwist.vde2.interpreter import VdeConsole
from tests.support import LogCapture, tmpdir, until

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
C = bytes.fromhex("020000000003")
BCAST = b"\xff" * 6


def eth(dst: bytes, src: bytes, n: int = 0, size: int = 60) -> bytes:
    return dst + src + b"\x88\xb5" + n.to_bytes(4, "big") + b"x" * (size - 18)


def switch(engine=None, clock=None):
    """
    A vde_switch-like node with plugs on ports 1, 2 and 3.
    """
    clock = clock if clock is not None else Clock()
    node = Node(engine or SwitchEngine(), clock, MacTable(clock), numports=8,
                keepInactivePorts=True)
    plugs = [MemoryPlug(f"p{n}") for n in (1, 2, 3)]
    for n, plug in enumerate(plugs, 1):
        node.addPort(plug, n)
    return node, plugs


def received(plug: MemoryPlug) -> list[bytes]:
    frames, plug.sentFrames = plug.sentFrames, []
    return frames


class TapTests(SynchronousTestCase):
    """
    L{Node.addTap}: taps see what they should, and an untapped port costs
    nothing (its bound callables are the ones it had before).
    """

    def test_portTapBothDirections(self) -> None:
        node, (p1, p2, p3) = switch()
        seen: list[bytes] = []
        node.addTap(node.getPort(1), seen.append)
        out, back = eth(B, A, 1), eth(A, B, 2)
        p1.inject(out)
        p2.inject(back)
        p3.inject(eth(A, C, 3))
        self.assertEqual(seen, [out, back, eth(A, C, 3)])
        self.assertEqual(received(p2), [out])

    def test_nodeTapIngressOnce(self) -> None:
        """
        The node's taps see each frame entering the node once, from any
        port (a flood is not seen once per copy).
        """
        node, (p1, p2, p3) = switch(HubEngine())
        seen: list[bytes] = []
        node.addTap(None, seen.append)
        frames = [eth(BCAST, A, 1), eth(BCAST, B, 2), eth(BCAST, C, 3)]
        for plug, frame in zip((p1, p2, p3), frames):
            plug.inject(frame)
        self.assertEqual(seen, frames)
        # A port joining later is tapped as well.
        p4 = MemoryPlug("p4")
        node.addPort(p4, 4)
        p4.inject(eth(BCAST, A, 4))
        self.assertEqual(len(seen), 4)

    def test_offIsFree(self) -> None:
        """
        After the last tap goes, every endpoint's receiver is again the
        plain engine call and every output the plug's own C{send}: no frame
        pays for a capture that is off.
        """
        node, plugs = switch()
        tap = [].append
        ports = [node.getPort(n) for n in (1, 2, 3)]

        def wiring():
            return [
                (link.frameReceived.func, link.frameReceived.args, port.output)
                for port in ports for link in port._links
            ]

        plain = wiring()
        self.assertEqual(plain[0][:2], (node.engine.input, (ports[0],)))
        self.assertEqual(plain[0][2], plugs[0].send)
        node.addTap(ports[0], tap)
        node.addTap(None, tap)
        self.assertNotEqual(wiring(), plain)
        node.removeTap(ports[0], tap)
        node.removeTap(None, tap)
        self.assertEqual(wiring(), plain)

    def test_engineChange(self) -> None:
        """
        Taps survive C{port/sethub}.
        """
        node, (p1, p2, p3) = switch()
        seen: list[bytes] = []
        node.addTap(node.getPort(1), seen.append)
        node.setEngine(HubEngine())
        p1.inject(eth(B, A))
        self.assertEqual(len(seen), 1)


class MirrorTests(SynchronousTestCase):
    def test_copies(self) -> None:
        """
        A mirror port gets every frame its source receives or is sent, and
        only those: not the floods it would get as a port.
        """
        node, (p1, p2, p3) = switch()
        node.mirror(node.getPort(1), node.getPort(3))
        frames = [eth(BCAST, A, 1), eth(A, B, 2), eth(B, A, 3)]
        p1.inject(frames[0])
        p2.inject(frames[1])
        p1.inject(frames[2])
        self.assertEqual(received(p3), frames)
        self.assertEqual(received(p2), [frames[0], frames[2]])
        self.assertEqual(received(p1), [frames[1]])
        self.assertEqual(node.getPort(3).outFrames, 3)

    def test_captureMirrorPort(self) -> None:
        """
        A capture of a mirror port records the copies it is sent.
        """
        node, (p1, p2, p3) = switch()
        seen: list[bytes] = []
        node.addTap(node.getPort(3), seen.append)
        node.mirror(node.getPort(1), node.getPort(3))
        p1.inject(eth(BCAST, A, 1))
        p2.inject(eth(BCAST, B, 2))
        self.assertEqual(seen, [eth(BCAST, A, 1), eth(BCAST, B, 2)])
        self.assertEqual(received(p3), seen)

    def test_mirrorPortLeavesForwarding(self) -> None:
        """
        What a mirror port's plug sends is dropped (counted), its addresses
        are forgotten; after C{unmirror} it is a port again.
        """
        node, (p1, p2, p3) = switch()
        port3 = node.getPort(3)
        p3.inject(eth(BCAST, C))
        self.assertIsNotNone(node.table.find(C, 0))
        node.mirror(node.getPort(1), port3)
        self.assertIsNone(node.table.find(C, 0))
        p3.inject(eth(BCAST, C))
        self.assertEqual((received(p1), received(p2), port3.inDropped), ([eth(BCAST, C)], [eth(BCAST, C)], 1))
        node.unmirror(node.getPort(1), port3)
        p2.inject(eth(BCAST, B))
        self.assertEqual(received(p3), [eth(BCAST, B)])
        p3.inject(eth(BCAST, C, 5))
        self.assertEqual(received(p1), [eth(BCAST, B), eth(BCAST, C, 5)])

    def test_refused(self) -> None:
        """
        No mirror of itself, no chains (so no loops), no duplicates; unknown
        pairs cannot be undone.
        """
        node, _ = switch()
        one, two, three = (node.getPort(n) for n in (1, 2, 3))
        self.assertEqual(self.assertRaises(VdeError, node.mirror, one, one).errno, errno.EINVAL)
        node.mirror(one, three)
        self.assertEqual(self.assertRaises(VdeError, node.mirror, one, three).errno, errno.EEXIST)
        self.assertEqual(self.assertRaises(VdeError, node.mirror, three, two).errno, errno.EINVAL)
        self.assertEqual(self.assertRaises(VdeError, node.mirror, two, one).errno, errno.EINVAL)
        self.assertEqual(self.assertRaises(VdeError, node.unmirror, two, three).errno, errno.ENXIO)
        node.mirror(two, three)
        self.assertEqual(three.mirrorSources, (one, two))

    def test_removedPort(self) -> None:
        """
        Removing a mirrored port ends its mirror: the mirror port forwards
        again.
        """
        node, (p1, p2, p3) = switch()
        node.mirror(node.getPort(1), node.getPort(3))
        node.removePort(node.getPort(1))
        self.assertEqual(node.getPort(3).mirrorSources, ())
        p2.inject(eth(BCAST, B))
        self.assertEqual(received(p3), [eth(BCAST, B)])


class OpenPcapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tmpdir(self)
        self.path = os.path.join(self.dir, "f.pcap")

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def test_new(self) -> None:
        os.close(openPcap(self.path))
        self.assertEqual(self.read(), fileHeader())

    def test_truncates(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"old contents")
        os.close(openPcap(self.path))
        self.assertEqual(self.read(), fileHeader())

    def test_append(self) -> None:
        """
        C{append}: a file with our header keeps its records, an empty one
        gets the header, any other file is refused and left alone.
        """
        with open(self.path, "wb") as f:
            f.write(fileHeader() + b"R")
        fd = openPcap(self.path, append=True)
        os.write(fd, b"S")
        os.close(fd)
        self.assertEqual(self.read(), fileHeader() + b"RS")
        open(self.path, "wb").close()
        os.close(openPcap(self.path, append=True))
        self.assertEqual(self.read(), fileHeader())
        with open(self.path, "wb") as f:
            f.write(fileHeader(96))
        error = self.assertRaises(PcapError, openPcap, self.path, append=True)
        self.assertIn("cannot append", str(error))
        self.assertEqual(self.read(), fileHeader(96))

    def test_exclusive(self) -> None:
        """
        C{exclusive} (the console's captures): never an existing file; new
        files are mode 0600.
        """
        os.close(openPcap(self.path, exclusive=True))
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        error = self.assertRaises(OSError, openPcap, self.path, exclusive=True)
        self.assertEqual(error.errno, errno.EEXIST)


class CaptureFileTests(TestCase):
    def setUp(self) -> None:
        self.dir = tmpdir(self)
        self.path = os.path.join(self.dir, "f.pcap")

    def frames(self) -> list[bytes]:
        with open(self.path, "rb") as f:
            return [r.data for r in parseFile(f.read())[1]]

    async def test_writes(self) -> None:
        """
        Every frame taken is in the file once it is closed, in order.
        """
        capture = CaptureFile(reactor, openPcap(self.path), self.path)
        frames = [eth(B, A, n, 60 + n) for n in range(500)]
        for frame in frames:
            capture(frame)
        await until(lambda: capture.held == 0, "the writer to catch up")
        capture(eth(A, B, 999))
        await capture.close()
        self.assertEqual(self.frames(), frames + [eth(A, B, 999)])
        self.assertEqual((capture.frames, capture.dropped), (501, 0))
        # Closing again is harmless, and nothing is taken any more.
        await capture.close()
        capture(eth(A, B))
        self.assertEqual(capture.dropped, 1)

    async def test_bounded(self) -> None:
        """
        Frames beyond the limit of bytes not yet written are dropped and
        counted, never held.
        """
        capture = CaptureFile(reactor, openPcap(self.path), self.path, limit=1000)
        for n in range(100):
            capture(eth(B, A, n, 84))
        self.assertEqual((capture.frames, capture.dropped), (10, 90))
        await capture.close()
        self.assertEqual(len(self.frames()), 10)

    async def test_writeFails(self) -> None:
        """
        A write error (a full disk: /dev/full) stops the capture with one
        error line and tells the owner; later frames are dropped.
        """
        logs = LogCapture(self)
        failures: list[OSError] = []
        fd = os.open("/dev/full", os.O_WRONLY)
        capture = CaptureFile(reactor, fd, "/dev/full", onFailure=failures.append)
        capture(eth(B, A))
        await until(lambda: failures, "the failure")
        capture(eth(B, A))
        await capture.close()
        self.assertEqual([e.errno for e in failures], [errno.ENOSPC])
        errors = logs.withFormat("capture to {name} stopped")
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["error"], os.strerror(errno.ENOSPC))
        self.assertEqual(capture.dropped, 1)

    async def test_reopen(self) -> None:
        """
        C{reopen} (vdecapture's SIGHUP): what came before is in the old
        file, what comes after in the new one.
        """
        capture = CaptureFile(reactor, openPcap(self.path), self.path)
        capture(eth(B, A, 1))
        os.rename(self.path, self.path + ".old")
        capture.reopen(partial(openPcap, self.path))
        capture(eth(B, A, 2))
        await capture.close()
        self.assertEqual(self.frames(), [eth(B, A, 2)])
        with open(self.path + ".old", "rb") as f:
            self.assertEqual([r.data for r in parseFile(f.read())[1]], [eth(B, A, 1)])


class ConsoleCaptureTests(TestCase):
    """
    The console's capture commands on a node of in-memory plugs, writing
    real files.
    """

    def setUp(self) -> None:
        self.dir = tmpdir(self)
        self.node, self.plugs = switch(clock=reactor)
        self.console = VdeConsole(self.node, reactor, macaddr=b"\x00\xff\x01\x02\x03\x04")
        self.addCleanup(self.console.close)

    def cmd(self, line: str) -> str:
        return self.console.execute(line)[0].decode()

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def read(self, name: str) -> list[bytes]:
        with open(self.path(name), "rb") as f:
            return [r.data for r in parseFile(f.read())[1]]

    async def test_portCapture(self) -> None:
        """
        C{port/capture N FILE} records both directions of port N,
        C{port/capture N off} ends it; C{port/captureprint} counts.
        """
        p1, p2, p3 = self.plugs
        self.assertEqual(self.cmd(f"port/capture 2 {self.path('two.pcap')}"), "1000 Success\n")
        frames = [eth(BCAST, A, 1), eth(A, B, 2), eth(B, C, 3)]
        p1.inject(frames[0])
        p2.inject(frames[1])
        p3.inject(frames[2])
        self.assertEqual(
            self.cmd("port/captureprint"),
            "0000 DATA END WITH '.'\n"
            f"Port 0002 frames 3 dropped 0 file {self.path('two.pcap')}\n.\n1000 Success\n",
        )
        self.assertEqual(self.cmd("port/capture 2 off"), "1000 Success\n")
        p1.inject(eth(BCAST, A, 4))
        await self.console.close()
        self.assertEqual(self.read("two.pcap"), frames)

    def test_portCaptureErrors(self) -> None:
        """
        Bad arguments, ports not captured, a port captured twice, an
        existing file, a file that cannot be created: errors, and one error
        line for the file.
        """
        logs = LogCapture(self)
        existing = self.path("exists")
        open(existing, "w").close()
        self.assertEqual(self.cmd("port/capture 2"), "1022 Invalid argument\n")
        self.assertEqual(self.cmd("port/capture x y"), "1022 Invalid argument\n")
        self.assertEqual(self.cmd("port/capture 7 f"), "1006 No such device or address\n")
        self.assertEqual(self.cmd("port/capture 2 off"), "1006 No such device or address\n")
        self.assertEqual(self.cmd(f"port/capture 2 {existing}"), "1017 File exists\n")
        self.assertEqual(
            self.cmd(f"port/capture 2 {self.path('no/such/dir')}"), "1002 No such file or directory\n"
        )
        errors = logs.withFormat("cannot capture {what}")
        self.assertEqual(
            [(e["what"], e["error"]) for e in errors],
            [("port 2", "File exists"), ("port 2", "No such file or directory")],
        )
        self.assertEqual(self.cmd(f"port/capture 2 {self.path('a')}"), "1000 Success\n")
        self.assertEqual(self.cmd(f"port/capture 2 {self.path('b')}"), "1016 Device or resource busy\n")

    async def test_pdump(self) -> None:
        """
        vde2's C{pdump}: C{pdump/filename} shows and sets the file (created
        at once), C{pdump/active 1} dumps every frame entering the switch
        once, C{pdump/active 0} pauses (the file stays open).
        """
        p1, p2, p3 = self.plugs
        self.assertEqual(
            self.cmd("pdump/filename"),
            "0000 DATA END WITH '.'\ndumpfile=vde_dump.cap\n.\n1000 Success\n",
        )
        path = self.path("dump.pcap")
        self.assertEqual(
            self.cmd(f"pdump/filename {path}"),
            f"0000 DATA END WITH '.'\ndumpfile={path}\n.\n1000 Success\n",
        )
        self.assertTrue(os.path.exists(path))
        p1.inject(eth(BCAST, A, 0))
        self.assertEqual(self.cmd("pdump/active 1"), "0000 DATA END WITH '.'\n.\n1000 Success\n")
        frames = [eth(BCAST, A, 1), eth(A, B, 2), eth(A, C, 3)]
        p1.inject(frames[0])
        p2.inject(frames[1])
        self.cmd("pdump/active 0")
        p1.inject(eth(BCAST, A, 9))
        self.cmd("pdump/active 1")
        p3.inject(frames[2])
        self.assertIn("pdump active frames 3 dropped 0", self.cmd("port/captureprint"))
        await self.console.close()
        self.assertEqual(self.read("dump.pcap"), frames)

    def test_pdumpErrors(self) -> None:
        """
        A dump file that cannot be created: an ERROR line as vde2's, the
        errno, one error line in the log; the old name stays.
        """
        logs = LogCapture(self)
        bad = self.path("no/dir.pcap")
        self.assertEqual(
            self.cmd(f"pdump/filename {bad}"),
            f"0000 DATA END WITH '.'\nERROR: cannot dump to {bad}: No such file or directory\n"
            ".\n1002 No such file or directory\n",
        )
        self.assertIn("dumpfile=vde_dump.cap", self.cmd("pdump/filename"))
        # The default name, in the working directory, exists already.
        open("vde_dump.cap", "w").close()
        self.addCleanup(os.unlink, "vde_dump.cap")
        self.assertIn("1017 File exists", self.cmd("pdump/active 1"))
        self.assertEqual(len(logs.withFormat("cannot capture {what}")), 2)
        self.assertFalse(self.console.captures.pdumpActive)

    async def test_writeFailureKeepsSwitching(self) -> None:
        """
        A capture whose file stops accepting writes (its descriptor made
        /dev/full) ends with one error line; the switch goes on forwarding
        and the capture is gone.
        """
        logs = LogCapture(self)
        p1, p2, p3 = self.plugs
        self.cmd(f"port/capture 1 {self.path('one.pcap')}")
        capture = self.console.captures.ports[self.node.getPort(1)]
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, capture._fd)
        os.close(full)
        p1.inject(eth(BCAST, A, 1))
        await until(lambda: not self.console.captures.ports, "the capture to end")
        for n in range(10):
            p1.inject(eth(BCAST, A, n))
        self.assertEqual(len(received(p2)), 11)
        self.assertEqual(len(logs.withFormat("capture to {name} stopped")), 1)
        self.assertEqual(self.node.getPort(1).taps, ())

    async def test_mirrorCommands(self) -> None:
        p1, p2, p3 = self.plugs
        self.assertEqual(self.cmd("port/mirror 1 3"), "1000 Success\n")
        self.assertEqual(self.cmd("port/mirror 1 1"), "1022 Invalid argument\n")
        self.assertEqual(self.cmd("port/mirror 1 7"), "1006 No such device or address\n")
        self.assertEqual(self.cmd("port/mirror 1"), "1022 Invalid argument\n")
        self.assertEqual(
            self.cmd("port/mirrorprint"),
            "0000 DATA END WITH '.'\nPort 0003 mirrors 0001\n.\n1000 Success\n",
        )
        p1.inject(eth(BCAST, A))
        self.assertEqual(received(p3), [eth(BCAST, A)])
        self.assertEqual(self.cmd("port/unmirror 1 3"), "1000 Success\n")
        self.assertEqual(self.cmd("port/unmirror 1 3"), "1006 No such device or address\n")
        self.assertEqual(self.cmd("port/mirrorprint"), "0000 DATA END WITH '.'\n.\n1000 Success\n")

    def test_help(self) -> None:
        """
        C{help port/capture} lists the capture commands (the print command
        is found before its prefix).
        """
        text = self.cmd("help port/capture")
        self.assertIn("port/captureprint", text)
        self.assertIn("port/capture       N FILE|off", text)
        self.assertIn("pdump/filename", self.cmd("help pdump"))
        self.assertEqual(self.console.lookup("port/captureprint").path, "port/captureprint")
        self.assertEqual(self.console.lookup("port/mirrorprint").path, "port/mirrorprint")


class SwitchCapturesTests(TestCase):
    async def test_portRemoved(self) -> None:
        """
        A captured port that goes away ends its capture (file closed).
        """
        directory = tmpdir(self)
        node, (p1, p2, p3) = switch(clock=reactor)
        node.keepInactivePorts = False
        captures = SwitchCaptures(node, reactor)
        port = node.addPort(MemoryPlug("p4"), 4)
        captures.capturePort(port, os.path.join(directory, "four.pcap"))
        port.endpoints[0].close()
        self.assertEqual(captures.ports, {})
        await captures.stopAll()
        with open(os.path.join(directory, "four.pcap"), "rb") as f:
            self.assertEqual(f.read(), fileHeader())
