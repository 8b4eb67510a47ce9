"""
A real QEMU guest behind an impaired link: the same figures as
L{tests.interop.test_wirefilter_interop}, from a guest's own traffic.

The guest (iPXE in QEMU, as in L{tests.interop.test_qemu}) is a port of C{twistd
vde}, whose uplink to C{slirp://} is C{wirefilter://[mgmt=...]{slirp://...}}.
Its boot script (by TFTP) runs phases; each begins with a request that
makes this test's HTTP server, on the host, set the filter through its
console before answering.  So one run measures the link unfiltered and then
filtered, and the host's server does the measuring, since it sees the
guest's TCP through slirp:

  - round trip: slirp opens the host connection when the guest's SYN
    arrives and forwards the request once the guest completed the
    handshake, so the time from the server's accept to the request is the
    guest's round trip (SYN-ACK to the guest, ACK and GET back);
  - goodput: a file of known size, from its request to the accept of the
    next connection (the guest opens it once the file is all in; the
    server's last write says little, slirp buffers 256 KiB ahead);
  - loss: the download completes (TCP retransmits; iPXE ends its script at
    a failed command, so the last request means every download completed),
    and C{showinfo}'s frame counts over the phase are the binomial law's.

    qemu (iPXE) -> twistd vde --plug wirefilter://[mgmt=M]{slirp://...} -> host HTTP server
"""

from __future__ import annotations

import math
import os
import re
import socket
import statistics
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ConsoleClient, tmpdir, waitFor
from tests.interop.test_qemu import BOOT_TIMEOUT, QemuGuest, answering, requireQemu, serve
from tests.interop.test_service import SwitchProcess
from vdetwist.lab.console import PROMPT

#: The round trips sampled in a phase.
PINGS = 5


@dataclass
class Phase:
    """
    Console commands applied when the phase begins, then C{pings} small
    requests and a download of C{size} bytes.
    """

    commands: list[str]
    size: int
    pings: int = PINGS


@dataclass
class Request:
    """
    A request the server answered: when its connection was accepted, when
    the request came.
    """

    path: str
    accepted: float
    requested: float


def script(port: int, phases: list[Phase]) -> str:
    """
    The guest's boot script: for each phase, the request that sets it, its
    pings and its download; at last C{/end}.
    """
    base = f"http://10.0.2.2:{port}"
    lines = ["#!ipxe"]
    for k, phase in enumerate(phases):
        lines.append(f"imgfetch {base}/set-{k}")
        lines += [f"imgfetch {base}/ping-{k}-{n}" for n in range(phase.pings)]
        lines.append(f"imgfetch {base}/blob-{k}")
    lines += [f"imgfetch {base}/end", "exit 1", ""]
    return "\n".join(lines)


class _TimingServer(ThreadingHTTPServer):
    """
    Notes when it accepted each connection, in C{accepted} (by socket)
    until its handler takes it.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        super().__init__(address, handler)
        self.accepted: dict[socket.socket, float] = {}

    def get_request(self) -> tuple[socket.socket, tuple]:
        request, address = super().get_request()
        self.accepted[request] = time.monotonic()
        return request, address


class PhaseServer:
    """
    The host's HTTP server on 127.0.0.1 (slirp's 10.0.2.2): records when
    each connection was accepted and its request came; C{/set-K} runs phase
    K's commands on the filter's console first, with C{showinfo} after.
    One request per connection (HTTP/1.0), so each has a handshake.
    """

    def __init__(self, test, phases: list[Phase], mgmt: str) -> None:
        self.phases = phases
        self.mgmt = mgmt
        self.requests: list[Request] = []
        #: Each phase's C{showinfo} once its commands ran, and at C{/end}.
        self.shown: list[str] = []
        self.errors: list[str] = []
        self.httpd = _TimingServer(("127.0.0.1", 0), answering(self.respond))
        self.port = self.httpd.server_address[1]
        serve(test, self.httpd)

    def respond(self, handler: BaseHTTPRequestHandler) -> Optional[bytes]:
        """
        Answer a request, once it is recorded (and its commands ran: when
        C{/end} is recorded, the last C{showinfo} is in).
        """
        request = Request(handler.path, self.httpd.accepted.pop(handler.request),
                          time.monotonic())
        name = request.path.lstrip("/")
        body: Optional[bytes] = b"ok\n"
        if name.startswith("set-"):
            self.configure(self.phases[int(name[4:])].commands)
        elif name.startswith("blob-"):
            body = os.urandom(self.phases[int(name[5:])].size)
        elif name == "end":
            self.configure([])
        elif not name.startswith("ping-"):
            body = None
        self.requests.append(request)
        return body

    def configure(self, commands: list[str]) -> None:
        """
        Run C{commands} on the filter's console, then C{showinfo}.
        """
        console = ConsoleClient(self.mgmt, prompt=PROMPT)
        try:
            for command in commands:
                answer = console.cmd(command)
                if b"1000 Success" not in answer:
                    self.errors.append(f"{command}: {answer!r}")
            self.shown.append(console.cmd("showinfo").decode())
        finally:
            console.close()

    def find(self, path: str) -> Request:
        return next(r for r in self.requests if r.path == path)

    def roundTrips(self, k: int) -> list[float]:
        return [r.requested - r.accepted for r in self.requests
                if r.path.startswith(f"/ping-{k}-")]

    def goodput(self, k: int, size: int) -> float:
        """
        Bytes per second of phase C{k}'s download: from its request to the
        next connection.
        """
        blob = self.find(f"/blob-{k}")
        after = self.requests[self.requests.index(blob) + 1]
        return size / (after.accepted - blob.requested)


def frameCounts(shown: str) -> dict[str, dict[str, int]]:
    """
    C{showinfo}'s C{Frames} lines: for each direction (C{"L->R"}, C{"R->L"}),
    each count by name.
    """
    counts = {}
    for way, rest in re.findall(r"^Frames (L->R|R->L) (.*)$", shown, re.MULTILINE):
        words = rest.split()
        counts[way] = {name: int(value) for name, value in zip(words[::2], words[1::2])}
    return counts


class ImpairedUplinkTests(SynchronousTestCase):
    """
    The guest's figures, unfiltered and filtered, in one boot.
    """

    def run_(self, phases: list[Phase]) -> PhaseServer:
        """
        Boot the guest on a switch whose slirp uplink is filtered; wait
        until its script made its last request (so every one before
        succeeded).
        """
        qemu = requireQemu()
        directory = tmpdir(self)
        tftp = os.path.join(directory, "tftp")
        os.mkdir(tftp)
        mgmt = os.path.join(directory, "wf.mgmt")
        server = PhaseServer(self, phases, mgmt)
        with open(os.path.join(tftp, "boot.ipxe"), "w") as f:
            f.write(script(server.port, phases))
        uplink = (f"wirefilter://[mgmt='{mgmt}']"
                  f"{{slirp:///tftp_path=\"{tftp}\"/bootfile=boot.ipxe}}")
        switch = SwitchProcess(self, "--plug", uplink, twistd=True, mgmt=False)
        guest = QemuGuest(self, qemu, switch.path, directory)
        waitFor(lambda: any(r.path == "/end" for r in server.requests),
                "the guest's last request (its script by TFTP, then HTTP via 10.0.2.2)",
                BOOT_TIMEOUT, procs=[switch, guest], failIfEnded=True)
        self.assertEqual(server.errors, [])
        return server

    def test_delayBandwidthLoss(self) -> None:
        """
        Unfiltered, the round trip is short and the download fast; with
        C{delay 100} the round trip grows by 200 ms (100 ms each way); with
        C{bandwidth 100000} the download's goodput is 100 kB/s (less the
        headers: 1460 of 1514 bytes a frame); with C{loss 10} the download
        completes and a tenth of the frames are lost.
        """
        size = 200_000
        phases = [Phase([], size),
                  Phase(["delay 100"], 0),
                  Phase(["delay 0", "bandwidth 100000"], size, pings=0),
                  Phase(["bandwidth 0", "loss 10"], 100_000, pings=0)]
        server = self.run_(phases)
        base = statistics.median(server.roundTrips(0))
        delayed = statistics.median(server.roundTrips(1))
        fast = server.goodput(0, size)
        limited = server.goodput(2, size)
        figures = (f"round trip {base * 1000:.1f} ms, then {delayed * 1000:.1f} ms;"
                   f" goodput {fast:.0f} B/s, then {limited:.0f} B/s")
        self.assertLess(base, 0.1, figures)
        self.assertTrue(0.195 <= delayed - base <= 0.35, figures)
        self.assertGreater(fast, 300_000, figures)
        self.assertTrue(80_000 <= limited <= 100_000, figures)
        # The loss phase: the counts from its start (the last showinfo of a
        # /set) to the end.
        before, after = frameCounts(server.shown[-2]), frameCounts(server.shown[-1])
        seen = sum(after[w]["received"] - before[w]["received"] for w in after)
        lost = sum(after[w]["lost"] - before[w]["lost"] for w in after)
        self.assertEqual(sum(before[w]["lost"] for w in before), 0)
        self.assertGreater(seen, 100, server.shown[-1])
        spread = 4 * math.sqrt(seen * 0.1 * 0.9)
        self.assertTrue(abs(lost - seen * 0.1) <= spread,
                        f"{lost} of {seen} frames lost, expected {seen * 0.1:.0f} +- {spread:.0f};"
                        f" showinfo at the start:\n{server.shown[-2]}\nat the end:\n{server.shown[-1]}"
                        f"\nrequests: {server.requests}")
