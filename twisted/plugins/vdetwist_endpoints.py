"""
The C{vde:} client endpoint string: any VNL as a Twisted endpoint.
"""

from vdetwist.endpoints import VdeClientParser

vde = VdeClientParser()
