"""What a handler gets besides its message: the key, the fencing token, the deadline, a logger,
and with the PostgreSQL store a transaction that commits together with the message's record."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from ..errors import ConfigurationError
from .backoff import checked_delay

if TYPE_CHECKING:
    import contextlib

    from ..idempotency import Transaction, TransactionalClaim
    from ..lifecycle import Lifecycle
    from .message import Message

__all__ = ["BatchContext", "BatchHandler", "Handler", "MessageContext"]

_handler_logger = logging.getLogger("fargate_runtime.sqs.handler")


class _Deadline:
    """Shared by both contexts: how long the handler may still run."""

    __slots__ = ("_lifecycle",)

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle

    @property
    def shutdown_requested(self) -> bool:
        """True once the process is draining: finish quickly, start nothing long."""
        return self._lifecycle.shutdown_requested

    @property
    def deadline(self) -> float:
        """Monotonic time at which the handler is cancelled: the drain deadline, else infinity.

        Before shutdown the heartbeat keeps the message (up to 12 h); once SIGTERM arrives a
        handler still running at the drain deadline is cancelled and its message released.
        """
        deadlines = self._lifecycle.deadlines
        return deadlines.drain if deadlines is not None else math.inf

    def seconds_left(self) -> float:
        """Seconds until ``deadline`` (infinity while no shutdown is requested)."""
        return self._lifecycle.drain_seconds_left()


class MessageContext(_Deadline):
    """One message's context.

    Pass ``idempotency_key`` downstream (a payment provider's ``Idempotency-Key``) and
    ``fencing_token`` to conditional writes: our claim can expire under a stalled worker, and
    only the downstream check stops that zombie from acting twice (DESIGN.md section 4).

    With the PostgreSQL store, write through ``transaction()`` instead: the writes commit with
    the message's completion record, so they happen exactly once (``recovery`` adds
    recovery points for effects in several steps)::

        async with context.transaction() as tx:
            await tx.execute("INSERT INTO charges (event_id, amount) VALUES ($1, $2)", ...)
    """

    __slots__ = ("fencing_token", "idempotency_key", "logger", "message_id", "recovery")

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        message_id: str,
        idempotency_key: str | None,
        fencing_token: int | None,
        logger: logging.Logger = _handler_logger,
        recovery: TransactionalClaim | None = None,
    ) -> None:
        super().__init__(lifecycle)
        self.message_id = message_id
        # None when the consumer runs without idempotency.
        self.idempotency_key = idempotency_key
        self.fencing_token = fencing_token
        # Log lines written while the handler runs carry message_id and idempotency_key.
        self.logger = logger
        # Transactions and recovery points of this message's claim (PostgreSQL store only;
        # None otherwise). Not ``work``: that names the executor attribution of the consumer.
        self.recovery = recovery

    def transaction(
        self, *, isolation: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """A transaction whose COMMIT also completes this message's idempotency record.

        Its writes and the record land together or not at all; a claim lost meanwhile raises
        LeaseLostError and rolls them back. Needs the PostgreSQL store.
        """
        if self.recovery is None:
            raise ConfigurationError(
                "context.transaction() needs the consumer's idempotency on the PostgreSQL store "
                "(FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres) and a claimed message"
            )
        return self.recovery.transaction(isolation=isolation)


class BatchContext(_Deadline):
    """A batch's context: each message's own context, and a way to fail some of them.

    Messages not marked with ``fail()`` are deleted when the handler returns; raising fails them
    all. On FIFO queues, messages come in queue order: fail every message of a group after its
    first failure too, or the later ones are deleted although the earlier one will run again.
    """

    __slots__ = ("_contexts", "_failures", "logger")

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        contexts: dict[str, MessageContext],
        logger: logging.Logger = _handler_logger,
    ) -> None:
        super().__init__(lifecycle)
        self._contexts = contexts
        self._failures: dict[str, float | None] = {}
        self.logger = logger

    def context_for(self, message: Message) -> MessageContext:
        """The key and fencing token of one message of the batch."""
        return self._contexts[message.message_id]

    def fail(self, message: Message, *, delay_seconds: float | None = None) -> None:
        """Retry ``message`` after ``delay_seconds`` (None: the backoff for its receive count);
        ValueError for a negative or non-finite delay."""
        if message.message_id not in self._contexts:
            raise KeyError(f"message {message.message_id} is not part of this batch")
        self._failures[message.message_id] = checked_delay(delay_seconds, what="fail")

    @property
    def failures(self) -> dict[str, float | None]:
        """Message ids marked failed, with their requested delays."""
        return dict(self._failures)


# async def handle(message: Message, context: MessageContext) -> None
Handler: TypeAlias = Callable[["Message", MessageContext], Awaitable[object]]
# async def handle_batch(messages: Sequence[Message], context: BatchContext) -> None
BatchHandler: TypeAlias = Callable[[Sequence["Message"], BatchContext], Awaitable[object]]
