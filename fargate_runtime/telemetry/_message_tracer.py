"""The OpenTelemetry side of the consumer's message spans (``_messages`` is the other).

Imported when the first span is made, so a worker without telemetry never loads the API. Per
message it does what the SDK needs and no more: the producer's ``traceparent`` parsed straight
into a span context, attributes built once per queue, one context attach to make the span
current (``SpanScope``, the API's ``use_span`` without the exception handling the consumer does
itself, and without its generator).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind

from ._core import INSTRUMENTATION_NAME
from ._propagation import process_attributes, producer_context

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MessageTracer", "SpanScope"]

_MESSAGE_ID: Final = "messaging.message.id"
_BATCH_COUNT: Final = "messaging.batch.message_count"


class MessageTracer:
    """Starts the CONSUMER spans of one queue's messages (asked only while a tracer records)."""

    def __init__(self, queue_name: str) -> None:
        self._name = f"process {queue_name}"
        self._attributes: dict[str, str | int] = dict(process_attributes(queue_name))
        # The installed provider's own tracer (telemetry is on by now), not the API's proxy.
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME)
        # An explicit empty context: a message without a producer context starts a new trace,
        # whatever span the receiving task happens to be in.
        self._root = Context()

    def start(
        self, message_id: str, traceparent: str | None, aws_trace_header: str | None
    ) -> trace.Span:
        """The span of a message just received, child of and linked to its producer's span."""
        attributes = {**self._attributes, _MESSAGE_ID: message_id}
        producer = producer_context(traceparent, aws_trace_header)
        if producer is None:
            return self._tracer.start_span(
                self._name, context=self._root, kind=SpanKind.CONSUMER, attributes=attributes
            )
        return self._tracer.start_span(
            self._name,
            context=trace.set_span_in_context(NonRecordingSpan(producer), self._root),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=(Link(producer),),
        )

    def start_batch(self, spans: Sequence[trace.Span | None]) -> trace.Span:
        """The span a batch handler runs in: a new trace linking to each message's span."""
        attributes = {**self._attributes, _BATCH_COUNT: len(spans)}
        links = [Link(span.get_span_context()) for span in spans if span is not None]
        return self._tracer.start_span(
            self._name,
            context=self._root,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )


class SpanScope:
    """``span`` is the current span inside the block; its status is left alone."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def __enter__(self) -> trace.Span:
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *exc_info: object) -> None:
        context.detach(self._token)
