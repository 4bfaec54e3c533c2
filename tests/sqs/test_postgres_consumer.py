"""The consumer with the PostgreSQL store: handler writes commit with their key's completion."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fargate_runtime.errors import ConfigurationError
from fargate_runtime.idempotency import ClaimStatus, Idempotency, MemoryStore, PostgresStore

from .conftest import event
from .support import QueueCounts, counts, eventually, keyed, running, send

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from types_aiobotocore_sqs import SQSClient

    from fargate_runtime.sqs import Message, MessageContext
    from tests.idempotency.postgres import PostgresSchema

pytestmark = pytest.mark.integration


async def test_handler_writes_commit_with_the_completion_and_duplicates_are_absorbed(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    postgres_store: PostgresStore,
    postgres_schema: PostgresSchema,
) -> None:
    """Each event's row commits with its record (no separate completion call); a resent event
    finds the key completed and is deleted without running."""
    await postgres_schema.fetchval("CREATE TABLE charges (event_id text PRIMARY KEY)")
    queue = await make_queue()
    runs: list[str] = []

    async def handle(message: Message, context: MessageContext) -> None:
        event_id = message.json()["event_id"]
        runs.append(event_id)
        async with context.transaction() as tx:
            await tx.execute(f"INSERT INTO {postgres_schema.name}.charges VALUES ($1)", event_id)

    idem = Idempotency(postgres_store, prefix="pgq")
    consumer = keyed(handle, sqs, queue, idem)
    await send(sqs, queue, [event(f"e{i}") for i in range(12)])
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 12, what="12 deleted")
        await send(sqs, queue, [event("e3"), event("e7")])
        await eventually(lambda: consumer.stats.duplicates_completed == 2, what="2 duplicates")
        await eventually(lambda: consumer.stats.deleted == 14, what="14 deleted")
    assert sorted(runs) == sorted(f"e{i}" for i in range(12))
    assert consumer.stats.completion_round_trips == 0  # every completion rode its COMMIT
    assert await postgres_schema.fetchval("SELECT count(*) FROM charges") == 12
    assert await counts(sqs, queue) == QueueCounts(visible=0, not_visible=0)
    key = idem.key(f"sqs:{consumer.settings.queue_name}", "e5")
    replay = await postgres_store.claim(key, "x", owner="o", lease_seconds=30)
    assert replay.status is ClaimStatus.MISMATCH  # completed, and kept with its fingerprint


async def test_a_failing_handler_rolls_back_and_runs_again(
    sqs: SQSClient,
    make_queue: Callable[..., Awaitable[str]],
    postgres_store: PostgresStore,
    postgres_schema: PostgresSchema,
) -> None:
    """A handler that raises after writing leaves nothing; the retry writes once."""
    await postgres_schema.fetchval("CREATE TABLE charges (event_id text, attempt integer)")
    queue = await make_queue()
    attempts = 0

    async def handle(message: Message, context: MessageContext) -> None:
        nonlocal attempts
        attempts += 1
        async with context.transaction() as tx:
            await tx.execute(
                f"INSERT INTO {postgres_schema.name}.charges VALUES ($1, $2)",
                message.json()["event_id"],
                attempts,
            )
            if attempts == 1:
                raise RuntimeError("provider timed out")

    consumer = keyed(
        handle,
        sqs,
        queue,
        Idempotency(postgres_store, prefix="pgq"),
        backoff_base_seconds=0.1,
        backoff_cap_seconds=0.2,
    )
    await send(sqs, queue, [event("once")])
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, what="deleted after a retry")
    assert attempts == 2
    rows = await postgres_schema.fetchval("SELECT string_agg(attempt::text, ',') FROM charges")
    assert rows == "2"


async def test_a_transaction_without_the_postgres_store_is_a_clear_error(
    sqs: SQSClient, make_queue: Callable[..., Awaitable[str]]
) -> None:
    """context.transaction() on another store fails the message with a message naming the fix."""
    queue = await make_queue()
    errors: list[Exception] = []

    async def handle(message: Message, context: MessageContext) -> None:
        try:
            context.transaction()
        except ConfigurationError as exc:
            errors.append(exc)

    consumer = keyed(handle, sqs, queue, Idempotency(MemoryStore(), prefix="pgq"))
    await send(sqs, queue, [event("x")])
    async with running(consumer):
        await eventually(lambda: consumer.stats.deleted == 1, what="deleted")
    assert len(errors) == 1
    assert "FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres" in str(errors[0])
