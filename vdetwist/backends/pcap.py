"""
C{pcap://IFNAME}: capture and inject raw Ethernet frames on an existing
interface through an C{AF_PACKET} socket (C{SOCK_RAW}, C{ETH_P_ALL}); no
libpcap.

The interface is put in promiscuous mode for as long as the plug is open
(C{PACKET_ADD_MEMBERSHIP} with C{PACKET_MR_PROMISC}, which the kernel undoes
when the socket closes).  Frames the host sends on the interface, including
the ones this plug injects, are not captured: C{PACKET_IGNORE_OUTGOING}
keeps them out of the socket where the kernel has it (Linux 4.20+), and the
C{pkttype} of every received frame is checked as well.  The kernel strips
802.1Q/802.1ad tags from received frames before packet sockets see them; the
tag is put back from C{PACKET_AUXDATA}, so VLAN frames pass unchanged.

Limits, as with any packet-socket capture: frames that offloads left larger
than C{VDE_ETHBUFSIZE} (GRO/GSO) are discarded and counted, and frames from
a local stack with checksum offload carry unfinished checksums; turn the
offloads off on the sending side (C{ethtool -K PEER tx off gro off}) when
that matters.  Interface down: injected frames are dropped and counted, the
plug stays open; interface deleted: the plug closes with a
L{vdetwist.errors.PlugLost}.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from twisted.internet.defer import succeed
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from vdetwist._transport.device import FramePlug, checkInterfaceName, interfaceExists
from vdetwist._transport.fdplug import GONE, HARMLESS, READ_BATCH, READ_SIZE
from vdetwist.errors import VdeError, VNLError
from vdetwist.interfaces import IVdeBackend
from vdetwist.plug import ETH_HDRLEN, VDE_ETHBUFSIZE
from vdetwist.reference import SchemeReference

REFERENCE = SchemeReference(
    scheme="pcap",
    synopsis="pcap://IFNAME",
    description=(
        "Raw capture and injection on the existing interface IFNAME through an "
        "`AF_PACKET` socket (no libpcap), in promiscuous mode while the plug is "
        "open. Frames the host itself sends there are not captured; VLAN tags the "
        "kernel strips are put back. Needs CAP_NET_RAW."
    ),
    examples=(("vde_plug pcap://eth1 vde:///tmp/sw", "(a command) bridge eth1 into a switch"),),
    differences=(
        "A vdetwist scheme: vdeplug4 has the separate `vde_pcapplug` tool instead.",
    ),
)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
SIOCGIFINDEX = 0x8933
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_8021Q = 0x8100

log = Logger()

#: C{struct packet_mreq}: ifindex, type, address length, address.
_MREQ = struct.Struct("iHH8s")
#: C{struct tpacket_auxdata}.
_AUXDATA = struct.Struct("IIIHHHH")
_VLAN = struct.Struct(">HH")
_IFREQ_INDEX = struct.Struct("16si20x")
#: Room for the auxdata control message.
_ANCILLARY = socket.CMSG_SPACE(_AUXDATA.size)
#: Receive buffer asked for: a burst of frames must fit while the reactor
#: is busy elsewhere (the kernel caps it at net.core.rmem_max).
RECEIVE_BUFFER = 4 * 1024 * 1024


class PacketPlug(FramePlug):
    """
    A plug on an C{AF_PACKET} socket bound to one interface.
    """

    def __init__(self, reactor, sock: socket.socket, ifname: str, ifindex: int,
                 description: str, ignoresOutgoing: bool) -> None:
        super().__init__(reactor, sock.fileno(), ifname, description)
        self.socket = sock
        self.ifindex = ifindex
        self.ignoresOutgoing = ignoresOutgoing

    def doRead(self) -> None:
        recvmsg = self.socket.recvmsg
        stats = self.stats
        for _ in range(READ_BATCH):
            try:
                frame, ancillary, _, address = recvmsg(READ_SIZE, _ANCILLARY)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in HARMLESS:
                    continue
                self._readFailed(e)
                return
            if address[2] == PACKET_OUTGOING:
                continue
            for level, kind, data in ancillary:
                if kind == PACKET_AUXDATA and level == SOL_PACKET:
                    status, _, _, _, _, tci, tpid = _AUXDATA.unpack(data)
                    if status & TP_STATUS_VLAN_VALID:
                        if not status & TP_STATUS_VLAN_TPID_VALID:
                            tpid = ETH_P_8021Q
                        frame = frame[:12] + _VLAN.pack(tpid, tci) + frame[12:]
            if len(frame) > VDE_ETHBUFSIZE:
                stats.discarded += 1
                continue
            stats.received += 1
            self.receiver.frameReceived(frame)
            if self.paused or self.closed:
                return

    def send(self, frame: bytes) -> None:
        if len(frame) > VDE_ETHBUFSIZE or len(frame) < ETH_HDRLEN or self.closed:
            self.stats.dropped += 1
            return
        try:
            self.socket.send(frame)
        except OSError as e:
            self.stats.dropped += 1
            if e.errno in GONE and not interfaceExists(self.socket, self.ifindex):
                self._goneLater()
        else:
            self.stats.sent += 1

    def _readFailed(self, error: OSError) -> None:
        # The kernel reports ENETDOWN once both when the interface goes down
        # (it keeps the socket and resumes when it comes back up) and when
        # it is deleted (the socket is dead): tell them apart.
        if error.errno == errno.ENETDOWN or error.errno in GONE:
            if interfaceExists(self.socket, self.ifindex):
                log.info("{plug}: {ifname} is down", plug=self.description,
                         ifname=self.ifname)
                return
            self._gone()
            return
        super()._readFailed(error)

    def connectionLost(self, reason: Failure) -> None:
        """
        EPOLLERR: a pending socket error (ENETDOWN).  Collect it; go on
        reading if the interface still exists.
        """
        if self.closed:
            return
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code in (0, errno.ENETDOWN) and interfaceExists(self.socket, self.ifindex):
            if code:
                log.info("{plug}: {ifname} is down", plug=self.description,
                         ifname=self.ifname)
            if self.receiving and not self.paused:
                self.reactor.addReader(self)
            return
        if code in (0, errno.ENETDOWN) or code in GONE:
            self._gone()
        else:
            self._fail(f"{self.ifname}: {errno.errorcode.get(code, code)}", code)

    def _closeDescriptor(self, fd: int) -> None:
        self.socket.close()


def openPacketSocket(ifname: str, promiscuous: bool = True) -> tuple[socket.socket, int, bool]:
    """
    An C{AF_PACKET} socket bound to C{ifname} (in the calling thread's
    network namespace), non-blocking, with auxdata and, where the kernel
    has it, outgoing frames ignored.  Returns the socket, the interface
    index and whether outgoing frames are ignored by the kernel.
    """
    try:
        checkInterfaceName(ifname)
    except ValueError as e:
        raise VdeError(str(e), errno.EINVAL) from None
    try:
        # Protocol 0 until bound: nothing is queued from other interfaces.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    except PermissionError as e:
        raise VdeError(
            "capturing needs CAP_NET_RAW: run as root or give the capability "
            "(setcap cap_net_raw+ep, or ambient capabilities)",
            e.errno or errno.EPERM,
        ) from None
    try:
        try:
            sock.bind((ifname, ETH_P_ALL))
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise VdeError(f"there is no interface named {ifname!r}", errno.ENODEV) from None
            raise VdeError(f"cannot bind to {ifname}: {e.strerror}", e.errno or errno.EIO) from None
        ifindex = _ifindex(sock, ifname)
        ignoresOutgoing = True
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            ignoresOutgoing = False
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except OSError:
            pass
        if promiscuous:
            sock.setsockopt(
                SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                _MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b""),
            )
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, ifindex, ignoresOutgoing


def _ifindex(sock: socket.socket, ifname: str) -> int:
    """
    The index of C{ifname} in C{sock}'s network namespace (SIOCGIFINDEX).
    """
    answer = fcntl.ioctl(sock.fileno(), SIOCGIFINDEX, _IFREQ_INDEX.pack(os.fsencode(ifname), 0))
    return _IFREQ_INDEX.unpack(answer)[1]


@implementer(IPlugin, IVdeBackend)
class PcapBackend:
    schemes = ("pcap",)
    summary = "raw capture and injection on an interface (AF_PACKET, promiscuous)"
    references = (REFERENCE,)

    def open(self, reactor, vnl, description, args, registry):
        if not vnl.argument:
            raise VNLError(vnl.text, "", "pcap:// needs an interface name, e.g. pcap://eth1")
        sock, ifindex, ignores = openPacketSocket(vnl.argument)
        return succeed(PacketPlug(reactor, sock, vnl.argument, ifindex, vnl.text, ignores))
