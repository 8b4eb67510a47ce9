"""
vdetwist's nesting backends, which wrap another VNL: C{vlan://},
C{agno://}, C{wirefilter://}, C{restart://}.
"""

from vdetwist.backends.agno import AgnoBackend
from vdetwist.backends.restart import RestartBackend
from vdetwist.backends.vlan import VlanBackend
from vdetwist.backends.wirefilter import WirefilterBackend

agno = AgnoBackend()
restart = RestartBackend()
vlan = VlanBackend()
wirefilter = WirefilterBackend()
