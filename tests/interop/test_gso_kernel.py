"""
Software segmentation (L{vdetwist.wire.gso}) compared byte for byte with the
kernel's own segmentation of the same super-frames (written into a tap
bridged to a tap that offloads nothing), for frames made up here and for the
super-frames of a real TCP stream.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import select
import socket
import threading
import time

from twisted.trial.unittest import TestCase

from tests.support import makeNamespace, nsSocket, requireTun
from vdetwist.testing import netns
from vdetwist._transport.device import TAP_FLAGS, TUN_DEVICE, setIff
from vdetwist.wire.gso import segment
from vdetwist.wire.vnethdr import (
    GSO_NONE, GSO_TCPV4, GSO_TCPV6, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, VnetHeader,
)
from tests.unit.test_gso import ACK, CWR, ECE, FIN, PSH, payloadOf, superFrame

IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0


class KernelReference:
    """
    The kernel segmenting for us: a bridge in a namespace of its own between
    a tap we write vnet frames into and a tap that offloads nothing, whose
    frames we read.  Blocking; used from one thread.
    """

    def __init__(self, test: TestCase) -> None:
        requireTun()
        self.namespace = makeNamespace(test)
        with netns.entered(self.namespace):
            self.writer = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
            test.addCleanup(os.close, self.writer)
            setIff(self.writer, b"gsoin", TAP_FLAGS | IFF_VNET_HDR)
            self.reader = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
            test.addCleanup(os.close, self.reader)
            setIff(self.reader, b"gsoout", TAP_FLAGS)
        for argv in (
            ["ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0"],
            ["ip", "link", "set", "gsoin", "master", "br0", "up"],
            ["ip", "link", "set", "gsoout", "master", "br0", "up"],
            ["ip", "link", "set", "br0", "up"],
        ):
            self.namespace.run(argv, check=True)
        for name in ("gsoin", "gsoout", "br0"):
            netns.waitOperational(name, self.namespace)

    def segment(self, vframe: bytes) -> list[bytes]:
        """
        What the kernel makes of C{vframe} on a wire without offloads.
        """
        os.write(self.writer, vframe)
        frames = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.reader], [], [], 0.2 if frames else 2)
            if not ready:
                if frames:
                    break
                continue
            frame = os.read(self.reader, 70000)
            if frame[6:12] == vframe[16:22]:
                frames.append(frame)
        return frames


class KernelComparisonTests(TestCase):
    """
    L{segment} against the kernel's own segmentation.
    """

    def setUp(self) -> None:
        self.kernel = KernelReference(self)

    def compare(self, vframe: bytes) -> None:
        ours = segment(vframe)
        theirs = self.kernel.segment(vframe)
        self.assertEqual(len(ours), len(theirs))
        for i, (mine, kernel) in enumerate(zip(ours, theirs)):
            self.assertEqual(mine.hex(), kernel.hex(), f"segment {i} of {len(ours)} differs")

    def test_made(self) -> None:
        """
        Super-frames of every kind made here: TCP over IPv4 and IPv6, tagged
        or not, with options, ECN flags, FIN; USO; legacy UFO; a partial
        checksum alone.
        """
        payload = payloadOf(20000, 11)
        for v6 in (False, True):
            for vlan in (None, 9):
                self.compare(superFrame(payload, 1448, v6=v6, vlan=vlan))
                self.compare(superFrame(payload[:7777], 1000, v6=v6, vlan=vlan,
                                        tcpFlags=ACK | PSH | FIN | CWR | ECE, ecn=True,
                                        options=b"\x01\x01\x08\x0a" + bytes(8)))
                self.compare(superFrame(payload[:9999], 1200, v6=v6, vlan=vlan, udp=True))
        self.compare(superFrame(payload, 1448, ipOptions=b"\x01\x01\x01\x00"))
        self.compare(superFrame(payload[:5000], 1480, ufo=True))
        needs = superFrame(payload[:999], 1448)
        self.compare(VnetHeader.unpack(needs)._replace(gsoType=GSO_NONE, gsoSize=0).pack()
                     + needs[10:])

    def test_stream(self) -> None:
        """
        The super-frames of real TCP streams (IPv4 and IPv6), read from an
        offloading tap, segment as the kernel segments them.
        """
        for v6 in (False, True):
            captured = LiveStream(self, v6).run(4 << 20)
            big = [f for f in captured if f[1] & 0x7F in (GSO_TCPV4, GSO_TCPV6)]
            self.assertGreater(len(big), 10, "the stream made no super-frames")
            for vframe in big[:40] + [f for f in captured if not f[1]][:5]:
                self.compare(vframe)


class LiveStream:
    """
    A TCP stream between two namespaces, each with a vnet tap (the sender's
    with offloads on), relayed by a thread here which keeps what the
    sender's tap gave.
    """

    def __init__(self, test: TestCase, v6: bool) -> None:
        requireTun()
        self.v6 = v6
        self.family = socket.AF_INET6 if v6 else socket.AF_INET
        self.sides = []
        for i, offloads in ((1, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN), (2, 0)):
            namespace = makeNamespace(test, ipv6=v6)
            with netns.entered(namespace):
                fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
                test.addCleanup(os.close, fd)
                setIff(fd, b"gsolive", TAP_FLAGS | IFF_VNET_HDR)
                fcntl.ioctl(fd, TUNSETOFFLOAD, offloads)
            address = f"fd00:9::{i}/64" if v6 else f"10.9.0.{i}/24"
            namespace.run(["ip", "addr", "add", address, "dev", "gsolive",
                           *(["nodad"] if v6 else [])], check=True)
            namespace.run(["ip", "link", "set", "gsolive", "up"], check=True)
            self.sides.append((namespace, fd))
        self.captured: list[bytes] = []
        self.stop = threading.Event()

    def relay(self) -> None:
        (_, a), (_, b) = self.sides
        while not self.stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.1)
            for fd in ready:
                other = b if fd == a else a
                try:
                    while True:
                        frame = os.read(fd, 70000)
                        if fd == a:
                            self.captured.append(frame)
                        os.write(other, frame)
                except BlockingIOError:
                    pass

    def run(self, size: int) -> list[bytes]:
        """
        Send C{size} bytes from the first namespace to the second; return the
        vnet frames the first one's tap gave.
        """
        (client, _), (server, _) = self.sides
        relay = threading.Thread(target=self.relay)
        relay.start()
        try:
            listener = nsSocket(server.name, self.family, socket.SOCK_STREAM)
            with listener:
                listener.bind(("fd00:9::2" if self.v6 else "10.9.0.2", 5001))
                listener.listen(1)
                sender = nsSocket(client.name, self.family, socket.SOCK_STREAM)
                sent = payloadOf(size)
                received = hashlib.sha256()
                count = 0

                def send() -> None:
                    with sender:
                        sender.settimeout(30)
                        sender.connect(("fd00:9::2" if self.v6 else "10.9.0.2", 5001))
                        sender.sendall(sent)

                writer = threading.Thread(target=send)
                writer.start()
                listener.settimeout(30)
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(30)
                    while count < size:
                        data = connection.recv(1 << 20)
                        if not data:
                            break
                        received.update(data)
                        count += len(data)
                writer.join(30)
            assert received.digest() == hashlib.sha256(sent).digest(), "stream corrupted"
        finally:
            self.stop.set()
            relay.join(10)
        return self.captured

