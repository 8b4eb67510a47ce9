"""
The C{vdestack:} server and client endpoint strings: a Twisted program as a
host on a VDE network.
"""

from vdetwist.stack.endpoints import StackParser

vdestack = StackParser()
