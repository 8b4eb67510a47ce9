"""
The cost of the descriptor plug layer per frame and per wake-up, in one
process and without other programs: frames go into one AF_UNIX datagram
socket pair, a L{vdetwist._transport.dgram.DatagramPlug} reads them when the epoll
reactor says so and hands them to a second one, which sends them out of
another pair; the bench writes and reads the far ends itself.

C{--plug frame} uses the device plug instead (what C{tap://} is: C{os.read}
and C{os.write} on the descriptor, here a socket's).  With C{--burst 1}
every frame is its own wake-up (what a plug sees at
10 kframes/s), with C{--burst 64} a wake-up drains 64 (a flood).  It prints
CPU microseconds per frame (user + system, C{getrusage}); for instruction
counts run it under C{valgrind --tool=callgrind} at two frame counts and
divide the difference (see bench/README.md).  The vdetwist it measures is
whichever C{PYTHONPATH} gives (without it, the installed one).
"""

from __future__ import annotations

import argparse
import resource
import socket

from twisted.internet.epollreactor import EPollReactor

from vdetwist._transport.dgram import DatagramPlug

try:
    from vdetwist._transport.device import FramePlug
except ImportError:  # a checkout from before vdetwist._transport
    from vdetwist.backends.tap import FramePlug


class Forward:
    """
    Passes every frame received to C{plug}.
    """

    def __init__(self, plug) -> None:
        self.frameReceived = plug.send

    def plugClosed(self, reason) -> None:
        pass


def makePlug(kind: str, reactor, sock: socket.socket, name: str):
    if kind == "frame":
        sock.setblocking(False)
        return FramePlug(reactor, sock.detach(), name, name)
    return DatagramPlug(reactor, sock, name)


def run(frames: int, burst: int, size: int, kind: str = "dgram") -> float:
    """
    Move C{frames} frames through two plugs, C{burst} per wake-up; return
    the CPU seconds it took.
    """
    reactor = EPollReactor()
    inOurs, inTheirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    outOurs, outTheirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (inOurs, inTheirs, outOurs, outTheirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    outTheirs.setblocking(False)
    sending = makePlug(kind, reactor, outOurs, "out")
    receiving = makePlug(kind, reactor, inOurs, "in")
    receiving.startReceiving(Forward(sending))
    frame = bytes(range(256)) * (size // 256) + bytes(size % 256)
    send = inTheirs.send
    recv = outTheirs.recv
    got = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(frames // burst):
        for _ in range(burst):
            send(frame)
        reactor.doIteration(0)
        try:
            while True:
                recv(65536)
                got += 1
        except BlockingIOError:
            pass
    after = resource.getrusage(resource.RUSAGE_SELF)
    if got != frames // burst * burst:
        raise SystemExit(f"lost frames: {got} of {frames // burst * burst} arrived")
    receiving.close()
    sending.close()
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200000)
    parser.add_argument("--burst", type=int, default=1, help="frames per wake-up")
    parser.add_argument("--size", type=int, default=60, help="frame size in bytes")
    parser.add_argument("--plug", choices=("dgram", "frame"), default="dgram",
                        help="the datagram socket plug or the device plug")
    options = parser.parse_args()
    seconds = run(options.frames, options.burst, options.size, options.plug)
    print(f"{options.plug} burst {options.burst}: {seconds / options.frames * 1e6:.2f} CPU us/frame "
          f"({options.frames} frames of {options.size} bytes)")


if __name__ == "__main__":
    main()
