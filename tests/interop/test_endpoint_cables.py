"""
Cables over Twisted stream endpoints: C{twistd vde --listen ENDPOINT} accepts
them, C{endpoint://DESCRIPTION} makes them (a vdetwist extension).
"""

from __future__ import annotations

import errno
import os
import signal
import socket

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import ConsoleClient, cPlug, ourPlug, tmpdir, until
from tests.interop.test_endpointstrings import requireTLS
from tests.interop.test_service import SwitchProcess, assertEndpointList, eth
from vdetwist import streamplug
from vdetwist.errors import VdeError, VNLError
from vdetwist.registry import registry


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MACS = [bytes([2, 0, 0, 0, 0, n]) for n in range(1, 4)]
BROADCAST = b"\xff" * 6


class ConnectFailureTests(TestCase):
    """
    C{endpoint://} that cannot connect: one line naming the VNL and the
    reason, never a traceback.
    """

    async def test_refused(self) -> None:
        vnl = f"endpoint://tcp:host=127.0.0.1:port={freePort()}"
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, vnl)
        self.assertEqual(str(caught.exception), f"{vnl}: cannot connect: Connection refused")
        self.assertEqual(caught.exception.errno, errno.ECONNREFUSED)

    async def test_refusedScript(self) -> None:
        """
        Our C{vde_plug}: status 1 and C's line, then ours.
        """
        vnl = f"endpoint://tcp:host=127.0.0.1:port={freePort()}"
        process = ourPlug(self, "vde_plug", vnl)
        self.assertEqual(await deferToThread(process.wait), 1)
        self.assertEqual(await deferToThread(process.finish),
                         f"vde_open {vnl}: Connection refused\n"
                         f"vde_plug: {vnl}: cannot connect: Connection refused\n")

    async def test_noHandshake(self) -> None:
        """
        A TLS client to a server that never answers the handshake gives up
        after L{streamplug.HANDSHAKE_TIMEOUT} seconds, and closes the
        connection.
        """
        requireTLS()
        self.patch(streamplug, "HANDSHAKE_TIMEOUT", 0.5)
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        vnl = f"endpoint://ssl:host=127.0.0.1:port={silent.getsockname()[1]}"
        with self.assertRaises(VdeError) as caught:
            await registry.open(reactor, vnl)
        self.assertEqual(
            str(caught.exception),
            f"{vnl}: no TLS handshake within 0.5 s (does the server speak TLS?)")
        self.assertEqual(caught.exception.errno, errno.ETIMEDOUT)
        accepted, _ = silent.accept()
        self.addCleanup(accepted.close)
        accepted.setblocking(False)

        def ended() -> bool:
            try:
                while accepted.recv(65536):  # the ClientHello, then the end
                    pass
            except BlockingIOError:
                return False
            except ConnectionResetError:  # aborted: no need to say goodbye
                pass
            return True

        await until(ended, "the client to close the connection")


class ListenTests(SynchronousTestCase):
    def test_options(self) -> None:
        assertEndpointList(self, "listen", "tcp:5000:interface=127.0.0.1", "unix:/tmp/x")

    def test_badClientDescription(self) -> None:
        failure = self.failureResultOf(registry.open(reactor, "endpoint://bogus:1"), VNLError)
        self.assertIn("not a Twisted client endpoint description", str(failure.value))
        self.assertTrue(str(failure.value).startswith("endpoint://bogus:1: "))

    def test_cablesIntoSwitch(self) -> None:
        """
        Cables over a UNIX socket and over TCP become ports of the switch
        and carry frames to and from a C vde_plug on its directory; a cable
        that goes frees its port.
        """
        tcp = freePort()
        unixPath = os.path.join(tmpdir(self), "cables.sock")
        switch = SwitchProcess(
            self, "--listen", f"unix:{unixPath}", "--listen", f"tcp:{tcp}:interface=127.0.0.1"
        )
        switch.waitFor(lambda: os.path.exists(unixPath), "the cable socket")
        c = cPlug(self, "C vde_plug", f"vde://{switch.path}")
        viaUnix = ourPlug(self, "our vde_plug (unix)", f"endpoint://unix:{unixPath}")
        viaTcp = ourPlug(self, "our vde_plug (tcp)", f"endpoint://tcp:host=127.0.0.1:port={tcp}")
        plugs = [c, viaUnix, viaTcp]
        switch.waitFor(lambda: switch.log().count("is port") == 2, "both cables to join")
        for i, sender in enumerate(plugs):
            frame = eth(BROADCAST, MACS[i], 100 + i)
            sender.send(frame)
            for j, receiver in enumerate(plugs):
                if j != i:
                    self.assertEqual(receiver.recv(), frame, (i, j))
        # Learned: unicast to the TCP cable reaches only it.
        unicast = eth(MACS[2], MACS[0], 200)
        c.send(unicast)
        self.assertEqual(viaTcp.recv(), unicast)
        self.assertIsNone(viaUnix.recv(timeout=0.5))
        console = ConsoleClient(switch.mgmt)
        self.addCleanup(console.close)
        ports = console.cmd("port/print")
        self.assertIn(b"module stream", ports)
        viaTcp.kill()
        switch.waitFor(lambda: b"from 127.0.0.1" not in console.cmd("port/print"),
                       "the TCP cable's port to go")
        # SIGTERM: Twisted re-raises it after a clean shutdown.
        self.assertIn(switch.stop(), (0, -signal.SIGTERM))
        self.assertFalse(os.path.exists(unixPath))
        self.assertFalse(os.path.exists(switch.path))
