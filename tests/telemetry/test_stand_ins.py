"""The runtime's traceparent parser and head sampler decide as the OpenTelemetry classes they
stand in for (the W3C propagator, ``ParentBased(TraceIdRatioBased)``), on the same inputs."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fargate_runtime.telemetry._propagation import parse_traceparent
from fargate_runtime.telemetry._sampling import RuntimeSampler

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
HEADERS = [
    f"00-{TRACE}-{SPAN}-01",
    f"00-{TRACE}-{SPAN}-00",
    f"00-{TRACE}-{SPAN}-03",  # a flag beyond "sampled" is kept
    f" \t00-{TRACE}-{SPAN}-01\t ",
    f"00-{TRACE}-{SPAN}-01\n",
    f"01-{TRACE}-{SPAN}-01-future-field",  # a later version may append fields
    f"cc-{TRACE}-{SPAN}-01",
    f"00-{TRACE}-{SPAN}-01-extra",  # version 00 may not
    f"ff-{TRACE}-{SPAN}-01",
    f"00-{TRACE.upper()}-{SPAN}-01",
    f"00-{'0' * 32}-{SPAN}-01",
    f"00-{TRACE}-{'0' * 16}-01",
    f"00-{TRACE[:-1]}-{SPAN}-01",
    f"00-{TRACE}-{SPAN}-1",
    f"00-{TRACE}-{SPAN}-01x",
    f"0g-{TRACE}-{SPAN}-01",
    f"01-{TRACE}-{SPAN}-01-" + "x" * 600,  # over the propagator's 512 characters
    "",
    "traceparent",
]


@pytest.mark.parametrize("header", HEADERS)
def test_traceparent_parses_as_the_w3c_propagator_extracts(header: str) -> None:
    """Valid or not, and the ids and flags when valid: the same answer as the propagator's."""
    extracted = TraceContextTextMapPropagator().extract({"traceparent": header})
    expected = trace.get_current_span(extracted).get_span_context()
    parsed = parse_traceparent(header)
    if not expected.is_valid:
        assert parsed is None
        return
    assert parsed == expected
    assert parsed is not None
    assert parsed.is_remote


def _parent(sampled: bool, *, remote: bool) -> Context:
    span_context = SpanContext(
        int(TRACE, 16),
        int(SPAN, 16),
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=TraceState([("vendor", "value")]),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


PARENTS = {
    "none": None,
    "empty": Context(),
    "remote sampled": _parent(True, remote=True),
    "remote not sampled": _parent(False, remote=True),
    "local sampled": _parent(True, remote=False),
    "local not sampled": _parent(False, remote=False),
}


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("parent", list(PARENTS))
def test_sampler_decides_as_parent_based_ratio(parent: str, ratio: float) -> None:
    """Decision, attributes and trace state match ``ParentBased(TraceIdRatioBased(ratio))``."""
    attributes = {"messaging.system": "aws_sqs"}
    # Trace ids on both sides of the ratio's bound, so ratio 0.5 decides both ways.
    for trace_id in (1, (1 << 64) - 1, int(TRACE, 16)):
        args = (PARENTS[parent], trace_id, "process q", trace.SpanKind.CONSUMER, attributes)
        ours = RuntimeSampler(ratio).should_sample(*args)
        theirs = ParentBased(TraceIdRatioBased(ratio)).should_sample(*args)
        assert ours.decision is theirs.decision, (parent, ratio, trace_id)
        assert dict(ours.attributes) == dict(theirs.attributes)
        assert ours.trace_state == theirs.trace_state
