"""Sending a held message again: a copy to its own queue, or the message to the dead-letter queue.

SQS counts every receive toward ``maxReceiveCount``, whatever ended the delivery. A message the
runtime itself handed back (at a shutdown, for an in-progress key) must not be dead-lettered
for it, and a message whose own handler failed ``maxReceiveCount`` times must be, even when its
receive count says otherwise. Neither can be done by changing the message; both by sending it
again and deleting the original:

    copy          the same body, message attributes and ``AWSTraceHeader``, plus
                  ``fargate-runtime-requeued: "<failures so far> <first message id>"``, to the
                  same queue (DelaySeconds: the backoff, at most 900 s); a standard queue only:
                  a copy on a FIFO queue would lose its place in its group
    dead-letter   the same, to the redrive policy's dead-letter queue (FIFO: same group and
                  deduplication id, so a repeated move is absorbed by the DLQ's deduplication)

Only once the send succeeded is the original deleted; if the delete then fails the message
exists twice, and the idempotency key absorbs the second (the first run completed it). A send
that is refused (the task role lacks ``sqs:SendMessage``) is logged once and the caller falls
back to a plain hand-back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .client import SQS_ERRORS, error_code
from .message import REQUEUE_ATTRIBUTE
from .settings import MAX_DELAY_SECONDS

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from ._inflight import InFlight

__all__ = ["Requeue"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

# SQS allows 10 message attributes; the runtime's attribute needs one of them.
_MAX_ATTRIBUTES = 10
_MAX_DEDUPLICATION_ID = 128
_ATTRIBUTE_FIELDS = ("DataType", "StringValue", "BinaryValue")


class Requeue:
    """Sends copies and dead-letter moves with the consumer's client."""

    def __init__(self, client: SQSClient, *, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url
        self._refused: set[str] = set()  # error codes already logged

    async def copy(self, item: InFlight, *, failures: int, delay_seconds: int) -> bool:
        """Send a copy of ``item``'s message to its own queue; True once SQS accepted it."""
        delay = max(0, min(MAX_DELAY_SECONDS, delay_seconds))
        if delay < delay_seconds:
            logger.warning(
                "retry delay cut to 900 s: a re-queued copy can be delayed 15 minutes at most",
                extra={**item.log_fields(), "delay_seconds": delay_seconds},
            )
        return await self._send(self._queue_url, item, failures=failures, delay_seconds=delay)

    async def dead_letter(self, item: InFlight, *, dead_letter_url: str, failures: int) -> bool:
        """Send ``item``'s message to the dead-letter queue; True once SQS accepted it."""
        return await self._send(dead_letter_url, item, failures=failures, delay_seconds=0)

    async def _send(
        self, queue_url: str, item: InFlight, *, failures: int, delay_seconds: int
    ) -> bool:
        message = item.message
        # As SQS takes them: the data type and the value (not the reserved list fields).
        attributes: dict[str, Any] = {
            name: {key: value[key] for key in _ATTRIBUTE_FIELDS if key in value}
            for name, value in message.raw_attributes.items()
        }
        if len(attributes) < _MAX_ATTRIBUTES:
            first = message.first_message_id or message.message_id
            attributes[REQUEUE_ATTRIBUTE] = {
                "DataType": "String",
                "StringValue": f"{failures} {first}",
            }
        else:
            logger.warning(
                "message has 10 attributes: its copy cannot carry its failure count",
                extra=item.log_fields(),
            )
        request: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": message.body}
        if attributes:
            request["MessageAttributes"] = attributes
        if message.trace_header is not None:
            request["MessageSystemAttributes"] = {
                "AWSTraceHeader": {"DataType": "String", "StringValue": message.trace_header}
            }
        if message.group_id is not None:
            request["MessageGroupId"] = message.group_id
            dedup = message.deduplication_id or message.message_id
            request["MessageDeduplicationId"] = dedup[:_MAX_DEDUPLICATION_ID]
        elif delay_seconds:
            request["DelaySeconds"] = delay_seconds  # FIFO queues refuse a per-message delay
        try:
            await self._client.send_message(**request)
        except SQS_ERRORS as exc:
            code = error_code(exc) or type(exc).__name__
            if code not in self._refused:
                self._refused.add(code)
                logger.error(
                    "message could not be sent again; handed back instead (the task role needs "
                    "sqs:SendMessage on the queue and its dead-letter queue)",
                    extra={**item.log_fields(), "queue_url": queue_url, "error": repr(exc)},
                )
            return False
        return True
