"""The stand-in payment provider this worker charges: a SQLite ledger, one charge per key.

It behaves like a provider called with an ``Idempotency-Key`` header (Stripe's, for one): the
first request with a key is applied, a later one with the same key and parameters is replayed
(answered, no money moves), one with other parameters is refused (``ChargeRejectedError``). It
also **records every request it gets**, so the Spot interruption drill (``fargate-runtime
drill``) can count charge attempts, duplicate attempts and double charges across worker
processes that were interrupted, killed and restarted. The file is safe for several worker
processes at once (WAL mode; each charge one ``BEGIN IMMEDIATE`` transaction).

The implementation is the drill's (``fargate_runtime.drill.ledger``), so the worker and the
drill can never disagree about the schema. Replace this module with your provider's client.

Schema (``sqlite3 $PAYMENTS_LEDGER_PATH``)::

    requests     one row per request, in arrival order
                 id, idempotency_key, event_id, account, amount_cents, sequence,
                 fencing_token (NULL without idempotency), worker_pid,
                 requested_at (unix seconds), outcome ('applied' | 'replayed' | 'rejected')
    charges      one row per money movement; idempotency_key is the primary key
                 idempotency_key, event_id, account, amount_cents, sequence, fencing_token,
                 worker_pid, charged_at, request_id
    executions   one row per handler run: event_id, worker_pid, started_at

Double charges are events with more than one ``charges`` row (possible only when the worker
does not send a stable key: see ``Unsafe`` in ``fargate_runtime.drill.worker``)::

    SELECT event_id FROM charges GROUP BY event_id HAVING COUNT(*) > 1;
"""

from __future__ import annotations

from fargate_runtime.drill.ledger import (
    ChargeOutcome,
    ChargeRejectedError,
    ChargeRequest,
    Ledger,
    LedgerTotals,
)

__all__ = ["ChargeOutcome", "ChargeRejectedError", "ChargeRequest", "Ledger", "LedgerTotals"]
