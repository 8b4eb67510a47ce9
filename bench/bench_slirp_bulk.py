"""
The slirp engine's per-segment cost, in memory and deterministic: one TCP
connection of the slirp test harness (a L{twisted.internet.task.Clock} and
the in-memory host), N full-size segments from the guest to the host
(upload) and N from the host to the guest, each acknowledged by the guest
every second segment (download).  No sockets, no reactor: what is measured
is the engine's Python work per segment, so a change to its hot path shows
without the noise of the end-to-end benchmark (C{bench_slirp.py}).

    python3 bench/bench_slirp_bulk.py                 # N=20000, best of 5
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python3 bench/bench_slirp_bulk.py --repeat 1  # instructions (Ir)

Prints the best time per segment of each direction over the repeats; the
guest's frames are built outside the timed calls.
"""

from __future__ import annotations

import argparse
import struct
import time

from vdetwist.slirp import packets as P
from vdetwist.slirp.config import SlirpConfig
from vdetwist.slirp.testing import GATEWAY, Guest, Harness

MSS = 1460
SYN, ACK, PSH = P.TCP_SYN, P.TCP_ACK, P.TCP_PSH
M32 = 0xFFFFFFFF
GUEST_ISS = 1000
SPORT, DPORT = 40000, 80


def _open(h: Harness, g: Guest):
    """
    Connect the guest to the gateway; returns (host stream, engine ISS + 1).
    """
    options = struct.pack("!BBH", 2, 4, MSS) + bytes((1, 3, 3, 7))
    h.send(g.arpRequest(GATEWAY))
    h.frames.clear()
    h.send(g.tcp(GATEWAY, SPORT, DPORT, GUEST_ISS, 0, SYN, 65535, options))
    stream = h.host.streams[-1]
    stream.bufferLimit = None
    stream.accept()
    (synack,) = h.frames
    h.frames.clear()
    their = (struct.unpack_from("!I", synack, 14 + 20 + 4)[0] + 1) & M32
    h.send(g.tcp(GATEWAY, SPORT, DPORT, GUEST_ISS + 1, their, ACK, 65535))
    return stream, their


def upload(h: Harness, g: Guest, stream, their: int, count: int) -> float:
    payload = bytes(MSS)
    frames = [g.tcp(GATEWAY, SPORT, DPORT, (GUEST_ISS + 1 + i * MSS) & M32, their, ACK | PSH,
                    65535, b"", payload) for i in range(count)]
    engine = h.engine
    start = time.perf_counter()
    for i in range(0, count, 2):
        engine.input(frames[i])
        if i + 1 < count:
            engine.input(frames[i + 1])
        engine.flush()
        stream.consume()
    elapsed = time.perf_counter() - start
    assert len(stream.written) == count * MSS, len(stream.written)
    h.frames.clear()
    return elapsed


def download(h: Harness, g: Guest, stream, their: int, count: int) -> float:
    engine = h.engine
    mySeq = (GUEST_ISS + 1 + count * MSS) & M32  # after the upload
    got = 0
    want = count * MSS
    chunk = bytes(16 * MSS)
    elapsed = 0.0
    frames = h.frames
    while got < want:
        start = time.perf_counter()
        if not frames:
            stream.send(chunk)
        batch = frames[:]
        frames.clear()
        elapsed += time.perf_counter() - start
        acks = []
        for i, frame in enumerate(batch):
            total = (frame[16] << 8) | frame[17]
            hlen = (frame[14 + 20 + 12] >> 4) << 2
            got += total - 20 - hlen
            if i % 2 or i == len(batch) - 1:
                acked = (their + got) & M32
                acks.append(g.tcp(GATEWAY, SPORT, DPORT, mySeq, acked, ACK, 65535))
        start = time.perf_counter()
        for frame in acks:
            engine.input(frame)
        engine.flush()
        elapsed += time.perf_counter() - start
    return elapsed


def runOnce(count: int) -> tuple[float, float]:
    h = Harness(SlirpConfig(resolvConf="/nonexistent/resolv.conf", ipv6=False))
    g = Guest()
    stream, their = _open(h, g)
    up = upload(h, g, stream, their, count)
    down = download(h, g, stream, their, count)
    assert h.engine.stats["errors"] == 0
    return up, down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ups, downs = [], []
    for _ in range(args.repeat):
        up, down = runOnce(args.segments)
        ups.append(up)
        downs.append(down)
    n = args.segments
    print(f"segments {n}: upload {min(ups) / n * 1e6:.2f} us/segment, "
          f"download {min(downs) / n * 1e6:.2f} us/segment (best of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
