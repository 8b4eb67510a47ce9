"""
The twisted.web side of C{twistd vde --web}: C{/} the live page,
C{/api/status} the state as JSON, C{/metrics} the Prometheus text.

Read-only: every resource answers C{GET} and C{HEAD} only (others get 405),
and nothing changes the switch.  There is no authentication: bind it where
only those who may see the switch reach it (C{tcp:PORT:interface=127.0.0.1},
C{unix:PATH:mode=600}).  A request whose C{Host} is not the address it came
to, C{localhost} or a name given with C{--web-host} is refused (421): a page
of another site that rebinds its name to this address (DNS rebinding) would
otherwise read the switch through the visitor's browser.
"""

from __future__ import annotations

import ipaddress
import json
from importlib.resources import files
from typing import Iterable, Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from vdetwist.web.status import RateHistory, metricsText, switchStatus

__all__ = ["WebStatus", "hostName", "hostAllowed"]

log = Logger()

#: How many refused host names are each logged once (more are refused
#: without a log line).
REFUSALS_LOGGED = 64

#: The page draws with its own inline script and style, and reads only
#: from its own origin.
_PAGE_POLICY = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'"
)


class _Leaf(Resource):
    """
    A read-only document, made afresh at each request by L{body}.
    """

    isLeaf = True
    contentType = b"text/plain; charset=utf-8"

    def body(self) -> bytes:
        raise NotImplementedError

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", self.contentType)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", _PAGE_POLICY)
        return self.body()


class _Page(_Leaf):
    contentType = b"text/html; charset=utf-8"

    def __init__(self) -> None:
        super().__init__()
        self.page = files("vdetwist.web").joinpath("page.html").read_bytes()

    def body(self) -> bytes:
        return self.page


class _View(_Leaf):
    def __init__(self, web: "WebStatus") -> None:
        super().__init__()
        self.web = web


class _Status(_View):
    contentType = b"application/json"

    def body(self) -> bytes:
        web = self.web
        return json.dumps(switchStatus(web.node, web.console, web.history)).encode()


class _Metrics(_View):
    contentType = b"text/plain; version=0.0.4; charset=utf-8"

    def body(self) -> bytes:
        return metricsText(self.web.node, self.web.console).encode()


def hostName(header: Optional[bytes]) -> Optional[str]:
    """
    The host name of a C{Host} header, without its port, lower case and
    without a final dot; C{None} without a header.
    """
    if header is None:
        return None
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        name = text[1:].partition("]")[0]
    else:
        name, colon, port = text.rpartition(":")
        if not colon or not port.isdigit():
            name = text
    return name.rstrip(".")


def hostAllowed(name: Optional[str], local: object, names: frozenset[str]) -> bool:
    """
    Whether a request for host C{name} (see L{hostName}) that came to the
    local address C{local} may be answered: no C{Host} (not a browser), the
    very IP address it came to, C{localhost} (and its subdomains, which
    browsers keep on the loopback), or one of C{names}.
    """
    if name is None or name in names or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        asked = ipaddress.ip_address(name)
        here = ipaddress.ip_address(str(getattr(local, "host", "")).partition("%")[0])
    except ValueError:
        return False
    return asked in (here, getattr(here, "ipv4_mapped", None))


class _Misdirected(Resource):
    """
    The answer to a request for a host name this view does not serve.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render(self, request) -> bytes:
        request.setResponseCode(421)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (f"Host {self.name} is not served here: use the address the switch listens on"
                f" or localhost, or start it with --web-host {self.name}\n").encode()


class _QuietSite(Site):
    """
    A site that writes no access log: the page polls every few seconds and
    Prometheus scrapes, which would fill the switch's log.  It answers only
    requests for its own host names (L{hostAllowed}).
    """

    noisy = False

    def __init__(self, root: Resource, hosts: frozenset[str]) -> None:
        super().__init__(root)
        self.hosts = hosts
        self._refused: set[str] = set()

    def getResourceFor(self, request) -> Resource:
        name = hostName(request.getHeader(b"host"))
        if hostAllowed(name, request.getHost(), self.hosts):
            return super().getResourceFor(request)
        assert name is not None, "a request without Host is allowed"
        if name not in self._refused and len(self._refused) < REFUSALS_LOGGED:
            self._refused.add(name)
            log.warn("--web: refused a request for host {host} (a page of another site, through"
                     " DNS rebinding?); --web-host {host} would serve it", host=name)
        return _Misdirected(name)

    def logPrefix(self) -> str:
        return "web status"

    def log(self, request) -> None:
        pass


class WebStatus:
    """
    The web view of one switch: its L{site} (a factory to listen with) and
    the sampling of the rates the page charts, every C{interval} seconds
    over the last C{minutes}.  Requests are answered for the address they
    came to, C{localhost} and the host names in C{hosts}.
    """

    def __init__(self, node, console, clock, interval: float = 2.0, minutes: float = 5,
                 hosts: Iterable[str] = ()) -> None:
        self.node = node
        self.console = console
        self.history = RateHistory(node, clock, interval, max(2, round(minutes * 60 / interval)))
        self._sampling = LoopingCall(self.history.sample)
        self._sampling.clock = clock
        root = Resource()
        root.putChild(b"", _Page())
        api = Resource()
        api.putChild(b"status", _Status(self))
        root.putChild(b"api", api)
        root.putChild(b"metrics", _Metrics(self))
        self.site = _QuietSite(root, frozenset(hostName(h.encode()) or h for h in hosts))

    def start(self) -> None:
        """
        Start sampling the rates.
        """
        if not self._sampling.running:
            self._sampling.start(self.history.interval, now=True)

    def stop(self) -> None:
        """
        Stop sampling (the listening ports are the caller's to close).
        """
        if self._sampling.running:
            self._sampling.stop()
