"""
Tests for C{vdens}: real user and network namespaces, real taps, run as
root and as a user who is not (made by the test when it runs as root, in a
private mount namespace whose C{/dev/net/tun} is 0666 as on stock Debian;
the machine's own node is never touched).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import pwd
import random
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from typing import Optional

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from vdetwist.backends.tap import openTap, tapPlugFromDescriptor
from vdetwist.errors import VdeError
from vdetwist.scripts.vdens import parseArgs
from tests.support import (
    TIMEOUT, CSwitch, cPlug, isListening, linkExists, makeNamespace, requireTun, makeUser, ourEnv, requireCommand, requireRoot, stopProcess, tmpdir,
    waitFor,
)

TUN = "/dev/net/tun"
#: In a private mount namespace (made as root): a /dev/net/tun of MODE, then
#: the rest of the command line.
TUN_NODE = ('mount -t tmpfs -o mode=0755 vdens-test /dev/net && '
            'mknod -m "$0" /dev/net/tun c 10 200 && exec "$@"')
#: Configures the interface from udhcpc's lease.
DHCP_SCRIPT = """#!/bin/sh
case "$1" in bound|renew)
    busybox ifconfig "$interface" "$ip" netmask "$subnet" &&
    busybox route add default gw "$router" dev "$interface";;
esac
"""


@dataclass
class Identity:
    """
    Who runs vdens: the argv prefix that makes a process theirs, the Python
    they may run, a directory of theirs.
    """

    name: str
    uid: int
    prefix: list[str]
    python: str
    home: str
    #: The prefix that also gives the process a /dev/net/tun of its own.
    tunPrefix: list[str] = field(default_factory=list)

    def argv(self, *args: str, tunMode: Optional[str] = "0666") -> list[str]:
        prefix = self.prefix
        if tunMode is not None and self.tunPrefix:
            prefix = [*self.tunPrefix, tunMode, *self.prefix]
        return [*prefix, self.python, "-m", "vdetwist.scripts.vdens", *args]

    def run(self, *args: str, env: Optional[dict] = None, input: Optional[str] = None,
            tunMode: Optional[str] = "0666", timeout: float = TIMEOUT * 2,
            ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args, tunMode=tunMode), capture_output=True, text=True,
            cwd=self.home, env=ourEnv(HOME=self.home, **(env or {})),
            input=input, stdin=None if input is not None else subprocess.DEVNULL,
            timeout=timeout,
        )

    def popen(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen(argv, cwd=self.home, env=ourEnv(HOME=self.home),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def leftovers(self) -> str:
        """
        The processes this (made) user still has.
        """
        result = subprocess.run(["ps", "-o", "pid,args", "--no-headers", "-u", str(self.uid)],
                                capture_output=True, text=True)
        return result.stdout.strip()


def caller(test) -> Identity:
    """
    The user running the tests, as they are.
    """
    name = pwd.getpwuid(os.geteuid()).pw_name
    return Identity(name, os.geteuid(), [], sys.executable, tmpdir(test, "vdens-"))


def _setpriv(name: str) -> list[str]:
    return [requireCommand("setpriv", "util-linux"), f"--reuid={name}", f"--regid={name}",
            "--clear-groups"]


def _userPython(name: str) -> tuple[str, list[str]]:
    """
    A Python with Twisted that user C{name} may run: this one, else the
    venv of C{.ci/nonroot}'s user; failing both (this one is under root's
    0700 home), this one with C{CAP_DAC_READ_SEARCH} only to read it (no
    write access, nothing over /dev/net/tun or namespaces).
    """
    ciUser = os.environ.get("VDETWIST_TEST_USER", "vdtest")
    for python in (sys.executable, os.path.expanduser(f"~{ciUser}/venv/bin/python")):
        probe = subprocess.run([*_setpriv(name), python, "-c", "import twisted, zope.interface"],
                               capture_output=True, cwd="/", env=ourEnv())
        if probe.returncode == 0:
            return python, []
    return sys.executable, ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


def unprivileged(test) -> Identity:
    """
    A user who is not root: as root, one made for the test, whose processes
    see a 0666 /dev/net/tun (in a mount namespace of their own); else the
    caller, skipping unless their /dev/net/tun is usable.
    """
    if os.geteuid() != 0:
        identity = caller(test)
        if not os.access(TUN, os.R_OK | os.W_OK):
            raise SkipTest(f"{TUN} is not read-write for {identity.name}: chmod 0666 {TUN} "
                           "(as stock Debian has it) to run this test")
        return identity
    user = makeUser(test)
    python, caps = _userPython(user.pw_name)
    home = tmpdir(test, "vdens-")
    os.chmod(home, 0o755)
    os.chown(home, user.pw_uid, user.pw_gid)
    unshare = requireCommand("unshare", "util-linux")
    return Identity(user.pw_name, user.pw_uid, [*_setpriv(user.pw_name), *caps, "--"], python,
                    home, [unshare, "-m", "--propagation", "private", "sh", "-c", TUN_NODE])


def requireUserNamespaces(identity: Identity) -> None:
    unshare = requireCommand("unshare", "util-linux")
    probe = subprocess.run([*identity.prefix, unshare, "-Urn", "true"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        raise SkipTest(f"no user namespaces for {identity.name}: {probe.stderr.strip()}")


class ServeOnLoopback:
    """
    An HTTP server on the host's 127.0.0.1 (a thread), answering C{body}.
    """

    def __init__(self, test, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        test.addCleanup(thread.join, TIMEOUT)
        test.addCleanup(self.server.shutdown)
        test.addCleanup(self.server.server_close)


class VdensMixin:
    def assertOneLine(self, result: subprocess.CompletedProcess, *fragments: str) -> None:
        """
        C{result} failed with one line on stderr holding each fragment.
        """
        self.assertNotEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        for fragment in fragments:
            self.assertIn(fragment, result.stderr)

    def assertNothingLeft(self, identity: Identity) -> None:
        if identity.uid != os.geteuid():
            waitFor(lambda: not identity.leftovers(), f"{identity.name}'s processes to end")


class NoNetworkTests(VdensMixin, SynchronousTestCase):
    """
    C{vdens -}: namespaces with only lo, as the caller and as another user.
    """

    def identities(self) -> list[Identity]:
        found = [caller(self)]
        if os.geteuid() == 0:
            found.append(unprivileged(self))
        for identity in found:
            requireUserNamespaces(identity)
        return found

    def test_exitStatus(self) -> None:
        """
        The command's exit status is vdens's: without a network vdens
        becomes the command, so a signal that ends it ends vdens.
        """
        for identity in self.identities():
            self.assertEqual(identity.run("-", "sh", "-c", "exit 7").returncode, 7)
            self.assertEqual(identity.run("no", "sh", "-c", "kill -TERM $$").returncode,
                             -signal.SIGTERM)

    def test_onlyLoopback(self) -> None:
        """
        Without a VNL the namespace has lo, up, and no other interface; the
        uid map maps the caller's uid to itself.
        """
        requireCommand("ip", "iproute2")
        for identity in self.identities():
            result = identity.run("-", "sh", "-c", "ip -o link; cat /proc/self/uid_map")
            self.assertEqual(result.returncode, 0, result.stderr)
            links, uidMap = result.stdout.splitlines()
            self.assertRegex(links, r"^1: lo: <LOOPBACK,UP,")
            self.assertEqual(uidMap.split(), [str(identity.uid), str(identity.uid), "1"])

    def test_shell(self) -> None:
        """
        No command: C{$SHELL} runs.
        """
        for identity in self.identities():
            result = identity.run("-", env={"SHELL": "/bin/sh"}, input="echo $((6*7)); exit 3\n")
            self.assertEqual((result.returncode, result.stdout), (3, "42\n"), result.stderr)

    def test_capabilities(self) -> None:
        """
        The command holds the network capabilities (10-13) and, with C{-s},
        CAP_SYS_ADMIN (21), as ambient ones over its namespace.
        """
        for identity in self.identities():
            for args, expected in (((), 0x3C00), (("-s",), 0x203C00)):
                result = identity.run(*args, "-", "grep", "CapAmb", "/proc/self/status")
                self.assertEqual(result.returncode, 0, result.stderr)
                ambient = int(result.stdout.split()[1], 16)
                self.assertEqual(ambient & ~(1 << 2), expected)  # 2: dac_read_search, see above

    def test_resolvAddr(self) -> None:
        """
        C{-R} (or C{VDE_RESOLVADDR}) lists the name servers in the
        namespace's own /etc/resolv.conf; C{-r} (C{VDE_RESOLVCONF}) shows a
        file there; the host's stays as it was.
        """
        with open("/etc/resolv.conf") as f:
            before = f.read()
        for identity in self.identities():
            result = identity.run("-R", "9.9.9.9,2001:db8::1", "-", "cat", "/etc/resolv.conf")
            self.assertEqual((result.returncode, result.stdout),
                             (0, "nameserver 9.9.9.9\nnameserver 2001:db8::1\n"), result.stderr)
            result = identity.run("-", "cat", "/etc/resolv.conf",
                                  env={"VDE_RESOLVADDR": "192.0.2.53"})
            self.assertEqual(result.stdout, "nameserver 192.0.2.53\n", result.stderr)
            mine = os.path.join(identity.home, "resolv")
            with open(mine, "w") as f:
                f.write("nameserver 192.0.2.1\nsearch example\n")
            os.chmod(mine, 0o644)
            for args, env in (((f"-r{mine}",), {}), ((), {"VDE_RESOLVCONF": mine})):
                result = identity.run(*args, "-", "cat", "/etc/resolv.conf", env=env)
                self.assertEqual(result.stdout, "nameserver 192.0.2.1\nsearch example\n",
                                 result.stderr)
        with open("/etc/resolv.conf") as f:
            self.assertEqual(f.read(), before)

    def test_badInput(self) -> None:
        """
        An unknown option, a bad -R, a missing command, a bad -i: one line
        each, a non-zero status.
        """
        identity = caller(self)
        self.assertOneLine(identity.run("-x"), "vdens: invalid option -- 'x'", "--help")
        self.assertOneLine(identity.run("-R", "9.9.9", "-", "true"),
                           "'9.9.9' is not an IPv4 or IPv6 address")
        missing = identity.run("-", "no-such-command-here")
        self.assertOneLine(missing, "vdens: no-such-command-here: command not found")
        self.assertEqual(missing.returncode, 127)
        self.assertOneLine(identity.run("-i", "a/b", "slirp://", "true"), "'a/b'")
        self.assertOneLine(identity.run("-r", "/nonexistent", "-", "true"),
                           "-r: /nonexistent is not a file")
        self.assertOneLine(identity.run("-m", "slirp://", "-", "--", "true"),
                           "-m: '-' is not a VNL")
        self.assertOneLine(identity.run("-m", "-i", "a" * 15, "slirp://", "--", "true"),
                           f"-i: interface name '{'a' * 15}0' is too long")

    def test_userNamespacesDisabled(self) -> None:
        """
        Where no user namespace may be made (in a namespace whose
        C{user.max_user_namespaces} is 0), one line says so and what to
        change.
        """
        identity = caller(self)
        requireUserNamespaces(identity)
        result = subprocess.run(
            ["unshare", "-Ur", "sh", "-c",
             'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"', "--",
             *identity.argv("-", "true")],
            capture_output=True, text=True, env=ourEnv(), timeout=TIMEOUT * 2,
        )
        self.assertOneLine(result, "vdens: cannot create a user namespace",
                           "user.max_user_namespaces")


#: One end of a TCP exchange: "serve" (on HOST:PORT, printing the port) or
#: "connect" (retrying until the peer listens); the client sends SIZE bytes
#: from SEED, the server reads them, sends its SIZE bytes from SEED+1 and
#: waits for the client to close (its namespace, and the data still in
#: flight, would vanish with it).  Each prints the sha256 of what it received and, when its C{vde0} exists,
#: that interface's counters (rx bytes, rx packets, tx bytes, tx packets)
#: as it starts receiving the second half and at the end: the client's
#: upload phase, then its download phase, are the difference.
EXCHANGE = """
import hashlib, random, socket, sys, time
role, host, port, size, seed = sys.argv[1:3] + [int(a) for a in sys.argv[3:]]
def counters():
    for line in open("/proc/net/dev"):
        name, _, fields = line.partition(":")
        if name.strip() == "vde0":
            f = fields.split()
            return " ".join((f[0], f[1], f[8], f[9]))
    return ""
if role == "serve":
    server = socket.create_server((host, port))
    print(server.getsockname()[1], flush=True)
    c, _ = server.accept()
    seed += 1
else:
    for _ in range(300):
        try:
            c = socket.create_connection((host, port), timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    c.settimeout(None)
data = random.Random(seed).randbytes(size)
if role == "connect":
    c.sendall(data)
digest = hashlib.sha256()
chunk = c.recv(1 << 16)
mark = counters()
left = size
while chunk:
    digest.update(chunk)
    left -= len(chunk)
    chunk = c.recv(min(left, 1 << 16)) if left else b""
if role == "serve":
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
c.close()
print(digest.hexdigest())
print(mark)
print(counters(), flush=True)
"""

#: What the exchange moves each way; the longest frame a 1500-byte MTU
#: allows (what the tap counts: the Ethernet frame, no header).
EXCHANGE_SIZE = 48 << 20
MTU_FRAME = 1514


def exchangeDigests(seed: int) -> tuple[str, str]:
    """
    The sha256 of the client's and of the server's data in an exchange from
    C{seed}.
    """
    client, server = (hashlib.sha256(random.Random(s).randbytes(EXCHANGE_SIZE)).hexdigest()
                      for s in (seed, seed + 1))
    return client, server


@dataclass
class Exchanged:
    """
    What the client end of L{EXCHANGE} saw: the digest of what it received,
    and the mean length of the frames its interface sent while it uploaded
    and received while it downloaded.
    """

    digest: str
    upFrame: float
    downFrame: float

    @classmethod
    def parse(cls, output: str) -> Exchanged:
        digest, mark, end = output.splitlines()[-3:]
        before = [int(n) for n in mark.split()]
        after = [int(n) for n in end.split()]
        rxBytes, rxPackets = after[0] - before[0], after[1] - before[1]
        return cls(digest, before[2] / before[3], rxBytes / rxPackets)


class NetworkMixin(VdensMixin):
    def startSwitch(self, identity: Identity, name: str) -> tuple[str, subprocess.Popen]:
        """
        One of our switches, C{identity}'s, in their home: its directory
        and process (stopped when the test ends).
        """
        switch = os.path.join(identity.home, name)
        service = identity.popen(
            [*identity.prefix, identity.python, "-m", "twisted", "vde", "--switch", switch,
             "--rcfile="], os.path.join(identity.home, f"{name}.log"))
        self.addCleanup(stopProcess, service)
        waitFor(lambda: isListening(os.path.join(switch, "ctl")), f"the switch {name}")
        return switch, service

    def identities(self) -> list[Identity]:
        found = [unprivileged(self)]
        if os.geteuid() == 0:
            found.append(caller(self))
        for identity in found:
            requireUserNamespaces(identity)
        return found


class NetworkTests(NetworkMixin, SynchronousTestCase):
    """
    C{vdens VNL}: a tap in the namespace cabled to a VNL opened outside.
    """

    def test_slirp(self) -> None:
        """
        Behind C{slirp://}, with C{-i eth7}, the command gets a lease from
        slirp's DHCP (busybox udhcpc) and fetches over HTTP from a server on
        the host's 127.0.0.1 (10.0.2.2 in the namespace).
        """
        requireCommand("busybox", "busybox")
        server = ServeOnLoopback(self, b"hello from the host\n")
        for identity in self.identities():
            script = os.path.join(identity.home, "dhcp.sh")
            with open(script, "w") as f:
                f.write(DHCP_SCRIPT)
            os.chmod(script, 0o755)
            result = identity.run(
                "-i", "eth7", "slirp://", "sh", "-c",
                f"busybox udhcpc -i eth7 -q -n -t 5 -T 1 -s {script} >/dev/null 2>&1 && "
                f"busybox wget -q -O - http://10.0.2.2:{server.port}/ && exit 5")
            self.assertEqual((result.returncode, result.stdout, result.stderr),
                             (5, "hello from the host\n", ""))
            self.assertNothingLeft(identity)

    def test_switch(self) -> None:
        """
        Two vdens on one of our switches (the user's own) ping each other
        and move 10 MiB over TCP.
        """
        for identity in self.identities()[:1]:
            switch, _ = self.startSwitch(identity, "sw")
            receiver = (
                "import socket\n"
                "s = socket.create_server(('10.9.0.1', 5000))\n"
                "c, _ = s.accept()\n"
                "n = 0\n"
                "while (b := c.recv(65536)):\n"
                "    n += len(b)\n"
                "print(n)\n")
            sender = (
                "import socket, time\n"
                "for _ in range(100):\n"
                "    try:\n"
                "        c = socket.create_connection(('10.9.0.1', 5000), timeout=1)\n"
                "        break\n"
                "    except OSError:\n"
                "        time.sleep(0.1)\n"
                "c.sendall(bytes(10 << 20))\n"
                "c.shutdown(socket.SHUT_WR)\n"
                "c.recv(1)\n")
            first = identity.popen(
                identity.argv(f"vde://{switch}", "sh", "-c",
                              "ip addr add 10.9.0.1/24 dev vde0 && "
                              f"exec /usr/bin/python3 -c \"{receiver}\""),
                os.path.join(identity.home, "first.log"))
            self.addCleanup(stopProcess, first)
            second = identity.run(
                f"vde://{switch}", "sh", "-c",
                "ip addr add 10.9.0.2/24 dev vde0 && ping -q -c 3 -i 0.2 -w 10 10.9.0.1 "
                f">/dev/null && /usr/bin/python3 -c \"{sender}\"")
            self.assertEqual((second.returncode, second.stderr), (0, ""))
            self.assertEqual(first.wait(TIMEOUT), 0)
            with open(os.path.join(identity.home, "first.log")) as f:
                self.assertEqual(f.read(), f"{10 << 20}\n")

    def test_cSwitchToIpNetns(self) -> None:
        """
        As root: a vdens on a C vde_switch reaches a namespace made by
        C{ip netns} whose tap a C vde_plug joined to the same switch, and
        exchanges EXCHANGE_SIZE each way with it, sha256-identical: the
        super-frames its offloading tap sends are cut into MTU frames for
        the C switch.
        """
        requireTun()
        from vdetwist.testing import netns

        switch = CSwitch(self, mgmt=False)
        switch.waitReady()
        namespace = makeNamespace(self)
        tap = f"vtdn{os.getpid() % 100000}"
        plug = cPlug(self, tap, f"tap://{tap}", f"vde://{switch.path}")
        waitFor(lambda: linkExists(tap, None), "the C vde_plug's tap", procs=[plug])
        netns.moveLink(tap, namespace)
        netns.addAddress(tap, "10.78.0.1/24", namespace)
        netns.setUp(tap, namespace)
        server = namespace.popen([sys.executable, "-c", EXCHANGE, "serve", "10.78.0.1", "5000",
                                  str(EXCHANGE_SIZE), "3"], stdout=subprocess.PIPE, text=True)
        self.addCleanup(stopProcess, server)
        self.assertEqual(server.stdout.readline(), "5000\n")
        result = caller(self).run(
            f"vde://{switch.path}", "sh", "-c",
            "ip addr add 10.78.0.2/24 dev vde0 && ping -q -c 2 -i 0.2 -w 10 10.78.0.1 "
            f">/dev/null && exec /usr/bin/python3 -c '{EXCHANGE}' connect 10.78.0.1 5000 "
            f"{EXCHANGE_SIZE} 3", timeout=TIMEOUT * 8)
        self.assertEqual((result.returncode, result.stderr), (0, ""), result.stdout)
        up, down = exchangeDigests(3)
        received, _ = server.communicate(timeout=TIMEOUT)
        self.assertEqual(received.splitlines()[0], up)
        seen = Exchanged.parse(result.stdout)
        self.assertEqual(seen.digest, down)
        self.assertGreater(seen.upFrame, 1.5 * MTU_FRAME, "the namespace sent super-frames")
        self.assertLessEqual(seen.downFrame, MTU_FRAME, "the C switch passes MTU frames")

    def test_vxvdeToIpNetns(self) -> None:
        """
        As root: a vdens on C{vxvde://} reaches a namespace made by C{ip
        netns} whose tap a C vde_plug joined to the same group.  The vdens
        runs in a namespace of its own too (its plug opens the group in the
        caller's network), cabled by a veth that carries the multicast.
        """
        requireTun()
        from vdetwist.testing import netns

        outer, peer = makeNamespace(self).name, makeNamespace(self).name
        netns.createVeth("eth0", "eth0", outer, peer)
        for namespace, address in ((outer, "10.77.0.1/24"), (peer, "10.77.0.2/24")):
            netns.addAddress("eth0", address, namespace)
            netns.setUp("eth0", namespace)
            netns.run(namespace, ["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"],
                      check=True)
        vnl = "vxvde://239.77.0.1"
        tap = "vtdx0"
        plug = cPlug(self, tap, vnl, f"tap://{tap}", namespace=peer)
        waitFor(lambda: linkExists(tap, peer), "the C vde_plug's tap", procs=[plug])
        netns.addAddress(tap, "10.78.0.1/24", peer)
        netns.setUp(tap, peer)
        identity = replace(caller(self), prefix=["ip", "netns", "exec", outer])
        result = identity.run(
            vnl, "sh", "-c",
            "ip addr add 10.78.0.2/24 dev vde0 && ping -q -c 2 -i 0.2 -w 10 10.78.0.1")
        self.assertEqual((result.returncode, result.stderr), (0, ""), result.stdout)
        left = subprocess.run(["ip", "netns", "pids", outer], capture_output=True, text=True)
        self.assertEqual((left.returncode, left.stdout), (0, ""))

    def test_multi(self) -> None:
        """
        C{-m} with two of our switches: C{vde0} reaches the peer on the
        first, C{vde1} the peer on the second; with C{-i eth} they are
        C{eth0} and C{eth1}.  A VNL that does not open among them: one line,
        status 1, and nothing is left once the peers and switches end.
        """
        identity = self.identities()[0]
        started = [self.startSwitch(identity, f"sw{n}") for n in (1, 2)]
        switches = [switch for switch, _ in started]
        processes = [service for _, service in started]
        for n, switch in enumerate(switches, 1):
            peer = identity.popen(
                identity.argv(f"vde://{switch}", "sh", "-c",
                              f"ip addr add 10.9.{n}.1/24 dev vde0 && exec sleep 60"),
                os.path.join(identity.home, f"peer{n}.log"))
            self.addCleanup(stopProcess, peer)
            processes.insert(0, peer)
        result = identity.run(
            "-m", f"vde://{switches[0]}", f"vde://{switches[1]}", "--", "sh", "-c",
            "ip addr add 10.9.1.2/24 dev vde0 && ip addr add 10.9.2.2/24 dev vde1 && "
            "ping -q -c 2 -i 0.2 -w 10 10.9.1.1 >/dev/null && "
            "ping -q -c 2 -i 0.2 -w 10 10.9.2.1 >/dev/null && exit 7")
        self.assertEqual((result.returncode, result.stderr), (7, ""), result.stdout)
        named = identity.run("-m", "-i", "eth", f"vde://{switches[0]}", f"vde://{switches[1]}",
                             "--", "cat", "/proc/net/dev")
        self.assertEqual(named.returncode, 0, named.stderr)
        interfaces = sorted(line.split(":")[0].strip() for line in named.stdout.splitlines()[2:])
        self.assertEqual(interfaces, ["eth0", "eth1", "lo"])
        bad = identity.run("-m", f"vde://{switches[0]}", "vde:///nonexistent/sw", "--", "true")
        self.assertOneLine(bad, "vdens: vde:///nonexistent/sw:", "no switch directory")
        self.assertEqual(bad.returncode, 1)
        for process in processes:
            stopProcess(process)
        self.assertNothingLeft(identity)

    def test_badVNL(self) -> None:
        """
        A VNL that does not open: one line, status 1, and the child that
        made the namespace is gone too.
        """
        for identity in self.identities():
            result = identity.run("vde:///nonexistent/sw", "true")
            self.assertOneLine(result, "vdens: vde:///nonexistent/sw:", "no switch directory")
            self.assertEqual(result.returncode, 1)
            self.assertNothingLeft(identity)

    def test_networkGone(self) -> None:
        """
        When the VNL closes (the switch ends), the command is hung up.
        """
        identity = self.identities()[0]
        switch, service = self.startSwitch(identity, "sw")
        out = os.path.join(identity.home, "out")
        proc = identity.popen(identity.argv(f"vde://{switch}", "sh", "-c",
                                            "echo ready; exec sleep 30"), out)
        self.addCleanup(stopProcess, proc)
        waitFor(lambda: open(out).read().startswith("ready"), "the command to start")
        stopProcess(service)
        self.assertEqual(proc.wait(TIMEOUT), 128 + signal.SIGHUP)
        with open(out) as f:
            self.assertIn("vdens: the network closed", f.read())

    def test_signalForwarded(self) -> None:
        """
        SIGTERM to vdens reaches the command, whose status vdens returns.
        """
        identity = caller(self)
        requireUserNamespaces(identity)
        if identity.uid != 0:
            identity = unprivileged(self)
        out = os.path.join(identity.home, "out")
        proc = identity.popen(identity.argv("slirp://", "sh", "-c", "echo ready; exec sleep 30"),
                              out)
        self.addCleanup(stopProcess, proc)
        waitFor(lambda: open(out).read().startswith("ready"), "the command to start")
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(TIMEOUT), 128 + signal.SIGTERM)

    def test_tunNotAccessible(self) -> None:
        """
        A /dev/net/tun this user may not open: one line naming its mode and
        the fix.  (As root, the test's user sees a 0600 node of its own; as
        a user, the machine's, if it is not usable.)
        """
        if os.geteuid() == 0:
            identity, mode = unprivileged(self), "0600"
        elif os.access(TUN, os.R_OK | os.W_OK):
            raise SkipTest(f"{TUN} is usable here: nothing to refuse")
        else:
            identity, mode = caller(self), f"{stat.S_IMODE(os.stat(TUN).st_mode):04o}"
        requireUserNamespaces(identity)
        result = identity.run("slirp://", "true", tunMode=mode)
        owner = pwd.getpwuid(os.stat(TUN).st_uid).pw_name if os.geteuid() else "root"
        self.assertOneLine(result, f"vdens: {TUN} (mode {mode}, owner {owner}) is not "
                           f"accessible to {identity.name}", f"chmod 0666 {TUN}")
        self.assertNothingLeft(identity)

    def test_tunMissing(self) -> None:
        """
        No /dev/net/tun (an empty /dev/net in a mount namespace): one line.
        """
        requireRoot("a mount namespace without /dev/net/tun")
        identity = caller(self)
        result = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs none /dev/net && exec "$@"', "--",
             *identity.argv("slirp://", "true")],
            capture_output=True, text=True, env=ourEnv(), timeout=TIMEOUT * 2)
        self.assertOneLine(result, f"{TUN} does not exist", "modprobe tun")


class OffloadTests(NetworkMixin, SynchronousTestCase):
    """
    vdens's taps offload by default: a large TCP exchange each way moves
    byte-identical in super-frames (the namespace's interface counts frames
    longer than the MTU allows); with C{--no-offload} every frame fits the
    MTU.
    """

    def assertOffloaded(self, seen: Exchanged, offload: bool) -> None:
        """
        With C{offload}, most of the upload and of the download went in
        super-frames; without, no frame was longer than the MTU allows.
        """
        # A super-frame holds at least two segments (the kernel's
        # tcp_min_tso_segs): a mean above 1.5 MTU frames needs most to be.
        if offload:
            self.assertGreater(seen.upFrame, 1.5 * MTU_FRAME, "upload in super-frames")
            self.assertGreater(seen.downFrame, 1.5 * MTU_FRAME, "download in super-frames")
        else:
            self.assertLessEqual(seen.upFrame, MTU_FRAME)
            self.assertLessEqual(seen.downFrame, MTU_FRAME)

    def test_slirp(self) -> None:
        """
        Behind C{slirp://}: EXCHANGE_SIZE up to a server on the host's
        127.0.0.1 and back down, sha256-identical; super-frames both ways
        (slirp takes TSO segments and sends large ones) unless
        C{--no-offload}.
        """
        up, down = exchangeDigests(1)
        for identity in self.identities():
            for offload in (True, False):
                server = subprocess.Popen(
                    [sys.executable, "-c", EXCHANGE, "serve", "127.0.0.1", "0",
                     str(EXCHANGE_SIZE), "1"], stdout=subprocess.PIPE, text=True)
                self.addCleanup(stopProcess, server)
                port = server.stdout.readline().strip()
                result = identity.run(
                    *(() if offload else ("--no-offload",)), "slirp://", "sh", "-c",
                    "ip addr add 10.0.2.15/24 dev vde0 && "
                    f"exec /usr/bin/python3 -c '{EXCHANGE}' connect 10.0.2.2 {port} "
                    f"{EXCHANGE_SIZE} 1", timeout=TIMEOUT * 8)
                self.assertEqual((result.returncode, result.stderr), (0, ""))
                received, _ = server.communicate(timeout=TIMEOUT)
                self.assertEqual(received.splitlines()[0], up)
                seen = Exchanged.parse(result.stdout)
                self.assertEqual(seen.digest, down)
                self.assertOffloaded(seen, offload)
            self.assertNothingLeft(identity)

    def test_switch(self) -> None:
        """
        Two vdens on one of our switches (C{twistd vde}): EXCHANGE_SIZE each
        way, sha256-identical; the upload leaves the client's namespace in
        super-frames and the download reaches it in super-frames (they
        crossed the switch whole) unless C{--no-offload}.
        """
        up, down = exchangeDigests(7)
        for identity in self.identities():
            switch, _ = self.startSwitch(identity, "sw")
            for offload in (True, False):
                options = () if offload else ("--no-offload",)
                serverLog = os.path.join(identity.home, f"server-{offload}.log")
                server = identity.popen(
                    identity.argv(*options, f"vde://{switch}", "sh", "-c",
                                  "ip addr add 10.9.0.1/24 dev vde0 && exec /usr/bin/python3 "
                                  f"-c '{EXCHANGE}' serve 10.9.0.1 5000 {EXCHANGE_SIZE} 7"),
                    serverLog)
                self.addCleanup(stopProcess, server)
                result = identity.run(
                    *options, f"vde://{switch}", "sh", "-c",
                    "ip addr add 10.9.0.2/24 dev vde0 && exec /usr/bin/python3 "
                    f"-c '{EXCHANGE}' connect 10.9.0.1 5000 {EXCHANGE_SIZE} 7",
                    timeout=TIMEOUT * 8)
                self.assertEqual((result.returncode, result.stderr), (0, ""))
                self.assertEqual(server.wait(TIMEOUT), 0)
                with open(serverLog) as f:
                    self.assertEqual(f.read().splitlines()[1], up)
                seen = Exchanged.parse(result.stdout)
                self.assertEqual(seen.digest, down)
                self.assertOffloaded(seen, offload)

    def test_option(self) -> None:
        """
        C{--no-offload} is the namespace's setup; offloads are the default.
        """
        self.assertTrue(parseArgs(["slirp://"], {}).setup.offload)
        self.assertFalse(parseArgs(["--no-offload", "slirp://", "sh"], {}).setup.offload)


class TapFromDescriptorTests(SynchronousTestCase):
    """
    L{tapPlugFromDescriptor}: a plug over a tap opened elsewhere.
    """

    def test_tap(self) -> None:
        requireRoot("to create a tap")
        fd, name = openTap("")
        plug = tapPlugFromDescriptor(reactor, fd, "passed")
        self.addCleanup(plug.close)
        self.assertEqual((plug.ifname, plug.fileno(), os.get_blocking(fd)), (name, fd, False))

    def test_notATap(self) -> None:
        """
        A descriptor that is not a tap is refused, saying so.
        """
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        error = self.assertRaises(VdeError, tapPlugFromDescriptor, reactor, r, "pipe")
        self.assertIn(f"descriptor {r} is not a tap", str(error))
