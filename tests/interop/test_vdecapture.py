"""
C{vdecapture} and the switch's own captures, end to end: real switches (ours
under C{python -m twisted vde}, the C C{vde_switch}), traffic from real plugs
(the C C{vde_plug} and ours), files read back with our reader and with
Debian's C{tcpdump}, frame for frame and byte for byte.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from vdetwist.wire.pcap import PcapError, fileHeader, parseFile, parseHeader, parseRecords
from tests.support import (
    TIMEOUT,
    ConsoleClient,
    CSwitch,
    cPlug,
    frame,
    ourEnv,
    ourPlug,
    ourTool,
    requireCommand,
    tmpdir,
    waitFor,
)
from tests.interop.test_service import SwitchProcess

#: Frames of every size class: minimum, odd, full Ethernet.
SIZES = (60, 61, 100, 333, 1000, 1514)
A = b"\x02\x00\x00\x00\x00\x0a"
B = b"\x02\x00\x00\x00\x00\x0b"


def tcpdump() -> str:
    return requireCommand("tcpdump", "tcpdump")


def tcpdumpFrames(argv: list[str], stdin=None) -> list[bytes]:
    """
    The frames C{tcpdump -n -xx} prints, decoded from its hex dump.
    """
    result = subprocess.run(
        argv + ["-n", "-xx"], stdin=stdin, capture_output=True, timeout=TIMEOUT * 2
    )
    assert result.returncode == 0, result
    frames: list[bytes] = []
    for line in result.stdout.decode().splitlines():
        match = re.match(r"\s+0x[0-9a-f]+:\s+((?:[0-9a-f]{2,4}\s?)+)", line)
        if match:
            frames[-1] += bytes.fromhex(match.group(1).replace(" ", ""))
        elif line.strip():
            frames.append(b"")
    return frames


def readPcap(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        header, records = parseFile(f.read())
    assert header.linktype == 1 and not header.nanoseconds, header
    for record in records:
        assert record.length == len(record.data), record
    return [r.data for r in records]


def sendPaced(sender, receivers, frames: list[bytes], burst: int = 10, between=None) -> None:
    """
    Send C{frames} in bursts that the receivers can take without loss (a
    datagram socket's queue holds only so many), each burst once they have
    the previous one.

    @param receivers: L{StreamProcess}es, or paths of capture files.
    @param between: called with the number of each burst once it is sent.
    """
    counts = [
        (lambda r=r: capturedCount(r)) if isinstance(r, str) else (lambda r=r: len(r.frames))
        for r in receivers
    ]
    bases = [count() for count in counts]
    for number, start in enumerate(range(0, len(frames), burst)):
        sender.send(*frames[start : start + burst])
        if between is not None:
            between(number)
        done = min(start + burst, len(frames))
        for count, base in zip(counts, bases):
            waitFor(lambda: count() >= base + done, f"burst {number}", procs=[sender])


def capturedCount(path: str) -> int:
    """
    The complete records in the capture file at C{path} so far.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        header = parseHeader(data)
    except (OSError, PcapError):
        return 0
    count = 0
    try:
        for _ in parseRecords(header, data):
            count += 1
    except PcapError:
        pass  # the last record is being written
    return count


def command(mgmt: str, line: str) -> str:
    console = ConsoleClient(mgmt)
    try:
        return console.cmd(line).decode("utf-8", "replace")
    finally:
        console.close()


def vdecapture(test, *args: str, **kwargs) -> subprocess.Popen:
    process = subprocess.Popen(
        ourTool("vdecapture") + list(args), env=ourEnv(), stdin=subprocess.DEVNULL,
        stdout=kwargs.pop("stdout", subprocess.DEVNULL), stderr=subprocess.PIPE, **kwargs,
    )

    def stop():
        if process.poll() is None:
            process.kill()
        process.communicate()

    test.addCleanup(stop)
    return process


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """
    Wait for C{process}: its status and stderr.
    """
    _, err = process.communicate(timeout=TIMEOUT * 2)
    return process.returncode, err.decode()


class SwitchMixin:
    """
    A switch with a management console, and waiting for endpoints on it.
    """

    def startSwitch(self) -> tuple[str, str]:
        """
        The switch's directory and console socket.
        """
        raise NotImplementedError()

    def waitEndpoint(self, mgmt: str, text: str) -> None:
        waitFor(lambda: text in command(mgmt, "port/print"), f"{text} to join the switch")


class VdecaptureMixin(SwitchMixin):
    def test_frames(self) -> None:
        """
        Every frame a plug sends reaches the file unchanged; C{-c} ends the
        capture; tcpdump reads the same frames.
        """
        path, mgmt = self.startSwitch()
        out = os.path.join(tmpdir(self), "out.pcap")
        frames = [frame(n, size) for n, size in enumerate(SIZES * 5)]
        capture = vdecapture(self, "-c", str(len(frames)), f"vde://{path}", out)
        self.waitEndpoint(mgmt, "vdecapture")
        sender = cPlug(self, "C vde_plug", f"vde://{path}")
        sendPaced(sender, [out], frames)
        self.assertEqual(finish(capture), (0, ""))
        self.assertEqual(readPcap(out), frames)
        self.assertEqual(tcpdumpFrames([tcpdump(), "-r", out]), frames)

    def test_pipe(self) -> None:
        """
        C{-} writes to stdout: C{tcpdump -r -} reads the capture live.
        """
        path, mgmt = self.startSwitch()
        frames = [frame(n, 100 + n) for n in range(20)]
        capture = vdecapture(self, "-q", "-c", "20", f"vde://{path}", "-", stdout=subprocess.PIPE)
        self.waitEndpoint(mgmt, "vdecapture")
        sender = ourPlug(self, "our vde_plug", f"vde://{path}")
        listener = cPlug(self, "C vde_plug", f"vde://{path}")
        self.waitEndpoint(mgmt, "Port 0003")
        sendPaced(sender, [listener], frames)
        self.assertEqual(tcpdumpFrames([tcpdump(), "-r", "-"], stdin=capture.stdout), frames)
        self.assertEqual(finish(capture), (0, ""))


class OurSwitchVdecaptureTests(VdecaptureMixin, SynchronousTestCase):
    def startSwitch(self) -> tuple[str, str]:
        switch = SwitchProcess(self)
        return switch.path, switch.mgmt


class CSwitchVdecaptureTests(VdecaptureMixin, SynchronousTestCase):
    def startSwitch(self) -> tuple[str, str]:
        switch = CSwitch(self)
        switch.waitReady()
        return switch.path, switch.mgmt


class OptionTests(SwitchMixin, SynchronousTestCase):
    """
    C{-a}, C{-s}, C{-t}, and the errors, on our switch.
    """

    def setUp(self) -> None:
        self.switch = SwitchProcess(self)
        self.dir = tmpdir(self)
        self.out = os.path.join(self.dir, "out.pcap")
        self.sender = cPlug(self, "C vde_plug", f"vde://{self.switch.path}")

    def capture(self, *args: str) -> subprocess.Popen:
        before = command(self.switch.mgmt, "port/print").count("vdecapture")
        process = vdecapture(self, *args, f"vde://{self.switch.path}", self.out)
        waitFor(
            lambda: command(self.switch.mgmt, "port/print").count("vdecapture") > before
            or process.poll() is not None,
            "vdecapture to join",
        )
        return process

    def test_append(self) -> None:
        """
        C{-a} adds to a file of ours; without it the file starts again.
        """
        first = [frame(n) for n in range(2)]
        second = [frame(n) for n in range(10, 13)]
        capture = self.capture("-c", "2")
        self.sender.send(*first)
        self.assertEqual(finish(capture), (0, ""))
        capture = self.capture("-a", "-c", "3")
        self.sender.send(*second)
        self.assertEqual(finish(capture), (0, ""))
        self.assertEqual(readPcap(self.out), first + second)
        self.assertEqual(len(tcpdumpFrames([tcpdump(), "-r", self.out])), 5)
        capture = self.capture("-c", "1")
        self.sender.send(frame(20))
        self.assertEqual(finish(capture), (0, ""))
        self.assertEqual(readPcap(self.out), [frame(20)])

    def test_appendRefused(self) -> None:
        """
        C{-a} to a file that is not one of ours: one line, status 1, the
        file unchanged.
        """
        with open(self.out, "wb") as f:
            f.write(b"not a capture at all, longer than a header")
        status, err = finish(vdecapture(self, "-a", f"vde://{self.switch.path}", self.out))
        self.assertEqual(status, 1)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("cannot append", err)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), b"not a capture at all, longer than a header")

    def test_size(self) -> None:
        """
        C{-s}: the file never grows beyond the size; the frame that would
        not fit ends the capture unwritten.
        """
        size = len(fileHeader()) + 2 * (16 + 100)
        capture = self.capture("-s", str(size))
        self.sender.send(*[frame(n, 100) for n in range(3)])
        self.assertEqual(finish(capture), (0, ""))
        self.assertEqual(os.path.getsize(self.out), size)
        self.assertEqual(readPcap(self.out), [frame(0, 100), frame(1, 100)])

    def test_time(self) -> None:
        """
        C{-t}: the capture ends after that many seconds, with what came.
        """
        capture = self.capture("-t", "1")
        self.sender.send(frame(1))
        self.assertEqual(finish(capture), (0, ""))
        self.assertEqual(readPcap(self.out), [frame(1)])

    def test_sigterm(self) -> None:
        capture = self.capture()
        self.sender.send(frame(1))
        waitFor(lambda: capturedCount(self.out) == 1, "the frame to be written")
        capture.terminate()
        self.assertEqual(finish(capture), (0, ""))
        self.assertEqual(readPcap(self.out), [frame(1)])

    def test_hangup(self) -> None:
        """
        SIGHUP reopens the file (after a log rotation, say): frames before
        it are in the old file, frames after it in the new one.
        """
        capture = self.capture()
        self.sender.send(frame(1))
        waitFor(lambda: capturedCount(self.out) == 1, "the frame to be written")
        os.rename(self.out, self.out + ".1")
        capture.send_signal(signal.SIGHUP)
        waitFor(lambda: os.path.exists(self.out), "the new file")
        self.sender.send(frame(2))
        waitFor(lambda: capturedCount(self.out) == 1, "the frame to be written")
        capture.terminate()
        self.assertEqual(finish(capture), (0, ""))
        self.assertEqual((readPcap(self.out + ".1"), readPcap(self.out)), ([frame(1)], [frame(2)]))

    def test_networkCloses(self) -> None:
        """
        When the switch goes, the capture ends (status 0) with what it got,
        and one line saying so (none with C{-q}).
        """
        loud = self.capture()
        quiet = vdecapture(self, "-q", f"vde://{self.switch.path}", self.out + ".q")
        waitFor(lambda: command(self.switch.mgmt, "port/print").count("vdecapture") == 2,
                "both captures to join")
        self.sender.send(frame(1))
        waitFor(lambda: capturedCount(self.out) == 1, "the frame to be written")
        self.switch.stop()
        status, err = finish(loud)
        self.assertEqual((status, len(err.splitlines())), (0, 1), err)
        self.assertIn("vdecapture: the network closed", err)
        self.assertEqual(finish(quiet), (0, ""))
        self.assertEqual(readPcap(self.out), [frame(1)])

    def test_counter(self) -> None:
        """
        On a terminal, the count of frames is shown as the C tool shows it
        (C{\\rN}, a newline at the end); C{-q} hides it.
        """
        outputs = []
        for quiet in ([], ["-q"]):
            controller, terminal = pty.openpty()
            self.addCleanup(os.close, controller)
            process = subprocess.Popen(
                ourTool("vdecapture") + quiet + ["-c", "3", f"vde://{self.switch.path}", self.out],
                env=ourEnv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
            )
            os.close(terminal)
            self.addCleanup(lambda p=process: p.poll() is None and p.kill())
            waitFor(lambda: "vdecapture" in command(self.switch.mgmt, "port/print"), "vdecapture to join")
            self.sender.send(*[frame(n) for n in range(3)])
            self.assertEqual(process.wait(TIMEOUT * 2), 0)
            output = b""
            while True:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # EIO: the terminal's last holder has gone
                    break
                if not chunk:
                    break
                output += chunk
            outputs.append(output)
            waitFor(lambda: "vdecapture" not in command(self.switch.mgmt, "port/print"),
                    "vdecapture to leave")
        self.assertEqual(outputs, [b"\r1\r2\r3\r\n", b""])

    def test_errors(self) -> None:
        """
        Bad numbers, a missing argument, a file that cannot be created, a
        network that cannot be opened: one line each, status 1.
        """
        vnl = f"vde://{self.switch.path}"
        cases = [
            (["-c", "many", vnl, self.out], "-c: 'many' is not a number"),
            (["-t", "-1", vnl, self.out], "-t: '-1' is not a number"),
            ([vnl], "expected VNL and output file"),
            (["-x", vnl, self.out], "vdecapture: invalid option -- 'x'"),
            ([vnl, os.path.join(self.dir, "no", "such.pcap")], "such.pcap: No such file or directory"),
            ([f"vde://{self.dir}/nosw", self.out], "vdecapture: "),
        ]
        for args, message in cases:
            status, err = finish(vdecapture(self, *args))
            self.assertEqual((status, len(err.splitlines())), (1, 1), (args, err))
            self.assertIn(message, err)
            self.assertTrue(err.startswith("vdecapture: "), err)
        self.assertFalse(os.path.exists(self.out))

    def test_readerGone(self) -> None:
        """
        When the reader of C{-} goes (C{tcpdump -c 1} is done), the capture
        ends quietly, status 0, as the C tool's.
        """
        process = vdecapture(self, "-q", f"vde://{self.switch.path}", "-", stdout=subprocess.PIPE)
        waitFor(lambda: "vdecapture" in command(self.switch.mgmt, "port/print"), "vdecapture to join")
        process.stdout.close()
        self.sender.send(frame(1))
        self.assertEqual(finish(process), (0, ""))

    def test_fullDisk(self) -> None:
        """
        A file that cannot be written (/dev/full) ends the capture with one
        line naming it, status 1.
        """
        process = vdecapture(self, f"vde://{self.switch.path}", "/dev/full")
        status, err = finish(process)
        self.assertEqual((status, err), (1, f"vdecapture: /dev/full: {os.strerror(28)}\n"))


class SwitchCaptureTests(SwitchMixin, SynchronousTestCase):
    """
    Capture inside our running switch, from its console, and mirror ports.
    """

    def setUp(self) -> None:
        self.switch = SwitchProcess(self)
        self.mgmt = self.switch.mgmt
        self.dir = tmpdir(self)
        self.vnl = f"vde://{self.switch.path}"

    def cmd(self, line: str) -> str:
        return command(self.mgmt, line)

    def plugs(self) -> tuple:
        """
        Our vde_plug on port 1, the C one on port 2.
        """
        a = ourPlug(self, "our vde_plug", f"{self.vnl}[1]")
        b = cPlug(self, "C vde_plug", f"{self.vnl}[2]")
        self.waitEndpoint(self.mgmt, "Port 0002")
        self.waitEndpoint(self.mgmt, "Port 0001")
        return a, b

    def counters(self, number: int) -> tuple[int, ...]:
        text = self.cmd(f"port/print {number}")
        return tuple(int(n) for n in re.findall(r"(?:pkts|in|out)\s+(\d+)", text))

    def test_busyPortCapture(self) -> None:
        """
        A capture of port 1 started and stopped while frames flow from port
        1 to ports 2 and 3 (in bursts the receivers can take): the
        other ports get every frame, none dropped, and the file every frame
        of port 1 from the start to the end of the capture, byte for byte;
        tcpdump agrees.
        """
        a, b = self.plugs()
        c = ourPlug(self, "our vde_plug 3", f"{self.vnl}[3]")
        self.waitEndpoint(self.mgmt, "Port 0003")
        path = os.path.join(self.dir, "one.pcap")
        sent = [frame(n, 60 + n % 1455) for n in range(4000)]
        counts = []

        def between(number: int) -> None:
            if number == 20:
                self.assertIn("1000 Success", self.cmd(f"port/capture 1 {path}"))
            elif number == 140:
                counts.append(self.cmd("port/captureprint"))
                self.assertIn("1000 Success", self.cmd("port/capture 1 off"))

        sendPaced(a, (b, c), sent, between=between)
        self.assertEqual(b.frames, sent)
        self.assertEqual(c.frames, sent)
        for number in (2, 3):
            # OUT pkts, DROP in, DROP out
            self.assertEqual(self.counters(number)[1:], (4000, 0, 0))
        # The capture began and ended during bursts 20 and 140 (of 10).
        frames = int(re.search(r"frames (\d+) dropped 0 ", counts[0]).group(1))
        waitFor(lambda: capturedCount(path) >= frames, "the capture to be written")
        captured = readPcap(path)
        first = sent.index(captured[0])
        self.assertEqual(captured, sent[first : first + len(captured)])
        end = first + len(captured)
        self.assertTrue(200 <= first <= 210 and 1400 <= end <= 1410, (first, end))
        self.assertEqual(tcpdumpFrames([tcpdump(), "-r", path]), captured)

    def test_pdump(self) -> None:
        """
        vde2's C{pdump}: the whole switch, every frame entering it once.
        """
        a, b = self.plugs()
        path = os.path.join(self.dir, "all.pcap")
        self.assertIn(f"dumpfile={path}", self.cmd(f"pdump/filename {path}"))
        self.assertIn("1000 Success", self.cmd("pdump/active 1"))
        frames = [frame(n, src=A) for n in range(50)] + [frame(n, src=B) for n in range(50)]
        sendPaced(a, [b], frames[:50])
        sendPaced(b, [a], frames[50:])
        self.assertIn("1000 Success", self.cmd("pdump/active 0"))
        self.assertIn("pdump inactive frames 100 dropped 0", self.cmd("port/captureprint"))
        waitFor(lambda: capturedCount(path) == 100, "the dump to be written")
        self.assertEqual(readPcap(path), frames)
        self.assertEqual(tcpdumpFrames([tcpdump(), "-r", path]), frames)

    def test_stopWrites(self) -> None:
        """
        A switch that stops writes what its captures took before it exits.
        """
        a, b = self.plugs()
        path = os.path.join(self.dir, "one.pcap")
        self.assertIn("1000 Success", self.cmd(f"port/capture 1 {path}"))
        frames = [frame(n, 1000) for n in range(300)]
        sendPaced(a, [b], frames)
        self.assertIn(self.switch.stop(), (0, -signal.SIGTERM))
        self.assertEqual(readPcap(path), frames)

    def test_unwritable(self) -> None:
        """
        A capture file in a place that cannot be written: an error status,
        one error line in the switch's log, and the switch keeps switching.
        """
        a, b = self.plugs()
        bad = os.path.join(self.dir, "missing", "x.pcap")
        self.assertIn("1002 No such file or directory", self.cmd(f"port/capture 1 {bad}"))
        self.assertIn("1002 No such file or directory", self.cmd(f"pdump/filename {bad}"))
        sendPaced(a, [b], [frame(n) for n in range(20)])
        lines = [l for l in self.switch.log().splitlines() if "cannot capture" in l]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("#error]", lines[0])
        self.assertIn(f"{bad}: No such file or directory", lines[0])
        self.assertTrue(self.switch.running())

    def test_mirror(self) -> None:
        """
        C{vdecapture} on a mirror port sees the mirrored port's unicast
        traffic, both ways, which its own port would never get.
        """
        out = os.path.join(tmpdir(self), "mirror.pcap")
        capture = vdecapture(self, "-c", "21", f"{self.vnl}[3]", out)
        self.waitEndpoint(self.mgmt, "vdecapture")
        a, b = self.plugs()
        self.assertIn("1000 Success", self.cmd("port/mirror 1 3"))
        self.assertIn("Port 0003 mirrors 0001", self.cmd("port/mirrorprint"))
        # Each learns the other, then unicast only.
        hello = [frame(0, src=A), frame(0, src=B)]
        a.send(hello[0])
        b.waitFor(lambda: len(b.frames) == 1, "A's hello")
        b.send(hello[1])
        a.waitFor(lambda: len(a.frames) == 1, "B's hello")
        toB = [frame(n, src=A, dst=B) for n in range(1, 11)]
        toA = [frame(n, src=B, dst=A) for n in range(1, 10)]
        sendPaced(a, [b], toB)
        b.send(*toA)
        self.assertEqual(finish(capture), (0, ""))
        self.assertEqual(readPcap(out), hello + toB + toA)
        self.assertEqual(tcpdumpFrames([tcpdump(), "-r", out]), hello + toB + toA)
