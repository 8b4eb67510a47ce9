#!/usr/bin/env python3
"""
TCP connections per second, one at a time, for bench_slirp.py: a server
that accepts each connection and closes it at once, and a client that
connects, waits for the server's close, closes, and starts over.  Each
connection is a whole setup and teardown (SYN, SYN-ACK, ACK, FIN both ways).

    python3 bench/connrate.py serve PORT                 # until killed
    python3 bench/connrate.py connect HOST PORT SECONDS  # prints JSON

The client stops after SECONDS, or at the first failure (an attempt waits
at most 2 s), and prints C{{"connections": N, "seconds": T, "error":
"..."}}: connections completed, the time they took, and the failure (empty
if none).
"""

from __future__ import annotations

import json
import socket
import sys
import time

#: The longest a connection attempt, or the wait for the server's close, may take.
ATTEMPT_TIMEOUT = 2.0


def serve(port: int) -> None:
    """
    Accept connections on every address's C{port} and close each at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(1024)
        while True:
            connection, _ = listener.accept()
            connection.close()


def connect(host: str, port: int, seconds: float) -> dict:
    """
    Connect to C{host}:C{port} over and over for C{seconds}, one
    connection at a time; stop at the first failure.
    """
    connections = 0
    error = ""
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(ATTEMPT_TIMEOUT)
            try:
                client.connect((host, port))
                client.recv(1)  # the server's close
            except OSError as e:
                error = str(e)
                break
        connections += 1
    return {"connections": connections, "seconds": time.monotonic() - started,
            "error": error}


def main(argv: list[str]) -> int:
    try:
        if argv[0] == "serve" and len(argv) == 2:
            serve(int(argv[1]))
            return 0
        if argv[0] == "connect" and len(argv) == 4:
            print(json.dumps(connect(argv[1], int(argv[2]), float(argv[3]))))
            return 0
    except (IndexError, ValueError):
        pass
    except KeyboardInterrupt:
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
