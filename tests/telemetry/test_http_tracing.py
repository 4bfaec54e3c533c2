"""SERVER spans of HTTP requests over a real socket: the example API, idempotency outcomes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
import redis.asyncio
from opentelemetry import trace
from opentelemetry.propagate import inject
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from fargate_runtime.http import (
    IdempotencyMiddleware,
    RequestContextMiddleware,
    TracingMiddleware,
    header_principal,
)
from fargate_runtime.idempotency import RedisStore
from fargate_runtime.telemetry import IDEMPOTENCY_OUTCOME_ATTRIBUTE
from tests.http.serving import HTTP, RUNTIME, example_client, served

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from opentelemetry.sdk.trace import ReadableSpan
    from starlette.requests import Request

    from fargate_runtime.local import RedisServer
    from tests.logcapture import JsonLines
    from tests.telemetry.conftest import Recorded

pytestmark = pytest.mark.integration

TRACER = trace.get_tracer("tests")
PAYMENT = {"amount": 1250, "currency": "EUR"}


@pytest.fixture
async def client(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the example API served over a real socket, as API key ``demo``."""
    async with example_client(redis_client, redis_prefix) as http_client:
        yield http_client


def caller_context() -> tuple[dict[str, str], trace.SpanContext]:
    """Headers carrying a caller's span context (``traceparent``), and that context."""
    headers: dict[str, str] = {}
    with TRACER.start_as_current_span("caller", kind=trace.SpanKind.CLIENT) as caller:
        inject(headers)
    return headers, caller.get_span_context()


def server_spans(recorded: Recorded) -> list[ReadableSpan]:
    """Finished SERVER spans, oldest first."""
    spans = recorded.spans.get_finished_spans()
    return [span for span in spans if span.kind is trace.SpanKind.SERVER]


def outcome_of(span: ReadableSpan) -> object:
    """The idempotency outcome a span carries (None when it has none)."""
    return (span.attributes or {}).get(IDEMPOTENCY_OUTCOME_ATTRIBUTE)


async def test_request_span_continues_the_callers_trace(
    recorded: Recorded, json_lines: JsonLines, client: httpx.AsyncClient
) -> None:
    """A POST with ``traceparent`` is served in a SERVER span, child of the caller's span."""
    headers, caller = caller_context()
    response = await client.post(
        "/payments", json=PAYMENT, headers={**headers, "idempotency-key": uuid.uuid4().hex}
    )
    assert response.status_code == 201
    (span,) = server_spans(recorded)
    assert span.name == "POST /payments"
    assert span.parent is not None
    assert span.parent.span_id == caller.span_id
    assert span.context.trace_id == caller.trace_id
    assert span.attributes is not None
    assert span.attributes["http.request.method"] == "POST"
    assert span.attributes["url.path"] == "/payments"
    assert span.attributes["url.scheme"] == "http"
    assert span.attributes["http.route"] == "/payments"
    assert span.attributes["http.response.status_code"] == 201
    assert outcome_of(span) == "claimed"
    assert span.status.status_code is trace.StatusCode.UNSET
    # The request line and the app's own line are in the span (tracing is outermost).
    for message in ("request", "payment created"):
        (line,) = json_lines.with_message(message)
        assert line["trace_id"] == f"{caller.trace_id:032x}"
        assert line["span_id"] == f"{span.context.span_id:016x}"


async def test_replay_and_mismatch_are_on_the_request_span(
    recorded: Recorded, client: httpx.AsyncClient
) -> None:
    """A retry is marked ``replayed``, the same key with another body ``mismatch`` (422)."""
    key = {"idempotency-key": uuid.uuid4().hex}
    first = await client.post("/payments", json=PAYMENT, headers=key)
    again = await client.post("/payments", json=PAYMENT, headers=key)
    other = await client.post("/payments", json={**PAYMENT, "amount": 1}, headers=key)
    assert [first.status_code, again.status_code, other.status_code] == [201, 201, 422]
    assert again.headers["idempotent-replayed"] == "true"
    spans = server_spans(recorded)
    assert [outcome_of(span) for span in spans] == ["claimed", "replayed", "mismatch"]
    assert [(span.attributes or {})["http.response.status_code"] for span in spans] == [
        201,
        201,
        422,
    ]
    # The middleware answered the replay and the 422 itself: still named by their route.
    assert [span.name for span in spans] == ["POST /payments"] * 3
    assert [(span.attributes or {})["http.route"] for span in spans] == ["/payments"] * 3


async def test_a_request_refused_before_routing_is_named_by_its_route(
    recorded: Recorded, client: httpx.AsyncClient
) -> None:
    """A POST without its required Idempotency-Key (400) still carries ``http.route``."""
    response = await client.post("/payments", json=PAYMENT)
    assert response.status_code == 400
    (span,) = server_spans(recorded)
    assert span.name == "POST /payments"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/payments"
    assert span.attributes["http.response.status_code"] == 400
    assert span.status.status_code is trace.StatusCode.UNSET


async def test_route_template_names_the_span_and_unknown_paths_have_none(
    recorded: Recorded, client: httpx.AsyncClient
) -> None:
    """``GET /payments/{payment_id}`` names the span by its template; a 404 is just ``GET``."""
    created = await client.post(
        "/payments", json=PAYMENT, headers={"idempotency-key": uuid.uuid4().hex}
    )
    fetched = await client.get(created.headers["location"])
    missing = await client.get("/nowhere")
    assert [fetched.status_code, missing.status_code] == [200, 404]
    _, fetch, lost = server_spans(recorded)
    assert fetch.name == "GET /payments/{payment_id}"
    assert fetch.attributes is not None
    assert fetch.attributes["http.route"] == "/payments/{payment_id}"
    assert fetch.attributes["url.path"] == created.headers["location"]
    assert outcome_of(fetch) is None  # GET is not guarded by Idempotency-Key
    assert lost.name == "GET"
    assert "http.route" not in (lost.attributes or {})


async def test_in_progress_is_on_the_span_of_the_409(
    recorded: Recorded, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """A duplicate while the first request runs answers 409, its span marked ``in_progress``."""
    entered, finish = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> PlainTextResponse:
        entered.set()
        await finish.wait()
        return PlainTextResponse("done")

    app = Starlette(
        routes=[Route("/slow", slow, methods=["POST"])],
        middleware=[
            Middleware(TracingMiddleware),
            Middleware(
                IdempotencyMiddleware,
                store=RedisStore(redis_client),
                principal=header_principal("x-api-key"),
                prefix=redis_prefix,
            ),
        ],
    )
    key = {"idempotency-key": uuid.uuid4().hex}
    async with served(app) as running, httpx.AsyncClient(base_url=running.url) as http:
        first = asyncio.create_task(http.post("/slow", content=b"x", headers=key))
        await entered.wait()
        duplicate = await http.post("/slow", content=b"x", headers=key)
        finish.set()
        assert (await first).status_code == 200
    assert duplicate.status_code == 409
    busy, done = server_spans(recorded)  # the 409 ends first
    assert (outcome_of(busy), outcome_of(done)) == ("in_progress", "claimed")
    assert (busy.attributes or {})["http.response.status_code"] == 409
    assert (busy.name, done.name) == ("POST /slow", "POST /slow")


async def test_store_error_is_on_the_span_of_the_503(
    recorded: Recorded, private_redis: RedisServer, redis_prefix: str
) -> None:
    """With Redis down the request is refused (503): its span is an error, ``store_error``."""
    store_client = redis.asyncio.Redis.from_url(private_redis.url, socket_connect_timeout=1)
    private_redis.stop()
    app = Starlette(
        routes=[Route("/pay", lambda request: PlainTextResponse("ran"), methods=["POST"])],
        middleware=[
            Middleware(TracingMiddleware),
            Middleware(RequestContextMiddleware),
            Middleware(
                IdempotencyMiddleware,
                store=RedisStore(store_client),
                principal=header_principal("x-api-key"),
                prefix=redis_prefix,
            ),
        ],
    )
    try:
        async with served(app) as running, httpx.AsyncClient(base_url=running.url) as http:
            response = await http.post("/pay", headers={"idempotency-key": "k1"})
    finally:
        await store_client.aclose()
    assert response.status_code == 503
    (span,) = server_spans(recorded)
    assert outcome_of(span) == "store_error"
    assert span.status.status_code is trace.StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "503"
    assert span.name == "POST /pay"


async def test_app_exception_is_a_500_everywhere_it_is_told(
    recorded: Recorded, json_lines: JsonLines
) -> None:
    """An exception escaping the app: a 500 on the span, the request line and the duration, and
    uvicorn's traceback line names the request and its trace."""

    async def broken(request: Request) -> PlainTextResponse:
        raise LookupError("no such ledger")

    app = Starlette(
        routes=[Route("/broken", broken)],
        middleware=[Middleware(TracingMiddleware), Middleware(RequestContextMiddleware)],
    )
    async with served(app) as running, httpx.AsyncClient(base_url=running.url) as http:
        response = await http.get("/broken", headers={"x-request-id": "req-500"})
    assert response.status_code == 500
    (span,) = server_spans(recorded)
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.status.description == "LookupError: no such ledger"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "LookupError"
    assert span.attributes["http.route"] == "/broken"
    assert span.attributes["http.response.status_code"] == 500
    assert [event.name for event in span.events] == ["exception"]
    (request_line,) = json_lines.with_message("request")
    assert (request_line["status"], request_line["request_id"]) == (500, "req-500")
    (traceback_line,) = [
        line
        for line in json_lines.lines
        if line["logger"] == "uvicorn.error" and "exception" in line
    ]
    assert traceback_line["message"].startswith("Exception in ASGI application")
    assert "LookupError: no such ledger" in traceback_line["exception"]
    assert traceback_line["request_id"] == "req-500"
    assert traceback_line["trace_id"] == f"{span.context.trace_id:032x}"
    assert traceback_line["span_id"] == f"{span.context.span_id:016x}"
    (duration,) = [
        p
        for p in recorded.points("http.server.request.duration")
        if (p.attributes or {}).get("http.route") == "/broken"
    ]
    assert dict(duration.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "http.route": "/broken",
        "http.response.status_code": 500,
        "error.type": "LookupError",
    }


async def test_a_request_cut_at_the_drain_deadline_keeps_its_ids(
    recorded: Recorded, json_lines: JsonLines
) -> None:
    """The cut request's lines carry its request and trace ids; its span says it was cancelled."""
    entered = asyncio.Event()

    async def stuck(request: Request) -> PlainTextResponse:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = Starlette(
        routes=[Route("/stuck", stuck)],
        middleware=[Middleware(TracingMiddleware), Middleware(RequestContextMiddleware)],
    )
    runtime = RUNTIME.model_copy(update={"drain_seconds": 1.0})
    http_settings = HTTP.model_copy(update={"request_drain_seconds": 0.5})
    async with (
        served(app, http=http_settings, runtime=runtime) as running,
        httpx.AsyncClient(base_url=running.url, timeout=10) as http,
    ):
        request = asyncio.create_task(http.get("/stuck", headers={"x-request-id": "req-cut"}))
        await entered.wait()
        running.stop()
        response = await request
    assert response.status_code == 503
    (span,) = server_spans(recorded)
    assert span.status.status_code is trace.StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "CancelledError"
    (cut,) = json_lines.with_message("request cut at the drain deadline")
    (request_line,) = json_lines.with_message("request")
    for line in (cut, request_line):
        assert line["request_id"] == "req-cut"
        assert line["trace_id"] == f"{span.context.trace_id:032x}"
    assert cut["status"] == 503
    assert (request_line["status"], request_line["cancelled"]) == (None, True)


async def test_a_route_behind_a_mount_gets_no_route_attribute(recorded: Recorded) -> None:
    """Behind a Mount the full template is unknown: no ``http.route`` rather than a wrong one."""

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item_id"])

    app = Starlette(
        routes=[Mount("/v1", routes=[Route("/items/{item_id}", item)])],
        middleware=[Middleware(TracingMiddleware)],
    )
    async with served(app) as running, httpx.AsyncClient(base_url=running.url) as http:
        response = await http.get("/v1/items/7")
    assert response.text == "7"
    (span,) = server_spans(recorded)
    assert span.name == "GET"
    assert span.attributes is not None
    assert "http.route" not in span.attributes
    assert span.attributes["url.path"] == "/v1/items/7"


def test_without_a_provider_requests_pass_straight_through() -> None:
    """With telemetry off the middleware hands the app the very ``send`` it got: no wrapping."""
    script = (
        "import asyncio\n"
        "from fargate_runtime.http import TracingMiddleware\n"
        "from fargate_runtime.telemetry import metrics_enabled, tracing_enabled\n"
        "seen = []\n"
        "async def app(scope, receive, send):\n"
        "    seen.append(send)\n"
        "async def send(message):\n"
        "    pass\n"
        "scope = {'type': 'http', 'method': 'GET', 'path': '/', 'headers': []}\n"
        "asyncio.run(TracingMiddleware(app)(scope, None, send))\n"
        "print(seen == [send], tracing_enabled(), metrics_enabled())\n"
        "from opentelemetry import metrics, trace\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "metrics.set_meter_provider(MeterProvider())\n"
        "print(tracing_enabled(), metrics_enabled())\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert output == ["True", "False", "False", "True", "True"]
