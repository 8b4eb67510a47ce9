"""
The slirp:// engine with a real guest: a network namespace whose tap is
cabled (in this process, on the reactor) to a slirp:// plug.  The guest
gets 10.0.2.15 by DHCP (busybox udhcpc), resolves a name through 10.0.2.3
over UDP and TCP against a DNS server this test runs on a loopback address,
fetches a file byte-exact over HTTP from a server on the host's 127.0.0.1
through 10.0.2.2, pings 10.0.2.2, and serves a tcpfwd/udpfwd.

Everything stays on loopback and inside the namespace the test makes.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv6Address

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server, static

from tests.support import requireRoot
from vdetwist.cable import Cable
from vdetwist.registry import Registry

NAME = "guest.vdetwist.test"
ANSWER = "192.0.2.77"
FILE_SIZE = 8 * 1024 * 1024
SEED = 4

DHCP_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$subnet" dev "$interface"
    ip route add default via "$router" dev "$interface"
    echo "lease $ip $subnet $router $dns" >> "$0.log"
    ;;
esac
exit 0
"""

GUEST_DNS = r"""
import socket, struct, sys
server, name, transport = sys.argv[1], sys.argv[2], sys.argv[3]
query = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
for label in name.split("."):
    query += bytes([len(label)]) + label.encode()
query += b"\0" + struct.pack("!HH", 1, 1)
if transport == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(query, (server, 53))
    reply = s.recv(4096)
else:
    s = socket.create_connection((server, 53), timeout=5)
    s.sendall(struct.pack("!H", len(query)) + query)
    data = b""
    while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    reply = data[2:]
print(socket.inet_ntoa(reply[-4:]))
"""

GUEST_HTTP = r"""
import hashlib, sys, time, urllib.request
start = time.monotonic()
data = urllib.request.urlopen(sys.argv[1], timeout=30).read()
elapsed = time.monotonic() - start
print(len(data), hashlib.sha256(data).hexdigest(), "%.3f" % elapsed)
"""

GUEST_PING = r"""
import os, socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(3)
ident = os.getpid() & 0xffff
ok = 0
for seq in range(3):
    body = struct.pack("!HH", ident, seq) + b"vdetwist-ping"
    msg = struct.pack("!BBH", 8, 0, 0) + body
    msg = struct.pack("!BBH", 8, 0, csum(msg)) + body
    s.sendto(msg, (sys.argv[1], 0))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        data, addr = s.recvfrom(2048)
        icmp = data[(data[0] & 15) * 4:]
        if icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq) \
                and addr[0] == sys.argv[1]:
            ok += 1
            break
print(ok)
"""

GUEST_CMD = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"shout")
c.shutdown(socket.SHUT_WR)
data = b""
while True:
    d = c.recv(4096)
    if not d:
        break
    data += d
print(data.decode())
"""

GUEST_SERVER = r"""
import socket, sys
family = socket.AF_INET6 if sys.argv[3:] == ["6"] else socket.AF_INET
anywhere = "::" if family == socket.AF_INET6 else "0.0.0.0"
t = socket.socket(family); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((anywhere, int(sys.argv[1]))); t.listen(1)
u = socket.socket(family, socket.SOCK_DGRAM); u.bind((anywhere, int(sys.argv[2])))
print("ready", flush=True)
u.settimeout(20)
data, addr = u.recvfrom(2048)
u.sendto(data.upper() + b" from " + addr[0].encode(), addr)
t.settimeout(20)
c, addr = t.accept()
got = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    got += d
c.sendall(got[::-1] + b" from " + addr[0].encode())
c.close()
"""


def dnsAnswer(query: bytes) -> bytes:
    """
    Answer any A question with ANSWER.
    """
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12:end + 5]
    header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
    return header + question + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + \
        socket.inet_aton(ANSWER)


class DnsUdp(DatagramProtocol):
    def __init__(self):
        self.queries = 0

    def datagramReceived(self, data, addr):
        self.queries += 1
        self.transport.write(dnsAnswer(data), addr)


class DnsTcp(Protocol):
    def dataReceived(self, data):
        self.buffer = getattr(self, "buffer", b"") + data
        if len(self.buffer) >= 2:
            length = struct.unpack("!H", self.buffer[:2])[0]
            if len(self.buffer) >= 2 + length:
                answer = dnsAnswer(self.buffer[2:2 + length])
                self.transport.write(struct.pack("!H", len(answer)) + answer)
                self.transport.loseConnection()


def freePort(kind=socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def requireGuest() -> str:
    """
    Skip unless a namespace guest behind a tap can run here (root,
    /dev/net/tun, busybox for its DHCP client); the busybox to run it with.
    """
    requireRoot()
    if not os.path.exists("/dev/net/tun"):
        raise SkipTest("no /dev/net/tun")
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SkipTest("busybox is not installed (apt-get install busybox)")
    return busybox


class SlirpGuestTests(TestCase):
    timeout = 85
    ipv6 = False

    def setUp(self):
        self.busybox = requireGuest()
        from vdetwist.testing import netns
        from vdetwist.backends.slirp import SlirpBackend
        from vdetwist.backends.tap import TapBackend

        self.netns = netns
        self.tmp = tempfile.mkdtemp(prefix="vtslirp")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # the DNS server, on a loopback address of its own, port 53
        self.dnsAddress = f"127.53.{os.getpid() % 250}.{random.randint(1, 250)}"
        self.dnsUdp = DnsUdp()
        port = reactor.listenUDP(53, self.dnsUdp, interface=self.dnsAddress)
        self.addCleanup(port.stopListening)
        port = reactor.listenTCP(53, Factory.forProtocol(DnsTcp), interface=self.dnsAddress)
        self.addCleanup(port.stopListening)
        resolv = os.path.join(self.tmp, "resolv.conf")
        with open(resolv, "w") as f:
            f.write(f"nameserver {self.dnsAddress}\n")
        os.environ["VDETWIST_RESOLV_CONF"] = resolv
        self.addCleanup(os.environ.pop, "VDETWIST_RESOLV_CONF", None)
        # the HTTP server on the host's 127.0.0.1
        self.payload = random.Random(SEED).randbytes(FILE_SIZE)
        root = resource.Resource()
        root.putChild(b"file", static.Data(self.payload, "application/octet-stream"))
        port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.httpPort = port.getHost().port
        if self.ipv6:
            try:
                port = reactor.listenTCP(0, server.Site(root), interface="::1")
            except Exception:
                raise SkipTest("no IPv6 loopback on the host")
            self.addCleanup(port.stopListening)
            self.httpPort6 = port.getHost().port
        # the guest
        self.ns = netns.Namespace.create(ipv6=self.ipv6)
        self.addCleanup(self.ns.remove)
        self.tap = netns.uniqueName("vtsl")
        link = netns.createTap(self.tap)
        self.addCleanup(link.remove)
        self.tcpfwd, self.udpfwd = freePort(), freePort(socket.SOCK_DGRAM)
        registry = Registry([TapBackend(), SlirpBackend()])
        return self.plug(registry, link)

    @defer.inlineCallbacks
    def plug(self, registry, link):
        tap = yield registry.open(reactor, f"tap://{self.tap}")
        families = "/v4/v6" if self.ipv6 else "/v4"
        tftp = os.path.join(self.tmp, "tftp")
        os.mkdir(tftp)
        with open(os.path.join(tftp, "boot.img"), "wb") as f:
            f.write(self.payload[:100000])
        tcpfwd = f"127.0.0.1:{self.tcpfwd}:10.0.2.15:7001"
        udpfwd = f"127.0.0.1:{self.udpfwd}:0.0.0.0:7002"
        if self.ipv6:
            # IPv6 forwards (a vdetwist extension) to the address the guest
            # will make from the router advertisement and its MAC (EUI-64).
            with open(f"/sys/class/net/{self.tap}/address") as f:
                mac = bytes.fromhex(f.read().strip().replace(":", ""))
            eui = bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:]
            self.guest6 = str(IPv6Address(bytes.fromhex("fd00" + "00" * 6) + eui))
            tcpfwd += f",[::1]:{self.tcpfwd}:[{self.guest6}]:7001"
            udpfwd += f",[::1]:{self.udpfwd}:[{self.guest6}]:7002"
        slirp = yield registry.open(
            reactor, f"slirp://{families}/tcpfwd={tcpfwd}/udpfwd={udpfwd}"
                     f"/cmdfwd=5555:tr a-z A-Z/tftp_path='{tftp}'")
        self.slirp = slirp
        self.cable = Cable(tap, slirp)
        self.addCleanup(self.cable.close)
        link.moveTo(self.ns)
        self.netns.setUp(self.tap, self.ns)

    def run_(self, argv, timeout=30):
        """
        Run C{argv} in the namespace without blocking the reactor.
        """
        return deferToThread(subprocess.run, self.ns.command(argv), capture_output=True,
                             text=True, timeout=timeout)

    def python(self, script, *args, timeout=30):
        return self.run_([sys.executable, "-c", script, *map(str, args)], timeout)

    @defer.inlineCallbacks
    def dhcp(self):
        script = os.path.join(self.tmp, "udhcpc.sh")
        with open(script, "w") as f:
            f.write(DHCP_SCRIPT)
        os.chmod(script, 0o755)
        result = yield self.run_([self.busybox, "udhcpc", "-i", self.tap, "-f", "-q", "-n",
                                  "-t", "5", "-T", "1", "-s", script])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(script + ".log") as f:
            return f.read().split()

    @defer.inlineCallbacks
    def test_guest(self):
        lease = yield self.dhcp()
        self.assertEqual(lease, ["lease", "10.0.2.15", "255.255.255.0", "10.0.2.2", "10.0.2.3"])

        pings = yield self.python(GUEST_PING, "10.0.2.2")
        self.assertEqual(pings.stdout.strip(), "3", pings.stderr)

        for transport in ("udp", "tcp"):
            result = yield self.python(GUEST_DNS, "10.0.2.3", NAME, transport)
            self.assertEqual(result.stdout.strip(), ANSWER, transport + result.stderr)
        self.assertGreaterEqual(self.dnsUdp.queries, 1)

        result = yield self.python(GUEST_HTTP, f"http://10.0.2.2:{self.httpPort}/file",
                                   timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        size, digest, elapsed = result.stdout.split()
        self.assertEqual((int(size), digest),
                         (FILE_SIZE, hashlib.sha256(self.payload).hexdigest()))
        rate = FILE_SIZE * 8 / float(elapsed) / 1e6
        sys.stderr.write(f"\nslirp HTTP download: {FILE_SIZE} bytes in {elapsed} s "
                         f"= {rate:.0f} Mbit/s\n")
        self.assertEqual(self.slirp.engine.stats["errors"], 0)

        # cmdfwd: 10.0.2.4:5555 is a command's stdin/stdout
        result = yield self.python(GUEST_CMD, "10.0.2.4", 5555)
        self.assertEqual(result.stdout.strip(), "SHOUT", result.stderr)

        # tftp from the gateway
        out = os.path.join(self.tmp, "boot.copy")
        result = yield self.run_([self.busybox, "tftp", "-g", "-r", "boot.img", "-l", out,
                                  "10.0.2.2"])
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.payload[:100000])

        # forwards: the guest serves, the host's loopback clients appear as 10.0.2.2
        yield self.checkForwards("127.0.0.1", "10.0.2.2")

    @defer.inlineCallbacks
    def checkForwards(self, client: str, seen: str, family: str = "4"):
        """
        Run the guest's server (IPv4 or IPv6), reach it through the
        tcpfwd and udpfwd from the host's C{client} address and check that
        the guest saw the client as C{seen}.
        """
        proc = yield deferToThread(
            subprocess.Popen, self.ns.command([sys.executable, "-c", GUEST_SERVER, "7001",
                                               "7002", family]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        line = yield deferToThread(proc.stdout.readline)
        self.assertEqual(line.strip(), "ready")
        udpReply = yield deferToThread(self.udpClient, client)
        self.assertEqual(udpReply, b"HELLO from " + seen.encode())
        tcpReply = yield deferToThread(self.tcpClient, client)
        self.assertEqual(tcpReply, b"olleh from " + seen.encode())
        yield deferToThread(proc.wait, 10)

    @defer.inlineCallbacks
    def waitGlobalAddress(self, timeout=15.0):
        """
        The guest's address from the router advertisement (SLAAC).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = yield self.run_(["ip", "-6", "-o", "addr", "show", "dev", self.tap,
                                      "scope", "global"])
            for line in result.stdout.splitlines():
                fields = line.split()
                address = fields[fields.index("inet6") + 1].split("/")[0]
                if address.startswith("fd00:") and "tentative" not in line:
                    return address
            yield deferToThread(time.sleep, 0.2)
        self.fail("the guest got no address from the router advertisements")

    def udpClient(self, address: str):
        s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                          socket.SOCK_DGRAM)
        s.settimeout(10)
        s.sendto(b"hello", (address, self.udpfwd))
        try:
            return s.recv(2048)
        finally:
            s.close()

    def tcpClient(self, address: str):
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.create_connection((address, self.tcpfwd), timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return data


GUEST_PING6 = r"""
import os, socket, struct, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.settimeout(3)
ident = os.getpid() & 0xffff
ok = 0
for seq in range(3):
    s.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, seq) + b"six", (sys.argv[1], 0))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        data, addr = s.recvfrom(2048)
        if data[0] == 129 and struct.unpack("!HH", data[4:8]) == (ident, seq):
            ok += 1
            break
print(ok)
"""


class SlirpGuestIPv6Tests(SlirpGuestTests):
    """
    The same guest with IPv6 on: it configures itself from the router
    advertisements, pings fd00::2, resolves through fd00::3 and fetches
    from the host's ::1 through fd00::2.
    """

    ipv6 = True

    @defer.inlineCallbacks
    def test_guest(self):
        address = yield self.waitGlobalAddress()
        self.assertTrue(address.startswith("fd00::"), address)
        result = yield self.run_(["ip", "-6", "route", "show", "default"])
        self.assertIn("via fe80::2", result.stdout)
        pings = yield self.python(GUEST_PING6, "fd00::2")
        self.assertEqual(pings.stdout.strip(), "3", pings.stderr)
        for transport in ("udp", "tcp"):
            result = yield self.python(GUEST_DNS.replace("AF_INET,", "AF_INET6,"), "fd00::3",
                                       NAME, transport)
            self.assertEqual(result.stdout.strip(), ANSWER, transport + result.stderr)
        result = yield self.python(GUEST_HTTP, f"http://[fd00::2]:{self.httpPort6}/file",
                                   timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        size, digest, _ = result.stdout.split()
        self.assertEqual((int(size), digest),
                         (FILE_SIZE, hashlib.sha256(self.payload).hexdigest()))
        # IPv6 forwards: the host's ::1 appears as fd00::2
        self.assertEqual(address, self.guest6)
        yield self.checkForwards("::1", "fd00::2", "6")
        self.assertEqual(self.slirp.engine.stats["errors"], 0)
