"""A SERVER span per HTTP request, continuing the caller's W3C trace context.

Pure ASGI, outermost in the stack so the request's log lines (``RequestContextMiddleware``) and
the idempotency outcome land inside the span. Without a recording tracer provider (telemetry
off) a request passes straight through: one ``isinstance`` check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..telemetry import INSTRUMENTATION_NAME, tracing_enabled

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TracingMiddleware"]

# Other methods are named "_OTHER" and the span just "HTTP", as the HTTP conventions ask: a
# client inventing methods must not mint new span names.
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)


class TracingMiddleware:
    """Pure ASGI: one SERVER span ``METHOD route`` per HTTP request.

    Attributes follow the OpenTelemetry HTTP conventions: ``http.request.method``,
    ``url.path``, ``url.scheme``, ``http.response.status_code`` and, when the router matched one
    (Starlette and FastAPI record it in the scope), ``http.route``; a 5xx or an exception marks
    the span as an error. The parent is the ``traceparent`` header's context, when sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing_enabled():
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        known = method in _KNOWN_METHODS
        carrier = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        root_path = scope.get("root_path", "")
        with self._tracer.start_as_current_span(
            method if known else "HTTP",
            context=extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method if known else "_OTHER",
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
            },
        ) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                        span.set_attribute("error.type", str(status))
                await send(message)

            try:
                await self._app(scope, receive, send_traced)
            except Exception as exc:
                # error.type is the exception's class; the SDK adds the exception event and the
                # error status. Cancellation (a request cut at shutdown) is not the app's error.
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            finally:
                route = _route_template(scope, root_path)
                if route is not None:
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method if known else 'HTTP'} {route}")


def _route_template(scope: Scope, root_path: str) -> str | None:
    """The matched route's path template, when the router left it in the scope.

    Behind a ``Mount`` the route's path is relative to a prefix whose template the scope no
    longer holds (only the concrete ``root_path``): no ``http.route`` then, rather than a
    wrong one.
    """
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str) or scope.get("root_path", "") != root_path:
        return None
    return path
