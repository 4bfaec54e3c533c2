"""The drill on PostgreSQL: the run's schema, and the provider's ledger inside the handler's commit.

With ``--store postgres`` the workers keep their idempotency records in PostgreSQL and charge
through the transactional form: the charge rows below are written in the handler's own
transaction, which commits together with the message's completion record. A worker killed
before that COMMIT leaves no charge behind, even when it sends no stable key downstream
(``PAYMENTS_UNSAFE=no-downstream-key``): the duplicate attempt is absorbed by the database.

Each run gets its own schema (``frt_drill_<run id>``) holding the store's objects and the ledger
tables (the same shape as the SQLite ledger's ``requests`` and ``charges``), dropped at the end
on a shared server. Handler executions stay in the SQLite ledger: they are recorded before the
transaction begins, so they count the attempts the database absorbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..idempotency._postgres_calls import driver, unavailable_errors
from ..idempotency.postgres_schema import schema_sql
from ..local import DEFAULT_POSTGRES_URL, LocalServiceError, PostgresServer, postgres_url_answers
from .accounting import LedgerSnapshot, RecordedRequest, read_ledger
from .ledger import ChargeOutcome, ChargeRejectedError

if TYPE_CHECKING:
    from types import TracebackType

    import asyncpg

    from ..idempotency import Transaction
    from .ledger import ChargeRequest

__all__ = ["DrillPostgres", "charge_in_transaction", "create_ledger_tables"]

_LEDGER_TABLES = """
CREATE TABLE IF NOT EXISTS {schema}.payments_requests (
    id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL,
    event_id text NOT NULL,
    account text NOT NULL,
    amount_cents integer NOT NULL,
    sequence integer,
    fencing_token bigint,
    worker_pid integer NOT NULL,
    requested_at double precision NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('applied', 'replayed', 'rejected'))
);
CREATE INDEX IF NOT EXISTS payments_requests_event ON {schema}.payments_requests (event_id);
CREATE TABLE IF NOT EXISTS {schema}.payments_charges (
    idempotency_key text PRIMARY KEY,
    event_id text NOT NULL,
    account text NOT NULL,
    amount_cents integer NOT NULL,
    sequence integer,
    fencing_token bigint,
    worker_pid integer NOT NULL,
    charged_at double precision NOT NULL,
    request_id bigint NOT NULL
);
"""


async def create_ledger_tables(pool: asyncpg.Pool, schema: str) -> None:
    """Create the ledger tables in ``schema`` (the example worker calls this at start)."""
    await pool.execute(_LEDGER_TABLES.format(schema=schema))


async def charge_in_transaction(
    tx: Transaction, request: ChargeRequest, *, schema: str
) -> ChargeOutcome:
    """Apply ``request`` once per key, inside the handler's transaction (the SQLite rules).

    The key's row is locked (``FOR UPDATE``) so two transactions with one key cannot both apply
    it. A rejected request raises ``ChargeRejectedError``, which rolls the transaction back.
    """
    if not request.idempotency_key:
        raise ValueError("idempotency_key must not be empty")
    seen = await tx.fetchrow(
        f"SELECT account, amount_cents FROM {schema}.payments_charges"  # noqa: S608 - our schema
        " WHERE idempotency_key = $1 FOR UPDATE",
        request.idempotency_key,
    )
    if seen is None:
        outcome = ChargeOutcome.APPLIED
    elif (seen[0], int(seen[1])) == (request.account, request.amount_cents):
        outcome = ChargeOutcome.REPLAYED
    else:
        raise ChargeRejectedError(request)
    row = (
        request.idempotency_key,
        request.event_id,
        request.account,
        request.amount_cents,
        request.sequence,
        request.fencing_token,
        os.getpid(),
        time.time(),
    )
    request_id = await tx.fetchval(
        f"INSERT INTO {schema}.payments_requests (idempotency_key, event_id, account,"  # noqa: S608
        " amount_cents, sequence, fencing_token, worker_pid, requested_at, outcome)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        *row,
        outcome.value,
    )
    if outcome is ChargeOutcome.APPLIED:
        await tx.execute(
            f"INSERT INTO {schema}.payments_charges (idempotency_key, event_id, account,"  # noqa: S608
            " amount_cents, sequence, fencing_token, worker_pid, charged_at, request_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            *row,
            request_id,
        )
    return outcome


class DrillPostgres:
    """The run's PostgreSQL: found (or started privately), its schema made, dropped at the end."""

    def __init__(self, *, run_id: str, url: str | None = None) -> None:
        self.wanted = url or os.environ.get("POSTGRES_URL") or DEFAULT_POSTGRES_URL
        self.schema = f"frt_drill_{run_id}".lower()
        self.url = ""
        self.server: PostgresServer | None = None

    def worker_environment(self) -> dict[str, str]:
        """What a worker needs: the store on this database and schema, the ledger beside it."""
        return {
            "FARGATE_RUNTIME_IDEMPOTENCY_STORE": "postgres",
            "FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_URL": self.url,
            "FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_SCHEMA": self.schema,
            "PAYMENTS_LEDGER": "postgres",
            "PAYMENTS_POSTGRES_SCHEMA": self.schema,
        }

    async def __aenter__(self) -> DrillPostgres:
        if postgres_url_answers(self.wanted):
            self.url = self.wanted
        else:
            self.server = PostgresServer()
            try:
                await asyncio.to_thread(self.server.start)
            except (LocalServiceError, OSError) as exc:
                self.server = None
                raise LocalServiceError(f"no PostgreSQL at {self.wanted}: {exc}") from exc
            self.url = self.server.url
        try:
            await self._execute(schema_sql(self.schema) + _LEDGER_TABLES.format(schema=self.schema))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _execute(self, sql: str) -> None:
        try:
            connection = await driver().connect(self.url, timeout=10)
        except unavailable_errors() as exc:
            raise LocalServiceError(f"cannot connect to PostgreSQL for the drill: {exc}") from exc
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def aclose(self) -> None:
        """Drop the run's schema (a shared server), or stop the private server."""
        if self.server is not None:
            await asyncio.to_thread(self.server.close)
            self.server = None
        elif self.url:
            with contextlib.suppress(*unavailable_errors(), LocalServiceError):
                await self._execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    async def charged_events(self) -> int:
        """Distinct events charged so far (for the progress line)."""
        connection = await driver().connect(self.url, timeout=10)
        try:
            value = await connection.fetchval(
                f"SELECT count(DISTINCT event_id) FROM {self.schema}.payments_charges"  # noqa: S608
            )
        finally:
            await connection.close()
        return int(value or 0)

    async def snapshot(self, executions_from: Path) -> LedgerSnapshot:
        """Every committed request (PostgreSQL) and every execution (the SQLite ledger)."""
        connection = await driver().connect(self.url, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT event_id, idempotency_key, fencing_token, account, amount_cents,"  # noqa: S608
                f" worker_pid, requested_at, outcome FROM {self.schema}.payments_requests"
                " ORDER BY requested_at, id"
            )
        finally:
            await connection.close()
        requests = tuple(
            RecordedRequest(
                event_id=row[0],
                idempotency_key=row[1],
                fencing_token=row[2],
                account=row[3],
                amount_cents=int(row[4]),
                pid=int(row[5]),
                at=float(row[6]),
                outcome=ChargeOutcome(row[7]),
            )
            for row in rows
        )
        executions = (await asyncio.to_thread(read_ledger, Path(executions_from))).executions
        return LedgerSnapshot(requests, executions)
