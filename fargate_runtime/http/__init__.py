"""HTTP APIs under the supervisor: hosting an ASGI app on uvicorn, and Idempotency-Key.

    from fargate_runtime import Runtime, Supervisor
    from fargate_runtime.http import IdempotencyMiddleware, header_principal, serve_asgi

    app = Supervisor()

    @app.setup
    async def setup(rt: Runtime) -> None:
        api = Starlette(routes=..., middleware=[Middleware(
            IdempotencyMiddleware, store=store, principal=header_principal("x-api-key"),
            routes=["/payments"])])
        await serve_asgi(rt, api)  # HttpSettings from FARGATE_RUNTIME_HTTP_*

``serve_asgi`` answers ``/readyz`` 503 from the first SIGTERM, keeps serving for the lame duck,
drains in-flight requests within the drain deadline and cuts what is left (exit 75).
``IdempotencyMiddleware`` makes POST/PATCH routes safe to retry with an ``Idempotency-Key``.
``TracingMiddleware`` (outermost) opens a SERVER span per request when telemetry is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .settings import HTTP_ENV_PREFIX, HttpIdempotencySettings, HttpSettings

if TYPE_CHECKING:
    from .idempotency import (
        IdempotencyClaim,
        IdempotencyMiddleware,
        Principal,
        header_principal,
        idempotency_claim,
        parse_key,
    )
    from .request_context import RequestContextMiddleware
    from .server import HttpServer, serve_asgi
    from .tracing import TracingMiddleware

# Loaded on first use: importing them imports uvicorn and starlette, which a worker that only
# reads its settings (the check of FARGATE_RUNTIME_* variables at start) never needs.
_LAZY = {
    "IdempotencyClaim": ".idempotency",
    "IdempotencyMiddleware": ".idempotency",
    "Principal": ".idempotency",
    "header_principal": ".idempotency",
    "idempotency_claim": ".idempotency",
    "parse_key": ".idempotency",
    "RequestContextMiddleware": ".request_context",
    "HttpServer": ".server",
    "serve_asgi": ".server",
    "TracingMiddleware": ".tracing",
}

__all__ = [
    "HTTP_ENV_PREFIX",
    "HttpIdempotencySettings",
    "HttpServer",
    "HttpSettings",
    "IdempotencyClaim",
    "IdempotencyMiddleware",
    "Principal",
    "RequestContextMiddleware",
    "TracingMiddleware",
    "header_principal",
    "idempotency_claim",
    "parse_key",
    "serve_asgi",
]


__getattr__ = lazy_exports(__name__, _LAZY)
