"""The SQS consumer: long polls that never prefetch, batched acks, heartbeat, idempotency, FIFO.

A worker in a few lines (``examples/sqs_worker`` is a complete one)::

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
        rt.add_service(consumer.run, name="sqs-consumer")
"""

from __future__ import annotations

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
from .message import Message
from .settings import SqsSettings

__all__ = [
    "AckOutcome",
    "Backoff",
    "BatchContext",
    "BatchHandler",
    "Consumer",
    "ConsumerStats",
    "FingerprintFunction",
    "Handler",
    "KeyFunction",
    "Message",
    "MessageContext",
    "Retry",
    "SqsSettings",
    "body_fingerprint",
    "deduplication_id",
    "json_field",
    "message_attribute",
    "open_sqs_client",
]
