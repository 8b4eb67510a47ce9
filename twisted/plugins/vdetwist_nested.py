"""
vdetwist's nesting backends, which wrap another VNL: C{vlan://},
C{agno://}.
"""

from vdetwist.backends.agno import AgnoBackend
from vdetwist.backends.vlan import VlanBackend

agno = AgnoBackend()
vlan = VlanBackend()
