"""Idempotency-Key middleware over real sockets, on real Redis and PostgreSQL (and in memory)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fargate_runtime.errors import IdempotencyKeyError
from fargate_runtime.http import (
    HttpIdempotencySettings,
    IdempotencyMiddleware,
    header_principal,
    parse_key,
)
from fargate_runtime.idempotency import MemoryStore, RedisStore

from .serving import served

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from starlette.requests import Request

    from fargate_runtime.idempotency import IdempotencyStore
    from fargate_runtime.local import RedisServer

    from .serving import Served

pytestmark = pytest.mark.integration

SETTINGS = HttpIdempotencySettings(max_body_bytes=1024, max_response_bytes=2048, lease_seconds=30)


class Handlers:
    """A small API whose handlers count how often they really ran."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.gate = asyncio.Event()
        self.gate_reached = asyncio.Event()

    def ran(self, name: str) -> int:
        self.runs[name] = self.runs.get(name, 0) + 1
        return self.runs[name]

    async def create(self, request: Request) -> Response:
        self.ran("create")
        body = await request.json()
        payment = {"id": f"pay_{uuid.uuid4().hex}", **body}
        return JSONResponse(
            payment,
            status_code=201,
            headers={"location": f"/payments/{payment['id']}", "x-custom": "kept"},
        )

    async def refund(self, request: Request) -> Response:
        self.ran("refund")
        return JSONResponse({"refund": uuid.uuid4().hex}, status_code=201)

    async def slow(self, request: Request) -> Response:
        if self.ran("slow") == 1:  # a second run (a duplicate let through) would not wait
            self.gate_reached.set()
            await self.gate.wait()
        return JSONResponse({"slow": uuid.uuid4().hex}, status_code=201)

    async def flaky(self, request: Request) -> Response:
        if self.ran("flaky") == 1:
            return JSONResponse({"error": "provider down"}, status_code=502)
        return JSONResponse({"flaky": uuid.uuid4().hex}, status_code=201)

    async def boom(self, request: Request) -> Response:
        if self.ran("boom") == 1:
            raise RuntimeError("handler bug")
        return JSONResponse({"boom": uuid.uuid4().hex}, status_code=201)

    async def invalid(self, request: Request) -> Response:
        self.ran("invalid")
        return JSONResponse({"error": "amount must be positive", "n": uuid.uuid4().hex}, 400)

    async def stream(self, request: Request) -> Response:
        self.ran("stream")
        marker = uuid.uuid4().hex.encode()

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(3):
                yield b"chunk %d %s\n" % (index, marker)

        return StreamingResponse(chunks(), media_type="text/plain")

    async def big(self, request: Request) -> Response:
        self.ran("big")
        return Response(b"x" * 4096, media_type="application/octet-stream")

    async def listing(self, request: Request) -> Response:
        self.ran("listing")
        return JSONResponse([])

    async def unguarded(self, request: Request) -> Response:
        self.ran("unguarded")
        return JSONResponse({"n": uuid.uuid4().hex})

    def app(
        self,
        store: IdempotencyStore,
        prefix: str,
        *,
        required: bool = True,
        settings: HttpIdempotencySettings = SETTINGS,
    ) -> Starlette:
        routes = [
            Route("/payments", self.create, methods=["POST"]),
            Route("/payments", self.listing, methods=["GET"]),
            Route("/unguarded", self.unguarded, methods=["POST"]),
            Route("/payments/{id}/refunds", self.refund, methods=["POST", "PATCH"]),
            Route("/slow", self.slow, methods=["POST"]),
            Route("/flaky", self.flaky, methods=["POST"]),
            Route("/boom", self.boom, methods=["POST"]),
            Route("/invalid", self.invalid, methods=["POST"]),
            Route("/stream", self.stream, methods=["POST"]),
            Route("/big", self.big, methods=["POST"]),
        ]
        middleware = Middleware(
            IdempotencyMiddleware,
            store=store,
            principal=header_principal("x-api-key"),
            routes=[
                "/payments",
                "/payments/{id}/refunds",
                "/slow",
                "/flaky",
                "/boom",
                "/invalid",
                "/stream",
                "/big",
            ],
            required=required,
            prefix=prefix,
            settings=settings,
        )
        return Starlette(routes=routes, middleware=[middleware])


@pytest.fixture(params=["redis", "memory", "postgres"])
def store(
    request: pytest.FixtureRequest, redis_client: redis.asyncio.Redis
) -> Iterator[IdempotencyStore]:
    """The real Redis store (keys under the test's prefix, deleted afterwards), memory, or the
    PostgreSQL store on a schema of the test's own."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "postgres":
        yield request.getfixturevalue("postgres_store")
    else:
        yield RedisStore(redis_client)


@pytest.fixture
async def handlers() -> Handlers:
    """Fresh handlers and run counters."""
    return Handlers()


@pytest.fixture
async def api(
    store: IdempotencyStore, handlers: Handlers, redis_prefix: str
) -> AsyncIterator[Served]:
    """The API with the middleware, served by uvicorn under a supervisor."""
    async with served(handlers.app(store, redis_prefix)) as running:
        yield running


@pytest.fixture
async def client(api: Served) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API authenticated as client A."""
    async with httpx.AsyncClient(
        base_url=api.url, headers={"x-api-key": "client-a"}, timeout=30
    ) as http_client:
        yield http_client


def key() -> dict[str, str]:
    """A fresh Idempotency-Key header."""
    return {"idempotency-key": uuid.uuid4().hex}


def problem(response: httpx.Response) -> dict[str, Any]:
    """The problem details body, checked to be one."""
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


async def raw_exchange(port: int, request: bytes) -> tuple[bytes, list[bytes], bytes]:
    """Send raw request bytes; return the status line, header lines and body as received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()  # "connection: close": read to EOF
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, lines, body


# --- missing, malformed, oversized --------------------------------------------------------


async def test_missing_key_is_400_and_nothing_runs(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """A configured route without Idempotency-Key is refused with a problem 400."""
    response = await client.post("/payments", json={"amount": 100})
    assert response.status_code == 400
    assert problem(response)["code"] == "idempotency_key_missing"
    assert handlers.runs == {}


@pytest.mark.parametrize(
    "value",
    [
        "x" * 256,  # longer than 255
        '"unterminated',
        "two words",
        "caf\u00e9",  # not ASCII
        '""',  # empty string
    ],
)
async def test_malformed_key_is_400(
    client: httpx.AsyncClient, handlers: Handlers, value: str
) -> None:
    """Keys that are too long, not printable ASCII, or empty are refused with 400."""
    response = await client.post(
        "/payments", json={"amount": 1}, headers={b"idempotency-key": value.encode("utf-8")}
    )
    assert response.status_code == 400
    assert problem(response)["code"] == "idempotency_key_invalid"
    assert handlers.runs == {}


async def test_two_key_headers_are_400(client: httpx.AsyncClient, handlers: Handlers) -> None:
    """A request with two Idempotency-Key fields is ambiguous and refused."""
    headers = [("idempotency-key", "a1"), ("idempotency-key", "a2")]
    response = await client.post("/payments", json={"amount": 1}, headers=headers)
    assert response.status_code == 400
    assert handlers.runs == {}


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient, handlers: Handlers) -> None:
    """A body larger than the fingerprint buffer is refused before anything runs."""
    response = await client.post("/payments", content=b"{" + b" " * 2048 + b"}", headers=key())
    assert response.status_code == 413
    assert problem(response)["code"] == "request_too_large"
    assert handlers.runs == {}


async def test_other_methods_and_routes_pass_through(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """GET on a configured path, and POST on a path not configured, need no key and never replay."""
    first = await client.get("/payments")
    second = await client.get("/payments")
    headers = key()
    posts = [await client.post("/unguarded", headers=headers) for _ in range(2)]
    assert (first.status_code, second.status_code) == (200, 200)
    assert "idempotent-replayed" not in second.headers
    assert [response.status_code for response in posts] == [200, 200]
    assert posts[0].content != posts[1].content
    assert handlers.runs == {"listing": 2, "unguarded": 2}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"order-1001", "order-1001"),
        (b'"order-1001"', "order-1001"),
        (b'  "with \\"quote\\" and space"  ', 'with "quote" and space'),
        (b'"back\\\\slash"', "back\\slash"),
    ],
)
def test_parse_key_reads_bare_and_structured_field_forms(raw: bytes, expected: str) -> None:
    """Bare tokens and sf-strings (with their escapes) give the key the client meant."""
    assert parse_key(raw, max_length=255) == expected


@pytest.mark.parametrize("raw", [b"", b'"a\\x"', b"a,b", b'"a', b"x" * 256, b"tab\tkey"])
def test_parse_key_refuses_what_is_not_a_key(raw: bytes) -> None:
    """Empty, bad escapes, lists, unterminated strings, too long, controls: all refused."""
    with pytest.raises(IdempotencyKeyError):
        parse_key(raw, max_length=255)


# --- replay ---------------------------------------------------------------------------------


async def test_completed_key_replays_status_headers_and_body_byte_for_byte(
    api: Served, handlers: Handlers
) -> None:
    """A retry gets the first response's exact bytes, marked Idempotent-Replayed, and no run."""
    body = b'{"amount":1250,"currency":"EUR"}'
    request = (
        b"POST /payments HTTP/1.1\r\nhost: test\r\nx-api-key: client-a\r\n"
        b"idempotency-key: " + uuid.uuid4().hex.encode() + b"\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    first_status, first_lines, first_body = await raw_exchange(api.server.port, request)
    again_status, again_lines, again_body = await raw_exchange(api.server.port, request)

    def app_headers(lines: list[bytes]) -> list[bytes]:
        # uvicorn adds date, server and connection to every response, outside the app.
        added = (b"date:", b"server:", b"connection:", b"idempotent-replayed:")
        return [line for line in lines if not line.lower().startswith(added)]

    assert first_status == again_status == b"HTTP/1.1 201 Created"
    assert app_headers(again_lines) == app_headers(first_lines)
    assert b"x-custom: kept" in first_lines
    assert again_body == first_body
    assert json.loads(first_body)["amount"] == 1250
    assert b"idempotent-replayed: true" in again_lines
    assert not any(line.startswith(b"idempotent-replayed") for line in first_lines)
    assert handlers.runs == {"create": 1}


async def test_quoted_and_bare_forms_of_a_key_are_the_same_key(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """The draft's structured-field string and the bare token name one key."""
    token = uuid.uuid4().hex
    first = await client.post("/payments", json={"a": 1}, headers={"idempotency-key": token})
    again = await client.post("/payments", json={"a": 1}, headers={"idempotency-key": f'"{token}"'})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert handlers.runs == {"create": 1}


async def test_streamed_response_replays_byte_for_byte(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """A response sent in several body chunks is stored whole and replayed identically."""
    headers = key()
    first = await client.post("/stream", headers=headers)
    again = await client.post("/stream", headers=headers)
    assert first.content.count(b"\n") == 3
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert handlers.runs == {"stream": 1}


async def test_4xx_is_stored_and_replayed(client: httpx.AsyncClient, handlers: Handlers) -> None:
    """A client error is a final answer: stored, and replayed to the retry."""
    headers = key()
    first = await client.post("/invalid", headers=headers)
    again = await client.post("/invalid", headers=headers)
    assert first.status_code == again.status_code == 400
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert handlers.runs == {"invalid": 1}


# --- mismatch, in progress, concurrency ----------------------------------------------------


async def test_same_key_with_another_body_is_422(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """Reusing a key for a different payload is refused, not replayed."""
    headers = key()
    await client.post("/payments", json={"amount": 100}, headers=headers)
    response = await client.post("/payments", json={"amount": 999}, headers=headers)
    assert response.status_code == 422
    assert problem(response)["code"] == "idempotency_key_reused"
    assert handlers.runs == {"create": 1}


async def test_same_key_on_another_path_of_the_route_or_method_is_422(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """The fingerprint covers the concrete path and the method within one route pattern."""
    headers = key()
    assert (await client.post("/payments/p1/refunds", headers=headers)).status_code == 201
    other_path = await client.post("/payments/p2/refunds", headers=headers)
    other_method = await client.patch("/payments/p1/refunds", headers=headers)
    assert other_path.status_code == 422
    assert other_method.status_code == 422
    assert handlers.runs == {"refund": 1}


async def test_concurrent_duplicates_run_exactly_once(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """Of ten simultaneous requests with one key, one runs and nine get 409; a retry replays."""
    headers = key()
    first = asyncio.create_task(client.post("/slow", headers=headers))
    await handlers.gate_reached.wait()
    duplicates = await asyncio.gather(*(client.post("/slow", headers=headers) for _ in range(9)))
    handlers.gate.set()
    winner = await first
    retry = await client.post("/slow", headers=headers)
    assert [response.status_code for response in duplicates] == [409] * 9
    assert all(response.headers["retry-after"] == "1" for response in duplicates)
    assert problem(duplicates[0])["code"] == "idempotency_key_in_use"
    assert winner.status_code == 201
    assert retry.content == winner.content
    assert handlers.runs == {"slow": 1}


async def test_simultaneous_first_requests_run_exactly_once(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """Twenty duplicates sent at the same instant: exactly one runs, none sees a 5xx."""
    headers = key()
    handlers.gate.set()
    responses = await asyncio.gather(*(client.post("/slow", headers=headers) for _ in range(20)))
    statuses = sorted(response.status_code for response in responses)
    assert handlers.runs == {"slow": 1}
    assert set(statuses) <= {201, 409}
    bodies = {response.content for response in responses if response.status_code == 201}
    assert len(bodies) == 1  # the replays carry the one execution's body


# --- failures release the key ---------------------------------------------------------------


async def test_5xx_releases_the_key_so_a_retry_runs_again(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """A server error is not stored: the retry runs the handler and then that result replays."""
    headers = key()
    failed = await client.post("/flaky", headers=headers)
    retried = await client.post("/flaky", headers=headers)
    replayed = await client.post("/flaky", headers=headers)
    assert failed.status_code == 502
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert replayed.content == retried.content
    assert handlers.runs == {"flaky": 2}


async def test_exception_releases_the_key_so_a_retry_runs_again(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """A handler that raises leaves no record behind: the retry runs."""
    headers = key()
    failed = await client.post("/boom", headers=headers)
    retried = await client.post("/boom", headers=headers)
    assert failed.status_code == 500
    assert retried.status_code == 201
    assert handlers.runs == {"boom": 2}


async def test_response_too_large_to_keep_is_never_run_twice(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """A response above max_response_bytes is delivered whole once; a retry gets its status and
    headers with a note instead of its body, and the handler does not run again."""
    headers = key()
    first = await client.post("/big", headers=headers)
    again = await client.post("/big", headers=headers)
    assert len(first.content) == 4096
    assert again.status_code == first.status_code
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["idempotent-body-omitted"] == "true"
    assert again.headers["content-type"] == "application/problem+json"
    assert "processed once" in again.json()["detail"]
    assert handlers.runs == {"big": 1}


# --- scoping ---------------------------------------------------------------------------------


async def test_another_clients_key_does_not_replay(
    api: Served, client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """The same key from client B (or with no API key) runs on its own and sees none of A's."""
    headers = key()
    mine = await client.post("/payments", json={"amount": 5}, headers=headers)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as anonymous:
        theirs = await anonymous.post(
            "/payments", json={"amount": 7}, headers={**headers, "x-api-key": "client-b"}
        )
        nobody = await anonymous.post("/payments", json={"amount": 5}, headers=headers)
    assert mine.status_code == theirs.status_code == nobody.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert "idempotent-replayed" not in nobody.headers
    assert len({mine.json()["id"], theirs.json()["id"], nobody.json()["id"]}) == 3
    assert handlers.runs == {"create": 3}


async def test_same_key_on_another_route_is_independent(
    client: httpx.AsyncClient, handlers: Handlers
) -> None:
    """Keys are scoped per route pattern: one key on two routes runs both."""
    headers = key()
    payment = await client.post("/payments", json={"amount": 5}, headers=headers)
    refund = await client.post("/payments/p1/refunds", headers=headers)
    assert (payment.status_code, refund.status_code) == (201, 201)
    assert handlers.runs == {"create": 1, "refund": 1}


# --- optional keys, store outage ------------------------------------------------------------


async def test_optional_key_lets_keyless_requests_run_every_time(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """With required=False a request without a key runs; one with a key is still protected."""
    handlers = Handlers()
    async with (
        served(handlers.app(RedisStore(redis_client), redis_prefix, required=False)) as api,
        httpx.AsyncClient(base_url=api.url) as client,
    ):
        plain = [await client.post("/payments", json={"a": 1}) for _ in range(2)]
        headers = key()
        keyed = [await client.post("/payments", json={"a": 1}, headers=headers) for _ in range(2)]
    assert [response.status_code for response in plain] == [201, 201]
    assert keyed[1].headers["idempotent-replayed"] == "true"
    assert handlers.runs == {"create": 3}


async def test_store_outage_fails_closed_with_503(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """With Redis down nothing runs: the client gets 503 with Retry-After and can retry later."""
    handlers = Handlers()
    redis_client = redis.asyncio.Redis.from_url(private_redis.url, socket_timeout=1)
    try:
        async with (
            served(handlers.app(RedisStore(redis_client), redis_prefix)) as api,
            httpx.AsyncClient(base_url=api.url, timeout=30) as client,
        ):
            headers = key()
            await asyncio.to_thread(private_redis.stop)
            down = await client.post("/payments", json={"a": 1}, headers=headers)
            await asyncio.to_thread(private_redis.start)
            up = await client.post("/payments", json={"a": 1}, headers=headers)
    finally:
        await redis_client.aclose()
    assert down.status_code == 503
    assert down.headers["retry-after"] == "1"
    assert problem(down)["code"] == "idempotency_store_unavailable"
    assert up.status_code == 201
    assert handlers.runs == {"create": 1}


async def test_long_request_keeps_its_claim_past_the_lease(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """A request running longer than the lease keeps the key (renewed): duplicates stay 409."""
    handlers = Handlers()
    # A 1 s lease, renewed every third of it.
    short_lease = HttpIdempotencySettings(lease_seconds=1)
    app = handlers.app(RedisStore(redis_client), redis_prefix, settings=short_lease)
    async with (
        served(app) as api,
        httpx.AsyncClient(base_url=api.url, timeout=30) as client,
    ):
        headers = key()
        first = asyncio.create_task(client.post("/slow", headers=headers))
        await handlers.gate_reached.wait()
        loop = asyncio.get_running_loop()
        past_lease = loop.time() + 2.5
        statuses = []
        while loop.time() < past_lease:
            statuses.append((await client.post("/slow", headers=headers)).status_code)
        handlers.gate.set()
        assert (await first).status_code == 201
    assert set(statuses) == {409}
    assert handlers.runs == {"slow": 1}
