"""An API whose handler misbehaves the way ordinary handlers do (blocks, spins, threads).

``POST /work`` under the Idempotency-Key middleware; ``MISBEHAVE`` picks the behaviour. Lines
marked ``# culprit: NAME`` are where the watchdog must point.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from fargate_runtime import Runtime, Supervisor
from fargate_runtime.http import IdempotencyMiddleware, header_principal, serve_asgi
from fargate_runtime.idempotency import RedisStore, load_idempotency_settings, redis_client

if TYPE_CHECKING:
    from starlette.requests import Request

logger = logging.getLogger("tests.misbehaving_api")

MISBEHAVE = os.environ.get("MISBEHAVE", "")
SECONDS = float(os.environ.get("MISBEHAVE_SECONDS", "60"))


def slow_effect(seconds: float) -> None:
    time.sleep(seconds)  # culprit: thread
    logger.info("thread finished")


def cpu_bound(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # culprit: cpu
        pass  # culprit: cpu


async def work(request: Request) -> JSONResponse:
    """Misbehave, then answer."""
    logger.info("misbehaving", extra={"behaviour": MISBEHAVE})
    if MISBEHAVE == "sleep":
        time.sleep(SECONDS)  # noqa: ASYNC251 - the misbehaviour under test  # culprit: sleep
    elif MISBEHAVE == "cpu":
        cpu_bound(SECONDS)
    elif MISBEHAVE == "thread":
        await asyncio.to_thread(slow_effect, SECONDS)
    elif MISBEHAVE == "swallow":
        while True:
            try:
                await asyncio.sleep(SECONDS)  # culprit: swallow
                break
            except asyncio.CancelledError:
                logger.info("cancellation swallowed")
    return JSONResponse({"done": True}, status_code=201)


app = Supervisor()


@app.setup
async def setup(rt: Runtime) -> None:
    """Redis, then the API."""
    settings = load_idempotency_settings()
    redis = redis_client(settings)
    await rt.enter(redis, name="redis")
    api = Starlette(
        routes=[Route("/work", work, methods=["POST"])],
        middleware=[
            Middleware(
                IdempotencyMiddleware,
                store=RedisStore(redis),
                principal=header_principal("x-api-key"),
                prefix=os.environ["TEST_KEY_PREFIX"],
            )
        ],
    )
    await serve_asgi(rt, api)
