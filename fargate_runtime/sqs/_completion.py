"""Completions: batched, and retried until recorded, so finished work never runs again.

One ``complete_many`` round trip completes up to 10 handled messages (a busy queue costs about
0.2 store round trips per message). A completion that fails because the store does not answer
is retried, not abandoned (the script is idempotent: a repeat with the same token answers True
again), while the message stays held and its visibility extended::

    handler returns
      complete(token) --ok--> delete
        | store error: the outage begins (intake paused); retry after 0.1, 0.2 ... 2 s, or at
        |              once when the store answers again
        | refused with no store error before: the lease was lost (someone else holds the key):
        |              not deleted, handed back (DESIGN: never complete or delete after that)
        | refused after store errors: the lease ran out during the outage, or Redis restarted
        |              empty: the key is claimed again by this delivery's owner and completed
        |              (COMPLETED: someone recorded it; IN_PROGRESS: someone holds it: lost)
      shutdown, store still down at the drain deadline: not recorded; the message is deleted
      anyway (the work is done; only a later duplicate could run it again)
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING

from ..errors import StoreUnavailableError
from ..idempotency import ClaimStatus, Completion, Held
from ._outage import first_of
from .settings import MAX_BATCH

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..idempotency import IdempotencyStore
    from ..lifecycle import Lifecycle
    from ._holdings import ConsumerStats
    from ._inflight import InFlight
    from ._outage import StoreOutage

__all__ = ["Completer", "Completions", "Recorded"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

_RETRY_FIRST_SECONDS = 0.1
_RETRY_CAP_SECONDS = 2.0


class Recorded(enum.Enum):
    """How a finished message's completion ended."""

    RECORDED = "recorded"  # on record (ours, or someone's): delete the message
    LOST = "lost"  # someone else holds the key: hand the message back, do not delete
    UNRECORDED = "unrecorded"  # the store did not answer before the drain deadline


class Completer:
    """Completes claims in batches of up to 10: one ``complete_many`` round trip per batch.

    A completion goes out with whatever else finished in the same event-loop turn (handlers of
    one receive batch that never awaited finish together); while other handlers are still
    running it waits up to ``interval_seconds`` for them to join; at 10 it goes at once. Each
    future answers True (recorded), False (refused: the lease was lost) or raises
    StoreUnavailableError.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        retention_seconds: float,
        interval_seconds: float,
        others_running: Callable[[], bool],
    ) -> None:
        self._store = store
        self._retention = retention_seconds
        self._interval = interval_seconds
        self._others_running = others_running
        self._pending: list[tuple[Completion, asyncio.Future[bool]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._soon = False
        self._sending: set[asyncio.Task[None]] = set()
        self.round_trips = 0

    def complete(self, held: Held) -> asyncio.Future[bool]:
        """Queue the completion of ``held`` (see the class docstring for the future's answer)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        # Read here, so an outcome nobody awaits any more (a cancelled handler task) is no
        # "exception never retrieved" at garbage collection.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._pending.append((Completion(held.key, held.token, b""), future))
        if len(self._pending) >= MAX_BATCH:
            self._send_pending()
        elif not self._others_running():
            if not self._soon:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer, self._soon = loop.call_soon(self._send_pending), True
        elif self._timer is None:
            self._timer = loop.call_later(self._interval, self._send_pending)
        return future

    def _send_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._soon = None, False
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            task = asyncio.create_task(self._send(batch), name="idempotency-complete")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Completion, asyncio.Future[bool]]]) -> None:
        self.round_trips += 1
        try:
            results = await self._store.complete_many(
                [completion for completion, _ in batch], retention_seconds=self._retention
            )
        except StoreUnavailableError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception:
            logger.exception("claims not completed")
            results = [False] * len(batch)
        for (_, future), ok in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(ok)

    async def flush(self) -> None:
        """Send what waits and wait for every completion on its way."""
        self._send_pending()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


class Completions:
    """Records finished messages' completions as the module docstring draws it."""

    def __init__(
        self,
        completer: Completer,
        *,
        store: IdempotencyStore,
        outage: StoreOutage,
        lifecycle: Lifecycle,
        stats: ConsumerStats,
        lease_seconds: float,
    ) -> None:
        self.completer = completer
        self._store = store
        self._outage = outage
        self._lifecycle = lifecycle
        self._stats = stats
        self._lease = lease_seconds

    async def record(self, item: InFlight) -> Recorded:
        """Complete ``item``'s claim, retrying what the store failed (see the module docstring)."""
        delay = _RETRY_FIRST_SECONDS
        store_failed = False
        while item.held is not None:
            item.completion = self.completer.complete(item.held)
            try:
                # Shielded: if the handler's task is cancelled now, the answer is still read
                # by the final release (``InFlight.completed``).
                if await asyncio.shield(item.completion):
                    self._outage.answered()
                    return Recorded.RECORDED
                self._outage.answered()
                if not store_failed:
                    return Recorded.LOST
                # Refused after store errors: our record expired meanwhile, or Redis restarted.
                store_failed = False  # a refusal of the claim taken again is a real loss
                claimed = await self._claim_again(item)
                if claimed is not None:
                    return claimed
            except StoreUnavailableError as exc:
                self._outage.failed(exc)
                store_failed = True
                self._stats.completion_retries += 1
                if self._lifecycle.drain_seconds_left() <= delay + _RETRY_CAP_SECONDS:
                    return Recorded.UNRECORDED
                await first_of(asyncio.sleep(delay), self._outage.wait_available())
                delay = min(_RETRY_CAP_SECONDS, delay * 2)
        return Recorded.LOST

    async def _claim_again(self, item: InFlight) -> Recorded | None:
        """Take the key again as this delivery: None when it is ours (``item.held`` updated:
        complete it next), else how the completion ends."""
        request = item.request
        if request is None or request.owner is None:
            return Recorded.LOST
        (result,) = await self._store.claim_many(
            [request], owner=request.owner, lease_seconds=self._lease
        )
        if result.status is ClaimStatus.COMPLETED:
            return Recorded.RECORDED
        if result.status is ClaimStatus.ACQUIRED and result.token is not None:
            logger.info(
                "claim expired while the store was down: claimed again to record the completion",
                extra=item.log_fields(),
            )
            item.held = Held(request.key, result.token)
            return None
        return Recorded.LOST
