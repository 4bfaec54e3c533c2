"""The drill report as text: the verdict, the figures table, explanations, failures and notes."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import DrillReport

__all__ = ["duplicate_summary", "render_table"]

_EXPLANATIONS_SHOWN = 20


def _seconds(value: float) -> str:
    return f"{value:.2f}"


def duplicate_summary(report: DrillReport) -> str:
    """``3 explained by a hard kill or a Redis restart, 2 not: crash 2`` (the row and the list).

    One wording and one count for both places: explained means excused by a kill or a Redis
    restart; everything else is listed by its cause.
    """
    explained = len(report.explanations) - len(report.unexplained_duplicates)
    text = f"{explained} explained by a hard kill or a Redis restart"
    causes = Counter(e.cause.replace("_", " ") for e in report.unexplained_duplicates)
    if causes:
        listed = ", ".join(f"{cause} {count}" for cause, count in causes.most_common())
        text += f", {len(report.unexplained_duplicates)} not: {listed}"
    return text


def render_table(report: DrillReport, *, title: str = "") -> str:
    """The report as lines of text, ending with a newline."""
    r = report
    verdict = "PASSED" if r.exit_code == 0 else "FAILED"
    unique_detail = f"{r.unique_events} unique + {r.duplicates_sent} duplicates"
    if r.malformed_sent:
        unique_detail += f" + {r.malformed_sent} malformed"
    executions_detail = "" if r.executions_recorded else "(counted from charge requests)"
    rows: list[tuple[str, str, str]] = [
        ("events sent", str(r.events_sent), f"({unique_detail})"),
        ("unique events", str(r.unique_events), ""),
        ("charged", str(r.charged), f"of {r.unique_events} unique"),
        ("lost", str(r.lost), "must be 0"),
        ("dead-lettered", str(r.dead_lettered), ""),
        *(
            [("dead-lettered by the outage", str(r.dead_lettered_by_outage), "must be 0")]
            if r.redis_outages
            else []
        ),
        ("charge attempts", str(r.charge_attempts), ""),
        (
            "duplicate attempts",
            str(r.duplicate_attempts),
            f"({duplicate_summary(r)})" if r.explanations else "",
        ),
        ("double charges", str(r.double_charges), "must be 0"),
        ("handler executions", str(r.handler_executions), executions_detail),
        (
            "SIGTERMs",
            str(r.sigterms),
            f"({r.interruptions} interruptions + {r.sigterms - r.interruptions} at the end)",
        ),
        ("SIGKILLs: overruns", str(r.overruns), "must be 0"),
        ("forced exits", str(r.forced_exits), "(exit 70: work the runtime could not stop)"),
        ("SIGKILLs: chaos", str(r.chaos_kills), "(hard kills, no warning)"),
        ("Redis restarts", str(r.redis_restarts), ""),
        *([("Redis outages", str(r.redis_outages), "")] if r.redis_outages else []),
        ("drain p50", f"{_seconds(r.drain_seconds_p50)} s", "(SIGTERM to exit)"),
        ("drain p95", f"{_seconds(r.drain_seconds_p95)} s", ""),
        (
            "drain max",
            f"{_seconds(r.drain_seconds_max)} s",
            f"budget {_seconds(r.drain_budget_seconds)} s (stop timeout "
            f"{r.stop_timeout_seconds:g} s minus margin)",
        ),
        ("released on shutdown", str(r.released_on_shutdown), ""),
        (
            "hidden by abandoned receive",
            str(r.hidden_by_abandoned_receive),
            "(at most: what the polls cut at SIGTERM asked for; each back within the visibility)",
        ),
        (
            "throughput",
            f"{r.events_per_second:.1f} events/s",
            f"(charged; messages sent at {r.messages_per_second_sent:g}/s)",
        ),
        ("duration", f"{r.duration_seconds:.1f} s", ""),
    ]
    label_width = max(len(label) for label, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = [f"fargate-runtime drill: {verdict} (exit {r.exit_code}){title}", ""]
    lines += [
        f"  {label:<{label_width}}  {value:>{value_width}}  {detail}".rstrip()
        for label, value, detail in rows
    ]
    if r.explanations:
        lines += ["", f"Duplicate attempts ({len(r.explanations)}: {duplicate_summary(r)}):"]
        for explanation in r.explanations[:_EXPLANATIONS_SHOWN]:
            mark = "explained" if explanation.excused else "NOT EXPLAINED"
            lines.append(f"  [{mark}] {explanation.text}")
        if len(r.explanations) > _EXPLANATIONS_SHOWN:
            lines.append(f"  ... and {len(r.explanations) - _EXPLANATIONS_SHOWN} more")
    if r.failures:
        lines += ["", "Failures:"]
        lines += [f"  - {failure}" for failure in r.failures]
    if r.notes:
        lines += ["", "Notes:"]
        lines += [f"  - {note}" for note in r.notes]
    return "\n".join(lines) + "\n"
