"""A payments HTTP API: POST /payments with an Idempotency-Key is charged once, whatever retries.

Run it with ``fargate-runtime run examples.http_api.app:app`` (see README.md)::

    curl -X POST localhost:8000/payments -H 'x-api-key: demo' \\
         -H 'idempotency-key: order-1001' -H 'content-type: application/json' \\
         -d '{"amount": 1250, "currency": "EUR"}'

- Retries (a client timing out, a load balancer retrying): the second POST with the same key gets
  the first response again, byte for byte, with ``Idempotent-Replayed: true``; a different body
  under the same key is a 422; a duplicate while the first still runs is a 409.
- The key and its fencing token go to the (fake) provider, which is what covers a crash between
  the charge and the stored response.
- SIGTERM (deploy, Spot interruption): ``/readyz`` turns 503 at once, requests are served for the
  lame duck, then the listener closes and in-flight charges finish within the drain budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fargate_runtime import ConfigurationError, Runtime, Supervisor, load_settings
from fargate_runtime.http import (
    HttpIdempotencySettings,
    HttpSettings,
    IdempotencyMiddleware,
    RequestContextMiddleware,
    TracingMiddleware,
    header_principal,
    idempotency_claim,
    serve_asgi,
)
from fargate_runtime.idempotency import RedisStore, load_idempotency_settings, redis_client
from fargate_runtime.local import RedisServer, redis_answers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from starlette.requests import Request

    from fargate_runtime.idempotency import IdempotencyStore

__all__ = ["PaymentRequest", "PaymentsApiSettings", "app", "build_api"]

logger = logging.getLogger("examples.http_api")

API_KEY_HEADER = "x-api-key"
# The client, as the idempotency middleware and the payment records see it (hashed API key).
_principal = header_principal(API_KEY_HEADER)


class PaymentsApiSettings(BaseSettings):
    """The API's own settings (``PAYMENTS_API_*``); HTTP and Redis have their own."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_API_", extra="ignore", frozen=True)

    # Payments and idempotency keys live under this Redis key prefix.
    key_prefix: str = Field(default="payments-api", min_length=1, pattern=r"^[A-Za-z0-9:_.-]+$")
    # A real service keeps payments in its database; Redis keeps them a week here.
    payment_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    # Upper bound on the demo's simulated provider latency (the request's simulate_latency_ms).
    max_simulated_latency_ms: int = Field(default=60_000, ge=0)


class PaymentRequest(BaseModel):
    """The body of ``POST /payments``."""

    model_config = {"extra": "forbid"}

    amount: int = Field(gt=0, le=100_000_000, description="minor units (cents)")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    description: str | None = Field(default=None, max_length=200)
    # Demo only: how long the fake provider takes, to watch a drain with requests in flight.
    simulate_latency_ms: int = Field(default=0, ge=0)


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


class _PaymentsApi:
    """The two endpoints, over a Redis client."""

    def __init__(self, redis: Redis | RedisCluster, settings: PaymentsApiSettings) -> None:
        self._redis = redis
        self._settings = settings

    def _record_key(self, request: Request, payment_id: str) -> str:
        # Payments are per API key: one client cannot read another's.
        principal = _principal(request.scope) or "anonymous"
        return f"{self._settings.key_prefix}:payment:{principal}:{payment_id}"

    async def create(self, request: Request) -> Response:
        if not request.headers.get(API_KEY_HEADER):
            # Replace with real authentication; the idempotency scope follows the same header.
            return _problem(401, "Unauthorized", f"send your API key in {API_KEY_HEADER}")
        try:
            body = PaymentRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()]
            return _problem(400, "Bad Request", "; ".join(errors))
        if body.simulate_latency_ms > self._settings.max_simulated_latency_ms:
            return _problem(400, "Bad Request", "simulate_latency_ms is above the configured cap")
        claim = idempotency_claim(request.scope)
        payment_id = f"pay_{uuid.uuid4().hex}"
        logger.info("charging payment", extra={"payment_id": payment_id, "amount": body.amount})
        # The fake provider: a real one gets the idempotency key, so a retry after a crash
        # between its charge and our stored response is not charged twice.
        await asyncio.sleep(body.simulate_latency_ms / 1000)
        payment = {
            "id": payment_id,
            "amount": body.amount,
            "currency": body.currency,
            "description": body.description,
            "status": "succeeded",
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "provider_idempotency_key": claim.key if claim else None,
            "fencing_token": claim.token if claim else None,
        }
        await self._redis.set(
            self._record_key(request, payment_id),
            json.dumps(payment),
            ex=self._settings.payment_ttl_seconds,
        )
        logger.info(
            "payment created",
            extra={"payment_id": payment_id, "amount": body.amount, "currency": body.currency},
        )
        return JSONResponse(
            payment, status_code=201, headers={"location": f"/payments/{payment_id}"}
        )

    async def fetch(self, request: Request) -> Response:
        payment_id = request.path_params["payment_id"]
        stored = await self._redis.get(self._record_key(request, payment_id))
        if stored is None:
            return _problem(404, "Not Found", f"no payment {payment_id}")
        return Response(stored, media_type="application/json")


def build_api(
    *,
    redis: Redis | RedisCluster,
    store: IdempotencyStore | None,
    settings: PaymentsApiSettings | None = None,
    idempotency: HttpIdempotencySettings | None = None,
) -> Starlette:
    """The Starlette app; ``store=None`` leaves the Idempotency-Key middleware out (benchmarks)."""
    settings = settings or PaymentsApiSettings()
    api = _PaymentsApi(redis, settings)
    # Tracing outermost: the request's log lines and the idempotency outcome fall in its span.
    middleware = [Middleware(TracingMiddleware), Middleware(RequestContextMiddleware)]
    if store is not None:
        middleware.append(
            Middleware(
                IdempotencyMiddleware,
                store=store,
                principal=_principal,
                routes=["/payments"],
                methods=["POST"],
                prefix=f"{settings.key_prefix}:idempotency",
                settings=idempotency,
            )
        )
    routes = [
        Route("/payments", api.create, methods=["POST"]),
        Route("/payments/{payment_id}", api.fetch, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=middleware)


@contextlib.asynccontextmanager
async def _local_redis() -> AsyncIterator[str]:
    """A private redis-server for a local run (never on ECS, where REDIS_URL is set)."""
    server = RedisServer()
    await asyncio.to_thread(server.__enter__)
    logger.warning(
        "no REDIS_URL and no Redis on 127.0.0.1:6379: started a private one",
        extra={"redis_url": server.url},
    )
    try:
        yield server.url
    finally:
        # Stops it and removes its data directory.
        await asyncio.to_thread(server.__exit__, None, None, None)


async def _redis_overrides(rt: Runtime) -> dict[str, Any]:
    """Overrides for the idempotency settings: a private Redis when none is configured or up."""
    configured = any(
        name in os.environ for name in ("REDIS_URL", "FARGATE_RUNTIME_IDEMPOTENCY_REDIS_URL")
    )
    if configured or await asyncio.to_thread(redis_answers, "127.0.0.1", 6379):
        return {}
    return {"redis_url": await rt.enter(_local_redis(), name="local-redis")}


app = Supervisor()


@app.setup
async def setup(rt: Runtime) -> None:
    """Redis, then the API (its lifespan and listener), served until SIGTERM."""
    settings = load_settings(PaymentsApiSettings)
    http = load_settings(HttpSettings)
    idempotency = load_settings(HttpIdempotencySettings)
    redis_settings = load_idempotency_settings(**await _redis_overrides(rt))
    if redis_settings.in_memory:
        raise ConfigurationError("the payments API keeps payments in Redis: set a redis:// URL")
    redis = redis_client(redis_settings)
    await rt.enter(redis, name="redis")  # closed last: after the API has drained
    # Entered: it checks Redis' eviction policy now (exit 78 on one that may evict records).
    store = await rt.enter(
        RedisStore(
            redis,
            max_result_bytes=redis_settings.max_result_bytes,
            call_timeout_seconds=redis_settings.call_timeout_seconds,
            accept_eviction_risk=redis_settings.accept_eviction_risk,
        ),
        name="idempotency",
    )
    api = build_api(redis=redis, store=store, settings=settings, idempotency=idempotency)
    server = await serve_asgi(rt, api, settings=http)
    logger.info("payments API ready", extra={"port": server.port})
