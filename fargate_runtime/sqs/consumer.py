"""The SQS consumer service: receive what can start, handle, delete; never strand a message.

A message's life, and where each rule of DESIGN.md section 5 lives::

    receive (only free slots) -> claim key (batch) -> handler -> complete claim -> delete (batch)
               |                   |  completed: delete, no run      |
               |                   |  in progress: back off           +-> failed: release claim,
               |                   |  malformed / mismatch: fail          visibility = backoff
               +-- heartbeat extends visibility and lease until the message is settled

A receive asks for at most the free slots (a message holds its slot until deleted or handed
back), waiting ``gather_seconds`` for a full batch of 10 when only a few are free: one receive
of 10 costs what one of 1 costs. On FIFO queues the messages of one group in a batch hold their
slots while they wait their turn: SQS hands out a group in order or not at all.

Shutdown, run as the supervisor drives it::

    SIGTERM     slots closed: no new receive; unstarted messages released (visibility 0)
                the receive in flight returns (WaitTimeSeconds fits the drain) and what it
                brings is released -- or it is abandoned (abandon_receive_on_shutdown)
    ...         in-flight handlers finish, complete, delete
    drain end   the supervisor cancels run(): handlers cancelled, their claims released and
                messages made visible at once, inside lifecycle.cleanup_scope()
    finally     completions, deletes and visibility changes flushed; stats logged
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, ConsumerError
from ..telemetry import ErrorType, metrics_enabled
from ..telemetry._core import error_type_of
from ._backlog import BacklogSampler
from ._final_release import FinalRelease
from ._holdings import ConsumerStats, Holdings
from ._inflight import MessageState
from ._receiver import Receiver
from ._running import Runner
from .backoff import Backoff
from .claims import Completer, MessageKeys, body_fingerprint
from .events import Events

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from ..idempotency import Idempotency
    from ..lifecycle import Lifecycle
    from .claims import FingerprintFunction, KeyFunction
    from .context import BatchHandler, Handler
    from .events import EventHook
    from .settings import SqsSettings

__all__ = ["Consumer", "ConsumerStats"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

# At the end, how long cancelled handlers get to unwind before their messages are released
# anyway (a handler that swallows cancellation must not eat the release budget).
_UNWIND_SECONDS = 0.5


class Consumer:
    """Consumes one SQS queue as a supervisor service (``rt.add_service(consumer.run)``).

    Give it ``handler`` (``async def handle(message, context)``) or ``batch_handler``
    (``async def handle_batch(messages, context)``) and a client from ``open_sqs_client``. To
    run each effect at most once per key, add an ``Idempotency`` (from
    ``fargate_runtime.idempotency``) and where the key comes from::

        consumer = Consumer(
            handle,
            client=await rt.enter(open_sqs_client(settings), name="sqs"),
            settings=settings,
            idempotency=Idempotency.from_settings(store, idempotency_settings),
            key=json_field("event_id"),
        )
        rt.add_service(consumer.run, name="sqs-consumer")

    Keys are stored in the scope ``key_scope`` (default ``sqs:<queue name>``); the payload
    fingerprint (default: the body's hash) tells a true duplicate from a key reused for other
    data. The claim's lease is the visibility timeout, renewed with it by the heartbeat.

    ``on_event`` is called with a ``ConsumerEvent`` when the consumer is ready and when each
    message is received, released or settled (``fargate_runtime.sqs.events``);
    ``await consumer.wait_ready()`` returns once it receives.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        client: SQSClient,
        settings: SqsSettings,
        batch_handler: BatchHandler | None = None,
        idempotency: Idempotency | None = None,
        key: KeyFunction | None = None,
        key_scope: str | None = None,
        fingerprint: FingerprintFunction = body_fingerprint,
        backoff: Backoff | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ConfigurationError("give the Consumer exactly one of handler or batch_handler")
        if (idempotency is None) != (key is None):
            raise ConfigurationError(
                "idempotency and key go together: where does the key come from?"
            )
        self.settings = settings
        self._client = client
        self._handler = handler
        self._batch_handler = batch_handler
        self._idempotency = idempotency
        self._keys: MessageKeys | None = None
        if idempotency is not None and key is not None:
            scope = key_scope or f"sqs:{settings.queue_name}"
            self._keys = MessageKeys(
                idempotency=idempotency, key=key, scope=scope, fingerprint=fingerprint
            )
        self._backoff = backoff or Backoff(
            base_seconds=settings.backoff_base_seconds, cap_seconds=settings.backoff_cap_seconds
        )
        store = idempotency.store if idempotency is not None else None
        self._store = store
        self._events = Events(on_event, queue_name=settings.queue_name)
        self._holdings = Holdings(client, settings=settings, store=store, events=self._events)
        self._ready = asyncio.Event()
        self._ended = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: Runner | None = None
        self._receiver: Receiver | None = None
        self._completer: Completer | None = None
        self._backlog: asyncio.Task[None] | None = None

    @property
    def stats(self) -> ConsumerStats:
        """A snapshot of the counters."""
        holdings = self._holdings
        stats = ConsumerStats(**holdings.stats.as_dict())
        if self._receiver is not None:
            stats.receives = self._receiver.receives
            stats.empty_receives = self._receiver.empty_receives
        stats.deleted = holdings.deletes.counters.done
        stats.delete_calls = holdings.deletes.counters.calls
        stats.visibility_calls = holdings.visibility.counters.calls
        stats.heartbeat_extensions = holdings.heartbeat.extensions
        stats.lease_renewals = holdings.heartbeat.renewals
        if self._completer is not None:
            stats.completion_round_trips = self._completer.round_trips
        return stats

    async def wait_ready(self) -> None:
        """Return once the consumer receives; raise RuntimeError if its run ended first."""
        ready = asyncio.ensure_future(self._ready.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            ended.cancel()
        if not self._ready.is_set():
            raise RuntimeError("the consumer stopped before it was ready")

    @property
    def receives_in_flight(self) -> int:
        """ReceiveMessage calls on their way right now."""
        return len(self._receiver.receiving) if self._receiver is not None else 0

    @property
    def held(self) -> int:
        """Messages held right now (received, not yet deleted or handed back)."""
        return len(self._holdings)

    async def run(self, lifecycle: Lifecycle) -> None:
        """The service: consume until shutdown, drain, release what is left, flush."""
        if self._runner is not None:
            raise RuntimeError("a Consumer runs once; build a new one")
        try:
            await self._run(lifecycle)
        finally:
            self._ended.set()

    async def _run(self, lifecycle: Lifecycle) -> None:
        settings = self.settings
        wait = settings.effective_wait_time_seconds(lifecycle.budget)
        if wait < settings.wait_time_seconds:
            logger.warning(
                "WaitTimeSeconds clamped to fit the drain budget",
                extra={
                    "wait_time_seconds": settings.wait_time_seconds,
                    "effective_wait_time_seconds": wait,
                    "drain_seconds": lifecycle.budget.drain_seconds,
                },
            )
        if self._idempotency is not None:
            self._completer = Completer(
                self._idempotency.store,
                retention_seconds=self._idempotency.retention_seconds,
                interval_seconds=settings.flush_interval_seconds,
                others_running=lambda: self._runner is not None and self._runner.others_running(),
            )
        self._runner = Runner(
            self._holdings,
            lifecycle=lifecycle,
            handler=self._handler,
            batch_handler=self._batch_handler,
            keys=self._keys,
            completer=self._completer,
            backoff=self._backoff,
            spawn=self._spawn,
        )
        self._lifecycle = lifecycle
        # Whatever the loop does later (blocked, stopped), what is still held goes back then.
        final = FinalRelease(self._holdings, client=self._client, store=self._store)
        remove_final_release = lifecycle.add_final_release(final, prepare=final.prepare)
        receiver = self._receiver = Receiver(
            self._client,
            settings=settings,
            slots=self._holdings.slots,
            wait_time_seconds=wait,
            accept=self._accept,
        )
        heartbeat = asyncio.create_task(self._holdings.heartbeat.run(), name="sqs-heartbeat")
        if settings.backlog_interval_seconds > 0 and metrics_enabled():
            sampler = BacklogSampler(
                self._client,
                queue_url=settings.queue_url,
                interval_seconds=settings.backlog_interval_seconds,
                metrics=self._holdings.metrics,
            )
            self._backlog = asyncio.create_task(sampler.run(), name="sqs-backlog")
        loops = {
            index: asyncio.create_task(receiver.loop(index), name=f"sqs-receive-{index}")
            for index in range(settings.receiver_count)
        }
        logger.info(
            "sqs consumer started",
            extra={
                "queue": settings.queue_name,
                "concurrency": settings.concurrency,
                "receivers": len(loops),
                "wait_time_seconds": wait,
                "visibility_timeout_seconds": settings.visibility_timeout_seconds,
                "fifo": settings.is_fifo,
                "idempotency": self._idempotency is not None,
            },
        )
        self._ready.set()
        self._events.ready()
        ended: BaseException | None = None
        try:
            await self._until_shutdown(lifecycle, loops)
            await self._drain(loops)
        except BaseException as exc:
            ended = exc
            raise
        finally:
            self._record_drain(lifecycle, ended)
            # Reached by a clean drain, a fatal error, or the cancellation at the drain
            # deadline; shielded and bounded by the release deadline either way.
            with lifecycle.cleanup_scope():
                await self._close(loops, heartbeat)
            if not self._holdings:
                remove_final_release()
            logger.info("sqs consumer stopped", extra=self.stats.as_dict())
        if self._runner.stop_error is not None:
            error = self._runner.stop_error
            raise ConsumerError(f"a handler raised {type(error).__name__}: {error}") from error

    async def _until_shutdown(
        self, lifecycle: Lifecycle, loops: dict[int, asyncio.Task[None]]
    ) -> None:
        waiter = asyncio.create_task(lifecycle.wait_shutdown_requested())
        try:
            done, _ = await asyncio.wait(
                {waiter, *loops.values()}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        for task in done:
            if task is not waiter:
                task.result()  # a receive loop only ends early on a fatal SqsError: raise it

    async def _drain(self, loops: dict[int, asyncio.Task[None]]) -> None:
        holdings = self._holdings
        holdings.slots.close()
        receiving = self._receiver.receiving if self._receiver is not None else {}
        logger.info(
            "sqs consumer draining",
            extra={"held": len(holdings), "receives_in_flight": len(receiving)},
        )
        if self.settings.abandon_receive_on_shutdown:
            self._abandon(loops)
        unstarted = [item for item in holdings.items() if item.state is MessageState.RECEIVED]
        if unstarted:
            await holdings.release_on_shutdown(unstarted)
        # Receive loops end once their call returns (bounded: WaitTimeSeconds fits the drain);
        # what a late receive brings is released by the batch task it starts.
        for outcome in await asyncio.gather(*loops.values(), return_exceptions=True):
            if isinstance(outcome, Exception):
                logger.error("receive failed while draining", exc_info=outcome)
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _record_drain(self, lifecycle: Lifecycle, ended: BaseException | None) -> None:
        """This queue's drain duration, from the shutdown request (none without one)."""
        deadlines = lifecycle.deadlines
        if deadlines is None:
            return
        error_type = None
        if isinstance(ended, asyncio.CancelledError):
            error_type = ErrorType.DRAIN_DEADLINE.value
        elif ended is not None:
            error_type = error_type_of(ended)
        seconds = lifecycle.now() - deadlines.requested_at
        self._holdings.metrics.record_drain(seconds, error_type=error_type)

    def _abandon(self, loops: dict[int, asyncio.Task[None]]) -> None:
        """Cancel receive calls still on their way; count what they might hide."""
        stats = self._holdings.stats
        receiving = self._receiver.receiving if self._receiver is not None else {}
        abandoned = 0
        for index, task in loops.items():
            if task.done():
                continue
            if index in receiving:
                abandoned += 1
                stats.hidden_by_abandoned_receive += receiving[index]
            task.cancel()
        if abandoned:
            stats.abandoned_receives += abandoned
            logger.warning(
                "receive abandoned: messages SQS hands it stay hidden up to the visibility timeout",
                extra={
                    "abandoned_receives": abandoned,
                    "visibility_timeout_seconds": self.settings.visibility_timeout_seconds,
                },
            )

    async def _close(
        self, loops: dict[int, asyncio.Task[None]], heartbeat: asyncio.Task[None]
    ) -> None:
        """Cancel what still runs, release what is still held, flush every buffer."""
        holdings = self._holdings
        holdings.slots.close()
        self._abandon(loops)
        tasks = {*loops.values(), *self._tasks}
        for task in self._tasks:
            # Through the lifecycle: a handler inside its own cleanup scope finishes it first.
            self._lifecycle.cancel_task(task)
        if self._backlog is not None:
            self._backlog.cancel()
            tasks.add(self._backlog)
        if tasks:
            await asyncio.wait(tasks, timeout=_UNWIND_SECONDS)
        if self._completer is not None:
            await self._completer.flush()
        await holdings.settle_leftovers()
        await holdings.heartbeat.stop(heartbeat)
        await holdings.flush()

    def _accept(self, raw: list[MessageTypeDef], sent_at: float) -> None:
        """Track what a receive brought and start a batch task for it."""
        fresh = self._holdings.accept(raw, sent_at)
        if fresh and self._runner is not None:
            self._spawn(self._runner.process(fresh), "sqs-batch")

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start one of the consumer's tasks (batches, handlers); drained and cancelled as one."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
