"""The README's PostgreSQL example runs as written, against a real PostgreSQL."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from fargate_runtime.idempotency import ClaimStatus, Held, Idempotency, PostgresStore
from fargate_runtime.lifecycle import Lifecycle
from fargate_runtime.settings import RuntimeSettings
from fargate_runtime.sqs import Message, MessageContext
from tests.processes import REPO

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.idempotency.postgres import PostgresSchema

pytestmark = pytest.mark.integration


def readme_example() -> dict[str, Any]:
    """Execute the README's Python block that uses ``context.transaction()``; its names."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    (block,) = [block for block in blocks if "context.transaction()" in block]
    names: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), names)  # noqa: S102 - our own README
    return names


@pytest.fixture
async def store(postgres_schema: PostgresSchema) -> AsyncIterator[PostgresStore]:
    """A store whose connections find the README's unqualified ``charges`` in the test schema."""
    await postgres_schema.fetchval("CREATE TABLE charges (event_id text, amount_cents integer)")
    options = {"server_settings": {"search_path": postgres_schema.name}}
    store = PostgresStore(
        postgres_schema.url, schema=postgres_schema.name, cleanup=False, pool_options=options
    )
    async with store:
        yield store


async def test_the_readme_handler_and_guard_write_once(
    store: PostgresStore, postgres_schema: PostgresSchema
) -> None:
    """The handler's row commits with its key; the guard form writes once and replays."""
    example = readme_example()
    idem = Idempotency(store, prefix="readme", owner="w")
    key = idem.key("sqs:payments", "evt_1")
    claim = await store.claim(key, "fp", owner="w", lease_seconds=30)
    assert claim.token is not None
    body = '{"event_id": "evt_1", "amount_cents": 1250}'
    message = Message.from_response({"MessageId": "m1", "ReceiptHandle": "r1", "Body": body})
    context = MessageContext(
        Lifecycle(RuntimeSettings().budget()),
        message_id="m1",
        idempotency_key="evt_1",
        fencing_token=claim.token,
        recovery=store.transactional(Held(key, claim.token), retention_seconds=60),
    )
    await example["handle"](message, context)
    again = await store.claim(key, "fp", owner="other", lease_seconds=30)
    assert again.status is ClaimStatus.COMPLETED
    event = {"event_id": "evt_2", "amount_cents": 990}
    first = await example["charge"](idem, event)
    second = await example["charge"](idem, event)
    assert first == second == {"charge_id": "evt_2"}
    assert await postgres_schema.fetchval("SELECT count(*) FROM charges") == 2
