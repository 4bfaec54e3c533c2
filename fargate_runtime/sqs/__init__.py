"""The SQS consumer: long polls that never prefetch, batched acks, heartbeat, idempotency, FIFO.

The common worker, settings from the environment (``examples/sqs_worker`` is a complete one)::

    from fargate_runtime.sqs import Message, MessageContext, json_field, sqs_worker

    async def handle(message: Message, context: MessageContext) -> None:
        event = message.json()
        await charge(event, idempotency_key=context.idempotency_key)

    app = sqs_worker(handle, key=json_field("event_id"))

The same, written out (for several queues, your own store, or a consumer beside an HTTP API)::

    from fargate_runtime import Runtime, Supervisor, load_settings
    from fargate_runtime.idempotency import Idempotency, load_idempotency_settings, open_store
    from fargate_runtime.sqs import (
        Consumer, Message, MessageContext, SqsSettings, json_field, open_sqs_client,
    )

    async def handle(message: Message, context: MessageContext) -> None:
        event = message.json()
        await charge(event, idempotency_key=context.idempotency_key)

    app = Supervisor()

    @app.setup
    async def setup(rt: Runtime) -> None:
        settings = load_settings(SqsSettings)
        client = await rt.enter(open_sqs_client(settings), name="sqs")
        store_settings = load_idempotency_settings()
        store = await rt.enter(open_store(store_settings), name="idempotency")
        consumer = Consumer(
            handle,
            client=client,
            settings=settings,
            idempotency=Idempotency.from_settings(store, store_settings),
            key=json_field("event_id"),
        )
        await consumer.prepare()  # the queue checked during setup: a bad one exits 78
        rt.add_service(consumer.run, name="sqs-consumer")

What holds when Redis, SQS or a handler misbehaves (store outages pause intake, completions are
retried, the DLQ only for a message's own failures) is in the README, "What the SQS consumer
guarantees".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .settings import SqsSettings

if TYPE_CHECKING:
    from ._queue import QueueFacts
    from .acks import AckOutcome
    from .backoff import Backoff, Retry
    from .claims import (
        FingerprintFunction,
        KeyFunction,
        body_fingerprint,
        deduplication_id,
        json_field,
        message_attribute,
    )
    from .client import open_sqs_client
    from .consumer import Consumer, ConsumerStats
    from .context import BatchContext, BatchHandler, Handler, MessageContext
    from .events import ConsumerEvent, ConsumerEventKind, EventHook, MessageOutcome
    from .message import Message
    from .worker import HandlerFactory, sqs_worker

__all__ = [
    "AckOutcome",
    "Backoff",
    "BatchContext",
    "BatchHandler",
    "Consumer",
    "ConsumerEvent",
    "ConsumerEventKind",
    "ConsumerStats",
    "EventHook",
    "FingerprintFunction",
    "Handler",
    "HandlerFactory",
    "KeyFunction",
    "Message",
    "MessageContext",
    "MessageOutcome",
    "QueueFacts",
    "Retry",
    "SqsSettings",
    "body_fingerprint",
    "deduplication_id",
    "json_field",
    "message_attribute",
    "open_sqs_client",
    "sqs_worker",
]

# Loaded on first use: the consumer imports aioboto3 (botocore, aiohttp), which a process that
# only reads its settings (the check of FARGATE_RUNTIME_* variables at start, an HTTP API's
# included) never needs.
__getattr__ = lazy_exports(
    __name__,
    {
        "QueueFacts": "._queue",
        "AckOutcome": ".acks",
        "Backoff": ".backoff",
        "Retry": ".backoff",
        "FingerprintFunction": ".claims",
        "KeyFunction": ".claims",
        "body_fingerprint": ".claims",
        "deduplication_id": ".claims",
        "json_field": ".claims",
        "message_attribute": ".claims",
        "open_sqs_client": ".client",
        "Consumer": ".consumer",
        "ConsumerStats": ".consumer",
        "BatchContext": ".context",
        "BatchHandler": ".context",
        "Handler": ".context",
        "MessageContext": ".context",
        "ConsumerEvent": ".events",
        "ConsumerEventKind": ".events",
        "EventHook": ".events",
        "MessageOutcome": ".events",
        "Message": ".message",
        "HandlerFactory": ".worker",
        "sqs_worker": ".worker",
    },
)
