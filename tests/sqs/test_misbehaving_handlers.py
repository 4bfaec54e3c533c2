"""SQS handlers that block, spin, swallow cancellation or run threads: out before SIGKILL.

Real worker processes on moto's SQS and the test Redis. The budget: stop timeout 4 s, margin
1 s (hard deadline 3 s after SIGTERM). Each worker must exit before 3.5 s with the documented
code, name the handler's line, and leave its message visible again (visibility is 120 s, so
visible means released) with its claim released, within a second of its exit.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

from tests.processes import Child, Line, runtime_argv
from tests.sqs.worker_support import counts, payment, poll_until, send

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.process, pytest.mark.integration]

APP = "tests.sqs.misbehaving_worker:app"
SOURCE = Path(__file__).with_name("misbehaving_worker.py")
STOP_TIMEOUT = 4.0
HARD = STOP_TIMEOUT - 1.0
BUDGET = {
    "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT),
    "FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS": "1",
    "FARGATE_RUNTIME_RELEASE_SECONDS": "0.5",
    "FARGATE_RUNTIME_CLOSE_SECONDS": "0.5",
}


def names_culprit(lines: list[Line], name: str) -> bool:
    """Some line's ``culprit`` points at a line of the worker marked ``# culprit: NAME``."""
    marks = [
        f"misbehaving_worker.py:{number} "
        for number, text in enumerate(SOURCE.read_text().splitlines(), start=1)
        if re.search(rf"# culprit: {re.escape(name)}$", text)
    ]
    assert marks, name
    return any(mark in str(line.get("culprit")) for line in lines for mark in marks)


def claims_left(redis_url: str, prefix: str) -> list[str]:
    """Idempotency records still in Redis under the test's prefix (fencing counters aside)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key.decode() for key in client.scan_iter(match=f"{prefix}*")]
        return [key for key in keys if not key.endswith("fence")]
    finally:
        client.close()


@pytest.fixture
def start_worker(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str], tmp_path: Path
) -> Callable[..., tuple[Child, str, dict[str, str]]]:
    """``start_worker(behaviour, **env)``: a queue with one event and a worker misbehaving on it."""

    def start(behaviour: str, **env: str) -> tuple[Child, str, dict[str, str]]:
        queue = queue_factory()
        send(sync_sqs, queue, [payment(f"evt-{uuid.uuid4().hex[:8]}", 1)])
        full = {
            **worker_env,
            **BUDGET,
            "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
            "MISBEHAVE": behaviour,
            "EFFECTS_PATH": str(tmp_path / "effects.log"),
            **env,
        }
        return Child(runtime_argv(APP), env=full), queue, full

    return start


@pytest.mark.parametrize("behaviour", ["sleep", "cpu", "swallow", "thread"])
def test_a_stuck_handler_is_ended_in_time_and_its_message_released(
    behaviour: str,
    start_worker: Callable[..., tuple[Child, str, dict[str, str]]],
    sync_sqs: Any,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """Exit 70 before the hard deadline + 0.5 s; the message visible and its claim gone."""
    child, queue, _ = start_worker(behaviour)
    with child:
        child.wait_for_message("misbehaving")
        sent = child.signal(signal.SIGTERM)
        code = child.wait(timeout=STOP_TIMEOUT + 10)
        exited = time.monotonic()
    assert code == 70, child.output()
    assert exited - sent < HARD + 0.5
    assert names_culprit(child.lines, behaviour), child.output()
    poll_until(lambda: counts(sync_sqs, queue) == (1, 0), timeout=1.0, what="message visible")
    assert time.monotonic() - exited < 1.5
    assert claims_left(redis_url, redis_prefix) == []
    release = child.wait_for_message(
        "final release: what was still held handed back without the event loop", timeout=1
    )
    assert release["made_visible"] == 1


@pytest.mark.parametrize("behaviour", ["cancelled-error", "generator-exit"])
def test_a_handler_raising_cancellation_itself_fails_that_message_only(
    behaviour: str,
    start_worker: Callable[..., tuple[Child, str, dict[str, str]]],
    sync_sqs: Any,
) -> None:
    """CancelledError/GeneratorExit from a handler: that message fails, the next still runs."""
    child, queue, _ = start_worker(
        behaviour,
        FARGATE_RUNTIME_SQS_CONCURRENCY="1",
        FARGATE_RUNTIME_SQS_BACKOFF_BASE_SECONDS="60",
    )
    with child:
        child.wait_for_message("handler failed")
        send(sync_sqs, queue, ['{"event_id": "next", "fail": false}'])
        poll_until(
            lambda: counts(sync_sqs, queue) == (0, 1), timeout=20, what="next message consumed"
        )
        child.signal(signal.SIGTERM)
        code = child.wait(timeout=STOP_TIMEOUT + 10)
    assert code == 0, child.output()
    stats = child.wait_for_message("sqs consumer stopped", timeout=1)
    assert (stats["failed"], stats["succeeded"]) == (1, 1)


def test_a_handler_raising_system_exit_stops_the_worker_in_order(
    start_worker: Callable[..., tuple[Child, str, dict[str, str]]], sync_sqs: Any
) -> None:
    """SystemExit in a handler: logged as JSON, message handed back, drained, exit 1."""
    child, queue, _ = start_worker("system-exit", FARGATE_RUNTIME_SQS_BACKOFF_BASE_SECONDS="0")
    with child:
        code = child.wait(timeout=STOP_TIMEOUT + 20)
    assert code == 1, child.output()
    assert all(not line.get("raw") for line in child.lines), child.output()
    assert "sqs consumer stopped" in child.messages()
    poll_until(lambda: counts(sync_sqs, queue)[1] == 0, timeout=5, what="message handed back")


@pytest.mark.slow
def test_work_in_a_thread_never_runs_in_two_workers_at_once(
    start_worker: Callable[..., tuple[Child, str, dict[str, str]]], tmp_path: Path
) -> None:
    """Cut at the drain deadline while its thread runs, A keeps the message until the thread
    ends; only then may B take it: the two effects never overlap, and A exits 75."""
    # A: drain 3 s, hard deadline 8 s; its thread takes 6 s, so it ends in between.
    first, _, env = start_worker(
        "thread",
        MISBEHAVE_SECONDS="6",
        FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS="10",
        FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS="2",
        FARGATE_RUNTIME_DRAIN_SECONDS="3",
    )
    with first:
        first.wait_for_message("misbehaving")
        first.signal(signal.SIGTERM)
        # B is up and polling the same queue while A still holds the message.
        second_env = {**env, "MISBEHAVE_SECONDS": "0.1"}
        with Child(runtime_argv(APP), env=second_env) as second:
            assert first.wait(timeout=20) == 75, first.output()
            second.wait_for_message("misbehaving", timeout=10)
            poll_until(
                lambda: len(effect_lines(tmp_path)) == 4, timeout=10, what="both effects done"
            )
            second.signal(signal.SIGTERM)
            assert second.wait(timeout=20) == 0, second.output()
    lines = effect_lines(tmp_path)
    by_pid: dict[str, list[float]] = {}
    for _what, _event, pid, at in lines:
        by_pid.setdefault(pid, []).append(float(at))
    assert sorted(by_pid) == sorted([str(first.pid), str(second.pid)])
    first_span, second_span = by_pid[str(first.pid)], by_pid[str(second.pid)]
    assert max(first_span) <= min(second_span), lines  # never at the same time
    assert "message held until the process ends" in " ".join(first.messages())


def effect_lines(tmp_path: Path) -> list[list[str]]:
    """The effects file's lines, split: what, event id, pid, wall time."""
    path = tmp_path / "effects.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []
