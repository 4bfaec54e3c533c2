"""Running handlers over a receive batch: claims, FIFO groups, outcomes.

Each message already has its span (``Holdings.accept``); here the span learns what the claim
decided and how the handler ended, the handler runs inside it, and every line logged about the
message carries its ids (``InFlight.log_fields``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .._work import Work, running
from ..errors import IdempotencyKeyError, MalformedMessageError
from ..idempotency import ClaimRequest, ClaimStatus, FailurePolicy, Held, attempt_owner
from ..logging import bind_log_context, span_log_fields
from ..telemetry import ErrorType, IdempotencyOutcome, mark_idempotency_outcome
from ..telemetry._core import error_type_of, mark_error
from ..telemetry._messages import within
from ._inflight import InFlight, MessageState
from .backoff import Retry, clamp_visibility
from .context import BatchContext, MessageContext
from .events import MessageOutcome

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

    from opentelemetry import trace

    from ..lifecycle import Lifecycle
    from ._holdings import Holdings
    from .backoff import Backoff
    from .claims import Completer, MessageKeys
    from .context import BatchHandler, Handler

__all__ = ["Runner"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

# What each claim status means for the message's span.
_OUTCOMES = {
    ClaimStatus.ACQUIRED: IdempotencyOutcome.CLAIMED,
    ClaimStatus.COMPLETED: IdempotencyOutcome.REPLAYED,
    ClaimStatus.IN_PROGRESS: IdempotencyOutcome.IN_PROGRESS,
    ClaimStatus.MISMATCH: IdempotencyOutcome.MISMATCH,
}


class Runner:
    """Takes each receive batch from claim to settled."""

    def __init__(
        self,
        holdings: Holdings,
        *,
        lifecycle: Lifecycle,
        handler: Handler | None,
        batch_handler: BatchHandler | None,
        keys: MessageKeys | None,
        completer: Completer | None,
        backoff: Backoff,
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]],
    ) -> None:
        self._holdings = holdings
        self._spawn = spawn
        # A handler raised SystemExit or KeyboardInterrupt: the consumer drains, then raises it.
        self.stop_error: BaseException | None = None
        self._stats = holdings.stats
        self._settings = holdings.settings
        self._lifecycle = lifecycle
        self._handler = handler
        self._batch_handler = batch_handler
        self._keys = keys
        self._completer = completer
        self._backoff = backoff
        self._metrics = holdings.metrics

    def others_running(self) -> bool:
        """True while some handler is still running (its completion would join a batch)."""
        return self._holdings.running > 0

    async def process(self, items: list[InFlight]) -> None:
        """Claim, run and settle one receive batch."""
        if self._lifecycle.shutdown_requested:
            # A receive that returned after SIGTERM: give everything back at once.
            await self._holdings.release_on_shutdown(items)
            return
        if self._keys is not None:
            await self._claim(self._keys, items)
        if self._batch_handler is not None:
            if self._settings.is_fifo:
                await self._release_blocked_followers(items)
            await self._run_batch([item for item in items if item.state is MessageState.RECEIVED])
        elif self._settings.is_fifo:
            groups: dict[str | None, list[InFlight]] = {}
            for item in items:
                groups.setdefault(item.message.group_id, []).append(item)
            for group in groups.values():
                self._spawn(self._run_group(group), "sqs-group")
        else:
            # One task per message (not a gather): each is cancelled on its own, through the
            # lifecycle, so a handler's own cleanup scope holds off the cancel.
            for item in items:
                if item.state is MessageState.RECEIVED:
                    self._spawn(self._run_one(item), "sqs-handler")

    async def _claim(self, keys: MessageKeys, items: list[InFlight]) -> None:
        """One round trip claims the batch; what may not run is settled here."""
        idempotency = keys.idempotency
        keyed: list[tuple[InFlight, ClaimRequest]] = []
        for item in items:
            try:
                item.key = keys.key(item.message)
                fingerprint = keys.fingerprint(item.message)
                stored = keys.stored_key(item.key)
            except (MalformedMessageError, IdempotencyKeyError) as exc:
                self._malformed(item, exc)
                continue
            keyed.append((item, ClaimRequest(stored, fingerprint)))
        if not keyed:
            return
        started = time.perf_counter()
        try:
            results = await idempotency.store.claim_many(
                [request for _, request in keyed],
                # This receive's own attempt: a redelivery (another receive) never passes as it.
                owner=attempt_owner(idempotency.owner),
                lease_seconds=self._settings.visibility_timeout_seconds,
            )
        except Exception as exc:  # noqa: BLE001 - any store failure is logged and handled
            self._store_failed([item for item, _ in keyed], exc, idempotency.failure_policy)
            return
        self._metrics.record_store(time.perf_counter() - started)
        late: list[InFlight] = []
        for (item, request), result in zip(keyed, results, strict=True):
            if item.span is not None:
                mark_idempotency_outcome(_OUTCOMES[result.status], item.span)
            if result.status is ClaimStatus.ACQUIRED and result.token is not None:
                item.held = Held(request.key, result.token)
                if item.state is not MessageState.RECEIVED:
                    late.append(item)  # released by the drain while we were claiming
            elif item.state is not MessageState.RECEIVED:
                continue
            elif result.status is ClaimStatus.COMPLETED:
                self._stats.duplicates_completed += 1
                logger.info("duplicate of completed work deleted", extra=item.log_fields())
                self._holdings.delete(item, outcome=MessageOutcome.DUPLICATE)
            elif result.status is ClaimStatus.IN_PROGRESS:
                self._stats.duplicates_in_progress += 1
                logger.info("key in progress elsewhere; backing off", extra=item.log_fields())
                self._defer(item)
            else:
                self._mismatch(item)
        if late:
            await self._holdings.release_claims(late)

    def _store_failed(self, items: list[InFlight], exc: Exception, policy: FailurePolicy) -> None:
        """The claim round trip failed: run unclaimed (fail open), or hand everything back."""
        self._stats.store_errors += len(items)
        for item in items:
            if item.span is not None:
                mark_idempotency_outcome(IdempotencyOutcome.STORE_ERROR, item.span)
        if policy is FailurePolicy.OPEN:
            # The user chose availability over safety: run without claims (no token).
            logger.error(
                "idempotency store failed; running WITHOUT idempotency (fail-open policy)",
                extra={"count": len(items), "error": repr(exc)},
            )
            return
        # Fail closed: nothing runs without its claim; everything comes back later.
        logger.warning(
            "idempotency store failed; batch not processed, retried later",
            extra={"count": len(items), "error": repr(exc)},
        )
        for item in items:
            if item.state is MessageState.RECEIVED:
                item.fail(ErrorType.STORE_ERROR, description=repr(exc))
                self._defer(item)

    def _malformed(self, item: InFlight, exc: Exception) -> None:
        """A message that cannot be handled: back off; the redrive policy dead-letters it."""
        self._stats.malformed += 1
        item.fail(ErrorType.MALFORMED, description=str(exc))
        logger.warning(
            "malformed message; it will be retried, then dead-lettered",
            extra={
                **item.log_fields(),
                "receive_count": item.message.receive_count,
                "error": str(exc),
            },
        )
        self._back_off_failed(item)

    def _mismatch(self, item: InFlight) -> None:
        """The key was completed or claimed for another payload: never run this one."""
        self._stats.payload_mismatches += 1
        item.fail(ErrorType.PAYLOAD_MISMATCH, description="same key, different payload")
        logger.warning(
            "payload mismatch: this idempotency key was used with another payload; "
            "it will be retried, then dead-lettered",
            extra={**item.log_fields(), "receive_count": item.message.receive_count},
        )
        self._back_off_failed(item)

    def _back_off_failed(self, item: InFlight) -> None:
        self._stats.failed += 1
        self._holdings.back_off(
            item,
            seconds=self._backoff.delay_seconds(item.message.receive_count),
            outcome=MessageOutcome.FAILED,
        )

    async def _run_group(self, group: list[InFlight]) -> None:
        """FIFO: one at a time, in order; the first that does not succeed stops the group."""
        for index, item in enumerate(group):
            if item.state is MessageState.DONE:
                continue  # a completed duplicate, deleted: the next one may run
            if item.state is MessageState.RECEIVED and await self._run_one(item):
                continue
            rest = [other for other in group[index + 1 :] if other.state is MessageState.RECEIVED]
            if rest and self._lifecycle.shutdown_requested:
                await self._holdings.release_on_shutdown(rest)
            elif rest:
                await self._holdings.release(rest, outcome=MessageOutcome.GROUP_FAILED)
                self._stats.released_after_group_failure += len(rest)
            return

    async def _release_blocked_followers(self, items: list[InFlight]) -> None:
        """FIFO batch mode: behind a message that may not run, its group may not run either."""
        blocked: set[str | None] = set()
        rest: list[InFlight] = []
        for item in items:
            group = item.message.group_id
            if group in blocked and item.state is MessageState.RECEIVED:
                rest.append(item)
            elif item.state not in (MessageState.RECEIVED, MessageState.DONE):
                blocked.add(group)
        if rest:
            await self._holdings.release(rest, outcome=MessageOutcome.GROUP_FAILED)
            self._stats.released_after_group_failure += len(rest)

    def _context(self, item: InFlight) -> MessageContext:
        held = item.held
        recovery = None
        if held is not None and self._keys is not None:
            recovery = self._keys.transactional(held, lambda: _completed_in_transaction(item))
        return MessageContext(
            self._lifecycle,
            message_id=item.message_id,
            idempotency_key=item.key,
            fencing_token=held.token if held is not None else None,
            recovery=recovery,
        )

    async def _run_one(self, item: InFlight) -> bool:
        """Run the handler on one message and settle it; True when it succeeded."""
        if item.state is not MessageState.RECEIVED:
            return False
        assert self._handler is not None  # noqa: S101 - single-message mode
        item.state = MessageState.RUNNING
        item.task = asyncio.current_task()
        self._stats.started += 1
        self._holdings.running += 1
        message = item.message
        began = time.perf_counter()
        try:
            # The span first: an exception leaving the log context takes the span's ids along.
            with (
                within(item.span),
                bind_log_context(message_id=item.message_id, idempotency_key=item.key),
                running(item.work),
            ):
                await self._handler(message, self._context(item))
        except Retry as signal:
            self._handler_ended(item, began, signal)
            await self._fail(item, delay_seconds=signal.delay_seconds)
            return False
        except BaseException as exc:
            self._handler_ended(item, began, exc)
            if _being_cancelled(exc):
                raise  # cancelled at the drain deadline: the drain releases the message
            # Any other exception, CancelledError or GeneratorExit it raised itself included.
            self._log_failure(item, exc)
            await self._fail(item, delay_seconds=None)
            return False
        self._handler_ended(item, began, None)
        return await self._succeed(item)

    def _handler_ended(self, item: InFlight, began: float, error: BaseException | None) -> None:
        """Count the handler out; mark its span failed when it raised; record its duration."""
        self._holdings.running -= 1
        if error is not None:
            item.fail(self._failure_of(error), record=_unexpected(error))
        self._metrics.record_handler(
            time.perf_counter() - began, error_type=None if error is None else item.error_type
        )

    def _failure_of(self, error: BaseException) -> BaseException | ErrorType:
        """What a handler's exception means for its message: runtime-defined, or its class."""
        if isinstance(error, MalformedMessageError):
            return ErrorType.MALFORMED
        if _being_cancelled(error):
            return ErrorType.DRAIN_DEADLINE
        return error

    async def _run_batch(self, items: list[InFlight]) -> None:
        """Run the batch handler once on every runnable message of the receive."""
        if not items:
            return
        assert self._batch_handler is not None  # noqa: S101 - batch mode
        task = asyncio.current_task()
        work = Work()  # one handler call for the batch: its threads belong to every message
        for item in items:
            item.state = MessageState.RUNNING
            item.task = task
            item.work = work
        self._stats.started += len(items)
        context = BatchContext(
            self._lifecycle, contexts={item.message_id: self._context(item) for item in items}
        )
        span = self._holdings.spans.start_batch([item.span for item in items])
        self._holdings.running += len(items)
        began = time.perf_counter()
        error: BaseException | None = None
        try:
            with within(span), running(work):
                await self._batch_handler([item.message for item in items], context)
        except Retry as signal:
            error = signal
            failures: dict[str, float | None] = dict.fromkeys(
                (item.message_id for item in items), signal.delay_seconds
            )
        except BaseException as exc:
            error = exc
            if _being_cancelled(exc):
                raise  # cancelled at the drain deadline: the drain releases the messages
            logger.error(
                "batch handler failed",
                exc_info=exc,
                extra={"count": len(items), **span_log_fields(span)},
            )
            self._stop_on(exc)
            failures = dict.fromkeys(item.message_id for item in items)
        else:
            failures = context.failures
        finally:
            self._batch_ended(items, span, began, error)
        for item in items:
            if item.message_id in failures:
                item.fail(ErrorType.BATCH_ITEM_FAILED)  # unless the whole batch raised
        await asyncio.gather(
            *(
                self._fail(item, delay_seconds=failures[item.message_id])
                if item.message_id in failures
                else self._succeed(item)
                for item in items
            )
        )

    def _batch_ended(
        self,
        items: list[InFlight],
        span: trace.Span | None,
        began: float,
        error: BaseException | None,
    ) -> None:
        """Count the batch out; its span and messages say how it ended; record its duration."""
        self._holdings.running -= len(items)
        error_type = None
        if error is not None:
            failure = self._failure_of(error)
            mark_error(span, failure, record=_unexpected(error))
            for item in items:
                item.fail(failure)
            error_type = error_type_of(failure)
        if span is not None:
            span.end()
        self._metrics.record_handler(time.perf_counter() - began, error_type=error_type)

    def _log_failure(self, item: InFlight, exc: BaseException) -> None:
        extra = {**item.log_fields(), "receive_count": item.message.receive_count}
        if isinstance(exc, MalformedMessageError):
            self._stats.malformed += 1
            logger.warning(
                "malformed message; it will be retried, then dead-lettered",
                extra={**extra, "error": str(exc)},
            )
        else:
            logger.error("handler failed", exc_info=exc, extra=extra)
        self._stop_on(exc)

    def _stop_on(self, exc: BaseException) -> None:
        """A handler raised SystemExit/KeyboardInterrupt: drain and stop the process (exit 1)."""
        if isinstance(exc, (SystemExit, KeyboardInterrupt)) and self.stop_error is None:
            self.stop_error = exc
            self._lifecycle.request_shutdown(f"a handler raised {type(exc).__name__}")

    async def _succeed(self, item: InFlight) -> bool:
        """Stop the heartbeat, record the completion, then delete."""
        item.state = MessageState.SETTLING
        await self._holdings.heartbeat.untrack(item)
        if item.held is not None and self._completer is not None:
            completed = False
            if item.completion is None and not item.lease_lost:
                item.completion = self._completer.complete(item.held)
            if item.completion is not None:  # set already when the handler's COMMIT completed it
                # Shielded: if we are cancelled now, the outcome is still read at the end.
                completed = await asyncio.shield(item.completion)
            if not completed:
                # Lease lost (or the store failed): someone else may own the key now. Hand the
                # message back without deleting; the next delivery sees the record's truth.
                self._stats.lease_lost += 1
                item.fail(ErrorType.COMPLETION_REFUSED)
                logger.warning("completion refused; message handed back", extra=item.log_fields())
                self._defer(item)
                return False
        self._stats.succeeded += 1
        self._holdings.delete(item, outcome=MessageOutcome.SUCCEEDED)
        return True

    async def _fail(self, item: InFlight, *, delay_seconds: float | None) -> None:
        """Release the claim, then hand the message back after its backoff."""
        self._stats.failed += 1
        item.state = MessageState.RELEASED
        await self._holdings.heartbeat.untrack(item)
        await self._holdings.release_claims([item])
        if delay_seconds is None:
            seconds = self._backoff.delay_seconds(item.message.receive_count)
        else:
            seconds = clamp_visibility(delay_seconds)
        self._holdings.back_off(item, seconds=seconds, outcome=MessageOutcome.FAILED)

    def _defer(self, item: InFlight) -> None:
        """Not run now (in progress elsewhere, store down, lease lost): back after the delay."""
        self._holdings.back_off(
            item, seconds=self._settings.in_progress_delay_seconds, outcome=MessageOutcome.DEFERRED
        )


def _completed_in_transaction(item: InFlight) -> None:
    """The handler's own transaction committed the completion: no separate call for it."""
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    done.set_result(True)
    item.completion = done


def _being_cancelled(exc: BaseException) -> bool:
    """True for the CancelledError of a cancel someone asked for (the drain deadline).

    A handler that raises CancelledError (or GeneratorExit) itself, with nobody cancelling its
    task, has failed like any other: the message is released with back-off, its slot freed.
    """
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _unexpected(error: BaseException) -> bool:
    """A handler's own failure, worth its traceback on the span (not Retry, not malformed)."""
    return isinstance(error, Exception) and not isinstance(error, Retry | MalformedMessageError)
