"""Hosting an ASGI app on uvicorn as a supervisor service: readiness, lame duck, bounded drain.

What one HTTP task does from SIGTERM on (the budget is drawn in ``http/settings.py``)::

    SIGTERM ─▶ /readyz 503 at once; everything else still served, with "Connection: close"
    lame duck over ─▶ uvicorn stops: listeners closed, idle keep-alive connections closed,
                      requests in flight finish and their connections close
    all done ─▶ service returns: exit 0
    drain deadline ─▶ the supervisor cancels the service: requests still running are cut
                      (their handlers cancelled, the client gets 503 if nothing was sent yet),
                      exit 75
    closing ─▶ the app's lifespan shutdown, then the resources entered before it

uvicorn's own signal handling is disabled (the supervisor owns SIGTERM/SIGINT) and so is its
lifespan handling: the app's lifespan is a supervisor resource (see ``_lifespan.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import time
from typing import TYPE_CHECKING, Any

import uvicorn

from .._work import Work, running
from ..logging import log_context_of
from ..settings import load_settings
from ._lifespan import AppLifespan
from .settings import HttpSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Iterator

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ..lifecycle import Lifecycle
    from ..supervisor import Runtime

__all__ = ["HttpServer", "serve_asgi"]

logger = logging.getLogger("fargate_runtime.http")

_CLOSE = (b"connection", b"close")
_CUT_STATUS = 503
_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
_CUT_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "the server shut down before the request finished; retry it",
    }
).encode()


async def serve_asgi(
    rt: Runtime, app: ASGIApp, *, settings: HttpSettings | None = None, name: str = "http"
) -> HttpServer:
    """Host ``app`` under the supervisor: call it from a setup function.

    Binds the listener, runs the app's lifespan startup (both resources of ``rt``, so they close
    in reverse order after the service stops) and adds the serving service. Settings whose lame
    duck and request drain do not fit the drain budget raise ConfigurationError (exit 78).
    """
    settings = settings if settings is not None else load_settings(HttpSettings)
    settings.check_budget(rt.lifecycle.budget)
    server = HttpServer(app, settings=settings, lifecycle=rt.lifecycle)
    await rt.enter(server.listener(), name=f"{name}-listener")
    lifespan = await rt.enter(
        AppLifespan(app),
        name=f"{name}-lifespan",
        close_timeout_seconds=settings.lifespan_shutdown_seconds,
    )
    server.app_state = lifespan.state
    rt.add_service(server.run, name=name)
    return server


def _drop_color(record: logging.LogRecord) -> bool:
    # uvicorn adds an ANSI-coloured copy of some messages as an ``extra``; in JSON lines it is
    # noise (and escape codes in CloudWatch).
    record.__dict__.pop("color_message", None)
    return True


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the supervisor installs its own and owns the exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """One ASGI app served by uvicorn, stopped by the supervisor's lifecycle.

    ``serve_asgi`` wires it into a Runtime; use it directly only to embed it differently (enter
    ``listener()``, then run ``run(lifecycle)`` as a service).
    """

    def __init__(self, app: ASGIApp, *, settings: HttpSettings, lifecycle: Lifecycle) -> None:
        self._settings = settings
        self._lifecycle = lifecycle
        self._front = _Front(app, settings=settings, lifecycle=lifecycle)
        self._socket: socket.socket | None = None

    @property
    def app_state(self) -> dict[str, Any]:
        """What the app's lifespan stored; copied into each request's ``scope["state"]``."""
        return self._front.app_state

    @app_state.setter
    def app_state(self, state: dict[str, Any]) -> None:
        self._front.app_state = state

    @property
    def port(self) -> int:
        """The bound port (the one chosen when the settings say 0)."""
        if self._socket is None:
            raise RuntimeError("the listener is not bound; enter listener() first")
        return int(self._socket.getsockname()[1])

    @property
    def in_flight(self) -> int:
        """Requests being handled right now."""
        return self._front.in_flight

    @contextlib.asynccontextmanager
    async def listener(self) -> AsyncIterator[HttpServer]:
        """Bind the listening socket (failing setup at once if the port is taken)."""
        settings = self._settings
        self._socket = _bind(settings.host, settings.port, backlog=settings.backlog)
        logger.info("http listener bound", extra={"host": settings.host, "port": self.port})
        try:
            yield self
        finally:
            self._socket.close()

    def _config(self) -> uvicorn.Config:
        settings = self._settings
        logging.getLogger("uvicorn.error").addFilter(_drop_color)  # once: same filter object
        return uvicorn.Config(
            self._front,
            interface="asgi3",
            lifespan="off",  # run by AppLifespan, in the supervisor's resource order
            log_config=None,  # keep the runtime's JSON logging
            access_log=settings.access_log,
            timeout_keep_alive=settings.keep_alive_seconds,
            backlog=settings.backlog,
        )

    async def run(self, lifecycle: Lifecycle) -> None:
        """The service: serve until shutdown, lame duck, drain; cut what runs at the deadline."""
        if self._socket is None:
            raise RuntimeError("the listener is not bound; enter listener() first")
        server = _EmbeddedUvicorn(self._config())
        serving = asyncio.create_task(server.serve(sockets=[self._socket]), name="uvicorn")
        try:
            await _first_of(lifecycle.wait_shutdown_requested(), serving)
            if serving.done():
                serving.result()
                raise RuntimeError("uvicorn stopped serving on its own")
            await self._lame_duck(lifecycle, serving)
            logger.info(
                "http listeners closing; draining requests",
                extra={
                    "in_flight": self.in_flight,
                    "drain_seconds_left": round(lifecycle.drain_seconds_left(), 3),
                },
            )
            # A backstop only: the supervisor cancels this service at the drain deadline and
            # _cut does the cutting, so uvicorn's own timeout is set to fire after that.
            server.config.timeout_graceful_shutdown = math.ceil(
                lifecycle.drain_seconds_left() + lifecycle.budget.release_seconds
            )
            server.should_exit = True
            await asyncio.shield(serving)
            logger.info(
                "http drained", extra={"requests_served": server.server_state.total_requests}
            )
        except asyncio.CancelledError:
            await self._cut(server, serving, lifecycle)
            raise
        finally:
            if not serving.done():
                serving.cancel()

    async def _lame_duck(self, lifecycle: Lifecycle, serving: asyncio.Task[None]) -> None:
        seconds = min(self._settings.lame_duck_seconds, lifecycle.drain_seconds_left())
        logger.info(
            "http lame duck: readiness 503, still serving",
            extra={"lame_duck_seconds": round(seconds, 3), "in_flight": self.in_flight},
        )
        if seconds > 0:
            await _first_of(asyncio.sleep(seconds), serving)

    async def _cut(
        self, server: _EmbeddedUvicorn, serving: asyncio.Task[None], lifecycle: Lifecycle
    ) -> None:
        """Drain deadline: cancel the request handlers still running and let uvicorn finish."""
        tasks = list(server.server_state.tasks)
        logger.warning("http drain deadline hit: cutting requests", extra={"in_flight": len(tasks)})
        self._front.cutting = True
        for task in tasks:
            lifecycle.cancel_task(task)  # a request inside a cleanup scope finishes it first
        server.should_exit = server.force_exit = True
        # Bounded by the release share; a further cancellation only abandons the wait.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(
                {serving, *tasks}, timeout=max(0.05, lifecycle.release_seconds_left())
            )


def _bind(host: str, port: int, *, backlog: int) -> socket.socket:
    """A listening TCP socket, made so that asyncio sets TCP_NODELAY on accepted connections.

    asyncio only sets TCP_NODELAY on sockets whose ``proto`` is IPPROTO_TCP, and
    ``socket.create_server`` leaves it 0: every keep-alive response written in two parts
    (headers, body) then waits ~40 ms for the client's delayed ACK (Nagle's algorithm).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


async def _first_of(awaitable: Awaitable[Any], task: asyncio.Task[Any]) -> None:
    """Wait until ``awaitable`` finishes or ``task`` ends, whichever comes first."""
    waiter = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


class _Front:
    """The outermost ASGI layer: health paths, lifespan state, connection close, the cut."""

    def __init__(self, app: ASGIApp, *, settings: HttpSettings, lifecycle: Lifecycle) -> None:
        self._app = app
        self._lifecycle = lifecycle
        self._liveness = settings.liveness_path or None
        self._readiness = settings.readiness_path or None
        self.app_state: dict[str, Any] = {}
        self.in_flight = 0
        self.cutting = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        scope["state"] = dict(self.app_state)
        if scope["type"] == "http":
            path = scope["path"]
            if path == self._readiness:
                await self._probe(send, failure=self._lifecycle.not_ready_reason)
                return
            if path == self._liveness:
                alive = self._lifecycle.alive
                await self._probe(send, failure=None if alive else self._lifecycle.phase.value)
                return
        await self._serve(scope, receive, send)

    async def _probe(self, send: Send, *, failure: str | None) -> None:
        """200 ``ok``, or 503 with why not (as the health server answers)."""
        ok = failure is None
        body = b"ok" if failure is None else failure.encode()
        headers = [
            _PLAIN,
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if self._lifecycle.shutdown_requested:
            headers.append(_CLOSE)
        await send(
            {"type": "http.response.start", "status": 200 if ok else 503, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        lifecycle = self._lifecycle
        started = False

        async def send_closing(message: Message) -> None:
            # From SIGTERM on, each response asks the client to drop the connection, so no
            # keep-alive connection is left idle for the listener close to reset under it.
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if lifecycle.shutdown_requested:
                    headers = list(message.get("headers", ()))
                    if not any(name.lower() == b"connection" for name, _ in headers):
                        message["headers"] = [*headers, _CLOSE]
            await send(message)

        self.in_flight += 1
        began = time.monotonic()
        try:
            # The request's executor jobs (to_thread) are recorded on its Work: cut at the
            # deadline while one still runs, its Idempotency-Key is not released under it.
            with running(Work()):
                await self._app(scope, receive, send_closing)
        except asyncio.CancelledError as exc:
            if not self.cutting:
                raise
            answered = not started and scope["type"] == "http"
            logger.warning(
                "request cut at the drain deadline",
                extra={
                    # The request's ids and trace, from where the cancellation left it.
                    **log_context_of(exc),
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": _CUT_STATUS if answered else None,
                    "duration_ms": round((time.monotonic() - began) * 1000, 1),
                },
            )
            if answered:
                await _send_cut(send)
            # Not re-raised: we cancelled uvicorn's per-request task ourselves, and raising
            # would only make uvicorn log a traceback and answer 500 instead of 503.
        finally:
            self.in_flight -= 1


async def _send_cut(send: Send) -> None:
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(_CUT_BODY)).encode()),
        (b"retry-after", b"1"),
        _CLOSE,
    ]
    await send({"type": "http.response.start", "status": _CUT_STATUS, "headers": headers})
    await send({"type": "http.response.body", "body": _CUT_BODY})
