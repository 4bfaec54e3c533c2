"""Results through the guard, over every store: three deliveries of one key run the work once.

Each result either replays faithfully (same type, equal value) or, when it cannot be stored,
completes the record with a marker: the first caller keeps its result, the duplicates get
ResultUnavailableError, and nothing runs a second time. Never a release after the work ran.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import logging
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from fargate_runtime.idempotency import (
    Idempotency,
    MemoryStore,
    ResultUnavailableError,
    StoreBase,
)

if TYPE_CHECKING:
    from tests.idempotency.conftest import Harness

pytestmark = pytest.mark.integration

DELIVERIES = 3


@dataclasses.dataclass(frozen=True)
class Receipt:
    """What payment code returns."""

    charge: str
    amount: decimal.Decimal


def guards(store: StoreBase, prefix: str, **options: Any) -> Idempotency:
    """Guards over ``store`` under the test's prefix."""
    return Idempotency(store, prefix=prefix, owner="results", **options)


async def deliver(idem: Idempotency, result: object, **options: Any) -> tuple[int, list[object]]:
    """Deliver one event ``DELIVERIES`` times to a decorated handler returning ``result``.

    Returns how often the handler ran and what each delivery got back (a value, or the
    exception it raised).
    """
    runs = 0

    @idem.idempotent("charges", key=lambda event: event["id"], **options)
    async def charge(event: dict[str, str]) -> object:
        nonlocal runs
        runs += 1
        return result

    outcomes: list[object] = []
    for _ in range(DELIVERIES):
        try:
            outcomes.append(await charge({"id": "evt-1"}))
        except ResultUnavailableError as exc:
            outcomes.append(exc)
    return runs, outcomes


@pytest.mark.parametrize(
    "result",
    [
        decimal.Decimal("12.30"),
        datetime.datetime(2026, 5, 1, 12, 30, tzinfo=datetime.UTC),
        {"charge", "refund"},
        ("ch_1", 1230),
        uuid.UUID(int=42),
        {"amount": decimal.Decimal("0.10"), "at": datetime.date(2026, 5, 1), 7: b"\x00"},
    ],
    ids=["decimal", "datetime", "set", "tuple", "uuid", "nested"],
)
async def test_payment_results_replay_faithfully(harness: Harness, result: object) -> None:
    """Decimal, datetime, set, tuple, UUID and nested mixes: one run, equal replays of one type."""
    runs, outcomes = await deliver(guards(harness.store, harness.prefix), result)
    assert runs == 1
    for outcome in outcomes:
        assert outcome == result
        assert type(outcome) is type(result)


async def test_a_dataclass_result_runs_once_and_replays_as_an_error(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A dataclass (no type named) cannot be stored: one run, then ResultUnavailableError."""
    idem = guards(harness.store, harness.prefix)
    receipt = Receipt("ch_1", decimal.Decimal("12.30"))
    with caplog.at_level(logging.ERROR, logger="fargate_runtime.idempotency"):
        runs, outcomes = await deliver(idem, receipt)
    assert runs == 1
    assert outcomes[0] == receipt  # the first caller keeps what its work returned
    for outcome in outcomes[1:]:
        assert isinstance(outcome, ResultUnavailableError)
        assert "Receipt" in str(outcome)
    assert idem.stats.unstored == 1
    assert idem.stats.completed == 1
    assert idem.stats.released == 0
    assert any("WITHOUT its result" in record.getMessage() for record in caplog.records)


async def test_a_dataclass_result_with_its_type_named_replays_as_itself(harness: Harness) -> None:
    """``result_type=Receipt`` stores the dataclass so that it replays equal, as a Receipt."""
    receipt = Receipt("ch_1", decimal.Decimal("12.30"))
    runs, outcomes = await deliver(
        guards(harness.store, harness.prefix), receipt, result_type=Receipt
    )
    assert runs == 1
    assert outcomes == [receipt] * DELIVERIES
    assert all(type(outcome) is Receipt for outcome in outcomes)


async def test_an_oversized_result_runs_once(harness: Harness) -> None:
    """A result over the limit completes the record without it: one run, duplicates get the
    error naming the size, never a second charge."""
    idem = guards(harness.store, harness.prefix, max_result_bytes=100)
    runs, outcomes = await deliver(idem, "x" * 200)
    assert runs == 1
    assert outcomes[0] == "x" * 200
    for outcome in outcomes[1:]:
        assert isinstance(outcome, ResultUnavailableError)
        assert "limit is 100" in str(outcome)


@pytest.mark.parametrize(
    ("store_limit", "reason"),
    [(400, "limit is 400"), (50, "reason was too large to keep")],
    ids=["marker-with-reason", "bare-marker"],
)
async def test_a_store_limit_below_the_guards_still_runs_once(
    store_limit: int, reason: str
) -> None:
    """When the store refuses the size the guard allowed, the record is completed with a marker
    (the bare one-byte marker when even the reason is over the store's limit)."""
    store = MemoryStore(max_result_bytes=store_limit)
    idem = guards(store, "svc", max_result_bytes=10_000)
    runs, outcomes = await deliver(idem, "y" * 1000)
    assert runs == 1
    assert isinstance(outcomes[1], ResultUnavailableError)
    assert reason in str(outcomes[1])


async def test_a_serializer_that_fails_still_runs_once(harness: Harness) -> None:
    """Any error from a custom serializer completes with a marker instead of releasing."""

    class Broken:
        def dumps(self, value: object) -> bytes:
            raise ValueError("encoder crashed")

        def loads(self, data: bytes) -> object:
            return data

    idem = guards(harness.store, harness.prefix, serializer=Broken())
    runs, outcomes = await deliver(idem, {"ok": True})
    assert runs == 1
    assert isinstance(outcomes[2], ResultUnavailableError)
    assert "encoder crashed" in str(outcomes[2])


async def test_a_duplicate_that_does_not_read_the_result_is_not_an_error(harness: Harness) -> None:
    """A guard block that only checks ``claim.replayed`` treats an unstored result as done."""
    idem = guards(harness.store, harness.prefix)
    async with idem.guard("charges", "evt-1") as first:
        first.set_result(Receipt("ch_1", decimal.Decimal(1)))
    async with idem.guard("charges", "evt-1") as again:
        assert again.replayed
        with pytest.raises(ResultUnavailableError):
            _ = again.result


async def test_an_interrupt_while_serializing_is_recorded_then_raised(harness: Harness) -> None:
    """KeyboardInterrupt from a serializer after the work ran: completed (marker), then raised."""

    class Interrupted:
        def dumps(self, value: object) -> bytes:
            raise KeyboardInterrupt

        def loads(self, data: bytes) -> object:
            return data

    idem = guards(harness.store, harness.prefix, serializer=Interrupted())
    with pytest.raises(KeyboardInterrupt):
        async with idem.guard("charges", "evt-1") as claim:
            claim.set_result("done")
    async with idem.guard("charges", "evt-1") as replay:
        assert replay.replayed
