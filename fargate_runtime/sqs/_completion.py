"""Completions: batched, and retried until recorded, so finished work never runs again.

One ``complete_many`` round trip completes up to 10 handled messages (a busy queue costs about
0.2 store round trips per message). A completion that fails because the store does not answer
is retried, not abandoned (the script is idempotent: a repeat with the same token answers True
again), while the message stays held and its visibility extended::

    handler returns
      complete(token) --ok--> delete
        | store error: the outage begins (intake paused); retry after 0.1, 0.2 ... 2 s, or at
        |              once when the store answers again
        | refused: our record is gone (it ran out while the store was down or the loop
        |              blocked, or Redis restarted empty) or someone else's: the key is
        |              claimed again as this delivery; free, it is ours again and completed;
        |              COMPLETED: someone recorded it (delete); IN_PROGRESS: someone else holds
        |              it: the lease is lost, the message handed back, not deleted
      shutdown, store still down at the drain deadline: not recorded; the message is deleted
      anyway (the work is done; only a later duplicate could run it again)
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING

from ..errors import StoreUnavailableError
from ..idempotency import ClaimStatus, Completion
from ._claiming import claim_again
from ._outage import first_of
from .settings import MAX_BATCH

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..idempotency import Held, IdempotencyStore
    from ..lifecycle import Lifecycle
    from ._holdings import ConsumerStats
    from ._inflight import InFlight
    from ._outage import StoreOutage

__all__ = ["Completer", "Completions", "Recorded"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

_RETRY_FIRST_SECONDS = 0.1
_RETRY_CAP_SECONDS = 2.0
# A refusal answered by taking the key again, this many times at most (each is a blocked loop
# or a store outage that outlasted the lease; a loop of them is no progress).
_MOST_TAKEN_AGAIN = 3


class Recorded(enum.Enum):
    """How a finished message's completion ended."""

    RECORDED = "recorded"  # on record (ours, or someone's): delete the message
    LOST = "lost"  # someone else holds the key: hand the message back, do not delete
    UNRECORDED = "unrecorded"  # the store did not answer before the drain deadline (or failed)


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
        # Awaited through asyncio.shield, which reads an exception nobody awaits any more.
        future: asyncio.Future[bool] = loop.create_future()
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
        except Exception as exc:  # noqa: BLE001 - each waiter judges it (record, final release)
            # An outage, or a store's bug: either way nothing was refused. (Read as a refusal,
            # a bug once made finished work look lost and run again.)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
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
        store: IdempotencyStore,
        *,
        retention_seconds: float,
        interval_seconds: float,
        others_running: Callable[[], bool],
        outage: StoreOutage,
        lifecycle: Lifecycle,
        stats: ConsumerStats,
        lease_seconds: float,
    ) -> None:
        self.completer = Completer(
            store,
            retention_seconds=retention_seconds,
            interval_seconds=interval_seconds,
            others_running=others_running,
        )
        self._store = store
        self._outage = outage
        self._lifecycle = lifecycle
        self._stats = stats
        self._lease = lease_seconds

    async def record(self, item: InFlight) -> Recorded:
        """Complete ``item``'s claim, retrying what the store failed (see the module docstring)."""
        done = item.completion
        if done is not None and done.done() and not done.cancelled() and done.result():
            return Recorded.RECORDED  # the handler's own transaction committed it (PostgreSQL)
        delay = _RETRY_FIRST_SECONDS
        taken_again = 0
        while item.held is not None:
            held = item.held
            item.completion = self.completer.complete(held)
            try:
                # Shielded: if the handler's task is cancelled now, the answer is still read
                # by the final release (``InFlight.completed``).
                recorded = await asyncio.shield(item.completion)
                self._outage.answered()
                if recorded:
                    return Recorded.RECORDED
                if item.held != held:
                    continue  # the heartbeat took the key again meanwhile: complete that claim
                if taken_again >= _MOST_TAKEN_AGAIN:
                    return Recorded.LOST
                # Refused: our record is gone (it expired while we could not renew it) or
                # someone else's. Take it again if it is free; never complete someone else's.
                taken_again += 1
                status = (await claim_again(self._store, [item], lease_seconds=self._lease))[item]
                if status is ClaimStatus.COMPLETED:
                    return Recorded.RECORDED
                if status is not ClaimStatus.ACQUIRED:
                    return Recorded.LOST
            except StoreUnavailableError as exc:
                self._outage.failed(exc)
                self._stats.completion_retries += 1
                if self._lifecycle.drain_seconds_left() <= delay + _RETRY_CAP_SECONDS:
                    return Recorded.UNRECORDED
                await first_of(asyncio.sleep(delay), self._outage.wait_available())
                delay = min(_RETRY_CAP_SECONDS, delay * 2)
            except Exception:
                # Not an outage (a store's bug): the work is done all the same.
                logger.exception("completion failed", extra=item.log_fields())
                return Recorded.UNRECORDED
        return Recorded.LOST
