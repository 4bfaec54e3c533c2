"""Every way a held message goes back unfinished, and what each costs it toward the DLQ.

SQS dead-letters a message on the receive after its ``maxReceiveCount``-th, whatever ended those
deliveries. The runtime ends some of them itself (a shutdown, a key in progress elsewhere, a
lease lost, a FIFO follower behind a failed message), so it keeps count, per message id, in the
idempotency store (``CountingStore``, expiring with the queue's retention period)::

    r   deliveries the runtime handed back           (+1 at each such hand-back)
    f   failures retried in process (FIFO)           (+1 at each)

    failures so far = earlier copies' failures + deliveries not handed back by the runtime
                      (failed, or ended without a word: a killed worker) + f

A delivery that ends without a word counts as a failure: a poison message that kills its
worker still reaches the DLQ. On a standard queue, with ``n`` the receive count:

    handed back by the runtime, n >= maxReceiveCount     a copy (failures carried), original
                                                         deleted: the next receive would
                                                         dead-letter it for nothing
    failed, failures >= maxReceiveCount, n < max        moved to the DLQ by the runtime
    failed, failures < maxReceiveCount, n >= max         a copy, delayed by the backoff
    otherwise                                            visible again after the delay

On a FIFO queue nothing is copied (a copy would go behind the rest of its group): failures are
retried in process while the group is held (``_groups``), so only shutdowns hand FIFO messages
back. Without a redrive policy nothing of this applies; without a counting store ``r`` and
``f`` are taken as 0 (runtime hand-backs then count as failures, as SQS counts them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..errors import StoreUnavailableError
from ..idempotency import CountChange, CountingStore
from ._inflight import MessageState
from ._queue import QueueFacts
from ._requeue import Requeue
from .events import MessageOutcome

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from types_aiobotocore_sqs import SQSClient

    from ._holdings import Holdings
    from ._inflight import InFlight
    from .backoff import Backoff

__all__ = ["DeliveryCounters", "Handback", "failures_so_far"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

RELEASES, FAILURES = "r", "f"


def failures_so_far(item: InFlight, counts: Mapping[str, int], *, delivery_open: bool) -> int:
    """The message's failures (see the module docstring); ``counts`` are its ``r`` and ``f``
    after this delivery's own increment. ``delivery_open``: this delivery has not ended (a
    FIFO retry in process), so it is not counted as a failed delivery."""
    message = item.message
    ended = message.receive_count - (1 if delivery_open else 0)
    in_process = max(counts.get(FAILURES, 0), item.failures_in_process)
    return message.earlier_failures + max(0, ended - counts.get(RELEASES, 0)) + in_process


class DeliveryCounters:
    """``r`` and ``f`` of each message, in a ``CountingStore``; advisory: a store that fails
    answers nothing (logged, reported) and the message is judged as SQS would judge it."""

    @classmethod
    def of(
        cls,
        store: object,
        *,
        key: Callable[[str], str],
        on_store_error: Callable[[BaseException], None],
        available: Callable[[], bool] = lambda: True,
    ) -> DeliveryCounters | None:
        """Counters in ``store`` when it keeps them (the Redis and memory stores do)."""
        if not isinstance(store, CountingStore):
            return None
        return cls(store, key=key, on_store_error=on_store_error, available=available)

    def __init__(
        self,
        store: CountingStore,
        *,
        key: Callable[[str], str],
        on_store_error: Callable[[BaseException], None],
        available: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._key = key
        self._on_store_error = on_store_error
        self._available = available

    async def add(
        self, items: Sequence[InFlight], field: str, amount: int, *, ttl_seconds: float
    ) -> list[dict[str, int]]:
        """Add ``amount`` to ``field`` of each message (0: read); their counters after it, kept
        ``ttl_seconds`` (the queue's retention: as long as the message can come back). Nothing
        while the store is known to be down: a hand-back must not wait for it."""
        if not items or not self._available():
            return [{} for _ in items]
        changes = [CountChange(self._key(item.message_id), field, amount) for item in items]
        try:
            return await self._store.count_many(changes, ttl_seconds=ttl_seconds)
        except StoreUnavailableError as exc:
            self._on_store_error(exc)
            logger.warning(
                "delivery counts not kept: the store failed",
                extra={"count": len(items), "error": str(exc)},
            )
            return [{} for _ in items]


class Handback:
    """Hands messages back to SQS as the module docstring says; used by the Runner and Holdings."""

    def __init__(
        self,
        holdings: Holdings,
        *,
        client: SQSClient,
        backoff: Backoff,
        counters: DeliveryCounters | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._holdings = holdings
        self._settings = holdings.settings
        self._backoff = backoff
        self.counters = counters
        self.queue = QueueFacts.assumed(holdings.settings)
        self._requeue = Requeue(client, queue_url=holdings.settings.queue_url)
        self._wall = wall_clock

    def _at_last_receive(self, item: InFlight) -> bool:
        most = self.queue.max_receive_count
        return most is not None and item.message.receive_count >= most

    def horizon_seconds(self, item: InFlight) -> int:
        """The longest visibility SQS still accepts for this message (12 h from its first
        receive, on SQS's clock: a margin is kept)."""
        return max(0, int(item.visibility_room(self._wall())))

    def visibility(self, item: InFlight, seconds: float) -> int:
        """``seconds`` as a visibility SQS accepts for ``item`` (whole seconds, within its 12 h);
        a delay cut short is logged."""
        wanted = max(0, round(seconds))
        horizon = self.horizon_seconds(item)
        if wanted <= horizon:
            return wanted
        logger.warning(
            "retry delay clamped to what SQS still accepts for this message (12 h from its "
            "first receive)",
            extra={**item.log_fields(), "delay_seconds": wanted, "clamped_to_seconds": horizon},
        )
        return horizon

    def backoff_seconds(self, item: InFlight, failures: int | None = None) -> int:
        """The backoff after ``failures`` (default: the receive count, as earlier copies add)."""
        count = failures or item.message.receive_count + item.message.earlier_failures
        return self._backoff.delay_seconds(count)

    # -- failures --------------------------------------------------------------------------

    async def failed(self, items: Sequence[InFlight], delays: Mapping[str, float | None]) -> None:
        """Failed deliveries on a standard queue: claims released first, then back off, or copy
        or dead-letter as the module docstring says. ``delays``: a Retry's, None: the backoff."""
        if not items:
            return
        for item in items:
            item.state = MessageState.RELEASED
            self._holdings.heartbeat.forget(item)
        await self._holdings.release_claims(list(items))
        # Only a retried message has earlier deliveries worth reading counters for.
        retried = [i for i in items if i.message.receive_count > 1 or i.message.earlier_failures]
        read = dict(zip(retried, await self._counts(retried, RELEASES, 0), strict=True))
        counts = [read.get(item, {}) for item in items]
        most = self.queue.max_receive_count
        for item, count in zip(items, counts, strict=True):
            failures = failures_so_far(item, count, delivery_open=False)
            asked = delays.get(item.message_id)
            seconds = self.backoff_seconds(item, failures) if asked is None else asked
            if most is not None and failures >= most and not self._at_last_receive(item):
                if await self._dead_letter(item, failures):
                    continue
            elif most is not None and failures < most and self._at_last_receive(item):
                copied = await self._requeue.copy(
                    item, failures=failures, delay_seconds=round(seconds)
                )
                if copied:
                    self._holdings.requeued(item, MessageOutcome.FAILED)
                    continue
            self._holdings.back_off(
                item, seconds=self.visibility(item, seconds), outcome=MessageOutcome.FAILED
            )

    async def failed_in_process(self, item: InFlight) -> int:
        """A FIFO failure retried in process: count it (``f``); return the failures so far."""
        item.failures_in_process += 1
        (count,) = await self._counts([item], FAILURES, 1)
        return failures_so_far(item, count, delivery_open=True)

    async def dead_letter(self, item: InFlight, failures: int) -> bool:
        """Move a message that failed maxReceiveCount times to the DLQ now (its claim released
        first, so a redrive runs it); False when that is not possible (no DLQ, send refused)."""
        await self._holdings.release_claims([item])
        return await self._dead_letter(item, failures)

    async def _dead_letter(self, item: InFlight, failures: int) -> bool:
        target = self.queue.dead_letter_url
        if target is None:
            return False
        if not await self._requeue.dead_letter(item, dead_letter_url=target, failures=failures):
            return False
        logger.warning(
            "message failed maxReceiveCount times: moved to the dead-letter queue",
            extra={**item.log_fields(), "failures": failures},
        )
        self._holdings.dead_lettered(item)
        return True

    # -- the runtime's own hand-backs -------------------------------------------------------

    async def deferred(self, items: Sequence[InFlight], *, seconds: float) -> None:
        """Not run now (key in progress elsewhere, lease lost): visible again after ``seconds``."""
        await self._runtime(items, MessageOutcome.DEFERRED, seconds=seconds)

    async def released(self, items: Sequence[InFlight], *, outcome: MessageOutcome) -> None:
        """Visible again at once (shutdown, FIFO group failed), claims released first."""
        await self._runtime(items, outcome, seconds=0)

    async def _runtime(
        self, items: Sequence[InFlight], outcome: MessageOutcome, *, seconds: float
    ) -> None:
        if not items:
            return
        for item in items:
            item.state = MessageState.RELEASED
            self._holdings.heartbeat.forget(item)
        # Claims first (when the message shows up again its key must be free); counted at once.
        counting = asyncio.ensure_future(self._counts(items, RELEASES, 1))
        await self._holdings.release_claims(list(items))
        last = [item for item in items if self._at_last_receive(item)]
        counts = await counting
        copied: set[str] = set()
        if last and not self.queue.fifo:
            for item, count in zip(items, counts, strict=True):
                if item in last:
                    # Counters unknown (no store, or it failed): this delivery at least was ours.
                    failures = failures_so_far(item, count or {RELEASES: 1}, delivery_open=False)
                    if await self._requeue.copy(
                        item, failures=failures, delay_seconds=round(seconds)
                    ):
                        self._holdings.requeued(item, outcome)
                        copied.add(item.message_id)
        elif last:
            logger.warning(
                "FIFO messages at their last receive handed back: their next receive moves "
                "them to the dead-letter queue (a copy would lose their place in the group)",
                extra={"message_ids": [item.message_id for item in last]},
            )
        rest = [item for item in items if item.message_id not in copied]
        if seconds <= 0:
            await self._holdings.release(rest, outcome=outcome)
        else:
            for item in rest:
                self._holdings.back_off(
                    item, seconds=self.visibility(item, seconds), outcome=outcome
                )

    async def _counts(
        self, items: Sequence[InFlight], field: str, amount: int
    ) -> list[dict[str, int]]:
        if self.counters is None or self.queue.max_receive_count is None:
            return [{} for _ in items]
        return await self.counters.add(
            items, field, amount, ttl_seconds=self.queue.retention_seconds
        )
