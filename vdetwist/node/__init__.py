"""
Switching nodes: hub, switch (vdeplug4 C{switch://} and vde2's
C{vde_switch}), multi and bonding.  Pure logic over plugs: no sockets.

  - L{Node} joins plugs (L{vdetwist.interfaces.IVdePlug}) as numbered ports
    and a host port, with an engine from L{vdetwist.node.engines};
  - L{MacTable} is the (MAC, VLAN) learning table.
"""

from vdetwist.node.engines import (
    BondingEngine,
    Engine,
    HubEngine,
    MultiEngine,
    SwitchEngine,
    TrunkSwitchEngine,
    netnodeEngine,
)
from vdetwist.node.mactable import (
    NOVLAN,
    MacEntry,
    MacTable,
    formatMac,
    parseMac,
    vde2Bucket,
    vdeplug4Bucket,
)
from vdetwist.node.node import (
    HostPlug,
    INodeObserver,
    LoggingObserver,
    Node,
    NodeObserver,
    Port,
    hostPair,
)

__all__ = [
    "BondingEngine",
    "Engine",
    "HubEngine",
    "MultiEngine",
    "SwitchEngine",
    "TrunkSwitchEngine",
    "netnodeEngine",
    "NOVLAN",
    "MacEntry",
    "MacTable",
    "formatMac",
    "parseMac",
    "vde2Bucket",
    "vdeplug4Bucket",
    "HostPlug",
    "INodeObserver",
    "LoggingObserver",
    "Node",
    "NodeObserver",
    "Port",
    "hostPair",
]
