"""
slirp's API socket (C{slirp:///api=PATH}, L{vdetwist.slirp.api}): the
request handler over an in-memory engine, the UNIX socket on the reactor
(mode, removal, bounded requests, forwards that open and close host ports),
the same requests against the real slirp4netns (answers of the same shape),
a 1 MB HTTP transfer through a forward added by the API to a namespace
guest, and C{twistd vde --plug 'slirp:///api=PATH'}.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from ipaddress import IPv4Address, IPv6Address

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import isListening, tmpdir, until, waitFor
from vdetwist.errors import VdeError
from vdetwist.slirp import api
from vdetwist.slirp import packets as P
from vdetwist.slirp.config import HostForward, SlirpConfig
from vdetwist.slirp.testing import Harness, decode
from vdetwist.vnl import resolve


def request(path: str, data: bytes, shutdown: bool = True, timeout: float = 15) -> bytes:
    """
    One API request as slirp4netns's clients send it (blocking: run it in
    a thread when the server is on this reactor).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def execute(command: str, **arguments) -> bytes:
    message = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    return json.dumps(message).encode()


def freePort(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def shape(value):
    """
    The keys and types of a JSON answer, without its values.
    """
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


#: Requests neither slirp can serve, and the start of our answer's C{desc}.
BAD_REQUESTS = [
    (b"nonsense", "bad request: cannot parse JSON"),
    (b"", "bad request: cannot parse JSON"),
    (b"\xff\xfe{}", "bad request: cannot parse JSON"),
    (b"[" * 2000 + b"]" * 2000, "bad request: cannot parse JSON"),
    (b"[]", "bad request: json_object() failed"),
    (b"{}", "bad request: no execute found"),
    (b'{"execute": 5}', "bad request: no execute found"),
    (execute("bogus"), "bad request: unknown execute 'bogus'"),
    (execute("add_hostfwd", proto="sctp", host_port=1, guest_port=1),
     "bad request: add_hostfwd: bad arguments.proto"),
    (execute("add_hostfwd"), "bad request: add_hostfwd: bad arguments.proto"),
    (execute("add_hostfwd", proto="tcp", host_addr="nowhere", host_port=1, guest_port=1),
     "bad request: add_hostfwd: bad arguments.host_addr"),
    (execute("add_hostfwd", proto="tcp", host_port=0, guest_port=1),
     "bad request: add_hostfwd: bad arguments.host_port"),
    (execute("add_hostfwd", proto="tcp", host_port=70000, guest_port=1),
     "bad request: add_hostfwd: bad arguments.host_port"),
    (execute("add_hostfwd", proto="tcp", host_port="80", guest_port=1),
     "bad request: add_hostfwd: bad arguments.host_port"),
    (execute("add_hostfwd", proto="tcp", host_port=True, guest_port=1),
     "bad request: add_hostfwd: bad arguments.host_port"),
    (execute("add_hostfwd", proto="tcp", host_port=8080),
     "bad request: add_hostfwd: bad arguments.guest_port"),
    (execute("add_hostfwd", proto="udp", host_port=8080, guest_addr="10.0.2", guest_port=1),
     "bad request: add_hostfwd: bad arguments.guest_addr"),
    (execute("add_hostfwd", proto="udp", host_port=8080, guest_addr="::", guest_port=1),
     "bad request: add_hostfwd: bad arguments.guest_addr"),
    (execute("remove_hostfwd"), "bad request: remove_hostfwd: bad arguments.id"),
    (execute("remove_hostfwd", id="1"), "bad request: remove_hostfwd: bad arguments.id"),
    (execute("remove_hostfwd", id=1.5), "bad request: remove_hostfwd: bad arguments.id"),
    (execute("remove_hostfwd", id=99), "bad request: remove_hostfwd: bad arguments.id: no "),
    (b" " * api.MAX_REQUEST + b'{"execute": "list_hostfwd"}', "bad request: too large"),
]


class ForwardApiTests(TestCase):
    """
    The sans-IO handler over an engine on a L{MemoryHost}.
    """

    def setUp(self):
        self.h = Harness()
        self.api = api.ForwardApi(self.h.engine)

    def ask(self, data: bytes) -> dict:
        return json.loads(self.api.handle(data))

    def test_addListRemove(self):
        """
        Forwards added get ids 1, 2, ... (never reused), listed with their
        addresses (defaults: any host address, the first DHCP address),
        IPv6 included; removing one closes its host socket.
        """
        self.assertEqual(self.ask(execute("list_hostfwd")), {"entries": []})
        self.assertEqual(self.ask(execute("add_hostfwd", proto="tcp", host_port=8080,
                                          guest_port=80)), {"return": {"id": 1}})
        self.assertEqual(self.ask(execute("add_hostfwd", proto="udp", host_addr="::1",
                                          host_port=5353, guest_addr="fd00::15",
                                          guest_port=53.0)), {"return": {"id": 2}})
        self.assertEqual(self.ask(execute("list_hostfwd")), {"entries": [
            {"id": 1, "proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080,
             "guest_addr": "10.0.2.15", "guest_port": 80},
            {"id": 2, "proto": "udp", "host_addr": "::1", "host_port": 5353,
             "guest_addr": "fd00::15", "guest_port": 53},
        ]})
        tcp = self.h.host.listeners[("tcp", "0.0.0.0", 8080)]
        self.assertEqual(self.ask(execute("remove_hostfwd", id=1)), {"return": {}})
        self.assertTrue(tcp.closed)
        self.assertEqual([e["id"] for e in self.ask(execute("list_hostfwd"))["entries"]], [2])
        self.assertEqual(self.ask(execute("add_hostfwd", proto="tcp", host_port=8080,
                                          guest_port=80)), {"return": {"id": 3}})

    def test_configuredForwardsListed(self):
        """
        The VNL's tcpfwd/udpfwd forwards are listed (and removable).
        """
        config = SlirpConfig(resolvConf="/none", hostForwards=[
            HostForward("tcp", IPv4Address("127.0.0.1"), 2222, IPv4Address("0.0.0.0"), 22),
            HostForward("tcp", IPv6Address("::"), 2222, IPv6Address("fd00::5"), 22),
        ])
        self.h = Harness(config)
        self.api = api.ForwardApi(self.h.engine)
        entries = self.ask(execute("list_hostfwd"))["entries"]
        self.assertEqual([(e["id"], e["host_addr"], e["guest_addr"]) for e in entries],
                         [(1, "127.0.0.1", "10.0.2.15"), (2, "::", "fd00::5")])
        self.assertEqual(self.ask(execute("remove_hostfwd", id=2)), {"return": {}})
        self.assertTrue(self.h.host.listeners[("tcp", "::", 2222)].closed)

    def test_badRequests(self):
        """
        Each bad request gets an C{error} answer saying what is wrong, and
        changes nothing.
        """
        self.ask(execute("add_hostfwd", proto="tcp", host_port=8080, guest_port=80))
        before = dict(self.h.engine.forwards)
        for data, desc in BAD_REQUESTS:
            answer = self.ask(data)
            self.assertEqual(list(answer), ["error"], data[:80])
            self.assertEqual(list(answer["error"]), ["desc"])
            self.assertTrue(answer["error"]["desc"].startswith(desc), (data[:80], answer))
        self.assertEqual(self.h.engine.forwards, before)

    def test_portInUse(self):
        self.h.host.busy.add(("tcp", "127.0.0.1", 8080))
        answer = self.ask(execute("add_hostfwd", proto="tcp", host_addr="127.0.0.1",
                                  host_port=8080, guest_port=80))
        self.assertEqual(answer["error"]["desc"],
                         "bad request: add_hostfwd: cannot listen on tcp 127.0.0.1:8080: "
                         "address in use; choose another host_port")
        self.assertEqual(self.h.engine.forwards, {})

    def test_familyOff(self):
        self.h = Harness(SlirpConfig(resolvConf="/none", ipv6=False))
        self.api = api.ForwardApi(self.h.engine)
        answer = self.ask(execute("add_hostfwd", proto="tcp", host_port=8080,
                                  guest_addr="fd00::5", guest_port=80))
        self.assertIn("this slirp has no IPv6", answer["error"]["desc"])

    def test_udpRemovalEndsItsFlows(self):
        """
        Removing a UDP forward closes its socket and the flows answering
        through it (nothing is sent on a closed socket afterwards).
        """
        self.ask(execute("add_hostfwd", proto="udp", host_port=5353, guest_port=53))
        sock = self.h.host.listeners[("udp", "0.0.0.0", 5353)]
        sock.deliver(b"query", ("192.0.2.9", 4000))
        self.assertEqual(len(self.h.engine.udp.flows), 1)
        self.ask(execute("remove_hostfwd", id=1))
        self.assertTrue(sock.closed)
        self.assertEqual(len(self.h.engine.udp.flows), 0)

    def test_wholeObject(self):
        self.assertTrue(api.isWholeObject(b'{"execute": "list_hostfwd"} \n'))
        for partial in (b'{"execute": ', b"[]", b"{" * 5000, b"\xff"):
            self.assertFalse(api.isWholeObject(partial))


class ApiSocketTests(TestCase):
    """
    C{slirp:///api=PATH} on the reactor, with the host's real sockets.
    """

    timeout = 60

    def setUp(self):
        from vdetwist.backends.slirp import openSlirp

        self.dir = tmpdir(self)
        self.path = os.path.join(self.dir, "api.sock")
        self.open = lambda path=self.path: openSlirp(
            reactor, resolve(f"slirp:///v4/api='{path}'"))
        self.plug = self.open()
        self.addCleanup(lambda: self.plug.close())

    def ask(self, data: bytes, **kwargs) -> defer.Deferred:
        return deferToThread(request, self.path, data, **kwargs)

    @defer.inlineCallbacks
    def test_forwardOpensAndClosesAPort(self):
        """
        A forward added through the API makes the host's 127.0.0.1 port a
        way to the guest (a host connection becomes a SYN to the guest);
        after C{remove_hostfwd} the port refuses connections.
        """
        from vdetwist.testing import FrameCollector

        collector = FrameCollector()
        self.plug.startReceiving(collector)
        port = freePort()
        answer = yield self.ask(execute("add_hostfwd", proto="tcp", host_addr="127.0.0.1",
                                        host_port=port, guest_port=80))
        self.assertEqual(json.loads(answer), {"return": {"id": 1}})
        self.assertFalse(refused(port))

        def synToGuest():
            for frame in collector.frames:
                f = decode(frame)
                if f.proto == "arp" and f.tpa == bytes([10, 0, 2, 15]):
                    return True  # the engine looks for the guest first
                if f.proto == "tcp" and f.flags & P.TCP_SYN and f.dport == 80:
                    return True
            return False

        yield until(synToGuest, "the forward's connection to reach the guest side")
        answer = yield self.ask(execute("remove_hostfwd", id=1))
        self.assertEqual(json.loads(answer), {"return": {}})
        self.assertTrue(refused(port))

    @defer.inlineCallbacks
    def test_portInUseKeepsServing(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            answer = json.loads((yield self.ask(execute(
                "add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=port,
                guest_port=80))))
        self.assertIn("Address already in use; choose another host_port",
                      answer["error"]["desc"])
        self.assertEqual(json.loads((yield self.ask(execute("list_hostfwd")))),
                         {"entries": []})

    def test_modeAndRemoval(self):
        """
        The socket is its owner's only, and goes when slirp closes.
        """
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertTrue(stat.S_ISSOCK(os.stat(self.path).st_mode))
        self.plug.close()
        self.assertFalse(os.path.exists(self.path))

    def test_othersFileKept(self):
        """
        A socket another process put at the path meanwhile is not removed.
        """
        os.unlink(self.path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(self.path)
            self.plug.close()
            self.assertTrue(os.path.exists(self.path))

    @defer.inlineCallbacks
    def test_noShutdown(self):
        """
        A whole request is answered without the client's shutdown, as
        C{echo -n $json | nc -U PATH} (no C{-N}) expects of slirp4netns.
        """
        answer = yield self.ask(execute("list_hostfwd"), shutdown=False)
        self.assertEqual(json.loads(answer), {"entries": []})

    @defer.inlineCallbacks
    def test_badRequestsKeepServing(self):
        for data, desc in BAD_REQUESTS[:8]:
            answer = json.loads((yield self.ask(data)))
            self.assertTrue(answer["error"]["desc"].startswith(desc), answer)
        self.assertEqual(json.loads((yield self.ask(execute("list_hostfwd")))),
                         {"entries": []})

    @defer.inlineCallbacks
    def test_megabytes(self):
        """
        A client sending megabytes gets an error (or a reset once its
        unread data is discarded) and is closed; the server holds at most
        a request's worth, and serves the next client.
        """
        def flood():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(15)
                s.connect(self.path)
                try:
                    for _ in range(64):
                        s.sendall(b"x" * 65536)
                except OSError as e:
                    return e
                s.shutdown(socket.SHUT_WR)
                try:
                    return s.recv(65536)
                except OSError as e:
                    return e

        got = yield deferToThread(flood)
        if isinstance(got, bytes):
            self.assertIn(b"too large message", got)
        else:
            self.assertIn(got.errno, (errno.ECONNRESET, errno.EPIPE))
        self.assertEqual(json.loads((yield self.ask(execute("list_hostfwd")))),
                         {"entries": []})

    @defer.inlineCallbacks
    def test_silentClientTimedOut(self):
        self.patch(api, "REQUEST_TIMEOUT", 0.3)
        start = time.monotonic()
        answer = yield self.ask(b'{"execute": ', shutdown=False)
        self.assertEqual(answer, b"")
        self.assertLess(time.monotonic() - start, 10)

    @defer.inlineCallbacks
    def test_tooManyClients(self):
        """
        Clients beyond L{api.MAX_CLIENTS} at once are cut off; the others
        wait for their requests, and the server serves again once they go.
        """
        idle = []
        for _ in range(api.MAX_CLIENTS + 3):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(s.close)
            s.setblocking(False)
            s.connect_ex(self.path)
            idle.append(s)

        def cutOff(s):
            try:
                return s.recv(1) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

        yield until(lambda: sum(map(cutOff, idle)) >= 3, "the extra clients to be cut off")
        self.assertLessEqual(self.plug.apiServer.factory.clients, api.MAX_CLIENTS)
        for s in idle:
            s.close()
        yield until(lambda: self.plug.apiServer.factory.clients == 0, "the clients to go")
        self.assertEqual(json.loads((yield self.ask(execute("list_hostfwd")))),
                         {"entries": []})

    def test_staleSocketReplaced(self):
        self.plug.close()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(self.path)
        stale.close()
        self.plug = self.open()
        self.assertTrue(isListening(self.path))

    def test_refusesToReplace(self):
        """
        A live API socket or a file that is not a socket is left alone,
        with an error naming the option.
        """
        with self.assertRaises(VdeError) as caught:
            self.open()
        self.assertIn(f"api={self.path}: cannot serve the API socket: another process "
                      "listens on it", str(caught.exception))
        other = os.path.join(self.dir, "file")
        with open(other, "w") as f:
            f.write("keep me")
        with self.assertRaises(VdeError) as caught:
            self.open(other)
        self.assertIn("exists and is not a socket", str(caught.exception))
        with open(other) as f:
            self.assertEqual(f.read(), "keep me")


class Slirp4netnsShapeTests(TestCase):
    """
    The same requests to our slirp and to slirp4netns give answers of the
    same shape (keys, types, error or not).
    """

    timeout = 60

    def setUp(self):
        self.slirp4netns = shutil.which("slirp4netns")
        if self.slirp4netns is None:
            raise SkipTest("slirp4netns is not installed (apt-get install slirp4netns)")
        if shutil.which("unshare") is None:
            raise SkipTest("unshare is not installed (apt-get install util-linux)")
        self.dir = tmpdir(self)
        # a network namespace for slirp4netns (a user namespace too, so
        # that no root is needed where user namespaces are allowed)
        sleeper = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net",
                                    "sleep", "120"], stderr=subprocess.PIPE)
        self.addCleanup(self.end, sleeper)
        mine = os.readlink("/proc/self/ns/net")

        def unshared():
            try:
                return os.readlink(f"/proc/{sleeper.pid}/ns/net") != mine
            except OSError:
                return sleeper.poll() is not None

        waitFor(unshared, "unshare to make a namespace")
        if sleeper.poll() is not None:
            raise SkipTest("cannot make a network namespace: "
                           + sleeper.stderr.read().decode(errors="replace").strip())
        self.theirs = os.path.join(self.dir, "slirp4netns.sock")
        self.s4n = subprocess.Popen(
            [self.slirp4netns, "--configure", "--api-socket", self.theirs, str(sleeper.pid),
             "tap0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(self.end, self.s4n)
        waitFor(lambda: isListening(self.theirs) or self.s4n.poll() is not None,
                "slirp4netns's API socket")
        if self.s4n.poll() is not None:
            raise SkipTest("slirp4netns cannot run here: "
                           + self.s4n.stderr.read().decode(errors="replace").strip())

    @staticmethod
    def end(process):
        if process.poll() is None:
            process.kill()
        process.wait()

    @defer.inlineCallbacks
    def test_sameShapes(self):
        from vdetwist.backends.slirp import openSlirp

        ours = os.path.join(self.dir, "ours.sock")
        plug = openSlirp(reactor, resolve(f"slirp:///v4/api='{ours}'"))
        self.addCleanup(plug.close)

        def requests(port):
            add = dict(proto="tcp", host_addr="127.0.0.1", host_port=port, guest_port=80)
            return [
                execute("list_hostfwd"),
                execute("add_hostfwd", **add),
                execute("add_hostfwd", **add),  # the port is in use
                execute("add_hostfwd", proto="udp", host_port=port, guest_addr="10.0.2.100",
                        guest_port=53),
                execute("list_hostfwd"),
                execute("remove_hostfwd", id=1),
                execute("remove_hostfwd", id=1),
                execute("remove_hostfwd", id="x"),
                execute("remove_hostfwd", id=99),
                execute("bogus"),
                b'{"execute": 5}',
                b"{}",
                b"[]",
                b"nonsense",
                execute("add_hostfwd", proto="sctp", host_port=port, guest_port=80),
                execute("add_hostfwd", proto="tcp", host_addr="nowhere", host_port=port,
                        guest_port=80),
                execute("add_hostfwd", proto="tcp", host_port=0, guest_port=80),
                execute("add_hostfwd", proto="tcp", host_port=port, guest_addr="x",
                        guest_port=80),
                execute("add_hostfwd", proto="tcp", host_port=port),
                execute("list_hostfwd"),
            ]

        theirPort, ourPort = freePort(), freePort()
        for mine, theirs in zip(requests(ourPort), requests(theirPort)):
            their = yield deferToThread(request, self.theirs, theirs)
            our = yield deferToThread(request, ours, mine)
            self.assertEqual(shape(json.loads(our)), shape(json.loads(their)),
                             f"{mine!r}: ours {our!r}, slirp4netns's {their!r}")
        self.assertIsNone(self.s4n.poll())


#: Serves a directory over HTTP on the guest's port 80.
GUEST_HTTP_SERVER = r"""
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.HTTPServer(("0.0.0.0", 80), handler)
print("ready", flush=True)
server.serve_forever()
"""


class NamespaceGuestTests(TestCase):
    """
    A guest in a network namespace behind C{slirp:///api=PATH} serves
    1 MB over HTTP to the host's 127.0.0.1 through a forward the API adds.
    """

    timeout = 90

    def setUp(self):
        from tests.interop.test_slirp_netns import SlirpGuestTests, requireGuest

        self.busybox = requireGuest()
        from vdetwist.testing import netns
        from vdetwist.backends.slirp import SlirpBackend
        from vdetwist.backends.tap import TapBackend
        from vdetwist.registry import Registry

        self.guestTests = SlirpGuestTests
        self.netns = netns
        self.tmp = tmpdir(self)
        self.path = os.path.join(self.tmp, "api.sock")
        self.ns = netns.Namespace.create()
        self.addCleanup(self.ns.remove)
        self.tap = netns.uniqueName("vtsa")
        link = netns.createTap(self.tap)
        self.addCleanup(link.remove)
        return self.plug(Registry([TapBackend(), SlirpBackend()]), link)

    @defer.inlineCallbacks
    def plug(self, registry, link):
        from vdetwist.cable import Cable

        tap = yield registry.open(reactor, f"tap://{self.tap}")
        slirp = yield registry.open(reactor, f"slirp:///v4/api='{self.path}'")
        cable = Cable(tap, slirp)
        self.addCleanup(cable.close)
        link.moveTo(self.ns)
        self.netns.setUp(self.tap, self.ns)

    def run_(self, argv, timeout=30):
        return self.guestTests.run_(self, argv, timeout)

    @defer.inlineCallbacks
    def test_httpThroughApiForward(self):
        lease = yield self.guestTests.dhcp(self)
        self.assertEqual(lease[1], "10.0.2.15")
        site = os.path.join(self.tmp, "site")
        os.mkdir(site)
        payload = os.urandom(1 << 20)
        with open(os.path.join(site, "file"), "wb") as f:
            f.write(payload)
        server = self.ns.popen([sys.executable, "-c", GUEST_HTTP_SERVER, site],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (server.kill(), server.wait()))
        ready = yield deferToThread(server.stdout.readline)
        self.assertEqual(ready, b"ready\n")
        port = freePort()
        answer = yield deferToThread(request, self.path, execute(
            "add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=port, guest_port=80))
        self.assertEqual(json.loads(answer), {"return": {"id": 1}})

        def fetch():
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/file", timeout=30).read()

        data = yield deferToThread(fetch)
        self.assertEqual(len(data), len(payload))
        self.assertEqual(hashlib.sha256(data).digest(), hashlib.sha256(payload).digest())
        answer = yield deferToThread(request, self.path, execute("remove_hostfwd", id=1))
        self.assertEqual(json.loads(answer), {"return": {}})
        self.assertTrue(refused(port))


class TwistdTests(TestCase):
    """
    C{twistd vde --plug 'slirp:///api=PATH'}: the switch's slirp uplink
    serves the API; the socket goes when the switch stops.
    """

    timeout = 60

    def test_twistdPlug(self):
        from tests.interop.test_service import SwitchProcess

        path = os.path.join(tmpdir(self), "api.sock")
        sw = SwitchProcess(self, "--plug", f"slirp:///v4/api='{path}'", twistd=True)
        sw.waitFor(lambda: isListening(path), "the API socket")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        port = freePort()
        add = execute("add_hostfwd", proto="tcp", host_addr="127.0.0.1", host_port=port,
                      guest_port=80)
        self.assertEqual(json.loads(request(path, add)), {"return": {"id": 1}})
        self.assertFalse(refused(port))
        self.assertIn("error", json.loads(request(path, add)))
        entries = json.loads(request(path, execute("list_hostfwd")))["entries"]
        self.assertEqual([(e["id"], e["host_port"]) for e in entries], [(1, port)])
        self.assertEqual(json.loads(request(path, execute("remove_hostfwd", id=1))),
                         {"return": {}})
        self.assertTrue(refused(port))
        self.assertIn(sw.stop(), (0, -signal.SIGTERM))
        self.assertFalse(os.path.exists(path), sw.log())
