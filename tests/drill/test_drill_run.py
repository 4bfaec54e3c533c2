"""Whole drills against the example worker: one that passes, and broken workers that must fail.

Each runs ``fargate-runtime drill`` as a child process against the session's moto server,
Redis and PostgreSQL, small and fast (tens of events, short intervals), and reads its ``--json``
figures. The issue-sized PostgreSQL-against-Redis run is marked ``slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from fargate_runtime.drill.plan import DrillConfig, build_plan
from tests.processes import REPO

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.process, pytest.mark.integration]


def drill(
    tmp_path: Path, sqs_endpoint: str, redis_url: str | None, *flags: str, timeout: float = 90
) -> tuple[int, str, dict[str, Any]]:
    """Run a drill; return its exit code, its stdout (the report) and its JSON figures.

    ``redis_url=None`` names no Redis (``--restart-redis`` starts a private one).
    """
    report = tmp_path / "report.json"
    redis = ["--redis-url", redis_url] if redis_url is not None else []
    argv = [
        sys.executable, "-m", "fargate_runtime.cli", "drill",
        "--sqs-endpoint", sqs_endpoint, *redis,
        "--json", str(report), "--work-dir", str(tmp_path / "run"), "--quiet",
        "--events-per-second", "25", "--seed", "7",
        # A resent event waits 1 s (not 5) for its first copy to finish: a shorter tail.
        "--worker-env", "FARGATE_RUNTIME_SQS_IN_PROGRESS_DELAY_SECONDS=1", *flags,
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert report.exists(), f"no report; stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.returncode, done.stdout, json.loads(report.read_text())


def test_interrupted_workers_lose_nothing_and_charge_once(
    tmp_path: Path, sqs_endpoint: str, redis_url: str
) -> None:
    """Two workers SIGTERMed and replaced mid-stream: every event charged once, exit 0."""
    html = tmp_path / "drill.html"
    code, out, figures = drill(
        tmp_path, sqs_endpoint, redis_url,
        "--events", "80", "--workers", "2", "--duplicates-share", "0.2",
        "--first-interrupt", "1.0", "--interrupt-every", "1.5,2", "--html", str(html),
    )  # fmt: skip
    assert code == 0, out
    assert figures["unique_events"] == figures["charged"] == 80
    assert figures["duplicates_sent"] == 16
    assert (figures["lost"], figures["double_charges"], figures["overruns"]) == (0, 0, 0)
    assert figures["duplicate_attempts"] == 0, out
    assert figures["sigterms"] >= 3  # at least one interruption + the 2 workers at the end
    assert 0 < figures["drain_seconds_max"] <= figures["drain_budget_seconds"]
    assert "PASSED" in out
    assert html.read_text().count('class="worker"') >= 4


def test_chaos_kills_restart_and_poison_are_survived_and_explained(
    tmp_path: Path, sqs_endpoint: str
) -> None:
    """Hard kills, a Redis restart, malformed messages: nothing lost or double charged."""
    code, out, figures = drill(
        tmp_path, sqs_endpoint, None,
        "--events", "60", "--workers", "2", "--hard-kill-share", "1", "--restart-redis",
        "--malformed-share", "0.1", "--first-interrupt", "1.0", "--interrupt-every", "1,1.2",
        # Killed workers' messages come back after the visibility timeout: keep it short.
        "--worker-env", "FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS=4",
    )  # fmt: skip
    assert code == 0, out
    assert (figures["lost"], figures["double_charges"]) == (0, 0)
    assert figures["chaos_kills"] >= 2
    assert figures["charged"] == 60
    assert figures["dead_lettered"] >= 6  # the 6 malformed ones at least
    assert "NOT EXPLAINED" not in out


def test_a_worker_deaf_to_sigterm_overruns_and_fails(
    tmp_path: Path, sqs_endpoint: str, redis_url: str
) -> None:
    """A worker that ignores SIGTERM is SIGKILLed at the stop timeout; the report says why."""
    code, out, figures = drill(
        tmp_path, sqs_endpoint, redis_url,
        "--worker", "tests.drill.apps:deaf", "--events", "20", "--workers", "1",
        "--duplicates-share", "0", "--first-interrupt", "100", "--stop-timeout", "9",
    )  # fmt: skip
    assert code == 1, out
    assert figures["overruns"] == 1
    assert figures["lost"] == 0
    assert "never logged phase draining" in out


def test_a_worker_without_idempotency_double_charges_and_fails(
    tmp_path: Path, sqs_endpoint: str, redis_url: str
) -> None:
    """The example's no-idempotency mode charges duplicates again; the drill names the cause."""
    code, out, figures = drill(
        tmp_path, sqs_endpoint, redis_url,
        "--worker-env", "PAYMENTS_UNSAFE=no-idempotency", "--events", "40",
        "--duplicates-share", "0.5", "--workers", "2", "--first-interrupt", "100",
    )  # fmt: skip
    assert code == 1, out
    assert figures["double_charges"] > 0
    assert figures["duplicate_attempts"] >= figures["double_charges"]
    assert "stable idempotency key" in out


# The window a crash can fall into: the handler works 0.2 s after its charge before returning.
_UNSAFE_WORKER = (
    "--worker-env", "PAYMENTS_UNSAFE=no-downstream-key",
    "--worker-env", "PAYMENTS_AFTER_CHARGE_DELAY_SECONDS=0.2",
    "--worker-env", "FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS=4",
)  # fmt: skip


def side_by_side(
    tmp_path: Path, sqs_endpoint: str, redis_url: str, postgres_url: str, *flags: str
) -> tuple[int, str, dict[str, Any]]:
    """Run one schedule on PostgreSQL and on Redis; return the exit code, report and figures."""
    return drill(
        tmp_path, sqs_endpoint, redis_url,
        "--store", "postgres,redis", "--postgres-url", postgres_url, *_UNSAFE_WORKER, *flags,
        timeout=240,
    )  # fmt: skip


def test_postgres_absorbs_what_redis_charges_twice(
    tmp_path: Path, sqs_endpoint: str, redis_url: str, postgres_url: str
) -> None:
    """Hard kills and no stable downstream key: PostgreSQL charges each event once (the killed
    attempts rolled back), Redis charges some twice; both columns in one report."""
    code, out, figures = side_by_side(
        tmp_path, sqs_endpoint, redis_url, postgres_url,
        "--events", "60", "--workers", "2", "--hard-kill-share", "1",
        "--first-interrupt", "1.0", "--interrupt-every", "1,1.2",
    )  # fmt: skip
    postgres, redis = figures["postgres"], figures["redis"]
    assert code == 1, out  # the Redis column fails, as it must
    assert (postgres["lost"], postgres["double_charges"], postgres["overruns"]) == (0, 0, 0)
    assert postgres["charged"] == postgres["charge_attempts"] == 60
    assert postgres["duplicate_attempts"] == 0
    assert postgres["chaos_kills"] >= 1
    assert postgres["handler_executions"] > 60  # killed attempts ran, and left nothing
    assert redis["double_charges"] > 0
    assert redis["lost"] == 0
    assert "Side by side" in out
    assert "postgres store" in out


@pytest.mark.slow
def test_the_issue_drill_postgres_against_redis(
    tmp_path: Path, sqs_endpoint: str, redis_url: str, postgres_url: str
) -> None:
    """The issue's run: --hard-kill-share 0.3, no downstream key, 3 workers, 300 events."""
    # A seed whose schedule hard-kills each of the three first workers while events are being
    # sent: the kills land on busy workers, not on a replacement that has only just started
    # (the schedule is drawn from the seed alone; the check below keeps that premise true).
    config = DrillConfig(
        events=300, hard_kill_share=0.3, first_interrupt_seconds=1.0,
        interrupt_min_seconds=1, interrupt_max_seconds=2, seed=146,
    )  # fmt: skip
    first = build_plan(config).interruptions[:3]
    assert [(i.slot, i.hard) for i in first] == [(0, True), (1, True), (2, True)]
    code, out, figures = side_by_side(
        tmp_path, sqs_endpoint, redis_url, postgres_url,
        "--events", "300", "--hard-kill-share", "0.3", "--seed", "146",
        "--first-interrupt", "1.0", "--interrupt-every", "1,2",
    )  # fmt: skip
    postgres, redis = figures["postgres"], figures["redis"]
    assert (postgres["lost"], postgres["double_charges"], postgres["overruns"]) == (0, 0, 0), out
    assert postgres["charged"] == postgres["charge_attempts"] == 300
    assert postgres["chaos_kills"] >= 3
    assert postgres["handler_executions"] > postgres["charge_attempts"], out  # rolled back
    assert redis["double_charges"] > 0, out
    assert code == 1


@pytest.mark.slow
def test_misbehaving_handlers_are_survived_with_forced_exits_counted(
    tmp_path: Path, sqs_endpoint: str, redis_url: str
) -> None:
    """Every first delivery blocks, spins, swallows cancellation or charges from a thread for
    longer than the stop timeout: nothing lost, nothing charged twice, no SIGKILL needed, and
    the interrupted worker's forced exit (70) is counted."""
    code, out, figures = drill(
        tmp_path, sqs_endpoint, redis_url,
        "--events", "8", "--workers", "2", "--duplicates-share", "0",
        "--misbehave-share", "1", "--events-per-second", "1",
        "--first-interrupt", "4", "--interrupt-every", "5,6",
        "--worker-env", "FARGATE_RUNTIME_SQS_CONCURRENCY=2",
        timeout=240,
    )  # fmt: skip
    assert code == 0, out
    assert (figures["lost"], figures["double_charges"], figures["overruns"]) == (0, 0, 0)
    assert figures["charged"] == 8
    assert figures["forced_exits"] >= 1, out
    assert "exit 70" in out


@pytest.mark.slow
def test_a_redis_outage_dead_letters_nothing_and_loses_nothing(
    tmp_path: Path, sqs_endpoint: str
) -> None:
    """Redis answers nothing for 8 s while workers are interrupted (maxReceiveCount 2, where
    every spent receive counts): nothing lost, charged twice or dead-lettered by the outage."""
    code, out, figures = drill(
        tmp_path, sqs_endpoint, None,
        "--events", "60", "--workers", "2", "--redis-outage-seconds", "8",
        "--max-receive-count", "2", "--first-interrupt", "1.0", "--interrupt-every", "1.5,2",
        timeout=150,
    )  # fmt: skip
    assert code == 0, out
    assert (figures["lost"], figures["double_charges"]) == (0, 0)
    assert figures["dead_lettered_by_outage"] == 0
    assert figures["charged"] == 60
    assert "Redis outages" in out
    assert "NOT EXPLAINED" not in out
