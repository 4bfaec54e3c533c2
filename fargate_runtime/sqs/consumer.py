"""The SQS consumer service: receive what can start, handle, delete; never strand a message.

A message's life, and where each rule of DESIGN.md section 5 lives::

    receive (only free slots, only while the store answers: ``_receiver``, ``_outage``)
      -> claim key (batch, each delivery its own owner: ``_claiming``)
           completed: deleted unrun | in progress elsewhere: back later | malformed/mismatch:
           a failure | store down: held (heartbeat) until it answers, intake paused
      -> handler (``_running``; FIFO: per group, failures retried in process: ``_groups``)
      -> completion (batched, retried through an outage: ``_completion``) -> delete (batch)
      failed / not now / shutdown -> handed back (``_handback``): after a backoff, at once, as
           a copy when near maxReceiveCount for reasons not its own, or to the DLQ
      the heartbeat extends visibility and lease until the message leaves; a refused renewal
           lets go of it (``heartbeat``)

A receive asks for at most the free slots (a message holds its slot until deleted or handed
back), waiting ``gather_seconds`` for a full batch of 10 when only a few are free: one receive
of 10 costs what one of 1 costs. On FIFO queues the messages of one group in a batch hold their
slots while they wait their turn: SQS hands out a group in order or not at all.

Shutdown, run as the supervisor drives it::

    SIGTERM     slots closed: no new receive; the long poll in flight abandoned at once (what
                SQS still hands it stays hidden for the short visibility); unstarted messages
                released (visibility 0; a copy when at their last receive)
    ...         in-flight handlers finish, complete, delete
    drain end   the supervisor cancels run(): handlers cancelled, their claims released and
                messages made visible at once, inside lifecycle.cleanup_scope()
    finally     completions, deletes and visibility changes flushed; stats logged

A fatal receive error (the queue deleted, access revoked) starts the same shutdown: handlers in
flight drain within the budget, then the consumer raises (exit 1).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, ConsumerError
from ..idempotency import Held
from ..telemetry import metrics_enabled
from ._backlog import BacklogSampler
from ._claiming import Claimer
from ._completion import Completer, Completions
from ._final_release import FinalRelease
from ._handback import DeliveryCounters
from ._holdings import ConsumerStats, Holdings
from ._inflight import MessageState
from ._outage import StoreOutage, first_of
from ._queue import QueueFacts, log_queue, read_queue
from ._receiver import Receiver
from ._running import Runner
from .claims import MessageKeys, body_fingerprint, check_key_for
from .events import Events

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

    from ..idempotency import Idempotency, IdempotencyStore
    from ..lifecycle import Lifecycle
    from .backoff import Backoff
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
        await consumer.prepare()  # optional: run() does it; here a bad queue fails the setup
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
        check_key_for(key, fifo=settings.is_fifo, queue_url=settings.queue_url)
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
        store = idempotency.store if idempotency is not None else None
        self._store = store
        self._outage = StoreOutage(self._probe, held=lambda: len(self._holdings))
        self._events = Events(on_event, queue_name=settings.queue_name)
        self._holdings = Holdings(
            client,
            settings=settings,
            store=store,
            events=self._events,
            backoff=backoff,
            on_store_error=self._outage.failed,
        )
        if self._keys is not None:
            self._holdings.handback.counters = DeliveryCounters.of(
                store,
                key=self._keys.counter_key,
                on_store_error=self._outage.failed,
                available=lambda: self._outage.available,
            )
        self._queue: QueueFacts | None = None
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
        stats.lease_lost += holdings.heartbeat.lost
        stats.visibility_lapsed = holdings.heartbeat.lapsed
        stats.store_outages = self._outage.outages
        if self._completer is not None:
            stats.completion_round_trips = self._completer.round_trips
        return stats

    async def wait_ready(self) -> None:
        """Return once the consumer receives; raise RuntimeError if its run ended first."""
        await first_of(self._ready.wait(), self._ended.wait())
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

    @property
    def store_available(self) -> bool:
        """False while the idempotency store is down (intake paused, readiness held back)."""
        return self._outage.available

    async def prepare(self) -> QueueFacts:
        """Read and check the queue, once (``run`` does it first): ConfigurationError when it
        does not exist or cannot be read. Call it in setup to refuse a bad queue before the
        supervisor reports running (``sqs_worker`` does)."""
        if self._queue is None:
            facts = await read_queue(self._client, self.settings)
            log_queue(facts, self.settings)
            self._holdings.handback.queue = facts
            self._queue = facts
        return self._queue

    async def _probe(self) -> None:
        """One cheap round trip to the store: its ``ping`` (Redis, memory), else a release of a
        key nobody holds (any store answers that without changing anything)."""
        store: IdempotencyStore | None = self._store
        ping = getattr(store, "ping", None)
        if ping is not None:
            await ping()
        elif store is not None and self._keys is not None:
            await store.release_many([Held(self._keys.stored_key("probe"), 0)])

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
        await self.prepare()
        self._outage.attach(lifecycle)
        claimer: Claimer | None = None
        completions: Completions | None = None
        if self._idempotency is not None and self._keys is not None:
            claimer = Claimer(
                self._keys,
                holdings=self._holdings,
                outage=self._outage,
                lease_seconds=settings.visibility_timeout_seconds,
            )
            completions = Completions(
                self._idempotency.store,
                retention_seconds=self._idempotency.retention_seconds,
                interval_seconds=settings.flush_interval_seconds,
                others_running=lambda: self._runner is not None and self._runner.others_running(),
                outage=self._outage,
                lifecycle=lifecycle,
                stats=self._holdings.stats,
                lease_seconds=settings.visibility_timeout_seconds,
            )
            self._completer = completions.completer
        self._runner = Runner(
            self._holdings,
            lifecycle=lifecycle,
            handler=self._handler,
            batch_handler=self._batch_handler,
            claimer=claimer,
            completions=completions,
            outage=self._outage,
            spawn=self._spawn,
        )
        self._lifecycle = lifecycle
        # Whatever the loop does later (blocked, stopped), what is still held goes back then.
        final = FinalRelease(
            self._holdings,
            client=self._client,
            store=self._store,
            retention_seconds=self._idempotency.retention_seconds if self._idempotency else 0.0,
        )
        remove_final_release = lifecycle.add_final_release(final, prepare=final.prepare)
        receiver = self._receiver = Receiver(
            self._client,
            settings=settings,
            slots=self._holdings.slots,
            accept=self._accept,
            gate=self._outage.wait_available,
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
        receiver.start()
        logger.info(
            "sqs consumer started",
            extra={
                "queue": settings.queue_name,
                "concurrency": settings.concurrency,
                "receivers": len(receiver.loops),
                "wait_time_seconds": settings.wait_time_seconds,
                "visibility_timeout_seconds": settings.visibility_timeout_seconds,
                "fifo": settings.is_fifo,
                "idempotency": self._idempotency is not None,
            },
        )
        self._ready.set()
        self._events.ready()
        ended: BaseException | None = None
        fatal: BaseException | None = None
        try:
            fatal = await self._until_shutdown(lifecycle, receiver)
            await self._drain(receiver)
        except BaseException as exc:
            ended = exc
            raise
        finally:
            self._holdings.record_drain(lifecycle, ended or fatal)
            # Reached by a clean drain, a fatal error, or the cancellation at the drain
            # deadline; shielded and bounded by the release deadline either way.
            with lifecycle.cleanup_scope():
                await self._close(receiver, heartbeat)
            if not self._holdings:
                remove_final_release()
            logger.info("sqs consumer stopped", extra=self.stats.as_dict())
        if fatal is not None:
            raise fatal
        if self._runner.stop_error is not None:
            error = self._runner.stop_error
            raise ConsumerError(f"a handler raised {type(error).__name__}: {error}") from error

    async def _until_shutdown(
        self, lifecycle: Lifecycle, receiver: Receiver
    ) -> BaseException | None:
        """Wait for the shutdown, or for a receive loop's fatal error: it starts the shutdown,
        which drains the handlers in flight before the consumer raises it."""
        waiter = asyncio.create_task(lifecycle.wait_shutdown_requested())
        try:
            error = await receiver.until(waiter)
        finally:
            waiter.cancel()
        if error is not None:
            logger.error(
                "sqs receive failed for good: draining the handlers in flight, then stopping",
                extra={"error": str(error), "held": len(self._holdings)},
            )
            lifecycle.request_shutdown(f"sqs consumer: {error}")
        return error

    async def _drain(self, receiver: Receiver) -> None:
        holdings = self._holdings
        holdings.slots.close()
        logger.info(
            "sqs consumer draining",
            extra={"held": len(holdings), "receives_in_flight": len(receiver.receiving)},
        )
        # The long poll in flight is not waited for: an idle worker stops at once.
        self._abandon(receiver)
        # Unstarted: received, waiting for their claim (a store outage) or their turn in a
        # FIFO group (also one waiting to retry in process).
        unstarted = [item for item in holdings.items() if item.state is MessageState.RECEIVED]
        if unstarted:
            await holdings.release_on_shutdown(unstarted)
        await receiver.stopped()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _abandon(self, receiver: Receiver) -> None:
        """Cancel receive calls still on their way; count what they might hide."""
        abandoned, hidden = receiver.abandon()
        if abandoned:
            stats = self._holdings.stats
            stats.abandoned_receives += abandoned
            stats.hidden_by_abandoned_receive += hidden
            logger.warning(
                "receive abandoned: messages SQS still hands it stay hidden up to the visibility "
                "timeout",
                extra={
                    "abandoned_receives": abandoned,
                    "visibility_timeout_seconds": self.settings.visibility_timeout_seconds,
                },
            )

    async def _close(self, receiver: Receiver, heartbeat: asyncio.Task[None]) -> None:
        """Cancel what still runs, release what is still held, flush every buffer."""
        holdings = self._holdings
        holdings.slots.close()
        self._abandon(receiver)
        tasks = {*receiver.loops.values(), *self._tasks}
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
        await self._outage.aclose()
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
