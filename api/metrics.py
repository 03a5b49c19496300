"""Prometheus metrics of the API's requests (``gridread_`` prefix, base units), in the default
registry that /metrics exports.

Labelled by the route's path template (``/devices/{name}/readings``), never the raw path, so
that the series stay few whatever callers ask for; a request no route matches is
``route="<unmatched>"``. The latency is the time until the response starts (its status and
headers sent): for a JSON answer that includes the query and the serialisation; for a
stream (the live feed, streamed reads) it is the time to the first byte, not the stream's
lifetime.

A pure ASGI middleware rather than ``@app.middleware("http")``: it adds no task per request
and leaves streamed bodies alone.
"""

from __future__ import annotations

import logging
import re
import time

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gridread.api")

UNMATCHED = "<unmatched>"
# any token is a valid HTTP method: others are one label value, so callers cannot add series
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "gridread_api_requests",
    "API requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "gridread_api_request_seconds",
    "Time from an API request's arrival to its response's start, by route template",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _method(scope: Scope) -> str:
    return scope["method"] if scope["method"] in METHODS else "other"


def _template(route: object) -> str:
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED


class RequestMetrics:
    """Counts and times every HTTP request the wrapped app answers."""

    def __init__(self, app: ASGIApp, routes_of: FastAPI | None = None) -> None:
        self.app = app
        self.routes_of = routes_of
        self._paths: list[tuple[re.Pattern, str]] | None = None

    def route(self, scope: Scope) -> str:
        """The template of the route that handled the request; when a middleware answered
        before routing (e.g. a refused repeated parameter), the documented path it would have
        reached (FastAPI's included routers match lazily: their OpenAPI paths are public)."""
        if "route" in scope:
            return _template(scope["route"])
        if self._paths is None:
            try:
                paths = self.routes_of.openapi().get("paths", {}) if self.routes_of else {}
            except Exception:  # /openapi.json answers 500 then too: logged, counted unmatched
                log.exception("request metrics: no OpenAPI paths to name refused requests by")
                paths = {}
            self._paths = [(compile_path(p)[0], p) for p in paths]
        for regex, template in self._paths:
            if regex.match(scope["path"]):
                return template
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.observe(scope, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except BaseException:
            if status is None:  # raised before answering: the server's error handler says 500
                status = 500
                self.observe(scope, time.perf_counter() - started)
            raise
        finally:
            REQUESTS.labels(self.route(scope), _method(scope), str(status or 500)).inc()

    def observe(self, scope: Scope, seconds: float) -> None:
        REQUEST_SECONDS.labels(self.route(scope), _method(scope)).observe(seconds)


def instrument(app: FastAPI) -> None:
    """Wrap `app` (outermost of its middlewares, added last) in the request metrics."""
    app.add_middleware(RequestMetrics, routes_of=app)
