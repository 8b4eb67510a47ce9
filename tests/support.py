"""
What the tests share: finding the real C tools (skipping with a reason when
they are missing), running vdetwist's own scripts from this checkout, test
frames, waiting for conditions, and driving processes whose stdio carries
the VDE stream encoding (C{vde_plug}, C or ours; the C C{vde_switch}).
"""

from __future__ import annotations

import fcntl
import gc
import itertools
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IAddress
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from vdetwist.wire.stream import StreamDecoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Upper bound of any single wait; a passing run is far below.
TIMEOUT = 15.0
#: Ethertype of the test frames made by L{frame} (other frames, such as
#: probes, use other ethertypes).
DATA_TYPE = b"\x88\xb5"

#: Debian package that ships each C tool.
PACKAGES = {
    "vde_plug": "vdeplug",
    "dpipe": "vdeplug",
    "vde_switch": "vde2",
    "vdeterm": "vde2",
}


def isELF(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def cTool(name: str) -> str:
    """
    The path of the C tool C{name}, never vdetwist's script of the same
    name; skips the test when it is not installed.
    """
    for directory in ["/usr/bin", "/usr/local/bin", "/bin"] + os.environ.get(
        "PATH", ""
    ).split(os.pathsep):
        candidate = os.path.join(directory, name)
        if isELF(candidate):
            return candidate
    raise SkipTest(
        f"the C {name} is not installed: apt-get install {PACKAGES.get(name, name)}"
    )


def ourTool(name: str) -> list[str]:
    """
    The argv prefix that runs vdetwist's C{name} script from this checkout.
    """
    return [sys.executable, "-m", f"vdetwist.scripts.{name}"]


def ourEnv(**extra: str) -> dict[str, str]:
    """
    An environment in which this checkout's vdetwist is importable.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [ROOT, env.get("PYTHONPATH", "")] if p
    )
    env.update(extra)
    return env


def userName() -> str:
    """
    The name of the user the tests run as, as the switches and plugs show
    it (C{user=NAME}, C{Current User: NAME}).
    """
    return pwd.getpwuid(os.geteuid()).pw_name


def requireRoot(why: str = "network namespaces, taps") -> None:
    """
    Skip the test unless it runs as root, saying what root is needed for.
    """
    if os.geteuid() != 0:
        raise SkipTest(f"needs root ({why})")


def requireCommand(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SkipTest(f"{name} is not installed: apt-get install {package}")
    return found


_userSerial = itertools.count(1)


def _accounts(argv: list[str]) -> None:
    """
    Run C{useradd}/C{userdel}, retrying while another process holds the
    account files' lock.
    """
    for _ in range(100):
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode == 0 or "lock" not in result.stderr:
            break
        time.sleep(0.1)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.stderr.strip()}")


def makeUser(test) -> pwd.struct_passwd:
    """
    A real user with a group of its own (C{useradd}), deleted (C{userdel})
    at the end of C{test}: the owner of what the test must make foreign.
    Skips unless root.
    """
    requireRoot("to make a user")
    useradd = requireCommand("useradd", "passwd")
    userdel = requireCommand("userdel", "passwd")
    name = f"vt{os.getpid()}u{next(_userSerial)}"
    _accounts([useradd, "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
               name])
    test.addCleanup(_accounts, [userdel, name])
    return pwd.getpwnam(name)


def frame(n: int, size: int = 100, src: bytes = b"\x02\x00\x00\x00\x00\x01",
          dst: bytes = b"\xff" * 6) -> bytes:
    """
    A distinct Ethernet frame: C{n} is written into the payload so that
    loss, duplication and reordering can be told apart.
    """
    body = struct.pack(">I", n) * ((size - 14) // 4 + 1)
    return dst + src + DATA_TYPE + body[: size - 14]


def records(frames: Iterator[bytes]) -> bytes:
    """
    The frames in the VDE stream encoding.
    """
    return b"".join(struct.pack(">H", len(f)) + f for f in frames)


def tmpdir(test, prefix: str = "vt-") -> str:
    """
    A directory in /tmp, removed at the end of C{test}: unix socket paths
    are limited to 107 bytes, which trial's working directory may exceed.
    """
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    test.addCleanup(shutil.rmtree, path, True)
    return path


# ---------------------------------------------------------------------------
# A transport whose peer reads when the test says


class SlowPeerTransport(FileDescriptor):
    """
    Twisted's own buffered transport (L{FileDescriptor}: its write buffer,
    and the pausing and resuming of its producer as the buffer fills and is
    flushed) in memory, with a peer that takes only what L{flush} lets it.

    @ivar received: what the peer has taken so far.
    @ivar protocol: told of C{abortConnection}, if set.
    """

    def __init__(self) -> None:
        super().__init__(MemoryReactor())
        self.connected = True
        self.received = bytearray()
        self.protocol: Any = None
        self.aborted = False
        self._allowance = 0
        self.startReading()

    @property
    def pending(self) -> int:
        """
        Bytes written and not yet taken by the peer.
        """
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    @property
    def reading(self) -> bool:
        return self in self.reactor.readers

    def writeSomeData(self, data: bytes) -> int:
        taken = min(len(data), self._allowance)
        self._allowance -= taken
        self.received += data[:taken]
        return taken

    def flush(self, limit: Optional[int] = None) -> None:
        """
        The peer reads C{limit} bytes (everything pending by default), as
        the reactor would write them: the producer is resumed once the
        buffer is empty, and whatever it writes then is taken too, within
        C{limit}.
        """
        self._allowance = sys.maxsize if limit is None else limit
        while self.pending and self._allowance and not self.disconnected:
            self.doWrite()
        self._allowance = 0

    def abortConnection(self) -> None:
        self.aborted = True
        self.connectionLost(Failure(ConnectionAborted()))
        if self.protocol is not None:
            self.protocol.connectionLost(Failure(ConnectionAborted()))

    def getPeer(self) -> IAddress:
        return _MEMORY_ADDRESS

    def getHost(self) -> IAddress:
        return _MEMORY_ADDRESS


_MEMORY_ADDRESS = UNIXAddress(None)


# ---------------------------------------------------------------------------
# Waiting


def describeAll(procs: Sequence[Any]) -> str:
    """
    What C{procs} (anything with a C{describe()}) have to say, for a
    failure message.
    """
    return "".join(p.describe() for p in procs)


def _check(predicate: Callable[[], Any], what: str, timeout: float, deadline: float,
           procs: Sequence[Any], failIfEnded: bool) -> bool:
    """
    Whether C{predicate} holds; an L{AssertionError} when it is too late
    (or, with C{failIfEnded}, when one of C{procs} has ended) for it to.
    """
    if predicate():
        return True
    if failIfEnded:
        for p in procs:
            if not p.running():
                raise AssertionError(f"{p.name} ended while waiting for {what}"
                                     + describeAll(procs))
    if time.monotonic() > deadline:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                             + describeAll(procs))
    return False


def waitFor(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT,
            procs: Sequence[Any] = (), failIfEnded: bool = False,
            interval: float = 0.01) -> None:
    """
    Block, polling C{predicate} every C{interval} seconds, until it holds;
    fail naming C{what} after C{timeout} seconds.

    @param procs: their C{describe()} goes into the failure message (a
        L{StreamProcess}, or anything with C{name}, C{describe()} and
        C{running()}).
    @param failIfEnded: fail as soon as one of C{procs} is no longer
        running (the predicate is checked first).
    """
    deadline = time.monotonic() + timeout
    while not _check(predicate, what, timeout, deadline, procs, failIfEnded):
        time.sleep(interval)


async def until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT,
                procs: Sequence[Any] = (), failIfEnded: bool = False,
                interval: float = 0.01) -> None:
    """
    L{waitFor} for tests that run in the reactor: let it run between polls.
    """
    deadline = time.monotonic() + timeout
    while not _check(predicate, what, timeout, deadline, procs, failIfEnded):
        await deferLater(reactor, interval)


def settle(seconds: float) -> Deferred:
    """
    Let the reactor run for C{seconds}.
    """
    return deferLater(reactor, seconds)


class LogCapture:
    """
    The log events emitted while a test runs.
    """

    def __init__(self, test) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def text(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events)

    def withFormat(self, fragment: str) -> list[dict]:
        """
        The events whose format string contains C{fragment}.
        """
        return [e for e in self.events if fragment in (e.get("log_format") or "")]


# ---------------------------------------------------------------------------
# Processes


class StreamProcess:
    """
    A process whose stdin takes, and whose stdout gives, the VDE stream
    encoding (C{vde_plug VNL}, C or ours, and the like).

    Reader threads decode stdout into L{frames} and collect stderr, so this
    works in synchronous tests and in tests that run in the reactor alike.
    The process leads a process group of its own: L{stop} and L{kill} end
    whatever it started too (a C{cmd://} child, C{dpipe}'s children).  It is
    stopped at the end of the test in any case.

    @ivar frames: the frames decoded from stdout so far (appended to by a
        reader thread: take a copy, C{list(p.frames)}, to iterate at
        leisure).
    @ivar lengthErrors: C{(length, discarded)} for each oversized record
        header on stdout: the process wrote a bad stream.
    @ivar proc: the L{subprocess.Popen}.
    """

    def __init__(self, test, name: str, argv: Sequence[str], env: Optional[dict] = None,
                 namespace: Optional[str] = None, pass_fds: Sequence[int] = ()) -> None:
        """
        @param namespace: run C{argv} in this network namespace (through
            C{ip netns exec}, which execs it: the pid stays C{argv}'s).
        """
        self.name = name
        self.argv = list(argv)
        self.frames: list[bytes] = []
        self.lengthErrors: list[tuple[int, int]] = []
        self._stderr = bytearray()
        self._arrived = threading.Condition()
        self._eof = False
        self._taken = 0
        decoder = StreamDecoder(self._frameReceived, self._lengthError)
        command = self.argv
        if namespace is not None:
            command = ["ip", "netns", "exec", namespace, *command]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, pass_fds=pass_fds, process_group=0,
        )
        self.pid = self.proc.pid
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, decoder.feed, self._ended),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr.extend),
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        test.addCleanup(self.stop)

    @staticmethod
    def _pump(pipe, sink: Callable[[bytes], None],
              atEnd: Callable[[], None] = lambda: None) -> None:
        fd = pipe.fileno()
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    return
                if not data:
                    return
                sink(data)
        finally:
            atEnd()

    def _frameReceived(self, frame: bytes) -> None:
        with self._arrived:
            self.frames.append(frame)
            self._arrived.notify_all()

    def _lengthError(self, length: int, discarded: int) -> None:
        self.lengthErrors.append((length, discarded))

    def _ended(self) -> None:
        with self._arrived:
            self._eof = True
            self._arrived.notify_all()

    # -- stdin

    def write(self, data: bytes) -> None:
        """
        Write raw bytes (good records or not) to stdin.
        """
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, *frames: bytes) -> None:
        self.write(records(frames))

    def waitInputRead(self, timeout: float = TIMEOUT) -> None:
        """
        Write one frame to stdin and wait until the process has read it: it
        is past its start-up and in its main loop (where a signal meets the
        handlers it runs with; C{vde_plug}'s socket appears before that).
        """
        self.send(frame(0))
        self.waitFor(lambda: _queued(self.proc.stdin.fileno()) == 0,
                     "the process to read its stdin", timeout)

    def closeStdin(self) -> None:
        """
        Close stdin: the clean way to end a C{vde_plug} or C{vde_switch}.
        """
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    # -- stdout and stderr

    def data(self) -> list[bytes]:
        """
        The frames of L{DATA_TYPE} (as L{frame} makes: not probes) so far.
        """
        return [f for f in list(self.frames) if f[12:14] == DATA_TYPE]

    def recv(self, timeout: float = TIMEOUT) -> Optional[bytes]:
        """
        The next frame not yet returned by C{recv}, waiting up to C{timeout}
        seconds for it; C{None} if none comes (or stdout is closed).
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while self._taken >= len(self.frames):
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    return None
                self._arrived.wait(left)
            self._taken += 1
            return self.frames[self._taken - 1]

    def stderrText(self) -> str:
        return bytes(self._stderr).decode("utf-8", "replace")

    def describe(self) -> str:
        return f"\n--- {self.name} (status {self.proc.poll()}) stderr:\n{self.stderrText()}"

    def waitFor(self, predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> None:
        """
        L{waitFor} C{predicate}, failing early (with this process's stderr)
        if this process ends first.
        """
        waitFor(predicate, f"{self.name}: {what}", timeout, procs=[self], failIfEnded=True)

    # -- the process

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        """
        Send C{signum} to the process (not to its group).
        """
        if self.running():
            os.kill(self.pid, signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """
        The exit status; fails (with stderr) if it does not exit in time.
        """
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s; stderr:\n{self.stderrText()}"
            ) from None

    def end(self, timeout: float = TIMEOUT) -> int:
        """
        Close stdin and wait: the exit status.
        """
        self.closeStdin()
        return self.wait(timeout)

    def finish(self, timeout: float = TIMEOUT) -> str:
        """
        Wait for the exit and for the readers to see EOF: all of stderr.
        """
        self.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return self.stderrText()

    def stop(self) -> None:
        """
        End the process (SIGTERM, SIGKILL after 3 s) and anything left in
        its process group; close the pipes.  Safe to call more than once.
        """
        if self.running():
            self._signalGroup(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self._signalGroup(signal.SIGKILL)
                self.proc.wait(5)
        self._close()

    def kill(self) -> None:
        """
        SIGKILL the process (and its group) at once, and wait for it.
        """
        self._signalGroup(signal.SIGKILL)
        self.proc.wait(5)
        self._close()

    def _signalGroup(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _close(self) -> None:
        self._signalGroup(signal.SIGKILL)
        self.closeStdin()
        for thread in self._threads:
            thread.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _queued(fd: int) -> int:
    """
    How many bytes wait in the pipe C{fd} is an end of.
    """
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def cPlug(test, name: str, *args: str, **kwargs: Any) -> StreamProcess:
    """
    The C C{vde_plug ARGS}; C{kwargs} as for L{StreamProcess}.
    """
    return StreamProcess(test, name, [cTool("vde_plug"), *args], **kwargs)


def ourPlug(test, name: str, *args: str, env: Optional[dict] = None,
            **kwargs: Any) -> StreamProcess:
    """
    vdetwist's C{vde_plug ARGS} from this checkout; C{kwargs} as for
    L{StreamProcess}.
    """
    return StreamProcess(test, name, ourTool("vde_plug") + list(args),
                         env=ourEnv() if env is None else env, **kwargs)


def isListening(path: str) -> bool:
    """
    Whether a unix stream socket at C{path} accepts connections (a full
    backlog counts: it listens, and polling must not fail for it).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            return True
        except OSError:
            return False
    return True


#: What the vde_switch console (C and ours) ends each answer with.
PROMPT = b"\nvde$ "


class ConsoleClient:
    """
    A raw management console client, as the stock clients behave: wait for
    the prompt, send one command, read up to the next prompt.
    """

    def __init__(self, path: str, timeout: float = TIMEOUT, prompt: bytes = PROMPT) -> None:
        self.prompt = prompt
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            waitFor(lambda: self._connect(path), f"room in {path}'s backlog", timeout)
            self.greeting = self._until(prompt)
        except BaseException:
            self.sock.close()
            raise

    def _connect(self, path: str) -> bool:
        """
        Connect, or C{False} on EAGAIN: a unix socket's backlog is full (the
        switch is not accepting yet), which is not worth failing for.
        """
        try:
            self.sock.connect(path)
        except BlockingIOError:
            return False
        return True

    def _until(self, marker: bytes) -> bytes:
        data = b""
        while not data.endswith(marker):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def cmd(self, line: str) -> bytes:
        """
        The answer to C{line}, without the prompt.
        """
        self.sock.sendall(line.encode() + b"\n")
        answer = self._until(self.prompt)
        assert answer.endswith(self.prompt), answer
        return answer[: -len(self.prompt)]

    def end(self, line: str = "logout") -> bytes:
        """
        Send C{logout} or C{shutdown}: everything until EOF.
        """
        self.sock.sendall(line.encode() + b"\n")
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()


class CSwitch:
    """
    The C C{vde_switch} in a directory of its own in /tmp; its stdin is kept
    open (EOF on it ends the switch: C{process.closeStdin()}).

    @ivar path: the switch directory (for C{vde://}).
    @ivar mgmt: the management socket, or C{None}.
    @ivar process: the L{StreamProcess}.
    """

    def __init__(self, test, *args: str, mgmt: bool = True) -> None:
        self.dir = tmpdir(test, "vtsw-")
        self.path = os.path.join(self.dir, "sw")
        self.mgmt = os.path.join(self.dir, "mgmt") if mgmt else None
        # -f /dev/null: not the machine's ~/.vde2 or /etc/vde2 rc file.
        argv = [cTool("vde_switch"), "-s", self.path, "-f", "/dev/null"]
        if self.mgmt is not None:
            argv += ["-M", self.mgmt]
        self.process = StreamProcess(test, "C vde_switch", argv + list(args))

    def ready(self) -> bool:
        # Not just there: vde_switch binds ctl a moment before it listens.
        return isListening(os.path.join(self.path, "ctl")) and (
            self.mgmt is None or isListening(self.mgmt))

    def waitReady(self) -> None:
        waitFor(self.ready, "vde_switch to start", procs=[self.process], failIfEnded=True)

    async def started(self) -> None:
        await until(self.ready, "vde_switch to start", procs=[self.process], failIfEnded=True)

    def command(self, line: str) -> str:
        """
        The answer to one console command, in a session of its own
        (blocking: the switch is another process).
        """
        console = ConsoleClient(self.mgmt)
        try:
            return console.cmd(line).decode("utf-8", "replace")
        finally:
            console.close()


# ---------------------------------------------------------------------------
# Network namespaces (root only), with L{vdetwist.testing.netns}: imported when used,
# as it needs pyroute2.


def requireTun() -> None:
    from vdetwist.backends.tap import TUN_DEVICE

    requireRoot()
    requireCommand("ip", "iproute2")
    if not os.path.exists(TUN_DEVICE):
        raise SkipTest(f"{TUN_DEVICE} is missing: modprobe tun")


def makeNamespace(test, name: Optional[str] = None, ipv6: bool = False):
    """
    A fresh network namespace (a L{vdetwist.testing.netns.Namespace}, loopback up,
    IPv6 off unless C{ipv6}; a unique name unless C{name}), removed when
    C{test} ends; skips the test where namespaces cannot be made (a
    container without CAP_SYS_ADMIN).
    """
    from vdetwist.testing import netns

    try:
        namespace = netns.Namespace.create(name, ipv6=ipv6)
    except OSError as e:
        raise SkipTest(f"cannot create a network namespace: {e}")
    test.addCleanup(namespace.remove)
    return namespace


def linkExists(ifname: str, namespace) -> bool:
    from vdetwist.testing import netns

    try:
        netns.ifindex(ifname, namespace)
    except LookupError:
        return False
    return True


def nsSocket(namespace: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """
    A socket of C{namespace}'s (usable from any thread).
    """
    from vdetwist.testing.netns import entered

    with entered(namespace):
        return socket.socket(family, kind, proto)


def ping(namespace: str, target: str, count: int = 3, timeout: float = TIMEOUT) -> int:
    """
    ICMP echo from C{namespace} to the IPv4 C{target}, one request at a
    time until C{count} replies or C{timeout} seconds: how many replies came
    back.  Blocks the calling thread.
    """
    from vdetwist.wire.checksum import checksum

    sock = nsSocket(namespace, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    replies = 0
    ident = os.getpid() & 0xFFFF
    try:
        sock.settimeout(0.5)
        deadline = time.monotonic() + timeout
        seq = 0
        while replies < count and time.monotonic() < deadline:
            seq += 1
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"vdetwist-ping" * 4
            body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
            sock.sendto(body, (target, 0))
            try:
                while True:
                    packet, source = sock.recvfrom(65536)
                    icmp = packet[(packet[0] & 0x0F) * 4 :]
                    if (source[0] == target and icmp[0] == 0
                            and icmp[4:8] == struct.pack("!HH", ident, seq)):
                        replies += 1
                        break
            except socket.timeout:
                continue
    finally:
        sock.close()
    return replies


def rssBytes(pid: object = "self") -> int:
    """
    The resident memory of process C{pid} (this one by default), in bytes,
    from /proc: what hardening tests bound under load.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def openFds(collect: bool = True) -> int:
    """
    This process's open descriptors; with C{collect}, once garbage (an
    earlier test's unclosed socket objects) has been collected, so only the
    caller's count. Without, a descriptor only a reference cycle holds
    still counts: what a test that sockets close at once needs.
    """
    if collect:
        gc.collect()
    return len(os.listdir("/proc/self/fd"))


def reap(proc: subprocess.Popen) -> None:
    """
    Kill C{proc} if it still runs, wait for it and close its pipes: the end
    of a test that drove a command through them.
    """
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def stopProcess(proc: subprocess.Popen) -> None:
    """
    End C{proc} if it still runs: SIGTERM, then SIGKILL after 5 s.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
