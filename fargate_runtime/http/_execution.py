"""One request under a freshly claimed Idempotency-Key: run it, keep its response, or let go.

The response streams through to the client while a copy is kept; the claim is settled just
before the last body message goes out, so a client that has the whole response always gets it
replayed (never a 409 for a request that has finished)::

    app sends ─▶ start ─▶ body ... ─▶ last body: settle ─▶ send it
                                      2xx/4xx: complete (the response, for retention_seconds;
                                               too large: its status and headers only)
                                      5xx: release
    app raises, returns early, is cut ─▶ release (bounded; finishes even if we are cancelled)
    runs past a third of the lease ─▶ renew the lease every third, until settled
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .._work import current_work
from ..errors import ResultTooLargeError, StoreUnavailableError
from ..idempotency import Completion
from ._replay import StoredResponse

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ..idempotency import Held, IdempotencyStore
    from .settings import HttpIdempotencySettings

__all__ = ["Execution"]

logger = logging.getLogger("fargate_runtime.http.idempotency")

# Releases that outlive a cancelled request, kept referenced until they finish.
_background: set[asyncio.Future[list[bool]]] = set()


class Execution:
    """One acquired key: run the app, capture its response, complete or release the claim."""

    def __init__(
        self,
        app: ASGIApp,
        store: IdempotencyStore,
        settings: HttpIdempotencySettings,
        held: Held,
    ) -> None:
        self._app = app
        self._store = store
        self._settings = settings
        self._held = held
        self._settled = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._renewal: asyncio.Task[None] | None = None
        self._renewal_timer: asyncio.TimerHandle | None = None

    async def run(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        """Run the app on the already-read ``body``; settle the claim whatever happens."""
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                self._status = int(message["status"])
                self._headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            elif kind == "http.response.body" and not self._settled:
                chunk = bytes(message.get("body", b""))
                self._size += len(chunk)
                if self._size <= self._settings.max_response_bytes:
                    self._chunks.append(chunk)
                if not message.get("more_body", False):
                    # Settled before the last byte goes out: once the client has the response,
                    # a retry replays it (never a 409 for a request that has finished).
                    self._settled = True
                    await self._settle(self._kept())
            await send(message)

        self._start_renewal()
        try:
            await self._app(scope, replay_body, capture)
        except BaseException as exc:
            if not self._settled:
                self._settled = True
                if _still_running(exc):
                    # Cut while its work goes on in a thread: releasing now would let a retry
                    # run it a second time, at the same time. The lease ends it instead.
                    logger.error(
                        "request cut while its work runs in a thread; key left to its lease",
                        extra={
                            "key": self._held.key,
                            "lease_seconds": self._settings.lease_seconds,
                        },
                    )
                else:
                    await self._release()
            raise
        finally:
            self._stop_renewal()
        if not self._settled:  # the app returned without finishing its response
            self._settled = True
            await self._release()

    def _kept(self) -> StoredResponse | None:
        """The response to store, or None to release the key (5xx: the request failed)."""
        if self._status >= 500:
            return None
        if self._size > self._settings.max_response_bytes:
            logger.error(
                "idempotent response too large to keep; its status and headers are kept, the "
                "body is not",
                extra={"key": self._held.key, "bytes": self._size},
            )
            return StoredResponse.omitted(self._status, self._headers)
        return StoredResponse(self._status, self._headers, b"".join(self._chunks))

    async def _settle(self, response: StoredResponse | None) -> None:
        """Complete the claim with ``response``, or release it when there is none to keep."""
        held, settings = self._held, self._settings
        if response is None:
            await self._release()
            return
        try:
            [kept] = await self._store.complete_many(
                [Completion(held.key, held.token, response.encode())],
                retention_seconds=settings.retention_seconds,
            )
        except ResultTooLargeError:
            if response.body_omitted:  # the store keeps less than a status and its headers
                logger.exception("idempotent response not storable; key released")
                await self._release()
                return
            logger.exception(
                "idempotent response too large for the store; its status and headers are kept",
                extra={"key": held.key},
            )
            await self._settle(StoredResponse.omitted(response.status, response.headers))
            return
        except StoreUnavailableError:
            # The response goes out anyway; the claim expires with its lease and a retry after
            # that runs again. Passing the key downstream is what covers this window.
            logger.exception("idempotent response not stored", extra={"key": held.key})
            return
        if not kept:
            logger.warning(
                "lease lost before completion; response not kept",
                extra={"key": held.key, "token": held.token},
            )

    async def _release(self) -> None:
        """Release the claim, bounded, and finishing even if our task is cancelled meanwhile."""
        held = self._held
        release = asyncio.ensure_future(self._store.release_many([held]))
        # Referenced until done: if we are cancelled while waiting, it finishes in the background.
        _background.add(release)
        release.add_done_callback(_background.discard)
        done, _ = await asyncio.wait({release}, timeout=self._settings.release_timeout_seconds)
        if not done:
            logger.error("idempotency release timed out", extra={"key": held.key})
        elif not release.cancelled() and release.exception() is not None:
            logger.error(
                "idempotency release failed", extra={"key": held.key}, exc_info=release.exception()
            )

    def _start_renewal(self) -> None:
        # A timer, not a task, for the common case: most requests end long before a third of
        # the lease, and a timer costs far less than a task.
        every = self._settings.lease_seconds / 3
        loop = asyncio.get_running_loop()

        def begin() -> None:
            self._renewal = loop.create_task(self._renew(every))

        self._renewal_timer = loop.call_later(every, begin)

    async def _renew(self, every: float) -> None:
        while True:
            try:
                [ours] = await self._store.renew_many(
                    [self._held], lease_seconds=self._settings.lease_seconds
                )
            except StoreUnavailableError:
                logger.warning("idempotency lease renewal failed", extra={"key": self._held.key})
            else:
                if not ours:
                    logger.warning("idempotency lease lost", extra={"key": self._held.key})
                    return
            await asyncio.sleep(every)

    def _stop_renewal(self) -> None:
        if self._renewal_timer is not None:
            self._renewal_timer.cancel()
        if self._renewal is not None:
            self._renewal.cancel()


def _still_running(exc: BaseException) -> bool:
    """The request was cancelled, but an executor job it started (to_thread) still runs."""
    work = current_work()
    return isinstance(exc, asyncio.CancelledError) and work is not None and work.threads_running
