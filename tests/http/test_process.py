"""The example API in a real process, under load, stopped by a real SIGTERM.

What a deploy does to an HTTP task, checked end to end: readiness turns 503 within 100 ms, the
lame duck keeps serving, every request the server accepted gets its real response, and the exit
is 0 inside the budget; a request longer than the budget is cut and the exit is 75.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import httpx
import pytest

from fargate_runtime.idempotency import scoped_key
from fargate_runtime.local import free_port
from tests.processes import Child, Line, runtime_argv

if TYPE_CHECKING:
    import redis.asyncio

pytestmark = [pytest.mark.process, pytest.mark.integration]

logger = logging.getLogger(__name__)

APP = "examples.http_api.app:app"
API_KEY = "load-test-client"
LAME_DUCK_SECONDS = 1.5
SLOW_MS = 1500
WORKERS = 24


@dataclass
class Outcome:
    """One request as the client saw it."""

    request_id: str
    started: float  # monotonic
    finished: float
    slow: bool
    # Epoch seconds, to compare with the server's log timestamps.
    started_wall: float = 0.0
    finished_wall: float = 0.0
    status: int | None = None
    payment_id: str | None = None
    error: str | None = None


def start_api(redis_url: str, redis_prefix: str, port: int, **env: str) -> Child:
    """The example API on ``port``, its Redis keys under ``redis_prefix``."""
    return Child(
        runtime_argv(APP),
        env={
            "REDIS_URL": redis_url,
            "PAYMENTS_API_KEY_PREFIX": redis_prefix,
            "FARGATE_RUNTIME_HTTP_HOST": "127.0.0.1",
            "FARGATE_RUNTIME_HTTP_PORT": str(port),
            **env,
        },
    )


async def post_payment(
    client: httpx.AsyncClient, *, slow: bool, key: str | None = None, latency_ms: int = 0
) -> Outcome:
    """POST one payment with a fresh request id (and key); record what came back."""
    request_id = uuid.uuid4().hex
    headers = {
        "x-api-key": API_KEY,
        "x-request-id": request_id,
        "idempotency-key": key or uuid.uuid4().hex,
    }
    body = {
        "amount": 100,
        "currency": "EUR",
        "simulate_latency_ms": SLOW_MS if slow else latency_ms,
    }
    outcome = Outcome(request_id, time.monotonic(), 0.0, slow, started_wall=time.time())
    try:
        response = await client.post("/payments", json=body, headers=headers)
    except httpx.TransportError as exc:
        outcome.error = type(exc).__name__
    else:
        outcome.status = response.status_code
        if response.status_code == 201:
            outcome.payment_id = response.json()["id"]
    outcome.finished = time.monotonic()
    outcome.finished_wall = time.time()
    return outcome


def logged_at(line: Line) -> float:
    """When the server wrote a log line (epoch seconds, millisecond precision)."""
    return datetime.fromisoformat(str(line["timestamp"])).timestamp()


def first_503_after(port: int, sent: float) -> float:
    """Poll /readyz from ``sent`` on; return how long after it the first 503 arrived.

    Blocking, in a thread of its own: the probe must not wait behind the load generator's
    tasks on the test's event loop, as a load balancer's health checker would not.
    """
    while time.monotonic() < sent + 10:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/readyz")
            status = connection.getresponse().status
        finally:
            connection.close()
        if status == 503:
            return time.monotonic() - sent
    return float("inf")


async def test_sigterm_under_load_serves_the_lame_duck_drains_and_exits_zero(
    redis_url: str, redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    """Under load, SIGTERM: 503 readiness within 100 ms, no accepted request lost, exit 0."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stop_timeout = 12.0
    env = {
        "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": str(stop_timeout),
        "FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS": "1",
        "FARGATE_RUNTIME_RELEASE_SECONDS": "1",
        "FARGATE_RUNTIME_CLOSE_SECONDS": "1",
        "FARGATE_RUNTIME_HTTP_LAME_DUCK_SECONDS": str(LAME_DUCK_SECONDS),
        "FARGATE_RUNTIME_HTTP_REQUEST_DRAIN_SECONDS": "3",
    }
    outcomes: list[Outcome] = []
    warmed_up = asyncio.Event()
    stop_sending = asyncio.Event()

    async def worker(client: httpx.AsyncClient, index: int) -> None:
        # Every fourth worker sends slow payments: some are in flight when the listener closes.
        slow = index % 4 == 0
        while not stop_sending.is_set():
            outcome = await post_payment(client, slow=slow, latency_ms=index % 3 * 10)
            outcomes.append(outcome)
            if len(outcomes) >= 60:
                warmed_up.set()
            if outcome.error is not None:
                return  # the listener is gone: a load balancer would have stopped routing here

    with start_api(redis_url, redis_prefix, port, **env) as child:
        child.wait_for_message("payments API ready")
        limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            workers = [asyncio.create_task(worker(client, index)) for index in range(WORKERS)]
            await asyncio.wait_for(warmed_up.wait(), 60)
            probing = asyncio.create_task(
                asyncio.to_thread(first_503_after, port, time.monotonic())
            )
            sent = child.signal(signal.SIGTERM)
            readiness_delay = await probing
            listener_closing = await asyncio.to_thread(
                child.wait_for_message, "http listeners closing; draining requests"
            )
            # Keep the load on through the drain, then stop starting new requests.
            await asyncio.to_thread(child.wait_for_message, "http drained")
            stop_sending.set()
            await asyncio.wait_for(asyncio.gather(*workers), 60)
        code = await asyncio.to_thread(child.wait, 30)
        exited = time.monotonic() - sent

    assert code == 0, child.output()
    assert readiness_delay < 0.1, f"first 503 after {readiness_delay * 1000:.0f} ms"
    assert LAME_DUCK_SECONDS <= exited < stop_timeout - 1, f"exit {exited:.2f} s after SIGTERM"

    # Every request the server accepted completed with its real response, none reset.
    accepted = {
        line["request_id"]: line["status"]
        for line in child.lines
        if line.get("message") == "request" and line.get("path") == "/payments"
    }
    by_id = {o.request_id: o for o in outcomes}
    for request_id, status in accepted.items():
        outcome = by_id[request_id]
        assert outcome.error is None, f"accepted request {request_id} failed: {outcome}"
        assert outcome.status == status == 201
    created = {
        line["payment_id"] for line in child.lines if line.get("message") == "payment created"
    }
    assert created == {o.payment_id for o in outcomes if o.payment_id is not None}

    # The lame duck served: requests sent after SIGTERM got their payments, and nothing at all
    # failed until the listener closed.
    closing_at = logged_at(listener_closing)
    during = [o for o in outcomes if o.started > sent + 0.05 and o.finished_wall < closing_at]
    assert during, "no request was served during the lame duck"
    assert all(o.status == 201 for o in during), [o for o in during if o.status != 201]

    # Failures only for requests the server never saw, once the listener was closing.
    failed = [o for o in outcomes if o.error is not None]
    assert all(o.request_id not in accepted for o in failed)
    assert all(o.finished_wall >= closing_at - 0.002 for o in failed), failed

    # Slow requests were in flight when the listener closed, and finished with their payment.
    spanning = [
        o
        for o in outcomes
        if o.slow and o.request_id in accepted and o.started_wall < closing_at < o.finished_wall
    ]
    assert spanning, "no slow request spanned the listener close"
    assert len(accepted) >= 60  # at least the warm-up
    logger.info(
        "readiness 503 after %.1f ms; accepted %d; served in lame duck %d; spanning the "
        "close %d; refused %d %s; exit after %.2f s",
        readiness_delay * 1000,
        len(accepted),
        len(during),
        len(spanning),
        len(failed),
        sorted({o.error or "" for o in failed}),
        exited,
    )


async def test_request_longer_than_the_budget_is_cut_and_the_exit_is_75(
    redis_url: str, redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    """A charge still running at the drain deadline gets 503, its key is released, exit 75."""
    port = free_port()
    stop_timeout = 6.0
    env = {
        "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": str(stop_timeout),
        "FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS": "1",
        "FARGATE_RUNTIME_RELEASE_SECONDS": "1",
        "FARGATE_RUNTIME_CLOSE_SECONDS": "1",
        "FARGATE_RUNTIME_HTTP_LAME_DUCK_SECONDS": "0.5",
        "FARGATE_RUNTIME_HTTP_REQUEST_DRAIN_SECONDS": "1",
    }
    key = uuid.uuid4().hex
    principal = hashlib.sha256(API_KEY.encode()).hexdigest()[:32]
    stored = scoped_key(f"{redis_prefix}:idempotency", f"{principal} /payments", key)
    with start_api(redis_url, redis_prefix, port, **env) as child:
        child.wait_for_message("payments API ready")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            long_charge = asyncio.create_task(
                post_payment(client, slow=False, key=key, latency_ms=30_000)
            )
            await asyncio.to_thread(child.wait_for_message, "charging payment")
            assert await redis_client.exists(stored) == 1  # claimed while it runs
            sent = child.signal(signal.SIGTERM)
            outcome = await long_charge
        code = await asyncio.to_thread(child.wait, 30)
        exited = time.monotonic() - sent

    assert code == 75, child.output()
    assert 3.0 <= exited < stop_timeout, f"exit {exited:.2f} s after SIGTERM"
    assert outcome.status == 503
    assert "request cut at the drain deadline" in child.messages()
    # Released: the client's retry will run instead of getting 409 for a whole lease.
    assert await redis_client.exists(stored) == 0
    assert not any(line.get("message") == "payment created" for line in child.lines)
