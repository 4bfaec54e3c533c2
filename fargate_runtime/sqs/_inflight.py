"""What the consumer knows about each message it holds, from receive to delete or release."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._work import Work
from ..logging import span_log_fields
from ..telemetry._core import error_type_of, mark_error
from .settings import MAX_VISIBILITY_SECONDS

if TYPE_CHECKING:
    import asyncio

    from opentelemetry.trace import Span

    from ..idempotency import ClaimRequest, Held
    from ..telemetry import ErrorType
    from .message import Message

__all__ = ["InFlight", "MessageState", "Ran"]


class MessageState(enum.Enum):
    """Where a held message is; only RECEIVED ones may still be started."""

    RECEIVED = "received"  # received, not started: claim pending, or queued behind its group
    RUNNING = "running"  # the handler is running
    SETTLING = "settling"  # the handler returned: completing the claim, deleting or backing off
    RELEASED = "released"  # handed back to SQS without finishing (visibility 0 or a backoff)
    DONE = "done"  # deleted (or queued for delete)


class Ran(enum.Enum):
    """How one run of a message ended (a cancel at the drain deadline is raised instead)."""

    SUCCEEDED = "succeeded"  # handled, completion recorded, deleted
    FAILED = "failed"  # the handler failed: ``retry_delay_seconds`` says what it asked for
    STOPPED = "stopped"  # not run, or ran but handed back (lease lost)


# A visibility must end this far short of SQS's 12 h from the first receive (SQS's clock).
_VISIBILITY_LIMIT_MARGIN_SECONDS = 10.0


@dataclass(slots=True, eq=False)
class InFlight:
    """A message we hold: its visibility horizon, our claim on its key, its state."""

    message: Message
    # Monotonic time when SQS makes it visible again unless we extend it.
    visible_until: float
    # Wall-clock second of the first receive: the 12 h visibility limit counts from there.
    first_received_epoch: float
    state: MessageState = MessageState.RECEIVED
    # The idempotency key (unscoped, as handlers see it), the claim asked for (stored key,
    # fingerprint, this delivery's owner) and our claim on it, when we hold one.
    key: str | None = None
    request: ClaimRequest | None = None
    held: Held | None = None
    # A renewal or completion was refused: someone else owns the key now. Never completed,
    # deleted or extended from then on.
    lease_lost: bool = False
    # The handler returned: the work is done, whatever becomes of its completion record.
    succeeded: bool = False
    # Failures of this delivery retried in process (FIFO: the group is held meanwhile).
    failures_in_process: int = 0
    # After a failure: the delay a Retry asked for (None: the backoff's).
    retry_delay_seconds: float | None = None
    # Logged once when the 12 h visibility limit stops the heartbeat.
    capped: bool = False
    # Set while the claim's completion is on its way to the store.
    completion: asyncio.Future[bool] | None = field(default=None, repr=False)
    # The task running its handler, and the executor jobs (to_thread) the handler started.
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    work: Work = field(default_factory=Work, repr=False)
    # Its CONSUMER span, from receive until it leaves (None while telemetry is off).
    span: Span | None = field(default=None, repr=False)
    # What went wrong, once something did (the span's error.type).
    error_type: str | None = None

    @classmethod
    def received(cls, message: Message, *, sent_at: float, visibility_seconds: int) -> InFlight:
        """Track a message from a receive request sent at monotonic ``sent_at``."""
        first = message.first_received_at
        return cls(
            message=message,
            # Counted from when the request left, not when the answer came: conservative.
            visible_until=sent_at + visibility_seconds,
            first_received_epoch=first.timestamp() if first is not None else time.time(),
        )

    def visibility_room(self, wall_now: float) -> float:
        """Seconds of visibility SQS still accepts for this message at unix time ``wall_now``
        (12 h from its first receive, less a margin); negative once there are none."""
        held = wall_now - self.first_received_epoch
        return MAX_VISIBILITY_SECONDS - held - _VISIBILITY_LIMIT_MARGIN_SECONDS

    @property
    def message_id(self) -> str:
        """The SQS message id."""
        return self.message.message_id

    @property
    def completed(self) -> bool:
        """Its handler succeeded and, with idempotency, its completion is on record."""
        if self.state is not MessageState.SETTLING or not self.succeeded:
            return False
        if self.held is None:
            return True
        future = self.completion
        return (
            future is not None
            and future.done()
            and not future.cancelled()
            and future.exception() is None
            and future.result()
        )

    @property
    def may_still_run(self) -> bool:
        """Its handler was started and has not stopped: a task that ignored its cancellation,
        or a thread (``to_thread``) that cancellation cannot stop. Not to be released yet."""
        if self.state is not MessageState.RUNNING:
            return False
        task = self.task
        return (task is not None and not task.done()) or self.work.threads_running

    def log_fields(self) -> dict[str, Any]:
        """What the runtime's own log lines about this message carry: ids and its span's ids."""
        fields: dict[str, Any] = {"message_id": self.message.message_id}
        if self.key is not None:
            fields["idempotency_key"] = self.key
        fields.update(span_log_fields(self.span))
        return fields

    def fail(
        self,
        error: BaseException | ErrorType,
        *,
        description: str | None = None,
        record: bool = False,
    ) -> None:
        """Mark the message failed (the first failure wins): its span's status and error.type.

        ``record`` adds the exception's traceback to the span (a handler's unexpected error).
        """
        if self.error_type is not None:
            return
        self.error_type = error_type_of(error)
        mark_error(self.span, error, description=description, record=record)
