"""Claiming a receive batch's keys: one round trip, one verdict per message.

Each delivery claims as its own owner (``delivery_owner``: the process and the message id), so
a claim whose reply was lost, or a redelivery of the same message to this process, finds its
own record and proceeds; a duplicate message with the same key does not. What each verdict
means for the message is the Runner's to decide (a standard queue hands it back, a FIFO group
holds it).
"""

from __future__ import annotations

import enum
import logging
import time
from typing import TYPE_CHECKING

from ..errors import (
    ConfigurationError,
    IdempotencyKeyError,
    MalformedMessageError,
    StoreUnavailableError,
)
from ..idempotency import ClaimStatus, FailurePolicy, Held, attempt_owner
from ..telemetry import ErrorType, IdempotencyOutcome, mark_idempotency_outcome
from ._inflight import MessageState
from .events import MessageOutcome

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..idempotency import ClaimRequest, IdempotencyStore
    from ._holdings import ConsumerStats, Holdings
    from ._inflight import InFlight
    from ._outage import StoreOutage
    from .claims import MessageKeys

__all__ = ["Claimer", "Verdict", "claim_again", "note_malformed"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

_OUTCOMES = {
    ClaimStatus.ACQUIRED: IdempotencyOutcome.CLAIMED,
    ClaimStatus.COMPLETED: IdempotencyOutcome.REPLAYED,
    ClaimStatus.IN_PROGRESS: IdempotencyOutcome.IN_PROGRESS,
    ClaimStatus.MISMATCH: IdempotencyOutcome.MISMATCH,
}


class Verdict(enum.Enum):
    """What a claim decided for one message."""

    RUN = "run"  # the key is ours (or the store is down under the fail-open policy)
    DUPLICATE = "duplicate"  # completed before: deleted without running
    WAIT = "wait"  # in progress elsewhere: not now
    FAILED = "failed"  # no usable key, or the key was used with another payload
    UNCLAIMED = "unclaimed"  # the store did not answer: held until it does


class Claimer:
    """Claims batches of messages through ``keys``; settles completed duplicates itself."""

    def __init__(
        self, keys: MessageKeys, *, holdings: Holdings, outage: StoreOutage, lease_seconds: float
    ) -> None:
        self._keys = keys
        self._holdings = holdings
        self._outage = outage
        self._lease = lease_seconds
        self._stats = holdings.stats
        self._metrics = holdings.metrics

    @property
    def keys(self) -> MessageKeys:
        """Where each message's key comes from, and the idempotency it is claimed in."""
        return self._keys

    async def claim(self, items: Sequence[InFlight]) -> dict[InFlight, Verdict]:
        """One round trip for every message of ``items`` that may still run."""
        verdicts: dict[InFlight, Verdict] = {}
        keyed: list[tuple[InFlight, ClaimRequest]] = []
        for item in items:
            if item.request is None:
                try:
                    item.key, item.request = self._keys.request(item.message)
                except (MalformedMessageError, IdempotencyKeyError) as exc:
                    self._malformed(item, exc)
                    verdicts[item] = Verdict.FAILED
                    continue
            keyed.append((item, item.request))
        if not keyed:
            return verdicts
        idempotency = self._keys.idempotency
        started = time.perf_counter()
        try:
            results = await idempotency.store.claim_many(
                [request for _, request in keyed],
                # Each request names its delivery; the call's owner is only the default.
                owner=attempt_owner(idempotency.owner),
                lease_seconds=self._lease,
            )
        except (StoreUnavailableError, ConfigurationError) as exc:
            # A store that cannot be used now: an outage (intake paused, the probe resumes it).
            verdicts.update(self._store_failed([item for item, _ in keyed], exc))
            return verdicts
        except Exception:
            # Not an outage (a store's bug): not run now, handed back, never stranded.
            logger.exception("claims failed; not run now", extra={"count": len(keyed)})
            return verdicts | dict.fromkeys((item for item, _ in keyed), Verdict.WAIT)
        self._outage.answered()
        self._metrics.record_store(time.perf_counter() - started)
        late: list[InFlight] = []
        for (item, request), result in zip(keyed, results, strict=True):
            if item.span is not None:
                mark_idempotency_outcome(_OUTCOMES[result.status], item.span)
            if result.status is ClaimStatus.ACQUIRED and result.token is not None:
                item.held = Held(request.key, result.token)
                if item.state is not MessageState.RECEIVED:
                    late.append(item)  # released by the drain while we were claiming
                verdicts[item] = Verdict.RUN
            elif item.state is not MessageState.RECEIVED:
                continue
            elif result.status is ClaimStatus.COMPLETED:
                self._stats.duplicates_completed += 1
                logger.info("duplicate of completed work deleted", extra=item.log_fields())
                self._holdings.delete(item, outcome=MessageOutcome.DUPLICATE)
                verdicts[item] = Verdict.DUPLICATE
            elif result.status is ClaimStatus.IN_PROGRESS:
                self._stats.duplicates_in_progress += 1
                logger.info("key in progress elsewhere; backing off", extra=item.log_fields())
                verdicts[item] = Verdict.WAIT
            else:
                self._mismatch(item)
                verdicts[item] = Verdict.FAILED
        if late:
            await self._holdings.release_claims(late)
        return verdicts

    def _store_failed(self, items: list[InFlight], exc: Exception) -> dict[InFlight, Verdict]:
        """The claim round trip failed: run unclaimed (fail open), or hold until it answers."""
        self._stats.store_errors += len(items)
        for item in items:
            if item.span is not None:
                mark_idempotency_outcome(IdempotencyOutcome.STORE_ERROR, item.span)
        if self._keys.idempotency.failure_policy is FailurePolicy.OPEN:
            # The user chose availability over safety: run without claims (no token).
            logger.error(
                "idempotency store failed; running WITHOUT idempotency (fail-open policy)",
                extra={"count": len(items), "error": repr(exc)},
            )
            return dict.fromkeys(items, Verdict.RUN)
        # Fail closed: nothing runs without its claim; held (not handed back) until it answers.
        self._outage.failed(exc)
        return dict.fromkeys(items, Verdict.UNCLAIMED)

    def _malformed(self, item: InFlight, exc: Exception) -> None:
        """A message whose key cannot be read: a failure of the message (retried, then DLQ)."""
        item.fail(ErrorType.MALFORMED, description=str(exc))
        note_malformed(self._stats, item, exc)

    def _mismatch(self, item: InFlight) -> None:
        """The key was completed or claimed for another payload: never run this one."""
        self._stats.payload_mismatches += 1
        item.fail(ErrorType.PAYLOAD_MISMATCH, description="same key, different payload")
        logger.warning(
            "payload mismatch: this idempotency key was used with another payload; "
            "it will be retried, then dead-lettered",
            extra={**item.log_fields(), "receive_count": item.message.receive_count},
        )


async def claim_again(
    store: IdempotencyStore, items: Sequence[InFlight], *, lease_seconds: float
) -> dict[InFlight, ClaimStatus]:
    """Claim the keys of ``items`` again, each as its own delivery, after a renewal or a
    completion was refused: our record is gone (it expired while the loop was blocked or the
    store was down, or Redis restarted empty). ACQUIRED: the key is ours again (``held`` has the
    new token) and nobody ran the work meanwhile; anything else: someone else holds it, or
    recorded it done. One round trip; StoreUnavailableError as the store raises it."""
    asking = [item for item in items if item.request is not None]
    if not asking:
        return {}
    requests = [item.request for item in asking if item.request is not None]
    results = await store.claim_many(
        requests,
        owner=requests[0].owner or "",
        lease_seconds=lease_seconds,
    )
    answers: dict[InFlight, ClaimStatus] = {}
    for item, request, result in zip(asking, requests, results, strict=True):
        answers[item] = result.status
        if result.status is ClaimStatus.ACQUIRED and result.token is not None:
            if item.held is None or item.held.token != result.token:
                logger.info(
                    "claim ran out while the worker could not renew it, and nobody took the "
                    "key: claimed again",
                    extra={**item.log_fields(), "fencing_token": result.token},
                )
            item.held = Held(request.key, result.token)
    return answers


def note_malformed(stats: ConsumerStats, item: InFlight, exc: BaseException) -> None:
    """Count and log a message that cannot be read (its key here, its body in the handler)."""
    stats.malformed += 1
    logger.warning(
        "malformed message; it will be retried, then dead-lettered",
        extra={**item.log_fields(), "receive_count": item.message.receive_count, "error": str(exc)},
    )
