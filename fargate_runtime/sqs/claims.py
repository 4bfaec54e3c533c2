"""Idempotency for the consumer: where a message's key comes from, and batched completions.

One ``claim_many`` round trip claims a whole receive batch and one ``complete_many`` completes
up to 10 handled messages, so a busy queue costs about 0.2 store round trips per message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import MalformedMessageError, StoreUnavailableError
from ..idempotency import MAX_KEY_LENGTH, Completion, Idempotency, PostgresStore, fingerprint
from .settings import MAX_BATCH

if TYPE_CHECKING:
    from ..idempotency import Held, IdempotencyStore, TransactionalClaim
    from .message import Message

__all__ = [
    "Completer",
    "FingerprintFunction",
    "KeyFunction",
    "MessageKeys",
    "body_fingerprint",
    "deduplication_id",
    "json_field",
    "message_attribute",
]

logger = logging.getLogger("fargate_runtime.sqs.claims")

# Reads a message's idempotency key; raises MalformedMessageError when it cannot.
KeyFunction: TypeAlias = Callable[["Message"], str]
# What identifies the payload: the same key with another fingerprint is a mismatch.
FingerprintFunction: TypeAlias = Callable[["Message"], str]


def json_field(name: str) -> KeyFunction:
    """Key from a field of the JSON body (``"event_id"``, or dotted: ``"data.id"``)."""
    path = name.split(".")

    def key(message: Message) -> str:
        value: Any = message.json()
        for part in path:
            if not isinstance(value, dict) or part not in value:
                raise MalformedMessageError(
                    f"message {message.message_id} has no {name!r} field for its idempotency key"
                )
            value = value[part]
        if value is None or isinstance(value, dict | list) or str(value) == "":
            raise MalformedMessageError(
                f"message {message.message_id} field {name!r} is not a usable key: {value!r}"
            )
        return str(value)

    return key


def message_attribute(name: str) -> KeyFunction:
    """Key from a string message attribute."""

    def key(message: Message) -> str:
        value = message.attributes.get(name)
        if not isinstance(value, str) or not value:
            raise MalformedMessageError(
                f"message {message.message_id} has no string attribute {name!r} for its key"
            )
        return value

    return key


def deduplication_id() -> KeyFunction:
    """Key from ``MessageDeduplicationId`` (FIFO queues)."""

    def key(message: Message) -> str:
        if not message.deduplication_id:
            raise MalformedMessageError(f"message {message.message_id} has no deduplication id")
        return message.deduplication_id

    return key


def body_fingerprint(message: Message) -> str:
    """The body's SHA-256: the same key with a different body is a payload mismatch."""
    return fingerprint(message.body.encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageKeys:
    """How the consumer turns a message into a stored idempotency key and a fingerprint."""

    idempotency: Idempotency
    key: KeyFunction
    scope: str
    fingerprint: FingerprintFunction = body_fingerprint

    def stored_key(self, key: str) -> str:
        """``prefix:scope:key``; keys too long or unprintable are stored as their hash."""
        if len(key) > MAX_KEY_LENGTH or not key.isprintable():
            key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        return self.idempotency.key(self.scope, key)

    def transactional(
        self, held: Held, on_completed: Callable[[], None]
    ) -> TransactionalClaim | None:
        """The handler's transactions on ``held`` (``context.transaction()``); PostgreSQL only.

        ``on_completed`` runs when one of them commits the completion record.
        """
        store = self.idempotency.store
        if not isinstance(store, PostgresStore):
            return None
        return store.transactional(
            held, retention_seconds=self.idempotency.retention_seconds, on_completed=on_completed
        )


class Completer:
    """Completes claims in batches of up to 10: one ``complete_many`` round trip per batch.

    A completion goes out with whatever else finished in the same event-loop turn (handlers of
    one receive batch that never awaited finish together); while other handlers are still
    running it waits up to ``interval_seconds`` for them to join; at 10 it goes at once.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        retention_seconds: float,
        interval_seconds: float,
        others_running: Callable[[], bool],
    ) -> None:
        self._store = store
        self._retention = retention_seconds
        self._interval = interval_seconds
        self._others_running = others_running
        self._pending: list[tuple[Completion, asyncio.Future[bool]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._soon = False
        self._sending: set[asyncio.Task[None]] = set()
        self.round_trips = 0

    def complete(self, held: Held) -> asyncio.Future[bool]:
        """Queue the completion of ``held``; the future is False when the lease was lost."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((Completion(held.key, held.token, b""), future))
        if len(self._pending) >= MAX_BATCH:
            self._send_pending()
        elif not self._others_running():
            if not self._soon:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer, self._soon = loop.call_soon(self._send_pending), True
        elif self._timer is None:
            self._timer = loop.call_later(self._interval, self._send_pending)
        return future

    def _send_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._soon = None, False
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            task = asyncio.create_task(self._send(batch), name="idempotency-complete")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Completion, asyncio.Future[bool]]]) -> None:
        self.round_trips += 1
        try:
            results = await self._store.complete_many(
                [completion for completion, _ in batch], retention_seconds=self._retention
            )
        except StoreUnavailableError as exc:
            logger.warning("claims not completed: store unavailable", extra={"error": str(exc)})
            results = [False] * len(batch)
        except Exception:
            logger.exception("claims not completed")
            results = [False] * len(batch)
        for (_, future), ok in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(ok)

    async def flush(self) -> None:
        """Send what waits and wait for every completion on its way."""
        self._send_pending()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
