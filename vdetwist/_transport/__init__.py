"""
What the backends, the commands and the switch share (private): the plug
over one descriptor (L{fdplug}) and over a datagram socket (L{dgram}), the
pipe transports of the stream plugs (L{pipes}), the AF_UNIX socket files
(L{sockets}), the multicast socket setup and the learning plug of the
VXLAN-style overlays (L{multicast}, L{overlay}), the tun/tap device and
interface helpers (L{device}), delivering and sending vnet frames
(L{vnet}), the plug of the nesting schemes (L{nested}) and the cheaper event
dispatch (L{dispatch}).  Backends import from here,
never from each other.
"""
