"""The process is out before SIGKILL whatever its services and setup do (real signals).

Budget in these tests: stop timeout 4 s, margin 1 s, so the hard deadline is 3 s after SIGTERM
and ECS's SIGKILL would come at 4 s. Every process must exit before 3.5 s with a code that says
what happened, and name the line that held it.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.processes import Child, Line, runtime_argv

pytestmark = pytest.mark.process

APP = "tests.supervisor.misbehaving:app"
SOURCE = Path(__file__).with_name("misbehaving.py")
STOP_TIMEOUT = 4.0
MARGIN = 1.0
HARD = STOP_TIMEOUT - MARGIN
BUDGET = {
    "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT),
    "FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS": str(MARGIN),
    "FARGATE_RUNTIME_RELEASE_SECONDS": "0.5",
    "FARGATE_RUNTIME_CLOSE_SECONDS": "0.5",
}


def culprit_lines(name: str) -> list[str]:
    """``misbehaving.py:N`` for each line N marked ``# culprit: NAME``."""
    marked = [
        f"misbehaving.py:{number} "
        for number, text in enumerate(SOURCE.read_text().splitlines(), start=1)
        if re.search(rf"# culprit: {re.escape(name)}$", text)
    ]
    assert marked, f"no culprit marker {name!r}"
    return marked


def names_culprit(lines: list[Line], name: str) -> bool:
    """Some line's ``culprit`` field points at a line marked ``# culprit: NAME``."""
    wanted = culprit_lines(name)
    return any(mark in str(line.get("culprit")) for line in lines for mark in wanted)


def interrupt(behaviour: str, **env: str) -> tuple[Child, int, float]:
    """Start the app, SIGTERM it while it misbehaves; return it, its exit code and how long."""
    child = Child(runtime_argv(APP), env={**BUDGET, "MISBEHAVE": behaviour, **env})
    # A resource misbehaves only once the shutdown closes it: signal it when it is running.
    child.wait_for_message("service ready" if behaviour == "close-sleep" else "misbehaving")
    sent = child.signal(signal.SIGTERM)
    code = child.wait(timeout=STOP_TIMEOUT + 10)
    return child, code, time.monotonic() - sent


def forced_lines(child: Child) -> list[Line]:
    return [line for line in child.lines if str(line.get("message", "")).startswith("forced")]


@pytest.mark.parametrize("behaviour", ["sleep", "cpu", "swallow", "setup-sleep", "close-sleep"])
def test_stuck_work_is_ended_at_the_hard_deadline_with_exit_70(behaviour: str) -> None:
    """A sync call, a CPU loop, swallowed cancellation, a blocking setup or a resource whose close
    blocks the loop: exit 70 in time, naming the line."""
    child, code, elapsed = interrupt(behaviour)
    with child:
        assert code == 70, child.output()
        assert elapsed < HARD + 0.5, elapsed
        # The signal was seen at once, even with the loop blocked.
        requested = child.wait_for_message("shutdown requested")
        assert requested["reason"] == "SIGTERM"
        assert forced_lines(child), child.output()
        assert names_culprit(child.lines, behaviour), child.output()
        stopped = [line for line in child.lines if line.get("phase") == "stopped"]
        assert [line["exit_code"] for line in stopped] == [70]


def test_to_thread_work_is_waited_for_until_the_hard_deadline_then_forced() -> None:
    """A to_thread job outliving the drain holds the process only until the hard deadline."""
    child, code, elapsed = interrupt("thread")
    with child:
        assert code == 70, child.output()
        assert elapsed < HARD + 0.5
        assert "waiting for threads still running" in child.messages()
        threads = [line for line in child.lines if line.get("message") == "thread still running"]
        assert names_culprit(threads, "thread"), child.output()
        assert "thread finished" not in child.messages()


def test_to_thread_work_that_ends_before_the_hard_deadline_exits_75() -> None:
    """A to_thread job that ends after the drain deadline but in time: exit 75, not forced."""
    # Drain ends 2 s after SIGTERM; the thread ends about 2.3 s after it; the hard deadline is 3 s.
    child, code, elapsed = interrupt("thread", MISBEHAVE_SECONDS="2.8")
    with child:
        assert code == 75, child.output()
        assert elapsed < HARD + 0.5
        messages = child.messages()
        assert messages.index("thread finished") < messages.index("phase stopped")
        assert not forced_lines(child)


def test_a_users_non_daemon_thread_cannot_hold_the_process() -> None:
    """A non-daemon thread of the user's own is waited for only until the hard deadline."""
    child, code, elapsed = interrupt("user-thread")
    with child:
        assert code == 70, child.output()
        assert elapsed < HARD + 0.5
        names = [line.get("thread_name") for line in child.lines]
        assert "user-thread" in names


@pytest.mark.parametrize("behaviour", ["spin", "setup-wait", "setup-retry"])
def test_code_that_checks_the_flag_or_awaits_stops_at_once_with_exit_0(behaviour: str) -> None:
    """The Quick start loop, a waiting setup and a setup retrying Redis: stopped in a second."""
    child, code, elapsed = interrupt(behaviour)
    with child:
        assert code == 0, child.output()
        assert elapsed < 1.5
        assert not forced_lines(child)
        assert child.lines[-1].get("phase") == "stopped"


def test_a_service_raising_system_exit_is_an_orderly_crash() -> None:
    """SystemExit from a service: JSON lines, resources closed, exit 1 (no raw traceback)."""
    with Child(runtime_argv(APP), env={**BUDGET, "MISBEHAVE": "system-exit"}) as child:
        code = child.wait(timeout=STOP_TIMEOUT + 10)
    assert code == 1, child.output()
    assert all(not line.get("raw") for line in child.lines), child.output()
    assert "resource closed" in child.messages()
    assert child.lines[-1].get("phase") == "stopped"


def test_a_blocked_loop_is_reported_once_with_the_blocking_line() -> None:
    """A loop blocked for 1.5 s (threshold 1 s): one warning naming the line, then recovery."""
    env = {**BUDGET, "MISBEHAVE": "block-once", "MISBEHAVE_SECONDS": "1.5"}
    with Child(runtime_argv(APP), env=env) as child:
        child.wait_for_message("unblocked", timeout=10)
        recovered = child.wait_for_message("event loop unblocked", timeout=5)
        child.signal(signal.SIGTERM)
        code = child.wait(timeout=STOP_TIMEOUT + 10)
    assert code == 0, child.output()
    warnings = [line for line in child.lines if line.get("message") == "event loop blocked"]
    assert len(warnings) == 1, child.output()
    assert names_culprit(warnings, "block-once")
    assert "time.sleep" in str(warnings[0]["stack"])
    assert 1.0 <= warnings[0]["blocked_seconds"] < 1.5
    assert recovered["blocked_seconds"] >= 1.4
