"""The transactional form on a real PostgreSQL: writes and the record commit together, or not."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from fargate_runtime.idempotency import (
    AlreadyInProgressError,
    ClaimResult,
    ClaimStatus,
    Held,
    Idempotency,
    LeaseLostError,
    PayloadMismatchError,
    PostgresStore,
    ResultTooLargeError,
    ResultUnavailableError,
    TransactionalClaim,
    TypedSerializer,
    scoped_key,
)
from tests.idempotency.conftest import SHORT_LEASE_SECONDS
from tests.idempotency.postgres import wait_until_forgotten

if TYPE_CHECKING:
    from tests.idempotency.postgres import PostgresSchema

pytestmark = pytest.mark.integration

LEASE = 30.0
RETENTION = 3600.0


@pytest.fixture
async def charges(postgres_schema: PostgresSchema) -> str:
    """A user table in the test's schema (the handler's own writes go there)."""
    table = f"{postgres_schema.name}.charges"
    connection = await asyncpg.connect(postgres_schema.url)
    try:
        await connection.execute(f"CREATE TABLE {table} (event_id text, amount integer)")
    finally:
        await connection.close()
    return table


async def charged(store: PostgresStore, table: str) -> list[str]:
    """Event ids in the user table, as another connection sees them (committed rows only)."""
    pool = await store.transaction_pool()
    rows = await pool.fetch(f"SELECT event_id FROM {table} ORDER BY event_id")
    return [row[0] for row in rows]


async def claim(store: PostgresStore, name: str, owner: str = "a", lease: float = LEASE) -> Held:
    """Claim ``name`` and fail the test unless it was acquired."""
    key = scoped_key("t", "charges", name)
    result = await store.claim(key, "fp", owner=owner, lease_seconds=lease)
    assert result.status is ClaimStatus.ACQUIRED, result
    assert result.token is not None
    return Held(key, result.token)


def transactions(store: PostgresStore, held: Held) -> TransactionalClaim:
    """The transactions of the claim ``held``, its record kept for the tests' retention."""
    return store.transactional(held, retention_seconds=RETENTION)


async def test_commit_lands_the_writes_and_the_completion_together(
    postgres_store: PostgresStore, charges: str
) -> None:
    """After COMMIT the write is visible and the key replays its result to everyone else."""
    held = await claim(postgres_store, "evt-1")
    recovery = transactions(postgres_store, held)
    async with recovery.transaction() as tx:
        await tx.execute(f"INSERT INTO {charges} VALUES ('evt-1', 100)")
        tx.set_result(b"receipt-1")
        assert await charged(postgres_store, charges) == []  # not before the commit
    assert recovery.completed
    assert await charged(postgres_store, charges) == ["evt-1"]
    replay = await postgres_store.claim(held.key, "fp", owner="b", lease_seconds=LEASE)
    assert (replay.status, replay.token, replay.result) == (
        ClaimStatus.COMPLETED,
        held.token,
        b"receipt-1",
    )


async def test_an_error_rolls_back_the_writes_and_keeps_the_claim(
    postgres_store: PostgresStore, charges: str
) -> None:
    """A handler that raises leaves no write behind and its claim still held (to release)."""
    held = await claim(postgres_store, "evt-2")
    recovery = transactions(postgres_store, held)

    async def failing_handler() -> None:
        async with recovery.transaction() as tx:
            await tx.execute(f"INSERT INTO {charges} VALUES ('evt-2', 100)")
            _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        await failing_handler()
    assert not recovery.completed
    assert await charged(postgres_store, charges) == []
    assert await postgres_store.release(held.key, held.token)
    assert (await claim(postgres_store, "evt-2", owner="b")).token > held.token


async def test_a_stale_owner_can_never_commit(postgres_store: PostgresStore, charges: str) -> None:
    """An owner whose lease ran out and was taken over gets LeaseLostError; its write vanishes."""
    stale = await claim(postgres_store, "evt-3", lease=SHORT_LEASE_SECONDS)
    await wait_until_forgotten(postgres_store, stale.key)
    fresh = await claim(postgres_store, "evt-3", owner="b")
    with pytest.raises(LeaseLostError):
        async with transactions(postgres_store, stale).transaction() as tx:
            await tx.execute(f"INSERT INTO {charges} VALUES ('evt-3', 1)")
    async with transactions(postgres_store, fresh).transaction() as tx:
        await tx.execute(f"INSERT INTO {charges} VALUES ('evt-3', 2)")
    pool = await postgres_store.transaction_pool()
    amounts = await pool.fetch(f"SELECT amount FROM {charges}")
    assert [row[0] for row in amounts] == [2]


async def test_a_lease_that_ran_out_refuses_the_commit_even_unclaimed(
    postgres_store: PostgresStore, charges: str
) -> None:
    """With the lease over, nobody else claiming is not enough: the commit is refused."""
    held = await claim(postgres_store, "evt-4", lease=SHORT_LEASE_SECONDS)
    await wait_until_forgotten(postgres_store, held.key)
    with pytest.raises(LeaseLostError):
        async with transactions(postgres_store, held).transaction() as tx:
            await tx.execute(f"INSERT INTO {charges} VALUES ('evt-4', 1)")
    assert await charged(postgres_store, charges) == []


async def test_two_workers_racing_on_one_key_commit_once(
    postgres_store: PostgresStore, charges: str
) -> None:
    """Twenty concurrent claim-and-commit attempts on one key: one write, one completion."""

    async def attempt(owner: str) -> bool:
        key = scoped_key("t", "charges", "contended")
        result = await postgres_store.claim(key, "fp", owner=owner, lease_seconds=LEASE)
        if result.status is not ClaimStatus.ACQUIRED or result.token is None:
            return False
        recovery = transactions(postgres_store, Held(key, result.token))
        async with recovery.transaction() as tx:
            await tx.execute(f"INSERT INTO {charges} VALUES ('contended', 1)")
        return True

    outcomes = await asyncio.gather(*(attempt(f"worker-{i}") for i in range(20)))
    assert outcomes.count(True) == 1
    assert await charged(postgres_store, charges) == ["contended"]


async def test_a_transaction_completes_at_most_once(postgres_store: PostgresStore) -> None:
    """A second transaction() on a completed claim is refused before it opens."""
    recovery = transactions(postgres_store, await claim(postgres_store, "once"))
    async with recovery.transaction():
        pass
    with pytest.raises(RuntimeError, match="already completed"):
        async with recovery.transaction():
            pass


async def test_an_oversized_result_rolls_back_and_keeps_the_claim(
    postgres_store: PostgresStore, charges: str
) -> None:
    """A result over the limit raises before the record is written; the writes roll back."""
    held = await claim(postgres_store, "big")

    async def handler() -> None:
        async with transactions(postgres_store, held).transaction() as tx:
            await tx.execute(f"INSERT INTO {charges} VALUES ('big', 1)")
            tx.set_result(b"x" * (256 * 1024 + 1))

    with pytest.raises(ResultTooLargeError):
        await handler()
    assert await charged(postgres_store, charges) == []
    assert await postgres_store.release(held.key, held.token)


async def test_cancellation_mid_transaction_leaves_nothing_written(
    postgres_store: PostgresStore, charges: str
) -> None:
    """A handler cancelled inside its transaction (the drain deadline) rolls everything back."""
    held = await claim(postgres_store, "cancelled")
    inside = asyncio.Event()

    async def handler() -> None:
        async with transactions(postgres_store, held).transaction() as tx:
            await tx.execute(f"INSERT INTO {charges} VALUES ('cancelled', 1)")
            inside.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(handler())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await charged(postgres_store, charges) == []
    assert await postgres_store.release(held.key, held.token)


async def test_recovery_points_commit_with_their_step_and_survive_a_release(
    postgres_store: PostgresStore, charges: str
) -> None:
    """A step commits with its recovery point; the next claim of the key resumes after it."""
    first = await claim(postgres_store, "ride")
    recovery = transactions(postgres_store, first)
    assert await recovery.steps() == ()
    async with recovery.step("ride_created") as tx:
        await tx.execute(f"INSERT INTO {charges} VALUES ('ride', 1)")
    assert await recovery.recovery_point() == "ride_created"
    # The worker fails between its steps: the claim is given back, the step stays.
    assert await postgres_store.release(first.key, first.token)
    second = await claim(postgres_store, "ride", owner="b")
    assert second.token > first.token
    resumed = transactions(postgres_store, second)
    assert await resumed.steps() == ("ride_created",)
    with pytest.raises(RuntimeError, match="committed before"):
        async with resumed.step("ride_created") as tx:
            await tx.execute(f"INSERT INTO {charges} VALUES ('ride', 2)")
    async with resumed.transaction() as tx:
        await tx.execute(f"INSERT INTO {charges} VALUES ('ride-done', 3)")
    assert await charged(postgres_store, charges) == ["ride", "ride-done"]


async def test_recovery_points_survive_a_lease_that_ran_out(
    postgres_store: PostgresStore,
) -> None:
    """A crashed worker (its lease simply ends) leaves its steps to the next claim; the stale
    owner can no longer record any."""
    crashed = await claim(postgres_store, "trip", lease=SHORT_LEASE_SECONDS)
    async with transactions(postgres_store, crashed).step("one"):
        pass
    await wait_until_forgotten(postgres_store, crashed.key)
    # The record outlives its lease (retention counts from the step): not forgotten, reclaimable.
    taken = await claim(postgres_store, "trip", owner="b")
    assert await transactions(postgres_store, taken).steps() == ("one",)
    stale = transactions(postgres_store, crashed)
    with pytest.raises(LeaseLostError):
        await stale.steps()
    with pytest.raises(LeaseLostError):
        async with stale.step("two"):
            pass


async def test_the_guard_form_runs_once_and_replays(
    postgres_store: PostgresStore, charges: str
) -> None:
    """idem.transaction() claims, commits with the result, and replays it to a duplicate."""
    idem = Idempotency(postgres_store, prefix="t", owner="worker-1")
    runs = 0
    for _ in range(2):
        async with idem.transaction("charges", "evt-9", payload={"amount": 5}) as tx:
            if tx.replayed:
                assert tx.result == {"charge": "ch_1"}
                continue
            runs += 1
            await tx.execute(f"INSERT INTO {charges} VALUES ('evt-9', 5)")
            tx.set_result({"charge": "ch_1"})
    assert runs == 1
    assert (idem.stats.acquired, idem.stats.completed, idem.stats.replayed) == (1, 1, 1)
    with pytest.raises(PayloadMismatchError):
        async with idem.transaction("charges", "evt-9", payload={"amount": 6}):
            pass


async def test_the_guard_form_releases_on_error_and_refuses_a_busy_key(
    postgres_store: PostgresStore, charges: str
) -> None:
    """An error rolls back and releases (the key runs again); another owner's key is busy."""
    idem = Idempotency(postgres_store, prefix="t", owner="worker-1")

    async def handler() -> None:
        async with idem.transaction("charges", "evt-10", fingerprint="fp") as tx:
            await tx.execute(f"INSERT INTO {charges} VALUES ('evt-10', 1)")
            raise KeyError("provider said no")

    with pytest.raises(KeyError):
        await handler()
    assert idem.stats.released == 1
    assert await charged(postgres_store, charges) == []
    await claim(postgres_store, "evt-10", owner="someone-else")
    with pytest.raises(AlreadyInProgressError):
        async with idem.transaction("charges", "evt-10", fingerprint="fp"):
            pass


async def test_the_guard_form_renews_the_lease_of_a_long_transaction(
    postgres_store: PostgresStore, charges: str
) -> None:
    """A transaction open for several lease lengths keeps its claim and commits."""
    idem = Idempotency(postgres_store, prefix="t", owner="w", lease_seconds=SHORT_LEASE_SECONDS)
    async with idem.transaction("charges", "slow") as tx:
        await tx.execute(f"INSERT INTO {charges} VALUES ('slow', 1)")
        # Three lease lengths on the database's clock; renewals run meanwhile.
        await tx.execute(f"SELECT pg_sleep({SHORT_LEASE_SECONDS * 3})")
    assert await charged(postgres_store, charges) == ["slow"]


class LateReplyStore(PostgresStore):
    """The claim commits on the server; its reply reaches the caller only when ``reply`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.committed = asyncio.Event()
        self.reply = asyncio.Event()
        self.released = asyncio.Event()

    async def claim_many(self, *args: Any, **kwargs: Any) -> list[ClaimResult]:
        results = await super().claim_many(*args, **kwargs)
        self.committed.set()
        await self.reply.wait()
        return results

    async def release_many(self, *args: Any, **kwargs: Any) -> list[bool]:
        try:
            return await super().release_many(*args, **kwargs)
        finally:
            self.released.set()


async def test_the_guard_form_cancelled_while_claiming_gives_the_claim_back(
    postgres_schema: PostgresSchema,
) -> None:
    """A caller cancelled after its claim committed but before the reply came does not strand
    the key for the lease: the claim finishes and is given back (as the plain guard does)."""
    store = LateReplyStore(postgres_schema.url, schema=postgres_schema.name, cleanup=False)
    async with store:
        idem = Idempotency(store, prefix="t", owner="worker-1")
        ran = False

        async def handler() -> None:
            nonlocal ran
            async with idem.transaction("charges", "evt-12", fingerprint="fp"):
                ran = True

        task = asyncio.create_task(handler())
        await store.committed.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.reply.set()  # the late reply: what the claim acquired is released
        async with asyncio.timeout(10):
            await store.released.wait()
        key = scoped_key("t", "charges", "evt-12")
        after = await store.claim(key, "fp", owner="other", lease_seconds=LEASE)
        assert after.status is ClaimStatus.ACQUIRED
        assert not ran


async def test_two_attempts_of_one_process_exclude_each_other(
    postgres_store: PostgresStore, charges: str
) -> None:
    """Two transactions on one key from one Idempotency (one owner base) are two attempts: the
    second finds the first in progress, and only the first one's write commits."""
    idem = Idempotency(postgres_store, prefix="t", owner="worker-1")
    async with idem.transaction("charges", "evt-11", fingerprint="fp") as tx:
        await tx.execute(f"INSERT INTO {charges} VALUES ('evt-11', 1)")
        with pytest.raises(AlreadyInProgressError):
            async with idem.transaction("charges", "evt-11", fingerprint="fp"):
                pass
    assert await charged(postgres_store, charges) == ["evt-11"]
    assert (idem.stats.acquired, idem.stats.in_progress) == (1, 1)


async def test_a_result_that_cannot_be_stored_commits_once_and_duplicates_learn_why(
    postgres_store: PostgresStore, charges: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A result the serializer refuses: the writes commit with a marker (logged at ERROR), the
    first caller keeps its value, three deliveries run once, duplicates get
    ResultUnavailableError from ``tx.result``."""
    idem = Idempotency(postgres_store, prefix="t", owner="w")
    receipt = object()  # no JSON form
    outcomes: list[object] = []
    for _ in range(3):
        async with idem.transaction("charges", "evt-12", payload={"amount": 7}) as tx:
            if tx.replayed:
                with pytest.raises(ResultUnavailableError, match="could not be stored") as raised:
                    _ = tx.result
                outcomes.append(raised.value)
                continue
            await tx.execute(f"INSERT INTO {charges} VALUES ('evt-12', 7)")
            tx.set_result(receipt)
        outcomes.append(tx.result)
    assert outcomes[0] is receipt
    assert all(isinstance(outcome, ResultUnavailableError) for outcome in outcomes[1:])
    assert await charged(postgres_store, charges) == ["evt-12"]
    assert (idem.stats.completed, idem.stats.unstored, idem.stats.replayed) == (1, 1, 2)
    assert "committed WITHOUT its result" in caplog.text


@dataclass(frozen=True)
class Receipt:
    """A handler's own result type (replays only with its type named)."""

    amount: Decimal
    at: datetime


async def test_the_guard_form_replays_a_typed_result_as_it_was(
    postgres_store: PostgresStore, charges: str
) -> None:
    """With ``serializer=TypedSerializer(Receipt)`` a dataclass of a Decimal and a datetime
    replays as an equal Receipt."""
    idem = Idempotency(postgres_store, prefix="t", owner="w")
    receipt = Receipt(Decimal("12.30"), datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    typed: TypedSerializer[Receipt] = TypedSerializer(Receipt)
    for _ in range(2):
        async with idem.transaction("charges", "evt-13", fingerprint="fp", serializer=typed) as tx:
            if not tx.replayed:
                await tx.execute(f"INSERT INTO {charges} VALUES ('evt-13', 1230)")
                tx.set_result(receipt)
    assert tx.replayed
    assert isinstance(tx.result, Receipt)
    assert tx.result == receipt
