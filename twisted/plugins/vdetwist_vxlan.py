"""
vdetwist's switchless distributed networks: C{vxvde://}, C{vxlan://}.
"""

from vdetwist.backends.vxlan import VxlanBackend
from vdetwist.backends.vxvde import VxvdeBackend

vxlan = VxlanBackend()
vxvde = VxvdeBackend()
