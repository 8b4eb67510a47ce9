"""
VNLs as Twisted client endpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.endpoints import clientFromString, quoteStringArgument
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.support import ROOT, frame, ourEnv, records, tmpdir
from vdetwist.endpoints import PlugTransport, VdeAddress, VdeClientEndpoint
from vdetwist.registry import OpenArgs, Registry, registry
from vdetwist.testing import FrameCollector
from tests.unit.test_registry import RecordingBackend


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.reason = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.reason = reason


class ParserTests(SynchronousTestCase):
    def test_positional(self) -> None:
        endpoint = clientFromString(reactor, "vde:" + quoteStringArgument("ptp:///tmp/x"))
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        self.assertEqual(endpoint.vnl, "ptp:///tmp/x")

    def test_keywords(self) -> None:
        """
        C{vnl=} takes VNLs with C{=} in them; the open arguments are those
        of vde_plug's options.
        """
        vnl = "vde:///tmp/sw[port=3/mode=0660]"
        endpoint = clientFromString(
            reactor,
            "vde:vnl=" + quoteStringArgument(vnl) + ":descr=qemu:port=5:group=kvm:mode=660",
        )
        self.assertEqual(endpoint.vnl, vnl)
        self.assertEqual(endpoint.description, "qemu")
        self.assertEqual(endpoint.args, OpenArgs(port=5, group="kvm", mode=0o660))

    def test_twoVNLs(self) -> None:
        self.assertRaises(ValueError, clientFromString, reactor, "vde:a:b")


class MemoryEndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.backend = RecordingBackend()
        self.endpoint = VdeClientEndpoint(None, "mem://lan", registry=Registry([self.backend]))
        self.protocol = self.successResultOf(
            self.endpoint.connect(Factory.forProtocol(Recorder))
        )
        self.plug = self.protocol.transport.plug

    def test_transport(self) -> None:
        transport = self.protocol.transport
        self.assertIsInstance(transport, PlugTransport)
        self.assertTrue(verifyObject(ITransport, transport))
        self.assertEqual(transport.getPeer(), VdeAddress("mem://lan"))

    def test_framesAsRecords(self) -> None:
        """
        The protocol reads and writes the network in the stream encoding.
        """
        self.plug.inject(frame(1))
        self.assertEqual(self.protocol.data, records([frame(1)]))
        data = records([frame(2), frame(3)])
        self.protocol.transport.write(data[:5])
        self.protocol.transport.write(data[5:])
        self.assertEqual(self.plug.sentFrames, [frame(2), frame(3)])

    def test_close(self) -> None:
        self.protocol.transport.loseConnection()
        self.assertTrue(self.plug.closed)
        self.assertTrue(self.protocol.reason.check(ConnectionDone))


class RealEndpointTests(TestCase):
    """
    A protocol on a real ptp:// cable, opened from an endpoint string.
    """

    async def test_ptpCable(self) -> None:
        path = os.path.join(tmpdir(self), "ptp")
        other = await registry.open(reactor, "ptp://" + path)
        self.addCleanup(other.close)
        collector = FrameCollector()
        other.startReceiving(collector)
        endpoint = clientFromString(reactor, "vde:vnl=" + quoteStringArgument("ptp://" + path))
        protocol = await endpoint.connect(Factory.forProtocol(Recorder))
        self.addCleanup(protocol.transport.loseConnection)
        protocol.transport.write(records([frame(7, 1000)]))
        await deferLater(reactor, 0.1)
        self.assertEqual(collector.frames, [frame(7, 1000)])
        other.send(frame(8, 60))
        await deferLater(reactor, 0.1)
        self.assertEqual(protocol.data, records([frame(8, 60)]))


def waitFor(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


class ExampleTests(SynchronousTestCase):
    """
    The documented example runs: two chatters on one cable hear each other.
    """

    def test_l2chat(self) -> None:
        path = os.path.join(tmpdir(self), "ptp")
        script = os.path.join(ROOT, "docs", "examples", "l2chat.py")

        def chatter(name: str) -> subprocess.Popen:
            process = subprocess.Popen(
                [sys.executable, script, "ptp://" + path, name],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ourEnv(),
            )
            self.addCleanup(process.kill)
            return process

        alice = chatter("alice")
        waitFor(path)
        bob = chatter("bob")
        waitFor(path + "+")
        bob.stdin.write(b"hello\n")
        bob.stdin.flush()
        alice.stdin.write(b"hi\n")
        alice.stdin.flush()
        time.sleep(0.5)
        heard = {}
        for name, process in [("alice", alice), ("bob", bob)]:
            heard[name], _ = process.communicate(timeout=20)
            self.assertEqual(process.returncode, 0)
        self.assertEqual(heard, {"alice": b"bob: hello\n", "bob": b"alice: hi\n"})
