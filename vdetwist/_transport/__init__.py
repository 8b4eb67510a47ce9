"""
What the descriptor-backed plugs share (private): the plug over one
descriptor (L{fdplug}), the multicast socket setup and the learning plug of
the VXLAN-style overlays (L{multicast}, L{overlay}), the tun/tap device and
interface helpers (L{device}) and the cheaper event dispatch (L{dispatch}).
Backends import from here, never from each other.
"""
