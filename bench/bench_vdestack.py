"""
HTTP/TCP throughput from a twisted.web site to a namespace: the site on a
vdestack host (the user-level stack, in the server's process) against the
same site on a kernel tap (kernel TCP in a second namespace).

    [client ns: tap] <- C vde_plug -> C vde_switch <- vdestack: twisted.web (stack)
    [client ns: tap] <- C vde_plug -> C vde_switch <- C vde_plug -> [server ns: tap] twisted.web (kernel)

The client fetches SIZE bytes with curl, REPEAT times per arrangement,
interleaved; the table has the median MB/s of each and the ratio
stack/kernel.  Needs root, curl and the C vde2/vdeplug4 tools.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
from benchlib import ROOT, netns, waitFor

SERVER = r"""
import sys
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web import resource, server, static

endpoint, size = sys.argv[1], int(sys.argv[2])
root = resource.Resource()
root.putChild(b"file", static.Data(b"x" * size, "application/octet-stream"))
def failed(reason):
    print("failed:", reason.getErrorMessage(), flush=True)
    reactor.stop()

serverFromString(reactor, endpoint).listen(server.Site(root)).addCallbacks(
    lambda port: print("listening", flush=True), failed)
reactor.run()
"""


def start(procs: benchlib.Processes, argv: list[str], namespace: str | None = None,
          **kwargs) -> subprocess.Popen:
    """
    L{benchlib.Processes.start} with this checkout's vdetwist, in C{namespace}.
    """
    if namespace is not None:
        argv = ["ip", "netns", "exec", namespace, *argv]
    return procs.start(argv, env=benchlib.ourEnv(), **kwargs)


def tapIn(namespace: netns.Namespace, switch: str, address: str, procs: benchlib.Processes) -> None:
    """
    A tap in C{namespace} held by the C vde_plug on C{switch}, with C{address}.
    """
    start(procs, ["/usr/bin/vde_plug", "tap://vb0", f"vde://{switch}"], namespace.name)
    waitFor(lambda: _exists("vb0", namespace), 10, "the tap")
    netns.addAddress("vb0", address, namespace.name)
    netns.setUp("vb0", namespace.name)


def _exists(ifname: str, namespace) -> bool:
    try:
        netns.ifindex(ifname, namespace.name)
    except LookupError:
        return False
    return True


def serve(endpoint: str, size: int, namespace: str | None, procs: benchlib.Processes) -> None:
    proc = start(procs, [sys.executable, "-c", SERVER, endpoint, str(size)], namespace,
                 stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if b"listening" not in line:
        raise SystemExit(f"the server on {endpoint}: {line.decode().strip()}")


def fetch(client: netns.Namespace, url: str) -> float:
    """
    One download: MB/s.
    """
    done = client.run(["curl", "-s", "-o", "/dev/null", "--retry", "5",
                       "--retry-all-errors", "-w", "%{size_download} %{time_total}", url],
                      capture_output=True, text=True, timeout=300)
    size, seconds = done.stdout.split()
    return float(size) / float(seconds) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100, help="MB per download (100)")
    parser.add_argument("--repeat", type=int, default=5, help="downloads per arrangement (5)")
    args = parser.parse_args()
    benchlib.checkSystem(["curl", "ip"])
    size = args.size * 1_000_000
    procs = benchlib.Processes()
    directory = tempfile.mkdtemp(prefix="vbench-")
    switch = os.path.join(directory, "sw")
    client = netns.Namespace.create()
    server = netns.Namespace.create()
    try:
        start(procs, ["/usr/bin/vde_switch", "-s", switch, "-f", "/dev/null"])
        waitFor(lambda: os.path.exists(os.path.join(switch, "ctl")), 10, "the switch")
        time.sleep(0.5)
        tapIn(client, switch, "10.88.0.1/24", procs)
        tapIn(server, switch, "10.88.0.3/24", procs)
        serve(f"vdestack:vnl=vde\\://{switch}:ip=10.88.0.2/24:port=8080", size, None, procs)
        serve("tcp:8080:interface=10.88.0.3", size, server.name, procs)
        results: dict[str, list[float]] = {"stack": [], "kernel": []}
        for _ in range(args.repeat):
            results["stack"].append(fetch(client, "http://10.88.0.2:8080/file"))
            results["kernel"].append(fetch(client, "http://10.88.0.3:8080/file"))
        stack, kernel = (statistics.median(results[k]) for k in ("stack", "kernel"))
        print(f"{'arrangement':12} {'MB/s (median)':>14}  runs")
        for name, value in (("stack", stack), ("kernel", kernel)):
            runs = " ".join(f"{v:.1f}" for v in results[name])
            print(f"{name:12} {value:14.1f}  {runs}")
        print(f"ratio stack/kernel: {stack / kernel:.2f}")
    finally:
        procs.stopAll()
        client.remove()
        server.remove()
        subprocess.run(["rm", "-rf", directory])


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
