"""
Peers that do not read (issue 8): a real switch (C{python -m twisted vde})
keeps its memory bounded, measured as the RSS in /proc, when a cable on
C{--listen} (TCP, or TLS before its handshake), a C{--plug cmd://} command
or a C{--mgmt} session leaves what it is sent unread, and its other ports
and sessions keep working.
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import sys
import threading
import time

import twisted.test
from twisted.internet.endpoints import quoteStringArgument
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import TIMEOUT, ConsoleClient, frame, records, rssBytes
from tests.interop.test_endpoint_cables import freePort
from tests.interop.test_service import SwitchProcess
from vdetwist.wire.stream import StreamDecoder
from vdetwist.vde2.console import STALL_TIMEOUT

MAC_A = bytes.fromhex("020000000a0a")
MAC_B = bytes.fromhex("020000000b0b")
MAC_FLOOD = bytes.fromhex("020000000f0f")
#: A destination nobody has: frames to it go to every port.
UNKNOWN = bytes.fromhex("020000000909")
MARKER = b"\x88\xb6"
MIB = 1 << 20


def rssMiB(pid: int) -> float:
    return rssBytes(pid) / MIB


class PeakRss:
    """
    The largest RSS of a process, sampled by a thread until L{stop}.
    """

    def __init__(self, test, pid: int) -> None:
        self.pid = pid
        self.peak = rssMiB(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        test.addCleanup(self.stop)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rssMiB(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(TIMEOUT)
        return self.peak


class TcpCable:
    """
    A cable into the switch over TCP, spoken by the test: a thread reads
    and decodes everything the switch sends, keeping the L{MARKER} frames.
    """

    def __init__(self, test, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        test.addCleanup(self.sock.close)
        self.markers: list[bytes] = []
        self.decoder = StreamDecoder(self._frame, lambda length, discarded: None)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(MIB)
            except OSError:
                return
            if not data:
                return
            self.decoder.feed(data)

    def _frame(self, frame: bytes) -> None:
        if frame[12:14] == MARKER:
            self.markers.append(frame)

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(records(frames))


def marker(dst: bytes, src: bytes, n: int) -> bytes:
    return dst + src + MARKER + n.to_bytes(4, "big") + bytes(46)


def deliver(sender: TcpCable, receiver: TcpCable, frame: bytes, what: str) -> None:
    """
    Send C{frame} until C{receiver} has it (a port busy with a flood may
    drop some), failing after L{TIMEOUT}.
    """
    deadline = time.monotonic() + TIMEOUT
    while frame not in receiver.markers:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never arrived")
        sender.send(frame)
        time.sleep(0.05)


def portBlock(ports: str, needle: str) -> str:
    """
    The C{port/print} lines of the port whose endpoint mentions C{needle}.
    """
    for block in re.split(r"\n(?=Port \d{4} )", ports):
        if needle in block:
            return block
    raise AssertionError(f"no port with {needle!r} in:\n{ports}")


#: A command that never reads its stdin, and ends when its stdout has no
#: reader any more (the switch is gone).
SILENT_COMMAND = (
    f'{sys.executable} -c "import select; p = select.poll(); p.register(1, 0); p.poll()"'
)


class StreamPortTests(SynchronousTestCase):
    def switch(self, *args: str) -> tuple[SwitchProcess, int]:
        """
        A switch accepting cables over TCP, and the TCP port.
        """
        tcp = freePort()
        switch = SwitchProcess(self, "--listen", f"tcp:{tcp}:interface=127.0.0.1", *args)
        switch.waitFor(lambda: "accepting cables on" in switch.log(), "the switch to listen")
        return switch, tcp

    def floodPast(self, switch: SwitchProcess, tcp: int, silent: str, cables: int) -> None:
        """
        Flood 100 MiB of 1400-byte frames to every port, one of which (whose
        C{port/print} entry has C{silent}) does not read: the switch grows
        by less than 50 MiB, that port drops and counts, and two other
        cables exchange frames during the flood and after.

        @param cables: how many cables over TCP the switch will have.
        """
        a, b, flooder = TcpCable(self, tcp), TcpCable(self, tcp), TcpCable(self, tcp)
        switch.waitFor(lambda: switch.log().count(" is port ") == cables, "the cables to join")
        deliver(a, b, marker(UNKNOWN, MAC_A, 0), "a's first frame")
        deliver(b, a, marker(MAC_A, MAC_B, 0), "b's first frame")
        baseline = rssMiB(switch.process.pid)
        rss = PeakRss(self, switch.process.pid)

        burst = records([frame(0, 1400, src=MAC_FLOOD, dst=UNKNOWN)] * 700)
        bursts = 100 * MIB // len(burst)

        def sendFlood() -> None:
            for _ in range(bursts):
                flooder.sock.sendall(burst)

        flood = threading.Thread(target=sendFlood, daemon=True)
        flood.start()
        n = 1
        while flood.is_alive():
            deliver(a, b, marker(MAC_B, MAC_A, n), f"a->b frame {n} during the flood")
            deliver(b, a, marker(MAC_A, MAC_B, n), f"b->a frame {n} during the flood")
            n += 1
        flood.join()
        # Ordered behind the flood on its stream: once it arrives, the
        # switch has forwarded the whole flood.
        deliver(flooder, a, marker(MAC_A, MAC_FLOOD, 0), "the frame after the flood")
        deliver(a, b, marker(MAC_B, MAC_A, n), "a->b frame after the flood")
        deliver(b, a, marker(MAC_A, MAC_B, n), "b->a frame after the flood")
        growth = rss.stop() - baseline
        self.assertLess(growth, 50, f"the switch grew by {growth:.0f} MiB")

        console = ConsoleClient(switch.mgmt)
        self.addCleanup(console.close)
        block = portBlock(console.cmd("port/print").decode(), silent)
        dropped = int(re.search(r" DROP: in +\d+ +out +(\d+)", block).group(1))
        self.assertGreater(dropped, bursts * 700 // 2, block)

    def test_clientNotReading(self) -> None:
        """
        issue 8, defect 1: a TCP cable that never reads costs the switch
        little during a flood; when it goes, so does its port.
        """
        switch, tcp = self.switch()
        staller = socket.socket()
        self.addCleanup(staller.close)
        staller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        staller.connect(("127.0.0.1", tcp))
        silent = f"from 127.0.0.1:{staller.getsockname()[1]}"
        self.floodPast(switch, tcp, silent, cables=4)
        staller.close()
        console = ConsoleClient(switch.mgmt)
        self.addCleanup(console.close)
        switch.waitFor(lambda: silent.encode() not in console.cmd("port/print"),
                       "the silent cable's port to go")

    def test_tlsClientNeverHandshaking(self) -> None:
        """
        issue 8, defect 1: a client of C{--listen ssl:} that never sends its
        TLS hello (what the switch writes waits for the handshake) costs the
        switch little during a flood.
        """
        key = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        if not os.path.exists(key):
            raise SkipTest(f"no test key at {key}")
        tls = freePort()
        switch, tcp = self.switch(
            "--listen", f"ssl:{tls}:interface=127.0.0.1:privateKey={quoteStringArgument(key)}"
        )
        switch.waitFor(lambda: switch.log().count("accepting cables on") == 2,
                       "the switch to listen for TLS")
        staller = socket.create_connection(("127.0.0.1", tls), timeout=TIMEOUT)
        self.addCleanup(staller.close)
        self.floodPast(switch, tcp, f"from 127.0.0.1:{staller.getsockname()[1]}", cables=4)

    def test_commandNotReading(self) -> None:
        """
        issue 8, defect 1: a C{--plug cmd://} command that never reads
        costs the switch little during a flood.
        """
        switch, tcp = self.switch("--plug", f"cmd://{SILENT_COMMAND}")
        switch.waitFor(lambda: "attached as port" in switch.log(), "the command's port")
        self.floodPast(switch, tcp, "cmd://", cables=3)


class ConsoleSessionTests(SynchronousTestCase):
    def test_sessionNotReading(self) -> None:
        """
        issue 8, defect 4: 250 KB of C{help} commands whose answers are
        never read cost the switch less than 10 MiB, and the session is
        dropped; other sessions are served meanwhile and after.
        """
        switch = SwitchProcess(self)
        baseline = rssMiB(switch.process.pid)
        rss = PeakRss(self, switch.process.pid)
        session = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(session.close)
        session.connect(switch.mgmt)
        session.setblocking(False)
        commands = memoryview(b"help\n" * 50_000)
        sent = 0
        deadline = time.monotonic() + STALL_TIMEOUT + TIMEOUT
        while sent < len(commands):
            try:
                sent += session.send(commands[sent:])
            except BlockingIOError:
                # Held back: the switch no longer reads; it drops us later.
                select.select([], [session], [], 0.1)
            except OSError as e:
                self.assertIn(e.errno, (errno.EPIPE, errno.ECONNRESET))
                break
            self.assertLess(time.monotonic(), deadline, f"sent {sent} bytes, then stuck")
        other = ConsoleClient(switch.mgmt)
        self.addCleanup(other.close)
        self.assertIn(b"Numports=32", other.cmd("port/showinfo"))
        poller = select.poll()
        poller.register(session, select.POLLHUP)
        switch.waitFor(lambda: poller.poll(0), "the session to be dropped",
                       timeout=STALL_TIMEOUT + TIMEOUT)
        self.assertIn("management session dropped", switch.log())
        growth = rss.stop() - baseline
        self.assertLess(growth, 10, f"the switch grew by {growth:.1f} MiB")
        self.assertIn(b"Numports=32", other.cmd("port/showinfo"))
