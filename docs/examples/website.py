"""
A twisted.web site as a host on a VDE network, with no tap, no namespace
and no root: the Python API of L{vdetwist.stack} (docs/vdestack.md runs it).

Usage: website.py VNL ADDRESS/N|dhcp DIRECTORY [PORT]

It opens a host stack on VNL, prints its addresses, serves DIRECTORY on
PORT (8080) of them, and answers pings, until interrupted.
"""

from __future__ import annotations

import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.web.server import Site
from twisted.web.static import File

from vdetwist.stack.api import openStack
from vdetwist.stack.config import StackConfigError


async def main(reactor, vnl: str, address: str, directory: str, port: str = "8080") -> None:
    try:
        stack = await openStack(reactor, vnl, ip=address)
    except StackConfigError as e:
        raise SystemExit(f"website.py: {e}")
    stack.listenTCP(int(port), Site(File(directory)))
    print(f"serving {directory} on port {port} of {', '.join(stack.addresses())}", flush=True)
    await stack.closed  # the network went away


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    react(lambda reactor, *argv: Deferred.fromCoroutine(main(reactor, *argv)), sys.argv[1:])
