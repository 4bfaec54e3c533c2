"""The stand-in provider charges once per key, keeps every request, and is counted as documented."""

from __future__ import annotations

import multiprocessing
import sqlite3
from itertools import count
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.drill.accounting import charged_event_count, read_ledger
from fargate_runtime.drill.ledger import (
    LEDGER_PATH_ENV,
    ChargeOutcome,
    ChargeRejectedError,
    ChargeRequest,
    Ledger,
    create_ledger,
)

if TYPE_CHECKING:
    from pathlib import Path


def request(event: str, key: str | None = None, *, amount: int = 100) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key or f"charge:{event}",
        event_id=event,
        account="acct_1",
        amount_cents=amount,
    )


def hand_made(path: Path, rows: list[tuple[int, str, str]]) -> None:
    """Write (pid, event, key) requests in order, one second apart."""
    clock = count(1000)
    for pid, event, key in rows:
        with Ledger(path, pid=pid, clock=lambda: float(next(clock))) as ledger:
            ledger.charge_blocking(request(event, key))


def test_first_request_applies_and_the_same_key_replays(tmp_path: Path) -> None:
    """One key is charged once; a repeat with the same parameters is answered, not charged."""
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        assert ledger.charge_blocking(request("e1")) is ChargeOutcome.APPLIED
        assert ledger.charge_blocking(request("e1")) is ChargeOutcome.REPLAYED
        totals = ledger.totals()
    assert (totals.requests, totals.replayed, totals.charges) == (2, 1, 1)
    assert totals.double_charged_events == 0


def test_same_key_with_another_amount_is_recorded_then_refused(tmp_path: Path) -> None:
    """Reusing a key for different parameters raises, and the request is still on record."""
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        ledger.charge_blocking(request("e1", amount=100))
        with pytest.raises(ChargeRejectedError):
            ledger.charge_blocking(request("e1", amount=999))
    outcomes = [r.outcome for r in read_ledger(path).requests]
    assert outcomes == [ChargeOutcome.APPLIED, ChargeOutcome.REJECTED]


async def test_async_charge_and_from_environment(tmp_path: Path) -> None:
    """Workers open the ledger the drill names and charge without blocking the loop."""
    path = tmp_path / "l.sqlite3"
    async with Ledger.from_environment({LEDGER_PATH_ENV: str(path)}) as ledger:
        assert await ledger.charge(request("e1")) is ChargeOutcome.APPLIED
        await ledger.record_execution("e1")
    snapshot = read_ledger(path)
    assert [r.event_id for r in snapshot.requests] == ["e1"]
    assert [e.event_id for e in snapshot.executions] == ["e1"]


def test_from_environment_without_the_variable_says_what_is_missing() -> None:
    """A worker started outside the drill gets an error naming the variable."""
    with pytest.raises(LookupError, match=LEDGER_PATH_ENV):
        Ledger.from_environment({})


def _charge_all(path: str, events: int) -> None:
    with Ledger(path) as ledger:
        for number in range(events):
            ledger.charge_blocking(request(f"e{number}"))


def test_processes_racing_on_the_same_keys_apply_each_once(tmp_path: Path) -> None:
    """Four processes charging the same 40 keys: 160 requests, exactly 40 charges."""
    path = str(create_ledger(tmp_path / "l.sqlite3"))
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_charge_all, args=(path, 40)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    counts = read_ledger(path).counts()
    assert (counts.charge_attempts, counts.charged, counts.double_charges) == (160, 40, 0)
    assert counts.duplicate_attempts == 120
    assert charged_event_count(path) == (40, 160)


def test_counting_a_hand_made_ledger(tmp_path: Path) -> None:
    """Attempts, duplicates, double charges and charged follow the documented rules."""
    path = tmp_path / "l.sqlite3"
    hand_made(
        path,
        [
            (1, "a", "charge:a"),  # a: charged once
            (1, "b", "charge:b"),  # b: charged, then replayed after a kill (1 duplicate)
            (2, "b", "charge:b"),
            (1, "c", "charge:c:1"),  # c: two keys, both applied (1 duplicate, 1 double charge)
            (3, "c", "charge:c:2"),
            (3, "c", "charge:c:2"),  # ... and a replay of the second key (1 more duplicate)
        ],
    )
    snapshot = read_ledger(path)
    counts = snapshot.counts()
    assert counts.charge_attempts == 6
    assert counts.duplicate_attempts == 3
    assert counts.double_charges == 1
    assert counts.charged == 3
    assert set(snapshot.double_charged()) == {"c"}
    # No executions recorded: the charge requests stand in for them (and it is said).
    assert (counts.handler_executions, counts.executions_recorded) == (6, False)
    pairs = [(p.pid, d.pid) for p, d in snapshot.duplicate_requests()]
    assert pairs == [(1, 2), (1, 3), (3, 3)]


def test_recorded_executions_are_counted_when_present(tmp_path: Path) -> None:
    """A worker that records its handler runs gets them counted, charges or not."""
    path = tmp_path / "l.sqlite3"
    with Ledger(path) as ledger:
        ledger.record_execution_blocking("a")
        ledger.record_execution_blocking("a")  # killed before its charge, then run again
        ledger.charge_blocking(request("a"))
    counts = read_ledger(path).counts()
    assert (counts.handler_executions, counts.executions_recorded) == (2, True)
    assert (counts.charge_attempts, counts.duplicate_attempts) == (1, 0)


def test_reading_a_missing_or_foreign_ledger_is_empty(tmp_path: Path) -> None:
    """Before any worker wrote (or a file without our tables) the counts are all zero."""
    assert read_ledger(tmp_path / "none.sqlite3").counts().charge_attempts == 0
    foreign = tmp_path / "foreign.sqlite3"
    sqlite3.connect(foreign).close()
    assert read_ledger(foreign).requests == ()
    assert charged_event_count(foreign) == (0, 0)
