"""Running handlers over a receive batch: claims, outcomes, completions.

::

    process(batch)   claim every key (one round trip; held through a store outage) ->
      standard       not now / failed: handed back (``_handback``); the rest run, one task each
                     (or one batch handler call)
      FIFO           one task per group (``_groups``): in order, failures retried in process
    run_one          the handler inside the message's span, log context and ``running(work)``:
                     SUCCEEDED (then ``_succeed``), FAILED (what to do is the caller's), or an
                     exception raised on (the drain deadline's cancel: the drain releases it)
    _succeed         completion recorded (retried through an outage), then delete

Each message already has its span (``Holdings.accept``); here the span learns how the handler
ended, and every line logged about the message carries its ids (``InFlight.log_fields``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .._work import Work, running
from ..errors import MalformedMessageError
from ..logging import bind_log_context, span_log_fields
from ..telemetry import ErrorType
from ..telemetry._core import error_type_of, mark_error
from ..telemetry._messages import within
from ._claiming import Verdict, note_malformed
from ._completion import Recorded
from ._groups import GroupRunner
from ._inflight import InFlight, MessageState, Ran
from ._outage import first_of
from .backoff import Retry
from .context import BatchContext, MessageContext
from .events import MessageOutcome

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping, Sequence
    from typing import Any

    from opentelemetry import trace

    from ..lifecycle import Lifecycle
    from ._claiming import Claimer
    from ._completion import Completions
    from ._holdings import Holdings
    from ._outage import StoreOutage
    from .context import BatchHandler, Handler

__all__ = ["Runner"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")


class Runner:
    """Takes each receive batch from claim to settled."""

    def __init__(
        self,
        holdings: Holdings,
        *,
        lifecycle: Lifecycle,
        handler: Handler | None,
        batch_handler: BatchHandler | None,
        claimer: Claimer | None,
        completions: Completions | None,
        outage: StoreOutage,
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]],
    ) -> None:
        self._holdings = holdings
        self._handback = holdings.handback
        self._spawn = spawn
        # A handler raised SystemExit or KeyboardInterrupt: the consumer drains, then raises it.
        self.stop_error: BaseException | None = None
        self._stats = holdings.stats
        self._settings = holdings.settings
        self._lifecycle = lifecycle
        self._handler = handler
        self._batch_handler = batch_handler
        self._claimer = claimer
        self._completions = completions
        self._outage = outage
        self._metrics = holdings.metrics

    @property
    def holdings(self) -> Holdings:
        """The messages held, and how they leave."""
        return self._holdings

    @property
    def lifecycle(self) -> Lifecycle:
        """The lifecycle the consumer runs under."""
        return self._lifecycle

    def others_running(self) -> bool:
        """True while some handler is still running (its completion would join a batch)."""
        return self._holdings.running > 0

    async def process(self, items: list[InFlight]) -> None:
        """Claim, run and settle one receive batch."""
        if self._lifecycle.shutdown_requested:
            # A receive that returned after SIGTERM: give everything back at once.
            await self._holdings.release_on_shutdown(items)
            return
        verdicts = await self.claim(items)
        if verdicts is None:
            return  # shutdown during a store outage: the drain released them
        if self._settings.is_fifo:
            groups = GroupRunner(self, verdicts=verdicts)
            if self._batch_handler is not None:
                await groups.run_batch(items)
            else:
                for group in groups.split(items):
                    self._spawn(groups.run_group(group), "sqs-group")
            return
        await self._settle_verdicts(items, verdicts)
        runnable = [item for item in items if item.state is MessageState.RECEIVED]
        if self._batch_handler is not None:
            failures = await self.run_batch(runnable)
            await self.fail(list(failures), {i.message_id: d for i, d in failures.items()})
            return
        # One task per message (not a gather): each is cancelled on its own, through the
        # lifecycle, so a handler's own cleanup scope holds off the cancel.
        for item in runnable:
            self._spawn(self.run_one(item, hand_back=True), "sqs-handler")

    async def claim(self, items: Sequence[InFlight]) -> dict[InFlight, Verdict] | None:
        """Verdicts for ``items``; through a store outage the unclaimed ones are held (the
        heartbeat keeps them) and claimed once it answers. None: shutdown came first."""
        if self._claimer is None:
            return dict.fromkeys(items, Verdict.RUN)
        verdicts: dict[InFlight, Verdict] = {}
        pending = [item for item in items if item.state is MessageState.RECEIVED]
        while pending:
            verdicts.update(await self._claimer.claim(pending))
            pending = [i for i in pending if verdicts.get(i) is Verdict.UNCLAIMED]
            if pending:
                await first_of(
                    self._outage.wait_available(), self._lifecycle.wait_shutdown_requested()
                )
                if self._lifecycle.shutdown_requested:
                    return None
        return verdicts

    async def _settle_verdicts(
        self, items: Sequence[InFlight], verdicts: Mapping[InFlight, Verdict]
    ) -> None:
        """Standard queue: a key in progress elsewhere comes back later; a failed one fails."""
        if all(verdict is Verdict.RUN for verdict in verdicts.values()):
            return  # the usual batch
        waiting = [i for i in items if verdicts.get(i) is Verdict.WAIT]
        failed = [i for i in items if verdicts.get(i) is Verdict.FAILED]
        await self._handback.deferred(waiting, seconds=self._settings.in_progress_delay_seconds)
        await self.fail(failed, {})

    def _context(self, item: InFlight) -> MessageContext:
        held = item.held
        recovery = None
        if held is not None and self._claimer is not None:
            recovery = self._claimer.keys.transactional(
                held, lambda: _completed_in_transaction(item)
            )
        return MessageContext(
            self._lifecycle,
            message_id=item.message_id,
            idempotency_key=item.key,
            fencing_token=held.token if held is not None else None,
            recovery=recovery,
        )

    async def run_one(self, item: InFlight, *, hand_back: bool = False) -> Ran:
        """Run the handler on one message; settle it when it succeeded.

        A failure leaves the message held (RECEIVED again, its claim kept) for the caller to
        retry (a FIFO group), or, with ``hand_back``, hands it back after its backoff.
        """
        if item.state is not MessageState.RECEIVED:
            return Ran.STOPPED
        assert self._handler is not None  # noqa: S101 - single-message mode
        item.state = MessageState.RUNNING
        item.task = asyncio.current_task()
        self._stats.started += 1
        self._holdings.running += 1
        began = time.perf_counter()
        try:
            # The span first: an exception leaving the log context takes the span's ids along.
            with (
                within(item.span),
                bind_log_context(message_id=item.message_id, idempotency_key=item.key),
                running(item.work),
            ):
                await self._handler(item.message, self._context(item))
        except Retry as signal:
            self._handler_ended(item, began, signal)
            self._failed(item, signal.delay_seconds)
        except BaseException as exc:
            self._handler_ended(item, began, exc)
            if _being_cancelled(exc):
                raise  # cancelled at the drain deadline: the drain releases the message
            # Any other exception, CancelledError or GeneratorExit it raised itself included.
            self._log_failure(item, exc)
            self._failed(item, None)
        else:
            self._handler_ended(item, began, None)
            return Ran.SUCCEEDED if await self._succeed(item) else Ran.STOPPED
        if hand_back:
            await self.fail([item], {item.message_id: item.retry_delay_seconds})
        return Ran.FAILED

    def _failed(self, item: InFlight, delay_seconds: float | None) -> None:
        item.state = MessageState.RECEIVED
        item.retry_delay_seconds = delay_seconds

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

    async def run_batch(self, items: list[InFlight]) -> dict[InFlight, float | None]:
        """Run the batch handler once on ``items``; settle the successes; return the failures
        (held, RECEIVED again) with the delays asked for."""
        if not items:
            return {}
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
        failed: dict[InFlight, float | None] = {}
        for item in items:
            if item.message_id in failures:
                item.fail(ErrorType.BATCH_ITEM_FAILED)  # unless the whole batch raised
                self._failed(item, failures[item.message_id])
                failed[item] = failures[item.message_id]
        await asyncio.gather(*(self._succeed(item) for item in items if item not in failed))
        return failed

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
        if isinstance(exc, MalformedMessageError):
            note_malformed(self._stats, item, exc)
        else:
            extra = {**item.log_fields(), "receive_count": item.message.receive_count}
            logger.error("handler failed", exc_info=exc, extra=extra)
        self._stop_on(exc)

    def _stop_on(self, exc: BaseException) -> None:
        """A handler raised SystemExit/KeyboardInterrupt: drain and stop the process (exit 1)."""
        if isinstance(exc, (SystemExit, KeyboardInterrupt)) and self.stop_error is None:
            self.stop_error = exc
            self._lifecycle.request_shutdown(f"a handler raised {type(exc).__name__}")

    async def _succeed(self, item: InFlight) -> bool:
        """Record the completion (retried through an outage), then delete."""
        item.state = MessageState.SETTLING
        item.succeeded = True
        if item.held is not None and self._completions is not None:
            recorded = Recorded.LOST if item.lease_lost else await self._completions.record(item)
            if recorded is Recorded.LOST:
                await self._lost(item)
                return False
            if recorded is Recorded.UNRECORDED:
                logger.error(
                    "work done but its completion not recorded (the store did not answer "
                    "before the drain deadline, or failed): message deleted; a later duplicate "
                    "of its key could run again",
                    extra=item.log_fields(),
                )
        await self._holdings.heartbeat.untrack(item)
        self._stats.succeeded += 1
        self._holdings.delete(item, outcome=MessageOutcome.SUCCEEDED)
        return True

    async def _lost(self, item: InFlight) -> None:
        """Someone else holds the key now: not completed, not deleted; back after a delay."""
        await self._holdings.heartbeat.untrack(item)  # a beat in progress may find it first
        item.fail(ErrorType.COMPLETION_REFUSED)
        if not item.lease_lost:  # else the heartbeat counted and logged it
            item.lease_lost = True
            self._stats.lease_lost += 1
            logger.warning("completion refused; message handed back", extra=item.log_fields())
        await self._handback.deferred([item], seconds=self._settings.in_progress_delay_seconds)

    async def fail(
        self, items: list[InFlight], delays: Mapping[str, float | None], *, counted: bool = False
    ) -> None:
        """Hand failed messages back: after their backoff, or as a copy or to the DLQ
        (``Handback.failed``). ``counted``: already in ``stats.failed``."""
        items = [item for item in items if item.state is MessageState.RECEIVED]
        if not items:
            return
        if not counted:
            self._stats.failed += len(items)
        await self._handback.failed(items, delays)


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
