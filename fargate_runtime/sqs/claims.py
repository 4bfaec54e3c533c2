"""Where a message's idempotency key and payload fingerprint come from.

Key functions read the key from the message (``json_field``, ``message_attribute``,
``deduplication_id``) and raise ``MalformedMessageError`` when they cannot; ``MessageKeys``
turns it into the stored key, the fingerprint and the claim request of one delivery (its own
owner: see ``idempotency.delivery_owner``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import ConfigurationError, MalformedMessageError
from ..idempotency import (
    MAX_KEY_LENGTH,
    ClaimRequest,
    Idempotency,
    PostgresStore,
    delivery_owner,
    fingerprint,
)

if TYPE_CHECKING:
    from ..idempotency import Held, TransactionalClaim
    from .message import Message

__all__ = [
    "FingerprintFunction",
    "KeyFunction",
    "MessageKeys",
    "body_fingerprint",
    "check_key_for",
    "deduplication_id",
    "json_field",
    "message_attribute",
]

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


class _DeduplicationId:
    """``deduplication_id()``'s key function; ``fifo_only`` lets the consumer refuse it on a
    standard queue at start (its messages have no deduplication id: all would be malformed)."""

    fifo_only = True

    def __call__(self, message: Message) -> str:
        if not message.deduplication_id:
            raise MalformedMessageError(f"message {message.message_id} has no deduplication id")
        return message.deduplication_id


def deduplication_id() -> KeyFunction:
    """Key from ``MessageDeduplicationId`` (FIFO queues only: refused on a standard queue)."""
    return _DeduplicationId()


def check_key_for(key: KeyFunction | None, *, fifo: bool, queue_url: str) -> None:
    """ConfigurationError when ``key`` reads what this queue's messages do not carry."""
    if getattr(key, "fifo_only", False) and not fifo:
        raise ConfigurationError(
            f"key=deduplication_id() reads MessageDeduplicationId, which only FIFO queues have: "
            f"FARGATE_RUNTIME_SQS_QUEUE_URL {queue_url} is a standard queue (every message "
            "would be malformed); key its messages by a field (json_field) or an attribute "
            "(message_attribute)"
        )


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

    def request(self, message: Message) -> tuple[str, ClaimRequest]:
        """The key (as handlers see it) and the claim request of this delivery of ``message``;
        MalformedMessageError (or IdempotencyKeyError) when the key cannot be read."""
        key = self.key(message)
        request = ClaimRequest(
            self.stored_key(key),
            self.fingerprint(message),
            owner=delivery_owner(self.idempotency.owner, message.message_id),
        )
        return key, request

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

    def counter_key(self, message_id: str) -> str:
        """Where this queue's per-message delivery counters live (``_handback``)."""
        return self.idempotency.key(f"{self.scope}:deliveries", message_id)
