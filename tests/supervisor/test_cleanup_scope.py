"""The one shield: ``Lifecycle.cleanup_scope`` holds off the supervisor's cancel, up to a bound."""

from __future__ import annotations

import asyncio
import time

from fargate_runtime import ExitCode, Lifecycle, Phase, RuntimeSettings, Supervisor

# Drain 0.2 s, then 1 s to release: room for a cleanup that outlives the drain deadline.
SETTINGS = RuntimeSettings(
    stop_timeout_seconds=4,
    shutdown_margin_seconds=0.5,
    drain_seconds=0.2,
    release_seconds=1,
    close_seconds=1,
)


async def test_drain_deadline_waits_for_a_cleanup_in_progress() -> None:
    """A cleanup running when the drain deadline hits finishes; the cancel lands after it."""
    app = Supervisor(settings=SETTINGS, handle_signals=False)
    events: list[str] = []

    @app.service
    async def releasing(lifecycle: Lifecycle) -> None:
        await lifecycle.wait_shutdown_requested()
        with lifecycle.cleanup_scope():
            await asyncio.sleep(0.5)  # a release that outlives the 0.2 s drain deadline
            events.append("cleanup finished")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled after the scope")
            raise

    run = asyncio.create_task(app.serve())
    await asyncio.sleep(0)
    assert app.lifecycle is not None
    await app.lifecycle.wait_for_phase(Phase.RUNNING)
    app.request_shutdown("test")
    assert await run == ExitCode.DRAIN_TIMEOUT
    assert events == ["cleanup finished", "cancelled after the scope"]


async def test_cleanup_scope_is_bounded_and_swallows_its_own_cut() -> None:
    """At its bound the body is cancelled, the scope swallows that, and says it expired."""
    app = Supervisor(settings=SETTINGS, handle_signals=False)
    seen: list[bool] = []

    @app.service
    async def stuck_cleanup(lifecycle: Lifecycle) -> None:
        began = time.monotonic()
        with lifecycle.cleanup_scope(seconds=0.1) as scope:
            await asyncio.Event().wait()
        seen.append(scope.expired)
        seen.append(time.monotonic() - began < 1.0)

    assert await app.serve() == ExitCode.OK
    assert seen == [True, True]


async def test_cleanup_scope_does_not_swallow_other_errors() -> None:
    """An exception raised inside the scope propagates: only the scope's own cut is eaten."""
    app = Supervisor(settings=SETTINGS, handle_signals=False)
    raised: list[str] = []

    def release() -> None:
        raise LookupError("release failed")

    @app.service
    async def failing_cleanup(lifecycle: Lifecycle) -> None:
        try:
            with lifecycle.cleanup_scope(seconds=1):
                release()
        except LookupError as exc:
            raised.append(str(exc))

    assert await app.serve() == ExitCode.OK
    assert raised == ["release failed"]
