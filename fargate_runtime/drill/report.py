"""The drill's verdict: the figures, why each duplicate attempt happened, and the exit code.

How each figure is counted (also in ``--help`` and the README)::

    events_sent                 messages sent: events, their duplicates and malformed bodies
    duplicates_sent             messages repeating an event_id already sent
    unique_events               distinct event ids sent
    charged                     unique events the provider applied at least once (ledger)
    charge_attempts             requests the provider got (ledger)
    duplicate_attempts          requests beyond the first per event (ledger)
    double_charges              events applied more than once (ledger)
    lost                        unique events neither charged nor in the DLQ at the end
    dead_lettered               messages found in the DLQ (malformed ones belong there)
    dead_lettered_by_outage     well-formed events found in the DLQ after a Redis outage
                                (--redis-outage-seconds): must be 0, an outage pauses intake
    handler_executions          handler runs the worker recorded (else: charge_attempts)
    sigterms                    SIGTERMs sent: interruptions and the final scale-in
    overruns                    workers SIGKILLed at the stop timeout after their SIGTERM
    forced_exits                workers the runtime's watchdog ended at the hard deadline
                                (exit 70): work it could not stop (--misbehave-share)
    chaos_kills                 SIGKILLs without warning (--hard-kill-share)
    drain_seconds_p50/p95/max   SIGTERM -> process exit, measured by the drill
    drain_budget_seconds        stop timeout minus the runtime's margin: all a drain may use
    released_on_shutdown        messages released at shutdown, summed over the consumers'
                                final counters (a SIGKILLed worker reports none)
    hidden_by_abandoned_receive an upper bound: the messages the receives abandoned at shutdown
                                asked for (SQS may hand them some; each is visible again
                                after the receive visibility, 10 s by default)
    events_per_second           charged / (last charge - first send)
    duration_seconds            the whole drill, components started to last worker gone

The drill passes (exit 0) only when lost = 0, double_charges = 0, overruns = 0, no worker exited
on its own (a crash), no event was dead-lettered because of a Redis outage, and every duplicate
attempt is explained by a hard kill or a Redis restart (with ``--misbehave-share``, also by a
misbehaving handler's forced exit or drain deadline, and with ``--redis-outage-seconds`` by
the outage, as long as the provider saw the same key: cut work is retried, never charged
twice).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..lifecycle import ExitCode
from .explanations import Explanation, explain
from .interrupter import IncidentKind
from .workers import EndKind

if TYPE_CHECKING:
    from pathlib import Path

    from ..settings import ShutdownBudget
    from .accounting import LedgerSnapshot
    from .components import DeadLetter
    from .interrupter import Incident
    from .plan import Plan
    from .workers import WorkerSummary

__all__ = ["JSON_FIELDS", "DrillReport", "Explanation", "Observations", "build_report"]

JSON_FIELDS = (
    "events_sent",
    "duplicates_sent",
    "unique_events",
    "charged",
    "charge_attempts",
    "duplicate_attempts",
    "double_charges",
    "lost",
    "dead_lettered",
    "dead_lettered_by_outage",
    "handler_executions",
    "sigterms",
    "overruns",
    "forced_exits",
    "chaos_kills",
    "drain_seconds_p50",
    "drain_seconds_p95",
    "drain_seconds_max",
    "drain_budget_seconds",
    "stop_timeout_seconds",
    "released_on_shutdown",
    "hidden_by_abandoned_receive",
    "events_per_second",
    "duration_seconds",
)
_LISTED = 10  # at most this many examples per failure


@dataclass(frozen=True, slots=True)
class Observations:
    """Everything the drill saw, in drill seconds (``wall_start`` maps the ledger's unix times)."""

    plan: Plan
    sent: int
    ledger: LedgerSnapshot
    dead_letters: tuple[DeadLetter, ...]
    workers: tuple[WorkerSummary, ...]
    incidents: tuple[Incident, ...]
    budget: ShutdownBudget
    wall_start: float
    sending_started_at: float
    duration_seconds: float
    timed_out: bool = False
    left_in_queue: int = 0
    skipped_interruptions: int = 0
    misbehave_share: float = 0.0
    redis_outage_seconds: float = 0.0


@dataclass(slots=True)
class DrillReport:
    """The figures (``JSON_FIELDS``, in that order) and what stands behind them."""

    events_sent: int
    duplicates_sent: int
    unique_events: int
    charged: int
    charge_attempts: int
    duplicate_attempts: int
    double_charges: int
    lost: int
    dead_lettered: int
    dead_lettered_by_outage: int
    handler_executions: int
    sigterms: int
    overruns: int
    forced_exits: int
    chaos_kills: int
    drain_seconds_p50: float
    drain_seconds_p95: float
    drain_seconds_max: float
    drain_budget_seconds: float
    stop_timeout_seconds: float
    released_on_shutdown: int
    hidden_by_abandoned_receive: int
    events_per_second: float
    duration_seconds: float
    malformed_sent: int = 0
    interruptions: int = 0
    redis_restarts: int = 0
    redis_outages: int = 0
    executions_recorded: bool = True
    messages_per_second_sent: float = 0.0  # the producer's pace: throughput's ceiling
    explanations: list[Explanation] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Exactly ``JSON_FIELDS``."""
        return {name: getattr(self, name) for name in JSON_FIELDS}

    def write_json(self, path: Path) -> None:
        """Write ``as_json()`` to ``path``."""
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")

    @property
    def unexplained_duplicates(self) -> list[Explanation]:
        """Duplicate attempts no hard kill or Redis restart accounts for."""
        return [e for e in self.explanations if not e.excused]

    @property
    def exit_code(self) -> int:
        """0 when the drill passed, 1 when anything in ``failures``."""
        return 1 if self.failures else 0


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (0 for no values): the smallest value with ``share`` at or below."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _drain_figures(workers: tuple[WorkerSummary, ...]) -> tuple[float, float, float]:
    drains = [w.drain_seconds for w in workers if w.drain_seconds is not None]
    return (
        round(percentile(drains, 0.50), 3),
        round(percentile(drains, 0.95), 3),
        round(max(drains, default=0.0), 3),
    )


def build_report(seen: Observations) -> DrillReport:
    """Count, explain and judge."""
    sent = seen.plan.messages[: seen.sent]
    unique = {m.event_id for m in sent if m.event_id is not None}
    counts = seen.ledger.counts()
    charged_events = seen.ledger.charged_events() & unique
    dead_events = {d.event_id for d in seen.dead_letters if d.event_id is not None}
    lost_events = sorted(unique - charged_events - dead_events)
    kinds = [incident.kind for incident in seen.incidents]
    charge_times = [r.at - seen.wall_start for r in seen.ledger.requests]
    active = max(charge_times, default=seen.sending_started_at) - seen.sending_started_at
    p50, p95, worst = _drain_figures(seen.workers)
    report = DrillReport(
        events_sent=len(sent),
        duplicates_sent=sum(1 for m in sent if m.duplicate),
        unique_events=len(unique),
        charged=len(charged_events),
        charge_attempts=counts.charge_attempts,
        duplicate_attempts=counts.duplicate_attempts,
        double_charges=counts.double_charges,
        lost=len(lost_events),
        dead_lettered=len(seen.dead_letters),
        dead_lettered_by_outage=(
            sum(1 for d in seen.dead_letters if d.event_id is not None)
            if IncidentKind.REDIS_OUTAGE in kinds
            else 0
        ),
        handler_executions=counts.handler_executions,
        sigterms=kinds.count(IncidentKind.SIGTERM) + kinds.count(IncidentKind.FINAL_SIGTERM),
        overruns=kinds.count(IncidentKind.OVERRUN_KILL),
        forced_exits=sum(1 for w in seen.workers if w.exit_code == ExitCode.FORCED),
        chaos_kills=kinds.count(IncidentKind.HARD_KILL),
        drain_seconds_p50=p50,
        drain_seconds_p95=p95,
        drain_seconds_max=worst,
        drain_budget_seconds=round(seen.budget.total_seconds, 3),
        stop_timeout_seconds=round(seen.budget.stop_timeout_seconds, 3),
        released_on_shutdown=sum(w.stats.get("released_on_shutdown", 0) for w in seen.workers),
        hidden_by_abandoned_receive=sum(
            w.stats.get("hidden_by_abandoned_receive", 0) for w in seen.workers
        ),
        events_per_second=round(len(charged_events) / active, 2) if active > 0 else 0.0,
        duration_seconds=round(seen.duration_seconds, 2),
        malformed_sent=sum(1 for m in sent if m.event_id is None),
        interruptions=kinds.count(IncidentKind.SIGTERM),
        redis_restarts=kinds.count(IncidentKind.REDIS_RESTART),
        redis_outages=kinds.count(IncidentKind.REDIS_OUTAGE),
        executions_recorded=counts.executions_recorded,
        messages_per_second_sent=round(len(sent) / max(seen.plan.sending_seconds, 1.0), 1),
    )
    by_pid = {w.pid: w for w in seen.workers}
    report.explanations = [
        explain(
            previous,
            duplicate,
            wall_start=seen.wall_start,
            by_pid=by_pid,
            incidents=seen.incidents,
            misbehaving=seen.misbehave_share > 0,
        )
        for previous, duplicate in seen.ledger.duplicate_requests()
    ]
    _judge(report, seen, lost_events, dead_events - charged_events)
    return report


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def _judge(
    report: DrillReport, seen: Observations, lost: list[str], dead_uncharged: set[str]
) -> None:
    """Fill ``failures`` (any: exit 1) and ``notes``."""
    failures, notes = report.failures, report.notes
    if lost:
        why = "sent, never charged, not in the DLQ"
        if seen.timed_out:
            why += f"; the drill timed out with {seen.left_in_queue} messages still queued"
        failures.append(f"{len(lost)} events lost ({why}): {_listed(lost)}")
    for event_id, applied in sorted(seen.ledger.double_charged().items()):
        keys = sorted({r.idempotency_key for r in applied})
        pids = sorted({r.pid for r in applied})
        failures.append(
            f"double charge: {event_id} applied {len(applied)} times under keys {_listed(keys)} "
            f"by pids {pids}: the worker does not pass one stable idempotency key per event to "
            "the provider"
        )
    for worker in seen.workers:
        if worker.end is EndKind.OVERRUN:
            if worker.draining_at is None:
                why = (
                    "it never logged phase draining: SIGTERM did not reach the supervisor "
                    "(ignored, or a shell-form CMD swallowed it)"
                )
            else:
                why = f"it began draining at {worker.draining_at:.2f} s but did not finish"
            failures.append(
                f"overrun: {worker.describe()} was still alive {seen.budget.stop_timeout_seconds:g}"
                f" s after its SIGTERM and was SIGKILLed; {why}. Last log line: "
                f"{worker.last_line[:300]}"
            )
        elif worker.end is EndKind.EXITED:
            errors = "; ".join(worker.errors) or worker.last_line[:300]
            failures.append(
                f"crash: {worker.describe()} exited by itself with code {worker.exit_code}: "
                f"{errors} (log: {worker.log_path})"
            )
        elif worker.exit_code == ExitCode.FORCED:
            notes.append(
                f"{worker.describe()} was ended at the hard deadline (exit 70): its log names the "
                "code that would not stop"
            )
        elif worker.exit_code == ExitCode.DRAIN_TIMEOUT:
            notes.append(
                f"{worker.describe()} hit its drain deadline (exit 75): in-flight work was "
                "cancelled and released"
            )
    if report.dead_lettered_by_outage:
        events = sorted(d.event_id for d in seen.dead_letters if d.event_id is not None)
        failures.append(
            f"{report.dead_lettered_by_outage} events dead-lettered during a "
            f"{seen.redis_outage_seconds:g} s Redis outage (an outage must pause intake, not "
            f"spend receive counts): {_listed(events)}"
        )
    unexplained = report.unexplained_duplicates
    if unexplained:
        failures.append(
            f"{len(unexplained)} duplicate attempts not explained by a hard kill or a Redis "
            "restart (see the list above)"
        )
    if dead_uncharged and not report.dead_lettered_by_outage:
        notes.append(
            f"{len(dead_uncharged)} valid events were dead-lettered uncharged (redrive them): "
            f"{_listed(sorted(dead_uncharged))}"
        )
    if not report.executions_recorded:
        notes.append(
            "handler_executions counts charge requests: the worker records no executions "
            "(Ledger.record_execution)"
        )
    killed = sum(1 for w in seen.workers if w.end in {EndKind.HARD_KILLED, EndKind.OVERRUN})
    if killed:
        notes.append(
            f"released_on_shutdown and hidden_by_abandoned_receive exclude the {killed} "
            "SIGKILLed workers (they log no counters); what they held came back after the "
            "visibility timeout"
        )
    if seen.skipped_interruptions:
        notes.append(
            f"{seen.skipped_interruptions} planned interruptions did not happen: the work was "
            "done first"
        )
