"""Hand-made drill observations: a plan, a ledger, workers and incidents, with nothing run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fargate_runtime.drill.accounting import Execution, LedgerSnapshot, RecordedRequest
from fargate_runtime.drill.interrupter import Incident, IncidentKind
from fargate_runtime.drill.ledger import ChargeOutcome
from fargate_runtime.drill.plan import DrillConfig, build_plan
from fargate_runtime.drill.report import Observations
from fargate_runtime.drill.workers import EndKind, WorkerSummary
from fargate_runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from fargate_runtime.drill.components import DeadLetter
    from fargate_runtime.drill.plan import Plan

WALL_START = 1_000_000.0
BUDGET = RuntimeSettings(stop_timeout_seconds=10.0).budget()


def plan(events: int = 3, duplicates_share: float = 0.0, malformed_share: float = 0.0) -> Plan:
    """A tiny schedule with event ids ``evt-t-000000`` ..."""
    return build_plan(
        DrillConfig(
            events=events,
            duplicates_share=duplicates_share,
            malformed_share=malformed_share,
            run_id="t",
            seed=1,
        )
    )


def event(number: int) -> str:
    return f"evt-t-{number:06d}"


def charge(
    number: int,
    *,
    pid: int,
    at: float,
    outcome: ChargeOutcome = ChargeOutcome.APPLIED,
    key: str | None = None,
) -> RecordedRequest:
    """A recorded request ``at`` drill seconds."""
    return RecordedRequest(
        event_id=event(number),
        idempotency_key=key or f"charge:{event(number)}",
        fencing_token=1,
        account="acct_000",
        amount_cents=100,
        pid=pid,
        at=WALL_START + at,
        outcome=outcome,
    )


def worker(
    name: str,
    pid: int,
    *,
    end: EndKind = EndKind.DRAINED,
    sigterm_at: float | None = None,
    exited_at: float | None = 30.0,
    exit_code: int | None = 0,
    sigkill_at: float | None = None,
    draining_at: float | None = None,
    stats: dict[str, int] | None = None,
) -> WorkerSummary:
    return WorkerSummary(
        name=name,
        slot=0,
        pid=pid,
        started_at=0.0,
        ready_at=0.5,
        sigterm_at=sigterm_at,
        draining_at=draining_at if draining_at is not None else sigterm_at,
        sigkill_at=sigkill_at,
        exited_at=exited_at,
        exit_code=exit_code,
        end=end,
        stats=stats or {},
        last_line='{"message": "last"}',
    )


def observations(
    requests: list[RecordedRequest],
    *,
    the_plan: Plan | None = None,
    workers: list[WorkerSummary] | None = None,
    incidents: list[Incident] | None = None,
    dead: list[DeadLetter] | None = None,
    executions: list[Execution] | None = None,
    timed_out: bool = False,
    misbehave_share: float = 0.0,
) -> Observations:
    the_plan = the_plan or plan()
    return Observations(
        plan=the_plan,
        sent=len(the_plan.messages),
        ledger=LedgerSnapshot(tuple(requests), tuple(executions or ())),
        dead_letters=tuple(dead or ()),
        workers=tuple(workers or [worker("w1", 101), worker("w2", 102)]),
        incidents=tuple(incidents or ()),
        budget=BUDGET,
        wall_start=WALL_START,
        sending_started_at=1.0,
        duration_seconds=40.0,
        timed_out=timed_out,
        misbehave_share=misbehave_share,
    )


def incident(at: float, kind: IncidentKind, pid: int | None = None) -> Incident:
    return Incident(at, kind, f"w{pid}" if pid else None, pid)
