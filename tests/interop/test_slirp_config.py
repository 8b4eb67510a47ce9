"""
slirp:// options: defaults, derived addresses, forwards, the verbose table
(compared with the C plugin's when it is installed).
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, TestCase

from vdetwist.errors import VdeError
from vdetwist.slirp.config import (
    GuestForward, HostForward, SlirpConfig, forwardLine, fromVNL,
)
from vdetwist.slirp.memhost import MemoryHost
from vdetwist.vnl import resolve

DEFAULT_TABLE = """\
SLIRP configuration
version       1
ipv4-enable   1
ipv4-network  10.0.2.0
ipv4-netmask  255.255.255.0
ipv4-host     10.0.2.2
ipv6-enabled  1
ipv6-prefix   fd00::
ipv6-preflen  64
ipv6-host     fd00::2
hostname      slirp
tftp-servname (null)
tftp-path     (null)
bootfile      (null)
dhcp-start    10.0.2.15
ipv4-vDNS     10.0.2.3
ipv6-vDNS     fd00::3
vDNS-search   
vdomainname   (null)
MTU(0=def)    0
MRU(0=def)    0
disable-lback 0
enable-emu    0
"""


def config(vnl: str, **environ) -> SlirpConfig:
    return fromVNL(resolve(vnl), environ)


class DefaultsTests(TestCase):
    def test_defaults(self):
        c = config("slirp://")
        self.assertTrue(c.ipv4 and c.ipv6)
        self.assertEqual(c.network, IPv4Network("10.0.2.0/24"))
        self.assertEqual(c.host, IPv4Address("10.0.2.2"))
        self.assertEqual(c.dns, IPv4Address("10.0.2.3"))
        self.assertEqual(c.dhcpStart, IPv4Address("10.0.2.15"))
        self.assertEqual(c.network6, IPv6Network("fd00::/64"))
        self.assertEqual(c.host6, IPv6Address("fd00::2"))
        self.assertEqual(c.dns6, IPv6Address("fd00::3"))
        self.assertEqual((c.mtu, c.mru, c.mss4(), c.mss6()), (1500, 1500, 1460, 1440))
        self.assertEqual(c.hostname, "slirp")
        self.assertEqual(c.leases, 16)
        self.assertEqual(c.resolvConf, "/etc/resolv.conf")

    def test_table(self):
        self.assertEqual(config("slirp://").table(), DEFAULT_TABLE)

    def test_resolvConfFromEnvironment(self):
        c = config("slirp://", VDETWIST_RESOLV_CONF="/tmp/r.conf")
        self.assertEqual(c.resolvConf, "/tmp/r.conf")


class OptionTests(TestCase):
    def test_addrMovesNetwork(self):
        c = config("slirp:///addr=192.168.5.1%2f16")
        self.assertEqual(c.network, IPv4Network("192.168.0.0/16"))
        self.assertEqual(c.host, IPv4Address("192.168.5.1"))
        self.assertEqual(c.dns, IPv4Address("192.168.2.3"))
        self.assertEqual(c.dhcpStart, IPv4Address("192.168.2.15"))

    def test_explicitWins(self):
        c = config("slirp:///dhcp=192.168.5.100/host=192.168.5.1%2f16/vnameserver=192.168.5.53")
        self.assertEqual(c.dhcpStart, IPv4Address("192.168.5.100"))
        self.assertEqual(c.dns, IPv4Address("192.168.5.53"))

    def test_smallNetwork(self):
        c = config("slirp:///host=172.16.9.1%2f28")
        self.assertEqual(c.dns, IPv4Address("172.16.9.3"))
        self.assertEqual(c.dhcpStart, IPv4Address("172.16.9.15"))

    def test_ipv6(self):
        c = config("slirp:///host6=fd01::5%2f48")
        self.assertEqual(c.network6, IPv6Network("fd01::/48"))
        self.assertEqual(c.dns6, IPv6Address("fd01::3"))

    def test_families(self):
        c = config("slirp:///v4")
        self.assertEqual((c.ipv4, c.ipv6), (True, False))
        c = config("slirp:///v6")
        self.assertEqual((c.ipv4, c.ipv6), (False, True))
        c = config("slirp:///v6/v4")
        self.assertEqual((c.ipv4, c.ipv6), (True, True))

    def test_flags(self):
        c = config("slirp:///restricted/disable_host_loopback/verb")
        self.assertTrue(c.restricted and c.disableHostLoopback and c.verbose)

    def test_strings(self):
        c = config("slirp:///hostname=vm/tftp_server_name=ts/tftp_path=%2fsrv/bootfile=pxe.0"
                   "/vdnssearch=a.com,b.org/vdomainname=x.org/mtu=9000/mru=1400")
        self.assertEqual((c.hostname, c.tftpServerName, c.tftpPath, c.bootfile),
                         ("vm", "ts", "/srv", "pxe.0"))
        self.assertEqual(c.dnsSearch, ("a.com", "b.org"))
        self.assertEqual(c.domainName, "x.org")
        self.assertEqual((c.mtu, c.mru, c.mss4()), (9000, 1400, 1360))
        self.assertIn("vDNS-search   a.com b.org \n", c.table())

    def test_badValues(self):
        for vnl in ("slirp:///addr=nonsense", "slirp:///mtu=20", "slirp:///mtu=x",
                    "slirp:///dhcp=1.2.3.4", "slirp:///host6=zz", "slirp:///addr=10.0.2.0%2f24"):
            self.assertRaises(VdeError, config, vnl)

    def test_unknownKey(self):
        self.assertRaises(VdeError, config, "slirp:///addr=10.1.2.3/16")

    def test_tcpLimits(self):
        """
        The TCP table limits (vdetwist options) have defaults, take whole
        numbers, and abbreviate after every C option (C{tcp} is still
        C{tcpfwd}).
        """
        c = config("slirp://")
        self.assertEqual((c.tcpMax, c.tcpPerGuest, c.tcpHalfOpen, c.tcpHalfOpenTimeout),
                         (4096, 1024, 256, 20))
        c = config("slirp:///tcp_max=100/tcp_per_guest=10/tcp_halfopen=8"
                   "/tcp_halfopen_timeout=5/tcp=8080:10.0.2.15:80")
        self.assertEqual((c.tcpMax, c.tcpPerGuest, c.tcpHalfOpen, c.tcpHalfOpenTimeout),
                         (100, 10, 8, 5))
        self.assertEqual([f.hostPort for f in c.hostForwards], [8080])
        c = config("slirp:///tcp_m=7/tcp_p=6/tcp_h=5/tcp_halfopen_t=4")
        self.assertEqual((c.tcpMax, c.tcpPerGuest, c.tcpHalfOpen, c.tcpHalfOpenTimeout),
                         (7, 6, 5, 4))

    def test_tcpLimitErrors(self):
        """
        A bad limit is a one-line error naming the option and what it takes.
        """
        for option, message in [
            ("tcp_max=0", "tcp_max=0: must be a whole number from 1 to 1048576"),
            ("tcp_per_guest=-3", "tcp_per_guest=-3: must be a whole number from 1 to 1048576"),
            ("tcp_halfopen=lots", "tcp_halfopen=lots: must be a whole number from 1 to 1048576"),
            ("tcp_halfopen=", "tcp_halfopen=: must be a whole number from 1 to 1048576"),
            ("tcp_max=99999999", "tcp_max=99999999: must be a whole number from 1 to 1048576"),
            ("tcp_halfopen_timeout=2.5",
             "tcp_halfopen_timeout=2.5: must be a whole number from 1 to 3600"),
            ("tcp_halfopen_timeout=7200",
             "tcp_halfopen_timeout=7200: must be a whole number from 1 to 3600"),
        ]:
            with self.assertRaises(VdeError) as e:
                config("slirp:///" + option)
            self.assertIn(message, str(e.exception))
            self.assertNotIn("\n", str(e.exception))


class ForwardTests(TestCase):
    def test_hostForwards(self):
        c = config("slirp:///tcpfwd=:18090:0.0.0.0:22,18091:10.0.2.16:23,"
                   "127.0.0.1:18093:10.0.2.15:24,/udpfwd=5353:10.0.2.15:53")
        self.assertEqual(c.hostForwards, [
            HostForward("tcp", IPv4Address("0.0.0.0"), 18090, IPv4Address("0.0.0.0"), 22),
            HostForward("tcp", IPv4Address("0.0.0.0"), 18091, IPv4Address("10.0.2.16"), 23),
            HostForward("tcp", IPv4Address("127.0.0.1"), 18093, IPv4Address("10.0.2.15"), 24),
            HostForward("udp", IPv4Address("0.0.0.0"), 5353, IPv4Address("10.0.2.15"), 53),
        ])

    def test_hostForwardsIPv6(self):
        """
        Either address may be IPv6 in brackets.
        """
        c = config("slirp:///tcpfwd=[::1]:8080:10.0.2.15:80,2222:[fd00::15]:22"
                   "/udpfwd=[::]:5353:[fd00::15]:53")
        self.assertEqual(c.hostForwards, [
            HostForward("tcp", IPv6Address("::1"), 8080, IPv4Address("10.0.2.15"), 80),
            HostForward("tcp", IPv4Address("0.0.0.0"), 2222, IPv6Address("fd00::15"), 22),
            HostForward("udp", IPv6Address("::"), 5353, IPv6Address("fd00::15"), 53),
        ])

    def test_malformedForwards(self):
        """
        A malformed entry is refused with a message naming it, what is
        wrong and the form expected (the C plugin skips it, or crashes on
        a three-field one).
        """
        host = "expected [HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT, e.g. 8080:10.0.2.15:80"
        guest = "expected [SLIRPIP:]SLIRPPORT:TARGET, e.g. 5555:/tmp/x.sock"
        for option, message in (
            ("tcpfwd=8091:10.0.2.15", f"tcpfwd=8091:10.0.2.15: 2 fields, not 3 or 4; {host}"),
            ("tcpfwd=80:10.0.2.15:80,1:2:3:4:5",
             f"tcpfwd=1:2:3:4:5: 5 fields, not 3 or 4; {host}"),
            ("udpfwd=18094:0:1",
             f"udpfwd=18094:0:1: '0' is not an IPv4 address or an IPv6 one in brackets; {host}"),
            ("tcpfwd=[bad]:3:10.0.2.15:4",
             f"tcpfwd=[bad]:3:10.0.2.15:4: '[bad]' is not an IPv4 address or an IPv6 one"
             f" in brackets; {host}"),
            ("tcpfwd=[::]:1:[::]:2", f"tcpfwd=[::]:1:[::]:2: [::] is no guest address; {host}"),
            ("tcpfwd=70000:10.0.2.15:2",
             f"tcpfwd=70000:10.0.2.15:2: '70000' is not a port (1 to 65535); {host}"),
            ("tcpfwd=1:10.0.2.15:x",
             f"tcpfwd=1:10.0.2.15:x: 'x' is not a port (1 to 65535); {host}"),
            ("cmdfwd=5", f"cmdfwd=5: no target; {guest}"),
            ("unixfwd=10.0.2.9:0:%2fx",
             f"unixfwd=10.0.2.9:0:/x: '0' is not a port (1 to 65535); {guest}"),
        ):
            with self.subTest(option=option):
                error = self.assertRaises(VdeError, config, "slirp:///" + option)
                self.assertEqual(error.message, message)
                self.assertEqual(error.errno, errno.EINVAL)

    def test_guestForwards(self):
        c = config("slirp:///addr=192.168.5.1%2f16/unixfwd=5556:%2ftmp%2fx.sock"
                   "/cmdfwd=10.0.2.9:77:cat,0.0.0.0:78:echo hi,79:nc -U a:b")
        self.assertEqual(c.guestForwards, [
            GuestForward("unix", IPv4Address("192.168.2.4"), 5556, "/tmp/x.sock"),
            GuestForward("cmd", IPv4Address("10.0.2.9"), 77, "cat"),
            GuestForward("cmd", IPv4Address("192.168.2.4"), 78, "echo hi"),
            GuestForward("cmd", IPv4Address("192.168.2.4"), 79, "nc -U a:b"),
        ])

    def test_lines(self):
        self.assertEqual(
            forwardLine(HostForward("tcp", IPv4Address("0.0.0.0"), 18080,
                                    IPv4Address("192.168.5.15"), 80)),
            "tcpfwd host   0.0.0.0 18080 -> guest 192.168.5.15 80: Success\n")
        self.assertEqual(
            forwardLine(GuestForward("unix", IPv4Address("10.0.2.4"), 5556, "/tmp/x"),
                        errno.ENOENT),
            "unixfwd       gw 10.0.2.4 5556 -> host /tmp/x: No such file or directory\n")
        self.assertEqual(
            forwardLine(GuestForward("cmd", IPv4Address("10.0.2.4"), 5555, "echo")),
            "cmdfwd        gw 10.0.2.4 5555 -> 'echo': Success\n")

    def test_bindFailureReported(self):
        """
        A forward that cannot listen is in the verbose table, as in C, and
        fails the open naming the address and the reason.
        """
        from vdetwist.backends.slirp import openSlirp

        host = MemoryHost()
        host.busy.add(("tcp", "0.0.0.0", 18080))
        out = io.StringIO()
        error = self.assertRaises(
            VdeError, openSlirp, Clock(),
            resolve("slirp:///verbose/udpfwd=18080:10.0.2.15:80/tcpfwd=18080:10.0.2.15:80"),
            stderr=out, host=host)
        self.assertTrue(out.getvalue().startswith(DEFAULT_TABLE))
        self.assertTrue(out.getvalue().endswith(
            "tcpfwd host   0.0.0.0 18080 -> guest 10.0.2.15 80: Address already in use\n"
            "udpfwd host   0.0.0.0 18080 -> guest 10.0.2.15 80: Success\n"))
        self.assertEqual(error.message, "tcpfwd: cannot listen on 0.0.0.0:18080: "
                                        "Address already in use; choose another host port")
        self.assertEqual(error.errno, errno.EADDRINUSE)
        self.assertTrue(all(listener.closed for listener in host.listeners.values()),
                        "the open that failed closed what it opened")


class CompareWithC(TestCase):
    """
    The verbose table is the C plugin's, line for line.
    """

    def setUp(self):
        path = "/usr/bin/vde_plug"
        plugin = [d for d in ("/usr/lib/x86_64-linux-gnu/vdeplug", "/usr/lib/vdeplug")
                  if os.path.exists(os.path.join(d, "libvdeplug_slirp.so"))]
        if not os.path.exists(path) or not plugin:
            raise SkipTest("C vde_plug with libvdeplug_slirp is not installed")
        self.vde_plug = path

    def cTable(self, vnl: str) -> str:
        """
        What the C plugin prints, read until its last table line.
        """
        proc = subprocess.Popen([self.vde_plug, vnl, "null://"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if line.startswith("enable-emu"):
                    break
            return "".join(lines)
        finally:
            proc.kill()
            proc.wait()

    def test_tables(self):
        for vnl in (
            "slirp:///verbose",
            "slirp:///verbose/addr=192.168.5.1%2f16/mtu=9000/vdnssearch=a.com,b.org/v4",
            "slirp:///verbose/v6/hostname=foo/vdomainname=x.org/tftp_path=%2ftmp/bootfile=pxe"
            "/tftp_server_name=ts/dhcp=10.0.2.100/vnameserver=10.0.2.53/host6=fd01::5%2f48"
            "/mru=1400/disable_host_loopback",
        ):
            self.assertEqual(config(vnl).table(), self.cTable(vnl), vnl)
