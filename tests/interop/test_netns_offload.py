"""
Super-frames between namespaces through our switch: two namespaces, each on
a tap held by our C{vde_plug tap://X vde://SW} (offloads on, the default),
joined by C{twistd vde}.  100 MiB of TCP over IPv4 and over IPv6 arrive byte
for byte, and the tap of the receiving side is written super-frames (its
frames average above the MTU), so they crossed the switch whole.  A C
C{vde_plug} on the same switch (a hub, so it hears that traffic) gets only
plain frames, every TCP checksum right; on a C C{vde_switch} our plugs stay
plain.
"""

from __future__ import annotations

from tests.support import CSwitch, cPlug, cTool, ourTool
from tests.interop.test_netns_traffic import ADDRESSES, ADDRESSES6, TapHosts
from tests.vnetframes import tcpPayloads
from vdetwist.testing import netns

BIG = 100 * 1024 * 1024
MTU_FRAME = 1514


def rxStats(ifname: str, namespace) -> tuple[int, int]:
    """
    (frames, bytes) the plug of the tap C{ifname} wrote into it.
    """
    with netns.routing(namespace) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname)
        (link,) = ipr.get_links(index)
    stats = dict(link.get_attr("IFLA_STATS64"))
    return stats["rx_packets"], stats["rx_bytes"]


class OffloadTrafficTests(TapHosts):
    timeout = 300
    ipv6 = True

    def connectOurs(self, switch: str) -> list[str]:
        ours = ourTool("vde_plug")
        return [self.plugTap(side, ours, f"vde://{switch}") for side in (0, 1)]

    def averageRx(self, tap: str, before: tuple[int, int]) -> float:
        frames, octets = rxStats(tap, self.hosts[1])
        return (octets - before[1]) / max(frames - before[0], 1)

    def test_superFramesThroughTwistd(self) -> None:
        """
        100 MiB over IPv4 and over IPv6, sha256-identical; the receiving
        tap is written frames far above the MTU on average.
        """
        taps = self.connectOurs(self.startTwistd())
        self.assertPing()
        before = rxStats(taps[1], self.hosts[1])
        self.assertTransfer(BIG, ADDRESSES, timeout=240)
        self.assertTransfer(BIG, ADDRESSES6, timeout=240)
        self.assertGreater(self.averageRx(taps[1], before), 3 * MTU_FRAME)

    def test_cClientGetsPlainFrames(self) -> None:
        """
        On a hub, a C client hears the offloading ports' TCP streams as
        plain frames, none above 1518 bytes, every checksum complete, while
        the offloading ports exchange super-frames.
        """
        cTool("vde_plug")
        switch = self.startTwistd("--hub")
        capture = cPlug(self, "C capture", f"vde://{switch}")
        taps = self.connectOurs(switch)
        self.assertPing()
        before = rxStats(taps[1], self.hosts[1])
        size = 8 * 1024 * 1024
        self.assertTransfer(size, ADDRESSES, timeout=120)
        self.assertTransfer(size, ADDRESSES6, timeout=120)
        self.assertGreater(self.averageRx(taps[1], before), 3 * MTU_FRAME)
        capture.waitFor(lambda: len(capture.frames) > 2000, "the C client to hear the streams")
        tcp = [f for f in list(capture.frames) if _isTcp(f)]
        self.assertGreater(len(tcp), 2000)
        self.assertLessEqual(max(len(f) for f in capture.frames), 1518)
        # Every TCP frame's checksums verify (and the IPv4 headers').
        self.assertGreater(len(tcpPayloads(tcp, self)), 2 * 1024 * 1024)

    def test_cSwitchStaysPlain(self) -> None:
        """
        Our offloading plugs on the C vde_switch: frames are plain (the
        receiving tap gets MTU frames), and the transfer is byte-exact.
        """
        switch = CSwitch(self)
        switch.waitReady()
        taps = self.connectOurs(switch.path)
        self.assertPing()
        before = rxStats(taps[1], self.hosts[1])
        self.assertTransfer(16 * 1024 * 1024, ADDRESSES, timeout=120)
        self.assertLessEqual(self.averageRx(taps[1], before), MTU_FRAME)


def _isTcp(frame: bytes) -> bool:
    ethertype = frame[12:14]
    return ((ethertype == b"\x08\x00" and frame[23] == 6)
            or (ethertype == b"\x86\xdd" and frame[20] == 6))

