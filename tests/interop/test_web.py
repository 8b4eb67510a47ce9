"""
Tests for L{vdetwist.web}: C{twistd vde --web ENDPOINT}.

  - the status dict, the Prometheus text (and its escaping) and the rates,
    from a node of in-memory plugs on a L{Clock};
  - the resources, served on a real loopback port in this process;
  - the real thing: C{python -m twisted vde --web tcp:0:...} with C and our
    C{vde_plug}s exchanging frames: C{/metrics} (read by Prometheus's own
    parser) and C{/api/status} match the console's C{port/allprint}, and
    headless Chromium renders the page, whose ports and counters the test
    reads from the DOM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from html.parser import HTMLParser
from typing import Optional

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.support import TIMEOUT, ConsoleClient, LogCapture, cPlug, frame, ourPlug, tmpdir
from tests.unit.test_console import FakeEndpoint, FakeServer
from tests.interop.test_messages import OneLineMixin, run
from tests.interop.test_service import SwitchProcess, assertEndpointList, parse
from tests.project.test_version import TWISTD
from vdetwist.node import MacTable, Node, SwitchEngine
from vdetwist.testing import MemoryPlug, plugPair
from vdetwist.vde2.interpreter import VdeConsole
from vdetwist.web.resources import WebStatus, hostAllowed, hostName
from vdetwist.web.status import RateHistory, escapeLabel, metricsText, switchStatus

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6
COUNTERS = {
    "vde_port_receive_frames_total": "receiveFrames",
    "vde_port_transmit_frames_total": "transmitFrames",
    "vde_port_receive_bytes_total": "receiveBytes",
    "vde_port_transmit_bytes_total": "transmitBytes",
    "vde_port_receive_drop_frames_total": "receiveDropFrames",
    "vde_port_transmit_drop_frames_total": "transmitDropFrames",
}


def eth(dst: bytes, src: bytes, size: int = 60) -> bytes:
    return dst + src + b"\x08\x00" + b"x" * (size - 14)


def parseMetrics(text: str) -> dict[tuple[str, tuple], float]:
    """
    C{text} read by Prometheus's own parser: (sample name, sorted labels)
    -> value.
    """
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise SkipTest("prometheus_client is not installed (pip install 'vdetwist[test]')")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def portSamples(metrics: dict, name: str) -> dict[int, float]:
    """
    The samples of the per-port counter C{name} by port number.
    """
    return {int(dict(labels)["port"]): value
            for (sample, labels), value in metrics.items() if sample == name}


def allprint(text: str) -> dict[int, dict[str, int]]:
    """
    The counters of each port in a C{port/allprint} answer.
    """
    ports: dict[int, dict[str, int]] = {}
    for block in re.split(r"(?m)^(?=Port \d+)", text)[1:]:
        number = int(block.split()[1])
        inn = re.search(r"IN:\s+pkts\s+(\d+)\s+bytes\s+(\d+)", block)
        out = re.search(r"OUT:\s+pkts\s+(\d+)\s+bytes\s+(\d+)", block)
        drop = re.search(r"DROP:\s+in\s+(\d+)\s+out\s+(\d+)", block)
        ports[number] = {
            "receiveFrames": int(inn[1]), "receiveBytes": int(inn[2]),
            "transmitFrames": int(out[1]), "transmitBytes": int(out[2]),
            "receiveDropFrames": int(drop[1]), "transmitDropFrames": int(drop[2]),
        }
    return ports


class Switch:
    """
    A switch of in-memory plugs on a L{Clock}, with its console.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.table = MacTable(self.clock, hashsize=16, expiretime=100, capacity=16, portLimit=2)
        self.node = Node(SwitchEngine(), self.clock, self.table, numports=8, firstPort=1,
                         keepInactivePorts=True)
        self.console = VdeConsole(self.node, self.clock, ctlDir="/tmp/sw", pid=4321)

    def plug(self, description: str, capacity: int = 64) -> MemoryPlug:
        plug = MemoryPlug(description, capacity)
        self.node.addPort(plug)
        return plug


class StatusTests(SynchronousTestCase):
    """
    L{switchStatus} and L{metricsText} show the very counters of
    C{port/allprint}.
    """

    def setUp(self) -> None:
        self.sw = Switch()
        self.a = self.sw.plug("alice")
        self.b = self.sw.plug("bob")
        # Bob's peer takes one frame and is paused: the rest is dropped
        # and counted (the port's DROP out).
        mine, self.peer = plugPair("carol", "carol's peer", capacity=1)
        self.peer.paused = True
        self.sw.node.addPort(mine)
        self.sw.node.setPortVlan(self.sw.node.getPort(3), 0)
        self.sw.node.createVlan(7)
        self.sw.node.addPortVlan(7, self.sw.node.getPort(2))
        self.a.inject(eth(BCAST, A, 100))
        self.b.inject(eth(A, B, 80))
        self.a.inject(eth(BCAST, A, 70))
        self.a.inject(b"short")          # too short: DROP in on port 1

    def test_status(self) -> None:
        """
        Every port as C{port/allprint} lists it, with its clients,
        VLANs and counters; the switch; the MAC table.
        """
        status = json.loads(json.dumps(switchStatus(self.sw.node, self.sw.console)))
        ports = {p["port"]: p for p in status["ports"]}
        self.assertEqual(sorted(ports), [1, 2, 3])
        printed = allprint(self.sw.console.execute("port/allprint")[0].decode())
        for number, counters in printed.items():
            for key, value in counters.items():
                self.assertEqual(ports[number][key], value, (number, key))
        self.assertEqual(ports[1]["receiveFrames"], 2)
        self.assertEqual(ports[1]["receiveBytes"], 170)
        self.assertEqual(ports[1]["receiveDropFrames"], 1)
        self.assertEqual(ports[3]["transmitFrames"], 2)
        self.assertEqual(ports[3]["transmitDropFrames"], 1)
        self.assertEqual(ports[1]["description"], "alice")
        self.assertEqual(ports[2]["taggedVlans"], [7])
        self.assertEqual(ports[2]["untaggedVlan"], 0)
        [endpoint] = ports[1]["endpoints"]
        self.assertEqual(endpoint["id"], self.sw.console.endpointId(self.a))
        self.assertEqual((endpoint["user"], endpoint["pid"]), (None, None))
        self.assertEqual(status["switch"]["portsInUse"], 3)
        self.assertEqual(status["switch"]["numports"], 8)
        self.assertEqual(status["switch"]["pid"], 4321)
        self.assertEqual(status["switch"]["vlans"], [0, 7])
        macs = {(e["mac"], e["port"]) for e in status["macTable"]["entries"]}
        self.assertEqual(macs, {("02:00:00:00:00:01", 1), ("02:00:00:00:00:02", 2)})
        self.assertEqual(status["macTable"]["size"], 2)
        self.assertEqual(status["macTable"]["evictions"], 0)

    def test_inactive(self) -> None:
        """
        A port whose client left stays listed, inactive, with its
        counters (as in C{port/allprint}), and is not in use.
        """
        self.a.close()
        status = switchStatus(self.sw.node, self.sw.console)
        port = status["ports"][0]
        self.assertEqual((port["port"], port["active"], port["description"]), (1, False, ""))
        self.assertEqual(port["receiveFrames"], 2)
        self.assertEqual(status["switch"]["portsInUse"], 2)

    def test_metrics(self) -> None:
        """
        Prometheus's parser reads the text: per-port counters labelled
        with the port and its description, the switch's gauges, the MAC
        table's evictions.
        """
        for n in range(3, 6):   # port 2 may hold 2 addresses: one evicted
            self.b.inject(eth(A, bytes([2, 0, 0, 0, 0, n])))
        metrics = parseMetrics(metricsText(self.sw.node, self.sw.console))
        status = switchStatus(self.sw.node, self.sw.console)
        for name, key in COUNTERS.items():
            self.assertEqual(portSamples(metrics, name),
                             {p["port"]: p[key] for p in status["ports"]}, name)
        labels = (("description", "alice"), ("port", "1"))
        self.assertEqual(metrics[("vde_port_receive_frames_total", labels)], 2)
        self.assertEqual(metrics[("vde_ports_in_use", ())], 3)
        self.assertEqual(metrics[("vde_ports", ())], 8)
        self.assertEqual(metrics[("vde_mac_table_entries", ())], 3)
        self.assertEqual(metrics[("vde_mac_table_capacity", ())], 16)
        self.assertEqual(metrics[("vde_mac_table_evictions_total", ())], 2)
        self.assertEqual(status["macTable"]["evictions"], 2)

    def test_escaping(self) -> None:
        """
        A description with a backslash, a double quote and a line feed is
        escaped as the text format says, and reads back as it was.
        """
        odd = 'lab "A"\\B\nnext'
        self.assertEqual(escapeLabel(odd), 'lab \\"A\\"\\\\B\\nnext')
        self.sw.console.describePlug(self.a, description=odd)
        text = metricsText(self.sw.node, self.sw.console)
        self.assertIn('vde_port_receive_frames_total{port="1",description="lab \\"A\\"\\\\B\\nnext"} 2',
                      text.splitlines())
        metrics = parseMetrics(text)
        self.assertEqual(metrics[("vde_port_receive_frames_total",
                                  (("description", odd), ("port", "1")))], 2)

    def test_clients(self) -> None:
        """
        Who runs a client is what the console's server says of it
        (L{IVdeClient}); a plug that only looks like one shows nobody.
        """
        server = FakeServer()
        console = VdeConsole(self.sw.node, self.sw.clock, server=server)
        client = server.client(6, "qemu", uid=0, pid=4242)
        lookalike = FakeEndpoint(7, "look-alike", uid=0, pid=99)
        self.sw.node.addPort(client)
        self.sw.node.addPort(lookalike)
        endpoints = {p["description"]: p["endpoints"][0]
                     for p in switchStatus(self.sw.node, console)["ports"]}
        self.assertEqual(endpoints["qemu"], {"id": 6, "module": "unix prog", "description": "qemu",
                                             "uid": 0, "user": "root", "pid": 4242})
        self.assertEqual(endpoints["look-alike"],
                         {"id": 1000, "module": "vdeplug", "description": "look-alike",
                          "uid": None, "user": None, "pid": None})

    def test_withoutConsole(self) -> None:
        """
        A node without a console (an application's own) shows its plugs'
        own descriptions.
        """
        status = switchStatus(self.sw.node)
        self.assertEqual([p["description"] for p in status["ports"]],
                         ["alice", "bob", "carol"])
        self.assertIn('description="bob"', metricsText(self.sw.node))


class RateHistoryTests(SynchronousTestCase):
    """
    L{RateHistory}: per-second rates between samples, bounded, forgetting
    ports that went away.
    """

    def test_rates(self) -> None:
        sw = Switch()
        a, b = sw.plug("a"), sw.plug("b")
        history = RateHistory(sw.node, sw.clock, interval=2, length=3)
        history.sample()
        self.assertEqual(history.series(1), [])
        for _ in range(4):
            a.inject(eth(BCAST, A, 100))
        sw.clock.advance(2)
        history.sample()
        self.assertEqual(history.series(1), [(2.0, 0.0, 200.0, 0.0)])
        self.assertEqual(history.series(2), [(0.0, 2.0, 0.0, 200.0)])
        status = switchStatus(sw.node, sw.console, history)
        self.assertEqual(status["ports"][1]["rates"],
                         {"receiveFrames": 0.0, "transmitFrames": 2.0,
                          "receiveBytes": 0.0, "transmitBytes": 200.0})
        self.assertEqual((status["interval"], status["historyLength"]), (2, 3))
        # A counter reset counts from zero.
        sw.console.execute("port/resetcounter 1")
        a.inject(eth(BCAST, A, 100))
        sw.clock.advance(2)
        history.sample()
        self.assertEqual(history.series(1)[-1], (0.5, 0.0, 50.0, 0.0))
        for _ in range(3):
            sw.clock.advance(2)
            history.sample()
        self.assertEqual(len(history.series(1)), 3)
        sw.node.removePort(sw.node.getPort(2))
        history.sample()
        self.assertEqual(history.series(2), [])
        self.assertNotIn(2, history._last)


class _Parser(HTMLParser):
    """
    The page's port rows: C{data-port} -> {C{data-field}: the cell's
    C{data-value}, else its text}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[int, dict[str, str]] = {}
        self._port: Optional[int] = None
        self._field: Optional[str] = None
        self._depth = 0

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "tr" and "data-port" in attrs:
            self._port = int(attrs["data-port"])
            self.ports[self._port] = {}
        elif self._port is not None and "data-field" in attrs and self._field is None:
            self._field = attrs["data-field"]
            self._depth = 0
            value = attrs.get("data-value")
            self.ports[self._port][self._field] = value if value is not None else ""
            self._fromText = value is None
        elif self._field is not None:
            self._depth += 1

    def handle_endtag(self, tag) -> None:
        if self._field is not None:
            if self._depth == 0:
                self._field = None
            else:
                self._depth -= 1
        elif tag == "tr":
            self._port = None

    def handle_data(self, data) -> None:
        if self._field is not None and self._fromText:
            self.ports[self._port][self._field] += data


def renderedPorts(dom: str) -> dict[int, dict[str, str]]:
    parser = _Parser()
    parser.feed(dom)
    return parser.ports


def fetch(url: str, method: str = "GET") -> tuple[int, dict, bytes]:
    """
    C{(status, headers, body)} of a request (blocking: for a server in
    another process).
    """
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class ResourceTests(TestCase):
    """
    The resources of L{WebStatus}, served on a loopback port in this
    process, read with Twisted's own HTTP client.
    """

    async def test_served(self) -> None:
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.web.client import Agent, readBody

        sw = Switch()
        plug = sw.plug("alice")
        plug.inject(eth(BCAST, A))
        web = WebStatus(sw.node, sw.console, reactor, interval=0.5)
        web.start()
        self.addCleanup(web.stop)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(web.site)
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}".encode()
        agent = Agent(reactor)

        async def get(path: bytes, method: bytes = b"GET"):
            response = await agent.request(method, base + path)
            return response, await readBody(response)

        response, body = await get(b"/api/status")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(json.loads(body)["ports"][0]["receiveFrames"], 1)
        response, body = await get(b"/metrics")
        self.assertIn(b"version=0.0.4", response.headers.getRawHeaders(b"content-type")[0])
        self.assertEqual(portSamples(parseMetrics(body.decode()),
                                     "vde_port_receive_frames_total"), {1: 1})
        response, body = await get(b"/")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/html; charset=utf-8"])
        self.assertIn(b'fetch("api/status"', body)
        self.assertNotIn(b"http://", body.replace(b"http://www.w3.org/2000/svg", b""))
        # Read-only: nothing but GET and HEAD (405 Not Allowed; 501 Not
        # Implemented for methods twisted.web does not serve at all).
        for method in (b"POST", b"PUT", b"DELETE"):
            response, _ = await get(b"/api/status", method)
            self.assertIn(response.code, (405, 501), method)
        response, _ = await get(b"/api/other")
        self.assertEqual(response.code, 404)
        response, body = await get(b"/metrics", b"HEAD")
        self.assertEqual((response.code, body), (200, b""))

    async def test_hosts(self) -> None:
        """
        Only requests for the address the view listens on, C{localhost} and
        the names given are answered; others get 421 and one line, and each
        such name is logged once.
        """
        from twisted.internet.endpoints import TCP4ServerEndpoint
        from twisted.web.client import Agent, readBody
        from twisted.web.http_headers import Headers

        sw = Switch()
        web = WebStatus(sw.node, sw.console, reactor, hosts=["Sw.Example"])
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(web.site)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        agent = Agent(reactor)
        logs = LogCapture(self)

        async def get(host: str, path: bytes = b"/api/status"):
            response = await agent.request(
                b"GET", f"http://127.0.0.1:{number}".encode() + path,
                Headers({b"host": [host.encode()]}))
            return response.code, await readBody(response)

        for host in (f"127.0.0.1:{number}", "localhost", f"sw.example:{number}", "SW.EXAMPLE."):
            code, body = await get(host)
            self.assertEqual(code, 200, host)
            self.assertEqual(json.loads(body)["ports"], [])
        for path in (b"/", b"/metrics", b"/api/status", b"/nothing"):
            code, body = await get(f"rebound.example:{number}", path)
            self.assertEqual((code, body), (421, (
                b"Host rebound.example is not served here: use the address the switch listens"
                b" on or localhost, or start it with --web-host rebound.example\n")))
        self.assertEqual(logs.text().count("refused a request for host rebound.example"), 1)


class HostTests(SynchronousTestCase):
    """
    L{hostName} and L{hostAllowed}: which C{Host} headers the view answers.
    """

    def test_hostName(self) -> None:
        for header, name in [
            (b"Sw.Example.:8080", "sw.example"), (b"127.0.0.1", "127.0.0.1"),
            (b"[::1]:8080", "::1"), (b"[fe80::1]", "fe80::1"), (b"localhost:x", "localhost:x"),
            (None, None),
        ]:
            self.assertEqual(hostName(header), name, header)

    def test_allowed(self) -> None:
        local4, local6 = IPv4Address("TCP", "127.0.0.1", 8080), IPv6Address("TCP", "::1", 8080)
        mapped = IPv6Address("TCP", "::ffff:192.0.2.7", 8080)
        unix = UNIXAddress(b"/tmp/sw.web")
        names = frozenset({"sw.example"})
        for name, local in [(None, local4), ("127.0.0.1", local4), ("localhost", local4),
                            ("a.localhost", unix), ("::1", local6), ("192.0.2.7", mapped),
                            ("sw.example", local4), ("localhost", unix)]:
            self.assertTrue(hostAllowed(name, local, names), (name, local))
        for name, local in [("evil.example", local4), ("10.0.0.1", local4), ("::1", local4),
                            ("127.0.0.1", unix), ("localhost.evil.example", local6),
                            ("sw.example.evil", local4)]:
            self.assertFalse(hostAllowed(name, local, names), (name, local))


class OptionsTests(SynchronousTestCase):
    def test_webHost(self) -> None:
        options = parse("--web", "tcp:8080", "--web-host", "sw.example", "--web-host", "b")
        self.assertEqual(options["web-host"], ["sw.example", "b"])
        with self.assertRaises(usage.UsageError) as caught:
            parse("--web-host", "sw.example")
        self.assertEqual(str(caught.exception), "--web-host is for --web: add --web ENDPOINT")
        with self.assertRaises(usage.UsageError) as caught:
            parse("--web", "tcp:8080", "--web-host", "http://sw.example/")
        self.assertEqual(str(caught.exception),
                         "--web-host 'http://sw.example/': give a host name, e.g. sw.example")

    def test_options(self) -> None:
        assertEndpointList(self, "web", "tcp:8080:interface=127.0.0.1", "unix:/tmp/w:mode=600")


class BusyPortTests(OneLineMixin, SynchronousTestCase):
    def test_busyPort(self) -> None:
        """
        A C{--web} port in use fails the start in one line naming it.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        work = tmpdir(self)
        web = f"tcp:{port}:interface=127.0.0.1"
        result = run([*TWISTD, "-n", "--pidfile=", "vde", "--switch", os.path.join(work, "sw"),
                      "--rcfile=", "--web", web], cwd=work)
        self.assertOneLine(
            result, f"twistd vde: --web {web}: cannot listen on 127.0.0.1:{port}: Address "
            "already in use (another program uses it: stop it or choose another)")
        self.assertFalse(os.path.exists(os.path.join(work, "sw")))


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise SkipTest("no headless browser: apt-get install chromium")


class ProcessTests(SynchronousTestCase):
    """
    C{python -m twisted vde --web tcp:0:interface=127.0.0.1} with real
    clients exchanging frames.
    """

    def setUp(self) -> None:
        self.switch = SwitchProcess(self, "--web", "tcp:0:interface=127.0.0.1")
        found: list[str] = []

        def url() -> bool:
            found[:] = re.findall(r"web status on \S+: (http://\S+/)", self.switch.log())
            return bool(found)

        self.switch.waitFor(url, "the web port in the log")
        self.url = found[0]
        path = f"vde://{self.switch.path}"
        self.c = cPlug(self, "C vde_plug", path)
        self.ours = ourPlug(self, "our vde_plug", path)
        self.switch.waitFor(lambda: self.switch.log().count("connected") >= 2, "two clients")
        # Frames both ways, a broadcast and a unicast each.
        self.c.send(frame(1, 100, src=A), frame(2, 200, src=A))
        self.ours.waitFor(lambda: len(self.ours.data()) >= 2, "C's frames at ours")
        self.ours.send(frame(3, 300, src=B, dst=A))
        self.c.waitFor(lambda: len(self.c.data()) >= 1, "our frame at C")

    def allprint(self) -> dict[int, dict[str, int]]:
        console = ConsoleClient(self.switch.mgmt)
        try:
            return allprint(console.cmd("port/allprint").decode())
        finally:
            console.close()

    def test_metricsAndStatus(self) -> None:
        """
        C{/metrics} and C{/api/status} say what C{port/allprint} says;
        neither takes anything but GET.
        """
        printed = self.allprint()
        self.assertEqual(sorted(printed), [1, 2])
        self.assertEqual(printed[1]["receiveFrames"] + printed[2]["receiveFrames"], 3)
        code, headers, body = fetch(self.url + "metrics")
        self.assertEqual(code, 200)
        metrics = parseMetrics(body.decode())
        for name, key in COUNTERS.items():
            self.assertEqual(portSamples(metrics, name),
                             {n: c[key] for n, c in printed.items()}, name)
        self.assertEqual(metrics[("vde_ports_in_use", ())], 2)
        self.assertEqual(metrics[("vde_mac_table_entries", ())], 2)
        status = json.loads(fetch(self.url + "api/status")[2])
        for port in status["ports"]:
            for key in COUNTERS.values():
                self.assertEqual(port[key], printed[port["port"]][key])
            [endpoint] = port["endpoints"]
            # Peer credentials: the client processes, run by this user.
            self.assertIn(endpoint["pid"], (self.c.pid, self.ours.pid))
            self.assertEqual(endpoint["uid"], os.getuid())
        self.assertEqual(fetch(self.url + "metrics", "POST")[0], 405)

    def test_browser(self) -> None:
        """
        Headless Chromium renders the page, which fetched the state by
        itself: its port rows show the console's counters.  A screenshot
        of it is taken too.
        """
        browser = chromium()
        printed = self.allprint()
        profile = tmpdir(self, "vt-chromium-")
        argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
        ran = subprocess.run(argv + ["--dump-dom", self.url], capture_output=True,
                             timeout=TIMEOUT * 8, env={**os.environ, "HOME": profile})
        dom = ran.stdout.decode("utf-8", "replace")
        ports = renderedPorts(dom)
        self.assertEqual(sorted(ports), [1, 2], dom[-3000:] + ran.stderr.decode()[-2000:])
        for number, counters in printed.items():
            for key, value in counters.items():
                self.assertEqual(int(ports[number][key]), value, (number, key))
        descriptions = " ".join(p["clients"] for p in ports.values())
        self.assertIn(f"pid {self.c.pid}", descriptions)
        self.assertIn(f"pid {self.ours.pid}", descriptions)
        self.assertIn("live, updated", dom)
        screenshot = os.path.join(profile, "page.png")
        subprocess.run(argv + [f"--screenshot={screenshot}", "--window-size=1200,900", self.url],
                       capture_output=True, timeout=TIMEOUT * 8, env={**os.environ, "HOME": profile})
        self.assertGreater(os.path.getsize(screenshot), 10000)
