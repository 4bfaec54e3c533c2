"""What a consumer tells the application: ready, each message received, released or settled.

Every delivery a consumer accepts ends in exactly one ``RELEASED`` or ``SETTLED`` event, so an
application (or a test) can count what is in its hands without hooking botocore::

    READY      the receive loops are running (readiness, "consumer is up" in a test)
    RECEIVED   a new message is held (a redelivery of one still held is not a new one)
    SETTLED    it left for good or for later: SUCCEEDED / DUPLICATE (deleted), FAILED /
               DEFERRED (handed back after a backoff or an in-progress delay, or re-queued
               as a copy), DEAD_LETTERED (moved to the DLQ by the runtime)
    RELEASED   handed back at once, unfinished: SHUTDOWN, or GROUP_FAILED (FIFO followers)

The hook is called on the event loop, inline: keep it quick (a counter, a log line, a
``queue.put_nowait``). An exception from it is logged once and never reaches the consumer.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable

    from .message import Message

__all__ = ["ConsumerEvent", "ConsumerEventKind", "EventHook", "MessageOutcome"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")


class ConsumerEventKind(enum.Enum):
    """What happened."""

    READY = "ready"
    RECEIVED = "received"
    SETTLED = "settled"
    RELEASED = "released"


class MessageOutcome(enum.Enum):
    """How a delivery ended (``SETTLED`` and ``RELEASED`` events)."""

    SUCCEEDED = "succeeded"  # handled (and its key completed), deleted
    DUPLICATE = "duplicate"  # its key was completed before: deleted without running
    FAILED = "failed"  # handler failed or message malformed: back after its backoff, or DLQ
    DEFERRED = "deferred"  # not run now (key in progress elsewhere, lease lost)
    DEAD_LETTERED = "dead_lettered"  # failed maxReceiveCount times: moved to the DLQ by the runtime
    SHUTDOWN = "shutdown"  # released at once because the process is stopping
    GROUP_FAILED = "group_failed"  # FIFO: released at once behind a failed message of its group


_SETTLED = frozenset(
    {
        MessageOutcome.SUCCEEDED,
        MessageOutcome.DUPLICATE,
        MessageOutcome.FAILED,
        MessageOutcome.DEFERRED,
        MessageOutcome.DEAD_LETTERED,
    }
)


@dataclass(frozen=True, slots=True)
class ConsumerEvent:
    """One event: its kind, the queue, and (but for ``READY``) the message and its outcome."""

    kind: ConsumerEventKind
    queue_name: str
    message: Message | None = None
    outcome: MessageOutcome | None = None


EventHook: TypeAlias = "Callable[[ConsumerEvent], object]"


class Events:
    """Calls the application's hook; a failing hook is logged once and then ignored."""

    def __init__(self, hook: EventHook | None, *, queue_name: str) -> None:
        self._hook = hook
        self._queue_name = queue_name
        self._failed = False

    def ready(self) -> None:
        """The consumer is receiving."""
        self._emit(ConsumerEvent(ConsumerEventKind.READY, self._queue_name))

    def received(self, message: Message) -> None:
        """A new message is held."""
        self._emit(ConsumerEvent(ConsumerEventKind.RECEIVED, self._queue_name, message))

    def ended(self, message: Message, outcome: MessageOutcome) -> None:
        """A delivery ended: settled or released, as ``outcome`` says."""
        kind = ConsumerEventKind.SETTLED if outcome in _SETTLED else ConsumerEventKind.RELEASED
        self._emit(ConsumerEvent(kind, self._queue_name, message, outcome))

    def _emit(self, event: ConsumerEvent) -> None:
        if self._hook is None:
            return
        try:
            self._hook(event)
        except Exception:  # the application's hook never breaks the consumer
            if not self._failed:
                self._failed = True
                logger.exception("consumer event hook failed; later failures are not logged")
