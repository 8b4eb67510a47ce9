"""
A user-mode TCP/IP NAT engine (the C{slirp://} backend), written in Python.

Layers, bottom up: L{checksum}, L{packets} (header formats and frame
builders), L{link} (Ethernet, ARP, NDP, resolution queue), L{ipv4} /
L{ipv6} (validation, reassembly), L{dhcp} (DHCPv4, DHCPv6 information
replies, router advertisements), L{dns} (resolver selection), L{udp} (NAT),
L{tcp} (guest-facing TCP), L{icmp} (echo NAT), L{tftp}; L{engine} ties them
together without doing any I/O; L{host} is the Twisted implementation of
the host sockets the engine uses, L{memhost} an in-memory one for tests.
"""
