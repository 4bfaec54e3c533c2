"""The guard's transactional form: ``async with idem.transaction(scope, key) as tx``.

Claim the key (one round trip), run the block inside a PostgreSQL transaction, and commit its
writes together with the completion; a duplicate replays the stored result without opening a
transaction. While the block runs, the lease is renewed every third of its length (as the
guard does), so a long transaction keeps its claim::

    async with idem.transaction("charges", event["id"], payload=event) as tx:
        if tx.replayed:
            return tx.result
        charge_id = await tx.fetchval("INSERT INTO charges ... RETURNING id", ...)
        tx.set_result({"charge_id": charge_id})

Unlike the guard, this form always fails closed: with the store down there is no transaction
to commit the record in, whatever ``FailurePolicy`` says. Like the guard, each entry is one
attempt with its own owner id, and a result that cannot be stored (not serializable, too large)
never makes the work run twice: the writes commit with a marker instead of the result, and
duplicates get ResultUnavailableError when they read ``tx.result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ..errors import (
    AlreadyInProgressError,
    ConfigurationError,
    LeaseLostError,
    PayloadMismatchError,
    ResultTooLargeError,
    ResultUnavailableError,
    StoreUnavailableError,
)
from ._store import ClaimRequest, ClaimStatus, Completion, Held
from .guard import claim_attempt, release_after
from .keys import fingerprint as fingerprint_of
from .postgres_store import PostgresStore
from .postgres_transaction import Transaction, TransactionalClaim
from .serialization import decode_result, encode_result, unstored_marker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .serialization import Serializer
    from .service import Idempotency

__all__ = ["guarded_transaction"]

logger = logging.getLogger("fargate_runtime.idempotency.postgres")


@contextlib.asynccontextmanager
async def guarded_transaction(
    idem: Idempotency,
    scope: str,
    key: str,
    *,
    payload: object = None,
    fingerprint: str | None = None,
    isolation: str | None = None,
    serializer: Serializer | None = None,
) -> AsyncIterator[Transaction]:
    """See the module docstring; ``Idempotency.transaction`` is this with ``idem`` bound."""
    store = idem.store
    if not isinstance(store, PostgresStore):
        raise ConfigurationError(
            "idem.transaction() needs the PostgreSQL store (FARGATE_RUNTIME_IDEMPOTENCY_STORE="
            f"postgres); this Idempotency uses {type(store).__name__}"
        )
    serializer = serializer or idem.serializer
    stored = idem.key(scope, key)
    request = ClaimRequest(stored, fingerprint or fingerprint_of(payload))
    result = await claim_attempt(idem, request)
    if result.status is ClaimStatus.MISMATCH:
        idem.stats.mismatched += 1
        raise PayloadMismatchError(stored)
    if result.status is ClaimStatus.IN_PROGRESS or result.token is None:
        idem.stats.in_progress += 1
        raise AlreadyInProgressError(stored)
    if result.status is ClaimStatus.COMPLETED:
        idem.stats.replayed += 1
        try:
            kept = decode_result(serializer, result.result or b"null", key=stored)
        except ResultUnavailableError as unavailable:
            yield Transaction(
                None, key=stored, token=result.token, replayed=True, unavailable=unavailable
            )
            return
        yield Transaction(None, key=stored, token=result.token, replayed=True, result=kept)
        return
    idem.stats.acquired += 1
    held = Held(stored, result.token)
    unstored: list[BaseException] = []

    def encode(value: object) -> bytes:
        # Inside the transaction, after the block: its writes must still commit, so a result
        # that cannot be kept becomes a marker (duplicates: ResultUnavailableError), never a
        # rollback and a second run.
        try:
            data = encode_result(serializer, value, max_bytes=idem.max_result_bytes, key=stored)
            store.check_results([Completion(stored, held.token, data)])  # its own limit
        except BaseException as problem:  # noqa: BLE001 - user serializers may raise anything
            unstored.append(problem)
            marker = unstored_marker(problem)
            try:
                store.check_results([Completion(stored, held.token, marker)])
            except ResultTooLargeError:  # even the reason is too large: the bare marker
                marker = unstored_marker(None)
            return marker
        return data

    recovery = TransactionalClaim(
        store, held, retention_seconds=idem.retention_seconds, encode=encode
    )
    renewing = asyncio.create_task(_renew(idem, store, held), name="idempotency-lease")
    try:
        async with recovery.transaction(isolation=isolation) as tx:
            yield tx
    except LeaseLostError:
        idem.stats.lease_lost += 1
        raise  # not ours any more: nothing to release
    except BaseException as exc:
        await release_after(idem, held, exc)
        raise
    finally:
        renewing.cancel()
        if unstored and not isinstance(unstored[0], Exception):
            # KeyboardInterrupt, SystemExit while serializing: on its way once the COMMIT ended.
            raise unstored[0]
    idem.stats.completed += 1
    if unstored:
        idem.stats.unstored += 1
        logger.error(
            "idempotent transaction committed WITHOUT its result: it cannot be stored (%r); "
            "the work will not run again, duplicates get ResultUnavailableError",
            unstored[0],
            extra={"idempotency_key": stored, "fencing_token": held.token},
        )


async def _renew(idem: Idempotency, store: PostgresStore, held: Held) -> None:
    """Renew the lease every third of it until cancelled or refused."""
    while True:
        await asyncio.sleep(idem.lease_seconds / 3)
        try:
            renewed = await store.renew(held.key, held.token, lease_seconds=idem.lease_seconds)
        except StoreUnavailableError as exc:
            logger.warning(
                "could not renew an idempotency lease; trying again",
                extra={"idempotency_key": held.key, "error": str(exc)},
            )
            continue
        if not renewed:
            logger.warning(
                "idempotency lease lost while the transaction was open; it will not commit",
                extra={"idempotency_key": held.key, "fencing_token": held.token},
            )
            return
