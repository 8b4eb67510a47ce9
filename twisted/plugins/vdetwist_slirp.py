"""
vdetwist's user-mode networking: C{slirp://}.
"""

from vdetwist.backends.slirp import SlirpBackend

slirp = SlirpBackend()
