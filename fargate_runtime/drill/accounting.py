"""Reading the stand-in provider's ledger, and counting it in the drill report's terms.

The rules, each with a test on a hand-made ledger::

    charge_attempts      every request the provider got
    duplicate_attempts   requests beyond the first, per event (whatever their key or outcome)
    double_charges       events with more than one APPLIED request (two keys for one event)
    charged              events with at least one APPLIED request
    handler_executions   rows in ``executions`` when the worker records them; otherwise the
                         charge requests (a lower bound: a handler that died before its charge
                         left no trace)
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .ledger import ChargeOutcome

if TYPE_CHECKING:
    import os

__all__ = [
    "Execution",
    "LedgerCounts",
    "LedgerSnapshot",
    "RecordedRequest",
    "charged_event_count",
    "read_ledger",
]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the provider got, as recorded (``at`` is unix time, seconds)."""

    event_id: str
    idempotency_key: str
    fencing_token: int | None
    account: str
    amount_cents: int
    pid: int
    at: float
    outcome: ChargeOutcome


@dataclass(frozen=True, slots=True)
class Execution:
    """One handler execution a worker recorded."""

    event_id: str
    pid: int
    at: float


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """The ledger's figures for the report (see the module docstring for each rule)."""

    charge_attempts: int
    duplicate_attempts: int
    double_charges: int
    charged: int
    handler_executions: int
    executions_recorded: bool


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """Everything in a ledger at one moment, in arrival order."""

    requests: tuple[RecordedRequest, ...]
    executions: tuple[Execution, ...] = ()

    def requests_by_event(self) -> dict[str, list[RecordedRequest]]:
        """Each event's requests, oldest first."""
        grouped: dict[str, list[RecordedRequest]] = defaultdict(list)
        for request in self.requests:
            grouped[request.event_id].append(request)
        return dict(grouped)

    def applied_by_event(self) -> dict[str, list[RecordedRequest]]:
        """Each charged event's applied requests (more than one: a double charge)."""
        grouped: dict[str, list[RecordedRequest]] = defaultdict(list)
        for request in self.requests:
            if request.outcome is ChargeOutcome.APPLIED:
                grouped[request.event_id].append(request)
        return dict(grouped)

    def charged_events(self) -> set[str]:
        """Events with at least one applied charge."""
        return set(self.applied_by_event())

    def double_charged(self) -> dict[str, list[RecordedRequest]]:
        """Events applied more than once, with their applied requests."""
        applied = self.applied_by_event()
        return {event: requests for event, requests in applied.items() if len(requests) > 1}

    def duplicate_requests(self) -> list[tuple[RecordedRequest, RecordedRequest]]:
        """Every request beyond an event's first, with the request just before it, by time."""
        pairs: list[tuple[RecordedRequest, RecordedRequest]] = []
        for requests in self.requests_by_event().values():
            pairs.extend(itertools.pairwise(requests))
        pairs.sort(key=lambda pair: pair[1].at)
        return pairs

    def counts(self) -> LedgerCounts:
        """The ledger's figures for the report."""
        attempts = len(self.requests)
        recorded = bool(self.executions)
        return LedgerCounts(
            charge_attempts=attempts,
            duplicate_attempts=sum(len(r) - 1 for r in self.requests_by_event().values()),
            double_charges=len(self.double_charged()),
            charged=len(self.charged_events()),
            handler_executions=len(self.executions) if recorded else attempts,
            executions_recorded=recorded,
        )


def _tables(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(row[0]) for row in rows}


def read_ledger(path: str | os.PathLike[str]) -> LedgerSnapshot:
    """Read the whole ledger (empty when no worker has created it yet)."""
    if not Path(path).exists():
        return LedgerSnapshot(())
    connection = sqlite3.connect(path, timeout=30.0)
    try:
        tables = _tables(connection)
        requests: tuple[RecordedRequest, ...] = ()
        executions: tuple[Execution, ...] = ()
        if "requests" in tables:
            rows = connection.execute(
                "SELECT event_id, idempotency_key, fencing_token, account, amount_cents,"
                " worker_pid, requested_at, outcome FROM requests ORDER BY id"
            )
            requests = tuple(
                RecordedRequest(
                    event_id=str(row[0]),
                    idempotency_key=str(row[1]),
                    fencing_token=None if row[2] is None else int(row[2]),
                    account=str(row[3]),
                    amount_cents=int(row[4]),
                    pid=int(row[5]),
                    at=float(row[6]),
                    outcome=ChargeOutcome(row[7]),
                )
                for row in rows
            )
        if "executions" in tables:
            rows = connection.execute(
                "SELECT event_id, worker_pid, started_at FROM executions ORDER BY id"
            )
            executions = tuple(Execution(str(r[0]), int(r[1]), float(r[2])) for r in rows)
    finally:
        connection.close()
    return LedgerSnapshot(requests, executions)


def charged_event_count(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(events charged, requests) so far: a cheap query for the live progress line."""
    if not Path(path).exists():
        return 0, 0
    connection = sqlite3.connect(path, timeout=30.0)
    try:
        if not {"charges", "requests"} <= _tables(connection):
            return 0, 0
        (charged,) = connection.execute("SELECT COUNT(DISTINCT event_id) FROM charges").fetchone()
        (requests,) = connection.execute("SELECT COUNT(*) FROM requests").fetchone()
    finally:
        connection.close()
    return int(charged), int(requests)
