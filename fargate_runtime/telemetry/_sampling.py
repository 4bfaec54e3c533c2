"""The runtime's head sampler: the configured ratio, except for the ``shutdown`` span.

Imported only when telemetry is installed (it subclasses the SDK's ``Sampler``). It decides as
``ParentBased(TraceIdRatioBased(ratio))`` does, with the parent's decision taken here directly:
a message's span mostly has a parent (its producer's), and the SDK's composite spends three
sampler calls and two context look-ups to reach the same answer (2.5 against 1.7 µs a span).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)

from ._shutdown import SHUTDOWN_REASON_ATTRIBUTE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.context import Context
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes

__all__ = ["RuntimeSampler"]


class RuntimeSampler(Sampler):
    """``ParentBased(TraceIdRatioBased(ratio))``, and every span with a shutdown reason."""

    def __init__(self, ratio: float) -> None:
        self._root = TraceIdRatioBased(ratio)
        self._description = f"RuntimeSampler{{ParentBased{{TraceIdRatioBased{{{ratio}}}}}}}"

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Sample the shutdown span always; a child as its parent was; a root by the ratio."""
        if attributes is not None and SHUTDOWN_REASON_ATTRIBUTE in attributes:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid:
            return self._root.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        # Remote or local alike: the parent's sampled flag decides, its trace state carries on.
        if parent.trace_flags.sampled:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state)
        return SamplingResult(Decision.DROP, None, parent.trace_state)

    def get_description(self) -> str:
        """The sampler's name, as the SDK reports it."""
        return self._description
