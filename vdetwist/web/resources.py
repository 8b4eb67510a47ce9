"""
The twisted.web side of C{twistd vde --web}: C{/} the live page,
C{/api/status} the state as JSON, C{/metrics} the Prometheus text.

Read-only: every resource answers C{GET} and C{HEAD} only (others get 405),
and nothing changes the switch.  There is no authentication: bind it where
only those who may see the switch reach it (C{tcp:PORT:interface=127.0.0.1},
C{unix:PATH:mode=600}).
"""

from __future__ import annotations

import json
from importlib.resources import files

from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import Site

from vdetwist.web.status import RateHistory, metricsText, switchStatus

__all__ = ["WebStatus"]

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


class _QuietSite(Site):
    """
    A site that writes no access log: the page polls every few seconds and
    Prometheus scrapes, which would fill the switch's log.
    """

    noisy = False

    def logPrefix(self) -> str:
        return "web status"

    def log(self, request) -> None:
        pass


class WebStatus:
    """
    The web view of one switch: its L{site} (a factory to listen with) and
    the sampling of the rates the page charts, every C{interval} seconds
    over the last C{minutes}.
    """

    def __init__(self, node, console, clock, interval: float = 2.0, minutes: float = 5) -> None:
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
        self.site = _QuietSite(root)

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
