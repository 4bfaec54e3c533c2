"""``sqs_worker``: the common worker (one queue, Redis idempotency keys, a supervisor) in a call.

::

    from fargate_runtime.sqs import Message, MessageContext, json_field, sqs_worker

    async def handle(message: Message, context: MessageContext) -> None:
        ...  # pass context.idempotency_key downstream

    app = sqs_worker(handle, key=json_field("event_id"))  # fargate-runtime run app:app

At start, and only then, it does what a hand-written setup does (``Consumer``'s docstring shows
that long form, for workers that need more than one queue or their own store):

1. ``SqsSettings`` from ``FARGATE_RUNTIME_SQS_*``; the SQS client entered as resource ``sqs``.
2. With ``key``: ``IdempotencySettings`` from ``FARGATE_RUNTIME_IDEMPOTENCY_*`` / ``REDIS_URL``,
   the store entered as resource ``idempotency``, claims per key (on PostgreSQL,
   ``FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres``, ``context.transaction()`` commits the
   handler's writes with the record). Without ``key``: no claims.
3. ``build_handler(runtime)``, if given instead of ``handler``: it enters the handler's own
   resources (a database pool, an HTTP client) and returns the handler.
4. The queue read and checked (``Consumer.prepare``), the consumer added as service
   ``sqs-consumer``.

Resources close in reverse order after the consumer has drained and flushed. Bad settings, a
queue that does not exist or cannot be read, and ``deduplication_id()`` on a standard queue are
refused at start with exit code 78 and one line, before anything is received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from ..errors import ConfigurationError
from ..idempotency import Idempotency, load_idempotency_settings, open_store
from ..settings import load_settings
from ..supervisor import Runtime, Supervisor
from .claims import body_fingerprint
from .client import open_sqs_client
from .consumer import Consumer
from .settings import SqsSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..idempotency import IdempotencySettings, IdempotencyStore
    from ..settings import RuntimeSettings
    from .claims import FingerprintFunction, KeyFunction
    from .context import Handler
    from .events import EventHook

__all__ = ["HandlerFactory", "sqs_worker"]

HandlerFactory: TypeAlias = "Callable[[Runtime], Awaitable[Handler]]"


def sqs_worker(
    handler: Handler | None = None,
    *,
    build_handler: HandlerFactory | None = None,
    key: KeyFunction | None = None,
    key_scope: str | None = None,
    fingerprint: FingerprintFunction = body_fingerprint,
    on_event: EventHook | None = None,
    sqs_settings: SqsSettings | None = None,
    idempotency_settings: IdempotencySettings | None = None,
    settings: RuntimeSettings | None = None,
    handle_signals: bool = True,
) -> Supervisor:
    """A Supervisor that consumes ``FARGATE_RUNTIME_SQS_QUEUE_URL`` with ``handler``.

    Give ``handler`` (``async def handle(message, context)``) or ``build_handler``
    (``async def build(runtime) -> handler``), not both. ``key`` (e.g. ``json_field("event_id")``)
    turns on Redis idempotency keys: each key's effect runs at most once while its record
    lives. ``on_event`` receives the consumer's ``ConsumerEvent``\\ s (ready, received, released,
    settled). Settings not given are read from the environment when the worker starts;
    ``handle_signals=False`` is for running it inside a test's event loop
    (``fargate_runtime.testing.run_in_background``).
    """
    factory: HandlerFactory
    if handler is not None and build_handler is None:
        factory = _returning(handler)
    elif build_handler is not None and handler is None:
        factory = build_handler
    else:
        raise ConfigurationError("sqs_worker takes exactly one of handler or build_handler")
    if key is None and (key_scope is not None or idempotency_settings is not None):
        raise ConfigurationError(
            "key_scope and idempotency_settings need key=: where does the idempotency key come "
            "from (e.g. key=json_field('event_id'))?"
        )

    async def setup(runtime: Runtime) -> None:
        sqs = sqs_settings or load_settings(SqsSettings)
        client = await runtime.enter(open_sqs_client(sqs), name="sqs")
        idempotency: Idempotency | None = None
        if key is not None:
            store_settings = idempotency_settings or load_idempotency_settings()
            store: IdempotencyStore = await runtime.enter(
                open_store(store_settings), name="idempotency"
            )
            idempotency = Idempotency.from_settings(store, store_settings)
        consumer = Consumer(
            await factory(runtime),
            client=client,
            settings=sqs,
            idempotency=idempotency,
            key=key,
            key_scope=key_scope,
            fingerprint=fingerprint,
            on_event=on_event,
        )
        await consumer.prepare()  # a queue that cannot be used stops the start here (exit 78)
        runtime.add_service(consumer.run, name="sqs-consumer")

    return Supervisor(setup, settings=settings, handle_signals=handle_signals)


def _returning(handler: Handler) -> HandlerFactory:
    async def build(runtime: Runtime) -> Handler:
        return handler

    return build
