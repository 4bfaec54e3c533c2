"""The runtime's head sampler: the configured ratio, except for the ``shutdown`` span.

Imported only when telemetry is installed (it subclasses the SDK's ``Sampler``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
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
        self._delegate = ParentBased(TraceIdRatioBased(ratio))
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
        """Sample the shutdown span always; anything else as the ratio and its parent say."""
        if attributes is not None and SHUTDOWN_REASON_ATTRIBUTE in attributes:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """The sampler's name, as the SDK reports it."""
        return self._description
