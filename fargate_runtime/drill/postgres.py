"""The drill's PostgreSQL (``--store postgres``): chosen like its Redis, a schema per run.

Nothing is substituted silently, as for the other components (``components``): the URL named
(``--postgres-url``, else ``POSTGRES_URL``) must let the drill in, or the drill cannot run
(``ComponentsError``, exit 2); named nowhere, ``postgresql://postgres@127.0.0.1:5432/postgres``
when it does, else a private server (``initdb`` into a temporary directory).

Each run gets its own schema (``frt_drill_<run id>``) holding the store's objects and the
ledger tables of ``postgres_ledger``, dropped at the end on a shared server. The workers keep
their idempotency records there and charge inside the handler's transaction; handler executions
stay in the SQLite ledger, recorded before the transaction begins, so they count the attempts
the database absorbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..idempotency._postgres_calls import driver, unavailable_errors
from ..idempotency.postgres_schema import schema_sql
from ..local import DEFAULT_POSTGRES_URL, LocalServiceError, PostgresServer, postgres_url_answers
from .accounting import LedgerSnapshot, RecordedRequest, read_ledger
from .components import ComponentsError, redacted
from .ledger import ChargeOutcome
from .postgres_ledger import ledger_tables_sql

if TYPE_CHECKING:
    import asyncpg

__all__ = ["DrillPostgres", "postgres_url_named"]


def postgres_url_named(flag: str | None) -> str | None:
    """The PostgreSQL named for this run: ``--postgres-url``, else ``POSTGRES_URL``."""
    return flag if flag is not None else os.environ.get("POSTGRES_URL") or None


class DrillPostgres:
    """The run's PostgreSQL: found (or started privately), its schema made, dropped at the end."""

    def __init__(self, *, run_id: str, url: str | None = None) -> None:
        self.named = url
        self.schema = f"frt_drill_{run_id}".lower()
        self.url = ""
        self.server: PostgresServer | None = None

    def worker_environment(self) -> dict[str, str]:
        """The idempotency store on this database and schema."""
        return {
            "FARGATE_RUNTIME_IDEMPOTENCY_STORE": "postgres",
            "FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_URL": self.url,
            "FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_SCHEMA": self.schema,
        }

    def describe(self) -> str:
        """Where it is and why that one, for the drill's first line."""
        where = f"{redacted(self.url)} schema {self.schema}"
        if self.server is not None:
            return f"{where} (a private server: nothing at {DEFAULT_POSTGRES_URL})"
        return where

    def choose(self) -> None:
        """Find or start the server (see the module docstring); blocking, run in a thread."""
        try:
            driver()  # the store's driver, before anything is started
        except ConfigurationError as exc:
            raise ComponentsError(str(exc)) from exc
        if self.named is not None:
            if not postgres_url_answers(self.named):
                raise ComponentsError(
                    f"no PostgreSQL lets the drill in at {redacted(self.named)} (--postgres-url "
                    "or POSTGRES_URL): start it, or name neither and the drill uses "
                    "127.0.0.1:5432 or its own"
                )
            self.url = self.named
        elif postgres_url_answers(DEFAULT_POSTGRES_URL):
            self.url = DEFAULT_POSTGRES_URL
        else:
            self.server = PostgresServer()
            try:
                self.server.start()
            except (LocalServiceError, OSError) as exc:
                raise ComponentsError(f"no PostgreSQL at {DEFAULT_POSTGRES_URL}: {exc}") from exc
            self.url = self.server.url

    async def create_schema(self) -> None:
        """The run's schema: the store's objects and the ledger tables."""
        await self._execute(schema_sql(self.schema) + ledger_tables_sql(self.schema))

    async def _connect(self) -> asyncpg.Connection:
        try:
            connection: asyncpg.Connection = await driver().connect(self.url, timeout=10)
        except unavailable_errors() as exc:
            raise ComponentsError(
                f"cannot connect to PostgreSQL {redacted(self.url)}: {exc}"
            ) from exc
        return connection

    async def _execute(self, sql: str) -> None:
        connection = await self._connect()
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    async def aclose(self) -> None:
        """Drop the run's schema (a shared server), or stop the private server."""
        if self.server is not None:
            await asyncio.to_thread(self.server.close)
            self.server = None
        elif self.url:  # chosen: a shared server
            with contextlib.suppress(*unavailable_errors(), ComponentsError):
                await self._execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.url = ""

    async def charged_events(self) -> int:
        """Distinct events charged so far (for the progress line)."""
        connection = await self._connect()
        try:
            value = await connection.fetchval(
                f"SELECT count(DISTINCT event_id) FROM {self.schema}.payments_charges"  # noqa: S608
            )
        finally:
            await connection.close()
        return int(value or 0)

    async def snapshot(self, executions_from: Path) -> LedgerSnapshot:
        """Every committed request (PostgreSQL) and every execution (the SQLite ledger)."""
        connection = await self._connect()
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
