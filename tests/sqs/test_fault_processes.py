"""Workers as real processes under faults: Redis down, a loop stalled past its lease, an idle
SIGTERM, a SIGKILL. Real signals, moto's SQS over HTTP, a private Redis where it is stopped."""

from __future__ import annotations

import http.client
import signal
import sqlite3
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from fargate_runtime.local import free_port
from tests.processes import Child, Line, runtime_argv
from tests.sqs.conftest import dlq_url
from tests.sqs.worker_support import (
    counts,
    ledger_rows,
    payment,
    poll_until,
    send,
    stopped_stats,
    wait_for_count,
)

if TYPE_CHECKING:
    from pathlib import Path

    from fargate_runtime.local import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.integration]

APP = "examples.sqs_worker.app:app"
MISBEHAVING = "tests.sqs.misbehaving_worker:app"


def readiness(port: int) -> tuple[int, str]:
    """Status and body of the worker's ``/readyz``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def at(line: Line) -> float:
    """A log line's wall-clock time."""
    return datetime.fromisoformat(str(line["timestamp"])).timestamp()


@pytest.mark.slow
def test_redis_down_for_30_s_dead_letters_nothing_and_runs_each_once_after(
    sync_sqs: Any,
    queue_factory: Any,
    worker_env: dict[str, str],
    private_redis: RedisServer,
) -> None:
    """Redis unreachable from the start for 30 s, maxReceiveCount 3: readiness 503 with the
    reason throughout, nothing dead-lettered (it used to take 18 s), each event charged once
    when Redis is back, readiness 200 again."""
    queue = queue_factory(dlq_after=3)
    private_redis.stop()
    health = free_port()
    env = {
        **worker_env,
        "REDIS_URL": private_redis.url,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
        "FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS": "10",
        "FARGATE_RUNTIME_HEALTH_PORT": str(health),
    }
    send(sync_sqs, queue, [payment(f"down-{i}", i) for i in range(3)])
    with Child(runtime_argv(APP), env=env) as worker:
        worker.wait_for_message("idempotency store unavailable: intake paused, held messages kept")
        outage_ends = time.monotonic() + 30
        while time.monotonic() < outage_ends:
            status, body = readiness(health)
            assert status == 503
            assert body.startswith("sqs-consumer: idempotency store unavailable")
            assert counts(sync_sqs, dlq_url(queue)) == (0, 0)
            time.sleep(1)  # an invariant checked over the outage: nothing to wait on
        private_redis.start()
        wait_for_count(worker, "payment charged", 3, timeout=30)
        poll_until(lambda: readiness(health) == (200, "ok"), timeout=10, what="ready again")
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.output()
    assert sorted(event for event, _, _ in ledger_rows(env["PAYMENTS_LEDGER_PATH"])) == [
        "down-0",
        "down-1",
        "down-2",
    ]
    assert counts(sync_sqs, dlq_url(queue)) == (0, 0)
    assert counts(sync_sqs, queue) == (0, 0)
    assert stopped_stats(worker)["store_outages"] == 1


@pytest.mark.slow
def test_a_loop_stalled_past_its_lease_runs_the_work_at_most_twice(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Worker A blocks its event loop for 6 s on a message whose visibility and lease are 3 s;
    worker B takes it over. At most 2 runs, none started after A's lease ran out; A, awake,
    finds the key taken (lease lost: neither completed nor deleted by it) or recorded done by B
    (nothing left to do), and its stale heartbeat extends nothing."""
    queue = queue_factory()
    env = {
        **worker_env,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
        "FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS": "3",
        "FARGATE_RUNTIME_SQS_HEARTBEAT_TICK_SECONDS": "0.5",
        "FARGATE_RUNTIME_SQS_IN_PROGRESS_DELAY_SECONDS": "1",
        "EFFECTS_PATH": str(tmp_path / "effects.log"),
    }
    stalling = {**env, "MISBEHAVE": "sleep", "MISBEHAVE_SECONDS": "6"}
    with Child(runtime_argv(MISBEHAVING), env=stalling) as stalled:
        stalled.wait_for_message("sqs consumer started")
        send(sync_sqs, queue, [payment("stalled-1", 1)])
        stalled.wait_for_message("misbehaving")  # A holds it; its loop is blocked from here
        with Child(runtime_argv(MISBEHAVING), env={**env, "MISBEHAVE": ""}) as other:
            other.wait_for_message("misbehaving", timeout=30)  # B runs it
            awake = stalled.wait_for(
                lambda line: str(line.get("message")).startswith("visibility ran out"),
                timeout=30,
            )
            poll_until(lambda: counts(sync_sqs, queue) == (0, 0), timeout=30, what="deleted")
            for child in (stalled, other):
                child.signal(signal.SIGTERM)
                assert child.wait(timeout=30) in (0, 75), child.output()
    starts = [
        line
        for child in (stalled, other)
        for line in child.lines
        if line.get("message") == "misbehaving"
    ]
    assert len(starts) == 2
    assert all(at(line) < at(awake) for line in starts)
    effects = (tmp_path / "effects.log").read_text().split("\n")
    assert sum(1 for effect in effects if effect.startswith("start stalled-1")) == 2
    a, b = stopped_stats(stalled), stopped_stats(other)
    assert b["succeeded"] == 1
    assert a["lease_lost"] + a["succeeded"] == 1  # taken (lost) or found done: one or the other
    assert a["visibility_lapsed"] == 1
    assert a["heartbeat_extensions"] == 0  # nothing extended once it woke


def test_an_idle_worker_exits_within_a_second_of_sigterm(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str]
) -> None:
    """Idle in a 20 s long poll (stop timeout 10: no clamp, no warning), SIGTERM: the poll is
    abandoned and the process exits 0 within a second."""
    env = {
        **worker_env,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue_factory(),
        "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": "10",
    }
    with Child(runtime_argv(APP), env=env) as worker:
        started = worker.wait_for_message("sqs consumer started")
        sent = worker.signal(signal.SIGTERM)
        code = worker.wait(timeout=15)
        elapsed = time.monotonic() - sent
    assert code == 0, worker.output()
    assert elapsed < 1.0, worker.output()
    assert started["wait_time_seconds"] == 20
    assert not any("clamped" in message for message in worker.messages())
    assert stopped_stats(worker)["abandoned_receives"] == 1


@pytest.mark.slow
def test_a_sigkilled_worker_s_messages_come_back_within_the_short_visibility(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str]
) -> None:
    """SIGKILL (Spot without warning, OOM) under 3 running handlers: with the default 10 s
    visibility, all 3 are visible again within it (they used to hide for 20 s)."""
    queue = queue_factory()
    env = {
        **worker_env,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
        "PAYMENTS_HANDLER_DELAY_SECONDS": "60",
    }
    del env["FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS"]  # the default
    send(sync_sqs, queue, [payment(f"killed-{i}", i) for i in range(3)])
    with Child(runtime_argv(APP), env=env) as worker:
        wait_for_count(worker, "payment started", 3)
        killed = worker.signal(signal.SIGKILL)
        worker.wait(timeout=10)
    poll_until(lambda: counts(sync_sqs, queue) == (3, 0), timeout=30, what="visible again")
    back = time.monotonic() - killed
    assert back <= 10 + 1.5  # the visibility (from the last receive or extension), moto's tick
    with sqlite3.connect(env["PAYMENTS_LEDGER_PATH"]) as connection:
        assert connection.execute("SELECT COUNT(*) FROM charges").fetchone() == (0,)
