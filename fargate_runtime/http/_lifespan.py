"""An ASGI app's lifespan protocol as an async context manager, so the supervisor can order it.

uvicorn runs the lifespan itself, around its own serving, with no bound on the shutdown. Here it
is a resource like any other: ``startup`` when setup enters it (after the resources the app
needs, such as a Redis pool), ``shutdown`` after the HTTP service has drained and before those
resources close, bounded by the supervisor's close timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..errors import StartupError

if TYPE_CHECKING:
    from types import TracebackType

    from starlette.types import ASGIApp, Message

__all__ = ["AppLifespan"]

logger = logging.getLogger("fargate_runtime.http")


class AppLifespan:
    """Drive ``app``'s lifespan: startup on enter, shutdown on exit.

    ``state`` is what the app's lifespan put in ``scope["state"]`` (Starlette: the mapping its
    lifespan yields); each request gets a shallow copy, as the ASGI spec says. An app that does
    not speak the lifespan protocol (it raises before receiving the startup event) is served
    without one, as uvicorn's ``lifespan="auto"`` does.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._received = False
        self.supported = True

    async def _receive(self) -> Message:
        self._received = True
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        await self._outbox.put(message)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        await self._app({**scope, "state": self.state}, self._receive, self._send)

    async def _reply(self, expected: str) -> Message | None:
        """The app's answer to ``expected``, or None when the app returned instead."""
        task = self._task
        if task is None:
            raise RuntimeError("the lifespan has not been entered")
        answer = asyncio.ensure_future(self._outbox.get())
        try:
            await asyncio.wait({answer, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not answer.done():
                answer.cancel()
        if answer.done() and not answer.cancelled():
            message = answer.result()
            if not str(message.get("type", "")).startswith(expected):
                raise StartupError(f"ASGI lifespan: expected {expected}.*, got {message}")
            return message
        return None

    async def __aenter__(self) -> AppLifespan:
        self._task = asyncio.create_task(self._main(), name="asgi-lifespan")
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._reply("lifespan.startup")
        if reply is None:
            error = self._task.exception()
            if not self._received:
                # The ASGI spec: an app that raises on the lifespan scope does not support it.
                self.supported = False
                # Loud enough to see when it is an app that failed to build, not one without
                # lifespan support: its requests will fail the same way.
                logger.warning(
                    "ASGI app raised on the lifespan scope; serving without a lifespan",
                    exc_info=error,
                )
                return self
            raise StartupError("ASGI lifespan ended during startup") from error
        if reply["type"] == "lifespan.startup.failed":
            # Starlette re-raises right after reporting the failure: let it, to chain the cause.
            error = await self._stop_task(grace_seconds=1.0)
            message = reply.get("message", "")
            raise StartupError(f"ASGI app startup failed: {message}") from error
        logger.info("ASGI app started")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.supported or self._task is None:
            return
        reply = None
        try:
            await self._inbox.put({"type": "lifespan.shutdown"})
            reply = await self._reply("lifespan.shutdown")
        finally:
            # Also when cut at the close timeout (the supervisor cancels us): never leave the
            # app's lifespan task pending on a closing loop.
            error = await self._stop_task(grace_seconds=0.1)
        if reply is not None and reply["type"] == "lifespan.shutdown.failed":
            logger.error("ASGI app shutdown failed", extra={"detail": reply.get("message")})
        elif error is not None:
            logger.error("ASGI lifespan raised during shutdown", exc_info=error)
        else:
            logger.info("ASGI app shut down")

    async def _stop_task(self, *, grace_seconds: float = 0.0) -> BaseException | None:
        """End the lifespan task (cancelling it after ``grace_seconds``); return its error."""
        task = self._task
        if task is None:
            return None
        if not task.done() and grace_seconds > 0:
            await asyncio.wait({task}, timeout=grace_seconds)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=0.1)
        if task.done() and not task.cancelled():
            return task.exception()  # retrieved, so asyncio does not log it as lost
        return None
