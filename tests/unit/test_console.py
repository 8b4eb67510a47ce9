"""
Tests for L{vdetwist.vde2.interpreter} and L{vdetwist.vde2.console}:
vde_switch's management console run against a L{Node} with in-memory plugs
(the interpreter alone, and its sessions).  Expected outputs are the byte-exact
formats of vde_switch 2.3.2 (spec: netnode-hub-switch.md B.5, B.6, and
transcripts captured from the installed switch), except where the module
documents a deliberate difference.
"""

import errno
import fcntl
import os
import pwd
import select

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import SlowPeerTransport, until

from zope.interface import implementer
from zope.interface.verify import verifyObject

from vdetwist.interfaces import IVdeClient, IVdeServer
from vdetwist.node import HubEngine, MacTable, Node, SwitchEngine
from vdetwist.testing import MemoryPlug
from vdetwist.vde2.console import (
    STALL_TIMEOUT,
    STALLED_DEBUG_LIMIT,
    ConsoleFactory,
    StdioConsoleProtocol,
    serveStdio,
)
from vdetwist.vde2.interpreter import (
    DATA_HEADER,
    PROMPT,
    Reply,
    VdeConsole,
    atoi,
    scanInts,
    statusLine,
)

A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6
OK = b"1000 Success\n"
MAC = bytes.fromhex("00ff01020304")


def eth(dst, src, size=60, ethertype=b"\x88\xb5"):
    return dst + src + ethertype + b"\0" * (size - 14)


def data(*lines):
    """
    A DATA frame with C{lines}, as bytes.
    """
    return (DATA_HEADER + "".join(l + "\n" for l in lines) + ".\n").encode()


def status(code):
    return statusLine(code).encode()


class DroppingPlug(MemoryPlug):
    """
    A plug whose network refuses everything sent.
    """

    def send(self, frame):
        self.stats.dropped += 1


@implementer(IVdeServer)
class FakeServer:
    """
    Stands in for L{vdetwist.vde2.server.VdeServer}.
    """

    def __init__(self):
        self.endpoints = {}
        self.closed = []
        self.accessPolicy = None

    def client(self, endpointId, description, uid=0, pid=None):
        """
        A new client's endpoint (not yet a port of the node).
        """
        endpoint = self.endpoints[endpointId] = FakeEndpoint(endpointId, description, uid, pid)
        return endpoint

    def clientOf(self, plug):
        return plug if plug in self.endpoints.values() else None

    def closeEndpoint(self, endpointId):
        self.closed.append(endpointId)
        endpoint = self.endpoints.pop(endpointId, None)
        if endpoint is None:
            return False
        endpoint.close()
        return True


@implementer(IVdeClient)
class FakeEndpoint(MemoryPlug):
    """
    A plug that looks like a vde2 client's endpoint.
    """

    def __init__(self, endpointId, description, uid=0, pid=None):
        super().__init__(description)
        self.endpointId = endpointId
        self.uid = uid
        self.pid = pid


def makeSwitch(numports=8, hub=False, server=None, **kwargs):
    """
    A node and its console, for a L{FakeServer} (a new one if C{server} is
    C{None}).
    """
    if server is None:
        server = FakeServer()
    clock = Clock()
    clock.advance(1000)
    table = MacTable(clock, hashsize=128, expiretime=100, minPersistence=3, capacity=4096)
    node = Node(
        HubEngine() if hub else SwitchEngine(), clock, table,
        numports=numports, keepInactivePorts=True,
    )
    console = VdeConsole(
        node, clock, server=server, ctlDir="/tmp/t/sw", mgmtPath="/tmp/t/mgmt",
        macaddr=MAC, pid=4242, **kwargs,
    )
    return clock, node, console


class HelperTests(SynchronousTestCase):
    def test_atoi(self):
        self.assertEqual(atoi(""), 0)
        self.assertEqual(atoi("  12x"), 12)
        self.assertEqual(atoi("-3"), -3)
        self.assertEqual(atoi("abc"), 0)
        self.assertEqual(atoi("010"), 10)

    def test_scanInts(self):
        """
        C{sscanf("%i %i")}: hexadecimal and octal prefixes, stops at the
        first failure.
        """
        self.assertEqual(scanInts("1 5", 2), [1, 5])
        self.assertEqual(scanInts("0x1 010 junk", 2), [1, 8])
        self.assertEqual(scanInts("1", 2), [1])
        self.assertEqual(scanInts("x 1", 2), [])
        self.assertEqual(scanInts(" -2\t7", 2), [-2, 7])

    def test_statusLine(self):
        self.assertEqual(statusLine(0), "1000 Success\n")
        self.assertEqual(statusLine(errno.EINVAL), "1022 Invalid argument\n")
        self.assertEqual(statusLine(errno.ENXIO), "1006 No such device or address\n")
        self.assertEqual(statusLine(errno.ENOSYS), "1038 Function not implemented\n")
        self.assertEqual(statusLine(errno.EADDRINUSE), "1098 Address already in use\n")


class ConsoleTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock, self.node, self.console = makeSwitch()

    def cmd(self, line):
        """
        The console's answer to C{line}.
        """
        return self.console.execute(line)[0]

    def addPlugs(self, *descriptions):
        plugs = [MemoryPlug(d) for d in descriptions]
        for p in plugs:
            self.node.addPort(p)
        return plugs


class InterpreterTests(ConsoleTestCase):
    """
    L{VdeConsole.run}: a command line in, a L{Reply} out, with no session
    and no transport.
    """

    def test_reply(self):
        self.assertEqual(self.console.run("vlan/create 5"), Reply(OK))
        self.assertEqual(
            self.console.run("port/print 9"),
            Reply(data() + status(errno.EINVAL), errno.EINVAL, os.strerror(errno.EINVAL)),
        )
        self.assertEqual(
            self.console.run("nosuch"),
            Reply(status(errno.ENOSYS), errno.ENOSYS, "no such command"),
        )
        self.assertEqual(self.console.run(" # a comment"), Reply(b""))

    def test_sessionActions(self):
        """
        C{logout} and C{shutdown} end the session; C{shutdown} is refused
        when the switch cannot be shut down from the console.
        """
        self.assertEqual(self.console.run("logout"), Reply(b"9999 END OF SESSION", action="logout"))
        self.assertEqual(self.console.run("shutdown").status, errno.EPERM)
        self.console.shutdown = lambda: None
        self.assertEqual(self.console.run("shutdown").action, "shutdown")

    def test_problemInWords(self):
        """
        A command failing with a L{VdeError} says why in the reply.
        """
        reply = self.console.run("pdump/filename /nonexistent-dir-xyz/dump.cap")
        self.assertEqual(reply.status, errno.ENOENT)
        self.assertIn("/nonexistent-dir-xyz/dump.cap", reply.problem)

    def test_debugNeedsOutput(self):
        """
        A session without output (a script at start) cannot ask for debug
        lines, as in vde_switch.
        """
        self.assertEqual(self.console.run("debug/add port").status, errno.EINVAL)

    def test_server(self):
        """
        Only the server's clients are shown as vde2 clients (with their id
        and user); a plug with look-alike attributes is not one.
        """
        server = self.console.server
        verifyObject(IVdeServer, server)
        client = server.client(6, "client", uid=0)
        verifyObject(IVdeClient, client)
        lookalike = FakeEndpoint(7, "look-alike", uid=0)
        self.node.addPort(client)
        self.node.addPort(lookalike)
        out = self.cmd("port/print").decode()
        self.assertIn("  -- endpoint ID 0006 module unix prog   : client\n", out)
        self.assertIn("  -- endpoint ID 1000 module vdeplug     : look-alike\n", out)
        self.assertEqual(out.count("Current User: root"), 1)


class LineTests(ConsoleTestCase):
    def test_unknown(self):
        self.assertEqual(self.cmd("bogus"), b"1038 Function not implemented\n")

    def test_menuHeaderIsNotACommand(self):
        self.assertEqual(self.cmd("port"), status(errno.ENOSYS))
        self.assertEqual(self.cmd("ds"), status(errno.ENOSYS))

    def test_emptyAndComment(self):
        self.assertEqual(self.console.execute(""), (b"", None))
        self.assertEqual(self.console.execute("   "), (b"", None))
        self.assertEqual(self.console.execute("# port/print"), (b"", None))

    def test_leadingBlanks(self):
        self.assertEqual(self.cmd(" \t port/showinfo"), self.cmd("port/showinfo"))

    def test_prefixMatch(self):
        """
        The first command whose path is a prefix of the line runs:
        C{helpfoo} is C{help} limited to C{foo} (only the header).
        """
        self.assertEqual(
            self.cmd("helpfoo"),
            data(
                "COMMAND PATH       SYNTAX          HELP",
                "------------       --------------  ------------",
            )
            + OK,
        )

    def test_help(self):
        out = self.cmd("help")
        lines = out.decode().splitlines()
        self.assertEqual(lines[0], "0000 DATA END WITH '.'")
        self.assertEqual(lines[1], "COMMAND PATH       SYNTAX          HELP")
        self.assertIn("ds                 ============    DATA SOCKET MENU", lines)
        self.assertIn("help               [arg]           Help (limited to arg when specified)", lines)
        self.assertIn("port/print         [N]             print the port/endpoint table", lines)
        self.assertIn("vlan/create        N               create the VLAN with tag N", lines)
        self.assertEqual(lines[-2:], [".", "1000 Success"])

    def test_helpPrefix(self):
        lines = self.cmd("help hash").decode().splitlines()[3:-2]
        self.assertEqual(
            lines,
            [
                "hash               ============    HASH TABLE MENU",
                "hash/showinfo                      show hash info",
                "hash/setsize       N               change hash size",
                "hash/setgcint      N               change garbage collector interval",
                "hash/setexpire     N               change hash entries expire time",
                "hash/setminper     N               minimum persistence time",
                "hash/print                         print the hash table",
                "hash/find          MAC [VLAN]      MAC lookup",
                # Ours, after vde_switch's.
                "hash/setportmax    N               max addresses a port may hold (0=no limit)",
            ],
        )

    def test_showinfo(self):
        self.clock.advance(7.5)
        self.assertEqual(
            self.cmd("showinfo"),
            data(
                self.console.versionLine,
                self.console.creditLine,
                "",
                "pid 4242 MAC 00:ff:01:02:03:04 uptime 7",
                "mgmt /tmp/t/mgmt perm 0600",
            )
            + OK,
        )
        self.assertTrue(self.console.versionLine.startswith("VDE switch V.2.3.2"))

    def test_dsShowinfo(self):
        self.assertEqual(
            self.cmd("ds/showinfo"), data("ctl dir /tmp/t/sw", "std mode 0600") + OK
        )

    def test_randomMac(self):
        clock = Clock()
        node = Node(SwitchEngine(), clock)
        console = VdeConsole(node, clock)
        self.assertEqual(console.macaddr[:2], b"\x00\xff")
        self.assertEqual(len(console.macaddr), 6)

    def test_logoutShutdown(self):
        self.assertEqual(self.console.execute("logout"), (b"9999 END OF SESSION", "logout"))
        # No shutdown callable: refused.
        self.assertEqual(self.console.execute("shutdown"), (status(errno.EPERM), None))
        self.console.shutdown = lambda: None
        self.assertEqual(
            self.console.execute("shutdown"), (b"9999 END OF SESSION", "shutdown")
        )


class PortTests(ConsoleTestCase):
    def test_showinfo(self):
        self.assertEqual(
            self.cmd("port/showinfo"), data("Numports=8", "HUB=false", "counters=true") + OK
        )

    def test_sethub(self):
        self.assertEqual(self.cmd("port/sethub 1"), OK)
        self.assertIsInstance(self.node.engine, HubEngine)
        self.assertIn(b"HUB=true", self.cmd("port/showinfo"))
        self.assertEqual(self.cmd("port/sethub 0"), OK)
        self.assertIsInstance(self.node.engine, SwitchEngine)

    def test_printEmpty(self):
        self.assertEqual(self.cmd("port/print"), data() + OK)
        self.assertEqual(self.cmd("port/allprint"), data() + OK)

    def test_print(self):
        """
        vde_switch's port listing, plus the DROP line.
        """
        a, b = self.addPlugs("plug-a", "plug-b")
        a.inject(eth(BCAST, A))
        a.inject(b"short")
        self.assertEqual(
            self.cmd("port/print"),
            data(
                "Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable",
                " Current User: NONE Access Control: (User: NONE - Group: NONE)",
                " IN:  pkts          1          bytes                   60",
                " OUT: pkts          0          bytes                    0",
                " DROP: in          1          out          0",
                "  -- endpoint ID 1000 module vdeplug     : plug-a",
                "Port 0002 untagged_vlan=0000 ACTIVE - Unnamed Allocatable",
                " Current User: NONE Access Control: (User: NONE - Group: NONE)",
                " IN:  pkts          0          bytes                    0",
                " OUT: pkts          1          bytes                   60",
                " DROP: in          0          out          0",
                "  -- endpoint ID 1001 module vdeplug     : plug-b",
            )
            + OK,
        )

    def test_outDropped(self):
        self.addPlugs("plug-a")
        slow = DroppingPlug("slow")
        self.node.addPort(slow)
        a = self.node.getPort(1).endpoints[0]
        for _ in range(3):
            a.inject(eth(BCAST, A))
        self.assertIn(b" DROP: in          0          out          3\n", self.cmd("port/print 2"))

    def test_vde2Endpoint(self):
        """
        A vde2 client's endpoint shows its id, C{unix prog}, its
        description and its user.
        """
        ep = self.console.server.client(6, "vdeplug: user=root pid=1", uid=0)
        self.node.addPort(ep)
        out = self.cmd("port/print 1").decode()
        self.assertIn(" Current User: root Access Control:", out)
        self.assertIn("  -- endpoint ID 0006 module unix prog   : vdeplug: user=root pid=1\n", out)

    def test_describePlug(self):
        plug = MemoryPlug("whatever")
        self.console.describePlug(plug, "tuntap", "tap://tap0")
        self.node.addPort(plug)
        self.assertIn(
            b"  -- endpoint ID 1000 module tuntap      : tap://tap0\n", self.cmd("port/print")
        )

    def test_printOne(self):
        self.addPlugs("plug-a")
        self.assertTrue(self.cmd("port/print 1").startswith(data()[:-2]))
        self.assertEqual(self.cmd("port/print 3"), data() + status(errno.ENXIO))
        self.assertEqual(self.cmd("port/print 0"), data() + status(errno.ENXIO))
        self.assertEqual(self.cmd("port/print x"), data() + status(errno.ENXIO))
        self.assertEqual(self.cmd("port/print 8"), data() + status(errno.EINVAL))
        self.assertEqual(self.cmd("port/print -1"), data() + status(errno.EINVAL))

    def test_inactive(self):
        """
        A port whose endpoint left is INACTIVE: only C{allprint} shows it,
        with its counters and no current user.
        """
        ep = self.console.server.client(6, "client", uid=0)
        self.node.addPort(ep)
        ep.inject(eth(BCAST, A))
        ep.close()
        self.assertEqual(self.cmd("port/print"), data() + OK)
        self.assertEqual(self.cmd("port/print 1"), data() + status(errno.ENXIO))
        self.assertEqual(
            self.cmd("port/allprint"),
            data(
                "Port 0001 untagged_vlan=0000 INACTIVE - Unnamed Allocatable",
                " Current User: NONE Access Control: (User: NONE - Group: NONE)",
                " IN:  pkts          1          bytes                   60",
                " OUT: pkts          0          bytes                    0",
                " DROP: in          0          out          0",
            )
            + OK,
        )

    def test_createRemove(self):
        self.assertEqual(self.cmd("port/create 5"), OK)
        self.assertEqual(self.cmd("port/create 5"), status(errno.EEXIST))
        self.assertEqual(self.cmd("port/create 9"), status(errno.EINVAL))
        self.assertEqual(
            self.cmd("port/allprint 5"),
            data(
                "Port 0005 untagged_vlan=0000 INACTIVE - NOT Unnamed Allocatable",
                " Current User: NONE Access Control: (User: NONE - Group: NONE)",
                " IN:  pkts          0          bytes                    0",
                " OUT: pkts          0          bytes                    0",
                " DROP: in          0          out          0",
            )
            + OK,
        )
        self.assertEqual(self.cmd("port/createauto"), data("Port 0001") + OK)
        self.assertEqual(self.cmd("port/createauto"), data("Port 0002") + OK)
        self.assertEqual(self.cmd("port/remove 5"), OK)
        self.assertEqual(self.cmd("port/remove 5"), status(errno.ENXIO))
        self.assertEqual(self.cmd("port/remove 9"), status(errno.EINVAL))
        self.assertIsNone(self.node.getPort(5))

    def test_removeActive(self):
        self.addPlugs("a")
        self.assertEqual(self.cmd("port/remove 1"), status(errno.EADDRINUSE))

    def test_allocatable(self):
        """
        A port made with port/create is not used by automatic allocation
        until made allocatable.
        """
        self.assertEqual(self.cmd("port/create 1"), OK)
        plug = MemoryPlug("x")
        self.assertEqual(self.node.addPort(plug).number, 2)
        plug.close()
        self.assertEqual(self.cmd("port/allocatable 1 1"), OK)
        self.assertEqual(self.node.addPort(MemoryPlug("y")).number, 1)
        self.assertIn(b"ACTIVE - Unnamed Allocatable", self.cmd("port/print 1"))
        self.assertEqual(self.cmd("port/allocatable 1"), status(errno.EINVAL))
        self.assertEqual(self.cmd("port/allocatable 6 1"), status(errno.ENXIO))
        self.assertEqual(self.cmd("port/allocatable 9 1"), status(errno.EINVAL))

    def test_setnumports(self):
        self.addPlugs("a", "b")
        self.assertEqual(self.cmd("port/setnumports 2"), status(errno.EADDRINUSE))
        self.assertEqual(self.cmd("port/setnumports 0"), status(errno.EINVAL))
        self.assertEqual(self.cmd("port/setnumports 6"), OK)
        self.assertIn(b"Numports=6\n", self.cmd("port/showinfo"))

    def test_resetcounter(self):
        (a,) = self.addPlugs("a")
        a.inject(eth(BCAST, A))
        self.assertEqual(self.cmd("port/resetcounter 7"), OK)
        self.assertEqual(self.cmd("port/resetcounter 9"), status(errno.EINVAL))
        self.assertEqual(self.cmd("port/resetcounter 1"), OK)
        self.assertEqual(self.node.getPort(1).inFrames, 0)
        a.inject(eth(BCAST, A))
        self.assertEqual(self.cmd("port/resetcounter"), OK)
        self.assertEqual(self.node.getPort(1).inFrames, 0)

    def test_epclose(self):
        a, b = self.addPlugs("a", "b")
        self.assertEqual(self.cmd("port/epclose 1 1001"), status(errno.ENXIO))
        self.assertEqual(self.cmd("port/epclose 1"), status(errno.EINVAL))
        self.assertEqual(self.cmd("port/epclose 9 1000"), status(errno.EINVAL))
        self.assertEqual(self.cmd("port/epclose 5 1000"), status(errno.ENXIO))
        self.assertEqual(self.cmd("port/epclose 1 1000"), OK)
        self.assertTrue(a.closed)
        self.assertFalse(b.closed)
        self.assertIn(b"INACTIVE", self.cmd("port/allprint 1"))

    def test_epcloseServerEndpoint(self):
        """
        An endpoint of the vde2 server is closed through the server.
        """
        server = FakeServer()
        self.clock, self.node, self.console = makeSwitch(server=server)
        ep = server.client(7, "client")
        self.node.addPort(ep)
        self.assertEqual(self.cmd("port/epclose 1 7"), OK)
        self.assertEqual(server.closed, [7])
        self.assertTrue(ep.closed)

    def test_accessControl(self):
        server = FakeServer()
        self.clock, self.node, self.console = makeSwitch(server=server)
        self.assertEqual(server.accessPolicy, self.console.accessPolicy)
        self.assertEqual(self.cmd("port/setuser 1 root"), status(errno.ENXIO))
        self.assertEqual(self.cmd("port/create 1"), OK)
        self.assertEqual(self.cmd("port/setuser 1 root"), OK)
        self.assertEqual(self.cmd("port/setgroup 1 777"), OK)
        self.assertIn(
            b" Current User: NONE Access Control: (User: root - Group: 777)\n",
            self.cmd("port/allprint 1"),
        )
        self.assertEqual(self.cmd("port/setuser 1 nosuchuser-xyz"), status(errno.EINVAL))
        self.assertEqual(self.cmd("port/setuser 1"), status(errno.EINVAL))
        self.assertEqual(self.cmd("port/setuser 9 root"), status(errno.EINVAL))
        self.assertIsNone(server.accessPolicy(1, 0))
        self.assertIsNone(server.accessPolicy(2, 4321))
        nobody = pwd.getpwnam("nobody").pw_uid
        self.assertIn("access denied", server.accessPolicy(1, nobody))
        self.assertEqual(self.cmd("port/setuser 1 nobody"), OK)
        self.assertIsNone(server.accessPolicy(1, nobody))
        self.assertEqual(self.cmd("port/setuser 1 NONE"), OK)
        self.assertEqual(self.cmd("port/setgroup 1 ANY"), OK)
        self.assertIsNone(server.accessPolicy(1, 4321))
        self.assertIn(b"(User: NONE - Group: NONE)", self.cmd("port/allprint 1"))


class VlanTests(ConsoleTestCase):
    def test_printDefault(self):
        self.assertEqual(self.cmd("vlan/print"), data("VLAN 0000") + OK)
        self.assertEqual(self.cmd("vlan/allprint"), data("VLAN 0000") + OK)

    def test_transcript(self):
        """
        The answers of vde_switch 2.3.2 to the same sequence (two clients
        on ports 1 and 2).
        """
        self.addPlugs("a", "b")
        self.assertEqual(self.cmd("vlan/create 5"), OK)
        self.assertEqual(self.cmd("vlan/addport 5 2"), OK)
        self.assertEqual(self.cmd("port/setvlan 1 5"), OK)
        expected = data(
            "VLAN 0000",
            " -- Port 0002 tagged=0 active=1 status=Forwarding",
            "VLAN 0005",
            " -- Port 0001 tagged=0 active=1 status=Forwarding",
            " -- Port 0002 tagged=1 active=1 status=Forwarding",
        ) + OK
        self.assertEqual(self.cmd("vlan/print"), expected)
        self.assertEqual(self.cmd("vlan/allprint"), expected)
        self.assertEqual(
            self.cmd("vlan/print 5"),
            data(
                "VLAN 0005",
                " -- Port 0001 tagged=0 active=1 status=Forwarding",
                " -- Port 0002 tagged=1 active=1 status=Forwarding",
            )
            + OK,
        )
        self.assertEqual(self.cmd("vlan/print 7"), data() + status(errno.ENXIO))
        self.assertEqual(self.cmd("vlan/print 5000"), data() + status(errno.EINVAL))
        self.assertEqual(self.cmd("vlan/create 0"), status(errno.EINVAL))
        self.assertEqual(self.cmd("vlan/create 4094"), status(errno.EINVAL))
        self.assertEqual(self.cmd("vlan/create abc"), status(errno.EINVAL))
        self.assertEqual(self.cmd("vlan/create 5"), status(errno.EEXIST))
        self.assertEqual(self.cmd("vlan/remove 5"), status(errno.EADDRINUSE))
        self.assertEqual(self.cmd("vlan/remove 9"), status(errno.ENXIO))
        self.assertEqual(self.cmd("vlan/remove 5000"), status(errno.EINVAL))
        self.assertEqual(self.cmd("vlan/remove 0"), status(errno.EADDRINUSE))
        self.assertEqual(self.cmd("port/setvlan 1 9"), status(errno.ENXIO))
        self.assertEqual(self.cmd("port/setvlan 6 5"), status(errno.ENXIO))
        self.assertEqual(self.cmd("port/setvlan 9 5"), status(errno.EINVAL))
        self.assertEqual(self.cmd("port/setvlan 1"), status(errno.EINVAL))
        self.assertEqual(self.cmd("vlan/delport 5 1"), status(errno.EADDRINUSE))
        self.assertEqual(self.cmd("vlan/addport 5 6"), status(errno.ENXIO))
        self.assertEqual(self.cmd("vlan/addport 9 2"), status(errno.ENXIO))
        self.assertEqual(self.cmd("vlan/addport 5 9"), status(errno.EINVAL))
        # Already a member (tagged, or untagged): success, nothing changes.
        self.assertEqual(self.cmd("vlan/addport 5 2"), OK)
        self.assertEqual(self.cmd("vlan/addport 5 1"), OK)
        self.assertEqual(self.cmd("vlan/create 4093"), OK)
        # Not a member: success.
        self.assertEqual(self.cmd("vlan/delport 4093 2"), OK)
        self.assertEqual(self.cmd("port/setvlan 2 4095"), OK)
        self.assertEqual(self.cmd("port/setvlan 0x1 5"), OK)
        self.assertEqual(
            self.cmd("vlan/allprint"),
            data(
                "VLAN 0000",
                "VLAN 0005",
                " -- Port 0001 tagged=0 active=1 status=Forwarding",
                " -- Port 0002 tagged=1 active=1 status=Forwarding",
                "VLAN 4093",
            )
            + OK,
        )
        self.assertIn(b"Port 0002 untagged_vlan=4095 ACTIVE", self.cmd("port/print 2"))

    def test_inactiveMembers(self):
        a, b = self.addPlugs("a", "b")
        self.assertEqual(self.cmd("vlan/create 5"), OK)
        self.assertEqual(self.cmd("port/setvlan 1 5"), OK)
        self.assertEqual(self.cmd("vlan/addport 5 2"), OK)
        a.close()
        self.assertEqual(
            self.cmd("vlan/allprint 5"),
            data(
                "VLAN 0005",
                " -- Port 0001 tagged=0 active=0 status=Learning",
                " -- Port 0002 tagged=1 active=1 status=Forwarding",
            )
            + OK,
        )
        self.assertEqual(
            self.cmd("vlan/print 5"),
            data("VLAN 0005", " -- Port 0002 tagged=1 active=1 status=Forwarding") + OK,
        )

    def test_delportRemove(self):
        self.addPlugs("a", "b")
        self.assertEqual(self.cmd("vlan/create 3"), OK)
        self.assertEqual(self.cmd("vlan/addport 3 2"), OK)
        self.assertEqual(self.cmd("vlan/remove 3"), status(errno.EADDRINUSE))
        self.assertEqual(self.cmd("vlan/delport 3 2"), OK)
        self.assertEqual(self.node.getPort(2).taggedVlans, set())
        self.assertEqual(self.cmd("vlan/remove 3"), OK)
        self.assertEqual(self.node.vlans, {0})

    def test_removeDefaultVlanWithoutMembers(self):
        """
        Deviation: VLAN 0 stays (vde_switch lets it go when unused).
        """
        self.assertEqual(self.cmd("vlan/remove 0"), status(errno.EINVAL))

    def test_taggingThroughConsole(self):
        """
        The VLAN configuration made on the console drives forwarding: an
        untagged frame from an access port of VLAN 5 leaves a trunk port
        tagged 0x8100/0005.
        """
        a, b, c = self.addPlugs("access", "trunk", "other")
        self.cmd("vlan/create 5")
        self.cmd("port/setvlan 1 5")
        self.cmd("vlan/addport 5 2")
        frame = eth(BCAST, A)
        a.inject(frame)
        self.assertEqual(b.sentFrames, [frame[:12] + b"\x81\x00\x00\x05" + frame[12:]])
        self.assertEqual(c.sentFrames, [])


class HashTests(ConsoleTestCase):
    def test_showinfo(self):
        self.assertEqual(
            self.cmd("hash/showinfo"),
            data(
                "Hash size 128",
                "GC interval 2 secs",
                "GC expire 100 secs",
                "Min persistence 3 secs",
            )
            + OK,
        )

    def test_setters(self):
        self.assertEqual(self.cmd("hash/setexpire 50"), OK)
        self.assertEqual(self.cmd("hash/setminper 7"), OK)
        self.assertEqual(self.cmd("hash/setgcint 5"), OK)
        self.assertEqual(self.cmd("hash/setsize 100"), OK)
        self.assertEqual(
            self.cmd("hash/showinfo"),
            data(
                "Hash size 128",
                "GC interval 5 secs",
                "GC expire 50 secs",
                "Min persistence 7 secs",
            )
            + OK,
        )
        self.assertEqual(self.cmd("hash/setsize 0"), status(errno.EINVAL))
        self.assertEqual(self.cmd("hash/setsize -4"), status(errno.EINVAL))
        self.assertEqual(self.cmd("hash/setgcint 0"), status(errno.EINVAL))
        self.assertEqual(self.cmd("hash/setsize 256"), OK)
        self.assertEqual(self.node.table.hashsize, 256)

    def test_setportmax(self):
        """
        C{hash/setportmax N} (not in vde_switch) sets the per-port limit; 0
        lifts it.
        """
        self.assertEqual(self.cmd("hash/setportmax 100"), OK)
        self.assertEqual(self.node.table.portLimit, 100)
        self.assertEqual(self.cmd("hash/setportmax 0"), OK)
        self.assertEqual(self.node.table.portLimit, 0)
        self.assertEqual(self.cmd("hash/setportmax -1"), status(errno.EINVAL))
        self.assertEqual(self.node.table.portLimit, 0)

    def test_print(self):
        """
        Bucket numbers are vde2's (02:00:00:00:00:01 on VLAN 0 is in bucket
        43 of 128), entries in bucket order.
        """
        a, b = self.addPlugs("a", "b")
        b.inject(eth(BCAST, B))
        a.inject(eth(BCAST, A))
        self.clock.advance(1.5)
        self.assertEqual(
            self.cmd("hash/print"),
            data(
                "Hash: 0043 Addr: 02:00:00:00:00:01 VLAN 0000 to port: 001  age 1 secs",
                "Hash: 0060 Addr: 02:00:00:00:00:02 VLAN 0000 to port: 002  age 1 secs",
            )
            + OK,
        )
        self.assertEqual(
            self.cmd("hash/find 02:00:00:00:00:01"),
            data("Hash: 0043 Addr: 02:00:00:00:00:01 VLAN 0000 to port: 001  age 1 secs")
            + OK,
        )
        self.assertEqual(
            self.cmd("hash/find 02.00.00.00.00.02 0"),
            data("Hash: 0060 Addr: 02:00:00:00:00:02 VLAN 0000 to port: 002  age 1 secs")
            + OK,
        )
        self.assertEqual(self.cmd("hash/find 02:00:00:00:00:01 5"), data() + status(errno.ENODEV))
        self.assertEqual(self.cmd("hash/find 02:00:00:00:00:09"), data() + status(errno.ENODEV))
        self.assertEqual(self.cmd("hash/find zz"), data() + status(errno.EINVAL))

    def test_expire(self):
        (a,) = self.addPlugs("a")
        a.inject(eth(BCAST, A))
        self.cmd("hash/setexpire 5")
        self.clock.advance(6)
        self.assertEqual(self.cmd("hash/print"), data() + OK)


class FstpTests(ConsoleTestCase):
    def test_showinfo(self):
        self.assertEqual(
            self.cmd("fstp/showinfo"),
            data("MAC 00:ff:01:02:03:04 Priority 32768 (0x8000)", "FSTP=false") + OK,
        )

    def test_setfstp(self):
        self.assertEqual(self.cmd("fstp/setfstp 0"), data() + OK)
        self.assertEqual(self.cmd("fstp/setfstp 1"), data() + status(errno.EOPNOTSUPP))
        self.cmd("port/sethub 1")
        self.assertEqual(self.cmd("fstp/setfstp 1"), data("Can't use fstp in hub mode") + OK)


class ScriptTests(ConsoleTestCase):
    def test_load(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("port/showinfo\n# comment\nvlan/create 7\nbogus\n\nvlan/print 7\n")
        out = self.cmd(f"load {path}")
        self.assertEqual(
            out,
            (
                f"vde[{path}]: port/showinfo\n".encode()
                + data("Numports=8", "HUB=false", "counters=true")
                + OK
                + f"vde[{path}]: # comment\n".encode()
                + f"vde[{path}]: vlan/create 7\n".encode()
                + OK
                + f"vde[{path}]: bogus\n".encode()
                + status(errno.ENOSYS)
                + f"vde[{path}]: \n".encode()
                + f"vde[{path}]: vlan/print 7\n".encode()
                + data("VLAN 0007")
                + OK
                + OK
            ),
        )
        self.assertIn(7, self.node.vlans)

    def test_loadMissing(self):
        self.assertEqual(self.cmd("load /nonexistent/file"), status(errno.ENOENT))

    def test_runScript(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("vlan/create 9\nport/create 3\n")
        code, text = self.console.runScript(path)
        self.assertEqual(code, 0)
        self.assertIn(9, self.node.vlans)
        self.assertIsNotNone(self.node.getPort(3))

    def test_shutdownInScript(self):
        calls = []
        self.console.shutdown = lambda: calls.append(1)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("shutdown\nvlan/create 9\n")
        self.console.runScript(path)
        self.assertEqual(calls, [1])
        self.assertNotIn(9, self.node.vlans)


class ProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.clock, self.node, self.console = makeSwitch()
        self.shutdowns = []
        self.console.shutdown = lambda: self.shutdowns.append(True)
        self.proto = ConsoleFactory(self.console).buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def received(self):
        value = self.transport.value()
        self.transport.clear()
        return value

    def test_greeting(self):
        self.assertEqual(self.received(), self.console.banner() + PROMPT)
        self.assertTrue(self.console.banner().startswith(b"VDE switch V.2.3.2"))
        self.assertEqual(PROMPT, b"\nvde$ ")

    def test_closeEndsSessions(self):
        """
        Closing the console ends its sessions: no more commands run, and the
        connection closes once its answers have left.
        """
        self.received()
        self.console.close()
        self.assertTrue(self.transport.disconnecting)
        self.assertNotIn(self.proto, self.console.sessions)
        self.proto.dataReceived(b"port/showinfo\n")
        self.assertEqual(self.received(), b"")

    def test_sample(self):
        """
        The sample exchange of the spec (B.6).
        """
        self.received()
        self.proto.dataReceived(b"port/showinfo\n")
        self.assertEqual(
            self.received(),
            b"0000 DATA END WITH '.'\nNumports=8\nHUB=false\ncounters=true\n.\n1000 Success\n\nvde$ ",
        )
        self.proto.dataReceived(b"bogus\n")
        self.assertEqual(self.received(), b"1038 Function not implemented\n\nvde$ ")
        self.proto.dataReceived(b"vlan/create 0\n")
        self.assertEqual(self.received(), b"1022 Invalid argument\n\nvde$ ")
        self.proto.dataReceived(b"\n")
        self.assertEqual(self.received(), b"\nvde$ ")
        self.proto.dataReceived(b"logout\n")
        self.assertEqual(self.received(), b"9999 END OF SESSION")
        self.assertTrue(self.transport.disconnecting)
        self.proto.dataReceived(b"port/showinfo\n")
        self.assertEqual(self.received(), b"")

    def test_noNewlineAndCRLF(self):
        """
        A write without a newline is a command (as in vde_switch); a
        trailing CR is ignored.
        """
        self.received()
        self.proto.dataReceived(b"bogus")
        self.assertEqual(self.received(), b"1038 Function not implemented\n\nvde$ ")
        self.proto.dataReceived(b"vlan/create 3\r\n")
        self.assertEqual(self.received(), b"1000 Success\n\nvde$ ")

    def test_severalLinesInOneWrite(self):
        self.received()
        self.proto.dataReceived(b"vlan/create 3\nvlan/create 3\n")
        self.assertEqual(
            self.received(), b"1000 Success\n\nvde$ 1017 File exists\n\nvde$ "
        )

    def test_shutdown(self):
        """
        C{shutdown} answers like logout, closes, and stops the switch once
        the connection is gone.
        """
        self.received()
        self.proto.dataReceived(b"shutdown\n")
        self.assertEqual(self.received(), b"9999 END OF SESSION")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.shutdowns, [])
        self.proto.connectionLost(None)
        self.assertEqual(self.shutdowns, [True])

    def test_debug(self):
        """
        After C{debug/add}, node events arrive as C{3<tag>} lines in
        vde_switch's formats.
        """
        self.received()
        self.proto.dataReceived(b"debug/add port\n")
        self.assertEqual(self.received(), OK + PROMPT)
        self.proto.dataReceived(b"debug/add hash\n")
        self.proto.dataReceived(b"debug/add nosuch\n")
        self.assertEqual(self.received(), OK + PROMPT + status(errno.EINVAL) + PROMPT)
        ep = self.console.server.client(6, "dbg-client")
        self.node.addPort(ep)
        self.assertEqual(
            self.received(),
            b"3021 port/+ 01\n"
            b"3031 port/ep/+ Port 01 FD  6\n"
            b'3023 port/descr Port 01 FD  6 -> "dbg-client"\n',
        )
        ep.inject(eth(BCAST, A))
        self.assertEqual(
            self.received(), b"3011 hash/+ 02:00:00:00:00:01 VLAN 00:00 Port 1\n"
        )
        ep.close()
        self.assertEqual(
            self.received(),
            b"3032 port/ep/- Port 01 FD  6\n"
            b"3022 port/- 01\n"
            b"3012 hash/- 02:00:00:00:00:01 VLAN 00:00 Port 1\n",
        )
        self.proto.dataReceived(b"debug/list port/ep\n")
        self.assertEqual(
            self.received(),
            data(
                "CATEGORY               TAG STATUS HELP",
                "------------           --- ------ ----",
                "port/ep/+              031 ON     new endpoint",
                "port/ep/-              032 ON     closed endpoint",
            )
            + OK
            + PROMPT,
        )
        self.proto.dataReceived(b"debug/del port\n")
        self.received()
        self.node.addPort(self.console.server.client(8, "quiet"))
        self.assertEqual(self.received(), b"")

    def test_debugList(self):
        self.received()
        self.proto.dataReceived(b"debug/list\n")
        lines = self.received().decode().splitlines()
        self.assertEqual(lines[3], "hash/+                 011 OFF    hash: new element")
        self.assertEqual(lines[-5], "port/ep/-              032 OFF    closed endpoint")
        # DATA header, 2 header lines, 11 categories, ".", status, prompt (2).
        self.assertEqual(len(lines), 1 + 2 + 11 + 2 + 2)

    def test_connectionLostForgetsSession(self):
        self.assertIn(self.proto, self.console.sessions)
        self.proto.connectionLost(None)
        self.assertNotIn(self.proto, self.console.sessions)
        self.assertEqual(self.shutdowns, [])


class UnreadAnswersTests(SynchronousTestCase):
    """
    issue 8, defect 4: a session that does not read its answers is held
    back, then dropped; one that reads late loses nothing.
    """

    def setUp(self):
        self.clock, self.node, self.console = makeSwitch()
        self.transport = SlowPeerTransport()

    def connect(self, protocol):
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)
        return protocol

    def flood(self, protocol, commands=50_000):
        """
        Send C{help} C{commands} times, in reads of 64 KiB as a socket
        gives them; the number of commands sent is returned.
        """
        data = b"help\n" * commands
        read = 65535  # whole lines
        for start in range(0, len(data), read):
            if not self.transport.reading or protocol.ended:
                return start // 5
            protocol.dataReceived(data[start:start + read])
        return commands

    def test_dropped(self):
        """
        Answers fill the transport's buffer: the session stops reading and
        running commands, and is dropped (memory freed) after
        L{STALL_TIMEOUT} seconds.
        """
        proto = self.connect(ConsoleFactory(self.console).buildProtocol(None))
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        sent = self.flood(proto)
        self.assertFalse(self.transport.reading)
        helpSize = len(self.console.execute("help")[0]) + len(PROMPT)
        self.assertLessEqual(self.transport.pending, self.transport.bufferSize + 2 * helpSize)
        self.assertLess(sent, 65536 // 5 + 1)
        self.clock.advance(STALL_TIMEOUT - 0.1)
        self.assertIn(proto, self.console.sessions)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.aborted)
        self.assertNotIn(proto, self.console.sessions)
        self.assertEqual(len(proto._lines), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIn(
            f"management session dropped: its answers were left unread for {STALL_TIMEOUT} s",
            [formatEvent(e) for e in events],
        )

    def test_readLate(self):
        """
        A session that reads its answers before the timeout gets every one
        of them, in order, and goes on.
        """
        proto = self.connect(ConsoleFactory(self.console).buildProtocol(None))
        proto.dataReceived(b"vlan/create 3\n" + b"port/showinfo\n" * 2000 + b"vlan/create 4\n")
        self.assertFalse(self.transport.reading)
        self.assertNotIn(4, self.node.vlans)
        while not self.transport.reading:
            self.clock.advance(STALL_TIMEOUT / 2)
            self.transport.flush()
        answers = bytes(self.transport.received).split(PROMPT)
        # The banner, 2002 answers, nothing after the last prompt.
        self.assertEqual(len(answers), 1 + 2002 + 1)
        self.assertEqual(answers[1], OK)
        self.assertEqual(set(answers[2:-2]), {data("Numports=8", "HUB=false", "counters=true") + OK})
        self.assertEqual(answers[-2], OK)
        self.assertIn(4, self.node.vlans)
        self.assertIn(proto, self.console.sessions)
        self.assertFalse(self.transport.aborted)

    def test_debugLinesBounded(self):
        """
        Debug lines for a session that does not read are discarded beyond
        L{STALLED_DEBUG_LIMIT} bytes, and counted.
        """
        proto = self.connect(ConsoleFactory(self.console).buildProtocol(None))
        proto.dataReceived(b"debug/add hash/+\n")
        self.flood(proto, 1000)
        self.assertFalse(self.transport.reading)
        stalled = self.transport.pending
        plug = MemoryPlug("flood")
        self.node.addPort(plug)
        for n in range(3000):
            plug.inject(eth(BCAST, bytes([2, 0, 0, 0, n >> 8, n & 255])))
        line = len(b"3011 hash/+ 02:00:00:00:00:01 VLAN 00:00 Port 1\n")
        self.assertLessEqual(self.transport.pending - stalled, STALLED_DEBUG_LIMIT + line)
        self.assertGreater(proto.discardedLines, 0)
        self.assertEqual(
            (self.transport.pending - stalled) // line + proto.discardedLines, 3000
        )

    def test_stdioHeldBackNotDropped(self):
        """
        The console on stdio is held back while stdout is not read, but
        never dropped.
        """
        proto = self.connect(StdioConsoleProtocol(self.console))
        proto.dataReceived(b"help\n" * 1000)
        self.assertFalse(self.transport.reading)
        self.clock.advance(STALL_TIMEOUT * 10)
        self.assertFalse(self.transport.aborted)
        self.assertIn(proto, self.console.sessions)
        while not self.transport.reading:
            self.transport.flush()
        self.assertEqual(bytes(self.transport.received).count(OK), 1000)


class StdioProtocolTests(SynchronousTestCase):
    """
    L{StdioConsoleProtocol}: the console on stdin, as vde_switch's.
    """

    def setUp(self):
        self.clock, self.node, self.console = makeSwitch()
        self.shutdowns = []
        self.console.shutdown = lambda: self.shutdowns.append(True)
        self.transport = StringTransport()

    def connect(self, prompt=b""):
        proto = StdioConsoleProtocol(self.console, prompt)
        proto.makeConnection(self.transport)
        return proto

    def received(self):
        value = self.transport.value()
        self.transport.clear()
        return value

    def test_noBannerNoPrompt(self):
        """
        No greeting; without a prompt (stdin is not a terminal), the answers
        alone; an empty line or a comment gets nothing.
        """
        proto = self.connect()
        self.assertEqual(self.received(), b"")
        proto.dataReceived(b"vlan/create 3\nbogus\n\n# comment\n")
        self.assertEqual(self.received(), OK + status(errno.ENOSYS))

    def test_prompt(self):
        """
        With a prompt, it follows each answer, empty lines included.
        """
        proto = self.connect(PROMPT)
        self.assertEqual(self.received(), b"")
        proto.dataReceived(b"vlan/create 3\n\n")
        self.assertEqual(self.received(), OK + PROMPT + PROMPT)

    def test_logout(self):
        """
        C{logout} does nothing: no answer, no prompt, the console goes on.
        """
        proto = self.connect(PROMPT)
        proto.dataReceived(b"logout\n")
        self.assertEqual(self.received(), b"")
        self.assertFalse(self.transport.disconnecting)
        proto.dataReceived(b"port/showinfo\n")
        self.assertIn(b"Numports=8\n", self.received())

    def test_shutdown(self):
        """
        C{shutdown} stops the switch at once, without an answer, and stops
        reading.
        """
        proto = self.connect(PROMPT)
        proto.dataReceived(b"shutdown\nvlan/create 3\n")
        self.assertEqual(self.received(), b"")
        self.assertEqual(self.shutdowns, [True])
        self.assertTrue(self.transport.disconnecting)
        self.assertNotIn(3, self.node.vlans)
        self.assertNotIn(proto, self.console.sessions)

    def test_eof(self):
        """
        The end of stdin stops the switch, with vde_switch's message.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        proto = self.connect()
        proto.readConnectionLost()
        self.assertEqual(self.shutdowns, [True])
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("EOF on stdin, cleaning up and exiting",
                      [formatEvent(e) for e in events])

    def test_closeWaitsForOutput(self):
        """
        L{StdioConsoleProtocol.close} fires once the output is written (the
        connection is lost), at once when stdout is gone already.
        """
        proto = self.connect()
        closed = []
        proto.close().addCallback(closed.append)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(closed, [])
        proto.connectionLost(None)
        self.assertEqual(closed, [None])
        self.assertEqual(self.successResultOf(proto.close()), None)

        self.transport = StringTransport()
        proto = self.connect()
        proto.writeConnectionLost()
        self.assertEqual(self.successResultOf(proto.close()), None)

    def test_debug(self):
        """
        Debug lines reach the console on stdout too.
        """
        proto = self.connect()
        proto.dataReceived(b"debug/add port/+\n")
        self.received()
        self.node.addPort(self.console.server.client(6, "dbg-client"))
        self.assertEqual(self.received(), b"3021 port/+ 01\n")


class ServeStdioTests(TestCase):
    """
    L{serveStdio} with real descriptors in the reactor.
    """

    def setUp(self):
        self.clock, self.node, self.console = makeSwitch()
        self.shutdowns = []
        self.console.shutdown = lambda: self.shutdowns.append(True)

    def fds(self, *fds):
        for fd in fds:
            self.addCleanup(os.close, fd)
        return fds

    def readAll(self, fd):
        chunks = []
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    async def test_pipes(self):
        """
        Commands written before the end of a pipe all get their answer,
        without prompts, before the end is reported.
        """
        inRead, inWrite = os.pipe()
        outRead, outWrite = self.fds(*os.pipe())
        self.addCleanup(os.close, inRead)
        proto = serveStdio(reactor, self.console, inRead, outWrite)
        os.write(inWrite, b"vlan/create 3\nport/showinfo\n")
        os.close(inWrite)
        await until(lambda: self.shutdowns, "the end of stdin")
        await proto.close()
        self.assertEqual(
            self.readAll(outRead),
            OK + data("Numports=8", "HUB=false", "counters=true") + OK,
        )

    async def test_terminal(self):
        """
        On a terminal the prompt follows the answers; at the end the
        terminal is blocking again (a shell shares it).
        """
        master, slave = self.fds(*os.openpty())
        (stdout,) = self.fds(os.dup(slave))
        proto = serveStdio(reactor, self.console, slave, stdout)
        os.write(master, b"vlan/create 3\n")
        shown = bytearray()

        def answered():
            shown.extend(self.readAll(master))
            return shown.endswith(b"vde$ ")

        await until(answered, "the prompt")
        self.assertTrue(shown.endswith(b"1000 Success\r\n\r\nvde$ "), shown)
        self.assertTrue(fcntl.fcntl(slave, fcntl.F_GETFL) & os.O_NONBLOCK)
        await proto.close()
        self.assertFalse(fcntl.fcntl(slave, fcntl.F_GETFL) & os.O_NONBLOCK)
        self.assertEqual(self.shutdowns, [])
