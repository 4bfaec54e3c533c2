"""Idempotency keys on Redis: atomic, fenced, leased, batched.

A record per key goes ``absent -> in_progress -> completed`` (or back to absent on release or
lease expiry), written only by atomic store operations; see ``IdempotencyStore``. Most code uses
the guard::

    settings = load_idempotency_settings()  # FARGATE_RUNTIME_IDEMPOTENCY_*, REDIS_URL
    async with open_store(settings) as store:  # or Runtime.enter(): checks the eviction policy
        idem = Idempotency.from_settings(store, settings)

        @idem.idempotent("charges", key=lambda event: event["id"])
        async def charge(event: dict[str, Any]) -> dict[str, Any]:
            claim = current_claim()  # claim.key and claim.token go downstream
            ...

Results replay with their types (``JsonSerializer``, ``TypedSerializer``); one that cannot be
stored completes the record without it (``ResultUnavailableError`` for duplicates), never a
second run. Batch callers (the SQS consumer) call ``claim_many`` / ``complete_many`` on the
store directly, one round trip for a whole receive batch, with one ``attempt_owner`` per call
(or a ``delivery_owner`` per message). Stores that implement ``CountingStore`` (Redis, memory)
also keep the consumer's per-message counters.

With ``PostgresStore`` (``FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres``) the record can commit in
the handler's own transaction: exactly-once database effects, see ``postgres_transaction``::

    async with idem.transaction("charges", event["id"], payload=event) as tx:
        if not tx.replayed:
            await tx.execute("INSERT INTO charges ...")

``RedisStore`` is loaded on first use (with redis-py): a worker without Redis keys never
imports redis-py. ``PostgresStore`` imports asyncpg only when it connects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ..errors import (
    AlreadyInProgressError,
    IdempotencyError,
    IdempotencyKeyError,
    LeaseLostError,
    PayloadMismatchError,
    ResultTooLargeError,
    ResultUnavailableError,
    StoreUnavailableError,
)
from ._store import (
    ClaimRequest,
    ClaimResult,
    ClaimStatus,
    Completion,
    CountChange,
    CountingStore,
    Held,
    IdempotencyStore,
    RecordState,
    StoreBase,
)
from .claim import Claim, GuardStats, current_claim
from .connection import open_store, redis_client
from .guard import Guard
from .keys import MAX_KEY_LENGTH, fingerprint, scoped_key
from .memory_store import ManualClock, MemoryStore
from .owners import attempt_owner, delivery_owner
from .postgres_schema import schema_sql
from .postgres_store import PostgresStore
from .postgres_transaction import Transaction, TransactionalClaim
from .serialization import JsonSerializer, Serializer, TypedSerializer, encode_result
from .service import Idempotency
from .settings import FailurePolicy, IdempotencySettings, StoreKind, load_idempotency_settings

if TYPE_CHECKING:
    from .redis_store import RedisStore

__all__ = [
    "MAX_KEY_LENGTH",
    "AlreadyInProgressError",
    "Claim",
    "ClaimRequest",
    "ClaimResult",
    "ClaimStatus",
    "Completion",
    "CountChange",
    "CountingStore",
    "FailurePolicy",
    "Guard",
    "GuardStats",
    "Held",
    "Idempotency",
    "IdempotencyError",
    "IdempotencyKeyError",
    "IdempotencySettings",
    "IdempotencyStore",
    "JsonSerializer",
    "LeaseLostError",
    "ManualClock",
    "MemoryStore",
    "PayloadMismatchError",
    "PostgresStore",
    "RecordState",
    "RedisStore",
    "ResultTooLargeError",
    "ResultUnavailableError",
    "Serializer",
    "StoreBase",
    "StoreKind",
    "StoreUnavailableError",
    "Transaction",
    "TransactionalClaim",
    "TypedSerializer",
    "attempt_owner",
    "current_claim",
    "delivery_owner",
    "encode_result",
    "fingerprint",
    "load_idempotency_settings",
    "open_store",
    "redis_client",
    "schema_sql",
    "scoped_key",
]


# ``RedisStore`` on first use: importing it imports redis-py.
__getattr__ = lazy_exports(__name__, {"RedisStore": ".redis_store"})
