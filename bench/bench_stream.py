#!/usr/bin/env python3
"""
Frames per second through a vde_plug stream cable, vdetwist's against the C
vde_plug (vdeplug4), in the same run and the same arrangement:

    producer --stdin--> [vde_plug ptp://X] --AF_UNIX dgram--> [vde_plug ptp://X] --stdout--> consumer

The producer writes N frames of one size, stream-encoded (2-byte length +
frame), as fast as the pipe takes them; the consumer counts the bytes coming
out of the other plug.  Throughput = frames delivered / time from the first
byte written to the last byte received.  Frames can be lost on the way
(a full unix datagram queue, net.unix.max_dgram_qlen = 10, when the reader is
slow), so delivered and sent are both counted and loss is reported.

Each (implementation, size) run is repeated and the median printed.  Run
from the project root:

    python3 bench/bench_stream.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import cpuSeconds, ourEnv, ourPlug

from vdetwist.wire.stream import StreamDecoder

#: Frames per run, by frame size: enough for ~1-2 s with the slower plug.
COUNTS = {64: 150_000, 1500: 50_000}
#: Give up on a run when nothing arrives for this long after the last write.
IDLE = 1.0
#: Bytes of the stream's end kept to check the last frame.
TAIL = 4096
#: Upper bound for one run.
RUN_TIMEOUT = 15.0


def cVdePlug() -> list[str]:
    path = shutil.which("vde_plug", path="/usr/bin:/usr/local/bin:/bin")
    if path is None:
        sys.exit("the C vde_plug is not installed (apt-get install vdeplug)")
    return [path]


def makeFrame(n: int, size: int) -> bytes:
    body = struct.pack(">I", n) * (size // 4 + 1)
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + body[: size - 14]


class Consumer(threading.Thread):
    """
    Reads a plug's stdout: decodes until started counting, then only counts
    bytes (all measured frames have the same size).
    """

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.frames: list[bytes] = []
        self.decoder = StreamDecoder(self.frames.append, lambda *a: None)
        self.counting = False
        self.bytes = 0
        self.last = 0.0
        self.tail = b""

    def run(self) -> None:
        read, fd = os.read, self.fd
        while True:
            try:
                data = read(fd, 1 << 20)
            except OSError:
                return
            if not data:
                return
            if self.counting:
                self.bytes += len(data)
                self.last = time.perf_counter()
                self.tail = (self.tail + data)[-TAIL:]
            else:
                self.decoder.feed(data)


def waitFor(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def runOnce(
    sender: list[str], receiver: list[str], size: int, count: int
) -> tuple[float, int, float, float]:
    """
    One run: returns (seconds, frames delivered, CPU seconds of the sending
    plug, of the receiving plug).
    """
    tmp = tempfile.mkdtemp(prefix="vdebench")
    path = os.path.join(tmp, "x")
    procs = []
    try:
        a = subprocess.Popen(sender + ["ptp://" + path], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, env=ourEnv(), process_group=0)
        procs.append(a)
        waitFor(lambda: os.path.exists(path), 10, "the first plug")
        b = subprocess.Popen(receiver + ["ptp://" + path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=ourEnv(), process_group=0)
        procs.append(b)
        waitFor(lambda: os.path.exists(path + "+"), 10, "the second plug")
        consumer = Consumer(b.stdout.fileno())
        consumer.start()
        # Probe until the cable carries frames (the first plug connects to
        # the second on its first send).
        probe = struct.pack(">H", size) + makeFrame(0xFFFFFFFF, size)
        deadline = time.monotonic() + 10
        while not consumer.frames:
            if time.monotonic() > deadline:
                raise RuntimeError("the cable does not carry frames")
            os.write(a.stdin.fileno(), probe)
            time.sleep(0.02)
        time.sleep(0.1)
        consumer.counting = True
        record = size + 2
        data = b"".join(struct.pack(">H", size) + makeFrame(n, size) for n in range(count))
        fd = a.stdin.fileno()
        view = memoryview(data)
        cpuA, cpuB = cpuSeconds(a.pid), cpuSeconds(b.pid)
        start = time.perf_counter()
        consumer.last = start
        for offset in range(0, len(data), 65536):
            os.write(fd, view[offset : offset + 65536])
        written = time.perf_counter()
        expected = count * record
        limit = written + RUN_TIMEOUT
        while consumer.bytes < expected:
            now = time.perf_counter()
            if now - max(consumer.last, written) > IDLE or now > limit:
                break
            time.sleep(0.002)
        delivered = consumer.bytes // record
        elapsed = (consumer.last if delivered else time.perf_counter()) - start
        cpuA, cpuB = cpuSeconds(a.pid) - cpuA, cpuSeconds(b.pid) - cpuB
        last = struct.pack(">H", size) + makeFrame(count - 1, size)
        if delivered == count and not consumer.tail.endswith(last):
            raise RuntimeError("the last frame delivered is not the last frame sent")
        return elapsed, delivered, cpuA, cpuB
    finally:
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median shown)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the frames")
    parser.add_argument("--no-mixed", dest="mixed", action="store_false",
                        help="skip the ours->C and C->ours runs (which show "
                        "what each side costs)")
    args = parser.parse_args()

    impls = {"C": cVdePlug(), "ours": ourPlug()}
    cases = [("C", "C"), ("ours", "ours")]
    if args.mixed:
        cases += [("ours", "C"), ("C", "ours")]
    results: dict[tuple[str, str, int], list[tuple[float, int, int, float, float]]] = {}
    began = time.monotonic()
    for _ in range(args.repeat):
        # Interleave the implementations so that load changes hit both.
        for size, count in COUNTS.items():
            count = count // 10 if args.quick else count
            for sender, receiver in cases:
                seconds, delivered, cpuA, cpuB = runOnce(impls[sender], impls[receiver], size, count)
                results.setdefault((sender, receiver, size), []).append(
                    (seconds, delivered, count, cpuA, cpuB))

    print(f"vde_plug stream cable: stdin -> vde_plug ptp:// -> vde_plug ptp:// -> stdout"
          f"  (median of {args.repeat}, {time.monotonic() - began:.0f} s total)")
    header = (f"{'size':>5} {'sender->receiver':<16} {'sent':>7} {'delivered':>9} {'loss':>6} "
              f"{'kframes/s':>10} {'Mbit/s':>8} {'ours/C':>7} {'CPU us/frame':>13} "
              f"{'sender':>7} {'receiver':>8}")
    print(header)
    print("-" * len(header))
    for size in COUNTS:
        base = None
        for sender, receiver in cases:
            runs = results[(sender, receiver, size)]
            fps = statistics.median(d / s if s > 0 else 0.0 for s, d, *_ in runs)
            sent = runs[0][2]
            delivered = statistics.median(d for _, d, *_ in runs)
            # µs per frame of both plugs, of the sender, of the receiver.
            perFrame = [[c / d * 1e6 if d else float("nan") for c in (a + b, a, b)]
                        for _, d, _, a, b in runs]
            cpu, cpuA, cpuB = (statistics.median(column) for column in zip(*perFrame))
            loss = 1 - delivered / sent
            if (sender, receiver) == ("C", "C"):
                base = fps
            ratio = f"{fps / base:.2f}" if base and (sender, receiver) != ("C", "C") else ""
            print(f"{size:>5} {sender + '->' + receiver:<16} {sent:>7} {delivered:>9.0f} "
                  f"{loss:>6.1%} {fps / 1000:>10.1f} {fps * size * 8 / 1e6:>8.1f} {ratio:>7} "
                  f"{cpu:>13.2f} {cpuA:>7.2f} {cpuB:>8.2f}")
    print("Mbit/s counts frame bytes only; CPU = run time of both vde_plugs, then of each "
          "(/proc/PID/task/*/schedstat, ns), per delivered frame.")


if __name__ == "__main__":
    main()
