"""OpenTelemetry for the runtime: providers as a supervisor resource, SQS trace propagation,
the consumer's spans and metrics, the shutdown span.

Off by default, and then free: nothing of OpenTelemetry is imported, its API included (the SQS
propagation helpers below load it when first used). ``FARGATE_RUNTIME_TELEMETRY_ENABLED=true``
installs the SDK's providers; ``FARGATE_RUNTIME_TELEMETRY_OTLP_ENDPOINT`` exports to a collector
(the ADOT sidecar). Their final flush runs off the event loop and never outlasts the close
share: a dead or hung collector costs at most that share and one warning naming it.

This namespace is what users need: the resource and its settings, SQS propagation, the
attribute names and values an operator queries by, the bucket boundaries (for Views), and
``record_event_loop_lag``. The rest of the runtime uses the private modules: ``_core`` (on or
off, the tracer, span outcomes), ``_settings``, ``_providers`` (``Telemetry``), ``_flush`` (the
bounded shutdown), ``_sdk_logs`` (the SDK's own lines), ``_sampling``, ``_propagation`` (SQS
trace context), ``_messages`` (a span per SQS message) and ``_message_tracer`` (its
OpenTelemetry side), ``_instruments`` (metrics and their boundaries), ``_shutdown`` (the
``shutdown`` span and drain duration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ._core import (
    ERROR_TYPE_ATTRIBUTE,
    IDEMPOTENCY_OUTCOME_ATTRIBUTE,
    INSTRUMENTATION_NAME,
    ErrorType,
    IdempotencyOutcome,
    mark_idempotency_outcome,
    metrics_enabled,
    tracing_enabled,
)
from ._instruments import (
    CONVENTION_BUCKETS_SECONDS,
    HANDLER_BUCKETS_SECONDS,
    LOOP_LAG_BUCKETS_SECONDS,
    SHUTDOWN_BUCKETS_SECONDS,
    STORE_BUCKETS_SECONDS,
    record_event_loop_lag,
)
from ._messages import DISPOSITION_ATTRIBUTE, Disposition
from ._providers import Telemetry
from ._settings import TelemetrySettings
from ._shutdown import SHUTDOWN_REASON_ATTRIBUTE

if TYPE_CHECKING:
    from ._propagation import (
        SQS_ATTRIBUTE_LIMIT,
        extract_sqs_context,
        inject_sqs_attributes,
        parse_aws_trace_header,
        process_span,
    )

__all__ = [
    "CONVENTION_BUCKETS_SECONDS",
    "DISPOSITION_ATTRIBUTE",
    "ERROR_TYPE_ATTRIBUTE",
    "HANDLER_BUCKETS_SECONDS",
    "IDEMPOTENCY_OUTCOME_ATTRIBUTE",
    "INSTRUMENTATION_NAME",
    "LOOP_LAG_BUCKETS_SECONDS",
    "SHUTDOWN_BUCKETS_SECONDS",
    "SHUTDOWN_REASON_ATTRIBUTE",
    "SQS_ATTRIBUTE_LIMIT",
    "STORE_BUCKETS_SECONDS",
    "Disposition",
    "ErrorType",
    "IdempotencyOutcome",
    "Telemetry",
    "TelemetrySettings",
    "extract_sqs_context",
    "inject_sqs_attributes",
    "mark_idempotency_outcome",
    "metrics_enabled",
    "parse_aws_trace_header",
    "process_span",
    "record_event_loop_lag",
    "tracing_enabled",
]

# Imported when first asked for: ``_propagation`` loads the OpenTelemetry API.
__getattr__ = lazy_exports(
    __name__,
    dict.fromkeys(
        (
            "SQS_ATTRIBUTE_LIMIT",
            "extract_sqs_context",
            "inject_sqs_attributes",
            "parse_aws_trace_header",
            "process_span",
        ),
        "._propagation",
    ),
)
