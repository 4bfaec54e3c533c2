"""Real signals to real subprocesses: the supervisor's exit codes and timing promises."""

from __future__ import annotations

import os
import signal
import time

import pytest

from fargate_runtime.local import free_port
from tests.processes import Child, runtime_argv

pytestmark = pytest.mark.process

APPS = "tests.supervisor.apps"


def start(app: str, **env: str) -> Child:
    return Child(runtime_argv(f"{APPS}:{app}"), env=env)


def test_sigterm_idle_exits_zero_within_a_second() -> None:
    """An idle app stops cleanly and quickly on SIGTERM."""
    with start("idle") as child:
        child.wait_for_message("idle ready")
        sent = child.signal(signal.SIGTERM)
        code = child.wait(timeout=10)
        elapsed = time.monotonic() - sent
    assert code == 0, child.output()
    assert elapsed < 1.0
    phases = [line["phase"] for line in child.lines if "phase" in line]
    assert phases == ["starting", "running", "draining", "closing", "stopped"]


def test_sigterm_waits_for_in_flight_work_then_exits_zero() -> None:
    """Work in flight at SIGTERM finishes inside the drain budget and the exit is clean."""
    with start("busy", TEST_WORK_SECONDS="1.5") as child:
        child.wait_for_message("work started")
        child.signal(signal.SIGTERM)
        finished = child.wait_for_message("work finished", timeout=10)
        code = child.wait(timeout=10)
    assert code == 0, child.output()
    assert finished["shutdown_requested"] is True
    assert "work released" not in child.messages()
    stopped = child.wait_for(lambda line: line.get("phase") == "stopped")
    assert stopped["exit_code"] == 0


def test_work_past_the_drain_deadline_is_cancelled_released_and_exits_75() -> None:
    """Work longer than the budget is cancelled, released, and the exit beats stop_timeout."""
    stop_timeout = 6.0
    with start(
        "busy",
        TEST_WORK_SECONDS="60",
        FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS=str(stop_timeout),
        FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS="1",
        FARGATE_RUNTIME_RELEASE_SECONDS="1",
        FARGATE_RUNTIME_CLOSE_SECONDS="1",
    ) as child:
        child.wait_for_message("work started")
        sent = child.signal(signal.SIGTERM)
        code = child.wait(timeout=stop_timeout + 10)
        elapsed = time.monotonic() - sent
    assert code == 75, child.output()
    assert elapsed < stop_timeout
    cancelled = child.wait_for_message("drain deadline hit: cancelling service")
    assert "one_job_in_flight" in cancelled["service"]
    # The stack follows the awaits down to the line in user code that was still running.
    assert "in _work" in cancelled["stack"]
    assert "work released" in child.messages()
    # The drain lasted the configured 3 s (6 - 1 margin - 1 release - 1 close), not less.
    assert elapsed >= 3.0


def test_second_signal_cancels_at_once() -> None:
    """A second SIGTERM skips the rest of the drain: work is cancelled and released now."""
    with start("busy", TEST_WORK_SECONDS="60") as child:
        child.wait_for_message("work started")
        child.signal(signal.SIGTERM)
        child.wait_for(lambda line: line.get("phase") == "draining")
        second = child.signal(signal.SIGTERM)
        code = child.wait(timeout=20)
        elapsed = time.monotonic() - second
    assert code == 75, child.output()
    assert "second signal: cancelling in-flight work now" in child.messages()
    assert "work released" in child.messages()
    # The default drain budget is 23 s: the second signal cut it short.
    assert elapsed < 5.0


def test_sigint_drains_like_sigterm() -> None:
    """Ctrl-C (SIGINT) starts the same drain as SIGTERM."""
    with start("idle") as child:
        child.wait_for_message("idle ready")
        child.signal(signal.SIGINT)
        code = child.wait(timeout=10)
    assert code == 0, child.output()
    draining = child.wait_for(lambda line: line.get("phase") == "draining")
    assert draining["reason"] == "SIGINT"


def test_job_stops_early_on_sigterm() -> None:
    """A run-to-completion job sees the request between steps and returns early, exit 0."""
    with start("job") as child:
        child.wait_for(lambda line: line.get("message") == "job step" and line["step"] >= 3)
        child.signal(signal.SIGTERM)
        stopped = child.wait_for_message("job stopped early", timeout=10)
        code = child.wait(timeout=10)
    assert code == 0, child.output()
    assert stopped["step"] >= 3
    assert "job done" not in child.messages()


def test_crashing_service_exits_1_after_draining_and_closing() -> None:
    """A crash drains the other services, closes resources in reverse order and exits 1."""
    with start("crashing", TEST_WORK_SECONDS="1.0") as child:
        code = child.wait(timeout=30)
    assert code == 1, child.output()
    messages = child.messages()
    assert "service crashed" in messages
    # The bystander's in-flight work was drained, not cut.
    assert "work finished" in messages
    assert "work released" not in messages
    closing = [line["resource_name"] for line in child.lines if line.get("message") == "closing"]
    assert closing == ["second", "first"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": "10", "FARGATE_RUNTIME_DRAIN_SECONDS": "9"},
            "FARGATE_RUNTIME_DRAIN_SECONDS",
        ),
        ({"FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": "600"}, "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS"),
        ({"FARGATE_RUNTIME_HEALTH_PORT": "http"}, "FARGATE_RUNTIME_HEALTH_PORT"),
    ],
)
def test_bad_settings_exit_78_naming_the_setting(env: dict[str, str], named: str) -> None:
    """Settings that cannot work stop the process at start with 78 and a readable line."""
    with start("idle", **env) as child:
        code = child.wait(timeout=20)
    assert code == 78, child.output()
    critical = child.wait_for(lambda line: line.get("level") == "CRITICAL")
    assert named in critical["message"]
    assert "idle ready" not in child.messages()


def test_unknown_app_exits_78() -> None:
    """A MODULE:ATTR that does not resolve is a configuration error, not a crash."""
    with Child(runtime_argv(f"{APPS}:no_such_app")) as child:
        code = child.wait(timeout=20)
    assert code == 78, child.output()
    assert "no_such_app" in child.output()


def healthcheck(port: int, path: str = "/healthz") -> int:
    """Exit code of ``fargate-runtime healthcheck``, run the way a container HEALTHCHECK runs it."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "fargate_runtime.cli", "healthcheck", "--path", path]
    return subprocess.run(
        argv, env={**os.environ, "FARGATE_RUNTIME_HEALTH_PORT": str(port)}, check=False
    ).returncode


def test_healthcheck_command_follows_liveness_and_readiness() -> None:
    """The healthcheck command exits 0 for a live, ready worker and 1 once it is gone."""
    port = free_port()
    with start("busy", TEST_WORK_SECONDS="4", FARGATE_RUNTIME_HEALTH_PORT=str(port)) as child:
        child.wait_for_message("work started")
        live_running = healthcheck(port)
        ready_running = healthcheck(port, "/readyz")
        child.signal(signal.SIGTERM)
        child.wait_for(lambda line: line.get("phase") == "draining")
        live_draining = healthcheck(port)
        ready_draining = healthcheck(port, "/readyz")
        code = child.wait(timeout=15)
    assert code == 0, child.output()
    assert (live_running, ready_running) == (0, 0)
    # Draining is alive (ECS must not replace a task mid-drain) but not ready.
    assert (live_draining, ready_draining) == (0, 1)
    assert healthcheck(port) == 1
