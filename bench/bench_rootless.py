"""
Rootless networking, several ways, for the same job: a command in a network
namespace of its own sends bytes over TCP to a server on the host's
127.0.0.1, then fetches as many from another, through

  - C{vdens slirp://} (vdetwist: our slirp behind a tap, in Python), with
    the tap's offloads (the default: 64 KiB super-frames) and with
    C{--no-offload} (one MTU frame per read and write),
  - C{slirp4netns} (libslirp in C, beside C{unshare -Urn}), at MTU 1500 and
    at 65520 (rootless podman's setting),
  - C{pasta} (passt's namespace mode, in C, splicing sockets).

For each it prints the median, over C{--repeat} runs, of the start-up (from
launching the tool to the server accepting the command's first connection,
the command configuring the interface by itself where the tool does not)
and of the goodput of C{--mib} MiB each way (up: until the server has read
it all; down: until the command has, and closed).  The machine is shared and
noisy: compare within one run.

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

#: Run in the namespace: connect to HOST:UP (HOST "gateway": the default
#: route's), send MIB MiB and wait for the server to close; then connect to
#: HOST:DOWN and read until the server closes.
SENDER = """
import socket, struct, sys, time
host, up, down, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) << 20
if host == "gateway":
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            host = socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
def connect(port):
    for _ in range(200):
        try:
            return socket.create_connection((host, port), timeout=30)
        except OSError:
            time.sleep(0.02)
    sys.exit(f"cannot connect to {host}:{port}")
c = connect(up)
chunk = bytes(1 << 16)
for _ in range(size >> 16):
    c.sendall(chunk)
c.shutdown(socket.SHUT_WR)
try:
    c.recv(1)
except ConnectionResetError:
    pass  # the server read it all and closed; pasta may pass that on as a reset
c.close()
c = connect(down)
while c.recv(1 << 20):
    pass
c.close()
"""


class Sink:
    """
    Two TCP servers on 127.0.0.1 that time each connection (accepted when,
    how many bytes, done when): C{up} reads until EOF, C{down} sends
    C{size} bytes and waits for the client to close.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.up: list[tuple[float, int, float]] = []
        self.down: list[tuple[float, int, float]] = []
        self.ports = []
        for serve in (self._receive, self._send):
            server = socket.create_server(("127.0.0.1", 0))
            self.ports.append(server.getsockname()[1])
            threading.Thread(target=self._serve, args=(server, serve), daemon=True).start()

    def _serve(self, server: socket.socket, serve) -> None:
        while True:
            conn, _ = server.accept()
            serve(conn, time.monotonic())
            conn.close()

    def _receive(self, conn: socket.socket, accepted: float) -> None:
        total = 0
        while data := conn.recv(1 << 20):
            total += len(data)
        self.up.append((accepted, total, time.monotonic()))

    def _send(self, conn: socket.socket, accepted: float) -> None:
        chunk = bytes(1 << 20)
        for _ in range(self.size >> 20):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        try:
            conn.recv(1)
        except ConnectionResetError:
            pass  # the client read to EOF and its namespace is gone: the engine dropped it
        self.down.append((accepted, self.size, time.monotonic()))

    def args(self, mib: int) -> str:
        return f"{self.ports[0]} {self.ports[1]} {mib}"


def vdens(sink: Sink, mib: int, *options: str) -> list[str]:
    script = ("ip addr add 10.0.2.15/24 dev vde0 && ip route add default via 10.0.2.2 && "
              f"exec /usr/bin/python3 -c '{SENDER}' 10.0.2.2 {sink.args(mib)}")
    return [sys.executable, "-m", "vdetwist.scripts.vdens", *options, "slirp://", "sh", "-c",
            script]


def pasta(sink: Sink, mib: int) -> list[str]:
    return [shutil.which("pasta"), "--config-net", "-q", "--", "/usr/bin/python3", "-c", SENDER,
            "gateway", *sink.args(mib).split()]


def slirp4netns(sink: Sink, mib: int, mtu: int) -> list[str]:
    # The namespace's first process waits (reading a FIFO) until
    # slirp4netns has configured tap0, then sends.
    return [sys.executable, "-c", f"""
import os, subprocess, sys, tempfile, time
d = tempfile.mkdtemp()
fifo = os.path.join(d, "go")
os.mkfifo(fifo)
ns = subprocess.Popen(["unshare", "-Urn", "sh", "-c",
    'read x < {{0}} && exec /usr/bin/python3 -c "$0" 10.0.2.2 {sink.args(mib)}'.format(fifo),
    {SENDER!r}])
# slirp4netns joins the namespace of ns.pid: wait until it has one (else,
# on a loaded machine, it meets the caller's and may not enter it).
own = os.readlink("/proc/self/ns/net")
while os.readlink(f"/proc/{{ns.pid}}/ns/net") == own:
    time.sleep(0.001)
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


def goodput(result: tuple[float, int, float]) -> float:
    accepted, total, done = result
    return total * 8 / (done - accepted) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sink = Sink(args.mib << 20)
    env = dict(os.environ, PYTHONPATH=ROOT)
    tools = {"vdens slirp://": lambda: vdens(sink, args.mib),
             "vdens --no-offload slirp://": lambda: vdens(sink, args.mib, "--no-offload")}
    if shutil.which("slirp4netns"):
        tools["slirp4netns"] = lambda: slirp4netns(sink, args.mib, 1500)
        tools["slirp4netns --mtu=65520"] = lambda: slirp4netns(sink, args.mib, 65520)
    if shutil.which("pasta"):
        tools["pasta"] = lambda: pasta(sink, args.mib)
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in tools}
    for _ in range(args.repeat):
        for name, argv in tools.items():
            before = len(sink.down)
            start = time.monotonic()
            result = subprocess.run(argv(), env=env, cwd=ROOT, capture_output=True, text=True,
                                    timeout=300)
            if result.returncode != 0 or len(sink.down) == before:
                sys.exit(f"{name} failed ({result.returncode}): {result.stderr.strip()}")
            rows[name].append((sink.up[-1][0] - start, goodput(sink.up[-1]),
                               goodput(sink.down[-1])))
    print(f"{'tool':<28}{'start-up ms':>12}{'up Mbit/s':>11}{'down Mbit/s':>13}   "
          f"({args.mib} MiB each way, median of {args.repeat})")
    medians = {name: [statistics.median(v[i] for v in values) for i in range(3)]
               for name, values in rows.items()}
    for name, (startup, up, down) in medians.items():
        print(f"{name:<28}{startup * 1000:>12.0f}{up:>11.0f}{down:>13.0f}")
    ours = medians["vdens slirp://"]
    print("\nvdens slirp:// (offloads on) against each, up / down:")
    for name, (_, up, down) in medians.items():
        if name != "vdens slirp://":
            print(f"  {name:<28}{ours[1] / up:>6.2f}x {ours[2] / down:>6.2f}x")


if __name__ == "__main__":
    main()
