"""
Interoperability of vdetwist's C{vde_plug} with the C C{vde_plug} (vdeplug4
4.0.1) and C{dpipe}: real processes, real sockets and pipes.

Every test drives the stdio of two C{vde_plug} processes in the VDE stream
encoding, one at each end of the arrangement under test, and checks that the
frames written into one end come out of the other, both ways, byte for byte,
none lost, none duplicated, in order.  Frames are sent at a modest paced rate
so that the unix datagram queue (C{net.unix.max_dgram_qlen} = 10) never has
to drop.

Each test starts its processes in a process group of their own, so cleanup can end
every process it started (a C{cmd://} child, C{dpipe}'s children) by process
group; socket files live in a directory from C{mktemp()} that is removed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import stat
import struct
import time
from typing import Callable, Optional, Sequence

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import (
    ROOT, TIMEOUT, StreamProcess, cTool, frame, ourEnv, ourTool, records, waitFor,
)

#: Ethertype of the probes that find out when an arrangement is up.
PROBE_TYPE = b"\x88\xb6"

#: Frames sent each way by L{exchange}.
COUNT = 200
#: Frames written per burst, and the pause between bursts (~800 frames/s).
BURST = 4
PACE = 0.005

#: The largest frame libvdeplug4 handles (VDE_ETHBUFSIZE).
JUMBO = 9234


def frameSizes(count: int = COUNT, jumbo: bool = True, seed: int = 7) -> list[int]:
    """
    Mixed sizes: the interesting edges first, then random sizes in 14..1514,
    and (with C{jumbo}) a few jumbo frames up to 9234 spread through.
    """
    edges = [14, 15, 16, 59, 60, 64, 65, 127, 128, 255, 256, 1000, 1499, 1500, 1513, 1514]
    jumbos = [1515, 2048, 4096, 8192, 9000, 9216, 9233, JUMBO] if jumbo else []
    rng = random.Random(seed)
    sizes = (edges + [rng.randint(14, 1514) for _ in range(count)])[:count]
    # Spread the jumbo frames through the second half.
    for i, size in enumerate(jumbos[: count // 4]):
        sizes[count // 2 + i * (count // 2) // len(jumbos)] = size
    return sizes


def dataFrames(side: int, count: int = COUNT, jumbo: bool = True) -> list[bytes]:
    """
    C{count} distinct frames; C{side} (0 or 1) and the index are in the
    source MAC too, so that even 14-byte frames differ.
    """
    return [
        frame(n, size, src=bytes([0x02, side]) + struct.pack(">I", n))
        for n, size in enumerate(frameSizes(count, jumbo))
    ]


def probe(side: int, n: int) -> bytes:
    return b"\xff" * 6 + bytes([0x02, side, 0, 0, 0, n & 0xFF]) + PROBE_TYPE + bytes(50)


def childrenOf(pid: int) -> list[int]:
    """
    Pids of C{pid}'s direct children.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def ourPlug() -> list[str]:
    return ourTool("vde_plug")


def cPlug() -> list[str]:
    return [cTool("vde_plug")]


def cDpipe() -> list[str]:
    return [cTool("dpipe")]


def ourDpipe() -> list[str]:
    """
    vdetwist's dpipe; skips while it is not written yet.
    """
    if not os.path.exists(os.path.join(ROOT, "vdetwist", "scripts", "dpipe.py")):
        raise SkipTest("vdetwist/scripts/dpipe.py does not exist yet")
    return ourTool("dpipe")


def freePort(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def requireIPv6() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        raise SkipTest(f"no IPv6 loopback: {e}")


def isSocket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def handshake(a: StreamProcess, b: StreamProcess) -> None:
    """
    Send probes both ways until each end has seen one from the other: the
    whole arrangement is up.  Probes still in flight are harmless: they are
    not data frames.
    """
    n = 0
    deadline = time.monotonic() + TIMEOUT
    seenA = seenB = False
    while not (seenA and seenB):
        if time.monotonic() > deadline:
            waitFor(lambda: False, f"probes between {a.name} and {b.name}",
                    timeout=0, procs=(a, b))
        if not seenB:
            a.send(probe(0, n))
        if not seenA:
            b.send(probe(1, n))
        n += 1
        time.sleep(0.05)
        seenB = any(f[12:14] == PROBE_TYPE and f[7] == 0 for f in list(b.frames))
        seenA = any(f[12:14] == PROBE_TYPE and f[7] == 1 for f in list(a.frames))
    time.sleep(0.05)


def assertFrames(test: TestCase, received: list[bytes], sent: list[bytes], where: str) -> None:
    """
    C{received} is exactly C{sent}: same frames, same bytes, same order.
    """
    if received == sent:
        return
    sentIndex = {f: i for i, f in enumerate(sent)}
    missing = [i for i, f in enumerate(sent) if f not in set(received)]
    alien = [len(f) for f in received if f not in sentIndex]
    test.fail(
        f"{where}: received {len(received)} of {len(sent)} frames; "
        f"missing indices {missing[:20]}, {len(alien)} unknown frames "
        f"(sizes {alien[:10]}), order {'differs' if not missing and not alien else '?'}"
    )


def exchange(test: TestCase, a: StreamProcess, b: StreamProcess, count: int = COUNT,
             jumbo: bool = True, procs: Sequence[StreamProcess] = ()) -> None:
    """
    Once C{a} and C{b} can hear each other, send C{count} frames each way,
    paced, and check both ends got exactly what the other sent.
    """
    procs = (a, b) + tuple(procs)
    handshake(a, b)
    forward, backward = dataFrames(0, count, jumbo), dataFrames(1, count, jumbo)
    for i in range(0, count, BURST):
        a.send(*forward[i : i + BURST])
        b.send(*backward[i : i + BURST])
        time.sleep(PACE)
    waitFor(lambda: len(b.data()) >= count and len(a.data()) >= count,
            f"{count} frames each way between {a.name} and {b.name} "
            f"(got {len(b.data())} and {len(a.data())})", procs=procs)
    time.sleep(0.1)  # let duplicates, if any, show up
    assertFrames(test, b.data(), forward, f"{a.name} -> {b.name}")
    assertFrames(test, a.data(), backward, f"{b.name} -> {a.name}")
    for p in procs:
        test.assertNotIn("Traceback", p.stderrText(), p.name)
    for p in (a, b):
        test.assertEqual(p.lengthErrors, [], f"{p.name} wrote a bad stream")


class InteropTestCase(TestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name: str) -> str:
        # Relative to trial's working directory, which every child inherits:
        # short enough for sun_path whatever the checkout's location.
        return os.path.join(self.dir, name)

    def start(self, name: str, argv: list[str], env: Optional[dict] = None,
              pass_fds: Sequence[int] = ()) -> StreamProcess:
        return StreamProcess(self, name, argv, env=ourEnv() if env is None else env,
                             pass_fds=pass_fds)

    def waitForSocket(self, path: str, *procs: StreamProcess) -> None:
        waitFor(lambda: isSocket(path), f"socket {path}", procs=procs)

    def assertClean(self, proc: StreamProcess, status: int = 0) -> str:
        """
        C{proc} exits (after whatever ended it) with C{status}, no traceback.
        """
        stderr = proc.finish()
        self.assertEqual(proc.proc.returncode, status, f"{proc.name}: {stderr}")
        self.assertNotIn("Traceback", stderr)
        return stderr


class PtpTests(InteropTestCase):
    """
    C{ptp://} (vdeplug4 4.0.1's AF_UNIX datagram pair): ours at one end, C at
    the other, in both orders, and the life cycle of the socket files.
    """

    def pair(self, firstArgv: list[str],
             secondArgv: list[str]) -> tuple[StreamProcess, StreamProcess, str]:
        vnl = "ptp://" + self.path("cable")
        first = self.start("first", firstArgv + [vnl])
        self.waitForSocket(self.path("cable"), first)
        second = self.start("second", secondArgv + [vnl])
        self.waitForSocket(self.path("cable+"), first, second)
        return first, second, vnl

    def endBoth(self, first: StreamProcess, second: StreamProcess) -> None:
        """
        stdin EOF ends both with status 0 and each removes its socket file.
        """
        first.closeStdin()
        self.assertClean(first)
        self.assertFalse(os.path.lexists(self.path("cable")), "PATH left behind")
        second.closeStdin()
        self.assertClean(second)
        self.assertFalse(os.path.lexists(self.path("cable+")), "PATH+ left behind")

    def assertModes(self, *procs: StreamProcess) -> None:
        """
        Both socket files get mode 0700 (chmod follows bind, in C as here).
        """
        for path in ("cable", "cable+"):
            path = self.path(path)
            waitFor(lambda: stat.S_IMODE(os.lstat(path).st_mode) == 0o700,
                    f"mode 0700 on {path}", procs=procs)

    def test_oursFirst(self) -> None:
        first, second, _ = self.pair(ourPlug(), cPlug())
        self.assertModes(first, second)
        exchange(self, first, second)
        self.endBoth(first, second)

    def test_cFirst(self) -> None:
        first, second, _ = self.pair(cPlug(), ourPlug())
        self.assertModes(first, second)
        exchange(self, first, second)
        self.endBoth(first, second)

    def burst(self, ours: StreamProcess, c: StreamProcess) -> None:
        handshake(ours, c)
        frames = [frame(n, 60 + n % 200, src=b"\x02\x00\x00\x00" + struct.pack(">H", n))
                  for n in range(3000)]
        ours.write(records(frames))
        waitFor(lambda: len(c.data()) >= len(frames),
                f"{len(frames)} frames (got {len(c.data())})", procs=(ours, c))
        time.sleep(0.05)
        assertFrames(self, c.data(), frames, "burst ours -> C")

    def test_burstFromFirst(self) -> None:
        """
        3000 frames written at once, unpaced, into ours: the unix datagram
        queue (10 deep) fills, and ours must hold back (pausing its stdin,
        even within one large read) instead of dropping.  (The opposite
        direction is not tested: the C plug blocks on the full queue, its
        stdin pipe fills, and its stream receiver then loses frames whose
        2-byte header is split across reads -- C behaviour, C to C too.)
        """
        ours, c, _ = self.pair(ourPlug(), cPlug())
        self.burst(ours, c)

    def test_burstFromSecond(self) -> None:
        c, ours, _ = self.pair(cPlug(), ourPlug())
        self.burst(ours, c)

    def test_stalePathReplaced(self) -> None:
        """
        A socket file left by a killed C plug is taken over by ours, and the
        C plug then pairs with ours.
        """
        vnl = "ptp://" + self.path("cable")
        dead = self.start("C killed", cPlug() + [vnl])
        self.waitForSocket(self.path("cable"), dead)
        dead.signal(signal.SIGKILL)
        dead.wait()
        self.assertTrue(isSocket(self.path("cable")))
        ours = self.start("ours", ourPlug() + [vnl])
        waitFor(lambda: self.ownerIs(self.path("cable"), ours.pid), "ours to own PATH", procs=(ours,))
        c = self.start("C", cPlug() + [vnl])
        self.waitForSocket(self.path("cable+"), ours, c)
        exchange(self, ours, c, count=50)
        self.endBoth(ours, c)

    def ownerIs(self, path: str, pid: int) -> bool:
        """
        Whether the unix socket bound at C{path} is one of C{pid}'s.
        """
        # /proc/net/unix lists the bound path; the process's fds name the
        # socket inodes it holds.
        inodes = set()
        with open("/proc/net/unix") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) >= 8 and os.path.abspath(fields[7]) == os.path.abspath(path):
                    inodes.add(fields[6])
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
        return False

    def test_thirdRefused(self) -> None:
        """
        With both ends taken, a third plug fails to open like the C one:
        C{vde_open <VNL>: Address already in use}, status 1.
        """
        first, second, vnl = self.pair(cPlug(), cPlug())
        for name, argv in (("ours", ourPlug()), ("C", cPlug())):
            third = self.start(name, argv + [vnl])
            stderr = self.assertClean(third, 1)
            self.assertEqual(stderr.splitlines()[0], f"vde_open {vnl}: Address already in use")


class UdpTests(InteropTestCase):
    """
    C{udp://SPORT->DST:DPORT}: ours and C on loopback, IPv4 and IPv6.
    """

    def udpPair(self, family: int, host: str, ourForm: Callable[[str, int, int], str]) -> None:
        p1, p2 = freePort(family, host), freePort(family, host)
        while p2 == p1:
            p2 = freePort(family, host)
        ours = self.start("ours", ourPlug() + [ourForm(host, p1, p2)])
        c = self.start("C", cPlug() + [f"udp://{host}:{p2}->{host}:{p1}"])
        exchange(self, ours, c)
        ours.closeStdin()
        c.closeStdin()
        self.assertClean(ours)
        self.assertClean(c)

    def test_ipv4(self) -> None:
        self.udpPair(socket.AF_INET, "127.0.0.1", lambda h, s, d: f"udp://{h}:{s}->{h}:{d}")

    def test_ipv4WildcardSource(self) -> None:
        """
        C{udp://SPORT->DST:DPORT}: no source address binds the wildcard.
        """
        self.udpPair(socket.AF_INET, "127.0.0.1", lambda h, s, d: f"udp://{s}->{h}:{d}")

    def test_ipv6(self) -> None:
        requireIPv6()
        self.udpPair(socket.AF_INET6, "::1", lambda h, s, d: f"udp://{h}:{s}->{h}:{d}")

    def test_ipv6Brackets(self) -> None:
        """
        Ours also accepts C{[::1]:PORT}; the wire is the same.
        """
        requireIPv6()
        self.udpPair(socket.AF_INET6, "::1", lambda h, s, d: f"udp://[{h}]:{s}->[{h}]:{d}")


class CmdTests(InteropTestCase):
    """
    C{cmd://}: each implementation running the other as its command, the
    stream crossing the command's stdin/stdout.
    """

    def test_oursRunsC(self) -> None:
        """
        test <-> ours C{cmd://"C vde_plug ptp://P"} <-> C C{vde_plug ptp://P} <-> test
        """
        vnl = "ptp://" + self.path("p")
        c = self.start("C end", cPlug() + [vnl])
        self.waitForSocket(self.path("p"), c)
        ours = self.start("ours cmd://", ourPlug() + [f"cmd://{cTool('vde_plug')} {vnl}"])
        self.waitForSocket(self.path("p+"), c, ours)
        exchange(self, ours, c)
        # stdin EOF: ours ends, closing the command's stdin, which ends it.
        ours.closeStdin()
        self.assertClean(ours)
        waitFor(lambda: not os.path.lexists(self.path("p+")), "the command to end", procs=(ours,))
        c.closeStdin()
        self.assertClean(c)

    def test_cRunsOurs(self) -> None:
        """
        test <-> C C{cmd://"ours vde_plug ptp://P"} <-> ours C{vde_plug ptp://P} <-> test
        """
        vnl = "ptp://" + self.path("p")
        ours = self.start("ours end", ourPlug() + [vnl])
        self.waitForSocket(self.path("p"), ours)
        command = " ".join(ourPlug() + [vnl])
        c = self.start("C cmd://", cPlug() + [f"cmd://{command}"])
        self.waitForSocket(self.path("p+"), ours, c)
        exchange(self, c, ours)
        c.closeStdin()
        self.assertClean(c)
        # The C plug waits for its command, which ends on stdin EOF and
        # removes its socket file.
        self.assertFalse(os.path.lexists(self.path("p+")))
        ours.closeStdin()
        self.assertClean(ours)

    def test_peerKilled(self) -> None:
        """
        The command is killed (-9): ours ends with status 0, no traceback.
        """
        vnl = "ptp://" + self.path("p")
        ours = self.start("ours cmd://", ourPlug() + [f"cmd://{cTool('vde_plug')} {vnl}"])
        self.waitForSocket(self.path("p"), ours)
        children = childrenOf(ours.pid)
        self.assertEqual(len(children), 1, children)
        os.kill(children[0], signal.SIGKILL)
        stderr = self.assertClean(ours)
        self.assertEqual(stderr.splitlines(), [
            f"vde_plug: cmd://{cTool('vde_plug')} {vnl}: the command was killed by signal 9"
            " (SIGKILL)"])

    def test_commandFails(self) -> None:
        """
        A command that exits with a failure status: ours ends with status 1
        and one line giving the command's status.  (The C plug does not
        notice: it runs on a dead link until stdin EOF, then exits 0.)
        """
        for vnl, status in (("cmd://false", 1), ('cmd://sh -c "exit 7"', 7)):
            ours = self.start("ours", ourPlug() + [vnl])
            stderr = self.assertClean(ours, 1)
            self.assertEqual(stderr.splitlines(),
                             [f"vde_plug: {vnl}: the command exited with status {status}"])

    def test_commandMissing(self) -> None:
        """
        A command that is not on PATH: ours fails to open, status 1, first
        line C{vde_open <VNL>: No such file or directory} as C prints for
        open failures.  (The C plug forks first, so its open succeeds and the
        link is just dead: it runs until stdin EOF and exits 0.)
        """
        vnl = "cmd://no-such-command-vdetwist arg"
        ours = self.start("ours", ourPlug() + [vnl])
        stderr = self.assertClean(ours, 1)
        self.assertEqual(stderr.splitlines()[0], f"vde_open {vnl}: No such file or directory")


class SeqpacketTests(InteropTestCase):
    """
    C{seqpacket://FD}: one end of a socketpair given to each process.
    """

    def pair(self, kind: int) -> tuple[StreamProcess, StreamProcess]:
        left, right = socket.socketpair(socket.AF_UNIX, kind)
        try:
            ours = self.start("ours", ourPlug() + [f"seqpacket://{left.fileno()}"],
                              pass_fds=[left.fileno()])
            # C strtol(…, 0): hex works too.
            c = self.start("C", cPlug() + [f"seqpacket://{right.fileno():#x}"],
                           pass_fds=[right.fileno()])
        finally:
            left.close()
            right.close()
        return ours, c

    def test_seqpacket(self) -> None:
        ours, c = self.pair(socket.SOCK_SEQPACKET)
        exchange(self, ours, c)
        # C ends: its end of the pair closes, ours sees the hangup and ends.
        c.closeStdin()
        self.assertClean(c)
        self.assertClean(ours)

    def test_cEndsOursHangsUp(self) -> None:
        """
        Ours ending closes its end; the C plug has no hangup detection, so
        it is ended by stdin EOF.
        """
        ours, c = self.pair(socket.SOCK_SEQPACKET)
        exchange(self, ours, c, count=40)
        ours.closeStdin()
        self.assertClean(ours)
        c.closeStdin()
        self.assertClean(c)

    def test_datagramPair(self) -> None:
        """
        A SOCK_DGRAM socketpair works the same (the C plug does not care).
        """
        ours, c = self.pair(socket.SOCK_DGRAM)
        exchange(self, ours, c, count=100)


class DpipeTests(InteropTestCase):
    """
    Chains through dpipe: frames injected at one end's stdio come out at the
    other end's, across two ptp cables and the dpipe'd stream:

        test <-> end A <-ptp A-> [dpipe X ptp://A = Y ptp://B] <-ptp B-> end B <-> test
    """

    def chain(self, dpipe: list[str], left: list[str], right: list[str],
              endA: list[str], endB: list[str]) -> None:
        a, b = "ptp://" + self.path("a"), "ptp://" + self.path("b")
        pa = self.start("end A", endA + [a])
        pb = self.start("end B", endB + [b])
        self.waitForSocket(self.path("a"), pa)
        self.waitForSocket(self.path("b"), pb)
        pipe = self.start("dpipe", dpipe + left + [a, "="] + right + [b])
        self.waitForSocket(self.path("a+"), pipe)
        self.waitForSocket(self.path("b+"), pipe)
        exchange(self, pa, pb, procs=(pipe,))
        # Ending dpipe (SIGTERM) ends the chain: both vde_plugs inside stop
        # and remove their socket files.
        pipe.signal(signal.SIGTERM)
        pipe.finish()
        waitFor(lambda: not os.path.lexists(self.path("a+")) and not os.path.lexists(self.path("b+")),
                "the plugs inside dpipe to remove their sockets", procs=(pipe,))
        self.assertNotIn("Traceback", pipe.stderrText())
        for end in (pa, pb):
            end.closeStdin()
            self.assertClean(end)

    def test_cDpipeOursLeft(self) -> None:
        self.chain(cDpipe(), ourPlug(), cPlug(), cPlug(), ourPlug())

    def test_cDpipeOursRight(self) -> None:
        self.chain(cDpipe(), cPlug(), ourPlug(), ourPlug(), cPlug())

    def test_cDpipeOursBoth(self) -> None:
        self.chain(cDpipe(), ourPlug(), ourPlug(), cPlug(), cPlug())

    def test_ourDpipeMixed(self) -> None:
        self.chain(ourDpipe(), ourPlug(), cPlug(), cPlug(), ourPlug())

    def test_ourDpipeC(self) -> None:
        self.chain(ourDpipe(), cPlug(), cPlug(), ourPlug(), cPlug())


class CommandModeTests(InteropTestCase):
    """
    C{vde_plug VNL = CMD}: the plug's network joined to a command's stream.
    """

    def test_oursRunsC(self) -> None:
        """
        test <-> C ptp://A <-> [ours ptp://A = C vde_plug ptp://B] <-> C ptp://B <-> test
        """
        a, b = "ptp://" + self.path("a"), "ptp://" + self.path("b")
        pa = self.start("C A", cPlug() + [a])
        pb = self.start("C B", cPlug() + [b])
        self.waitForSocket(self.path("a"), pa)
        self.waitForSocket(self.path("b"), pb)
        ours = self.start("ours = C", ourPlug() + [a, "=", cTool("vde_plug"), b])
        self.waitForSocket(self.path("a+"), ours)
        self.waitForSocket(self.path("b+"), ours)
        exchange(self, pa, pb, procs=(ours,))
        # SIGTERM: ours closes its plug and the command's stdin; both go.
        ours.signal(signal.SIGTERM)
        self.assertClean(ours)
        waitFor(lambda: not os.path.lexists(self.path("a+")) and not os.path.lexists(self.path("b+")),
                "ours and its command to remove their sockets", procs=(ours,))

    def test_cRunsOurs(self) -> None:
        """
        The C tool running ours: C{--} keeps C's getopt off C{python3 -m}.
        """
        a, b = "ptp://" + self.path("a"), "ptp://" + self.path("b")
        pa = self.start("ours A", ourPlug() + [a])
        pb = self.start("C B", cPlug() + [b])
        self.waitForSocket(self.path("a"), pa)
        self.waitForSocket(self.path("b"), pb)
        c = self.start("C = ours", cPlug() + [a, "--", "="] + ourPlug() + [b])
        self.waitForSocket(self.path("a+"), c)
        self.waitForSocket(self.path("b+"), c)
        exchange(self, pa, pb, procs=(c,))

    def test_defaultNetworkCommand(self) -> None:
        """
        C{vde_plug = CMD} joins the default network: with a HOME whose
        C{.vdeplug/default} names a ptp cable, that cable.
        """
        home = self.path("home")
        os.makedirs(os.path.join(home, ".vdeplug"))
        a, b = "ptp://" + self.path("a"), "ptp://" + self.path("b")
        with open(os.path.join(home, ".vdeplug", "default"), "w") as f:
            f.write(a + "\n")
        pa = self.start("C A", cPlug() + [a])
        pb = self.start("C B", cPlug() + [b])
        self.waitForSocket(self.path("a"), pa)
        self.waitForSocket(self.path("b"), pb)
        ours = self.start("ours = C", ourPlug() + ["=", cTool("vde_plug"), b],
                          env=ourEnv(HOME=os.path.abspath(home)))
        self.waitForSocket(self.path("a+"), ours)
        self.waitForSocket(self.path("b+"), ours)
        exchange(self, pa, pb, count=50, procs=(ours,))

    def checkModes(self, tool: list[str], separator: list[str], expected: tuple[int, int]) -> None:
        """
        The sockets made by C{TOOL ptp://A SEP = vde_plug -m 0750 ptp://B}
        get the C{expected} modes.
        """
        tag = ("c" if tool == cPlug() else "o") + ("s" if separator else "n")
        a, b = self.path(tag + "a"), self.path(tag + "b")
        proc = self.start(" ".join(tool), tool + [f"ptp://{a}"] + separator
                          + ["=", cTool("vde_plug"), "-m", "0750", f"ptp://{b}"])
        self.waitForSocket(a, proc)
        self.waitForSocket(b, proc)
        modes = lambda: (stat.S_IMODE(os.lstat(a).st_mode), stat.S_IMODE(os.lstat(b).st_mode))
        try:
            waitFor(lambda: modes() == expected, f"modes {expected}", timeout=3, procs=(proc,))
        except AssertionError:
            self.assertEqual(tuple(map(oct, modes())), tuple(map(oct, expected)), (tool, separator))
        proc.signal(signal.SIGTERM)
        self.assertClean(proc)

    def test_doubleDash(self) -> None:
        """
        As in C, options are permuted: without C{--} the command's C{-m 0750}
        is taken by the outer plug (for ptp://A); with C{--} it reaches the
        command (for ptp://B).
        """
        for tool in (cPlug(), ourPlug()):
            self.checkModes(tool, [], (0o750, 0o700))
            self.checkModes(tool, ["--"], (0o700, 0o750))

    def test_commandOptionRejected(self) -> None:
        """
        C{vde_plug null:// = echo -n hi}: C{-n} is an invalid vde_plug option
        for both, status 255, the same first line (glibc getopt's).
        """
        results = {}
        for name, tool in (("C", cPlug()), ("ours", ourPlug())):
            # Run C as "vde_plug" (argv[0] names it in getopt's messages).
            argv = ["vde_plug"] if name == "C" else tool
            proc = self.start(name, argv + ["null://", "=", "echo", "-n", "hi"],
                              env=ourEnv(PATH=os.path.dirname(cTool("vde_plug")) + ":" + os.environ["PATH"]))
            proc.closeStdin()
            stderr = self.assertClean(proc, 255)
            results[name] = stderr.splitlines()[0]
        self.assertEqual(results["ours"], results["C"])
        self.assertEqual(results["C"], "vde_plug: invalid option -- 'n'")

    def test_optionErrors(self) -> None:
        """
        Bad options: the same glibc getopt_long message and status as C.
        """
        for args in (["-x"], ["null://", "-p"], ["--foo"], ["--pidfile"],
                     ["--daemon=1"], ["--p", "x"], ["--mo", "0700", "null://"]):
            results = {}
            for name, tool in (("C", cPlug()), ("ours", ourPlug())):
                proc = self.start(name, tool + args)
                proc.closeStdin()
                stderr = self.assertClean(proc, 255)
                # C names itself by argv[0].
                results[name] = stderr.splitlines()[0].split(": ", 1)[1]
            self.assertEqual(results["ours"], results["C"], args)

    def test_commandEndsPlug(self) -> None:
        """
        When the command exits, ours ends with status 0 (the C plug keeps a
        dead link instead).
        """
        ours = self.start("ours", ourPlug() + ["null://", "=", "true"])
        self.assertEqual(self.assertClean(ours), "")

    def test_commandFails(self) -> None:
        """
        When the command exits with a failure status, ours ends with status
        1 and one line saying so.
        """
        ours = self.start("ours", ourPlug() + ["null://", "=", "false"])
        self.assertEqual(self.assertClean(ours, 1).splitlines(),
                         ["vde_plug: false: the command exited with status 1"])


class LifecycleTests(InteropTestCase):
    """
    Ending, pid files, signals: ours as the C tool.
    """

    def test_stdinEOF(self) -> None:
        """
        stdin EOF ends vde_plug with status 0, and it removes its ptp socket.
        """
        for name, tool in (("C", cPlug()), ("ours", ourPlug())):
            path = self.path("eof-" + name)
            proc = self.start(name, tool + ["ptp://" + path])
            self.waitForSocket(path, proc)
            proc.closeStdin()
            self.assertClean(proc)
            self.assertFalse(os.path.lexists(path), f"{name} left {path}")

    def test_pidfile(self) -> None:
        """
        C{-p FILE}: C{"<pid>\\n"} written at start, removed at exit, by stdin
        EOF and by SIGTERM.
        """
        for name, tool in (("C", cPlug()), ("ours", ourPlug())):
            for how in ("eof", "term"):
                pidfile = self.path(f"{name}-{how}.pid")
                path = self.path(f"{name}-{how}")
                proc = self.start(name, tool + ["-p", pidfile, "ptp://" + path])
                self.waitForSocket(path, proc)
                with open(pidfile) as f:
                    self.assertEqual(f.read(), f"{proc.pid}\n", name)
                if how == "eof":
                    proc.closeStdin()
                else:
                    # Not while the plug is still opening: the C vde_plug
                    # removes its socket only once vde_open has returned.
                    proc.waitInputRead()
                    proc.signal(signal.SIGTERM)
                self.assertClean(proc)
                self.assertFalse(os.path.exists(pidfile), f"{name} left its pid file ({how})")
                self.assertFalse(os.path.lexists(path), f"{name} left {path} ({how})")

    def test_longOptions(self) -> None:
        """
        C{--pidfile FILE --mod 0750}, as getopt_long spells them.
        """
        pidfile, path = self.path("long.pid"), self.path("long")
        proc = self.start("ours", ourPlug() + ["--pidfile", pidfile, "--mod", "0750", "ptp://" + path])
        self.waitForSocket(path, proc)
        waitFor(lambda: stat.S_IMODE(os.lstat(path).st_mode) == 0o750, "mode 0750", procs=(proc,))
        waitFor(lambda: os.path.exists(pidfile), "the pid file", procs=(proc,))
        proc.closeStdin()
        self.assertClean(proc)
        self.assertFalse(os.path.exists(pidfile))


class BadInputTests(InteropTestCase):
    """
    Malformed streams and VNLs.
    """

    def pairOursC(self) -> tuple[StreamProcess, StreamProcess]:
        vnl = "ptp://" + self.path("p")
        ours = self.start("ours", ourPlug() + [vnl])
        self.waitForSocket(self.path("p"), ours)
        c = self.start("C", cPlug() + [vnl])
        self.waitForSocket(self.path("p+"), ours, c)
        handshake(ours, c)
        return ours, c

    def test_oversizedLength(self) -> None:
        """
        A record header announcing more than 9236 bytes: ours warns on
        stderr, discards what it holds, and forwards the good frames written
        afterwards.
        """
        ours, c = self.pairOursC()
        good = dataFrames(0, 30)
        ours.send(*good[:10])
        waitFor(lambda: len(c.data()) >= 10, "frames before the junk", procs=(ours, c))
        ours.write(b"\xff\xff" + bytes(range(256)) * 4)
        waitFor(lambda: "length" in ours.stderrText(), "a warning", procs=(ours,))
        ours.send(*good[10:])
        waitFor(lambda: len(c.data()) >= 30, "frames after the junk", procs=(ours, c))
        time.sleep(0.1)
        assertFrames(self, c.data(), good, "ours -> C")
        warning = ours.stderrText()
        self.assertIn("65535", warning)
        self.assertIn("9236", warning)
        self.assertNotIn("Traceback", warning)
        self.assertTrue(ours.running())
        # The C plug does the same (silently, as stderr is not a tty).
        c.write(b"\xff\xff" + bytes(range(256)) * 4)
        time.sleep(0.3)
        back = dataFrames(1, 10)
        c.send(*back)
        waitFor(lambda: len(ours.data()) >= 10, "C's frames after the junk", procs=(ours, c))
        assertFrames(self, ours.data(), back, "C -> ours")

    def test_headerSplit(self) -> None:
        """
        Records dribbled a byte at a time, and a zero length record, reach
        the peer intact: ours buffers a split header (the C receiver loses
        such frames).
        """
        ours, c = self.pairOursC()
        good = dataFrames(0, 3)
        data = records(good[:2]) + b"\x00\x00" + records(good[2:])
        for i in range(len(data)):
            ours.write(data[i : i + 1])
            if i < 6 or i % 97 == 0:
                time.sleep(0.01)
        waitFor(lambda: len(c.data()) >= 3, "the dribbled frames", procs=(ours, c))
        assertFrames(self, c.data(), good, "ours -> C")

    def test_shortFrames(self) -> None:
        """
        Frames shorter than 14 bytes from the stream go to the network
        (neither plug checks that direction), and a receiving vde_plug does
        not write them to its stream: both drop them, later frames pass.
        """
        ours, c = self.pairOursC()
        short = [b"\x01" * n for n in (1, 6, 13)]
        good = dataFrames(0, 5)
        ours.send(*short, *good[:2])
        c.send(*short, *dataFrames(1, 2))
        ours.send(*good[2:])
        waitFor(lambda: len(c.data()) >= 5 and len(ours.data()) >= 2,
                "the good frames", procs=(ours, c))
        time.sleep(0.1)
        assertFrames(self, c.data(), good, "ours -> C")
        assertFrames(self, ours.data(), dataFrames(1, 2), "C -> ours")
        for p in (ours, c):
            self.assertFalse([f for f in p.frames if len(f) < 14], p.name)

    def test_badVNL(self) -> None:
        """
        VNLs the C tool rejects: ours exits 1 with the same first line,
        C{vde_open <VNL>: <strerror>}, then its own explanation, and no
        traceback.
        """
        vnls = [
            "foo://bar",                      # no such module
            "udp://1000->nohost",             # no port in DST
            "udp://->x:1",                    # cannot resolve
            "ptp://" + self.path("no/such/dir"),
            "seqpacket://-1",
        ]
        for vnl in vnls:
            lines = {}
            for name, tool in (("C", cPlug()), ("ours", ourPlug())):
                proc = self.start(name, tool + [vnl])
                proc.closeStdin()
                lines[name] = self.assertClean(proc, 1).splitlines()
            self.assertEqual(lines["ours"][0], lines["C"][0], vnl)
            self.assertTrue(lines["ours"][0].startswith(f"vde_open {vnl}: "))
            self.assertGreater(len(lines["ours"]), 1, f"{vnl}: no explanation")
            self.assertTrue(lines["ours"][1].startswith("vde_plug: "), lines["ours"])

    def test_usage(self) -> None:
        """
        Too many arguments, C{-h}: the usage on stderr, status 255, as C.
        """
        for args in (["a", "b", "c"], ["-h"], ["--port", "0", "null://"]):
            statuses = {}
            for name, tool in (("C", cPlug()), ("ours", ourPlug())):
                proc = self.start(name, tool + args)
                proc.closeStdin()
                stderr = proc.finish()
                self.assertIn("Usage:", stderr, (name, args))
                self.assertNotIn("Traceback", stderr)
                statuses[name] = proc.proc.returncode
            self.assertEqual(statuses["ours"], statuses["C"], args)
            self.assertEqual(statuses["ours"], 255, args)
