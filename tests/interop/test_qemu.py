"""
A real QEMU guest on vdetwist switches.

QEMU's C{-nic vde,sock=DIR} is a libvdeplug client: these tests prove that
QEMU joins our switches and that a guest network-boots over them with
nothing but our code on the other side.  No disk image is needed: the
e1000's PXE ROM (iPXE, from Debian's ipxe-qemu) is the guest.  It

  1. gets 10.0.2.15 by DHCP and an IPv6 address from router advertisements,
     both from our C{slirp://} on another port of the switch;
  2. fetches its boot script by TFTP from slirp's 10.0.2.2;
  3. runs it: an HTTP request to 10.0.2.2, which slirp turns into a TCP
     connection to the host's 127.0.0.1, where this test serves a second
     script that
  4. makes a request to [fd00::2], slirp's IPv6 face of the host's ::1.

Each request carries the NIC's MAC, so the server sees that exactly this
guest got there.  The tests run QEMU under TCG (no KVM needed): about 10 s.

    qemu (iPXE) -> vde://DIR -> [twistd vde | vde_plug switch://DIR]
                                 <- vde_plug slirp:///tftp_path=.../bootfile=boot.ipxe vde://DIR
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import ConsoleClient, isListening, ourPlug, requireCommand, tmpdir, userName, waitFor
from tests.interop.test_service import SwitchProcess

MAC = "52:54:00:76:64:65"
ROM = "/usr/lib/ipxe/qemu/efi-e1000.rom"
BOOT_SCRIPT = """#!ipxe
echo vdetwist: boot script from TFTP
chain http://10.0.2.2:{port}/v4?mac=${{net0/mac}}
"""
SECOND_SCRIPT = """#!ipxe
echo vdetwist: second script over HTTP via 10.0.2.2
chain http://[fd00::2]:{port}/v6?mac=${{net0/mac}}
"""
LAST_SCRIPT = "#!ipxe\necho vdetwist: third script over HTTP via [fd00::2]\nexit 1\n"

#: Generous: TCG firmware boot plus iPXE's DHCP rounds take 5-10 s on an
#: idle machine, more on a loaded one.
BOOT_TIMEOUT = 90


def requireQemu() -> str:
    """
    The path of C{qemu-system-x86_64}; skip the test without it or without
    the e1000's boot ROM.
    """
    qemu = requireCommand("qemu-system-x86_64", "qemu-system-x86")
    if not os.path.exists(ROM):
        raise SkipTest(f"{ROM} (QEMU's e1000 boot ROM) is missing: apt-get install ipxe-qemu")
    return qemu


class _DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def answering(respond: Callable[[BaseHTTPRequestHandler], Optional[bytes]]) -> type:
    """
    A quiet request handler class whose GETs C{respond(handler)} answers:
    the body, or C{None} for 404.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = respond(self)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def serve(test, httpd: ThreadingHTTPServer) -> None:
    """
    Run C{httpd} in a thread until C{test} ends.
    """
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    test.addCleanup(thread.join, 5)
    test.addCleanup(httpd.server_close)
    test.addCleanup(httpd.shutdown)


class BootServer:
    """
    The host's HTTP server on port P of both 127.0.0.1 and ::1 (one
    dual-stack socket): C{/v4} answers the second script, C{/v6} the last;
    every request is recorded as (path, client address).
    """

    def __init__(self, test) -> None:
        self.requests: list[tuple[str, str]] = []
        self.httpd = _DualStackServer(("::", 0), answering(self.respond))
        self.port = self.httpd.server_address[1]
        serve(test, self.httpd)

    def respond(self, handler: BaseHTTPRequestHandler) -> Optional[bytes]:
        self.requests.append((handler.path, handler.client_address[0]))
        if handler.path.startswith("/v4"):
            return SECOND_SCRIPT.format(port=self.port).encode()
        if handler.path.startswith("/v6"):
            return LAST_SCRIPT.encode()
        return None

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


class QemuGuest:
    """
    C{qemu-system-x86_64} network-booting from C{sock}, its console (the
    firmware's output) in a log file.
    """

    def __init__(self, test, qemu: str, sock: str, directory: str) -> None:
        self.name = "qemu"
        self.logPath = os.path.join(directory, "qemu.log")
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [qemu, "-machine", "pc,accel=tcg", "-m", "64", "-nographic", "-nodefaults",
                 "-serial", "stdio", "-monitor", "none", "-no-reboot", "-boot", "n",
                 "-nic", f"vde,sock={sock},model=e1000,mac={MAC}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        test.addCleanup(self.kill)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def running(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> str:
        with open(self.logPath, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return f"\n--- qemu (status {self.process.poll()}), its console:\n{text[-3000:]}"


class QemuBootTests(SynchronousTestCase):
    """
    iPXE in QEMU boots over our switch from our slirp.
    """

    def setUp(self) -> None:
        self.qemu = requireQemu()
        self.dir = tmpdir(self)
        tftp = os.path.join(self.dir, "tftp")
        os.mkdir(tftp)
        self.server = BootServer(self)
        with open(os.path.join(tftp, "boot.ipxe"), "w") as f:
            f.write(BOOT_SCRIPT.format(port=self.server.port))
        # The path holds slashes: quoted, as the slash grammar needs.
        self.slirpVNL = f'slirp:///tftp_path="{tftp}"/bootfile=boot.ipxe'

    def boot(self, sock: str, procs: list) -> QemuGuest:
        """
        Plug slirp into the switch at C{sock}, boot QEMU on it and wait for
        the guest's last request; C{procs} are the switch's processes, whose
        logs a failure shows.
        """
        slirp = ourPlug(self, "our vde_plug slirp://", self.slirpVNL, f"vde://{sock}")
        guest = QemuGuest(self, self.qemu, sock, self.dir)
        watched = [*procs, slirp, guest]
        waitFor(lambda: any(p.startswith("/v6") for p in self.server.paths()),
                "the guest's request over IPv6 (DHCP, TFTP, HTTP via 10.0.2.2, then [fd00::2])",
                BOOT_TIMEOUT, procs=watched, failIfEnded=True)
        mac = MAC.replace(":", "%3A")
        self.assertEqual(
            self.server.requests,
            [(f"/v4?mac={mac}", "::ffff:127.0.0.1"), (f"/v6?mac={mac}", "::1")],
        )
        with open(guest.logPath, "rb") as f:
            console = f.read().decode("utf-8", "replace")
        self.assertIn("net0: 10.0.2.15/255.255.255.0 gw 10.0.2.2", console)
        self.assertIn("vdetwist: boot script from TFTP", console)
        self.assertIn("vdetwist: second script over HTTP via 10.0.2.2", console)
        return guest

    def test_twistdSwitch(self) -> None:
        """
        QEMU is a port of C{twistd vde}; its console lists the port with
        QEMU's own description.
        """
        switch = SwitchProcess(self)
        guest = self.boot(switch.path, [switch])
        console = ConsoleClient(switch.mgmt)
        self.addCleanup(console.close)
        ports = console.cmd("port/print").decode()
        self.assertIn(f"QEMU user={userName()} pid={guest.process.pid}", ports)

    def test_switchNode(self) -> None:
        """
        QEMU is a port of C{vde_plug switch://DIR} (vdeplug4's switch,
        ours), whose host port is the plug's stdio.
        """
        sock = os.path.join(self.dir, "node")
        node = ourPlug(self, "our vde_plug switch://", f"switch://{sock}")
        waitFor(lambda: isListening(os.path.join(sock, "ctl")), "the switch:// node",
                procs=[node], failIfEnded=True)
        self.boot(sock, [node])
        # The guest's frames flood to the host port too: its DHCP discover
        # (from MAC, to the broadcast address) is among them.
        source = bytes.fromhex(MAC.replace(":", ""))
        self.assertTrue(any(f[6:12] == source and f[:6] == b"\xff" * 6 for f in list(node.frames)),
                        "no broadcast from the guest reached the host port")
