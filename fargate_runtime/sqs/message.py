"""One received SQS message, as handlers see it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import MalformedMessageError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from types_aiobotocore_sqs.type_defs import MessageTypeDef

__all__ = ["REQUEUE_ATTRIBUTE", "Message"]

_NOT_PARSED: Any = object()
# The attribute a copy re-queued by the runtime carries: "<failures so far> <first message id>"
# (``_handback``). Kept off ``Message.attributes``: it is the runtime's, not the producer's.
REQUEUE_ATTRIBUTE = "fargate-runtime-requeued"


def _timestamp(value: str | None) -> datetime | None:
    # SQS system attributes carry epoch milliseconds as strings.
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except ValueError:
        return None


def _attribute_value(value: Mapping[str, Any]) -> str | bytes | None:
    if "StringValue" in value:
        return str(value["StringValue"])
    if "BinaryValue" in value:
        return bytes(value["BinaryValue"])
    return None


def _requeued(value: Mapping[str, Any]) -> tuple[int, str | None]:
    """(earlier failures, first message id) from the runtime's requeue attribute."""
    text = value.get("StringValue")
    if not isinstance(text, str):
        return 0, None
    failures, _, first = text.partition(" ")
    try:
        return max(0, int(failures)), first or None
    except ValueError:
        return 0, None


@dataclass(slots=True, eq=False)
class Message:
    """A message received from SQS.

    ``receipt_handle`` is the one from the latest receive: SQS issues a new handle on every
    receive, and deleting with an old one "succeeds but might not delete" (SQS API reference),
    so the consumer updates it when the same message comes back while still in flight.
    """

    message_id: str
    body: str
    receipt_handle: str
    # System attributes (ApproximateReceiveCount, SentTimestamp, MessageGroupId, ...).
    system_attributes: Mapping[str, str] = field(default_factory=dict)
    # Message attributes, as their string or binary value.
    attributes: Mapping[str, str | bytes] = field(default_factory=dict)
    # Failures of earlier copies, when the runtime re-queued this message as a copy (a receive
    # count near maxReceiveCount for reasons other than failures), and the first copy's id.
    earlier_failures: int = 0
    first_message_id: str | None = None
    # The message attributes as SQS gave them (data types kept), for a faithful copy.
    raw_attributes: Mapping[str, Any] = field(default_factory=dict, repr=False)
    _json: Any = field(default=_NOT_PARSED, init=False, repr=False)

    @classmethod
    def from_response(cls, raw: MessageTypeDef) -> Message:
        """Build from one entry of ``ReceiveMessage``'s ``Messages``."""
        raw_attributes: Mapping[str, Any] = raw.get("MessageAttributes", {})
        requeued: tuple[int, str | None] = (0, None)
        if REQUEUE_ATTRIBUTE in raw_attributes:
            raw_attributes = dict(raw_attributes)
            requeued = _requeued(raw_attributes.pop(REQUEUE_ATTRIBUTE))
        attributes = {
            name: parsed
            for name, value in raw_attributes.items()
            if (parsed := _attribute_value(value)) is not None
        }
        system = {str(name): value for name, value in raw.get("Attributes", {}).items()}
        return cls(
            message_id=raw.get("MessageId", ""),
            body=raw.get("Body", ""),
            receipt_handle=raw.get("ReceiptHandle", ""),
            system_attributes=MappingProxyType(system),
            attributes=MappingProxyType(attributes),
            earlier_failures=requeued[0],
            first_message_id=requeued[1],
            raw_attributes=raw_attributes,
        )

    def json(self) -> Any:
        """The body parsed as JSON (parsed once); ``MalformedMessageError`` when it is not JSON."""
        if self._json is _NOT_PARSED:
            try:
                self._json = json.loads(self.body)
            except ValueError as exc:
                raise MalformedMessageError(
                    f"message {self.message_id} body is not JSON: {exc}"
                ) from exc
        return self._json

    @property
    def receive_count(self) -> int:
        """``ApproximateReceiveCount``: 1 on the first delivery (1 when SQS did not say)."""
        try:
            return max(1, int(self.system_attributes.get("ApproximateReceiveCount", "1")))
        except ValueError:
            return 1

    @property
    def group_id(self) -> str | None:
        """``MessageGroupId`` (FIFO queues)."""
        return self.system_attributes.get("MessageGroupId")

    @property
    def deduplication_id(self) -> str | None:
        """``MessageDeduplicationId`` (FIFO queues)."""
        return self.system_attributes.get("MessageDeduplicationId")

    @property
    def sent_at(self) -> datetime | None:
        """``SentTimestamp``: when SQS accepted the message."""
        return _timestamp(self.system_attributes.get("SentTimestamp"))

    @property
    def first_received_at(self) -> datetime | None:
        """``ApproximateFirstReceiveTimestamp``: the 12 h visibility limit counts from here."""
        return _timestamp(self.system_attributes.get("ApproximateFirstReceiveTimestamp"))

    @property
    def trace_header(self) -> str | None:
        """``AWSTraceHeader`` (X-Ray), when the producer set one."""
        return self.system_attributes.get("AWSTraceHeader")
