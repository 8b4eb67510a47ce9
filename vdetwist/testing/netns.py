"""
Small helpers for network namespaces and virtual interfaces, for tests and
for users who wire taps, veths and macvtaps to vdetwist plugs.  They need
root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and use pyroute2 (netlink; the
C{netns} extra, C{pip install 'vdetwist[netns]'}) rather than the C{ip}
command, which is only used to run commands inside a namespace (C{ip netns
exec}).

Everything that creates something returns a handle whose C{remove()} undoes
it, may be called more than once, and never fails for something already
gone; handles are also context managers::

    with Namespace.create() as ns:
        with createVeth("va", "vb", peerNamespace=ns):
            setUp("va")
            ns.run(["ip", "link"])

    # in a trial test
    ns = Namespace.create()
    self.addCleanup(ns.remove)

Namespaces are named as C{ip netns} names them (C{/run/netns/NAME}), so
C{ip netns exec NAME ...} and C{ip -n NAME ...} work on them too.  A
C{namespace} argument is a L{Namespace}, a name, or C{None} for the
caller's own namespace.

L{entered} moves the I{calling thread} into a namespace for the length of a
C{with} block: a socket or tap opened there stays in that namespace after
the block, so a plug can live in a namespace while its process does not.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import random
import subprocess
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence, Union

from pyroute2 import IPRoute
from pyroute2 import netns as _pyroute2netns
from pyroute2.netlink.exceptions import NetlinkError

from vdetwist.backends.tap import makePersistentTap

#: Where C{ip netns} keeps its namespaces.
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count(1)


def uniqueName(prefix: str = "vt") -> str:
    """
    A name unlikely to clash with anybody else's, short enough (at most 15
    bytes) to serve as an interface name too.
    """
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"[:15]


class Namespace:
    """
    A named network namespace.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Namespace {self.name}>"

    @classmethod
    def create(cls, name: Optional[str] = None, loopback: bool = True,
               ipv6: bool = False) -> "Namespace":
        """
        Make a new namespace (an existing one of that name is an error).

        @param loopback: bring C{lo} up.
        @param ipv6: leave IPv6 on; by default it is off in the namespace
            (C{disable_ipv6} for all and new interfaces), so that tests see
            no router solicitations or MLD reports they did not send.
        """
        name = name or uniqueName("vtns")
        if os.path.exists(os.path.join(NETNS_DIR, name)):
            raise FileExistsError(errno.EEXIST, f"namespace {name} exists")
        _pyroute2netns.create(name)
        namespace = cls(name)
        try:
            if not ipv6:
                with entered(namespace):
                    for key in ("all", "default"):
                        _writeSysctl(f"net/ipv6/conf/{key}/disable_ipv6", "1")
            if loopback:
                setUp("lo", namespace)
        except BaseException:
            namespace.remove()
            raise
        return namespace

    def remove(self) -> None:
        """
        Delete the namespace; what is left in it goes too (veths, taps,
        macvtaps; a physical interface would return to the root namespace).
        """
        try:
            _pyroute2netns.remove(self.name)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise

    def __enter__(self) -> "Namespace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def command(self, argv: Sequence[str]) -> list[str]:
        """
        C{argv} prefixed so that it runs in this namespace.
        """
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """
        C{subprocess.run} C{argv} in this namespace.
        """
        return subprocess.run(self.command(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """
        Start C{argv} in this namespace; the caller waits for it.
        """
        return subprocess.Popen(self.command(argv), **kwargs)


NamespaceLike = Union[Namespace, str, None]


def _name(namespace: NamespaceLike) -> Optional[str]:
    if isinstance(namespace, Namespace):
        return namespace.name
    return namespace


def _writeSysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


@contextmanager
def entered(namespace: NamespaceLike) -> Iterator[None]:
    """
    Run the body with the calling thread in C{namespace} (nothing changes
    for C{None}), and return it to its own namespace afterwards, whatever
    happens.  Keep the body short and synchronous: the reactor's thread is
    in the namespace while it runs.
    """
    name = _name(namespace)
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "the thread's own namespace")
    finally:
        os.close(own)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns into {what}: {os.strerror(code)}")


@contextmanager
def routing(namespace: NamespaceLike = None) -> Iterator[IPRoute]:
    """
    A pyroute2 C{IPRoute} working in C{namespace}, closed afterwards.
    """
    name = _name(namespace)
    ipr = IPRoute() if name is None else IPRoute(netns=name)
    try:
        yield ipr
    finally:
        ipr.close()


def ifindex(ifname: str, namespace: NamespaceLike = None) -> int:
    """
    The index of C{ifname}; C{LookupError} if there is none.
    """
    with routing(namespace) as ipr:
        found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname} in {_name(namespace) or 'this namespace'}")
    return found[0]


def linkInfo(ifname: str, namespace: NamespaceLike = None) -> dict[str, Any]:
    """
    Some facts about C{ifname}: C{index}, C{flags}, C{mtu}, C{address},
    C{operstate}, C{kind}.
    """
    with routing(namespace) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LookupError(f"no interface {ifname}")
        (link,) = ipr.get_links(found[0])
    info = link.get_attr("IFLA_LINKINFO")
    return {
        "index": link["index"],
        "flags": link["flags"],
        "mtu": link.get_attr("IFLA_MTU"),
        "address": link.get_attr("IFLA_ADDRESS"),
        "operstate": link.get_attr("IFLA_OPERSTATE"),
        "kind": info.get_attr("IFLA_INFO_KIND") if info is not None else None,
    }


def macAddress(ifname: str, namespace: NamespaceLike = None) -> bytes:
    """
    The MAC address of C{ifname}, as 6 bytes.
    """
    return bytes.fromhex(linkInfo(ifname, namespace)["address"].replace(":", ""))


class LinkHandle:
    """
    An interface made by these helpers; L{remove} deletes it.

    @ivar name: its name now.
    @ivar namespace: the namespace it is in now (C{None}: the caller's).
    """

    def __init__(self, name: str, namespace: NamespaceLike = None) -> None:
        self.name = name
        self.namespace = _name(namespace)

    def __repr__(self) -> str:
        return f"<LinkHandle {self.name} in {self.namespace or 'own namespace'}>"

    def remove(self) -> None:
        removeLink(self.name, self.namespace)

    def moveTo(self, namespace: NamespaceLike) -> "LinkHandle":
        moveLink(self.name, namespace, self.namespace)
        self.namespace = _name(namespace)
        return self

    def __enter__(self) -> "LinkHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def removeLink(ifname: str, namespace: NamespaceLike = None) -> None:
    """
    Delete C{ifname}; nothing happens if it (or its namespace) is gone.
    """
    name = _name(namespace)
    if name is not None and not os.path.exists(os.path.join(NETNS_DIR, name)):
        return
    try:
        with routing(namespace) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if found:
                ipr.link("del", index=found[0])
    except NetlinkError as e:
        if e.code not in (errno.ENODEV, errno.ENOENT):
            raise


def createTap(name: str, namespace: NamespaceLike = None,
              owner: Optional[int] = None, group: Optional[int] = None) -> LinkHandle:
    """
    Create a persistent tap, as C{ip tuntap add dev NAME mode tap [user U]
    [group G]}; it stays until removed even when nobody has it open.
    """
    with entered(namespace):
        actual = makePersistentTap(name, owner, group)
    return LinkHandle(actual, namespace)


def createVeth(name: str, peer: str, namespace: NamespaceLike = None,
               peerNamespace: NamespaceLike = None) -> LinkHandle:
    """
    Create a veth pair C{name} (in C{namespace}) and C{peer} (in
    C{peerNamespace}, by default the same).  Removing either end removes
    both; the handle returned is for C{name}.
    """
    peerNamespace = namespace if peerNamespace is None else peerNamespace
    peerSpec: dict[str, Any] = {"ifname": peer}
    if _name(peerNamespace) != _name(namespace) and _name(peerNamespace) is not None:
        peerSpec["net_ns_fd"] = _name(peerNamespace)
    with routing(namespace) as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=peerSpec)
    return LinkHandle(name, namespace)


def createMacvtap(name: str, lower: str, namespace: NamespaceLike = None,
                  mode: str = "bridge") -> LinkHandle:
    """
    Create the macvtap C{name} on C{lower} (same namespace); its character
    device is C{/dev/tap<index>}.
    """
    with routing(namespace) as ipr:
        (lowerIndex,) = ipr.link_lookup(ifname=lower) or [None]
        if lowerIndex is None:
            raise LookupError(f"no interface {lower}")
        # The device node is named after the ifindex, which every namespace
        # counts from 1: a namespace being torn down (the kernel does that
        # later, in a work queue) may still hold /dev/tap4, and a new
        # macvtap with index 4 then gets no node.  Ask for an index no node
        # has.
        ipr.link("add", ifname=name, kind="macvtap", link=lowerIndex,
                 macvtap_mode=mode, index=_freeTapIndex())
    return LinkHandle(name, namespace)


def _freeTapIndex() -> int:
    """
    An interface index above those namespaces start from whose
    C{/dev/tap<index>} node does not exist.
    """
    while True:
        index = random.randrange(10_000, 1_000_000)
        if not os.path.exists(f"/dev/tap{index}"):
            return index


def moveLink(ifname: str, to: NamespaceLike, namespace: NamespaceLike = None) -> None:
    """
    Move C{ifname} from C{namespace} into C{to} (C{None}: the caller's own
    namespace, i.e. the one this process started in).
    """
    target = _name(to)
    with routing(namespace) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname) or [None]
        if index is None:
            raise LookupError(f"no interface {ifname}")
        if target is None:
            ipr.link("set", index=index, net_ns_pid=os.getpid())
        else:
            ipr.link("set", index=index, net_ns_fd=target)


def setUp(ifname: str, namespace: NamespaceLike = None, mtu: Optional[int] = None,
          up: bool = True) -> None:
    """
    Bring C{ifname} up (or down), optionally setting its MTU first.
    """
    with routing(namespace) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname) or [None]
        if index is None:
            raise LookupError(f"no interface {ifname}")
        if mtu is not None:
            ipr.link("set", index=index, mtu=mtu)
        ipr.link("set", index=index, state="up" if up else "down")


def addAddress(ifname: str, address: str, namespace: NamespaceLike = None) -> None:
    """
    Add C{address} (C{"10.77.0.1/24"}) to C{ifname}.
    """
    ip, _, prefix = address.partition("/")
    with routing(namespace) as ipr:
        (index,) = ipr.link_lookup(ifname=ifname) or [None]
        if index is None:
            raise LookupError(f"no interface {ifname}")
        ipr.addr("add", index=index, address=ip,
                 prefixlen=int(prefix or (128 if ":" in ip else 32)))


def waitOperational(ifname: str, namespace: NamespaceLike = None,
                    timeout: float = 5.0) -> None:
    """
    Wait until C{ifname} is up and able to pass frames (operational state
    up, or unknown for taps with a reader), which the kernel settles a
    little after C{setUp}.  Blocks the calling thread, polling every 20 ms;
    C{TimeoutError} after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        info = linkInfo(ifname, namespace)
        if info["flags"] & 0x1 and info["operstate"] in ("UP", "UNKNOWN"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{ifname} is not operational after {timeout}s "
                f"(operstate {info['operstate']})"
            )
        time.sleep(0.02)


def run(namespace: NamespaceLike, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """
    C{subprocess.run} C{argv} in C{namespace} (C{None}: right here).
    """
    name = _name(namespace)
    if name is None:
        return subprocess.run(list(argv), **kwargs)
    return Namespace(name).run(argv, **kwargs)
