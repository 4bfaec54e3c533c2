"""Why each duplicate charge attempt of a drill happened, and whether it is excused.

A duplicate attempt is a second request to the provider for an event already charged. The
drill looks, around the first request, for what could have made the work run again: a hard kill
(or a SIGKILL at the stop timeout) of the worker that charged, between its charge and its
completion record; a Redis restart that erased the record; and, when misbehaving handlers are
being drilled, that worker's blocked event loop (its heartbeat could not renew visibility or
lease), forced exit or drain deadline. The first two are excused (the
runtime cannot record what a killed process did not finish), the last only when the provider
saw the same idempotency key (it absorbed the retry); so is a Redis outage (a completion that
could not be recorded before a stop: the work is retried under the same key). Anything else is a
failure of the runtime's duplicate suppression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..lifecycle import ExitCode
from .interrupter import IncidentKind

if TYPE_CHECKING:
    from .accounting import RecordedRequest
    from .interrupter import Incident
    from .workers import WorkerSummary

__all__ = ["Explanation", "explain"]
# Clocks of two processes (wall time in the ledger, monotonic here) agree to a few ms.
_CLOCK_SLACK_SECONDS = 0.05
# A claim taken this long before a Redis restart may still have been alive when it was erased
# (leases follow the visibility timeout, 20 s by default; heartbeats renew them).
_LEASE_HORIZON_SECONDS = 60.0
# A completion record follows its charge within a flush interval or two (0.1 s each); a kill
# this soon after the charge most likely came before it.
_KILL_SOON_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one duplicate attempt happened; ``excused`` when a hard kill or a restart explains it."""

    event_id: str
    at: float
    cause: str
    text: str
    excused: bool


def explain(
    previous: RecordedRequest,
    duplicate: RecordedRequest,
    *,
    wall_start: float,
    by_pid: dict[int, WorkerSummary],
    incidents: tuple[Incident, ...],
    misbehaving: bool = False,
) -> Explanation:
    """Find what made ``duplicate`` happen after ``previous`` (same event)."""
    start, end = previous.at - wall_start, duplicate.at - wall_start
    first = by_pid.get(previous.pid)
    who = first.describe() if first is not None else f"pid {previous.pid}"
    again = by_pid.get(duplicate.pid)
    again_who = again.describe() if again is not None else f"pid {duplicate.pid}"
    head = (
        f"{duplicate.event_id}: request at {end:.2f} s by {again_who} after {who} at {start:.2f} s"
    )
    key_note = ""
    if duplicate.idempotency_key != previous.idempotency_key:
        key_note = " (with a different idempotency key, so the provider charged it again)"

    def made(cause: str, text: str, *, excused: bool) -> Explanation:
        return Explanation(duplicate.event_id, end, cause, f"{head}: {text}{key_note}", excused)

    low, high = start - _CLOCK_SLACK_SECONDS, end + _CLOCK_SLACK_SECONDS
    kills = [
        incident
        for incident in incidents
        if incident.pid == previous.pid
        and incident.kind in {IncidentKind.HARD_KILL, IncidentKind.OVERRUN_KILL}
        and low <= incident.at <= high
    ]
    restarts = [
        incident
        for incident in incidents
        if incident.kind is IncidentKind.REDIS_RESTART
        and start - _LEASE_HORIZON_SECONDS <= incident.at <= high
    ]

    def killed(kill: Incident, hedge: str) -> Explanation:
        how = "hard kill" if kill.kind is IncidentKind.HARD_KILL else "SIGKILL at the stop timeout"
        return made(
            "hard_kill" if kill.kind is IncidentKind.HARD_KILL else "overrun_kill",
            f"the {how} of {who} at {kill.at:.2f} s ({kill.at - start:.2f} s after its charge) "
            f"{hedge}fell between its charge and its completion record",
            excused=True,
        )

    # A kill soon after the charge is the likeliest cause; a Redis restart next (it erases
    # claims and completed records alike); a kill long after the charge last, hedged.
    if kills and kills[0].at - start <= _KILL_SOON_SECONDS:
        return killed(kills[0], "")
    if restarts:
        return made(
            "redis_restart",
            f"the Redis restart at {restarts[0].at:.2f} s erased the event's claim or completed "
            "record",
            excused=True,
        )
    if kills:
        return killed(kills[0], "most likely ")
    outages = [
        incident
        for incident in incidents
        if incident.kind is IncidentKind.REDIS_OUTAGE
        and start - _LEASE_HORIZON_SECONDS <= (incident.until or incident.at)
        and incident.at <= high
    ]
    if outages:
        outage = outages[0]
        return made(
            "redis_outage",
            f"Redis did not answer from {outage.at:.2f} s to {(outage.until or outage.at):.2f} s: "
            "the completion could not be recorded before the work was handed back",
            excused=duplicate.idempotency_key == previous.idempotency_key,
        )
    # Drilled misbehaviour: cut or stalled work is retried (by the next worker, or by itself)
    # with the same key, and the provider absorbs it; with another key it is a double charge.
    same_key = duplicate.idempotency_key == previous.idempotency_key
    # The loop of either worker: the first one's stalled past its lease, or the second one
    # held the message first, stalled, and ran its copy after another worker had charged it.
    stalls = [
        (worker, stall)
        for worker in (first, again)
        if worker is not None
        for stall in worker.stalls
        if stall[0] <= high and stall[1] >= low
    ]
    if misbehaving and stalls:
        stalled, (begun, ended) = stalls[0]
        return made(
            "loop_stalled",
            f"{stalled.describe()}'s event loop was blocked for {ended - begun:.1f} s from "
            f"{begun:.2f} s (a misbehaving handler): visibility and leases could not be renewed "
            "meanwhile, so the work ran again",
            excused=same_key,
        )
    if first is not None and first.exited_at is not None and low <= first.exited_at <= high:
        if first.exit_code == ExitCode.DRAIN_TIMEOUT:
            return made(
                "drain_deadline",
                f"{who}'s drain deadline cancelled the handler after its charge (exit 75): the "
                "handler outlasts the drain budget",
                excused=misbehaving and same_key,
            )
        if first.exit_code == ExitCode.FORCED:
            return made(
                "forced_exit",
                f"{who} was ended at the hard deadline (exit 70) after its charge, before its "
                "completion record: its handler could not be stopped",
                excused=misbehaving and same_key,
            )
        return made(
            "crash",
            f"{who} exited with code {first.exit_code} after its charge, before completing it",
            excused=False,
        )
    return made(
        "unexplained",
        "no kill or restart explains it: the handler ran again for a key that was already "
        "charged (the runtime's duplicate suppression did not hold)",
        excused=False,
    )
