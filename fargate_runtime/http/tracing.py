"""A SERVER span and a duration per HTTP request, continuing the caller's W3C trace context.

Pure ASGI, outermost in the stack so the request's log lines (``RequestContextMiddleware``) and
the idempotency outcome land inside the span. Without a recording tracer or meter provider
(telemetry off) a request passes straight through: two ``isinstance`` checks.

What the span says, whoever answered the request::

    the app's route answered       METHOD route, http.route, http.response.status_code
    a middleware answered first    the same: the route is matched against the app's router
    (Idempotency-Key: replay, 400, 409, 422, 503)
    an exception escaped           http.response.status_code 500 (what the server sends),
                                   error.type = its class, status ERROR, the exception event
    cut at shutdown (cancelled)    error.type CancelledError, status ERROR
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.routing import Match, Route

from ..logging import remember_log_context
from ..telemetry import ERROR_TYPE_ATTRIBUTE, metrics_enabled, tracing_enabled
from ..telemetry._core import error_type_of, tracer
from ..telemetry._instruments import http_server_duration

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TracingMiddleware"]

# Other methods are named "_OTHER" and the span just "HTTP", as the HTTP conventions ask: a
# client inventing methods must not mint new span names.
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
# An exception that escapes the app is answered with a 500 by the server (uvicorn, or
# Starlette's ServerErrorMiddleware, which sits outside the user's middleware).
_UNHANDLED_STATUS = 500


class TracingMiddleware:
    """Pure ASGI: one SERVER span ``METHOD route`` and one duration per HTTP request.

    Span attributes follow the OpenTelemetry HTTP conventions: ``http.request.method``,
    ``url.path``, ``url.scheme``, ``http.response.status_code`` and, when a route matched (from
    the router's record in the scope, or by matching the Starlette/FastAPI app's routes for a
    response a middleware gave), ``http.route``; a 5xx or an exception marks the span as an
    error with ``error.type``. The parent is the ``traceparent`` header's context, when sent.
    The duration goes to ``http.server.request.duration`` with the same low-cardinality
    attributes (never the path).
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        tracing, measuring = tracing_enabled(), metrics_enabled()
        if not (tracing or measuring):
            await self._app(scope, receive, send)
            return
        began = time.perf_counter()
        request = _Request(scope)
        span = request.start_span() if tracing else None

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                request.status = int(message["status"])
            await send(message)

        try:
            with _current(span):
                try:
                    await self._app(scope, receive, send_traced)
                except BaseException as exc:
                    remember_log_context(exc)  # while the span is current: its ids go along
                    raise
        except Exception as exc:
            request.failed(exc, status=_UNHANDLED_STATUS)
            raise
        except BaseException as exc:  # cancelled: cut at the drain deadline, or a forced exit
            request.failed(exc, status=None)
            raise
        finally:
            attributes = request.finish(span)
            if measuring:
                http_server_duration().record(time.perf_counter() - began, attributes)


class _Request:
    """What is known of one request: its attributes as they arrive, its status, its error."""

    __slots__ = ("error_type", "method", "raised", "root_path", "scope", "status")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        # A Mount changes the scope's root_path while routing; the original tells it apart.
        self.root_path = scope.get("root_path", "")
        method = scope["method"]
        self.method = method if method in _KNOWN_METHODS else None
        self.status: int | None = None
        self.error_type: str | None = None
        # An exception the span recorded itself (event, ERROR status with its message).
        self.raised = False

    def start_span(self) -> trace.Span:
        scope = self.scope
        carrier = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        return tracer().start_span(
            self.method or "HTTP",
            context=extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": self.method or "_OTHER",
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
            },
        )

    def failed(self, exc: BaseException, *, status: int | None) -> None:
        self.error_type = error_type_of(exc)
        self.raised = isinstance(exc, Exception)
        if self.status is None:
            self.status = status

    def finish(self, span: trace.Span | None) -> dict[str, Any]:
        """End the span with what is known now; the duration's attributes."""
        scope, status = self.scope, self.status
        attributes: dict[str, Any] = {
            "http.request.method": self.method or "_OTHER",
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        route = _route_template(scope, self.root_path)
        if route is not None:
            attributes["http.route"] = route
        if status is not None:
            attributes["http.response.status_code"] = status
        error_type = self.error_type
        if error_type is None and status is not None and status >= 500:
            error_type = str(status)
        if error_type is not None:
            attributes[ERROR_TYPE_ATTRIBUTE] = error_type
        if span is not None:
            if route is not None:
                span.update_name(f"{self.method or 'HTTP'} {route}")
                span.set_attribute("http.route", route)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error_type is not None:
                span.set_attribute(ERROR_TYPE_ATTRIBUTE, error_type)
                if not self.raised:  # else use_span set it, with the exception's message
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
        return attributes


def _current(span: trace.Span | None) -> contextlib.AbstractContextManager[object]:
    """Make ``span`` current; it records the exception event and ERROR for an exception."""
    if span is None:
        return contextlib.nullcontext()
    return trace.use_span(span)


def _route_template(scope: Scope, root_path: str) -> str | None:
    """The matched route's path template: from the router's record, else matched here.

    A response given before routing (the Idempotency-Key middleware's replay, 400, 409, 422,
    503) has no route in the scope; the app's top-level routes are matched against it then.
    Behind a ``Mount`` the template is relative to a prefix whose template the scope does not
    hold: no ``http.route`` then, rather than a wrong one.
    """
    if scope.get("root_path", "") != root_path:
        return None  # routed inside a Mount
    route: Any = scope.get("route")
    if route is None:
        route = _match(scope)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _match(scope: Scope) -> Route | None:
    """The top-level ``Route`` of the Starlette (or FastAPI) app that matches the request."""
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", None)
    if not isinstance(routes, list):
        return None
    partial: Route | None = None
    for candidate in routes:
        if not isinstance(candidate, Route):
            continue  # a Mount's full template is not known here
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return candidate
        if match is Match.PARTIAL and partial is None:
            partial = candidate  # the path matches, not the method: still its route
    return partial
