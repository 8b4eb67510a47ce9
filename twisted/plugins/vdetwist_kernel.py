"""
vdetwist's backends onto kernel interfaces: C{tap://}, C{macvtap://},
C{pcap://}.
"""

from vdetwist.backends.macvtap import MacvtapBackend
from vdetwist.backends.pcap import PcapBackend
from vdetwist.backends.tap import TapBackend

macvtap = MacvtapBackend()
pcap = PcapBackend()
tap = TapBackend()
