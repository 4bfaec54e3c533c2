"""The stand-in payment provider: a SQLite ledger that charges once per key and keeps every request.

It behaves like a card processor's API called with an ``Idempotency-Key`` header: the first
request with a key is applied, a later one with the same key and the same parameters is replayed
(answered, no money moves), one with other parameters is refused. Unlike a real provider it
writes down every request it gets, so the drill can count what the runtime could not hide::

    worker A  charge(key=k, token=1) -> APPLIED    } one event, two requests:
    (SIGKILL before the completion record)         } 1 duplicate attempt, 0 double charges
    worker B  charge(key=k, token=2) -> REPLAYED   }
    worker C  charge(key=k2, ...)    -> APPLIED      a second key for one event: a double charge

The file lives outside the Redis under test (a Redis restart must not erase the evidence) and is
shared by every worker process: WAL mode lets readers and one writer work together, and each
charge is one ``BEGIN IMMEDIATE`` transaction (the writer lock is taken before the key is looked
up), so two processes can never both apply one key. A charge holds the lock well under a
millisecond; ``busy_timeout`` absorbs the queueing.

Schema (``sqlite3 PATH``; ``examples/sqs_worker/payments.py`` re-exports this module)::

    requests       one row per request, in arrival order: id, idempotency_key, event_id, account,
                   amount_cents, sequence, fencing_token, worker_pid, requested_at (unix s),
                   outcome ('applied' | 'replayed' | 'rejected')
    charges        one row per money movement, key unique: idempotency_key, event_id, account,
                   amount_cents, sequence, fencing_token, worker_pid, charged_at, request_id
    executions     optional, one row per handler run: event_id, worker_pid, started_at

A worker under the drill opens ``Ledger.from_environment()`` (the drill sets
``FARGATE_RUNTIME_DRILL_LEDGER``) and calls ``await ledger.charge(ChargeRequest(...))``; the
drill counts with ``fargate_runtime.drill.accounting``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

__all__ = [
    "LEDGER_PATH_ENV",
    "ChargeOutcome",
    "ChargeRejectedError",
    "ChargeRequest",
    "Ledger",
    "LedgerTotals",
    "create_ledger",
]

# The drill sets this in every worker's environment; ``Ledger.from_environment`` reads it.
LEDGER_PATH_ENV = "FARGATE_RUNTIME_DRILL_LEDGER"

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    account TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    sequence INTEGER,
    fencing_token INTEGER,
    worker_pid INTEGER NOT NULL,
    requested_at REAL NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('applied', 'replayed', 'rejected'))
);
CREATE INDEX IF NOT EXISTS requests_event ON requests (event_id);
CREATE TABLE IF NOT EXISTS charges (
    idempotency_key TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    account TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    sequence INTEGER,
    fencing_token INTEGER,
    worker_pid INTEGER NOT NULL,
    charged_at REAL NOT NULL,
    request_id INTEGER NOT NULL REFERENCES requests (id)
);
CREATE INDEX IF NOT EXISTS charges_event ON charges (event_id);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    worker_pid INTEGER NOT NULL,
    started_at REAL NOT NULL
);
"""

# Several processes queue for the writer lock; a charge holds it for well under a millisecond.
_BUSY_TIMEOUT_SECONDS = 30.0


class ChargeOutcome(enum.Enum):
    """What the provider did with one request."""

    APPLIED = "applied"  # first request with this key: charged now
    REPLAYED = "replayed"  # the key was charged before with the same parameters: not again
    REJECTED = "rejected"  # the key was charged before with other parameters: refused


class ChargeRejectedError(Exception):
    """A key was reused with another account or amount: recorded as ``rejected``, then raised.

    A real provider answers such a request with an error too; retrying will not fix it.
    """

    def __init__(self, request: ChargeRequest) -> None:
        super().__init__(
            f"idempotency key {request.idempotency_key!r} was charged before with other "
            f"parameters (event {request.event_id})"
        )
        self.request = request


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeRequest:
    """One charge request, as a worker sends it.

    ``idempotency_key`` must be the same on every attempt for one event (the runtime's
    ``MessageContext.idempotency_key``); ``fencing_token`` is the claim's token, recorded so a
    report can tell which attempt came from which claim.
    """

    idempotency_key: str
    event_id: str
    account: str
    amount_cents: int
    sequence: int | None = None
    fencing_token: int | None = None

    def outcome(self, charged: tuple[str, int] | None) -> ChargeOutcome:
        """The provider's rule, given the (account, amount) its key was charged with, if any."""
        if charged is None:
            return ChargeOutcome.APPLIED
        if (charged[0], int(charged[1])) == (self.account, self.amount_cents):
            return ChargeOutcome.REPLAYED
        return ChargeOutcome.REJECTED

    def row(
        self, *, pid: int, at: float
    ) -> tuple[str, str, str, int, int | None, int | None, int, float]:
        """What a ledger keeps of it, in the column order of ``requests`` and ``charges``."""
        return (
            self.idempotency_key,
            self.event_id,
            self.account,
            self.amount_cents,
            self.sequence,
            self.fencing_token,
            pid,
            at,
        )


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """Quick totals (the drill's full accounting is in ``accounting``)."""

    requests: int
    replayed: int
    charges: int
    double_charged_events: int


@contextlib.contextmanager
def _immediate(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the writer lock first (check-then-insert is atomic)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path,
        timeout=_BUSY_TIMEOUT_SECONDS,
        isolation_level=None,  # explicit BEGIN IMMEDIATE in _immediate
        check_same_thread=False,  # used from asyncio.to_thread workers, one call at a time
    )
    connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable against a killed process (the drill's SIGKILLs) in WAL mode; only a
    # power cut could lose the last commits, which no drill does.
    connection.execute("PRAGMA synchronous=NORMAL")
    with _immediate(connection):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
    return connection


def create_ledger(path: str | os.PathLike[str]) -> Path:
    """Create an empty ledger file (WAL mode, tables made) before any worker starts."""
    _connect(os.fspath(path)).close()
    return Path(path)


class Ledger:
    """A client of the stand-in provider (``async with Ledger(path)`` or ``with``; or ``open()``).

    Safe from several threads (calls take a lock) and several processes (SQLite's writer lock).
    ``clock`` and ``pid`` exist so tests can write hand-made ledgers; workers leave them alone.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        pid: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        self._pid = pid
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Ledger:
        """The ledger the drill named in ``FARGATE_RUNTIME_DRILL_LEDGER``."""
        env = os.environ if environ is None else environ
        path = env.get(LEDGER_PATH_ENV)
        if not path:
            raise LookupError(f"{LEDGER_PATH_ENV} is not set: it names the drill's ledger file")
        return cls(path)

    @property
    def pid(self) -> int:
        """The process id recorded with each request."""
        return self._pid if self._pid is not None else os.getpid()

    def open(self) -> Ledger:
        """Open the file now (blocking; creates the tables); ``close`` closes it."""
        with self._lock:
            if self._connection is None:
                self._connection = _connect(self.path)
        return self

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> Ledger:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Ledger:
        await asyncio.to_thread(self.open)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    def _require(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the ledger is not open: use `async with Ledger(path)` or open()")
        return self._connection

    def charge_blocking(self, request: ChargeRequest) -> ChargeOutcome:
        """Apply ``request`` once per key and record it (blocking: call from a thread).

        Raises ``ChargeRejectedError`` (after recording it) when the key was charged before for
        another account or amount.
        """
        if not request.idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        with self._lock:
            connection = self._require()
            with _immediate(connection):
                seen = connection.execute(
                    "SELECT account, amount_cents FROM charges WHERE idempotency_key = ?",
                    (request.idempotency_key,),
                ).fetchone()
                outcome = request.outcome(seen)
                row = request.row(pid=self.pid, at=self._clock())
                cursor = connection.execute(
                    "INSERT INTO requests (idempotency_key, event_id, account, amount_cents,"
                    " sequence, fencing_token, worker_pid, requested_at, outcome)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, outcome.value),
                )
                if outcome is ChargeOutcome.APPLIED:
                    connection.execute(
                        "INSERT INTO charges (idempotency_key, event_id, account, amount_cents,"
                        " sequence, fencing_token, worker_pid, charged_at, request_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*row, cursor.lastrowid),
                    )
        if outcome is ChargeOutcome.REJECTED:
            raise ChargeRejectedError(request)
        return outcome

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Apply ``request`` once per key (the SQLite work runs in a thread)."""
        return await asyncio.to_thread(self.charge_blocking, request)

    def record_execution_blocking(self, event_id: str) -> None:
        """Record that a handler started for ``event_id`` (the drill's ``handler_executions``)."""
        with self._lock:
            self._require().execute(
                "INSERT INTO executions (event_id, worker_pid, started_at) VALUES (?, ?, ?)",
                (event_id, self.pid, self._clock()),
            )

    async def record_execution(self, event_id: str) -> None:
        """``record_execution_blocking`` in a thread."""
        await asyncio.to_thread(self.record_execution_blocking, event_id)

    def totals(self) -> LedgerTotals:
        """Requests, replays, charges and double-charged events so far (blocking)."""
        with self._lock:
            connection = self._require()
            requests, replayed = connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(outcome = 'replayed'), 0) FROM requests"
            ).fetchone()
            (charges,) = connection.execute("SELECT COUNT(*) FROM charges").fetchone()
            (doubles,) = connection.execute(
                "SELECT COUNT(*) FROM (SELECT event_id FROM charges GROUP BY event_id"
                " HAVING COUNT(*) > 1)"
            ).fetchone()
        return LedgerTotals(int(requests), int(replayed), int(charges), int(doubles))

    def requests_for(self, event_id: str) -> list[tuple[str, int, str]]:
        """``(outcome, worker_pid, idempotency_key)`` of each request for ``event_id``, in order."""
        with self._lock:
            rows = (
                self._require()
                .execute(
                    "SELECT outcome, worker_pid, idempotency_key FROM requests"
                    " WHERE event_id = ? ORDER BY id",
                    (event_id,),
                )
                .fetchall()
            )
        return [(str(outcome), int(pid), str(key)) for outcome, pid, key in rows]

    def account_positions(self) -> dict[str, tuple[int, int]]:
        """Per account: (total charged in cents, highest sequence applied)."""
        with self._lock:
            rows = (
                self._require()
                .execute(
                    "SELECT account, SUM(amount_cents), MAX(sequence) FROM charges GROUP BY account"
                )
                .fetchall()
            )
        return {str(account): (int(total), int(top or 0)) for account, total, top in rows}
