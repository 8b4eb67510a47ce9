"""
The vde2 switch connection protocol (C{vde://}): a control stream on
C{<dir>/ctl} over which a client asks for a port, then one datagram socket
pair per connection carrying one Ethernet frame per datagram.

  - L{vdetwist.vde2.protocol}: the request and reply wire formats (sans-IO);
  - L{vdetwist.vde2.client}: the C{vde://} client plug;
  - L{vdetwist.vde2.server}: L{VdeServer}, which accepts C{vde://} clients
    (real QEMU, the C C{vde_plug}, ours) as ports of a
    L{vdetwist.node.Node}; used by C{twistd vde} and by C{hub://},
    C{switch://}, C{multi://} and C{bonding://}.
"""
