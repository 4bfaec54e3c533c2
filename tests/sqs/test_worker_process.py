"""The example payment worker as a real process: real SIGTERM, real SQS over HTTP, real Redis."""

from __future__ import annotations

import signal
import sqlite3
import time
from typing import Any

import pytest

from tests.processes import Child, runtime_argv
from tests.sqs.worker_support import (
    counts,
    ledger_rows,
    payment,
    poll_until,
    send,
    stopped_stats,
    wait_for_count,
)

pytestmark = [pytest.mark.process, pytest.mark.integration]

APP = "examples.sqs_worker.app:app"


def test_sigterm_charges_in_flight_once_and_releases_unstarted_at_once(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str]
) -> None:
    """In-flight payments finish and are deleted; queued ones are visible again; exit 0."""
    queue = queue_factory(fifo=True)
    # Two FIFO groups: each head runs, the two behind each head are received but unstarted.
    send(sync_sqs, queue, [payment(f"a{i}", i, "acct_a") for i in range(3)], group="acct_a")
    send(sync_sqs, queue, [payment(f"b{i}", i, "acct_b") for i in range(3)], group="acct_b")
    stop_timeout = 20.0
    env = {
        **worker_env,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
        "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": str(stop_timeout),
        "PAYMENTS_HANDLER_DELAY_SECONDS": "2",
    }
    with Child(runtime_argv(APP), env=env) as worker:
        wait_for_count(worker, "payment started", 2)
        sent = worker.signal(signal.SIGTERM)
        code = worker.wait(timeout=stop_timeout + 10)
        elapsed = time.monotonic() - sent
    assert code == 0, worker.output()
    assert elapsed < stop_timeout
    rows = ledger_rows(env["PAYMENTS_LEDGER_PATH"])
    assert sorted(rows) == sorted([("a0", "applied", worker.pid), ("b0", "applied", worker.pid)])
    stats = stopped_stats(worker)
    # 4, or 6 when the poll in flight at SIGTERM picked a1/b1 up again and released them too.
    assert stats["released_on_shutdown"] >= 4
    assert stats["deleted"] == 2
    # Visible at once although the visibility timeout is 120 s; the charged ones are gone.
    assert counts(sync_sqs, queue) == (4, 0)


def test_handler_longer_than_the_budget_exits_75_and_the_next_worker_charges_once(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str]
) -> None:
    """A straggler is cancelled and released before the stop timeout; the next worker runs it."""
    queue = queue_factory()
    send(sync_sqs, queue, [payment("slow-1", 1)])
    stop_timeout = 6.0
    env = {
        **worker_env,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
        "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": str(stop_timeout),
        "FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS": "1",
        "FARGATE_RUNTIME_RELEASE_SECONDS": "1",
        "FARGATE_RUNTIME_CLOSE_SECONDS": "1",
        "PAYMENTS_HANDLER_DELAY_SECONDS": "60",
    }
    with Child(runtime_argv(APP), env=env) as first:
        first.wait_for_message("payment started")
        sent = first.signal(signal.SIGTERM)
        code = first.wait(timeout=stop_timeout + 10)
        elapsed = time.monotonic() - sent
    assert code == 75, first.output()
    assert elapsed < stop_timeout
    assert stopped_stats(first)["cancelled_at_deadline"] == 1
    assert counts(sync_sqs, queue) == (1, 0)  # released, not hidden for 120 s
    assert ledger_rows(env["PAYMENTS_LEDGER_PATH"]) == []

    env["PAYMENTS_HANDLER_DELAY_SECONDS"] = "0"
    with Child(runtime_argv(APP), env=env) as second:
        second.wait_for_message("payment charged")
        second.signal(signal.SIGTERM)
        assert second.wait(timeout=stop_timeout + 10) == 0, second.output()
    assert ledger_rows(env["PAYMENTS_LEDGER_PATH"]) == [("slow-1", "applied", second.pid)]
    assert counts(sync_sqs, queue) == (0, 0)


def test_duplicates_and_out_of_order_events_are_charged_once_each(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str]
) -> None:
    """Resent and reordered webhooks end as one charge per event and the right totals."""
    queue = queue_factory()
    events = [payment(f"evt-{n}", n) for n in (3, 1, 2, 1, 5, 4, 3, 3)]  # 5 unique
    send(sync_sqs, queue, events)
    env = {
        **worker_env,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
        "FARGATE_RUNTIME_SQS_IN_PROGRESS_DELAY_SECONDS": "1",
        # An idle worker's drain waits for its long poll: keep it short here.
        "FARGATE_RUNTIME_SQS_WAIT_TIME_SECONDS": "2",
    }
    with Child(runtime_argv(APP), env=env) as worker:
        wait_for_count(worker, "payment charged", 5)
        poll_until(lambda: counts(sync_sqs, queue) == (0, 0), what="queue empty")
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=40) == 0, worker.output()
    with sqlite3.connect(env["PAYMENTS_LEDGER_PATH"]) as connection:
        charges = connection.execute(
            "SELECT event_id, COUNT(*) FROM charges GROUP BY event_id ORDER BY event_id"
        ).fetchall()
        total, top = connection.execute(
            "SELECT SUM(amount_cents), MAX(sequence) FROM charges"
        ).fetchone()
    assert charges == [(f"evt-{n}", 1) for n in range(1, 6)]
    assert (total, top) == (2500, 5)
    stats = stopped_stats(worker)
    assert stats["duplicates_completed"] + stats["duplicates_in_progress"] >= 3
