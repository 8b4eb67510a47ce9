"""
vdetwist's point-to-point and stream backends, found by
L{vdetwist.registry} through C{twisted.plugin.getPlugins(IVdeBackend)}.

Backends are spread over several dropins so that one that cannot be
imported (a missing optional dependency) does not hide the others.
"""

from vdetwist.backends.cmd import CmdBackend
from vdetwist.backends.endpoint import EndpointBackend
from vdetwist.backends.null import NullBackend
from vdetwist.backends.ptp import PtpBackend
from vdetwist.backends.seqpacket import SeqpacketBackend
from vdetwist.backends.udp import UdpBackend

cmd = CmdBackend()
endpoint = EndpointBackend()
null = NullBackend()
ptp = PtpBackend()
seqpacket = SeqpacketBackend()
udp = UdpBackend()
