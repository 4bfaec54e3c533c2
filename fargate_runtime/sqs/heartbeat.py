"""The heartbeat: visibility extended before it runs out, and the idempotency lease with it.

One task for the whole consumer looks at every held message each tick and extends only those
whose visibility runs out within ``extend_below_seconds``; most messages finish long before and
cost nothing. Each round costs one ``renew_many`` round trip for their leases and one
``ChangeMessageVisibilityBatch`` per 10 of them. With the defaults (visibility 10 s, extend
below 5 s)::

    t=0        receive (visibility 10 s, lease 10 s)
    t=5..6     tick: 5 s left -> renew the lease 10 s, then ChangeMessageVisibilityBatch 10 s
    t=10..11   tick: again ... and so on, until the handler returns and its completion is
               recorded (completions retried during a store outage keep being extended)
    recorded -> untrack (waits out a beat in progress) -> delete

Leases are renewed first, and only messages whose lease is still ours are extended. A renewal
refused means our record is gone: if nobody took the key (it ran out while the loop was
blocked), it is claimed again as the same delivery and stays ours; if someone else holds it,
the message is lost: the heartbeat lets go of it and the worker will not complete or delete it
(if someone recorded it done, the heartbeat lets go of it too, and its completion finds that).
A renewal the store fails (an outage) is no refusal: the message is extended and the outage
reported. A message whose visibility ran out before its beat (a loop blocked longer than the
margin) is logged: SQS may have handed it to someone else, which the lease decides. A message
is never extended past 12 h from its first receive (SQS's cumulative limit): it is logged and
left to become visible again. An extension that finds the receipt handle invalid is logged (the
idempotency claim still stops a second run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..errors import StoreUnavailableError
from ..idempotency import ClaimStatus
from ._claiming import claim_again
from .acks import AckOutcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..idempotency import IdempotencyStore
    from ._inflight import InFlight
    from .acks import VisibilityBuffer

__all__ = ["Heartbeat"]

logger = logging.getLogger("fargate_runtime.sqs.heartbeat")


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
        on_store_error: Callable[[BaseException], None] = lambda exc: None,
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
        self._on_store_error = on_store_error
        self.extensions = 0
        self.renewals = 0
        self.lost = 0
        self.lapsed = 0

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
        """Renew the leases and extend the visibility of what runs out soon, once."""
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
            for item, _ in extend:
                if item.visible_until <= now:
                    self._lapsed(item, now)
            await self._renew([item for item, _ in extend])
            extend = [(item, seconds) for item, seconds in extend if not item.lease_lost]
            if not extend:
                return
            outcomes = await self._visibility.change_now(
                [(item.message_id, item.message.receipt_handle, s) for item, s in extend],
                log_fields={item.message_id: item.log_fields for item, _ in extend},
            )
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

    def _lapsed(self, item: InFlight, now: float) -> None:
        self.lapsed += 1
        logger.warning(
            "visibility ran out before the heartbeat could extend it (was the event loop "
            "blocked?): SQS may have handed the message to another worker",
            extra={**item.log_fields(), "late_seconds": round(now - item.visible_until, 3)},
        )

    def _extension_for(self, item: InFlight, now: float) -> int | None:
        """Seconds to extend to, or None when the 12 h cap leaves nothing to add."""
        wall_now = self._wall()
        seconds = int(min(self._timeout, item.visibility_room(wall_now)))
        if seconds <= item.visible_until - now:
            if not item.capped:
                item.capped = True
                logger.warning(
                    "message reached the 12 h visibility limit; it will become visible again",
                    extra={
                        **item.log_fields(),
                        "held_seconds": round(wall_now - item.first_received_epoch),
                    },
                )
            return None
        return seconds

    async def _renew(self, items: list[InFlight]) -> None:
        """Renew the idempotency leases of ``items``; a refusal marks the message lost."""
        if self._store is None:
            return
        renewing = [item for item in items if item.held is not None and not item.lease_lost]
        if not renewing:
            return
        held = [item.held for item in renewing if item.held is not None]
        try:
            results = await self._store.renew_many(held, lease_seconds=self._timeout)
        except StoreUnavailableError as exc:
            # Not a refusal: the lease is as old as the visibility; keep both alive meanwhile.
            self._on_store_error(exc)
            logger.warning("lease renewal failed; retrying next tick", extra={"error": str(exc)})
            return
        refused = []
        for item, ok in zip(renewing, results, strict=True):
            if ok:
                self.renewals += 1
            elif not item.lease_lost:  # else its completion was refused meanwhile: done there
                refused.append(item)
        if not refused:
            return
        # Our record is gone (it ran out while the loop was blocked) or someone else's: a key
        # nobody took is ours again; one someone holds, or recorded done, is lost.
        try:
            answers = await claim_again(self._store, refused, lease_seconds=self._timeout)
        except StoreUnavailableError as exc:
            self._on_store_error(exc)
            return  # cannot tell now: asked again next tick
        for item in refused:
            status = answers.get(item)
            if status is ClaimStatus.ACQUIRED:
                self.renewals += 1
                continue
            self._tracked.pop(item.message_id, None)  # no further extension of it
            if status is ClaimStatus.COMPLETED:
                continue  # recorded done by someone: its completion will find that, and delete
            item.lease_lost = True
            self.lost += 1
            logger.warning(
                "idempotency lease lost while handling: not extended, completed or deleted",
                extra={**item.log_fields(), "key": item.key},
            )

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Cancel the heartbeat task and wait for it."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
