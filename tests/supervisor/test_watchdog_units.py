"""The watchdog thread's pacing, without a thread: when it wakes for its next check."""

from __future__ import annotations

import logging

import pytest

from fargate_runtime._watchdog import PULSE_SECONDS, Watchdog
from fargate_runtime.lifecycle import Lifecycle
from fargate_runtime.settings import ShutdownBudget

BUDGET = ShutdownBudget(
    stop_timeout_seconds=10, margin_seconds=2, drain_seconds=6, release_seconds=1, close_seconds=1
)


def embedded_watchdog(lifecycle: Lifecycle) -> Watchdog:
    """As ``serve()`` runs it inside someone else's loop: no signals taken, no forced exit."""
    return Watchdog(
        lifecycle,
        on_signal=lambda signum, at: None,
        handle_signals=False,
        hard_exit=False,
        blocked_after_seconds=1.0,
    )


def test_the_thread_wakes_a_pulse_apart_then_at_the_hard_deadline_itself() -> None:
    lifecycle = Lifecycle(BUDGET)
    watchdog = embedded_watchdog(lifecycle)
    assert watchdog.seconds_to_next_check(100.0) == PULSE_SECONDS  # no shutdown yet
    lifecycle.request_shutdown("test", at=100.0)
    hard = lifecycle.deadlines.hard if lifecycle.deadlines else 0.0
    assert hard == 100.0 + BUDGET.total_seconds
    assert watchdog.seconds_to_next_check(100.0) == PULSE_SECONDS
    assert watchdog.seconds_to_next_check(hard - 0.1) == pytest.approx(0.1)


def test_past_the_hard_deadline_an_embedded_watchdog_acts_once_then_waits_pulses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Embedded, the process outlives the hard deadline: the thread reports it at once, then
    goes back to a pulse (it once woke with no wait at all, spinning a core)."""
    lifecycle = Lifecycle(BUDGET)
    watchdog = embedded_watchdog(lifecycle)
    # A shutdown asked for long ago (monotonic time): its hard deadline has passed.
    lifecycle.request_shutdown("test", at=-1000.0)
    assert watchdog.seconds_to_next_check(0.0) == 0.0
    with caplog.at_level(logging.ERROR, logger="fargate_runtime"):
        watchdog.check()
        watchdog.check()
    passed = [r for r in caplog.records if "hard deadline passed" in r.getMessage()]
    assert len(passed) == 1
    assert watchdog.seconds_to_next_check(0.0) == PULSE_SECONDS
