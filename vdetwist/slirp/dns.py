"""
Where the DNS proxy sends queries: the first name server of the right
family in resolv.conf (re-read when the file changes).

Queries to the virtual DNS address, over UDP or TCP, are relayed by the NAT
like any other flow, with the destination replaced by the resolver (a
loopback resolver such as systemd-resolved's 127.0.0.53 works: the host
socket reaches it like any other address).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Callable, Optional

#: Look at the file's modification time at most this often (seconds).
RECHECK_INTERVAL = 1.0


def parseResolvConf(text: str) -> list[str]:
    """
    The C{nameserver} addresses in resolv.conf text, in order (scoped
    IPv6 addresses lose their scope; unusable entries are skipped).
    """
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        address = fields[1].split("%", 1)[0]
        try:
            ipaddress.ip_address(address)
        except ValueError:
            continue
        found.append(address)
    return found


class Resolvers:
    """
    The host's name servers, from C{path}.

    @param now: the clock, for rate-limiting the file checks.
    """

    def __init__(self, path: str, now: Callable[[], float]) -> None:
        self.path = path
        self.now = now
        self._stamp: Optional[tuple] = None
        self._checked = float("-inf")
        self.servers: list[str] = []

    def _refresh(self) -> None:
        now = self.now()
        if now - self._checked < RECHECK_INTERVAL and self._stamp is not None:
            return
        self._checked = now
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp == self._stamp:
                return
            with open(self.path, encoding="utf-8", errors="replace") as f:
                self.servers = parseResolvConf(f.read())
            self._stamp = stamp
        except OSError:
            self.servers = []
            self._stamp = ()

    def first(self, family: int) -> Optional[str]:
        """
        The first name server of C{family} (4 or 6).
        """
        self._refresh()
        for server in self.servers:
            if (":" in server) == (family == 6):
                return server
        return None

    def forFamily(self, family: int) -> Optional[str]:
        """
        The resolver for queries to the DNS address of C{family}: the first
        of that family, else the first of the other one (so IPv6 guests can
        resolve on a host with only IPv4 name servers).
        """
        return self.first(family) or self.first(10 - family)

    def has6(self) -> bool:
        return self.first(6) is not None
