"""
vdetwist's VNL backends, found by L{vdetwist.registry} through
C{twisted.plugin.getPlugins(IVdeBackend)}.
"""

from vdetwist.backends.cmd import CmdBackend
from vdetwist.backends.macvtap import MacvtapBackend
from vdetwist.backends.netnode import NetnodeBackend
from vdetwist.backends.null import NullBackend
from vdetwist.backends.pcap import PcapBackend
from vdetwist.backends.ptp import PtpBackend
from vdetwist.backends.seqpacket import SeqpacketBackend
from vdetwist.backends.tap import TapBackend
from vdetwist.backends.udp import UdpBackend
from vdetwist.backends.vde import VdeBackend
from vdetwist.backends.vxlan import VxlanBackend
from vdetwist.backends.vxvde import VxvdeBackend

cmd = CmdBackend()
macvtap = MacvtapBackend()
netnode = NetnodeBackend()
null = NullBackend()
pcap = PcapBackend()
ptp = PtpBackend()
seqpacket = SeqpacketBackend()
tap = TapBackend()
udp = UdpBackend()
vde = VdeBackend()
vxlan = VxlanBackend()
vxvde = VxvdeBackend()
