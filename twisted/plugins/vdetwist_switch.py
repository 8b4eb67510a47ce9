"""
vdetwist's switch backends: C{vde://} clients and the C{hub://},
C{switch://}, C{multi://}, C{bonding://} nodes.
"""

from vdetwist.backends.netnode import NetnodeBackend
from vdetwist.backends.vde import VdeBackend

netnode = NetnodeBackend()
vde = VdeBackend()
