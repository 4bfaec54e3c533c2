"""What every part of the runtime's telemetry shares: whether it is on, the tracer, span outcomes.

Nothing of OpenTelemetry is imported here. A process where nothing imported its API cannot have
a provider installed, let alone a span: until then the checks below answer "off" from
``sys.modules`` and a worker without telemetry never loads the API. Once it is loaded, the
checks let hot paths skip even building what a no-op span or meter would discard.
"""

from __future__ import annotations

import enum
import functools
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from opentelemetry import trace

__all__ = [
    "ERROR_TYPE_ATTRIBUTE",
    "IDEMPOTENCY_OUTCOME_ATTRIBUTE",
    "INSTRUMENTATION_NAME",
    "ErrorType",
    "IdempotencyOutcome",
    "current_span",
    "error_type_of",
    "mark_error",
    "mark_idempotency_outcome",
    "metrics_enabled",
    "tracer",
    "tracing_enabled",
]

INSTRUMENTATION_NAME: Final = "fargate_runtime"
# The span attribute carrying an idempotency claim's outcome, for SQS messages and HTTP requests.
IDEMPOTENCY_OUTCOME_ATTRIBUTE: Final = "fargate_runtime.idempotency.outcome"
# The conventions' attribute for what went wrong: an exception's class, or a value of ErrorType.
ERROR_TYPE_ATTRIBUTE: Final = "error.type"

_TRACE_API: Final = "opentelemetry.trace"
_METRICS_API: Final = "opentelemetry.metrics"


class IdempotencyOutcome(enum.Enum):
    """What the idempotency claim decided for one message or request (a span attribute)."""

    CLAIMED = "claimed"  # the key is ours: the work runs
    REPLAYED = "replayed"  # completed before: SQS deletes it unrun, HTTP replays the response
    IN_PROGRESS = "in_progress"  # another owner holds it: SQS backs off, HTTP answers 409
    MISMATCH = "mismatch"  # same key, other payload: SQS fails it, HTTP answers 422
    STORE_ERROR = "store_error"  # the store failed: not run (fail closed), or run unclaimed


class ErrorType(enum.Enum):
    """``error.type`` values the runtime defines, for failures that are not an exception's.

    A handler's own exception is named by its class (``ValueError``, ``TimeoutError``), as the
    conventions ask; these name what the runtime decided.
    """

    MALFORMED = "malformed"  # no usable key, or the handler raised MalformedMessageError
    PAYLOAD_MISMATCH = "payload_mismatch"  # same idempotency key, another payload
    STORE_ERROR = "store_error"  # the idempotency store failed: not run, retried later
    DRAIN_DEADLINE = "drain_deadline"  # still running at the drain deadline: cancelled
    COMPLETION_REFUSED = "completion_refused"  # ran, but the completion was not recorded
    BATCH_ITEM_FAILED = "batch_item_failed"  # a batch handler marked it failed (context.fail)


def tracing_enabled() -> bool:
    """True when a recording tracer provider is installed (the SDK's, normally).

    The API's own providers hand out no-op spans; checking first skips the work of building
    one (context extraction, attributes, context managers), which is not free per message.
    """
    api = sys.modules.get(_TRACE_API)  # (typed loosely: the API may not be loaded)
    if api is None:
        return False
    provider = api.get_tracer_provider()
    return not isinstance(provider, api.ProxyTracerProvider | api.NoOpTracerProvider)


def metrics_enabled() -> bool:
    """True when a meter provider other than the API's proxy or no-op one is installed.

    Both of those live in ``opentelemetry.metrics`` (the proxy class is private), so the
    provider's module tells them from the SDK's or any other real implementation.
    """
    api = sys.modules.get(_METRICS_API)
    if api is None:
        return False
    return not type(api.get_meter_provider()).__module__.startswith(_METRICS_API)


@functools.cache
def tracer() -> trace.Tracer:
    """The runtime's tracer, got once (a new tracer per message costs a fifth of the span).

    Until a provider is installed this is the API's proxy, which picks the installed provider's
    tracer up on first use after.
    """
    from opentelemetry import trace

    return trace.get_tracer(INSTRUMENTATION_NAME)


def current_span() -> trace.Span | None:
    """The span current here; None while the API is not loaded (then no span exists)."""
    api = sys.modules.get(_TRACE_API)
    return None if api is None else api.get_current_span()


def mark_idempotency_outcome(outcome: IdempotencyOutcome, span: trace.Span | None = None) -> None:
    """Set the outcome on ``span`` (default: the current one) when it records; else a no-op."""
    target = span if span is not None else current_span()
    if target is not None and target.is_recording():
        target.set_attribute(IDEMPOTENCY_OUTCOME_ATTRIBUTE, outcome.value)


def error_type_of(error: BaseException | ErrorType | str) -> str:
    """The ``error.type`` value for ``error``: an exception's class name, or the value as is."""
    if isinstance(error, ErrorType):
        return error.value
    if isinstance(error, BaseException):
        return type(error).__qualname__
    return error


def mark_error(
    span: trace.Span | None,
    error: BaseException | ErrorType | str,
    *,
    description: str | None = None,
    record: bool = False,
) -> None:
    """End ``span``'s story as a failure: status ERROR and ``error.type``.

    ``record`` adds the exception (with its traceback) as an event, for exceptions nobody else
    records. A no-op on a span that does not record (telemetry off, or sampled out).
    """
    if span is None or not span.is_recording():
        return
    from opentelemetry.trace import Status, StatusCode  # loaded: a span records

    if description is None and isinstance(error, BaseException):
        description = f"{type(error).__name__}: {error}"
    span.set_status(Status(StatusCode.ERROR, description))
    span.set_attribute(ERROR_TYPE_ATTRIBUTE, error_type_of(error))
    if record and isinstance(error, BaseException):
        span.record_exception(error)
