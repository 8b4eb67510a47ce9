"""
A transfer checked end to end between two network namespaces: a server
program in one, a client in the other sending seeded random bytes over TCP
or UDP; the server answers the count and sha256 of what it received.
"""

from __future__ import annotations

import hashlib
import random
import select
import subprocess
import sys

from tests.support import stopProcess

#: TCP or lock-step UDP (windows of 50 datagrams sent as one UDP_SEGMENT
#: super-datagram, acknowledged, resent on loss); prints "bytes sha256".
SERVER = r"""
import hashlib, socket, struct, sys
proto, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in address else socket.AF_INET
h, n = hashlib.sha256(), 0
if proto == "tcp":
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(1)
    s.settimeout(60)
    print("listening", flush=True)
    c, _ = s.accept()
    c.settimeout(60)
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
    c.sendall(f"{n} {h.hexdigest()}".encode())
    c.close()
else:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((address, port))
    s.settimeout(60)
    print("listening", flush=True)
    expected, pieces = 0, {}
    while True:
        d, peer = s.recvfrom(65536)
        window, index, count = struct.unpack_from("!IHH", d)
        if count == 0:
            s.sendto(f"{n} {h.hexdigest()}".encode(), peer)
            break
        if window == expected:
            pieces[index] = d[8:]
            if len(pieces) == count:
                for i in range(count):
                    h.update(pieces[i])
                    n += len(pieces[i])
                pieces = {}
                expected += 1
        if window < expected:
            s.sendto(struct.pack("!I", window), peer)
"""

CLIENT = r"""
import random, socket, struct, sys, time
proto, address, port, size, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
family = socket.AF_INET6 if ":" in address else socket.AF_INET
data = random.Random(seed).randbytes(size)
if proto == "tcp":
    deadline = time.monotonic() + 10
    while True:
        try:
            c = socket.create_connection((address, port), timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    reply = b"".join(iter(lambda: c.recv(4096), b""))
else:
    SEGMENT, PER = 1200, 50
    c = socket.socket(family, socket.SOCK_DGRAM)
    c.connect((address, port))
    c.setsockopt(socket.IPPROTO_UDP, 103, SEGMENT)  # UDP_SEGMENT
    c.settimeout(0.5)
    chunk = SEGMENT - 8
    offset, window = 0, 0
    while offset < size:
        pieces = [data[offset + i * chunk:offset + (i + 1) * chunk] for i in range(PER)]
        pieces = [p for p in pieces if p]
        burst = b"".join(struct.pack("!IHH", window, i, len(pieces)) + p
                         for i, p in enumerate(pieces))
        for attempt in range(40):
            c.send(burst)
            try:
                while struct.unpack("!I", c.recv(64))[0] != window:
                    pass
                break
            except socket.timeout:
                continue
        else:
            sys.exit(f"window {window} never acknowledged")
        offset += sum(map(len, pieces))
        window += 1
    c.setsockopt(socket.IPPROTO_UDP, 103, 0)
    for attempt in range(40):
        c.send(struct.pack("!IHH", window, 0, 0))
        try:
            reply = c.recv(256)
            if b" " in reply:
                break
        except socket.timeout:
            continue
print(reply.decode())
"""


def assertHashedTransfer(case, hosts, proto: str, address: str, port: int, size: int,
                         seed: int, timeout: float) -> None:
    """
    C{size} bytes of C{proto} (C{"tcp"} or C{"udp"}) from C{hosts[0]} to
    C{address:port} in C{hosts[1]} arrive byte for byte, within C{timeout}
    seconds.

    @param case: the test case (its assertions and cleanups).
    @param hosts: the two namespaces (L{vdetwist.testing.netns} objects).
    """
    server = hosts[1].popen(
        [sys.executable, "-c", SERVER, proto, address, str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    case.addCleanup(stopProcess, server)
    ready, _, _ = select.select([server.stdout], [], [], 30)
    case.assertTrue(ready, "the server did not start")
    case.assertEqual(server.stdout.readline().strip(), "listening")
    client = hosts[0].run(
        [sys.executable, "-c", CLIENT, proto, address, str(port), str(size), str(seed)],
        capture_output=True, text=True, timeout=timeout,
    )
    case.assertEqual(client.returncode, 0, client.stderr)
    expected = hashlib.sha256(random.Random(seed).randbytes(size)).hexdigest()
    case.assertEqual(client.stdout.split(), [str(size), expected])
    server.wait(30)
