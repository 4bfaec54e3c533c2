"""The messages a consumer holds and the ways one leaves: deleted, backed off, released, sent
again (``_handback`` decides which for what is not deleted).

Every held message occupies one concurrency slot from its receive until it leaves; the slot is
given back the moment its delete or visibility change is queued. Its span (telemetry on) lives
exactly as long: started here at the receive, ended here when it leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from ..errors import StoreUnavailableError
from ..telemetry import Disposition, ErrorType, tracing_enabled
from ..telemetry._core import error_type_of
from ..telemetry._instruments import ConsumerCounts, ConsumerMetrics
from ..telemetry._messages import MessageSpans, end_message_span
from ._handback import Handback
from ._inflight import InFlight, MessageState
from ._receiver import Slots
from .acks import DeleteBuffer, VisibilityBuffer
from .backoff import Backoff
from .events import Events, MessageOutcome
from .heartbeat import Heartbeat
from .message import Message

if TYPE_CHECKING:
    from collections.abc import Callable

    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from ..idempotency import IdempotencyStore
    from ..lifecycle import Lifecycle
    from .settings import SqsSettings

__all__ = ["ConsumerStats", "Holdings"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")


@dataclasses.dataclass(slots=True)
class ConsumerStats:
    """Counters of one consumer run; logged as one line when the consumer stops."""

    receives: int = 0
    empty_receives: int = 0
    received: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    malformed: int = 0
    duplicates_completed: int = 0  # key already completed: deleted without running
    duplicates_in_progress: int = 0  # key held by another worker: backed off, not run
    payload_mismatches: int = 0
    store_errors: int = 0  # claims the store failed: held until it answered (fail closed)
    store_outages: int = 0  # times intake paused because the store did not answer
    completion_retries: int = 0  # completions retried after a store error (not abandoned)
    lease_lost: int = 0  # a renewal or completion refused: someone else holds the key
    redelivered_while_held: int = 0  # same message received again: latest receipt handle kept
    # Made visible again at once during shutdown: unstarted ones, what a late receive brought,
    # and the cancelled stragglers (also counted in cancelled_at_deadline).
    released_on_shutdown: int = 0
    cancelled_at_deadline: int = 0  # still running at the drain deadline: cancelled, released
    released_after_group_failure: int = 0  # FIFO: rest of a group whose head could not go on
    retried_in_process: int = 0  # FIFO: failures retried while the group was held
    # Sent again instead of handed back: near maxReceiveCount for reasons other than failures.
    requeued: int = 0
    dead_lettered: int = 0  # moved to the DLQ by the runtime: failed maxReceiveCount times
    visibility_lapsed: int = 0  # the heartbeat came too late (a blocked loop): maybe redelivered
    abandoned_receives: int = 0
    # Upper bound: messages the abandoned receives could have taken (MaxNumberOfMessages).
    hidden_by_abandoned_receive: int = 0
    deleted: int = 0
    delete_calls: int = 0
    visibility_calls: int = 0
    heartbeat_extensions: int = 0
    lease_renewals: int = 0
    completion_round_trips: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and the drill)."""
        return dataclasses.asdict(self)


class Holdings:
    """Held messages by id, their slots, their heartbeat, and the buffered calls that end them."""

    def __init__(
        self,
        client: SQSClient,
        *,
        settings: SqsSettings,
        store: IdempotencyStore | None,
        events: Events | None = None,
        backoff: Backoff | None = None,
        on_store_error: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.settings = settings
        self.events = events or Events(None, queue_name=settings.queue_name)
        self.stats = ConsumerStats()
        self.slots = Slots(settings.concurrency)
        self.deletes = DeleteBuffer(
            client,
            queue_url=settings.queue_url,
            flush_interval_seconds=settings.flush_interval_seconds,
            attempts=settings.ack_attempts,
        )
        self.visibility = VisibilityBuffer(
            client,
            queue_url=settings.queue_url,
            flush_interval_seconds=settings.flush_interval_seconds,
            attempts=settings.ack_attempts,
        )
        self.heartbeat = Heartbeat(
            self.visibility,
            store=store,
            visibility_timeout_seconds=settings.visibility_timeout_seconds,
            extend_below_seconds=settings.heartbeat_after_seconds,
            tick_seconds=settings.heartbeat_tick_seconds,
            on_store_error=on_store_error,
        )
        self.handback = Handback(
            self,
            client=client,
            backoff=backoff
            or Backoff(
                base_seconds=settings.backoff_base_seconds, cap_seconds=settings.backoff_cap_seconds
            ),
        )
        self._on_store_error = on_store_error
        # Handlers running now (kept here for the in-flight gauge, read from another thread).
        self.running = 0
        self.metrics = ConsumerMetrics(queue_name=settings.queue_name, counts=self)
        self.spans = MessageSpans(queue_name=settings.queue_name)
        self._store = store
        self._held: dict[str, InFlight] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __bool__(self) -> bool:
        return bool(self._held)

    def items(self) -> list[InFlight]:
        """Everything held, in receive order."""
        return list(self._held.values())

    def snapshot(self) -> list[InFlight]:
        """``items()`` from another thread: retried if the loop changes the dict meanwhile."""
        for _ in range(100):
            try:
                return list(self._held.values())
            except RuntimeError:  # dictionary changed size during iteration
                continue
        return []

    def counts(self) -> ConsumerCounts:
        """The counts the consumer's metrics report (plain reads: another thread calls this)."""
        stats = self.stats
        return ConsumerCounts(
            received=stats.received,
            succeeded=stats.succeeded,
            failed=stats.failed,
            duplicates=stats.duplicates_completed + stats.duplicates_in_progress,
            released_on_shutdown=stats.released_on_shutdown,
            in_flight=self.running,
        )

    def accept(self, raw: list[MessageTypeDef], sent_at: float) -> list[InFlight]:
        """Track what a receive brought; return the messages not already held."""
        visibility = self.settings.visibility_timeout_seconds
        # Asked once per receive: with telemetry off a message costs no span work at all.
        spans = self.spans if tracing_enabled() else None
        fresh: list[InFlight] = []
        for entry in raw:
            message = Message.from_response(entry)
            self.stats.received += 1
            held = self._held.get(message.message_id)
            if held is not None:
                # SQS handed it out again (visibility ran out, or a standard-queue duplicate):
                # keep the one copy running, with the newest receipt handle.
                held.message.receipt_handle = message.receipt_handle
                held.visible_until = sent_at + visibility
                self.stats.redelivered_while_held += 1
                if held.span is not None:
                    held.span.add_event("redelivered while held")
                self.slots.give(1)
                continue
            item = InFlight.received(message, sent_at=sent_at, visibility_seconds=visibility)
            if spans is not None:
                traceparent = message.attributes.get("traceparent")
                item.span = spans.start(
                    message_id=message.message_id,
                    traceparent=traceparent if isinstance(traceparent, str) else None,
                    aws_trace_header=message.trace_header,
                )
            self._held[message.message_id] = item
            self.heartbeat.track(item)
            fresh.append(item)
            self.events.received(message)
        return fresh

    def delete(
        self,
        item: InFlight,
        *,
        outcome: MessageOutcome,
        disposition: Disposition = Disposition.DELETED,
    ) -> None:
        """Queue the delete of a finished message (or one sent again) and free its slot."""
        item.state = MessageState.DONE
        self.heartbeat.forget(item)
        self.deletes.delete(
            item.message_id, receipt_handle=item.message.receipt_handle, log_fields=item.log_fields
        )
        self._forget(item, outcome, disposition)

    def requeued(self, item: InFlight, outcome: MessageOutcome) -> None:
        """A copy of ``item`` was sent in its place: delete the original."""
        self.stats.requeued += 1
        logger.info(
            "message re-queued as a copy: near maxReceiveCount, not for its own failures",
            extra={**item.log_fields(), "receive_count": item.message.receive_count},
        )
        self.delete(item, outcome=outcome, disposition=Disposition.REQUEUED)

    def dead_lettered(self, item: InFlight) -> None:
        """``item`` was sent to the DLQ by the runtime: delete the original."""
        self.stats.dead_lettered += 1
        self.delete(
            item, outcome=MessageOutcome.DEAD_LETTERED, disposition=Disposition.DEAD_LETTERED
        )

    def back_off(self, item: InFlight, *, seconds: int, outcome: MessageOutcome) -> None:
        """Make a message visible again in ``seconds`` (queued) and free its slot."""
        item.state = MessageState.RELEASED
        self.heartbeat.forget(item)
        self.visibility.change(
            item.message_id,
            receipt_handle=item.message.receipt_handle,
            timeout_seconds=seconds,
            log_fields=item.log_fields,
        )
        self._forget(item, outcome, Disposition.BACKED_OFF)

    async def release_claims(self, items: list[InFlight]) -> None:
        """Delete the claims of ``items`` still ours, so a retry can claim the key at once."""
        held = [item.held for item in items if item.held is not None]
        for item in items:
            item.held = None
        if not held or self._store is None:
            return
        try:
            await self._store.release_many(held)
        except Exception as exc:  # noqa: BLE001 - any store failure: the lease expires anyway
            if isinstance(exc, StoreUnavailableError):
                self._on_store_error(exc)
            logger.warning(
                "claims not released; they expire with their lease",
                extra={"count": len(held), "error": repr(exc)},
            )

    async def release(self, items: list[InFlight], *, outcome: MessageOutcome) -> None:
        """Make ``items`` visible at once (claims already released: ``Handback`` does that)."""
        for item in items:
            item.state = MessageState.RELEASED
            self.heartbeat.forget(item)
        if not items:
            return
        await self.visibility.change_now(
            [(item.message_id, item.message.receipt_handle, 0) for item in items],
            log_fields={item.message_id: item.log_fields for item in items},
        )
        for item in items:
            self._forget(item, outcome, Disposition.RELEASED)

    async def release_on_shutdown(self, items: list[InFlight]) -> None:
        """Release messages that will not run because the process is stopping; count them."""
        started = [item for item in items if item.state is not MessageState.RECEIVED]
        for item in started:
            item.fail(ErrorType.DRAIN_DEADLINE)  # cut while running (or settling)
        await self.handback.released(items, outcome=MessageOutcome.SHUTDOWN)
        self.stats.released_on_shutdown += len(items)
        self.stats.cancelled_at_deadline += len(started)

    async def settle_leftovers(self) -> None:
        """At the very end: delete what finished, release everything else at once.

        A message whose handler succeeded is deleted even when its completion could not be
        recorded (the store was down until now: the work is done, and running it again is what
        the record was for); one whose lease was lost is handed back. A message whose handler
        may still run (it ignored its cancellation, or its work goes on in a thread) stays
        held: handing it back now would let another worker run it at the same time. The final
        release gives it back once the process is about to end.
        """
        release: list[InFlight] = []
        kept: list[InFlight] = []
        for item in self.items():
            if item.succeeded and not item.lease_lost:
                if not item.completed and item.held is not None:
                    logger.error(
                        "work done but its completion not recorded (the store did not answer): "
                        "message deleted; a later duplicate of its key could run again",
                        extra=item.log_fields(),
                    )
                self.delete(item, outcome=MessageOutcome.SUCCEEDED)
            elif item.may_still_run:
                kept.append(item)
            else:
                release.append(item)
        if release:
            logger.warning("releasing unfinished messages", extra={"count": len(release)})
            await self.release_on_shutdown(release)
        for item in kept:
            self.heartbeat.forget(item)
            logger.error(
                "handler still running after its cancellation; message held until the process ends",
                extra={"message_id": item.message_id, "in_thread": item.work.threads_running},
            )

    def record_drain(self, lifecycle: Lifecycle, ended: BaseException | None) -> None:
        """This queue's drain duration, from the shutdown request (none without one)."""
        deadlines = lifecycle.deadlines
        if deadlines is None:
            return
        error_type = None
        if isinstance(ended, asyncio.CancelledError):
            error_type = ErrorType.DRAIN_DEADLINE.value
        elif ended is not None:
            error_type = error_type_of(ended)
        self.metrics.record_drain(lifecycle.now() - deadlines.requested_at, error_type=error_type)

    async def flush(self) -> None:
        """Send every queued delete and visibility change and wait for their outcomes."""
        await asyncio.gather(self.deletes.flush(), self.visibility.flush())

    def _forget(self, item: InFlight, outcome: MessageOutcome, disposition: Disposition) -> None:
        if self._held.pop(item.message_id, None) is not None:
            self.slots.give(1)
            self.events.ended(item.message, outcome)
            if item.span is not None:
                end_message_span(item.span, disposition)
