"""What each part of telemetry costs the consumer, by taking parts out of the overhead benchmark.

``python -m bench._telemetry_floor [ALTERNATIONS]`` (not part of ``make bench``: about 5 minutes)
runs ``bench/_overhead.py``'s pinned child in these variants, in alternation, and writes the
CPU microseconds per message of each to ``bench/results/telemetry_floor.json``:

- ``off``: telemetry off; ``on``: as shipped (spans batched to an exporter that drops them);
- ``metrics_only``: no spans (the tracer answers "off" to the consumer);
- ``spans_only``: no handler or store durations recorded;
- ``bare_spans_only``: no durations, and each message's span started with nothing on it (no
  attributes, kind, parent or link): what one SDK span per message costs at the least;
- ``no_link``: as shipped but for the link to the producer's span (its parent already);
- ``memory_export``: as shipped, exported as the benchmark once did (each span on the loop, into
  memory, a round's spans kept).

The variants replace runtime functions in the child only; the runtime is not changed.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from bench._results import merge_results, run_child
from fargate_runtime.local import answering_redis

VARIANTS = (
    "off",
    "on",
    "metrics_only",
    "spans_only",
    "bare_spans_only",
    "no_link",
    "memory_export",
)

# Run in the child before the benchmark: each variant's replacements.
_CHILD = """
import sys
variant = {variant!r}
import bench._overhead as overhead
import fargate_runtime.sqs._holdings as holdings
import fargate_runtime.telemetry._instruments as instruments
import fargate_runtime.telemetry._message_tracer as message_tracer
if variant == "metrics_only":
    holdings.tracing_enabled = lambda: False
    install = overhead._install_telemetry
    overhead._install_telemetry = lambda export: (install(export), lambda: 1 << 62)[1]
if variant in ("spans_only", "bare_spans_only"):
    instruments.ConsumerMetrics.record_handler = lambda self, seconds, error_type=None: None
    instruments.ConsumerMetrics.record_store = lambda self, seconds: None
if variant == "bare_spans_only":
    message_tracer.MessageTracer.start = (
        lambda self, message_id, traceparent, aws: self._tracer.start_span(self._name)
    )
if variant == "no_link":
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanKind
    from fargate_runtime.telemetry._propagation import producer_context

    def start(self, message_id, traceparent, aws):
        parent = NonRecordingSpan(producer_context(traceparent, aws))
        return self._tracer.start_span(
            self._name,
            context=trace.set_span_in_context(parent, self._root),
            kind=SpanKind.CONSUMER,
            attributes={{**self._attributes, "messaging.message.id": message_id}},
        )

    message_tracer.MessageTracer.start = start
telemetry = {{"off": None, "memory_export": "memory"}}.get(variant, "batch")
overhead._overhead_child({redis_url!r}, telemetry=telemetry)
"""


def _child(variant: str, redis_url: str) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = run_child(_CHILD.format(variant=variant, redis_url=redis_url))
    return figures


def main(alternations: int = 3) -> dict[str, Any]:
    """Run every variant ``alternations`` times in turn; print and write the medians."""
    cpu_us: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    gc_us: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with answering_redis() as redis_url:
        for _ in range(alternations):
            for variant in VARIANTS:
                figures = _child(variant, redis_url)
                cpu_us[variant] += [1e6 / rate for rate in figures["cpu"]]
                gc_us[variant] += figures["gc_us"]
    off = statistics.median(cpu_us["off"])
    table: dict[str, Any] = {}
    for variant in VARIANTS:
        median = statistics.median(cpu_us[variant])
        table[variant] = {
            "cpu_us_per_message": round(median, 1),
            "added_us": round(median - off, 1),
            "ratio_to_off": round(off / median, 3),
            "gc_us_per_message": round(statistics.median(gc_us[variant]), 1),
            "spread": [round(min(cpu_us[variant]), 1), round(max(cpu_us[variant]), 1)],
        }
        print(
            f"{variant:<16} {median:6.1f} us/msg  +{median - off:5.1f}  "
            f"ratio {off / median:.3f}  gc {table[variant]['gc_us_per_message']:5.1f} us"
        )
    results = {"variants": table, "rounds": len(cpu_us["off"]), "python": sys.version.split()[0]}
    merge_results("telemetry_floor", results)
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
