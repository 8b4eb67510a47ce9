"""
C{vxvde://} and C{vxlan://} on real sockets.

The first part runs the plugs in this process on loopback unicast sockets
only (no multicast, no root): the "group" is an ordinary socket, which is
enough to exercise learning, unicast, goodbyes, own-packet suppression, bad
input and jumbo frames.

The second part needs root: every test makes its own network namespaces
(veths, a bridge, a kernel VXLAN device), all multicast stays on those links,
and everything is removed afterwards.  It runs vdetwist's C{vde_plug} against
the C C{vde_plug} (vxvde, IPv4 and IPv6, two and three members) and against a
Linux kernel VXLAN device (ARP, ping and TCP through a tap), and throws bad
datagrams at a running plug.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.support import (
    DATA_TYPE, TIMEOUT, LogCapture, StreamProcess, cPlug, cTool, frame, linkExists,
    makeNamespace, nsSocket, ourPlug, ping, requireRoot, settle, tmpdir, until, waitFor,
)
from vdetwist.backends.vxlan import VxlanPlug, openVxlanSocket
from vdetwist.backends.vxvde import IP_PKTINFO, VxvdePlug, VxvdeSockets, openVxvdeSockets
from vdetwist.errors import VdeError, VNLError
from vdetwist.testing.netns import createVeth, entered, uniqueName
from vdetwist.registry import registry
from vdetwist.testing import FrameCollector
from vdetwist.vnl import resolve
from vdetwist.backends.vxlan import parseVxlan
from vdetwist.backends.vxvde import parseVxvde
from vdetwist.wire.vxlan import Verdict, packHeader

#: Ethertype of the probes (the frames checked are L{frame}'s, DATA_TYPE).
PROBE_TYPE = b"\x88\xb6"
BROADCAST = b"\xff" * 6
JUMBO = 9234
#: Linux's SO_RCVBUFFORCE (not in the socket module).
SO_RCVBUFFORCE = 33


def mac(n: int) -> bytes:
    return bytes([0x02, 0x78, 0, 0, 0, n])


def dataFrame(n: int, size: int = 100, src: int = 1, dst: bytes = BROADCAST) -> bytes:
    return frame(n, size, src=mac(src), dst=dst)


# ---------------------------------------------------------------------------
# In-process plugs on loopback


def udp(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.settimeout(2)
    return sock


def pending(sock: socket.socket) -> list[tuple[bytes, Any]]:
    """
    Everything queued on C{sock} now.
    """
    found = []
    sock.setblocking(False)
    try:
        while True:
            found.append(sock.recvfrom(65536))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return found


class FakeTime:
    """
    The reactor, with a clock the test sets.
    """

    def __init__(self, real) -> None:
        self._real = real
        self.now = 1000.0

    def seconds(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class LoopbackCase(TestCase):
    def sock(self, host: str = "127.0.0.1", port: int = 0) -> socket.socket:
        sock = udp(host, port)
        self.addCleanup(sock.close)
        return sock

    def start(self, plug) -> FrameCollector:
        self.addCleanup(plug.close)
        collector = FrameCollector()
        plug.startReceiving(collector)
        return collector


class VxvdeLoopbackTests(LoopbackCase):
    """
    A vxvde plug whose "group" is a loopback socket: either its own group
    socket (so what it sends to the group comes back as its own packets,
    as with multicast loopback) or a separate listener.
    """

    def vxvde(self, vnl: str = "vxvde:///v=5", ownGroup: bool = True, clock: Any = reactor):
        config = parseVxvde(resolve(vnl))
        multicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        multicast.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        multicast.bind(("127.0.0.1", 0))
        unicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unicast.bind(("127.0.0.1", 0))
        if ownGroup:
            self.group = None
            groupAddress = multicast.getsockname()
        else:
            self.group = self.sock()
            groupAddress = self.group.getsockname()
        for s in (multicast, unicast):
            s.setblocking(False)
        plug = VxvdePlug(
            clock, vnl, config, VxvdeSockets(multicast, unicast, groupAddress, socket.AF_INET)
        )
        return plug, self.start(plug)

    async def test_learnAndUnicast(self) -> None:
        """
        A frame from a member is delivered and its source MAC learned with
        the member's address; frames to that MAC go to it directly, group
        traffic does not reach it, and the plug drops its own looped-back
        group packets.
        """
        plug, collector = self.vxvde()
        header = packHeader(5)
        peer = self.sock()
        peer.sendto(header + dataFrame(1, src=7), plug.group)
        await until(lambda: collector.frames, "the member's frame")
        self.assertEqual(collector.frames, [dataFrame(1, src=7)])
        self.assertEqual(plug.macs.lookup(mac(7), 1), peer.getsockname())

        plug.send(dataFrame(2, dst=mac(7)))
        data, source = peer.recvfrom(65536)
        self.assertEqual(data, header + dataFrame(2, dst=mac(7)))
        self.assertEqual(source, plug.unicastSocket.getsockname())

        plug.send(dataFrame(3))
        plug.send(dataFrame(4, dst=mac(9)))
        await until(lambda: plug.ownDropped == 2, "own packets dropped")
        self.assertEqual(pending(peer), [])
        self.assertEqual(collector.frames, [dataFrame(1, src=7)])
        self.assertEqual((plug.stats.sent, plug.stats.received), (3, 1))

        # Unicast to the plug's own socket is heard, and learned, too.
        other = self.sock()
        other.sendto(header + dataFrame(5, src=8, dst=mac(1)), plug.unicastSocket.getsockname())
        await until(lambda: len(collector.frames) == 2, "the unicast frame")
        self.assertEqual(plug.macs.lookup(mac(8), 1), other.getsockname())

    async def test_goodbye(self) -> None:
        """
        The bare header from a member makes the plug forget its MACs (frames
        to them go to the group again); one with a wrong VNI does not.
        """
        plug, collector = self.vxvde(ownGroup=False)
        peer = self.sock()
        peer.sendto(packHeader(5) + dataFrame(1, src=7), plug.unicastSocket.getsockname())
        peer.sendto(packHeader(5) + dataFrame(2, src=6), plug.unicastSocket.getsockname())
        await until(lambda: len(collector.frames) == 2, "the frames")
        peer.sendto(packHeader(6), plug.unicastSocket.getsockname())
        await until(lambda: plug.rejected.total == 1, "a rejection")
        self.assertEqual(plug.macs.lookup(mac(7), 1), peer.getsockname())
        peer.sendto(packHeader(5), plug.unicastSocket.getsockname())
        await until(lambda: plug.goodbyes == 1, "the goodbye")
        self.assertIsNone(plug.macs.lookup(mac(7), 1))
        self.assertIsNone(plug.macs.lookup(mac(6), 1))
        plug.send(dataFrame(3, dst=mac(7)))
        self.assertEqual(self.group.recv(65536), packHeader(5) + dataFrame(3, dst=mac(7)))
        self.assertEqual(pending(peer), [])

    async def test_closeSaysGoodbye(self) -> None:
        plug, collector = self.vxvde(ownGroup=False)
        address = plug.unicastSocket.getsockname()
        plug.close()
        self.assertEqual(self.group.recvfrom(65536), (packHeader(5), address))
        self.assertIsNotNone(collector.reason)

    async def test_expiry(self) -> None:
        """
        A learned address is used for C{expiretime} seconds after the last
        frame from that MAC; lookups do not refresh it.
        """
        clock = FakeTime(reactor)
        plug, collector = self.vxvde("vxvde:///v=5/expiretime=30", ownGroup=False, clock=clock)
        peer = self.sock()
        peer.sendto(packHeader(5) + dataFrame(1, src=7), plug.unicastSocket.getsockname())
        await until(lambda: collector.frames, "the frame")
        clock.now += 30
        plug.send(dataFrame(2, dst=mac(7)))
        self.assertEqual(peer.recv(65536)[8:], dataFrame(2, dst=mac(7)))
        clock.now += 0.5
        plug.send(dataFrame(3, dst=mac(7)))
        self.assertEqual(self.group.recv(65536)[8:], dataFrame(3, dst=mac(7)))
        self.assertEqual(pending(peer), [])

    async def test_badInput(self) -> None:
        """
        Malformed headers, wrong VNIs, truncated and oversized datagrams are
        counted by reason, reported once (not per datagram), and the plug
        keeps working.
        """
        logs = LogCapture(self)
        plug, collector = self.vxvde(ownGroup=False)
        peer = self.sock()
        good = dataFrame(1, src=7)
        bad = [
            (bytes.fromhex("0c00000000000500") + good, Verdict.BAD_FLAGS),
            (bytes.fromhex("0000000000000500") + good, Verdict.BAD_FLAGS),
            (bytes.fromhex("0801020300000509") + good, Verdict.BAD_RESERVED),
            (packHeader(6) + good, Verdict.WRONG_VNI),
            (packHeader(5)[:5], Verdict.TRUNCATED),
            (b"", Verdict.TRUNCATED),
            (packHeader(5) + good[:14], Verdict.TRUNCATED),
            (packHeader(5) + bytes(JUMBO + 1), Verdict.OVERSIZED),
            (packHeader(5) + bytes(20000), Verdict.OVERSIZED),
        ]
        rounds = 20
        for _ in range(rounds):
            for datagram, _ in bad:
                peer.sendto(datagram, plug.unicastSocket.getsockname())
            await settle(0.005)
        await until(lambda: plug.rejected.total == rounds * len(bad), "the rejections")
        expected: dict = {}
        for _, verdict in bad:
            expected[verdict] = expected.get(verdict, 0) + rounds
        self.assertEqual(plug.rejected.counts, expected)
        self.assertEqual(collector.frames, [])
        self.assertIsNone(plug.macs.lookup(mac(7), 1))
        self.assertEqual(len(logs.withFormat("rejected")), 1)
        peer.sendto(packHeader(5) + good, plug.unicastSocket.getsockname())
        await until(lambda: collector.frames == [good], "the good frame")
        plug.close()
        # What was pending is summarised once at close.
        self.assertEqual(len(logs.withFormat("rejected")), 2)

    async def test_jumbo(self) -> None:
        plug, collector = self.vxvde(ownGroup=False)
        peer = self.sock()
        big = dataFrame(1, JUMBO, src=7)
        peer.sendto(packHeader(5) + big, plug.unicastSocket.getsockname())
        await until(lambda: collector.frames, "the jumbo frame")
        self.assertEqual(collector.frames, [big])
        plug.send(dataFrame(2, JUMBO, dst=mac(7)))
        self.assertEqual(peer.recv(65536), packHeader(5) + dataFrame(2, JUMBO, dst=mac(7)))
        plug.send(dataFrame(3, JUMBO + 1, dst=mac(7)))
        self.assertEqual(plug.stats.dropped, 1)

    async def test_shortFrames(self) -> None:
        """
        Frames shorter than an Ethernet header are discarded, as in C, and
        counted as dropped (C's vde_send reports them sent).
        """
        plug, _ = self.vxvde(ownGroup=False)
        plug.send(b"\xff" * 13)
        plug.send(b"")
        self.assertEqual((plug.stats.sent, plug.stats.dropped), (0, 2))
        self.assertEqual(pending(self.group), [])

    async def test_pause(self) -> None:
        plug, collector = self.vxvde(ownGroup=False)
        peer = self.sock()
        plug.pauseProducing()
        peer.sendto(packHeader(5) + dataFrame(1, src=7), plug.unicastSocket.getsockname())
        await settle(0.1)
        self.assertEqual(collector.frames, [])
        plug.resumeProducing()
        await until(lambda: collector.frames, "the frame after resuming")


class VxlanLoopbackTests(LoopbackCase):
    """
    A vxlan plug on 127.0.0.1:P, a remote VTEP on 127.0.0.2 (listening on
    P, sending from another port, like a kernel VXLAN device), the group a
    listener on 127.0.0.3:P.
    """

    def vxlan(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        vnl = f"vxlan:///v=9/port={port}"
        self.group = self.sock("127.0.0.3", port)
        self.vtepListener = self.sock("127.0.0.2", port)
        self.vtepSender = self.sock("127.0.0.2")
        plug = VxlanPlug(reactor, vnl, parseVxlan(resolve(vnl)), sock, ("127.0.0.3", port), socket.AF_INET)
        self.address = ("127.0.0.1", port)
        return plug, self.start(plug)

    async def test_unicastToLearnedPeer(self) -> None:
        """
        Frames to a MAC learned from a VTEP go to the VTEP's IP at the VXLAN
        port, whatever source port the VTEP sent from.  The C plugin never
        captures the sender's address (vxvde-vxlan.md section 4.4) and so
        fails to send these at all (EDESTADDRREQ): we match the wire format
        its code intends, not the bug.
        """
        plug, collector = self.vxlan()
        self.vtepSender.sendto(packHeader(9) + dataFrame(1, src=7), self.address)
        await until(lambda: collector.frames, "the VTEP's frame")
        self.assertEqual(plug.macs.lookup(mac(7), 1), ("127.0.0.2", self.address[1]))
        plug.send(dataFrame(2, dst=mac(7)))
        data, source = self.vtepListener.recvfrom(65536)
        self.assertEqual((data, source), (packHeader(9) + dataFrame(2, dst=mac(7)), self.address))
        self.assertEqual(pending(self.vtepSender), [])
        self.assertEqual(pending(self.group), [])
        # Broadcast and unknown destinations go to the group, from the port.
        plug.send(dataFrame(3))
        plug.send(dataFrame(4, dst=mac(8)))
        self.assertEqual(
            pending(self.group),
            [(packHeader(9) + dataFrame(3), self.address),
             (packHeader(9) + dataFrame(4, dst=mac(8)), self.address)],
        )

    async def test_validation(self) -> None:
        """
        Reserved bits are ignored (RFC 7348, and C); bad flags, other VNIs,
        runts and oversized datagrams are counted and dropped.
        """
        plug, collector = self.vxlan()
        good = dataFrame(1, src=7)
        send = lambda datagram: self.vtepSender.sendto(datagram, self.address)
        send(bytes.fromhex("0c00000000000900") + good)
        send(packHeader(8) + good)
        send(packHeader(9))
        send(packHeader(9) + good[:14])
        send(packHeader(9) + bytes(JUMBO + 1))
        send(bytes.fromhex("0801020300000909") + good)
        send(packHeader(9) + dataFrame(2, JUMBO, src=7))
        await until(lambda: len(collector.frames) == 2, "the good frames")
        self.assertEqual(collector.frames, [good, dataFrame(2, JUMBO, src=7)])
        self.assertEqual(
            plug.rejected.counts,
            {Verdict.BAD_FLAGS: 1, Verdict.WRONG_VNI: 1, Verdict.TRUNCATED: 2,
             Verdict.OVERSIZED: 1},
        )


class OpenTests(TestCase):
    """
    Opening through the registry: bad VNLs fail before any socket exists.
    """

    async def test_badOption(self) -> None:
        for vnl in ["vxvde:///x=1", "vxlan:///bind=10.78.0.1", "vxlan:///port=abc"]:
            with self.assertRaises(VNLError):
                await registry.open(reactor, vnl)

    async def test_notMulticast(self) -> None:
        for vnl in ["vxvde://10.78.0.1", "vxlan://10.78.0.1", "vxvde://fd78::1"]:
            with self.assertRaises(VdeError) as caught:
                await registry.open(reactor, vnl)
            self.assertIn("is not a multicast address", str(caught.exception))
            self.assertEqual(caught.exception.errno, errno.EINVAL)


# ---------------------------------------------------------------------------
# Namespaces


def disableTxChecksum(namespace: str, device: str) -> None:
    """
    Make C{device} checksum in software (C{ethtool -K DEV tx off}).

    A veth leaves the checksums of locally made packets to "hardware" that
    never computes them; inside a kernel VXLAN tunnel the partial inner TCP
    checksum then reaches the peer's UDP socket (our plug) and, through the
    tap, a stack that rightly drops it.  Real NICs compute it.
    """
    ETHTOOL_STXCSUM, SIOCETHTOOL = 0x17, 0x8946
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
    request = struct.pack("16sP", device.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    # The socket's namespace is where the ioctl looks the device up.
    with nsSocket(namespace, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)


class Net:
    """
    The namespaces of one test (and the links in them): all removed at
    cleanup.
    """

    def __init__(self, test: TestCase) -> None:
        self.test = test

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
        if check and done.returncode:
            raise AssertionError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done

    def ip(self, namespace: str, *args: str) -> None:
        self.run("ip", "-n", namespace, *args)

    def namespace(self, label: str) -> str:
        """
        A new namespace (IPv6 on, loopback up), named after C{label}.
        """
        return makeNamespace(self.test, uniqueName("vxt" + label), ipv6=True).name

    def veth(self, ns1: str, if1: str, ns2: str, if2: str) -> None:
        createVeth(if1, if2, ns1, ns2)

    def address(self, namespace: str, device: str, *cidrs: str) -> None:
        for cidr in cidrs:
            extra = ["nodad"] if ":" in cidr else []
            self.ip(namespace, "addr", "add", cidr, "dev", device, *extra)
        self.ip(namespace, "link", "set", device, "up")

    def member(self, namespace: str, device: str, n: int, subnet: int) -> None:
        """
        C{device} gets 10.78.SUBNET.N/24 and fd78::SUBNET:N/64, and carries
        IPv4 multicast.
        """
        self.address(namespace, device, f"10.78.{subnet}.{n}/24", f"fd78::{subnet}:{n}/64")
        self.ip(namespace, "route", "add", "224.0.0.0/4", "dev", device)

    def waitForLink(self, namespace: str, device: str) -> None:
        waitFor(lambda: linkExists(device, namespace), f"{device} to appear in {namespace}")

    def pair(self, subnet: int, labels: tuple[str, str] = ("a", "b")) -> tuple[str, str]:
        """
        Two new namespaces cabled by a veth, C{eth0} in each: members 1 and
        2 of C{subnet} (see L{member}).
        """
        a, b = self.namespace(labels[0]), self.namespace(labels[1])
        self.veth(a, "eth0", b, "eth0")
        self.member(a, "eth0", 1, subnet)
        self.member(b, "eth0", 2, subnet)
        return a, b

    def star(self, count: int, subnet: int) -> tuple[str, dict[int, str]]:
        """
        A hub namespace whose bridge C{br0} (multicast snooping off, so it
        floods the group) has ports C{p1}..C{pCOUNT}, each cabled to the
        C{eth0} of a new namespace, member N of C{subnet}: the hub and the
        members' namespaces by N.
        """
        hub = self.namespace("h")
        self.ip(hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        self.ip(hub, "link", "set", "br0", "up")
        spaces = {}
        for n in range(1, count + 1):
            spaces[n] = self.namespace(f"m{n}")
            self.veth(hub, f"p{n}", spaces[n], "eth0")
            self.ip(hub, "link", "set", f"p{n}", "master", "br0", "up")
            self.member(spaces[n], "eth0", n, subnet)
        return hub, spaces


@dataclass(frozen=True)
class Udp:
    """
    A UDP datagram seen on a capture socket (L{udpSeen}).

    @ivar ttl: the IPv4 TTL or IPv6 hop limit.
    @ivar payload: the UDP payload; of a fragmented datagram only what its
        first fragment carries.
    """

    source: str
    sport: int
    target: str
    dport: int
    ttl: int
    payload: bytes

    @property
    def frame(self) -> bytes:
        """
        The payload behind its VXLAN header.
        """
        return self.payload[8:]


def udpSeen(capture: socket.socket) -> list[Udp]:
    """
    The UDP datagrams among the packets queued on C{capture} (see
    L{NamespaceCase.capture}), IPv4 and IPv6; later fragments are skipped.
    """
    found = []
    for packet, _ in pending(capture):
        ethertype = packet[12:14]
        if ethertype == b"\x08\x00":
            if packet[23] != 17 or struct.unpack("!H", packet[20:22])[0] & 0x1FFF:
                continue
            family, ttl, start = socket.AF_INET, packet[22], 14 + (packet[14] & 0x0F) * 4
            source, target = packet[26:30], packet[30:34]
        elif ethertype == b"\x86\xdd":
            following, start = packet[20], 54
            if following == 44:  # a fragment header
                if struct.unpack("!H", packet[56:58])[0] & 0xFFF8:
                    continue
                following, start = packet[54], 62
            if following != 17:
                continue
            family, ttl = socket.AF_INET6, packet[21]
            source, target = packet[22:38], packet[38:54]
        else:
            continue
        sport, dport, length = struct.unpack("!HHH", packet[start : start + 6])
        found.append(Udp(
            socket.inet_ntop(family, source), sport, socket.inet_ntop(family, target), dport,
            ttl, packet[start + 8 : start + length],
        ))
    return found


def probesFrom(proc: StreamProcess, n: int) -> int:
    return sum(1 for f in list(proc.frames) if f[12:14] == PROBE_TYPE and f[6:12] == mac(n))


def probe(n: int, seq: int) -> bytes:
    return BROADCAST + mac(n) + PROBE_TYPE + struct.pack(">I", seq) + bytes(46)


def handshake(members: dict[int, StreamProcess]) -> None:
    """
    Each member broadcasts probes until every other member has heard one:
    then all are up, joined, and know each other's MAC (member n is
    C{mac(n)}).
    """
    deadline = time.monotonic() + TIMEOUT
    for n, sender in members.items():
        others = [p for m, p in members.items() if m != n]
        seq = 0
        while not all(probesFrom(p, n) for p in others):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"probes from member {n} not heard:"
                    + "".join(f"\n--- {p.name}:\n{p.stderrText()}" for p in members.values())
                )
            sender.send(probe(n, seq))
            seq += 1
            time.sleep(0.05)


def sendPaced(proc: StreamProcess, frames: Sequence[bytes]) -> None:
    for i in range(0, len(frames), 8):
        proc.send(*frames[i : i + 8])
        time.sleep(0.004)


def sendInStep(sender: StreamProcess, receiver: StreamProcess, frames: Sequence[bytes],
               step: int = 10) -> None:
    """
    Send C{step} frames at a time, each batch once the previous one has
    arrived, so that a busy machine cannot overflow a socket buffer: UDP
    would drop, and the test is about the wire format, not about load.
    """
    start = len(receiver.data())
    for i in range(0, len(frames), step):
        batch = frames[i : i + step]
        sender.send(*batch)
        done = start + i + len(batch)
        receiver.waitFor(lambda: len(receiver.data()) >= done, f"frames {i}..{done - start}")


def sizes(count: int) -> list[int]:
    edges = [15, 60, 64, 1000, 1400, 1500, 1514, 4000, 9000, JUMBO]
    return (edges * (count // len(edges) + 1))[:count]


class NamespaceCase(TestCase):
    def setUp(self) -> None:
        requireRoot("network namespaces")
        cTool("vde_plug")
        self.net = Net(self)

    def capture(self, namespace: str, device: str) -> socket.socket:
        """
        An AF_PACKET socket seeing everything on C{device}.
        """
        sock = nsSocket(namespace, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.addCleanup(sock.close)
        # Room for a test's worth of jumbo frames (SO_RCVBUFFORCE: root).
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        sock.bind((device, 0))
        return sock

    def groupListener(self, namespace: str, group: str, interface: str,
                      timeout: float) -> socket.socket:
        """
        A UDP socket on the vxvde port that has joined the IPv4 C{group} on
        the interface with address C{interface}.
        """
        sock = nsSocket(namespace, socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((group, 14789))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        socket.inet_aton(group) + socket.inet_aton(interface))
        sock.settimeout(timeout)
        return sock


class SocketTests(NamespaceCase):
    def test_sharing(self) -> None:
        """
        Several vxvde members share a namespace (the group socket is
        reusable, unicast ports differ); a vxlan port is exclusive, also
        against a kernel VXLAN device on the same port.
        """
        a = self.net.namespace("a")
        self.net.ip(a, "link", "set", "lo", "multicast", "on")
        self.net.ip(a, "route", "add", "224.0.0.0/4", "dev", "lo")
        config = parseVxvde(resolve("vxvde://239.78.6.1"))
        with entered(a):
            first = openVxvdeSockets(config)
            self.addCleanup(first.close)
            second = openVxvdeSockets(config)
            self.addCleanup(second.close)
        self.assertEqual(first.group, ("239.78.6.1", 14789))
        self.assertNotEqual(first.unicast.getsockname(), second.unicast.getsockname())

        config = parseVxlan(resolve("vxlan://239.78.6.2"))
        with entered(a):
            sock, group, family = openVxlanSocket(config)
        self.addCleanup(sock.close)
        self.assertEqual((sock.getsockname(), group), (("0.0.0.0", 4789), ("239.78.6.2", 4789)))
        with self.assertRaises(VdeError) as caught, entered(a):
            openVxlanSocket(config)
        self.assertEqual(caught.exception.errno, errno.EADDRINUSE)
        self.assertIn("kernel VXLAN device", str(caught.exception))
        sock.close()
        self.net.ip(a, "link", "add", "vx0", "type", "vxlan", "id", "5", "dstport", "4789",
                    "group", "239.78.6.2", "dev", "lo")
        self.net.ip(a, "link", "set", "vx0", "up")
        with self.assertRaises(VdeError) as caught, entered(a):
            openVxlanSocket(config)
        self.assertEqual(caught.exception.errno, errno.EADDRINUSE)


class VxvdeInteropTests(NamespaceCase):
    """
    vdetwist's vde_plug and the C vde_plug as vxvde members in different
    namespaces.
    """

    def twoMembers(self, ours: str, theirs: str) -> None:
        a, b = self.net.pair(1)
        members = {1: ourPlug(self, "ours", ours, namespace=a),
                   2: cPlug(self, "C", theirs, namespace=b)}
        handshake(members)
        # Each side has learned the other's MAC: unicast from now on, in
        # both directions, jumbo frames included.
        toC = [dataFrame(n, size, src=1, dst=mac(2)) for n, size in enumerate(sizes(60))]
        toUs = [dataFrame(n, size, src=2, dst=mac(1)) for n, size in enumerate(sizes(60))]
        toAll = [dataFrame(100 + n, 200, src=1) for n in range(10)]
        sendInStep(members[1], members[2], toC + toAll)
        sendInStep(members[2], members[1], toUs)
        time.sleep(0.2)
        # Group and unicast arrive on different sockets: compare as sets.
        self.assertEqual(sorted(members[2].data()), sorted(toC + toAll))
        self.assertEqual(sorted(members[1].data()), sorted(toUs))

    def test_ipv4(self) -> None:
        """
        IPv4, with more options on our side: the unicast socket bound to
        the member's address, a receive buffer, a larger TTL.
        """
        self.twoMembers(
            "vxvde://239.78.1.1/v=781/bind=10.78.1.1/rcvbuf=1m/ttl=2",
            "vxvde://239.78.1.1/v=781",
        )

    def test_ipv6(self) -> None:
        """
        IPv6, with the group interface given (C{if=}) on our side only.
        """
        self.twoMembers("vxvde://ff15::78:1/v=782/if=eth0", "vxvde://ff15::78:1/v=782")

    def test_threeMembersLearn(self) -> None:
        """
        Three members on a bridge: ours and two C ones.  Once MACs are
        learned, frames to a known MAC are unicast to its member (the third
        does not get them, and the capture shows the member's address, not
        the group, as destination) in both directions; after our plug says
        goodbye on close the C members send to our MAC via the group again.
        """
        hub, spaces = self.net.star(3, 2)
        tap = self.capture(hub, "p2")
        vnl = "vxvde://239.78.2.1/v=782"
        members = {
            1: ourPlug(self, "ours", vnl, namespace=spaces[1]),
            2: cPlug(self, "C2", vnl, namespace=spaces[2]),
            3: cPlug(self, "C3", vnl, namespace=spaces[3]),
        }
        handshake(members)
        pending(tap)

        toTwo = [dataFrame(n, 300, src=1, dst=mac(2)) for n in range(20)]
        toOne = [dataFrame(50 + n, 300, src=2, dst=mac(1)) for n in range(20)]
        unknown = [dataFrame(90, 300, src=1, dst=mac(42))]
        sendPaced(members[1], toTwo + unknown)
        sendPaced(members[2], toOne)
        members[2].waitFor(lambda: len(members[2].data()) == 21, "our frames")
        members[1].waitFor(lambda: len(members[1].data()) == 20, "C2's frames")
        members[3].waitFor(lambda: len(members[3].data()) == 1, "the flooded frame")
        time.sleep(0.3)
        self.assertEqual(sorted(members[2].data()), sorted(toTwo + unknown))
        self.assertEqual(members[1].data(), toOne)
        self.assertEqual(members[3].data(), unknown)

        # On the wire to member 2: ours to 10.78.2.2 (unicast), port C2's.
        seen = {}
        for datagram in udpSeen(tap):
            inner = datagram.frame
            if inner[12:14] == DATA_TYPE and inner[6:12] == mac(1):
                seen[inner] = datagram.target
                self.assertEqual(datagram.ttl, 1)  # TTL 1, unicast too, as in C
        for f in toTwo:
            self.assertEqual(seen.get(f), "10.78.2.2")
        self.assertEqual(seen.get(unknown[0]), "239.78.2.1")

        self.assertEqual(members[1].end(), 0)
        time.sleep(0.2)
        after = dataFrame(99, 300, src=2, dst=mac(1))
        members[2].send(after)
        members[3].waitFor(lambda: after in members[3].data(), "the frame to our forgotten MAC")

    def test_grpOnTheWire(self) -> None:
        """
        C{grp} puts the gid into the VNI and the group address: 239.1.2.3
        with gid 0x4e0005 is group 239.78.0.5, VNI 0x4e0005; the C plug
        agrees.
        """
        a, b = self.net.pair(3)
        gid = 0x4E0005
        listener = self.groupListener(b, "239.78.0.5", "10.78.3.2", TIMEOUT)
        vnl = f"vxvde://239.1.2.3/grp={gid}"
        members = {1: ourPlug(self, "ours", vnl, namespace=a),
                   2: cPlug(self, "C", vnl, namespace=b)}
        handshake(members)
        data, source = listener.recvfrom(65536)
        while data[14:20] != mac(1):
            data, source = listener.recvfrom(65536)
        self.assertEqual(data[:8], bytes.fromhex("080000004e000500"))
        self.assertEqual(source[0], "10.78.3.1")

    def test_badInput(self) -> None:
        """
        Malformed headers, wrong VNIs, truncated and oversized datagrams sent
        at a running vde_plug, to the group and to its unicast port: dropped,
        reported in one line rather than one per datagram, and the plug
        still delivers a good frame afterwards.
        """
        a = self.net.namespace("a")
        self.net.ip(a, "link", "set", "lo", "multicast", "on")
        self.net.ip(a, "route", "add", "224.0.0.0/4", "dev", "lo")
        ours = ourPlug(self, "ours", "vxvde://239.78.3.1/v=783", namespace=a)
        raw = self.groupListener(a, "239.78.3.1", "127.0.0.1", 0.2)
        deadline = time.monotonic() + TIMEOUT
        while True:  # find the plug's unicast address from its own frame
            ours.send(probe(1, 0))
            try:
                data, unicast = raw.recvfrom(65536)
                if data[14:20] == mac(1):
                    break
            except socket.timeout:
                pass
            self.assertLess(time.monotonic(), deadline, ours.stderrText())
        good = packHeader(783) + dataFrame(1, src=7)
        bad = [
            bytes.fromhex("0c00000000030f00") + good[8:],
            packHeader(784) + good[8:],
            bytes.fromhex("08ff000000030f00") + good[8:],
            packHeader(783)[:6],
            packHeader(783) + good[8:22],
            packHeader(783) + bytes(JUMBO + 1),
        ]
        sender = nsSocket(a, socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        for _ in range(30):
            for datagram in bad:
                sender.sendto(datagram, ("239.78.3.1", 14789))
                sender.sendto(datagram, unicast)
            time.sleep(0.002)
        time.sleep(0.3)
        sender.sendto(good, ("239.78.3.1", 14789))
        ours.waitFor(lambda: ours.data(), "the good frame")
        time.sleep(0.2)
        self.assertEqual(ours.data(), [dataFrame(1, src=7)])
        self.assertEqual(ours.end(), 0)
        reports = [line for line in ours.stderrText().splitlines() if "rejected" in line]
        self.assertTrue(1 <= len(reports) <= 2, ours.stderrText())
        self.assertIn("wrong VNI", reports[0] + reports[-1])


class VxlanInteropTests(NamespaceCase):
    """
    vdetwist's vde_plug and the C vde_plug (libvdeplug_vxlan) as vxlan://
    VTEPs, each in a namespace of its own (the VXLAN port is exclusive).

    The C plug, as observed (vdeplug 4.0.1; the captures here, and strace):
    one socket bound to 0.0.0.0:4789 (or [::]:4789) that joins the group,
    so every datagram leaves from port 4789; broadcasts, multicasts and
    frames to unknown MACs go to GROUP:4789 with TTL (IPv6: hop limit) 1,
    its default; our unicast to its address at port 4789 reaches it.  It
    never sends to a learned peer: its C{recvmsg} is given C{msg_namelen=0}
    (strace: C{msg_namelen=0 => 16}), so every peer is learned with an
    empty address, and each later frame to a learned MAC is a C{sendmsg}
    with C{msg_namelen=0} that fails with EDESTADDRREQ; the frame is
    dropped without a message and nothing reaches the wire (vxvde-vxlan.md
    section 4.4).  So only flooded traffic (broadcast, unknown MACs) gets
    from a C plug to us, or to another C plug (ours receiving unicast from a
    learned peer is checked against our own plug and the kernel VXLAN).
    """

    VNL = "vxlan://{group}/v={vni}"

    def exchange(self, group: str, subnet: int, v6: bool) -> None:
        """
        Broadcasts both ways, then ours unicasts to the C plug's learned
        MAC and the C plug floods frames to an unknown MAC (all sizes,
        jumbo frames too).  The capture on our side shows what each sent:
        ours to the group with the C{ttl} given, to the C plug's address at
        port 4789 (TTL 64, the system's: C{ttl} is a multicast TTL, as in
        C); the C plug to the group with TTL 1; both from port 4789.
        """
        a, b = self.net.pair(subnet)
        capture = self.capture(a, "eth0")
        vnl = self.VNL.format(group=group, vni=subnet)
        members = {1: ourPlug(self, "ours", vnl + "/ttl=2", namespace=a),
                   2: cPlug(self, "C", vnl, namespace=b)}
        handshake(members)

        fromUs = [dataFrame(n, 200, src=1) for n in range(10)]
        fromC = [dataFrame(20 + n, 200, src=2) for n in range(10)]
        toC = [dataFrame(100 + n, size, src=1, dst=mac(2)) for n, size in enumerate(sizes(40))]
        unknown = [dataFrame(200 + n, size, src=2, dst=mac(9)) for n, size in enumerate(sizes(20))]
        sendInStep(members[1], members[2], fromUs)
        sendInStep(members[2], members[1], fromC)
        sendInStep(members[1], members[2], toC)
        # Frames from the C plug to our (learned) MAC would be lost here:
        # see the class docstring.  To an unknown MAC it floods.
        sendInStep(members[2], members[1], unknown)
        time.sleep(0.2)
        self.assertEqual(members[2].data(), fromUs + toC)
        self.assertEqual(members[1].data(), fromC + unknown)

        if v6:
            ours, theirs = f"fd78::{subnet}:1", f"fd78::{subnet}:2"
        else:
            ours, theirs = f"10.78.{subnet}.1", f"10.78.{subnet}.2"
        header = packHeader(subnet)
        seen = {}
        for datagram in udpSeen(capture):
            inner = datagram.frame
            if inner[12:14] != DATA_TYPE:
                continue
            self.assertEqual(
                (datagram.sport, datagram.dport, datagram.payload[:8]), (4789, 4789, header)
            )
            seen[inner[:18]] = (datagram.source, datagram.target, datagram.ttl)
        for f in fromUs:
            self.assertEqual(seen.get(f[:18]), (ours, group, 2))
        for f in toC:
            self.assertEqual(seen.get(f[:18]), (ours, theirs, 64))
        for f in fromC + unknown:
            self.assertEqual(seen.get(f[:18]), (theirs, group, 1))

    def test_ipv4(self) -> None:
        self.exchange("239.78.8.1", 8, v6=False)

    def test_ipv6(self) -> None:
        """
        IPv6: the C plug takes an IPv6 group as it is (its C{v6} option
        only changes the default group).
        """
        self.exchange("ff15::78:9", 9, v6=True)

    def test_vniSeparation(self) -> None:
        """
        Same group and port, other VNIs (ours 11, the C plug 12): neither
        delivers the other's frames, though they arrive; ours reports them
        as "wrong VNI" and learns nothing from them, so its frame to the C
        plug's MAC still goes to the group.
        """
        a, b = self.net.pair(11)
        theirSide = self.capture(b, "eth0")
        group = "239.78.11.1"
        ours = ourPlug(self, "ours", self.VNL.format(group=group, vni=11), namespace=a)
        c = cPlug(self, "C", self.VNL.format(group=group, vni=12), namespace=b)
        # Ours is up once it rejects the C plug's frames; the C plug joins
        # the group before it reads its stdin, so it is up too.
        sequence = iter(range(1000))

        def rejected() -> bool:
            c.send(dataFrame(next(sequence), 200, src=2))
            return "wrong VNI from 10.78.11.2:4789" in ours.stderrText()

        waitFor(rejected, "ours to reject the C plug's frames", procs=[ours, c],
                failIfEnded=True, interval=0.05)
        fromUs = [dataFrame(2000 + n, 200, src=1) for n in range(5)]
        toC = dataFrame(2010, 200, src=1, dst=mac(2))
        ours.send(*fromUs, toC)
        arrived: dict[bytes, Udp] = {}

        def ourFramesArrived() -> bool:
            arrived.update((d.frame, d) for d in udpSeen(theirSide))
            return all(f in arrived for f in fromUs + [toC])

        waitFor(ourFramesArrived, "our frames to reach the C side", procs=[ours, c],
                failIfEnded=True)
        self.assertEqual((arrived[toC].target, arrived[toC].payload[:8]), (group, packHeader(11)))
        time.sleep(0.2)
        self.assertEqual(c.data(), [])
        self.assertEqual(ours.data(), [])

    def test_threeMembers(self) -> None:
        """
        Ours and two C plugs on a bridge.  Broadcasts from each reach the
        other two; ours unicasts to each C plug's learned address (the
        capture on C2's port shows 10.78.12.2 as the destination of the
        frames to C2, the group as that of a frame to an unknown MAC) and
        the other C plug does not get those frames.  Unicast between the
        C plugs, and from them to us, is lost to the C bug (class
        docstring): not checked.
        """
        hub, spaces = self.net.star(3, 12)
        tap = self.capture(hub, "p2")
        vnl = self.VNL.format(group="239.78.12.1", vni=12)
        members = {
            1: ourPlug(self, "ours", vnl, namespace=spaces[1]),
            2: cPlug(self, "C2", vnl, namespace=spaces[2]),
            3: cPlug(self, "C3", vnl, namespace=spaces[3]),
        }
        handshake(members)
        toTwo = [dataFrame(n, 300, src=1, dst=mac(2)) for n in range(20)]
        toThree = [dataFrame(30 + n, 300, src=1, dst=mac(3)) for n in range(20)]
        unknown = [dataFrame(90, 300, src=1, dst=mac(42))]
        fromTwo = [dataFrame(60 + n, 300, src=2) for n in range(10)]
        sendPaced(members[1], toTwo + toThree + unknown)
        members[2].waitFor(lambda: len(members[2].data()) >= 21, "our frames")
        members[3].waitFor(lambda: len(members[3].data()) >= 21, "our frames")
        sendPaced(members[2], fromTwo)
        members[1].waitFor(lambda: len(members[1].data()) >= 10, "C2's broadcasts")
        members[3].waitFor(lambda: len(members[3].data()) >= 31, "C2's broadcasts")
        time.sleep(0.2)
        self.assertEqual(members[2].data(), toTwo + unknown)
        self.assertEqual(members[3].data(), toThree + unknown + fromTwo)
        self.assertEqual(members[1].data(), fromTwo)

        seen = {d.frame: d for d in udpSeen(tap) if d.source == "10.78.12.1"}
        for f in toTwo:
            self.assertEqual((seen[f].target, seen[f].dport), ("10.78.12.2", 4789))
        self.assertEqual(seen[unknown[0]].target, "239.78.12.1")


# ---------------------------------------------------------------------------
# vxlan:// and the Linux kernel


def tcpExchange(serverNs: str, serverIp: str, clientNs: str, size: int = 300_000) -> None:
    """
    A TCP connection from C{clientNs} to C{serverNs}: C{size} bytes one way,
    their digest back.
    """
    listener = nsSocket(serverNs, socket.AF_INET, socket.SOCK_STREAM)
    client = nsSocket(clientNs, socket.AF_INET, socket.SOCK_STREAM)
    payload = os.urandom(size)
    got: dict[str, Any] = {}
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((serverIp, 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    received = bytearray()
                    while len(received) < size:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                    conn.sendall(hashlib.sha256(received).digest())
            except Exception as e:
                got["error"] = e

        server = threading.Thread(target=serve)
        server.start()
        client.settimeout(TIMEOUT)
        client.connect(listener.getsockname())
        client.sendall(payload)
        digest = b""
        while len(digest) < 32:
            chunk = client.recv(64)
            if not chunk:
                break
            digest += chunk
        server.join(TIMEOUT)
        if "error" in got:
            raise got["error"]
        assert digest == hashlib.sha256(payload).digest(), "TCP data corrupted"
    finally:
        client.close()
        listener.close()


class KernelVxlanTests(NamespaceCase):
    """
    A Linux VXLAN device (dstport 4789) in one namespace, vdetwist's
    vxlan:// in another, cabled to a tap there.
    """

    def kernelInterop(self, v6: bool) -> None:
        """
        ARP, ping and TCP both ways, over an IPv4 or IPv6 underlay.  The
        capture shows our unicast to the kernel: to its IP at port 4789,
        although the kernel sends from random ports.  The C plugin loses
        exactly these frames (its unicast is broken, vxvde-vxlan.md section
        4.4): we match the wire format, not the bug.
        """
        net = self.net
        k, v = net.pair(4, ("k", "v"))
        disableTxChecksum(k, "eth0")
        group = "ff15::78:9" if v6 else "239.78.4.9"
        net.ip(k, "link", "add", "vx0", "type", "vxlan", "id", "78", "group", group,
               "dstport", "4789", "dev", "eth0", "ttl", "1")
        net.address(k, "vx0", "10.78.5.1/24")
        mtu = json.loads(net.run("ip", "-j", "-n", k, "link", "show", "vx0").stdout)[0]["mtu"]
        vnl = f"vxlan://{group}/v=78/if=eth0"
        if "tap" in registry.backends():
            plugs = [ourPlug(self, "ours", "tap://vxtap0", vnl, namespace=v)]
        else:
            path = os.path.join(tmpdir(self), "ptp")
            plugs = [cPlug(self, "C tap", "tap://vxtap0", "ptp://" + path, namespace=v)]
            deadline = time.monotonic() + TIMEOUT
            while not os.path.exists(path):
                self.assertLess(time.monotonic(), deadline, plugs[0].stderrText())
                time.sleep(0.02)
            plugs.append(ourPlug(self, "ours", "ptp://" + path, vnl, namespace=v))
        net.waitForLink(v, "vxtap0")
        net.ip(v, "link", "set", "vxtap0", "mtu", str(mtu))
        net.address(v, "vxtap0", "10.78.5.2/24")
        capture = self.capture(k, "eth0")

        # Our plug is a Python process starting up: retry until it answers.
        deadline = time.monotonic() + TIMEOUT
        while ping(k, "10.78.5.2", 1) < 1:
            for p in plugs:
                self.assertIsNone(p.proc.poll(), p.stderrText())
            self.assertLess(time.monotonic(), deadline, "no ping reply through vxlan://")
        self.assertEqual(ping(k, "10.78.5.2", 3), 3)
        self.assertEqual(ping(v, "10.78.5.1", 3), 3)
        tcpExchange(v, "10.78.5.2", k)
        tcpExchange(k, "10.78.5.1", v)

        kernel, plug = ("fd78::4:1", "fd78::4:2") if v6 else ("10.78.4.1", "10.78.4.2")
        unicast = fromKernel = 0
        for datagram in udpSeen(capture):
            if (datagram.source, datagram.target) == (plug, kernel):
                self.assertEqual((datagram.sport, datagram.dport), (4789, 4789))
                self.assertEqual(datagram.payload[:8], packHeader(78))
                unicast += 1
            elif datagram.source == kernel and datagram.dport == 4789:
                fromKernel += 1
        self.assertGreater(unicast, 10)
        self.assertGreater(fromKernel, 10)

    def test_ipv4(self) -> None:
        self.kernelInterop(v6=False)

    def test_ipv6(self) -> None:
        self.kernelInterop(v6=True)
