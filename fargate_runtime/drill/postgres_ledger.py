"""The stand-in provider's ledger in PostgreSQL, written inside the handler's own transaction.

With ``PAYMENTS_LEDGER=postgres`` the drill's worker charges through ``charge_in_transaction``
in ``context.transaction()``: the charge rows commit together with the message's completion
record, or not at all. A worker killed before that COMMIT leaves no charge behind, even when it
sends no stable key downstream (``PAYMENTS_UNSAFE=no-downstream-key``): the duplicate attempt is
absorbed by the database. The tables have the SQLite ledger's shape (``ledger``) and its rules
(one charge per key, replays recorded, other parameters refused)::

    payments_requests   one row per committed request: id, idempotency_key, event_id, account,
                        amount_cents, sequence, fencing_token, worker_pid, requested_at,
                        outcome ('applied' | 'replayed' | 'rejected')
    payments_charges    one row per money movement, key unique: idempotency_key, event_id,
                        account, amount_cents, sequence, fencing_token, worker_pid,
                        charged_at, request_id
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .ledger import ChargeOutcome, ChargeRejectedError

if TYPE_CHECKING:
    import asyncpg

    from ..idempotency import Transaction
    from .ledger import ChargeRequest

__all__ = ["charge_in_transaction", "create_ledger_tables", "ledger_tables_sql"]

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


def ledger_tables_sql(schema: str) -> str:
    """The statements that create the ledger tables in ``schema`` (safe to repeat)."""
    return _LEDGER_TABLES.format(schema=schema)


async def create_ledger_tables(pool: asyncpg.Pool, schema: str) -> None:
    """Create the ledger tables in ``schema`` (the drill's worker calls this at start)."""
    await pool.execute(ledger_tables_sql(schema))


async def charge_in_transaction(
    tx: Transaction, request: ChargeRequest, *, schema: str
) -> ChargeOutcome:
    """Apply ``request`` once per key, inside the handler's transaction (``ChargeRequest``'s rule).

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
    outcome = request.outcome(None if seen is None else (seen[0], seen[1]))
    if outcome is ChargeOutcome.REJECTED:
        raise ChargeRejectedError(request)  # rolls the transaction back: nothing is kept
    row = request.row(pid=os.getpid(), at=time.time())
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
