"""
Every recipe of README.md and docs/ runs here as written, so none can rot:
the lines are read from the documents (see L{tests.recipes} for how they are
marked and what is substituted), each is run or started, what it promises is
checked with real plugs, and a test fails if a line of its recipe did not
run.  Recipes that need a tap, a second network namespace, fixed TCP ports,
host names or QEMU's default display run as root in a network namespace of
their own, and skip otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.recipes import (
    HOST_NAMES, NOT_RECIPES, Command, Process, RecipeRun, allBlocks, recipes)
from tests.support import (
    ROOT, TIMEOUT, ConsoleClient, frame, isListening, makeNamespace, ourPlug, records,
    requireCommand, requireTun, until, userName)
from tests.interop.test_endpointstrings import requireTLS
from vdetwist.wire.pcap import parseFile
from vdetwist.wire.stream import StreamDecoder
from vdetwist.testing import FrameCollector


def testName(recipe: str) -> str:
    return "test_" + recipe


def words(command: str) -> list[str]:
    """
    A command's words, without C{python3 -m} before C{pip} and pip's C{-q}.
    """
    found = [w for w in shlex.split(command, comments=True) if w != "-q"]
    return found[2:] if found[:3] == ["python3", "-m", "pip"] else found


class DocumentTests(SynchronousTestCase):
    """
    The documents and this module agree: every code block is a recipe or
    plainly not one, and every recipe has its test here.
    """

    def test_everyBlockIsARecipe(self) -> None:
        unmarked = [b.where() for b in allBlocks()
                    if b.name is None and b.language not in NOT_RECIPES]
        self.assertEqual(unmarked, [], "code blocks without <!-- recipe: NAME -->")

    def test_everyRecipeHasATest(self) -> None:
        names = recipes()
        missing = [n for n in names if not hasattr(RecipeTests, testName(n))]
        self.assertEqual(missing, [])
        orphans = [n[len("test_"):] for n in dir(RecipeTests)
                   if n.startswith("test_") and n[len("test_"):] not in names]
        self.assertEqual(orphans, [], "tests of recipes no document has")

    def test_parsing(self) -> None:
        found = recipes()
        self.assertEqual(found["tls"].source, "README.md")
        self.assertEqual(found["l2chat"].source, "docs/examples/l2chat.py")
        command = RecipeRun(self, found["tools"]).commands[2]
        self.assertEqual(command, Command("local", "vde_plug /tmp/sw = ssh host vde_plug /tmp/sw"))
        run = RecipeRun(self, found["tls"])
        self.assertEqual(run.commands[3].host, "host2")
        self.assertEqual(run.path("vde:///tmp/sw 'x=\"/srv/tftp\"' /var/run/x docs/a", "h"),
                         f"vde://{run.root}/h/tmp/sw 'x=\"{run.root}/h/srv/tftp\"' /var/run/x"
                         f" {ROOT}/docs/a")


class RecipeTests(TestCase):
    """
    One test per recipe, named after it.
    """

    def recipe(self, name: str, namespace: str | None = None) -> RecipeRun:
        """
        A run of recipe C{name}; C{namespace}: why it needs a network
        namespace of its own (root), if it does.
        """
        ns = None
        if namespace is not None:
            if os.geteuid() != 0:
                raise SkipTest(f"needs root: {namespace}, in a network namespace of its own")
            requireCommand("ip", "iproute2")
            ns = makeNamespace(self)
            hosts = os.path.join("/etc/netns", ns.name)
            os.makedirs(hosts)
            self.addCleanup(self._removeHosts, hosts)
            with open(os.path.join(hosts, "hosts"), "w") as f:
                f.write(f"127.0.0.1 localhost {' '.join(HOST_NAMES)}\n")
        return RecipeRun(self, recipes()[name], ns)

    @staticmethod
    def _removeHosts(path: str) -> None:
        os.unlink(os.path.join(path, "hosts"))
        os.rmdir(path)
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass  # (not empty: somebody else's namespaces)

    def plug(self, run: RecipeRun, path: str, host: str = "local"):
        """
        A vdetwist vde_plug on the switch at C{path} (as written in the
        recipe) on C{host}, in the recipe's namespace.
        """
        where = run.path(path, host)
        return ourPlug(self, f"vde_plug {where}", f"vde://{where}",
                       namespace=run.namespace.name if run.namespace else None)

    def switchAt(self, run: RecipeRun, path: str, host: str = "local"):
        """
        Set the scene: a switch at C{path} on C{host}, logging its ports.
        """
        process = run.background(Command(
            host, f"python -m twisted --log-format=text vde --switch {path} --rcfile="))
        self.waitSwitch(run, path, host)
        return process

    def assertJoined(self, run: RecipeRun, a: tuple[str, str], b: tuple[str, str]) -> None:
        """
        Frames cross between the switches at C{a} and C{b} (each C{(path,
        host)}), both ways.
        """
        one, two = self.plug(run, *a), self.plug(run, *b)
        for sender, receiver, n in ((one, two, 1), (two, one, 2)):
            def arrived() -> bool:
                sender.send(frame(n, src=bytes([2, 0, 0, 0, 0, n])))
                return frame(n, src=bytes([2, 0, 0, 0, 0, n])) in receiver.data()

            run.waitFor(arrived, f"a frame from {sender.name} to {receiver.name}", 30)
        one.stop()
        two.stop()

    def waitSwitch(self, run: RecipeRun, path: str, host: str = "local") -> None:
        ctl = os.path.join(run.path(path, host), "ctl")
        run.waitFor(lambda: os.path.exists(ctl), f"the switch at {path} on {host}", 30)

    # -- README.md

    def test_install(self) -> None:
        """
        The C{pip install} commands are what CI runs (C{.ci/run}, compared
        here: installing would change the code under test); C{twistd -n vde}
        runs as written, as root with a C{/run} of its own (it takes
        C{/var/run/vde.ctl}), leaving the machine's alone.
        """
        run = self.recipe("install", "twistd -n vde takes /var/run/vde.ctl")
        with open(os.path.join(ROOT, ".ci", "run")) as f:
            ci = [words(line) for line in f]
        (install, switch), (installTest, suite) = (
            [part.strip() for part in command.text.split("&&")] for command in run.commands)
        self.assertEqual(install, "pip install -e .")
        for command in (installTest, suite):
            n = len(words(command))
            self.assertIn(words(command), [line[:n] for line in ci], f"{command!r} is not in .ci/run")
        run.ran.update((0, 1))
        machine = os.path.exists("/run/vde.ctl")
        process = run.background(Command("local", f"mount -t tmpfs tmpfs /run && exec {switch}"))
        run.waitFor(lambda: "switch ready at /var/run/vde.ctl" in process.output(),
                    "the switch at its default place", 30)
        process.stop()
        self.assertEqual(os.path.exists("/run/vde.ctl"), machine)
        run.assertAllRan()

    def test_tls(self) -> None:
        """
        host2's tap joins host1's switch over TLS, host1's certificate
        checked: frames from the switch reach the tap.
        """
        requireTLS()
        requireTun()
        requireCommand("openssl", "openssl")
        run = self.recipe("tls", "a tap, port 5001 and the names host1 and host2")
        run.run(0)
        switch = run.start(1)
        self.waitSwitch(run, "/tmp/sw", "host1")
        run.waitFor(lambda: "accepting cables on ssl:5001" in switch.output(), "the TLS port")
        run.run(2)
        plug = run.start(3)
        run.waitFor(lambda: "is port 1" in switch.output(), "host2's cable")
        run.namespace.run(["ip", "link", "set", "tap0", "up"], check=True)
        sender = self.plug(run, "/tmp/sw", "host1")

        def received() -> int:
            out = run.namespace.run(["ip", "-s", "-j", "link", "show", "tap0"],
                                    check=True, capture_output=True).stdout
            return json.loads(out)[0]["stats64"]["rx"]["packets"]

        before = received()
        run.waitFor(lambda: sender.send(frame(1)) or received() > before,
                    "a frame from host1's switch on host2's tap0")
        self.assertNotIn("not checked", plug.output())
        run.assertAllRan()

    def test_console(self) -> None:
        """
        The console answers on stdout, the log is text on stderr, and the
        end of stdin ends the switch.
        """
        run = self.recipe("console")
        done = run.run(0, timeout=60)
        out, err = done.stdout.decode(), done.stderr.decode()
        self.assertIn("1000 Success", out)
        self.assertIn("VLAN 0005", out)
        self.assertIn("switch ready at", err)
        for line in err.splitlines():
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT", "not a text log line")
        run.assertAllRan()

    def test_capture(self) -> None:
        """
        C{vdecapture}: ten frames a plug sends are in the file, byte for
        byte; live, C{tcpdump} prints the next one.
        """
        requireCommand("tcpdump", "tcpdump")
        run = self.recipe("capture")
        run.start(0)
        self.waitSwitch(run, "/tmp/sw")
        mgmt = run.path("/tmp/sw.mgmt")
        run.waitFor(lambda: isListening(mgmt), "the console")
        sender = self.plug(run, "/tmp/sw")

        def capturing() -> bool:
            console = ConsoleClient(mgmt)
            try:
                return b"vdecapture" in console.cmd("port/print")
            finally:
                console.close()

        tofile = run.start(1)
        run.waitFor(capturing, "vdecapture to join")
        frames = [frame(n) for n in range(10)]
        sender.send(*frames)
        self.assertEqual(tofile.proc.wait(TIMEOUT), 0, tofile.describe())
        with open(run.path("/tmp/ten.pcap"), "rb") as f:
            self.assertEqual([r.data for r in parseFile(f.read())[1]], frames)
        live = run.start(2)
        run.waitFor(capturing, "vdecapture to join")
        sender.send(frame(42))
        run.waitFor(lambda: "0x88b5), length 100" in live.output(), "tcpdump to show the frame")
        run.assertAllRan()

    def test_web(self) -> None:
        """
        The switch serves its view on TCP and on a unix socket of mode 600:
        C{/metrics} counts a frame a client sent, C{/api/status} lists its
        port, for the name given with C{--web-host} too; another name is
        refused in one line.
        """
        requireCommand("curl", "curl")
        run = self.recipe("web", "port 8080")
        switch = run.start(0)
        self.waitSwitch(run, "/tmp/sw")
        run.waitFor(lambda: switch.output().count("web status on") == 2, "both web listeners")
        self.assertEqual(os.stat(run.path("/tmp/sw.web")).st_mode & 0o777, 0o600)
        sender = self.plug(run, "/tmp/sw")
        sender.send(frame(1))

        def counted() -> bool:
            metrics = run.run(1).stdout.decode()
            return 'vde_port_receive_frames_total{port="1"' in metrics and not re.search(
                r'(?m)^vde_port_receive_frames_total\{port="1",.*\} 0$', metrics)

        run.waitFor(counted, "the frame in /metrics")
        status = json.loads(run.run(2).stdout)
        self.assertEqual([p["port"] for p in status["ports"]], [1])
        self.assertEqual(status["ports"][0]["receiveFrames"], 1)
        named = json.loads(run.run(3).stdout)
        self.assertEqual([p["port"] for p in named["ports"]], [1])
        self.assertEqual(run.run(4).stdout.decode(),
                         "Host rebound.example is not served here: use the address the switch"
                         " listens on or localhost, or start it with --web-host rebound.example\n")
        run.assertAllRan()

    def test_tools(self) -> None:
        """
        The stand-alone switch; dpipe, ssh and cmd:// each join two
        switches (one at a time: together they would make a loop).
        """
        run = self.recipe("tools")
        run.start(0)
        self.waitSwitch(run, "/tmp/sw")
        self.switchAt(run, "/tmp/sw1")
        self.switchAt(run, "/tmp/sw2")
        cable = run.start(1)
        self.assertJoined(run, ("/tmp/sw1", "local"), ("/tmp/sw2", "local"))
        cable.stop()
        self.switchAt(run, "/tmp/sw", "host")
        for line in (2, 3):
            cable = run.start(line)
            self.assertJoined(run, ("/tmp/sw", "local"), ("/tmp/sw", "host"))
            cable.stop()
        listing = run.run(4).stdout.decode()
        for scheme in ("vde", "cmd", "endpoint", "slirp"):
            self.assertRegex(listing, rf"(?m)^\s*{scheme}\b")
        run.assertAllRan()

    async def test_openVNL(self) -> None:
        """
        The snippet, with C{myReceiver} a L{FrameCollector} and C{frame} a
        test frame: its frame reaches another port, and it receives.
        """
        run = self.recipe("openVNL")
        switch = self.switchAt(run, "/tmp/sw")
        other = self.plug(run, "/tmp/sw")
        await until(lambda: "port 1 connected" in switch.output(), "another port")
        receiver = FrameCollector()
        found = await self.execute(run, reactor=reactor, myReceiver=receiver, frame=frame(1))
        self.addCleanup(found["plug"].close)
        await until(lambda: frame(1) in other.data(), "the snippet's frame on the switch")
        other.send(frame(2))
        await until(lambda: frame(2) in receiver.frames, "a frame for the snippet")
        run.assertAllRan()

    async def test_vdeEndpoint(self) -> None:
        """
        A protocol connected to the snippet's endpoint talks to the other
        end of the ptp cable in the stream encoding.
        """
        run = self.recipe("vdeEndpoint")
        first = ourPlug(self, "vde_plug ptp://", run.path("ptp:///tmp/cable"))
        run.waitFor(lambda: os.path.exists(run.path("/tmp/cable")), "the cable's first end")
        endpoint = (await self.execute(run, reactor=reactor))["endpoint"]
        frames: list[bytes] = []
        errors: list[tuple[int, int]] = []

        class Collector(Protocol):
            def connectionMade(self) -> None:
                self.decoder = StreamDecoder(frames.append, lambda *error: errors.append(error))

            def dataReceived(self, data: bytes) -> None:
                self.decoder.feed(data)

        protocol = await endpoint.connect(Factory.forProtocol(Collector))
        self.addCleanup(protocol.transport.loseConnection)
        await until(lambda: os.path.exists(run.path("/tmp/cable") + "+"), "the second end")
        protocol.transport.write(records([frame(3)]))
        await until(lambda: frame(3) in first.data(), "the protocol's frame")
        first.send(frame(4))
        await until(lambda: frame(4) in frames, "a frame for the protocol")
        self.assertEqual(errors, [])
        run.assertAllRan()

    async def execute(self, run: RecipeRun, **names) -> dict:
        """
        Run a Python recipe as the body of a coroutine given C{names}: its
        local variables.
        """
        body = "\n".join("    " + run.path(line) for line in run.block.lines)
        namespace: dict = {}
        exec(f"async def recipe({', '.join(names)}):\n{body}\n    return locals()", namespace)
        run.ran.update(range(len(run.commands)))
        return await namespace["recipe"](**names)

    # -- docs/examples

    def test_l2chat(self) -> None:
        run = self.recipe("l2chat")
        alice = run.start(0, stdin=True)
        run.waitFor(lambda: os.path.exists(run.path("/tmp/chat")), "alice's end of the cable")
        bob = run.start(1, stdin=True)
        run.waitFor(lambda: os.path.exists(run.path("/tmp/chat") + "+"), "bob's end")
        bob.write(b"hello\n")
        run.waitFor(lambda: "bob: hello" in alice.output(), "alice hearing bob")
        alice.write(b"hi\n")
        run.waitFor(lambda: "alice: hi" in bob.output(), "bob hearing alice")
        run.assertAllRan()

    def test_switches(self) -> None:
        """
        In the foreground, then as a daemon: the two switches and their cable.
        """
        run = self.recipe("switches")
        foreground = run.start(0)
        for directory in ("/tmp/", "/run/vde/"):
            lan, dmz = (run.path(directory + name) for name in ("lan", "dmz"))
            run.waitFor(lambda: isListening(lan + ".mgmt") and isListening(dmz + ".mgmt"),
                        f"both switches in {directory}", 30)
            self.assertJoined(run, (directory + "lan", "local"), (directory + "dmz", "local"))
            if foreground.running():
                foreground.stop()
                os.makedirs(run.path("/run/vde/"), exist_ok=True)
                run.run(1)
        pidfile = os.path.join(run.host("local"), "twistd.pid")
        with open(pidfile) as f:
            pid = int(f.read())
        os.kill(pid, 15)
        run.waitFor(lambda: not os.path.exists(pidfile), "the daemon to end", 30)
        run.assertAllRan()

    # -- docs/qemu.md

    def qemu(self) -> str:
        return requireCommand("qemu-system-x86_64", "qemu-system-x86")

    def test_qemuSwitch(self) -> None:
        """
        A QEMU guest (a blank disk: it stays in its firmware) is a port,
        described as QEMU describes itself.
        """
        self.qemu()
        run = self.recipe("qemuSwitch", "QEMU's default display listens on 127.0.0.1:5900")
        open(os.path.join(run.host("local"), "guest.img"), "wb").truncate(1 << 20)
        run.start(0)
        mgmt = run.path("/tmp/sw.mgmt")
        run.waitFor(lambda: isListening(mgmt), "the switch's console", 30)
        run.start(1)
        console = ConsoleClient(mgmt)
        self.addCleanup(console.close)
        run.waitFor(lambda: f"QEMU user={userName()} pid=" in console.cmd("port/print").decode(),
                    "QEMU's port", 60)
        run.assertAllRan()

    def guest(self, run: RecipeRun, switch: str) -> None:
        """
        A stand-in guest on the switch: a namespace with a tap at 10.0.2.15
        whose port 22 answers an SSH banner.
        """
        requireTun()
        guest = makeNamespace(self)
        path = run.path(switch)
        plug = ourPlug(self, "the guest's vde_plug", f"vde://{path}", "tap://eth0",
                       namespace=guest.name)
        run.waitFor(lambda: guest.run(["ip", "link", "show", "eth0"],
                                      capture_output=True).returncode == 0, "the guest's tap")
        guest.run(["ip", "addr", "add", "10.0.2.15/24", "dev", "eth0"], check=True)
        guest.run(["ip", "link", "set", "eth0", "up"], check=True)
        guest.run(["ip", "route", "add", "default", "via", "10.0.2.2"], check=True)
        sshd = subprocess.Popen(
            guest.command(["python3", "-c", "import socket\ns = socket.create_server(('', 22))\n"
                           "while True:\n c, _ = s.accept(); c.sendall(b'SSH-2.0-guest\\r\\n'); c.close()"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (sshd.kill(), sshd.wait()))

    def banner(self, run: RecipeRun, index: int | None = None) -> str:
        """
        What the guest's sshd says through the forward, with the ssh of
        line C{index} (C{ssh -p 2222 user@localhost} if C{None}); C{""} if
        it cannot be reached yet.
        """
        try:
            if index is None:
                return run.shell(Command("local", "ssh -p 2222 user@localhost")).stdout.decode()
            return run.run(index, timeout=20).stdout.decode()
        except AssertionError:
            return ""

    def test_slirp(self) -> None:
        """
        The port forward reaches the guest's sshd (a stand-in guest).
        """
        run = self.recipe("slirp", "port 2222 and a guest namespace")
        self.switchAt(run, "/tmp/sw")
        self.guest(run, "/tmp/sw")
        run.start(0)
        run.waitFor(lambda: "SSH-2.0-guest" in self.banner(run, 1), "the guest's banner", 30)
        run.assertAllRan()

    def test_slirpSwitch(self) -> None:
        run = self.recipe("slirpSwitch", "port 2222 and a guest namespace")
        run.start(0)
        self.waitSwitch(run, "/tmp/sw")
        self.guest(run, "/tmp/sw")
        run.waitFor(lambda: "SSH-2.0-guest" in self.banner(run), "the guest's banner", 30)
        run.assertAllRan()

    def netboot(self, name: str) -> tuple[RecipeRun, Process]:
        """
        A run of recipe C{name}, which boots QEMU from C{/srv/tftp}: its
        C{boot.ipxe} fetches C{/booted} from the host's web server on port
        8000 (returned), through slirp.
        """
        from tests.interop.test_qemu import requireQemu

        requireQemu()
        run = self.recipe(name, "QEMU's default display listens on 127.0.0.1:5900")
        tftp = run.path("/srv/tftp")
        os.makedirs(tftp)
        with open(os.path.join(tftp, "boot.ipxe"), "w") as f:
            f.write("#!ipxe\nchain http://10.0.2.2:8000/booted\n")
        return run, run.background(Command("local", "python3 -m http.server 8000 --bind 127.0.0.1"))

    def waitBooted(self, run: RecipeRun, www: Process) -> None:
        from tests.interop.test_qemu import BOOT_TIMEOUT

        run.waitFor(lambda: "GET /booted" in www.output(), "the guest's request", BOOT_TIMEOUT)

    def test_netboot(self) -> None:
        """
        QEMU boots the script from the TFTP directory: it fetches a page
        from the host's loopback through slirp.
        """
        run, www = self.netboot("netboot")
        self.switchAt(run, "/tmp/sw")
        run.start(0)
        run.start(1)
        self.waitBooted(run, www)
        run.assertAllRan()

    def test_impairedLink(self) -> None:
        """
        QEMU boots through the filtered uplink; the filter's console shows
        its values and the guest's frames it carried both ways.  (The
        figures are measured in L{tests.interop.test_qemu_wirefilter}.)
        """
        from tests.interop.test_qemu_wirefilter import frameCounts
        from vdetwist.lab.console import PROMPT

        run, www = self.netboot("impairedLink")
        run.start(0)
        self.waitSwitch(run, "/tmp/sw")
        mgmt = run.path("/tmp/wf.mgmt")
        run.waitFor(lambda: isListening(mgmt), "the filter's console", 30)
        run.start(1)
        self.waitBooted(run, www)
        console = ConsoleClient(mgmt, prompt=PROMPT)
        self.addCleanup(console.close)
        shown = console.cmd("showinfo").decode()
        self.assertIn("Delay  L->R 100+0U   R->L 100+0U", shown)
        self.assertIn("Bandw  L->R 100000+0U   R->L 100000+0U", shown)
        for way, counts in frameCounts(shown).items():
            self.assertGreater(counts["delivered"], 10, f"{way}: {shown}")
        run.assertAllRan()

    def test_hostsTLS(self) -> None:
        requireTLS()
        requireCommand("openssl", "openssl")
        run = self.recipe("hostsTLS", "port 5001 and the names host1 and host2")
        run.run(0)
        server = run.start(1)
        run.waitFor(lambda: "accepting cables on ssl:5001" in server.output(), "the TLS port", 30)
        run.run(2)
        client = run.start(3)
        run.waitFor(lambda: "is port 1" in server.output(), "host2's cable", 30)
        self.assertJoined(run, ("/tmp/sw", "host1"), ("/tmp/sw", "host2"))
        self.assertNotIn("not checked", client.output())
        run.assertAllRan()

    def test_hostsSsh(self) -> None:
        run = self.recipe("hostsSsh")
        self.switchAt(run, "/tmp/sw", "host1")
        self.switchAt(run, "/tmp/sw", "host2")
        run.start(0)
        self.assertJoined(run, ("/tmp/sw", "host1"), ("/tmp/sw", "host2"))
        run.assertAllRan()

    def test_hostsVxvde(self) -> None:
        run = self.recipe("hostsVxvde", "IPv4 multicast on a loopback of its own")
        run.namespace.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
        run.namespace.run(["ip", "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)
        for line, host in ((0, "host1"), (1, "host2")):
            run.start(line)
            self.waitSwitch(run, "/tmp/sw", host)
        self.assertJoined(run, ("/tmp/sw", "host1"), ("/tmp/sw", "host2"))
        run.assertAllRan()


    # -- docs/vdestack.md

    def vdestackSite(self, name: str) -> None:
        """
        The site on the switch (served by the example program or by twistd
        web on a vdestack: endpoint) is what vdens's namespace fetches.
        """
        requireCommand("curl", "curl")
        unshare = requireCommand("unshare", "util-linux")
        if subprocess.run([unshare, "-Urn", "true"], capture_output=True).returncode != 0:
            raise SkipTest("vdens needs user namespaces, which this machine refuses")
        if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise SkipTest("vdens needs a read-write /dev/net/tun")
        run = self.recipe(name)
        www = run.path("/srv/www")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write("served by a vdestack host\n")
        run.start(0)
        self.waitSwitch(run, "/tmp/sw")
        run.start(1)
        fetched = run.run(2, timeout=120).stdout.decode()
        self.assertEqual(fetched, "served by a vdestack host\n")
        run.assertAllRan()

    def test_vdestackSite(self) -> None:
        self.vdestackSite("vdestackSite")

    def test_vdestackEndpoint(self) -> None:
        self.vdestackSite("vdestackEndpoint")
