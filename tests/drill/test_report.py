"""The report counts what the drill saw as documented, explains duplicates, and judges the exit."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.drill.accounting import Execution
from fargate_runtime.drill.components import DeadLetter
from fargate_runtime.drill.interrupter import IncidentKind
from fargate_runtime.drill.ledger import ChargeOutcome
from fargate_runtime.drill.report import JSON_FIELDS, build_report, percentile
from fargate_runtime.drill.table import duplicate_summary, render_table
from fargate_runtime.drill.workers import EndKind
from tests.drill.builders import charge, event, incident, observations, plan, worker

if TYPE_CHECKING:
    from pathlib import Path

    from fargate_runtime.drill.accounting import RecordedRequest

REPLAYED = ChargeOutcome.REPLAYED
ISSUE_FIELDS = [
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
]


def clean() -> list[RecordedRequest]:
    return [charge(n, pid=101, at=2.0 + n) for n in range(3)]


def test_json_has_exactly_the_documented_fields(tmp_path: Path) -> None:
    """``--json`` writes the issues' 24 fields, in order, and nothing else."""
    assert list(JSON_FIELDS) == ISSUE_FIELDS
    report = build_report(observations(clean()))
    path = tmp_path / "report.json"
    report.write_json(path)
    written = json.loads(path.read_text())
    assert list(written) == ISSUE_FIELDS
    assert all(isinstance(value, int | float) for value in written.values())


def test_a_clean_run_passes_with_every_figure_right() -> None:
    """Everything charged once, one drain per worker: exit 0 and the plain counts."""
    workers = [
        worker("w1", 101, sigterm_at=10.0, exited_at=11.0, stats={"released_on_shutdown": 2}),
        worker("w2", 102, sigterm_at=30.0, exited_at=33.0, stats={"released_on_shutdown": 1}),
    ]
    incidents = [
        incident(10.0, IncidentKind.SIGTERM, 101),
        incident(30.0, IncidentKind.FINAL_SIGTERM, 102),
    ]
    report = build_report(observations(clean(), workers=workers, incidents=incidents))
    figures = report.as_json()
    assert figures["events_sent"] == figures["unique_events"] == figures["charged"] == 3
    assert figures["charge_attempts"] == figures["handler_executions"] == 3
    assert figures["duplicate_attempts"] == figures["double_charges"] == figures["lost"] == 0
    assert (figures["sigterms"], figures["overruns"], figures["chaos_kills"]) == (2, 0, 0)
    assert figures["drain_seconds_max"] == 3.0
    assert figures["drain_budget_seconds"] == 8.0  # 10 s stop timeout - 2 s margin
    assert figures["stop_timeout_seconds"] == 10.0
    assert figures["released_on_shutdown"] == 3
    assert figures["events_per_second"] == round(3 / (4.0 - 1.0), 2)  # last charge - first send
    assert report.exit_code == 0, report.failures
    assert report.interruptions == 1


def test_duplicates_sent_and_malformed_count_as_sent() -> None:
    """Duplicates and malformed bodies are sent messages, not unique events."""
    the_plan = plan(events=10, duplicates_share=0.2, malformed_share=0.1)
    requests = [charge(n, pid=101, at=2.0) for n in range(10)]
    dead = [DeadLetter("m1", "not json", 5)]
    report = build_report(observations(requests, the_plan=the_plan, dead=dead))
    assert (report.events_sent, report.duplicates_sent, report.unique_events) == (13, 2, 10)
    assert report.malformed_sent == 1
    assert report.dead_lettered == 1
    assert report.exit_code == 0


def test_an_uncharged_event_is_lost_unless_it_is_in_the_dlq() -> None:
    """lost = unique - charged - dead-lettered, and the failure names the lost event."""
    requests = clean()[:1]
    dead = [DeadLetter("m1", json.dumps({"event_id": event(1)}), 5)]
    report = build_report(observations(requests, dead=dead))
    assert (report.charged, report.lost, report.dead_lettered) == (1, 1, 1)
    assert report.exit_code == 1
    assert event(2) in report.failures[0]
    assert any("dead-lettered uncharged" in note for note in report.notes)


def test_a_timeout_says_what_was_left() -> None:
    """Events not charged by the timeout are lost, and the failure says the drill timed out."""
    report = build_report(observations(clean()[:2], timed_out=True))
    assert report.lost == 1
    assert "timed out" in report.failures[0]


def test_two_keys_for_one_event_is_a_double_charge_and_fails() -> None:
    """An event applied under two keys fails the drill and blames the unstable key."""
    requests = [*clean(), charge(0, pid=102, at=9.0, key="charge:evt-t-000000:other")]
    report = build_report(observations(requests))
    assert (report.double_charges, report.duplicate_attempts) == (1, 1)
    assert report.exit_code == 1
    assert any("stable idempotency key" in failure for failure in report.failures)
    assert "different idempotency key" in report.explanations[0].text


def test_a_hard_kill_right_after_the_charge_explains_the_duplicate() -> None:
    """Charge, SIGKILL 0.3 s later, replay by the replacement: explained, exit 0."""
    requests = [*clean(), charge(0, pid=102, at=25.0, outcome=REPLAYED)]
    workers = [
        worker("w1", 101, end=EndKind.HARD_KILLED, sigkill_at=2.3, exited_at=2.3, exit_code=-9),
        worker("w2", 102),
    ]
    incidents = [incident(2.3, IncidentKind.HARD_KILL, 101)]
    report = build_report(observations(requests, workers=workers, incidents=incidents))
    [explanation] = report.explanations
    assert (explanation.cause, explanation.excused) == ("hard_kill", True)
    assert "w1 (pid 101)" in explanation.text
    assert (report.chaos_kills, report.duplicate_attempts, report.double_charges) == (1, 1, 0)
    assert report.exit_code == 0, report.failures


def test_a_redis_restart_explains_a_later_duplicate() -> None:
    """A completed record erased by a Redis restart explains the next run of the handler."""
    requests = [*clean(), charge(0, pid=102, at=25.0, outcome=REPLAYED)]
    incidents = [incident(12.0, IncidentKind.REDIS_RESTART)]
    report = build_report(observations(requests, incidents=incidents))
    assert [e.cause for e in report.explanations] == ["redis_restart"]
    assert report.redis_restarts == 1
    assert report.exit_code == 0


def test_a_restart_is_preferred_to_a_kill_long_after_the_charge() -> None:
    """A kill 7 s after the charge is less likely the cause than a Redis restart in between."""
    requests = [*clean(), charge(0, pid=102, at=25.0, outcome=REPLAYED)]
    incidents = [
        incident(9.0, IncidentKind.HARD_KILL, 101),
        incident(12.0, IncidentKind.REDIS_RESTART),
    ]
    report = build_report(observations(requests, incidents=incidents))
    assert [e.cause for e in report.explanations] == ["redis_restart"]
    alone = build_report(observations(requests, incidents=incidents[:1]))
    assert [e.cause for e in alone.explanations] == ["hard_kill"]
    assert "most likely" in alone.explanations[0].text


def test_a_duplicate_nothing_explains_fails_the_drill() -> None:
    """The handler ran again while its first worker lived on: the runtime's fault, exit 1."""
    requests = [*clean(), charge(0, pid=102, at=25.0, outcome=REPLAYED)]
    report = build_report(observations(requests))
    assert [e.cause for e in report.explanations] == ["unexplained"]
    assert report.exit_code == 1
    assert any("not explained" in failure for failure in report.failures)


def test_a_drain_deadline_after_the_charge_is_named_but_not_excused() -> None:
    """Exit 75 between charge and completion: named as the cause, and still a failure."""
    requests = [*clean(), charge(0, pid=102, at=25.0, outcome=REPLAYED)]
    workers = [worker("w1", 101, sigterm_at=2.0, exited_at=5.5, exit_code=75), worker("w2", 102)]
    report = build_report(observations(requests, workers=workers))
    assert [e.cause for e in report.explanations] == ["drain_deadline"]
    assert report.exit_code == 1
    assert any("exit 75" in note for note in report.notes)


def test_a_forced_exit_of_a_drilled_misbehaving_handler_is_excused_with_the_same_key() -> None:
    """With --misbehave-share, exit 70 after the charge and a retry under the same key: excused;
    the forced exit is counted and noted."""
    requests = [*clean(), charge(0, pid=102, at=25.0, outcome=REPLAYED)]
    workers = [worker("w1", 101, sigterm_at=2.0, exited_at=5.5, exit_code=70), worker("w2", 102)]
    report = build_report(observations(requests, workers=workers, misbehave_share=0.3))
    assert [(e.cause, e.excused) for e in report.explanations] == [("forced_exit", True)]
    assert (report.forced_exits, report.exit_code) == (1, 0)
    assert any("exit 70" in note for note in report.notes)
    undrilled = build_report(observations(requests, workers=workers))
    assert undrilled.exit_code == 1  # without misbehaviour being drilled, it is a failure


def test_a_forced_exit_never_excuses_a_retry_under_another_key() -> None:
    """Another downstream key after a forced exit is a double charge: never excused."""
    requests = [*clean(), charge(0, pid=102, at=25.0, key="charge:evt-t-000000:other")]
    workers = [worker("w1", 101, sigterm_at=2.0, exited_at=5.5, exit_code=70), worker("w2", 102)]
    report = build_report(observations(requests, workers=workers, misbehave_share=0.3))
    assert [(e.cause, e.excused) for e in report.explanations] == [("forced_exit", False)]
    assert report.exit_code == 1


def test_an_overrun_fails_and_says_sigterm_never_arrived() -> None:
    """SIGKILL at the stop timeout is an overrun; no draining line points at the signal."""
    deaf = worker("w1", 101, end=EndKind.OVERRUN, sigterm_at=10.0, exited_at=20.0, exit_code=-9)
    workers = [dataclasses.replace(deaf, draining_at=None, sigkill_at=20.0), worker("w2", 102)]
    incidents = [
        incident(10.0, IncidentKind.SIGTERM, 101),
        incident(20.0, IncidentKind.OVERRUN_KILL, 101),
    ]
    report = build_report(observations(clean(), workers=workers, incidents=incidents))
    assert report.overruns == 1
    assert report.exit_code == 1
    assert "never logged phase draining" in report.failures[0]


def test_a_worker_that_exits_by_itself_is_a_crash() -> None:
    """A worker exiting unasked (code 1) fails the drill with its errors."""
    workers = [worker("w1", 101, end=EndKind.EXITED, exit_code=1), worker("w2", 102)]
    report = build_report(observations(clean(), workers=workers))
    assert report.exit_code == 1
    assert "crash: w1 (pid 101) exited by itself with code 1" in report.failures[0]


def test_recorded_executions_replace_the_fallback() -> None:
    """handler_executions comes from the executions a worker recorded, when there are any."""
    executions = [Execution(event(n), 101, 0.0) for n in (0, 0, 1, 2)]
    report = build_report(observations(clean(), executions=executions))
    assert (report.handler_executions, report.executions_recorded) == (4, True)
    fallback = build_report(observations(clean()))
    assert any("record_execution" in note for note in fallback.notes)


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [([], 0.5, 0.0), ([3.0], 0.95, 3.0), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0), ([1, 2, 3, 4], 0.95, 4)],
)
def test_percentile_is_nearest_rank(values: list[float], share: float, expected: float) -> None:
    """p50 of 1..4 is 2 and p95 is the max: nearest rank, no interpolation."""
    assert percentile(values, share) == expected


def test_the_table_shows_the_verdict_figures_and_causes() -> None:
    """The printed report has the verdict, every figure's row, and the causes summary."""
    requests = [*clean(), charge(0, pid=102, at=25.0, outcome=REPLAYED)]
    incidents = [incident(2.3, IncidentKind.HARD_KILL, 101)]
    text = render_table(build_report(observations(requests, incidents=incidents)))
    assert text.startswith("fargate-runtime drill: PASSED (exit 0)")
    for label in ("events sent", "lost", "double charges", "SIGKILLs: overruns", "drain max"):
        assert label in text
    assert "Duplicate attempts (1: 1 explained by a hard kill or a Redis restart):" in text
    assert "(1 explained by a hard kill or a Redis restart)" in text  # the row says the same
    assert "[explained]" in text


def test_the_row_and_the_list_of_causes_use_the_same_counts() -> None:
    """A crash and an unexplained attempt: the figures row and the list header agree."""
    seen = observations(
        [
            charge(0, pid=101, at=2.0),
            charge(0, pid=102, at=3.0),
            charge(1, pid=101, at=2.5),
            charge(1, pid=103, at=4.0),
        ],
        workers=[
            worker("w1", 101, exited_at=2.6, exit_code=1, end=EndKind.EXITED),
            worker("w2", 102),
            worker("w3", 103),
        ],
    )
    report = build_report(seen)
    text = render_table(report)
    summary = duplicate_summary(report)
    assert summary.startswith("0 explained by a hard kill or a Redis restart, 2 not: ")
    assert f"({summary})" in text
    assert f"Duplicate attempts (2: {summary}):" in text
    assert sum(text.count(f"[{mark}]") for mark in ("explained", "NOT EXPLAINED")) == 2
