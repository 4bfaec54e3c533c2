"""The ASGI host under the supervisor, over real sockets: lifespan order, readiness, drain, cut."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from fargate_runtime import ConfigurationError, ExitCode, Runtime, Supervisor
from fargate_runtime.http import HttpSettings, serve_asgi

from .serving import HTTP, RUNTIME, served

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send


class Gate:
    """A slow handler's controls: it announces that it started, then waits to be let go."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()


def gated_app(gate: Gate, *, events: list[str] | None = None) -> Starlette:
    """An app with ``/slow`` (gated) and ``/fast``, and a lifespan that logs to ``events``."""

    async def slow(request: Request) -> PlainTextResponse:
        gate.started.set()
        try:
            await gate.release.wait()
        except asyncio.CancelledError:
            gate.cancelled.set()
            raise
        return PlainTextResponse("slow done")

    async def fast(request: Request) -> JSONResponse:
        return JSONResponse({"greeting": request.state.greeting})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if events is not None:
            events.append("app started")
        yield {"greeting": "hello"}
        if events is not None:
            events.append("app stopped")

    return Starlette(
        routes=[Route("/slow", slow), Route("/fast", fast)],
        lifespan=lifespan,
    )


async def test_lifespan_runs_inside_the_resource_order_and_its_state_reaches_requests() -> None:
    """The app starts after earlier resources and stops before they close; state is shared."""
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def pool() -> AsyncIterator[None]:
        events.append("pool opened")
        yield
        events.append("pool closed")

    async def before(rt: Runtime) -> None:
        await rt.enter(pool(), name="pool")

    async with served(gated_app(Gate(), events=events), before=before) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            response = await client.get("/fast")
        assert response.json() == {"greeting": "hello"}
        app.stop()
        assert await app.exit_code() == ExitCode.OK
    assert events == ["pool opened", "app started", "app stopped", "pool closed"]


async def test_readiness_turns_503_at_once_while_the_lame_duck_still_serves() -> None:
    """From the shutdown request on, /readyz is 503, /healthz 200, and the app still answers."""
    settings = HTTP.model_copy(update={"lame_duck_seconds": 2.0})
    async with served(gated_app(Gate()), http=settings) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            assert (await client.get("/readyz")).status_code == 200
            app.stop()
            ready = await client.get("/readyz")
            live = await client.get("/healthz")
            served_in_lame_duck = await client.get("/fast")
        assert ready.status_code == 503
        assert live.status_code == 200
        assert served_in_lame_duck.status_code == 200
        # Each lame-duck response asks the client to drop its keep-alive connection.
        assert served_in_lame_duck.headers["connection"] == "close"
        assert await app.exit_code() == ExitCode.OK


async def test_readiness_held_back_by_a_service_answers_503_with_its_reason() -> None:
    """A service's readiness hold (a consumer whose store is down, beside the API) makes the
    app's own /readyz 503 with the reason the health server gives; lifted, 200 again."""
    async with served(gated_app(Gate())) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            app.lifecycle.set_unready("sqs-consumer", "idempotency store unavailable")
            held = await client.get("/readyz")
            live = await client.get("/healthz")
            app.lifecycle.set_unready("sqs-consumer", None)
            lifted = await client.get("/readyz")
        assert (held.status_code, held.text) == (
            503,
            "sqs-consumer: idempotency store unavailable",
        )
        assert live.status_code == 200
        assert (lifted.status_code, lifted.text) == (200, "ok")


async def test_lame_duck_ends_with_the_listener_closed() -> None:
    """After the lame duck, new connections are refused while the process is still draining."""
    gate = Gate()
    settings = HTTP.model_copy(update={"lame_duck_seconds": 0.3})
    async with served(gated_app(gate), http=settings) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            slow = asyncio.create_task(client.get("/slow"))
            await gate.started.wait()
            app.stop()
            # Poll until connections are refused; the in-flight request keeps the process
            # draining. A connection caught in the backlog as the listener closes is reset
            # (ReadError): not served either, so keep polling.
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.get("/fast", headers={"connection": "close"})
                    except httpx.ConnectError:
                        break
                    except (httpx.ReadError, httpx.RemoteProtocolError):
                        continue
            assert not slow.done()
            gate.release.set()
            response = await slow
        assert response.status_code == 200
        assert response.text == "slow done"
        assert await app.exit_code() == ExitCode.OK


async def test_request_in_flight_at_shutdown_finishes_and_the_exit_is_clean() -> None:
    """A request running when shutdown starts completes with its real response; exit 0."""
    gate = Gate()
    async with served(gated_app(gate)) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            slow = asyncio.create_task(client.get("/slow"))
            await gate.started.wait()
            app.stop()
            gate.release.set()
            response = await slow
        assert response.status_code == 200
        assert response.text == "slow done"
        assert await app.exit_code() == ExitCode.OK


async def test_request_past_the_drain_deadline_is_cut_with_503_and_the_exit_is_75(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request still running at the deadline is cancelled, answered 503, and the run exits 75."""
    gate = Gate()
    runtime = RUNTIME.model_copy(update={"drain_seconds": 1.0})
    settings = HTTP.model_copy(update={"request_drain_seconds": 0.5})
    with caplog.at_level(logging.INFO):
        async with served(gated_app(gate), http=settings, runtime=runtime) as app:
            async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
                slow = asyncio.create_task(client.get("/slow"))
                await gate.started.wait()
                app.stop()
                response = await slow
            code = await app.exit_code()
    assert gate.cancelled.is_set()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert code == ExitCode.DRAIN_TIMEOUT
    cut = [r for r in caplog.records if r.getMessage() == "request cut at the drain deadline"]
    assert [getattr(r, "path", None) for r in cut] == ["/slow"]


async def run_to_exit(app: ASGIApp, http: HttpSettings = HTTP) -> ExitCode:
    """Run a supervisor hosting ``app`` until it exits on its own."""
    supervisor = Supervisor(settings=RUNTIME, handle_signals=False)

    @supervisor.setup
    async def setup(rt: Runtime) -> None:
        await serve_asgi(rt, app, settings=http)

    return await asyncio.wait_for(supervisor.serve(), 20)


async def test_settings_that_do_not_fit_the_drain_budget_exit_78(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lame duck plus request drain longer than the drain budget is refused at start."""
    settings = HTTP.model_copy(update={"lame_duck_seconds": 5, "request_drain_seconds": 5})
    assert await run_to_exit(gated_app(Gate()), settings) == ExitCode.CONFIGURATION
    assert "FARGATE_RUNTIME_HTTP_LAME_DUCK_SECONDS 5" in caplog.text


async def test_lifespan_startup_failure_fails_the_start() -> None:
    """An app whose startup raises never serves: the run exits 1."""

    def connect_to_database() -> None:
        raise RuntimeError("database unreachable")

    @contextlib.asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        connect_to_database()
        yield

    assert await run_to_exit(Starlette(lifespan=broken)) == ExitCode.CRASHED


async def test_a_hanging_lifespan_shutdown_is_cut_at_its_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An app whose shutdown never returns is cut after lifespan_shutdown_seconds; exit is 0."""
    stuck = asyncio.Event()

    @contextlib.asynccontextmanager
    async def hangs_on_exit(app: Starlette) -> AsyncIterator[None]:
        yield
        stuck.set()
        await asyncio.Event().wait()

    settings = HTTP.model_copy(update={"lifespan_shutdown_seconds": 0.3})
    async with served(Starlette(lifespan=hangs_on_exit), http=settings) as app:
        app.stop()
        began = asyncio.get_running_loop().time()
        code = await app.exit_code()
        took = asyncio.get_running_loop().time() - began
    assert code == ExitCode.OK
    assert stuck.is_set()
    assert took < 2.0
    timed_out = [r for r in caplog.records if r.getMessage() == "resource close timed out"]
    assert [getattr(r, "resource", None) for r in timed_out] == ["http-lifespan"]


async def test_app_without_lifespan_support_is_served() -> None:
    """A bare ASGI callable that rejects the lifespan scope still serves requests."""

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("lifespan not supported")
        await PlainTextResponse("bare")(scope, receive, send)

    async with served(bare) as app, httpx.AsyncClient(base_url=app.url) as client:
        response = await client.get("/anything")
    assert response.text == "bare"


def test_keep_alive_outlives_the_load_balancer_by_default() -> None:
    """The default keep-alive is above the ALB's 60 s idle timeout, and a lower one is refused."""
    assert HttpSettings().keep_alive_seconds > 60
    with pytest.raises(ConfigurationError, match="KEEP_ALIVE_SECONDS=60 must be above"):
        HttpSettings(keep_alive_seconds=60)
    assert HttpSettings(keep_alive_seconds=5, load_balancer_idle_timeout_seconds=0)


async def test_keep_alive_responses_are_not_held_back_by_delayed_acks() -> None:
    """Requests on one keep-alive connection answer far below the 40 ms Nagle/delayed-ACK stall."""
    async with served(gated_app(Gate())) as app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.server.port)
        loop = asyncio.get_running_loop()
        latencies = []
        for _ in range(15):
            began = loop.time()
            writer.write(b"GET /fast HTTP/1.1\r\nhost: test\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(loop.time() - began)
        writer.close()
        await writer.wait_closed()
    # Without TCP_NODELAY every response after the first few waits ~40 ms (Linux's minimum
    # delayed ACK) because uvicorn writes the headers and the body separately.
    assert sorted(latencies)[len(latencies) // 2] < 0.02, latencies
