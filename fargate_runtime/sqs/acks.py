"""Batched deletes and visibility changes: 10 entries per call, every ``Failed[]`` entry checked.

``DeleteMessageBatch`` and ``ChangeMessageVisibilityBatch`` answer HTTP 200 with per-entry
``Successful[]`` and ``Failed[]`` lists (SQS API reference), so a call that "worked" may still
have failed for some entries. Each entry ends in one ``AckOutcome``:

- ``DONE``: SQS accepted it.
- ``GONE``: the receipt handle is no longer valid (``ReceiptHandleIsInvalid``) or the message is
  not in flight any more (``MessageNotInflight``): someone else has it, or it was deleted. There
  is nothing left to do; idempotency, not the delete, decides whether work runs again.
- ``GAVE_UP``: a sender fault (retrying cannot help) or every attempt failed; logged. The
  message comes back after its visibility timeout and the idempotency record absorbs it.

Entries are flushed when 10 are waiting, after ``flush_interval_seconds`` otherwise, and at once
on ``flush()`` (shutdown, releases that must be visible at once). An entry may carry how to get
its message's log fields (its ids and its span's, read only when a line is logged), so the line
about an entry given up names it the way every other line about that message does.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .client import SQS_ERRORS, is_fatal
from .settings import MAX_BATCH

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import TypeAlias

    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import BatchResultErrorEntryTypeDef

    # Gives a message's log fields when a line about it is logged (never on the happy path).
    LogFields: TypeAlias = Callable[[], Mapping[str, Any]]

__all__ = ["AckCounters", "AckOutcome", "DeleteBuffer", "VisibilityBuffer"]

logger = logging.getLogger("fargate_runtime.sqs.acks")

# Failed[] codes that mean "this receipt handle no longer refers to a message we hold".
GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidReceiptHandle"})


class AckOutcome(enum.Enum):
    """How one delete or visibility change ended."""

    DONE = "done"
    GONE = "gone"
    GAVE_UP = "gave_up"


@dataclass(slots=True)
class AckCounters:
    """Entries by outcome, and calls made (for requests-per-message figures)."""

    done: int = 0
    gone: int = 0
    gave_up: int = 0
    calls: int = 0


@dataclass(slots=True)
class _Entry:
    message_id: str
    receipt_handle: str
    future: asyncio.Future[AckOutcome]
    visibility_timeout: int = 0
    attempts: int = 0
    # The message's log fields (ids, its span's ids); message_id alone when none were given.
    log_fields: LogFields | None = None

    def fields(self) -> Mapping[str, Any]:
        return self.log_fields() if self.log_fields else {"message_id": self.message_id}


@dataclass(slots=True)
class _Response:
    failed: list[BatchResultErrorEntryTypeDef] = field(default_factory=list)


class _BatchBuffer:
    """Entries waiting for a batch call; subclasses say which call."""

    operation = ""

    def __init__(
        self,
        client: SQSClient,
        *,
        queue_url: str,
        flush_interval_seconds: float,
        attempts: int,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._interval = flush_interval_seconds
        self._attempts = attempts
        self._pending: list[_Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._in_flight: dict[asyncio.Task[None], list[_Entry]] = {}
        self.counters = AckCounters()

    def __len__(self) -> int:
        return len(self._pending)

    def _add(self, entry: _Entry) -> asyncio.Future[AckOutcome]:
        self._pending.append(entry)
        if len(self._pending) >= MAX_BATCH:
            self._send_full_batches()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._interval, self._send_all)
        return entry.future

    def _send_full_batches(self) -> None:
        while len(self._pending) >= MAX_BATCH:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._start(batch)
        if not self._pending and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send_all(self) -> None:
        self._timer = None
        self._send_full_batches()
        if self._pending:
            batch, self._pending = self._pending, []
            self._start(batch)

    def _start(self, batch: list[_Entry]) -> None:
        task = asyncio.create_task(self._send(batch), name=f"sqs-{self.operation}")
        self._sending.add(task)
        self._in_flight[task] = batch
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._in_flight.pop(task, None)

    def unsent(self) -> list[tuple[str, str]]:
        """(message id, receipt handle) of entries not yet settled; readable from any thread."""
        entries = list(self._pending)
        for batch in list(self._in_flight.values()):
            entries.extend(batch)
        return [(e.message_id, e.receipt_handle) for e in entries if not e.future.done()]

    async def flush(self) -> None:
        """Send everything waiting now and wait until every entry (and its retries) has ended."""
        while self._pending or self._sending:
            if self._timer is not None:
                self._timer.cancel()
            self._send_all()
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _send(self, batch: list[_Entry]) -> None:
        self.counters.calls += 1
        try:
            response = await self._call(batch)
        except asyncio.CancelledError:
            for entry in batch:
                if not entry.future.done():
                    entry.future.cancel()
            raise
        except SQS_ERRORS as exc:
            # The whole call failed (throttled after botocore's retries, connection dropped):
            # every entry gets another attempt unless the error says retrying is pointless.
            logger.warning(
                "sqs %s call failed",
                self.operation,
                extra={"entries": len(batch), "error": repr(exc)},
            )
            self._retry_or_give_up(batch, reason=repr(exc), retryable=not is_fatal(exc))
            return
        by_id = {str(index): entry for index, entry in enumerate(batch)}
        failed_ids = set()
        for failure in response.failed:
            failed = by_id.get(failure["Id"])
            if failed is None:
                continue
            failed_ids.add(failure["Id"])
            code = failure.get("Code", "")
            if code in GONE_CODES:
                logger.debug(
                    "sqs %s: message gone",
                    self.operation,
                    extra={**failed.fields(), "code": code},
                )
                self._settle(failed, AckOutcome.GONE)
            else:
                reason = f"{code}: {failure.get('Message', '')}"
                self._retry_or_give_up(
                    [failed], reason=reason, retryable=not failure.get("SenderFault", False)
                )
        for index, entry in by_id.items():
            if index not in failed_ids:
                self._settle(entry, AckOutcome.DONE)

    def _retry_or_give_up(self, entries: Sequence[_Entry], *, reason: str, retryable: bool) -> None:
        for entry in entries:
            entry.attempts += 1
            if retryable and entry.attempts < self._attempts:
                self._add(entry)
                continue
            logger.error(
                "sqs %s given up",
                self.operation,
                extra={**entry.fields(), "attempts": entry.attempts, "reason": reason},
            )
            self._settle(entry, AckOutcome.GAVE_UP)

    def _settle(self, entry: _Entry, outcome: AckOutcome) -> None:
        if outcome is AckOutcome.DONE:
            self.counters.done += 1
        elif outcome is AckOutcome.GONE:
            self.counters.gone += 1
        else:
            self.counters.gave_up += 1
        if not entry.future.done():
            entry.future.set_result(outcome)

    async def _call(self, batch: Sequence[_Entry]) -> _Response:
        raise NotImplementedError


class DeleteBuffer(_BatchBuffer):
    """Deletes, sent with ``DeleteMessageBatch``."""

    operation = "delete"

    def delete(
        self,
        message_id: str,
        *,
        receipt_handle: str,
        log_fields: LogFields | None = None,
    ) -> asyncio.Future[AckOutcome]:
        """Queue a delete; the future tells how it ended (nobody has to await it).

        ``log_fields()``: what a line about this delete carries (default: the message id).
        """
        future = asyncio.get_running_loop().create_future()
        entry = _Entry(message_id, receipt_handle, future, log_fields=log_fields)
        return self._add(entry)

    async def _call(self, batch: Sequence[_Entry]) -> _Response:
        response = await self._client.delete_message_batch(
            QueueUrl=self._queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": entry.receipt_handle}
                for index, entry in enumerate(batch)
            ],
        )
        return _Response(list(response.get("Failed", [])))


class VisibilityBuffer(_BatchBuffer):
    """Visibility changes (backoffs, releases, heartbeats), sent with the batch call."""

    operation = "change_visibility"

    def change(
        self,
        message_id: str,
        *,
        receipt_handle: str,
        timeout_seconds: int,
        log_fields: LogFields | None = None,
    ) -> asyncio.Future[AckOutcome]:
        """Queue a change to ``timeout_seconds`` from when SQS applies it (0: visible at once).

        ``log_fields()``: what a line about this change carries (default: the message id).
        """
        future = asyncio.get_running_loop().create_future()
        entry = _Entry(
            message_id,
            receipt_handle,
            future,
            visibility_timeout=timeout_seconds,
            log_fields=log_fields,
        )
        return self._add(entry)

    async def change_now(
        self,
        changes: Sequence[tuple[str, str, int]],
        *,
        log_fields: Mapping[str, LogFields] | None = None,
    ) -> list[AckOutcome]:
        """Change several at once (no waiting for the interval) and return their outcomes.

        ``log_fields`` maps a message id to what gives the fields of lines about its change.
        """
        fields = log_fields or {}
        futures = [
            self.change(
                message_id,
                receipt_handle=handle,
                timeout_seconds=seconds,
                log_fields=fields.get(message_id),
            )
            for message_id, handle, seconds in changes
        ]
        await self.flush()
        return [await future for future in futures]

    async def _call(self, batch: Sequence[_Entry]) -> _Response:
        response = await self._client.change_message_visibility_batch(
            QueueUrl=self._queue_url,
            Entries=[
                {
                    "Id": str(index),
                    "ReceiptHandle": entry.receipt_handle,
                    "VisibilityTimeout": entry.visibility_timeout,
                }
                for index, entry in enumerate(batch)
            ],
        )
        return _Response(list(response.get("Failed", [])))
