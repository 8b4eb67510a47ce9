"""
vdetwist's C{clib://VNL}: any VNL opened by the installed C libvdeplug
(loaded lazily: this dropin imports fine without it).
"""

from vdetwist.backends.clib import CLibBackend

clib = CLibBackend()
