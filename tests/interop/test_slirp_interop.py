"""
Differential tests: the same guest frames go to the C plugin (C{vde_plug
slirp://} on its stdio stream) and to the Python engine; the answers must
match (byte for byte where libslirp's are deterministic, field by field
elsewhere).
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import time

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import cTool
from vdetwist.slirp import packets as P
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.dhcp import DISCOVER, NAK, REQUEST
from vdetwist.slirp.testing import (
    DNS, GATEWAY, GUEST_IP, Guest, Harness, decode, decodeDhcp, describe, ip4,
)

HOST6 = bytes.fromhex("fd000000000000000000000000000002")
DNS6 = bytes.fromhex("fd000000000000000000000000000003")
GUEST_LL = bytes.fromhex("fe800000000000000000000000000015")


class CSlirp:
    """
    The C plugin behind C{vde_plug slirp://...} on a pipe.
    """

    def __init__(self, vnl: str = "slirp://") -> None:
        path = cTool("vde_plug")
        plugin = [d for d in ("/usr/lib/x86_64-linux-gnu/vdeplug", "/usr/lib/vdeplug")
                  if os.path.exists(os.path.join(d, "libvdeplug_slirp.so"))]
        if not plugin:
            raise SkipTest("libvdeplug_slirp is not installed (apt-get install "
                           "libvdeplug-slirp)")
        self.proc = subprocess.Popen([path, vnl], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buffer = b""

    def send(self, frame: bytes) -> None:
        self.proc.stdin.write(struct.pack(">H", len(frame)) + frame)
        self.proc.stdin.flush()

    def receive(self, expect: int, timeout: float = 2.0) -> list[bytes]:
        """
        Frames until C{expect} arrived (or the time is up; then a short
        extra wait catches unexpected extra frames).
        """
        frames: list[bytes] = []
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while len(self.buffer) >= 2:
                n = struct.unpack(">H", self.buffer[:2])[0]
                if len(self.buffer) < 2 + n:
                    break
                frames.append(self.buffer[2:2 + n])
                self.buffer = self.buffer[2 + n:]
            remaining = deadline - time.monotonic()
            if len(frames) >= expect:
                remaining = min(remaining, 0.05)
            if remaining <= 0:
                return frames
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    return frames
                self.buffer += data
            elif len(frames) >= expect:
                return frames

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def withoutIdent(frame: bytes) -> bytes:
    """
    An IPv4 frame with the identification and header checksum zeroed (they
    depend on how many packets each implementation sent before).
    """
    if frame[12:14] != b"\x08\x00":
        return frame
    return frame[:18] + b"\0\0" + frame[20:24] + b"\0\0" + frame[26:]


class InteropTests(TestCase):
    timeout = 60

    def setUp(self):
        self.c = CSlirp()
        self.addCleanup(self.c.close)
        self.h = Harness(SlirpConfig(resolvConf="/nonexistent"))
        self.g = Guest()

    def both(self, frame: bytes, expect: int = 1):
        self.c.send(frame)
        self.h.send(frame)
        ours = list(self.h.frames)
        self.h.frames.clear()
        return self.c.receive(expect), ours

    def assertSame(self, frame: bytes, expect: int = 1, normalise=withoutIdent):
        theirs, ours = self.both(frame, expect)
        self.assertEqual(len(theirs), expect, [describe(decode(f)) for f in theirs])
        self.assertEqual([normalise(f) for f in ours], [normalise(f) for f in theirs])
        return ours

    def test_arp(self):
        self.assertSame(self.g.arpRequest(GATEWAY))
        self.assertSame(self.g.arpRequest(DNS))
        self.assertSame(self.g.arpRequest(ip4("10.0.2.77")), expect=0)

    def test_pingGateway(self):
        self.assertSame(self.g.arpRequest(GATEWAY))
        self.assertSame(self.g.ping(GATEWAY, ident=99, seq=3, data=b"0123456789"))
        self.assertSame(self.g.ping(DNS, ident=99, seq=4, data=b"x" * 100))

    def test_dhcp(self):
        guest = Guest(ip=P.IP4_ANY)
        self.assertSame(guest.dhcp(DISCOVER))
        (ack,) = self.assertSame(guest.dhcp(REQUEST, requested=GUEST_IP))
        self.assertEqual(decodeDhcp(decode(ack)).yiaddr, GUEST_IP)

    def test_dhcpSeventeenClients(self):
        def offered(frames):
            return [decodeDhcp(decode(f)).yiaddr for f in frames]

        for n in range(17):
            guest = Guest(mac=bytes([2, 0, 0, 0, 1, n]), ip=P.IP4_ANY)
            theirs, ours = self.both(guest.dhcp(DISCOVER), expect=1 if n < 16 else 0)
            self.assertEqual(offered(ours), offered(theirs), n)
        self.assertEqual(offered(ours), [])

    def test_dhcpNak(self):
        guest = Guest(ip=P.IP4_ANY)
        theirs, ours = self.both(guest.dhcp(REQUEST, requested=ip4("10.0.2.99")))
        self.assertEqual([decodeDhcp(decode(f)).type for f in theirs + ours], [NAK, NAK])

    def test_ipv6(self):
        self.assertSame(self.g.icmp6(P.IP6_ALL_ROUTERS, 133, b"\0\0\0\0\x01\x01" + self.g.mac,
                                     src=GUEST_LL))
        for target in (HOST6, DNS6):
            self.assertSame(self.g.icmp6(P.solicitedNode(target), 135,
                                         b"\0\0\0\0" + target + b"\x01\x01" + self.g.mac))
        # duplicate address detection for one of ours
        self.assertSame(self.g.icmp6(P.solicitedNode(HOST6), 135, b"\0\0\0\0" + HOST6,
                                     src=P.IP6_ANY))
        # and for the guest's own: nobody answers
        self.assertSame(self.g.icmp6(P.solicitedNode(self.g.ip6), 135,
                                     b"\0\0\0\0" + self.g.ip6, src=P.IP6_ANY), expect=0)
        self.assertSame(self.g.icmp6(HOST6, 128, b"\0\1\0\2abcd", hopLimit=64))

    def test_resetForClosedHostPort(self):
        """
        A connection to a port nobody listens on in the host's loopback:
        both answer with a reset (ours after the real connect fails; here
        the in-memory host refuses it).
        """
        import errno

        self.assertSame(self.g.arpRequest(GATEWAY))
        frame = self.g.tcp(GATEWAY, 40000, 1, 1000, 0, P.TCP_SYN)
        theirs, ours = self.both(frame)
        self.h.host.streams[0].refuse(errno.ECONNREFUSED)
        ours = self.h.take()
        (theirs,) = [decode(f) for f in theirs]
        self.assertEqual([(f.flags, f.seq, f.ack) for f in ours],
                         [(theirs.flags, theirs.seq, theirs.ack)])
