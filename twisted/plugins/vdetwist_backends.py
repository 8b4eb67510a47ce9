"""
vdetwist's VNL backends, found by L{vdetwist.registry} through
C{twisted.plugin.getPlugins(IVdeBackend)}.
"""

from vdetwist.backends.cmd import CmdBackend
from vdetwist.backends.netnode import NetnodeBackend
from vdetwist.backends.null import NullBackend
from vdetwist.backends.ptp import PtpBackend
from vdetwist.backends.seqpacket import SeqpacketBackend
from vdetwist.backends.udp import UdpBackend
from vdetwist.backends.vde import VdeBackend

cmd = CmdBackend()
netnode = NetnodeBackend()
null = NullBackend()
ptp = PtpBackend()
seqpacket = SeqpacketBackend()
udp = UdpBackend()
vde = VdeBackend()
