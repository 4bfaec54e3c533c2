"""The example payments API in-process over real sockets and the real Redis: what users copy."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from fargate_runtime import ExitCode, Supervisor

from .serving import example_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import redis.asyncio

    from tests.logcapture import JsonLines

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the example API (keys under the test's Redis prefix), as API key ``demo``."""
    async with example_client(redis_client, redis_prefix) as http_client:
        yield http_client


async def test_create_then_fetch_a_payment(client: httpx.AsyncClient) -> None:
    """A created payment is readable at its Location and carries the key passed downstream."""
    key = uuid.uuid4().hex
    created = await client.post(
        "/payments",
        json={"amount": 1250, "currency": "EUR", "description": "order 1001"},
        headers={"idempotency-key": key},
    )
    assert created.status_code == 201
    payment = created.json()
    assert payment["provider_idempotency_key"] == key
    assert payment["fencing_token"] > 0
    fetched = await client.get(created.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == payment


async def test_retry_replays_the_same_payment(client: httpx.AsyncClient) -> None:
    """The same POST twice creates one payment; the second answer is the replayed first."""
    headers = {"idempotency-key": uuid.uuid4().hex}
    body = {"amount": 990, "currency": "USD"}
    first = await client.post("/payments", json=body, headers=headers)
    again = await client.post("/payments", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]


async def test_payments_are_private_to_their_api_key(client: httpx.AsyncClient) -> None:
    """Another API key cannot read a payment; a missing one is a 401."""
    created = await client.post(
        "/payments",
        json={"amount": 5, "currency": "EUR"},
        headers={"idempotency-key": uuid.uuid4().hex},
    )
    other = await client.get(created.headers["location"], headers={"x-api-key": "other"})
    unauthenticated = await client.post(
        "/payments",
        json={"amount": 5, "currency": "EUR"},
        headers={"idempotency-key": uuid.uuid4().hex, "x-api-key": ""},
    )
    assert other.status_code == 404
    assert other.headers["content-type"] == "application/problem+json"
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 0, "currency": "EUR"},
        {"amount": 10, "currency": "euro"},
        {"amount": 10},
        {"amount": 10, "currency": "EUR", "surprise": True},
    ],
)
async def test_invalid_payments_are_400_problems(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    """Bad amounts, currencies and unknown fields are refused with a problem 400."""
    response = await client.post(
        "/payments", json=body, headers={"idempotency-key": uuid.uuid4().hex}
    )
    assert response.status_code == 400
    assert response.json()["status"] == 400


async def test_logs_carry_the_request_id_which_is_echoed(
    client: httpx.AsyncClient, json_lines: JsonLines
) -> None:
    """The client's x-request-id is on the app's log lines and comes back in the response."""
    request_id = uuid.uuid4().hex
    captured = json_lines
    response = await client.post(
        "/payments",
        json={"amount": 7, "currency": "EUR"},
        headers={"idempotency-key": uuid.uuid4().hex, "x-request-id": request_id},
    )
    odd = await client.get("/payments/nope", headers={"x-request-id": "has spaces"})
    assert response.headers["x-request-id"] == request_id
    assert odd.headers["x-request-id"] != "has spaces"  # replaced by a made-up one
    mine = {
        line["message"]: line for line in captured.lines if line.get("request_id") == request_id
    }
    assert mine["payment created"]["payment_id"] == response.json()["id"]
    assert mine["request"]["status"] == 201
    assert mine["request"]["path"] == "/payments"
    odd_id = odd.headers["x-request-id"]
    assert any(line.get("request_id") == odd_id for line in captured.lines)


async def test_local_run_without_redis_url_starts_a_private_redis(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no REDIS_URL and nothing on 6379, the example serves on a redis-server of its own."""
    from examples.http_api import app as example

    for name in ("REDIS_URL", "FARGATE_RUNTIME_IDEMPOTENCY_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(example, "redis_answers", lambda host, port: False)
    monkeypatch.setenv("FARGATE_RUNTIME_HTTP_HOST", "127.0.0.1")
    monkeypatch.setenv("FARGATE_RUNTIME_HTTP_PORT", "0")
    monkeypatch.setenv("FARGATE_RUNTIME_HTTP_LAME_DUCK_SECONDS", "0")
    supervisor = Supervisor(example.setup, handle_signals=False)
    with caplog.at_level(logging.INFO):
        run = asyncio.create_task(supervisor.serve())
        async with asyncio.timeout(30):
            while not any(r.getMessage() == "payments API ready" for r in caplog.records):
                assert not run.done(), caplog.text
                await asyncio.sleep(0.02)
        ready = next(r for r in caplog.records if r.getMessage() == "payments API ready")
        port = getattr(ready, "port", None)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http_client:
            created = await http_client.post(
                "/payments",
                json={"amount": 1, "currency": "EUR"},
                headers={"x-api-key": "demo", "idempotency-key": "local-1"},
            )
        supervisor.request_shutdown("test")
        code = await asyncio.wait_for(run, 30)
    assert created.status_code == 201
    assert code == ExitCode.OK
    started = [r for r in caplog.records if r.getMessage().startswith("no REDIS_URL")]
    assert started, "the private redis-server was not started"
