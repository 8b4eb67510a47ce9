"""
The slirp engine's guest-facing TCP, on synthetic frames with a task.Clock
and the in-memory host: opening (SYN-ACK only after the host connect),
refusal, options, window scaling, out-of-order and duplicate segments,
sequence wraparound, half-close and reset both ways, zero windows, a host
that never reads, retransmission with backoff, fast retransmit, loss,
forwards, and many short connections.
"""

from __future__ import annotations

import errno
import gc
import random
import struct
import weakref

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from vdetwist.slirp import packets as P
from vdetwist.slirp import tcp as T
from vdetwist.slirp.config import SlirpConfig, fromOptions
from vdetwist.slirp.hostapi import IPendingConnect
from vdetwist.slirp.testing import (
    DNS, GATEWAY, GUEST_IP, Guest, Harness, describe, ip4,
)
from vdetwist.slirp.timers import MIN_HEAP_SWEEP

SYN, ACK, FIN, RST, PSH = P.TCP_SYN, P.TCP_ACK, P.TCP_FIN, P.TCP_RST, P.TCP_PSH
M32 = 0xFFFFFFFF


def mssOption(mss: int) -> bytes:
    return struct.pack("!BBH", 2, 4, mss)


def wsOption(shift: int) -> bytes:
    return bytes((1, 3, 3, shift))


class Peer:
    """
    The guest end of one connection, driven by hand.
    """

    def __init__(self, h: Harness, g: Guest, dst: bytes = GATEWAY, dport: int = 80,
                 sport: int = 40000, iss: int = 1000, window: int = 65535) -> None:
        self.h, self.g = h, g
        self.dst, self.dport, self.sport = dst, dport, sport
        self.seq = iss
        self.iss = iss
        self.ack = 0
        self.window = window
        self.received = bytearray()

    def segment(self, flags: int, payload: bytes = b"", seq=None, ack=None, window=None,
                options: bytes = b"") -> None:
        self.h.send(self.g.tcp(self.dst, self.sport, self.dport,
                               self.seq if seq is None else seq,
                               self.ack if ack is None else ack, flags,
                               self.window if window is None else window, options, payload))

    def syn(self, options: bytes = mssOption(1460) + wsOption(7)) -> None:
        self.segment(SYN, seq=self.iss, ack=0, options=options)
        self.seq = (self.iss + 1) & M32

    def tcpFrames(self):
        return [f for f in self.h.take() if f.proto == "tcp"]

    def expectOne(self):
        frames = self.tcpFrames()
        assert len(frames) == 1, [describe(f) for f in frames]
        return frames[0]

    def open(self, options: bytes = mssOption(1460) + wsOption(7)):
        """
        Connect; returns (host stream, SYN-ACK frame).
        """
        self.syn(options)
        stream = self.h.host.streams[-1]
        stream.accept()
        synack = self.expectOne()
        assert synack.flags == SYN | ACK, describe(synack)
        self.ack = (synack.seq + 1) & M32
        self.segment(ACK)
        return stream, synack

    def send(self, data: bytes, flags: int = ACK | PSH) -> None:
        self.segment(flags, data)
        self.seq = (self.seq + len(data) + (1 if flags & FIN else 0)) & M32

    def absorb(self, frames) -> None:
        """
        Take in-order data from frames (no ACK sent).
        """
        for f in frames:
            if f.seq == self.ack and f.payload:
                self.received += f.payload
                self.ack = (self.ack + len(f.payload)) & M32
            if f.flags & FIN and (f.seq + len(f.payload)) & M32 == self.ack:
                self.ack = (self.ack + 1) & M32


class Base(TestCase):
    config = None

    def setUp(self):
        self.h = Harness(self.config or SlirpConfig(resolvConf="/none", ipv6=False))
        self.g = Guest()
        self.h.send(self.g.arpRequest(GATEWAY))
        self.h.take()
        self.p = Peer(self.h, self.g)

    def tearDown(self):
        self.assertEqual(self.h.engine.stats["errors"], 0)


class OpenTests(Base):
    def test_synAckOnlyAfterConnect(self):
        self.p.syn()
        self.assertEqual(self.p.tcpFrames(), [])
        (stream,) = self.h.host.streams
        self.assertEqual(stream.target, ("tcp", "127.0.0.1", 80))
        # the guest retransmits its SYN: still one host connection
        self.p.segment(SYN, seq=self.p.iss, ack=0, options=mssOption(1460))
        self.h.advance(3)
        self.assertEqual(len(self.h.host.streams), 1)
        self.assertEqual(self.p.tcpFrames(), [])
        stream.accept()
        synack = self.p.expectOne()
        self.assertEqual((synack.flags, synack.ack, synack.sport, synack.dport),
                         (SYN | ACK, self.p.iss + 1, 80, 40000))
        self.assertEqual(T.parseOptions(synack.options), (1460, T.RCV_SHIFT))
        self.assertLessEqual(synack.window, 65535)

    def test_refused(self):
        self.p.syn()
        self.h.host.streams[0].refuse(errno.ECONNREFUSED)
        f = self.p.expectOne()
        self.assertEqual((f.flags, f.ack), (RST | ACK, self.p.iss + 1))
        self.assertEqual(self.h.engine.tcp.conns, {})

    def test_unreachable(self):
        self.p.dst = ip4("192.0.2.1")
        self.p.syn()
        self.h.host.streams[0].refuse(errno.EHOSTUNREACH)
        f = self.h.takeOne()
        self.assertEqual((f.proto, f.icmptype, f.icmpcode), ("icmp", 3, 1))
        quoted = f.l4[8:]
        self.assertEqual(quoted[12:20], GUEST_IP + ip4("192.0.2.1"))
        self.assertEqual(self.h.engine.tcp.conns, {})

    def test_connectTimeout(self):
        """
        A host connect not done by the half-open deadline is cancelled and
        the guest told its destination is unreachable.
        """
        self.p.syn()
        stream = self.h.host.streams[0]
        verifyObject(IPendingConnect, stream)
        self.h.advance(19.5, step=0.5)
        self.assertEqual(self.p.tcpFrames(), [])
        self.assertFalse(stream.cancelled)
        self.h.advance(1)
        f = self.h.takeOne()
        self.assertEqual((f.proto, f.icmptype), ("icmp", 3))
        self.assertEqual(self.h.engine.tcp.conns, {})
        self.assertTrue(stream.cancelled)
        # a late success is turned away
        stream.accept()
        self.assertTrue(stream.aborted)

    def test_guestResetWhileConnecting(self):
        self.p.syn()
        self.p.segment(RST, ack=0)
        stream = self.h.host.streams[0]
        stream.accept()
        self.assertTrue(stream.aborted)
        self.assertEqual(self.p.tcpFrames(), [])

    def test_synAckLost(self):
        self.p.syn()
        self.h.host.streams[0].accept()
        first = self.p.expectOne()
        self.h.advance(1.1)
        again = self.p.expectOne()
        self.assertEqual((again.flags, again.seq), (SYN | ACK, first.seq))
        # the guest's retransmitted SYN also gets it
        self.p.segment(SYN, seq=self.p.iss, ack=0)
        self.assertEqual(self.p.expectOne().flags, SYN | ACK)

    def test_synAckGivesUp(self):
        """
        The SYN-ACK is retransmitted with backoff until the half-open
        deadline (20 s from the guest's SYN: at 0, 1, 3, 7 and 15 s), then
        the guest gets a reset and the host connection is aborted.
        """
        self.p.syn()
        stream = self.h.host.streams[0]
        stream.accept()
        self.h.advance(19.9, step=0.1)
        frames = self.p.tcpFrames()
        self.assertEqual(sum(1 for f in frames if f.flags == SYN | ACK), 5)
        self.assertFalse(stream.aborted)
        self.h.advance(0.2)
        self.assertEqual([f.flags for f in self.p.tcpFrames()], [RST | ACK])
        self.assertTrue(stream.aborted)
        self.assertEqual(self.h.engine.tcp.conns, {})
        self.assertEqual(self.h.engine.tcp.halfOpen, {})

    def test_synAckRetriesBounded(self):
        """
        With a long half-open timeout, the SYN-ACK retries end the
        connection instead.
        """
        h = Harness(SlirpConfig(resolvConf="/none", ipv6=False, tcpHalfOpenTimeout=3600))
        h.send(self.g.arpRequest(GATEWAY))
        p = Peer(h, self.g)
        p.syn()
        stream = h.host.streams[0]
        stream.accept()
        h.advance(300, step=1)
        frames = p.tcpFrames()
        self.assertEqual(sum(1 for f in frames if f.flags == SYN | ACK), T.MAX_SYN_RETRIES + 1)
        self.assertTrue(stream.aborted)
        self.assertEqual(h.engine.tcp.conns, {})

    def test_strayAckGetsReset(self):
        self.p.segment(ACK, seq=5, ack=99)
        f = self.p.expectOne()
        self.assertEqual((f.flags, f.seq), (RST, 99))

    def test_strayResetIgnored(self):
        self.p.segment(RST, seq=5, ack=99)
        self.assertEqual(self.h.frames, [])

    def test_refusedDestinations(self):
        config = SlirpConfig(resolvConf="/none", ipv6=False, disableHostLoopback=True)
        h = Harness(config)
        p = Peer(h, self.g)
        p.syn()
        self.assertEqual(h.host.streams, [])
        self.assertEqual(p.expectOne().flags, RST | ACK)
        for dst in (ip4("10.0.2.77"), DNS):
            p = Peer(h, self.g, dst=dst)
            p.syn()
            self.assertEqual(p.expectOne().flags, RST | ACK)

    def test_restricted(self):
        h = Harness(SlirpConfig(resolvConf="/none", ipv6=False, restricted=True))
        p = Peer(h, self.g, dst=ip4("192.0.2.1"))
        p.syn()
        self.assertEqual(h.host.streams, [])
        self.assertEqual(p.expectOne().flags, RST | ACK)

    def test_dnsOverTcp(self):
        import os
        import tempfile

        fd, path = tempfile.mkstemp()
        os.write(fd, b"nameserver 127.0.0.53\n")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        h = Harness(SlirpConfig(resolvConf=path, ipv6=False))
        p = Peer(h, self.g, dst=DNS, dport=53)
        stream, _ = p.open()
        self.assertEqual(stream.target, ("tcp", "127.0.0.53", 53))
        p.send(b"\x00\x05query")
        self.assertEqual(bytes(stream.written), b"\x00\x05query")
        p.tcpFrames()
        stream.send(b"\x00\x06answer")
        f = p.expectOne()
        self.assertEqual((f.ipsrc, f.sport, f.payload), (DNS, 53, b"\x00\x06answer"))

    def test_cmdAndUnixForwards(self):
        config = fromOptions({"cmdfwd": "5555:cat", "unixfwd": "10.0.2.9:77:/tmp/x.sock",
                              "v4": ""}, environ={})
        config.resolvConf = "/none"
        h = Harness(config)
        h.send(self.g.arpRequest(ip4("10.0.2.4")))
        self.assertEqual(h.takeOne().spa, ip4("10.0.2.4"))
        Peer(h, self.g, dst=ip4("10.0.2.4"), dport=5555).syn()
        Peer(h, self.g, dst=ip4("10.0.2.9"), dport=77).syn()
        self.assertEqual([s.target for s in h.host.streams],
                         [("cmd", "cat"), ("unix", "/tmp/x.sock")])
        p = Peer(h, self.g, dst=ip4("10.0.2.4"), dport=5556)
        p.syn()
        self.assertEqual(p.expectOne().flags, RST | ACK)

    def test_malformedOptions(self):
        for options in (b"\x02\x00\x05\xb4", b"\x02\x05\x05\xb4", b"\x03\x04\x07\x00", b"\x01\x01\xff",
                        b"\x08\x20" + b"\0" * 6):
            h = Harness(SlirpConfig(resolvConf="/none", ipv6=False))
            p = Peer(h, self.g)
            stream, synack = p.open(options)
            self.assertEqual(T.parseOptions(synack.options)[1], None)
            conn = next(iter(h.engine.tcp.conns.values()))
            self.assertEqual(conn.mss, 536)
            self.assertFalse(conn.wsOk)

    def test_optionParser(self):
        self.assertEqual(T.parseOptions(b"\x01\x02\x04\x02\x00\x03\x03\x09"), (512, 9))
        self.assertEqual(T.parseOptions(b"\x03\x03\x20"), (None, 14))
        self.assertEqual(T.parseOptions(b"\x02\x04\x05\xb4\x00\x03\x03\x09"), (1460, None))
        self.assertEqual(T.parseOptions(b"\x04\x02\x02\x04\x01\x00"), (256, None))


class DataTests(Base):
    def test_guestToHost(self):
        stream, _ = self.p.open()
        self.p.send(b"hello ")
        self.p.send(b"world")
        self.assertEqual(bytes(stream.written), b"hello world")
        self.assertEqual(self.p.tcpFrames()[-1].ack, self.p.seq)

    def test_oneAckPerBatch(self):
        stream, _ = self.p.open()
        frames = []
        for i in range(10):
            frames.append(self.g.tcp(GATEWAY, 40000, 80, self.p.seq, self.p.ack, ACK,
                                     payload=b"x" * 100))
            self.p.seq += 100
        for frame in frames:
            self.h.engine.input(frame)
        self.h.engine.flush()
        acks = self.p.tcpFrames()
        self.assertEqual(len(acks), 1)
        self.assertEqual(acks[0].ack, self.p.seq)

    def test_hostToGuest(self):
        stream, _ = self.p.open()
        stream.send(b"x" * 5000)
        frames = self.p.tcpFrames()
        self.assertEqual([len(f.payload) for f in frames], [1460, 1460, 1460, 620])
        self.assertTrue(frames[-1].flags & PSH)
        self.p.absorb(frames)
        self.assertEqual(bytes(self.p.received), b"x" * 5000)

    def test_outOfOrderAndDuplicates(self):
        stream, _ = self.p.open()
        base = self.p.seq
        pieces = [bytes([65 + i]) * 300 for i in range(5)]
        order = [3, 1, 4, 1, 0, 2, 3, 0]
        for i in order:
            self.p.segment(ACK, pieces[i], seq=(base + 300 * i) & M32)
        self.assertEqual(bytes(stream.written), b"".join(pieces))
        frames = self.p.tcpFrames()
        self.assertEqual(frames[-1].ack, (base + 1500) & M32)
        # each out-of-order arrival got an immediate duplicate ACK
        self.assertEqual(frames[0].ack, base)

    def test_overlappingSegments(self):
        stream, _ = self.p.open()
        base = self.p.seq
        data = bytes(range(200))
        self.p.segment(ACK, data[50:150], seq=base + 50)
        self.p.segment(ACK, data[0:100], seq=base)
        self.p.segment(ACK, data[90:200], seq=base + 90)
        self.assertEqual(bytes(stream.written), data)

    def test_wraparoundGuestSequence(self):
        self.p = Peer(self.h, self.g, iss=M32 - 700)
        stream, _ = self.p.open()
        data = bytes(random.Random(1).getrandbits(8) for _ in range(3000))
        for i in range(0, 3000, 500):
            self.p.send(data[i:i + 500])
        self.assertEqual(bytes(stream.written), data)
        self.assertEqual(self.p.tcpFrames()[-1].ack, (M32 - 700 + 1 + 3000) & M32)

    def test_wraparoundOurSequence(self):
        self.h.engine.tcp._iss = (M32 - 3000 - T._ISS_STEP) & M32
        stream, synack = self.p.open()
        self.assertGreater(synack.seq, M32 - 4000)
        data = bytes(random.Random(2).getrandbits(8) for _ in range(20000))
        stream.send(data)
        for _ in range(20):
            frames = self.p.tcpFrames()
            self.p.absorb(frames)
            self.p.segment(ACK)
        self.assertEqual(bytes(self.p.received), data)
        self.assertEqual(self.h.engine.tcp.conns[(GUEST_IP, 40000, GATEWAY, 80)].sndBuf.length, 0)

    def test_windowScaleOnlyAfterSyn(self):
        stream, synack = self.p.open(mssOption(1460) + wsOption(2))
        # the guest's window in its SYN was 65535 unscaled; now it says 100
        # with shift 2: 400 bytes
        self.p.window = 100
        self.p.segment(ACK)
        stream.send(b"y" * 1000)
        frames = self.p.tcpFrames()
        self.assertEqual(sum(len(f.payload) for f in frames), 400)
        # our windows after the SYN are scaled
        self.p.send(b"z")
        ack = self.p.tcpFrames()[-1]
        self.assertEqual(ack.window, T.RCVBUF >> T.RCV_SHIFT)

    def test_noScaleWithoutGuestOption(self):
        stream, synack = self.p.open(mssOption(1460))
        self.assertEqual(T.parseOptions(synack.options), (1460, None))
        self.p.send(b"z")
        self.assertEqual(self.p.tcpFrames()[-1].window, 65535)

    def test_smallGuestMss(self):
        stream, _ = self.p.open(mssOption(100))
        stream.send(b"m" * 1000)
        frames = self.p.tcpFrames()
        self.assertTrue(all(len(f.payload) <= 100 for f in frames))
        self.assertEqual(sum(len(f.payload) for f in frames), 1000)

    def test_mssFromMtu(self):
        h = Harness(SlirpConfig(resolvConf="/none", ipv6=False, mtuOption=1000))
        p = Peer(h, self.g)
        stream, synack = p.open(mssOption(1460))
        self.assertEqual(T.parseOptions(synack.options)[0], 960)
        stream.send(b"q" * 3000)
        self.assertEqual(max(len(f.payload) for f in p.tcpFrames()), 960)

    def test_badChecksum(self):
        stream, _ = self.p.open()
        frame = bytearray(self.g.tcp(GATEWAY, 40000, 80, self.p.seq, self.p.ack, ACK,
                                     payload=b"data"))
        frame[-1] ^= 0x40
        self.h.send(bytes(frame))
        self.assertEqual(bytes(stream.written), b"")
        self.assertEqual(self.h.engine.stats["tcp_bad_checksum"], 1)

    def test_linkBackPressure(self):
        stream, _ = self.p.open()
        self.h.engine.pauseOutput()
        stream.send(b"w" * 10000)
        self.assertEqual(self.p.tcpFrames(), [])
        self.h.engine.resumeOutput()
        self.assertEqual(sum(len(f.payload) for f in self.p.tcpFrames()), 10000)


class CloseTests(Base):
    def test_guestClosesFirst(self):
        stream, _ = self.p.open()
        self.p.send(b"request", ACK | PSH | FIN)
        self.assertEqual(bytes(stream.written), b"request")
        self.assertTrue(stream.eof)
        self.assertFalse(stream.closed or stream.aborted)
        f = self.p.expectOne()
        self.assertEqual(f.ack, self.p.seq)
        # the host still answers on its half
        stream.send(b"response")
        frames = self.p.tcpFrames()
        self.p.absorb(frames)
        self.assertEqual(bytes(self.p.received), b"response")
        stream.sendEOF()
        fin = self.p.expectOne()
        self.assertTrue(fin.flags & FIN)
        self.p.absorb([fin])
        self.p.segment(ACK)
        stream.lose(True)
        self.h.advance(T.TIME_WAIT + 1)
        self.assertEqual(self.h.engine.tcp.conns, {})
        self.assertFalse(stream.aborted)

    def test_hostClosesFirst(self):
        stream, _ = self.p.open()
        stream.send(b"banner")
        stream.sendEOF()
        frames = self.p.tcpFrames()
        self.assertTrue(frames[-1].flags & FIN)
        self.p.absorb(frames)
        self.p.segment(ACK)
        # the guest still sends on its half
        self.p.send(b"more data")
        self.assertEqual(bytes(stream.written), b"more data")
        self.assertFalse(stream.eof)
        self.p.send(b"", ACK | FIN)
        self.assertTrue(stream.eof)
        self.p.tcpFrames()
        self.h.advance(T.TIME_WAIT + 1)
        self.assertEqual(self.h.engine.tcp.conns, {})
        # a retransmitted FIN in TIME-WAIT would be acknowledged; now gone:
        self.p.segment(ACK | FIN, seq=self.p.seq - 1)
        self.assertEqual(self.p.expectOne().flags, RST)

    def test_finRetransmittedInTimeWait(self):
        stream, _ = self.p.open()
        stream.sendEOF()
        self.p.absorb(self.p.tcpFrames())
        self.p.send(b"", ACK | FIN)
        self.p.tcpFrames()
        self.p.segment(ACK | FIN, seq=self.p.seq - 1)
        f = self.p.expectOne()
        self.assertEqual((f.flags, f.ack), (ACK, self.p.seq))

    def test_guestReset(self):
        stream, _ = self.p.open()
        self.p.segment(RST)
        self.assertTrue(stream.aborted)
        self.assertEqual(self.h.engine.tcp.conns, {})

    def test_guestResetOutOfWindowIgnored(self):
        stream, _ = self.p.open()
        self.p.segment(RST, seq=self.p.seq + 10_000_000)
        self.assertFalse(stream.aborted)

    def test_hostReset(self):
        stream, _ = self.p.open()
        stream.lose(clean=False)
        f = self.p.expectOne()
        self.assertEqual(f.flags, RST | ACK)
        self.assertEqual(self.h.engine.tcp.conns, {})

    def test_dataAfterHostGone(self):
        stream, _ = self.p.open()
        stream.lose(clean=True)  # e.g. a command that exited
        fin = self.p.expectOne()
        self.assertTrue(fin.flags & FIN)
        self.p.send(b"too late")
        self.assertEqual(self.p.expectOne().flags, RST | ACK)
        self.assertEqual(self.h.engine.tcp.conns, {})


class FlowControlTests(Base):
    def test_zeroWindowForAnHour(self):
        """
        The guest holds a zero window for an hour: host reading pauses once
        the send buffer is full, probes back off to once a minute, memory
        stays bounded; then everything arrives, byte-exact.
        """
        stream, _ = self.p.open()
        self.p.window = 0
        self.p.segment(ACK)
        rng = random.Random(5)
        sent = bytearray()
        conn = next(iter(self.h.engine.tcp.conns.values()))
        while not stream.readingPaused:
            chunk = bytes(rng.getrandbits(8) for _ in range(1000)) * 16
            sent += chunk
            stream.send(chunk)
        self.assertLessEqual(conn.sndBuf.length, T.SNDBUF + 16000)
        self.assertEqual(self.p.tcpFrames(), [])
        probes = []
        for _ in range(3600):
            self.h.clock.advance(1)
            for f in self.p.tcpFrames():
                probes.append(self.h.clock.seconds())
                self.assertLessEqual(len(f.payload), 1)
                self.p.segment(ACK)  # window still zero
        self.assertLessEqual(len(probes), 80)
        self.assertGreater(len(probes), 50)
        gaps = [b - a for a, b in zip(probes, probes[1:])]
        self.assertLessEqual(max(gaps), T.MAX_RTO + 1)
        self.assertIn(conn, self.h.engine.tcp.conns.values())
        # open the window and drain
        self.p.window = 65535
        self.p.segment(ACK)
        for _ in range(2000):
            frames = self.p.tcpFrames()
            if not frames and not conn.sndBuf.length and not stream.readingPaused:
                break
            self.p.absorb(frames)
            self.p.segment(ACK)
            if not frames:
                self.h.advance(1)
        self.assertEqual(bytes(self.p.received), bytes(sent))

    def test_hostNeverReads(self):
        stream, _ = self.p.open()
        stream.bufferLimit = 64 * 1024
        conn = next(iter(self.h.engine.tcp.conns.values()))
        total = 0
        window = None
        for _ in range(400):
            f = self.p.tcpFrames()
            if f:
                window = f[-1].window << T.RCV_SHIFT
                if window == 0:
                    break
            size = min(1460, window if window is not None else 1460)
            if size <= 0:
                break
            self.p.send(b"r" * size)
            total += size
        self.assertEqual(window, 0)
        self.assertLessEqual(conn.hostSide.queued, T.RCVBUF)
        self.assertEqual(len(stream.written) + conn.hostSide.queued, total)
        self.assertLess(len(stream.written), 70 * 1024)
        # more data beyond the window is not taken
        self.p.send(b"extra")
        self.assertEqual(len(stream.written) + conn.hostSide.queued, total)
        self.p.seq -= 5
        # the host reads: the window opens with an update
        stream.consume()
        update = self.p.tcpFrames()[-1]
        self.assertGreater(update.window, 0)

    def test_retransmissionBackoff(self):
        stream, _ = self.p.open()
        stream.send(b"lost")
        first = self.p.expectOne()
        times = []
        for _ in range(2000):
            self.h.clock.advance(0.5)
            for f in self.p.tcpFrames():
                if f.payload == b"lost":
                    times.append(self.h.clock.seconds())
                elif f.flags & RST:
                    times.append(("rst", self.h.clock.seconds()))
        gaps = [round(b - a, 1) for a, b in zip(times, times[1:]) if isinstance(b, float)]
        self.assertEqual(gaps[:5], [2.0, 4.0, 8.0, 16.0, 32.0])
        self.assertEqual(max(gaps), T.MAX_RTO)
        self.assertEqual(times[-1][0], "rst")
        self.assertTrue(stream.aborted)
        self.assertEqual(first.payload, b"lost")

    def test_rttEstimate(self):
        stream, _ = self.p.open()
        conn = next(iter(self.h.engine.tcp.conns.values()))
        for _ in range(20):
            stream.send(b"a" * 100)
            frames = self.p.tcpFrames()
            self.h.clock.advance(0.05)
            self.p.absorb(frames)
            self.p.segment(ACK)
        self.assertAlmostEqual(conn.rtx.srtt, 0.05, places=3)
        self.assertEqual(conn.rtx.rto, T.MIN_RTO)

    def test_fastRetransmit(self):
        stream, _ = self.p.open()
        stream.send(b"".join(bytes([i]) * 1460 for i in range(6)))
        frames = self.p.tcpFrames()
        self.assertEqual(len(frames), 6)
        # the first is lost: three duplicate ACKs
        for _ in range(3):
            self.p.segment(ACK)
        retransmitted = self.p.tcpFrames()
        self.assertEqual(retransmitted[0].seq, frames[0].seq)
        self.assertEqual(retransmitted[0].payload, frames[0].payload)
        self.assertEqual(self.h.engine.stats["tcp_fast_retransmits"], 1)
        self.assertEqual(self.h.engine.stats["tcp_timeouts"], 0)


class LossyGuest:
    """
    A minimal guest TCP for loss tests: go-back-N sender and in-order
    receiver, ACKing every segment, with its own retransmission timer.
    """

    def __init__(self, h: Harness, g: Guest, loss: float, seed: int) -> None:
        self.h, self.g = h, g
        self.rng = random.Random(seed)
        self.loss = loss
        self.peer = Peer(h, g)
        self.toSend = b""
        self.sent = 0  # bytes of toSend acknowledged
        self.next = 0  # next byte to send
        self.lastProgress = 0.0

    def deliver(self, frame: bytes) -> None:
        if self.rng.random() >= self.loss:
            self.h.engine.input(frame)

    def step(self) -> None:
        p = self.peer
        frames = [f for f in self.h.take() if f.proto == "tcp"]
        frames = [f for f in frames if self.rng.random() >= self.loss]
        before = p.ack
        for f in frames:
            if f.ack is not None and f.flags & ACK:
                acked = (f.ack - (p.iss + 1)) & M32
                if acked <= len(self.toSend) and acked > self.sent:
                    self.sent = acked
                    self.lastProgress = self.h.clock.seconds()
        p.absorb(frames)
        if frames or p.ack != before:
            self.deliver(self.g.tcp(GATEWAY, p.sport, p.dport, (p.iss + 1 + self.next) & M32,
                                    p.ack, ACK, 65535))
        now = self.h.clock.seconds()
        if self.sent < len(self.toSend) and now - self.lastProgress > 0.5:
            self.next = self.sent  # go back N
            self.lastProgress = now
        while self.next < len(self.toSend) and self.next - self.sent < 8 * 1460:
            chunk = self.toSend[self.next:self.next + 1460]
            self.deliver(self.g.tcp(GATEWAY, p.sport, p.dport,
                                    (p.iss + 1 + self.next) & M32, p.ack, ACK, 65535,
                                    payload=chunk))
            self.next += len(chunk)
        self.h.engine.flush()


class LossTests(Base):
    def test_onePercentLossBothWays(self):
        stream, _ = self.p.open()
        guest = LossyGuest(self.h, self.g, loss=0.01, seed=11)
        guest.peer = self.p
        rng = random.Random(9)
        down = bytes(rng.getrandbits(8) for _ in range(200_000))
        up = bytes(rng.getrandbits(8) for _ in range(200_000))
        guest.toSend = up
        for i in range(0, len(down), 16384):
            stream.send(down[i:i + 16384])
        for _ in range(20000):
            guest.step()
            if len(self.p.received) == len(down) and len(stream.written) == len(up) \
                    and guest.sent == len(up):
                break
            self.h.clock.advance(0.01)
        self.assertEqual(bytes(self.p.received), down)
        self.assertEqual(bytes(stream.written), up)
        self.assertGreater(self.h.engine.stats["tcp_fast_retransmits"]
                           + self.h.engine.stats["tcp_timeouts"], 0)


class ForwardTests(TestCase):
    def setUp(self):
        config = fromOptions({"tcpfwd": "8080:0.0.0.0:80,127.0.0.1:2222:10.0.2.16:22",
                              "v4": ""}, environ={})
        config.resolvConf = "/none"
        self.h = Harness(config)
        self.g = Guest()

    def test_forwardToUnresolvedGuest(self):
        listener = self.h.host.listeners[("tcp", "0.0.0.0", 8080)]
        stream, conn = listener.connectFrom(("192.0.2.50", 45678))
        self.assertIsNotNone(conn)
        self.assertTrue(stream.readingPaused)
        arp = self.h.takeOne()
        self.assertEqual((arp.proto, arp.op, arp.tpa), ("arp", 1, GUEST_IP))
        stream.send(b"early")  # the client speaks before the guest accepted
        self.h.send(self.g.arpReply(GATEWAY, arp.sha))
        syn = self.h.takeOne()
        self.assertEqual((syn.flags, syn.ipsrc, syn.sport, syn.ipdst, syn.dport),
                         (SYN, ip4("192.0.2.50"), 45678, GUEST_IP, 80))
        self.assertEqual(T.parseOptions(syn.options), (1460, T.RCV_SHIFT))
        self.h.send(self.g.tcp(ip4("192.0.2.50"), 80, 45678, 5000, syn.seq + 1, SYN | ACK,
                               options=mssOption(1460)))
        frames = self.h.take()
        self.assertFalse(stream.readingPaused)
        self.assertEqual(frames[0].flags & (SYN | ACK), ACK)
        self.assertEqual(b"".join(f.payload for f in frames), b"early")
        self.h.send(self.g.tcp(ip4("192.0.2.50"), 80, 45678, 5001, syn.seq + 6, ACK | PSH,
                               payload=b"hello client"))
        self.assertEqual(bytes(stream.written), b"hello client")

    def test_loopbackClientAppearsAsGateway(self):
        self.h.send(self.g.arpRequest(GATEWAY))
        self.h.take()
        listener = self.h.host.listeners[("tcp", "0.0.0.0", 8080)]
        listener.connectFrom(("127.0.0.1", 5555))
        syn = self.h.takeOne()
        self.assertEqual((syn.ipsrc, syn.sport), (GATEWAY, 5555))

    def test_guestRefuses(self):
        self.h.send(self.g.arpRequest(GATEWAY))
        self.h.take()
        listener = self.h.host.listeners[("tcp", "0.0.0.0", 8080)]
        stream, conn = listener.connectFrom(("192.0.2.50", 45678))
        syn = self.h.takeOne()
        self.h.send(self.g.tcp(ip4("192.0.2.50"), 80, 45678, 0, syn.seq + 1, RST | ACK))
        self.assertTrue(stream.aborted)
        self.assertEqual(self.h.engine.tcp.conns, {})

    def test_guestSilent(self):
        listener = self.h.host.listeners[("tcp", "127.0.0.1", 2222)]
        stream, conn = listener.connectFrom(("127.0.0.1", 5555))
        self.h.advance(300, step=1)
        self.assertTrue(stream.aborted)
        self.assertEqual(self.h.engine.tcp.conns, {})


class ManyConnectionsTests(Base):
    def test_tenThousandShortConnections(self):
        engine = self.h.engine
        for n in range(10000):
            p = Peer(self.h, self.g, sport=1024 + n % 60000, iss=n * 7919)
            stream, _ = p.open(mssOption(1460))
            p.send(b"GET", ACK | PSH | FIN)
            stream.send(b"OK")
            stream.sendEOF()
            p.absorb(p.tcpFrames())
            p.segment(ACK)
            stream.lose(True)
            if n % 500 == 0:
                self.h.clock.advance(T.TIME_WAIT + 0.1)
        self.h.advance(T.TIME_WAIT + 1)
        self.assertEqual(engine.tcp.conns, {})
        self.assertEqual(engine.tcp.pendingAcks, set())
        self.assertEqual(engine.tcp.blocked, set())
        engine.nextDeadline()
        self.assertLess(len(engine.timers), 10)
        self.assertEqual(engine.stats["tcp_established"], 10000)


class FreedWithoutCollectorTests(Base):
    """
    Nothing refers back to a closed connection: with the garbage collector
    off, 6,000 connections ended every way free by reference counting.
    """

    config = SlirpConfig(resolvConf="/none", ipv6=False, tcpPerGuest=4096)

    def setUp(self):
        super().setUp()
        gc.collect()
        #: Other tests' connections, still referred to by their test cases.
        self.existing = [o for o in gc.get_objects() if isinstance(o, T.TcpConn)]
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)

    def test_connectionsFree(self):
        h, engine = self.h, self.h.engine
        refs = []
        for n in range(6000):
            p = Peer(h, self.g, sport=1024 + n, iss=n * 7919)
            p.syn()
            stream = h.host.streams.pop()
            refs.append(weakref.ref(stream.handler))
            end = n % 6
            if end == 0:  # refused
                stream.refuse()
                h.take()
                continue
            if end == 1:  # the guest gives up while the host connects
                p.segment(RST, ack=0)
                continue
            stream.accept()
            p.ack = (p.expectOne().seq + 1) & M32
            p.send(b"GET", ACK | PSH)
            stream.send(b"OK")
            p.absorb(p.tcpFrames())
            if end == 2:  # both close
                p.send(b"", ACK | FIN)
                stream.sendEOF()
                p.absorb(p.tcpFrames())
                p.segment(ACK)
                stream.lose(True)
            elif end == 3:  # the guest resets
                p.segment(RST)
            elif end == 4:  # the host resets
                stream.lose(False)
            else:  # the engine shuts the rest down
                p.segment(ACK)
            h.take()
            if n % 500 == 0:
                h.advance(T.TIME_WAIT + 0.1)
        h.advance(T.TIME_WAIT + 1)
        self.assertEqual(len(engine.tcp.conns), 1000)
        engine.close()
        self.assertEqual(engine.tcp.conns, {})
        del p, stream  # the last one's (the test's own references)
        self.assertEqual([r for r in refs if r() is not None], [])
        known = {id(o) for o in self.existing}
        self.assertEqual([o for o in gc.get_objects()
                          if isinstance(o, T.TcpConn) and id(o) not in known], [])


class SynFloodTests(TestCase):
    """
    Connections not yet established have a budget (a new one evicts the
    oldest) and a deadline, and each guest address a share of the table,
    so a SYN flood from spoofed guest addresses leaves room for the other
    guests; the flood leaves nothing behind.
    """

    FLOOD = 10000

    def setUp(self):
        self.g = Guest(mac=bytes.fromhex("020000000014"), ip=ip4("10.0.2.20"))

    def harness(self, autoAccept: bool = False, **limits) -> Harness:
        h = Harness(SlirpConfig(resolvConf="/none", ipv6=False, **limits), autoAccept)
        h.send(self.g.arpRequest(GATEWAY))
        h.take()
        return h

    def flood(self, h: Harness, count: int) -> None:
        """
        C{count} SYNs from 150 spoofed guest addresses that never answer
        ARP, each from its own port.
        """
        for i in range(count):
            spoof = Guest(mac=bytes.fromhex("0200000100") + bytes((i % 150,)),
                          ip=ip4(f"10.0.2.{100 + i % 150}"))
            h.engine.input(spoof.tcp(GATEWAY, 1024 + i // 150, 80, i * 1000, 0, SYN))
        h.engine.flush()

    def assertGuestConnects(self, h: Harness, accept: bool = True) -> None:
        """
        A guest that did not flood opens a connection and exchanges data
        through it, with no time passing.
        """
        p = Peer(h, self.g, sport=50000)
        p.syn()
        stream = h.host.streams[-1]
        self.assertEqual(stream.handler.key[0], self.g.ip)
        if accept:
            stream.accept()
        (synack,) = [f for f in h.take() if f.proto == "tcp" and f.ipdst == self.g.ip]
        self.assertEqual(synack.flags, SYN | ACK)
        p.ack = (synack.seq + 1) & M32
        p.send(b"request")
        self.assertEqual(bytes(stream.written), b"request")
        stream.send(b"answer")
        p.absorb([f for f in h.take() if f.proto == "tcp" and f.ipdst == self.g.ip])
        self.assertEqual(bytes(p.received), b"answer")

    def test_floodWhileHostConnectsPend(self):
        """
        10,000 SYNs whose host connects never finish: only the newest 256
        stay, the others' connects are cancelled (their sockets closed)
        and their guests told nothing; then another guest connects at once,
        and after the deadline only its connection is left.
        """
        h = self.harness()
        engine = h.engine
        self.flood(h, self.FLOOD)
        self.assertEqual(len(engine.tcp.conns), 256)
        self.assertEqual(len(engine.tcp.halfOpen), 256)
        self.assertEqual(engine.stats["tcp_halfopen_evicted"], self.FLOOD - 256)
        self.assertEqual([s.cancelled for s in h.host.streams],
                         [True] * (self.FLOOD - 256) + [False] * 256)
        self.assertEqual([f for f in h.take() if f.proto == "tcp"], [])
        self.assertLessEqual(len(engine.timers), 2 * 256 + MIN_HEAP_SWEEP)
        self.assertGuestConnects(h)
        self.assertEqual(engine.stats["tcp_halfopen_evicted"], self.FLOOD - 255)
        h.advance(21, step=1)
        self.assertEqual([c.guest for c in engine.tcp.conns.values()], [self.g.ip])
        self.assertEqual(engine.tcp.halfOpen, {})
        self.assertEqual(engine.tcp.perGuest, {self.g.ip: 1})
        engine.nextDeadline()
        self.assertLess(len(engine.timers), 10)

    def test_floodWhileHostAccepts(self):
        """
        10,000 SYNs that the host accepts at once: the SYN-ACKs go to
        guests that never answer, the oldest half-open connections are
        evicted (their host side reset), and another guest connects.
        """
        h = self.harness(autoAccept=True)
        engine = h.engine
        self.flood(h, self.FLOOD)
        self.assertEqual(len(engine.tcp.halfOpen), 256)
        self.assertEqual(sum(s.aborted for s in h.host.streams), self.FLOOD - 256)
        self.assertGuestConnects(h, accept=False)
        h.advance(21, step=1)
        self.assertEqual([c.guest for c in engine.tcp.conns.values()], [self.g.ip])
        self.assertEqual(sum(not s.aborted for s in h.host.streams), 1)

    def test_smallBudget(self):
        """
        The budget is an option; with it full, a new SYN evicts the oldest
        half-open connection, whose guest's retransmitted SYN starts over.
        """
        h = self.harness(tcpHalfOpen=2)
        peers = [Peer(h, self.g, sport=40000 + i) for i in range(3)]
        for p in peers:
            p.syn()
        first = h.host.streams[0]
        self.assertTrue(first.cancelled)
        self.assertEqual(sorted(c.gport for c in h.engine.tcp.conns.values()), [40001, 40002])
        h.host.streams[1].accept()
        peers[1].ack = (peers[1].expectOne().seq + 1) & M32
        peers[1].segment(ACK)  # established: no longer half-open
        self.assertEqual(len(h.engine.tcp.halfOpen), 1)
        peers[0].syn()
        self.assertEqual(len(h.engine.tcp.conns), 3)
        self.assertFalse(h.host.streams[2].cancelled)

    def test_guestShare(self):
        """
        A guest address past its share of the table is refused with a
        reset; other guests are not, and a closed connection frees a place.
        """
        h = self.harness(tcpPerGuest=3)
        peers = [Peer(h, self.g, sport=40000 + i) for i in range(4)]
        for p in peers[:3]:
            p.open()
        peers[3].syn()
        f = peers[3].expectOne()
        self.assertEqual((f.flags, f.dport), (RST | ACK, 40003))
        self.assertEqual(h.engine.stats["tcp_refused_guest_share"], 1)
        other = Peer(h, Guest(), sport=40000)
        h.send(Guest().arpRequest(GATEWAY))
        h.take()
        other.open()
        self.assertEqual(h.engine.tcp.perGuest, {self.g.ip: 3, GUEST_IP: 1})
        peers[0].segment(RST)
        self.assertEqual(h.engine.tcp.perGuest, {self.g.ip: 2, GUEST_IP: 1})
        peers[3].open()
        self.assertEqual(h.engine.tcp.perGuest, {self.g.ip: 3, GUEST_IP: 1})

    def closeAll(self, h, peers):
        """
        Open and close each of C{peers} in turn (the host first): each ends
        in TIME-WAIT.
        """
        for p in peers:
            stream, _ = p.open()
            stream.sendEOF()
            p.absorb(p.tcpFrames())
            p.segment(ACK)
            p.send(b"", ACK | FIN)
            p.tcpFrames()

    def test_timeWaitOutsideShare(self):
        """
        Connections waiting out TIME-WAIT do not count in their guest's
        share: a guest opening and closing connections faster than
        TIME-WAIT ends (what a connection-rate benchmark or a busy build
        does) is never refused for them.
        """
        h = self.harness(tcpPerGuest=3)
        peers = [Peer(h, self.g, sport=40000 + i) for i in range(8)]
        self.closeAll(h, peers)
        self.assertEqual(len(h.engine.tcp.timeWait), 8)
        self.assertEqual(h.engine.tcp.perGuest, {})
        self.assertEqual(h.engine.stats["tcp_refused_guest_share"], 0)
        h.advance(T.TIME_WAIT + 1)
        self.assertEqual((h.engine.tcp.conns, h.engine.tcp.timeWait), ({}, {}))

    def test_tableFullOfTimeWait(self):
        """
        A table full of connections in TIME-WAIT makes room for a new one
        by forgetting the oldest of them.
        """
        h = self.harness(tcpMax=3)
        peers = [Peer(h, self.g, sport=40000 + i) for i in range(4)]
        self.closeAll(h, peers[:3])
        peers[3].open()
        self.assertEqual(h.engine.stats["tcp_timewait_evicted"], 1)
        self.assertEqual(sorted(c.gport for c in h.engine.tcp.conns.values()),
                         [40001, 40002, 40003])
        self.assertEqual(h.engine.tcp.perGuest, {self.g.ip: 1})

    def test_tableFull(self):
        """
        A table full of established connections refuses new ones; a
        half-open one in it makes room instead.
        """
        h = self.harness(tcpMax=3)
        peers = [Peer(h, self.g, sport=40000 + i) for i in range(5)]
        for p in peers[:2]:
            p.open()
        peers[2].syn()
        peers[3].syn()
        self.assertTrue(h.host.streams[2].cancelled)
        self.assertEqual(h.engine.stats["tcp_halfopen_evicted"], 1)
        h.host.streams[3].accept()
        peers[3].ack = (peers[3].expectOne().seq + 1) & M32
        peers[3].segment(ACK)
        peers[4].syn()
        self.assertEqual(peers[4].expectOne().flags, RST | ACK)
        self.assertEqual(h.engine.stats["tcp_refused_table_full"], 1)
        self.assertEqual(len(h.host.streams), 4)

    def test_forwardShare(self):
        """
        Forwarded connections wait in the half-open budget until the guest
        answers, and count in their guest's share.
        """
        config = fromOptions({"tcpfwd": "8080:10.0.2.20:80", "v4": "",
                              "tcp_per_guest": "2", "tcp_halfopen": "1"}, environ={})
        config.resolvConf = "/none"
        h = Harness(config)
        h.send(self.g.arpRequest(GATEWAY))
        h.take()
        listener = h.host.listeners[("tcp", "0.0.0.0", 8080)]
        first, conn = listener.connectFrom(("192.0.2.50", 1000))
        self.assertIsNotNone(conn)
        second, conn = listener.connectFrom(("192.0.2.50", 1001))
        self.assertIsNotNone(conn)
        self.assertTrue(first.aborted)
        self.assertEqual(h.engine.stats["tcp_halfopen_evicted"], 1)
        syn = [f for f in h.take() if f.proto == "tcp"][-1]
        self.assertEqual((syn.flags, syn.sport), (SYN, 1001))
        h.send(self.g.tcp(ip4("192.0.2.50"), 80, 1001, 5000, syn.seq + 1, SYN | ACK))
        self.assertEqual(h.take()[0].flags, ACK)
        self.assertEqual(h.engine.tcp.halfOpen, {})
        Peer(h, self.g, sport=40000).open()
        _, conn = listener.connectFrom(("192.0.2.50", 1002))
        self.assertIsNone(conn)
        self.assertEqual(h.engine.stats["tcp_refused_guest_share"], 1)
        self.assertFalse(second.aborted)


class IPv6TcpTests(TestCase):
    def test_connectToHostLoopback(self):
        h = Harness(SlirpConfig(resolvConf="/none"))
        g = Guest()
        host6 = bytes.fromhex("fd000000000000000000000000000002")
        body = b"\0\0\0\0" + host6 + bytes((1, 1)) + g.mac
        h.send(g.icmp6(P.solicitedNode(host6), 135, body))
        h.take()
        h.send(g.tcp6(host6, 40000, 22, 100, 0, SYN, options=mssOption(1440)))
        (stream,) = h.host.streams
        self.assertEqual(stream.target, ("tcp", "::1", 22))
        stream.accept()
        synack = h.takeOne()
        self.assertEqual((synack.flags, synack.ipsrc, synack.ack), (SYN | ACK, host6, 101))
        self.assertEqual(T.parseOptions(synack.options)[0], 1440)
        h.send(g.tcp6(host6, 40000, 22, 101, synack.seq + 1, ACK | PSH, payload=b"ssh"))
        self.assertEqual(bytes(stream.written), b"ssh")
