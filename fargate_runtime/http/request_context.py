"""A request id on every log line of a request, echoed to the client, and one JSON line per request.

Behind an ALB, the load balancer's ``X-Amzn-Trace-Id`` is logged alongside, so one request can
be followed from the ALB access log to the app's lines. An exception leaving the request takes
the request's fields along (``bind_log_context``), so the server's own traceback line for it
("Exception in ASGI application") names the request and its trace too.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

from ..logging import bind_log_context

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestContextMiddleware"]

logger = logging.getLogger("fargate_runtime.http.request")

# Longer or odd ids from clients are replaced: they end up in every log line.
_MAX_ID_LENGTH = 128
# What the server answers when the app raises before it started a response.
_UNHANDLED_STATUS = 500


def _usable(value: bytes) -> str | None:
    if not 0 < len(value) <= _MAX_ID_LENGTH:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and " " not in text else None


class RequestContextMiddleware:
    """Pure ASGI: bind ``request_id`` (and the ALB trace id) to the logs of each request.

    The id is taken from the ``header`` of the request when it is a short printable token, made
    up otherwise, and sent back in the same response header. One ``request`` line is logged when
    the response ends, with method, path, the status sent and duration: 500 when the app raised
    before responding (the server sends that), null and ``cancelled`` when the request was cut
    at shutdown before any response (the host answers it; see its "request cut" line).
    """

    def __init__(self, app: ASGIApp, *, header: str = "x-request-id") -> None:
        self._app = app
        self._header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = None
        trace_id = None
        for name, value in scope["headers"]:
            if name == self._header:
                request_id = _usable(value)
            elif name == b"x-amzn-trace-id":
                trace_id = _usable(value)
        request_id = request_id or uuid.uuid4().hex
        status: int | None = None
        began = time.monotonic()
        echoed = (self._header, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        fields = {"request_id": request_id}
        if trace_id is not None:
            fields["amzn_trace_id"] = trace_id
        cancelled = False
        with bind_log_context(**fields):
            try:
                await self._app(scope, receive, send_with_id)
            except asyncio.CancelledError:
                cancelled = True
                raise
            except Exception:
                if status is None:
                    status = _UNHANDLED_STATUS
                raise
            finally:
                line = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.monotonic() - began) * 1000, 2),
                }
                if cancelled:
                    line["cancelled"] = True
                logger.info("request", extra=line)
