"""
The host stack against real kernels and real switches:

  - on a C vde_switch with a namespace plugged in by a tap (the C vde_plug
    holds it): the namespace pings the stack, fetches 3 MB from a twisted.web
    site served on the stack, and the stack's client fetches 3 MB from a
    server in the namespace; over IPv4 and over IPv6;
  - two stacks in this process on our switch:// talk HTTP with no kernel
    device at all;
  - on slirp:// with ip=dhcp: a client reaches an HTTP server on the host's
    127.0.0.1 through 10.0.2.2;
  - a QEMU guest's iPXE fetches its script over HTTP from a stack.
"""

from __future__ import annotations

import hashlib
import os
import sys

from twisted.internet import defer, error, reactor
from twisted.internet.endpoints import clientFromString, quoteStringArgument, serverFromString
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server, static
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from tests.support import (
    CSwitch, StreamProcess, cTool, makeNamespace, requireTun, settle, tmpdir, until,
)
from vdetwist.stack.api import openStack

SIZE = 3 * 1024 * 1024
PORT = 8080

FETCH = r"""
import hashlib, sys, time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        body = urllib.request.urlopen(sys.argv[1], timeout=30).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
print(len(body), hashlib.sha256(body).hexdigest())
"""

SERVE = r"""
import http.server, socket, sys
body = bytes(range(256)) * (int(sys.argv[3]) // 256)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(http.server.HTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET

server = Server((sys.argv[1], int(sys.argv[2])), Handler)
server.serve_forever()
"""


def site(data: bytes) -> server.Site:
    root = resource.Resource()
    root.putChild(b"file", static.Data(data, "application/octet-stream"))
    return server.Site(root)


@implementer(IAgentEndpointFactory)
class ThroughStack:
    """
    An Agent's endpoints: connections from one stack.
    """

    def __init__(self, stack) -> None:
        self.stack = stack

    def endpointForURI(self, uri):
        return self.stack.clientEndpoint(uri.host.decode(), uri.port)


def url(host: str, port: int, path: str = "file") -> str:
    return f"http://[{host}]:{port}/{path}" if ":" in host else f"http://{host}:{port}/{path}"


class NamespaceTests(TestCase):
    """
    A namespace on a C vde_switch (its tap held by the C vde_plug) and a
    stack on the same switch.
    """

    timeout = 180

    def setUp(self) -> None:
        requireTun()
        self.switch = CSwitch(self, mgmt=False)
        self.switch.waitReady()
        self.ns = makeNamespace(self, ipv6=True)
        self.tap = "vst0"
        self.plug = StreamProcess(
            self, "C vde_plug (tap)",
            [cTool("vde_plug"), f"tap://{self.tap}", f"vde://{self.switch.path}"],
            namespace=self.ns.name)

    @defer.inlineCallbacks
    def network(self, nsAddress: str, stackAddress: str):
        from vdetwist.testing import netns
        from tests.support import linkExists

        yield until(lambda: linkExists(self.tap, self.ns.name), "the tap", procs=[self.plug],
                    failIfEnded=True)
        if ":" in nsAddress:
            self.ns.run(["sysctl", "-qw", f"net.ipv6.conf.{self.tap}.accept_dad=0"], check=True)
        netns.addAddress(self.tap, nsAddress, self.ns.name)
        netns.setUp(self.tap, self.ns.name)
        if ":" in stackAddress:
            stack = yield openStack(reactor, f"vde://{self.switch.path}", ip6=stackAddress)
        else:
            stack = yield openStack(reactor, f"vde://{self.switch.path}", ip=stackAddress)
        self.addCleanup(stack.close)
        return stack

    @defer.inlineCallbacks
    def inNamespace(self, *argv: str):
        out, err, code = yield getProcessOutputAndValue(
            "/usr/bin/ip", ["netns", "exec", self.ns.name, *argv], env=os.environ)
        self.assertEqual(code, 0, f"{argv[0]} failed: {err.decode(errors='replace')}")
        return out.decode()

    @defer.inlineCallbacks
    def exchange(self, nsAddress: str, stackAddress: str):
        nsHost = nsAddress.split("/")[0]
        stackHost = stackAddress.split("/")[0]
        stack = yield self.network(nsAddress, stackAddress)

        # the namespace pings the stack
        yield self.inNamespace("ping", "-c", "3", "-i", "0.2", "-W", "5", stackHost)
        self.assertGreaterEqual(stack.host.stats["icmp_echo_answered"], 3)
        rtt = yield stack.ping(nsHost)
        self.assertLess(rtt, 5)

        # the namespace fetches 3 MB from twisted.web served on the stack
        data = os.urandom(SIZE)
        port = stack.listenTCP(PORT, site(data))
        self.addCleanup(port.stopListening)
        out = yield self.inNamespace(sys.executable, "-c", FETCH, url(stackHost, PORT))
        self.assertEqual(out.split(), [str(SIZE), hashlib.sha256(data).hexdigest()])

        # the stack's client fetches 3 MB from a server in the namespace
        served = StreamProcess(self, "http server", [sys.executable, "-c", SERVE, nsHost,
                                                     str(PORT + 1), str(SIZE)],
                               namespace=self.ns.name)
        agent = Agent.usingEndpointFactory(reactor, ThroughStack(stack))
        for attempt in range(100):  # until the server listens (refused before)
            try:
                response = yield agent.request(b"GET", url(nsHost, PORT + 1).encode())
                break
            except error.ConnectionRefusedError:
                self.assertTrue(served.running(), served.describe())
                yield settle(0.2)
        body = yield readBody(response)
        expected = bytes(range(256)) * (SIZE // 256)
        self.assertEqual(hashlib.sha256(body).hexdigest(), hashlib.sha256(expected).hexdigest())
        self.assertIn(nsHost, stack.neighbours())

    def test_ipv4(self):
        return self.exchange("10.78.0.1/24", "10.78.0.2/24")

    def test_ipv6(self):
        return self.exchange("fd78::1/64", "fd78::2/64")


def stackAgent(vnl: str, options: str) -> Agent:
    """
    An agent whose every connection is a vdestack: client endpoint on
    C{vnl} (quoted) with the stack C{options} (as C{ip=dhcp}).
    """

    @implementer(IAgentEndpointFactory)
    class Strings:
        def endpointForURI(self, uri):
            return clientFromString(
                reactor, f"vdestack:vnl={vnl}:{options}:host={uri.host.decode()}"
                f":port={uri.port}")

    return Agent.usingEndpointFactory(reactor, Strings())


class InProcessTests(TestCase):
    """
    Stacks in this process, on our own switch: no kernel device.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_twoStacksHTTP(self):
        """
        A twisted.web site on one vdestack: endpoint, fetched through
        another stack's vdestack: client endpoint, over switch://.
        """
        directory = tmpdir(self)
        sw = os.path.join(directory, "sw")
        first = yield openStack(reactor, f"switch://{sw}", ip="10.79.0.1/24")
        self.addCleanup(first.close)
        data = os.urandom(SIZE)
        vnl = quoteStringArgument(f"vde://{sw}")
        endpoint = serverFromString(reactor, f"vdestack:vnl={vnl}:ip=10.79.0.2/24:port=80")
        port = yield endpoint.listen(site(data))
        agent = stackAgent(vnl, "ip=10.79.0.3/24")
        response = yield agent.request(b"GET", b"http://10.79.0.2/file")
        body = yield readBody(response)
        self.assertEqual(body, data)
        yield port.stopListening()
        yield settle(0.2)
        # the endpoints' stacks went with their last user
        from vdetwist.stack.api import _shared

        self.assertEqual(_shared.get(reactor, {}), {})


    @defer.inlineCallbacks
    def test_oneHostPerAddress(self):
        """
        Endpoints naming the same network and address share one stack (so
        one MAC answers for the address); another address is another stack.
        """
        directory = tmpdir(self)
        sw = os.path.join(directory, "sw")
        hub = yield openStack(reactor, f"switch://{sw}", ip="10.79.0.1/24")
        self.addCleanup(hub.close)
        vnl = quoteStringArgument(f"vde://{sw}")
        ports = []
        for text in (f"vdestack:vnl={vnl}:ip=10.79.0.2/24:port=80",
                     f"vdestack:vnl={vnl}:ip=10.79.0.2/24:port=81",
                     f"vdestack:vnl={vnl}:ip=10.79.0.3/24:port=80"):
            port = yield serverFromString(reactor, text).listen(site(b"x"))
            ports.append(port)
        self.assertIs(ports[0].stack, ports[1].stack)
        self.assertIsNot(ports[0].stack, ports[2].stack)
        for port in ports:
            yield port.stopListening()
        yield settle(0.2)


class SlirpTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def fetchOverDhcp(self, data: bytes, host: str):
        """
        Serve C{data} on the host's 127.0.0.1 and fetch it as
        C{http://HOST:PORT/file} through a vdestack: client endpoint on
        slirp:// with ip=dhcp: fires with C{(the one stack, the agent)}.
        """
        from vdetwist.stack.api import _shared

        listening = reactor.listenTCP(0, site(data), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        agent = stackAgent(quoteStringArgument("slirp://"), "ip=dhcp")
        response = yield agent.request(
            b"GET", f"http://{host}:{listening.getHost().port}/file".encode())
        stacks = list(_shared[reactor].values())
        body = yield readBody(response)
        self.assertEqual(body, data)
        (stack,) = stacks
        return stack, agent

    @defer.inlineCallbacks
    def test_dhcpToHost(self):
        """
        A Twisted client on a vdestack: endpoint with ip=dhcp on slirp://
        gets 10.0.2.15 and fetches from an HTTP server on the host's
        127.0.0.1 through 10.0.2.2.
        """
        stack, _ = yield self.fetchOverDhcp(os.urandom(256 * 1024), "10.0.2.2")
        self.assertEqual(stack.addresses()[0], "10.0.2.15/24")
        self.assertEqual(stack.host.dhcp.stateName, "BOUND")
        yield stack.close()

    @defer.inlineCallbacks
    def test_dhcpResolvesNames(self):
        """
        On slirp:// with ip=dhcp, a client endpoint's host= name is
        resolved over the stack with the name server DHCP gave (slirp's
        10.0.2.3, relaying to the host's resolver: here a twisted.names
        server on a loopback address answering from a hosts file), and
        fetches from the host through the address it names; a name that
        does not resolve fails in one line naming it.
        """
        import random

        from twisted.names import dns, hosts
        from twisted.names import server as dnsServer

        address = f"127.53.{os.getpid() % 250}.{random.randint(1, 250)}"
        table = self.mktemp()
        with open(table, "w") as f:
            f.write("10.0.2.2 webhost.vdetwist.test\n")
        factory = dnsServer.DNSServerFactory(clients=[hosts.Resolver(file=table)])
        try:
            port = reactor.listenUDP(53, dns.DNSDatagramProtocol(factory), interface=address)
        except error.CannotListenError as e:
            raise SkipTest(f"cannot run a name server on port 53 (root needed): {e}")
        self.addCleanup(port.stopListening)
        resolv = self.mktemp()
        with open(resolv, "w") as f:
            f.write(f"nameserver {address}\n")
        os.environ["VDETWIST_RESOLV_CONF"] = resolv
        self.addCleanup(os.environ.pop, "VDETWIST_RESOLV_CONF", None)
        stack, agent = yield self.fetchOverDhcp(os.urandom(64 * 1024), "webhost.vdetwist.test")
        self.assertEqual(stack.host.nameServers(), [bytes([10, 0, 2, 3])])
        failed = yield self.assertFailure(
            agent.request(b"GET", b"http://nowhere.vdetwist.test/"), error.DNSLookupError)
        self.assertIn("'nowhere.vdetwist.test' does not resolve", str(failed))
        self.assertNotIn("\n", str(failed))
        yield stack.close()


class QemuTests(TestCase):
    """
    A QEMU guest's firmware (iPXE) fetches over HTTP from a stack: the
    guest, our slirp (DHCP and TFTP) and the stack are ports of the stack's
    own switch:// node, in this process.
    """

    timeout = 240

    @defer.inlineCallbacks
    def test_ipxeFetches(self):
        from tests.interop.test_qemu import BOOT_TIMEOUT, MAC, QemuGuest, requireQemu
        from tests.support import ourPlug

        qemu = requireQemu()
        directory = tmpdir(self)
        sock = os.path.join(directory, "sw")
        tftp = os.path.join(directory, "tftp")
        os.mkdir(tftp)
        with open(os.path.join(tftp, "boot.ipxe"), "w") as f:
            f.write("#!ipxe\necho vdestack: boot script from TFTP\n"
                    "chain http://10.0.2.50:8080/script?mac=${net0/mac}\n")
        stack = yield openStack(reactor, f"switch://{sock}", ip="10.0.2.50/24")
        self.addCleanup(stack.close)
        requests: list[bytes] = []

        class Script(resource.Resource):
            isLeaf = True

            def render_GET(self, request):
                requests.append(request.uri)
                return b"#!ipxe\necho vdestack: script over HTTP from the stack\nexit 1\n"

        port = stack.listenTCP(8080, server.Site(Script()))
        self.addCleanup(port.stopListening)
        slirp = ourPlug(self, "our vde_plug slirp://",
                        f'slirp:///tftp_path="{tftp}"/bootfile=boot.ipxe', f"vde://{sock}")
        guest = QemuGuest(self, qemu, sock, directory)
        yield until(lambda: requests, "the guest's HTTP request to the stack", BOOT_TIMEOUT,
                    procs=[slirp, guest], failIfEnded=True)
        mac = MAC.replace(":", "%3A")
        self.assertEqual(requests, [f"/script?mac={mac}".encode()])
        yield until(lambda: "script over HTTP from the stack" in guest.describe(),
                    "the guest to run the stack's script", 30)
        self.assertIn("10.0.2.15", stack.neighbours())
