"""
vdetwist: Virtual Distributed Ethernet for Twisted.

Open any VNL with L{vdetwist.registry.openVNL}; everything it returns is an
L{vdetwist.interfaces.IVdePlug}.
"""

__version__ = "0.1.0"
