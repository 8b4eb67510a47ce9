"""
Rootless networking, three ways, for the same job: a command in a network
namespace of its own sends bytes over TCP to a server on the host's
127.0.0.1, through

  - C{vdens slirp://} (vdetwist: our slirp behind a tap, in Python),
  - C{slirp4netns} (libslirp in C, beside C{unshare -Urn}),
  - C{pasta} (passt's namespace mode, in C, splicing sockets).

For each it prints the median, over C{--repeat} runs, of the start-up (from
launching the tool to the server accepting the command's connection, the
command configuring the interface by itself where the tool does not) and
of the goodput of C{--mib} MiB.  The machine is shared and noisy: compare
within one run.

    python3 bench/bench_rootless.py [--mib 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Run in the namespace: connect to HOST:PORT (HOST "gateway": the default
#: route's), send MIB MiB, wait for the server to close.
SENDER = """
import socket, struct, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) << 20
if host == "gateway":
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            host = socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
for _ in range(200):
    try:
        c = socket.create_connection((host, port), timeout=2)
        break
    except OSError:
        time.sleep(0.02)
chunk = bytes(1 << 16)
for _ in range(size >> 16):
    c.sendall(chunk)
c.shutdown(socket.SHUT_WR)
c.recv(1)
"""


class Sink:
    """
    A TCP server on 127.0.0.1 that times each connection: accepted when,
    how many bytes, all received when.
    """

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.results: list[tuple[float, int, float]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.server.accept()
            accepted = time.monotonic()
            total = 0
            while data := conn.recv(1 << 20):
                total += len(data)
            self.results.append((accepted, total, time.monotonic()))
            conn.close()


def vdens(sink: Sink, mib: int) -> list[str]:
    script = ("ip addr add 10.0.2.15/24 dev vde0 && ip route add default via 10.0.2.2 && "
              f"exec /usr/bin/python3 -c '{SENDER}' 10.0.2.2 {sink.port} {mib}")
    return [sys.executable, "-m", "vdetwist.scripts.vdens", "slirp://", "sh", "-c", script]


def pasta(sink: Sink, mib: int) -> list[str]:
    return [shutil.which("pasta"), "--config-net", "-q", "--", "/usr/bin/python3", "-c", SENDER,
            "gateway", str(sink.port), str(mib)]


def slirp4netns(sink: Sink, mib: int, mtu: int) -> list[str]:
    # The namespace's first process waits (reading a FIFO) until
    # slirp4netns has configured tap0, then sends.
    return [sys.executable, "-c", f"""
import os, subprocess, sys, tempfile
d = tempfile.mkdtemp()
fifo = os.path.join(d, "go")
os.mkfifo(fifo)
ns = subprocess.Popen(["unshare", "-Urn", "sh", "-c",
    'read x < {{0}} && exec /usr/bin/python3 -c "$0" 10.0.2.2 {sink.port} {mib}'.format(fifo),
    {SENDER!r}])
r, w = os.pipe()
slirp = subprocess.Popen(["slirp4netns", "--configure", "--mtu={mtu}", "--ready-fd", str(w),
                          str(ns.pid), "tap0"], pass_fds=[w], stdout=subprocess.DEVNULL)
os.close(w)
os.read(r, 1)
open(fifo, "w").write("go\\n")
status = ns.wait()
slirp.terminate(); slirp.wait()
os.unlink(fifo); os.rmdir(d)
sys.exit(status)
"""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sink = Sink()
    env = dict(os.environ, PYTHONPATH=ROOT)
    tools = {"vdens slirp://": lambda: vdens(sink, args.mib)}
    if shutil.which("slirp4netns"):
        tools["slirp4netns"] = lambda: slirp4netns(sink, args.mib, 1500)
        tools["slirp4netns --mtu=65520"] = lambda: slirp4netns(sink, args.mib, 65520)
    if shutil.which("pasta"):
        tools["pasta"] = lambda: pasta(sink, args.mib)
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
    for _ in range(args.repeat):
        for name, argv in tools.items():
            before = len(sink.results)
            start = time.monotonic()
            result = subprocess.run(argv(), env=env, cwd=ROOT, capture_output=True, text=True,
                                    timeout=300)
            if result.returncode != 0 or len(sink.results) == before:
                sys.exit(f"{name} failed ({result.returncode}): {result.stderr.strip()}")
            accepted, total, done = sink.results[-1]
            rows[name].append((accepted - start, total * 8 / (done - accepted) / 1e6))
    print(f"{'tool':<26}{'start-up ms':>12}{'goodput Mbit/s':>16}   ({args.mib} MiB, "
          f"median of {args.repeat})")
    for name, values in rows.items():
        print(f"{name:<26}{statistics.median(v[0] for v in values) * 1000:>12.0f}"
              f"{statistics.median(v[1] for v in values):>16.0f}")


if __name__ == "__main__":
    main()
