"""
vdetwist's nesting backends, which wrap another VNL: C{vlan://},
C{agno://}, C{wirefilter://}.
"""

from vdetwist.backends.agno import AgnoBackend
from vdetwist.backends.vlan import VlanBackend
from vdetwist.backends.wirefilter import WirefilterBackend

agno = AgnoBackend()
vlan = VlanBackend()
wirefilter = WirefilterBackend()
