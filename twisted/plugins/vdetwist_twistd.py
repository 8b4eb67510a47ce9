"""
C{twistd vde}: a vde_switch-compatible switch (see L{vdetwist.service}).
"""

from twisted.application.service import ServiceMaker

vde = ServiceMaker(
    "vdetwist switch",
    "vdetwist.service",
    "A switch compatible with vde2's vde_switch (vde:// clients, management console).",
    "vde",
)
