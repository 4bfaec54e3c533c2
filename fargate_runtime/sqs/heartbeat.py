"""The heartbeat: visibility extended before it runs out, and the idempotency lease with it.

One task for the whole consumer looks at every held message each tick and extends, in batches
of 10, only those whose visibility runs out within ``extend_below_seconds``; most messages
finish long before and cost nothing. With the defaults (visibility 20 s, extend below 10 s)::

    t=0        receive (visibility 20 s, lease 20 s)
    t=10..11   tick: 10 s left -> ChangeMessageVisibilityBatch 20 s + renew lease 20 s
    t=20..21   tick: again ... and so on, until the handler returns
    handler returns -> untrack (waits out a beat in progress) -> complete claim -> delete

A message is never extended past 12 h from its first receive (SQS's cumulative limit): it is
logged and left to become visible again. An extension that finds the receipt handle invalid is
logged (the idempotency claim still stops a second run); a renewal that finds the lease lost is
recorded on the message: its completion is not attempted and the message is handed back rather
than deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..errors import StoreUnavailableError
from .acks import AckOutcome
from .settings import MAX_VISIBILITY_SECONDS

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..idempotency import IdempotencyStore
    from ._inflight import InFlight
    from .acks import VisibilityBuffer

__all__ = ["Heartbeat"]

logger = logging.getLogger("fargate_runtime.sqs.heartbeat")

# Stop this far short of SQS's 12 h limit: the limit counts from SQS's own clock.
_CAP_SAFETY_SECONDS = 10.0


class Heartbeat:
    """Extends the visibility (and idempotency lease) of held messages before it runs out."""

    def __init__(
        self,
        visibility: VisibilityBuffer,
        *,
        store: IdempotencyStore | None,
        visibility_timeout_seconds: int,
        extend_below_seconds: float,
        tick_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._visibility = visibility
        self._store = store
        self._timeout = visibility_timeout_seconds
        self._below = extend_below_seconds
        self._tick = tick_seconds
        self._clock = clock
        self._wall = wall_clock
        self._tracked: dict[str, InFlight] = {}
        # Held while a beat is talking to SQS/Redis: untrack() waits it out, so no extension
        # lands after the delete (it would fail, or worse, resurrect nothing useful).
        self._lock = asyncio.Lock()
        self.extensions = 0
        self.renewals = 0

    def track(self, item: InFlight) -> None:
        """Start watching a message (at receive)."""
        self._tracked[item.message_id] = item

    async def untrack(self, item: InFlight) -> None:
        """Stop watching a message; returns once no extension of it can still be on its way."""
        if item.message_id not in self._tracked:
            return
        if self._lock.locked():
            async with self._lock:
                self._tracked.pop(item.message_id, None)
        else:
            self._tracked.pop(item.message_id, None)

    def forget(self, item: InFlight) -> None:
        """Stop watching at once (cleanup paths that cannot wait)."""
        self._tracked.pop(item.message_id, None)

    async def run(self) -> None:
        """Beat every ``tick_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.beat()
            except Exception:
                # A failed beat is retried at the next tick, while visibility still has time.
                logger.exception("heartbeat failed")

    async def beat(self) -> None:
        """Extend what runs out soon, once."""
        now = self._clock()
        due = [item for item in self._tracked.values() if item.visible_until - now <= self._below]
        if not due:
            return
        async with self._lock:
            extend: list[tuple[InFlight, int]] = []
            # Re-read under the lock: a message untracked meanwhile must not be extended.
            for item in (i for i in due if i.message_id in self._tracked):
                seconds = self._extension_for(item, now)
                if seconds is not None:
                    extend.append((item, seconds))
            if not extend:
                return
            visibility = self._visibility.change_now(
                [(item.message_id, item.message.receipt_handle, s) for item, s in extend],
                log_fields={item.message_id: item.log_fields for item, _ in extend},
            )
            outcomes, _ = await asyncio.gather(visibility, self._renew([i for i, _ in extend]))
            for (item, seconds), outcome in zip(extend, outcomes, strict=True):
                if outcome is AckOutcome.DONE:
                    item.visible_until = now + seconds
                    self.extensions += 1
                elif outcome is AckOutcome.GONE:
                    # The handle is stale: SQS gave the message to someone else (or it went).
                    # Our claim still stops a second run; our delete will simply find it gone.
                    self._tracked.pop(item.message_id, None)
                    logger.warning(
                        "visibility lost while handling",
                        extra=item.log_fields(),
                    )

    def _extension_for(self, item: InFlight, now: float) -> int | None:
        """Seconds to extend to, or None when the 12 h cap leaves nothing to add."""
        elapsed = self._wall() - item.first_received_epoch
        room = MAX_VISIBILITY_SECONDS - elapsed - _CAP_SAFETY_SECONDS
        seconds = int(min(self._timeout, room))
        if seconds <= item.visible_until - now:
            if not item.capped:
                item.capped = True
                logger.warning(
                    "message reached the 12 h visibility limit; it will become visible again",
                    extra={**item.log_fields(), "held_seconds": round(elapsed)},
                )
            return None
        return seconds

    async def _renew(self, items: list[InFlight]) -> None:
        """Renew the idempotency leases of ``items`` to the visibility timeout."""
        if self._store is None:
            return
        renewing = [item for item in items if item.held is not None and not item.lease_lost]
        if not renewing:
            return
        held = [item.held for item in renewing if item.held is not None]
        try:
            results = await self._store.renew_many(held, lease_seconds=self._timeout)
        except StoreUnavailableError as exc:
            # The lease still has as long as the visibility did: try again next tick.
            logger.warning("lease renewal failed; retrying next tick", extra={"error": str(exc)})
            return
        for item, ok in zip(renewing, results, strict=True):
            if ok:
                self.renewals += 1
            else:
                item.lease_lost = True
                logger.warning(
                    "idempotency lease lost while handling",
                    extra={**item.log_fields(), "key": item.key},
                )

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Cancel the heartbeat task and wait for it."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
