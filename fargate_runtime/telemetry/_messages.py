"""One CONSUMER span per SQS message, from its receive until it leaves the consumer.

Every message gets one, whatever happens to it: run, rejected before the handler (no usable key),
a completed duplicate, in progress elsewhere, a payload mismatch, released at shutdown. The span
is the producer's child and links to it (the messaging conventions' advice for consumers), so a
producer's trace always ends in what became of its message::

    receive ─▶ span starts (attributes built once per consumer, plus the message id)
      claim ─▶ fargate_runtime.idempotency.outcome
      handler runs inside it (its log lines and child spans carry its ids)
      failure ─▶ status ERROR, error.type: the exception's class, or an ErrorType value
    leaves ─▶ fargate_runtime.sqs.disposition (deleted / backed_off / released), span ends

A batch handler runs in a span of its own that links to each message's span.

This module holds no OpenTelemetry: the spans are made by ``_message_tracer``, imported with the
API when the first one is (telemetry on).
"""

from __future__ import annotations

import contextlib
import enum
import functools
from typing import TYPE_CHECKING, Final

from ._core import tracing_enabled

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry import trace

    from ._message_tracer import MessageTracer, SpanScope

__all__ = ["DISPOSITION_ATTRIBUTE", "Disposition", "MessageSpans", "end_message_span", "within"]

DISPOSITION_ATTRIBUTE: Final = "fargate_runtime.sqs.disposition"


class Disposition(enum.Enum):
    """How a message left the consumer (a span attribute)."""

    DELETED = "deleted"  # handled, or a completed duplicate: deleted
    BACKED_OFF = "backed_off"  # visible again after a backoff: failed, or in progress elsewhere
    RELEASED = "released"  # visible again at once: shutdown, or behind a failed FIFO message
    REQUEUED = "requeued"  # a copy sent in its place (near maxReceiveCount, not for failures)
    DEAD_LETTERED = "dead_lettered"  # moved to the DLQ by the runtime: failed often enough


class MessageSpans:
    """Starts the spans of one queue's messages; nothing (None) while no tracer records."""

    def __init__(self, *, queue_name: str) -> None:
        self._queue_name = queue_name
        self._tracer: MessageTracer | None = None

    def _made(self) -> MessageTracer:
        from ._message_tracer import MessageTracer

        self._tracer = MessageTracer(self._queue_name)
        return self._tracer

    def start(
        self, *, message_id: str, traceparent: str | None, aws_trace_header: str | None
    ) -> trace.Span | None:
        """The span of a message just received, child of and linked to its producer's span."""
        if not tracing_enabled():
            return None
        return (self._tracer or self._made()).start(message_id, traceparent, aws_trace_header)

    def start_batch(self, spans: Sequence[trace.Span | None]) -> trace.Span | None:
        """The span a batch handler runs in: a new trace linking to each message's span."""
        if not tracing_enabled():
            return None
        return (self._tracer or self._made()).start_batch(spans)


def within(span: trace.Span | None) -> contextlib.AbstractContextManager[object]:
    """Make a message's (or batch's) span current for the block; nothing without one.

    Its status is left alone: the consumer says what a failure means (``InFlight.fail``).
    """
    if span is None:
        return contextlib.nullcontext()
    return _span_scope()(span)


@functools.cache
def _span_scope() -> type[SpanScope]:
    from ._message_tracer import SpanScope

    return SpanScope


def end_message_span(span: trace.Span | None, disposition: Disposition) -> None:
    """Say how the message left and end its span."""
    if span is None:
        return
    span.set_attribute(DISPOSITION_ATTRIBUTE, disposition.value)
    span.end()
