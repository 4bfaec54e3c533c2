"""One drill from start to verdict: components, workers, sending, interruptions, the end, the count.

::

    components up -> ledger created -> K workers started, all ready
    sending starts (t=0) ---- producer ----------------------------|
                       ---- interrupter: SIGTERM / SIGKILL / replace, Redis restart / outage --|
    every 0.5 s: sent everything, queue empty, every unique event charged or in the DLQ?
    end (or --timeout) -> every worker SIGTERMed (SIGKILL at the stop timeout) -> DLQ and
    ledger read -> report
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..settings import RuntimeSettings, load_settings
from .accounting import LedgerSnapshot, charged_event_count, read_ledger
from .components import Components, DeadLetter, QueueDepth
from .interrupter import IncidentKind, Interrupter
from .ledger import LEDGER_PATH_ENV, create_ledger
from .plan import build_plan
from .postgres import DrillPostgres
from .producer import Producer
from .progress import Progress, ProgressState
from .report import Observations, build_report
from .workers import Clock, EndKind, Fleet

if TYPE_CHECKING:
    from pathlib import Path

    from ..settings import ShutdownBudget
    from .plan import DrillConfig, Plan
    from .report import DrillReport

__all__ = ["DrillError", "DrillOptions", "DrillRun", "run_drill"]

logger = logging.getLogger("fargate_runtime.drill")

_TICK_SECONDS = 0.5
_START_TIMEOUT_SECONDS = 60.0
# Drill-sized settings of the runtime, applied unless the environment already sets them:
# failed (malformed) messages retry after 0.25-4 s instead of 1-300 s, so they reach the DLQ
# within seconds; the example's handler takes as long as a provider call might.
_DRILL_DEFAULTS = {
    "FARGATE_RUNTIME_SQS_BACKOFF_BASE_SECONDS": "0.5",
    "FARGATE_RUNTIME_SQS_BACKOFF_CAP_SECONDS": "4",
    "PAYMENTS_HANDLER_DELAY_SECONDS": "0.05",
}


class DrillError(RuntimeError):
    """The drill could not run (not: it ran and failed); exit 2 with this message."""


@dataclass(frozen=True, slots=True)
class DrillOptions:
    """Where the drill runs and what it reaches, apart from its schedule."""

    work_dir: Path
    sqs_endpoint_url: str | None = None
    redis_url: str | None = None
    worker_environment: dict[str, str] = field(default_factory=dict)
    app_dir: str = "."
    # The PostgreSQL named for ``store="postgres"`` runs (it must answer); None: find one.
    postgres_url: str | None = None
    keep_work_dir: bool = False  # announce the work dir at start only when it will be kept
    progress: Progress = field(default_factory=lambda: Progress(enabled=False))


@dataclass(frozen=True, slots=True)
class DrillRun:
    """What ``run_drill`` returns: the verdict and what it was drawn from."""

    report: DrillReport
    observations: Observations
    ledger_path: Path


def shutdown_budget(stop_timeout_seconds: float) -> ShutdownBudget:
    """The workers' budget for this stop timeout (the environment's other settings apply)."""
    try:
        settings = load_settings(RuntimeSettings, stop_timeout_seconds=stop_timeout_seconds)
    except ConfigurationError as exc:
        raise DrillError(f"--stop-timeout {stop_timeout_seconds:g}: {exc}") from exc
    return settings.budget()


def _key_prefix(config: DrillConfig) -> str:
    """The workers' idempotency key prefix: one per run, so runs never see each other's keys."""
    return f"frt-drill-{config.run_id}"


def _worker_environment(
    config: DrillConfig, options: DrillOptions, components: Components, ledger: Path
) -> dict[str, str]:
    env = {name: value for name, value in _DRILL_DEFAULTS.items() if name not in os.environ}
    env.update(components.worker_environment())
    env.update(
        {
            "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": f"{config.stop_timeout_seconds:g}",
            "FARGATE_RUNTIME_SERVICE_NAME": "drill-worker",
            "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": _key_prefix(config),
            LEDGER_PATH_ENV: str(ledger),
            "PAYMENTS_LEDGER_PATH": str(ledger),  # the payment workers' own setting
        }
    )
    if components.postgres is not None:
        # The drill's worker charges inside the handler's transaction, in the run's schema.
        env["PAYMENTS_LEDGER"] = "postgres"
        env["PAYMENTS_POSTGRES_SCHEMA"] = components.postgres.schema
    if config.misbehave_share > 0:
        env.update(
            {
                "PAYMENTS_MISBEHAVE_SHARE": f"{config.misbehave_share:g}",
                # Longer than the whole stop timeout: only the runtime can end it in time.
                "PAYMENTS_MISBEHAVE_SECONDS": f"{config.stop_timeout_seconds + 2:g}",
                "PAYMENTS_MISBEHAVE_SEED": str(config.seed),
            }
        )
    env.update(options.worker_environment)
    return env


async def _start_fleet(fleet: Fleet, workers: int) -> None:
    """Start ``workers`` workers and wait until each is running; DrillError if one is not."""
    started = [await fleet.start(slot) for slot in range(workers)]
    ready = await asyncio.gather(*(w.wait_ready(_START_TIMEOUT_SECONDS) for w in started))
    for worker, ok in zip(started, ready, strict=True):
        if not ok:
            why = "; ".join(worker.errors) or worker.last_line or "no output"
            state = (
                f"exited with code {worker.exit_code}"
                if not worker.alive
                else f"not running after {_START_TIMEOUT_SECONDS:g} s"
            )
            raise DrillError(f"worker {worker.describe()} {state}: {why} (log: {worker.log_path})")


class _Drill:
    """The state of one run while it goes."""

    def __init__(self, config: DrillConfig, options: DrillOptions) -> None:
        self.config = config
        self.options = options
        self.clock = Clock()
        self.plan: Plan = build_plan(config)
        self.budget = shutdown_budget(config.stop_timeout_seconds)
        self.ledger_path = options.work_dir / "ledger.sqlite3"
        self.depth = QueueDepth(0, 0, 0)
        self.charged = 0
        self.dead: list[DeadLetter] = []
        self.dead_count = 0
        self.crash_restarts = 0
        self.postgres: DrillPostgres | None = None

    async def _ledger(self) -> LedgerSnapshot:
        if self.postgres is not None:
            return await self.postgres.snapshot(self.ledger_path)
        return await asyncio.to_thread(read_ledger, self.ledger_path)

    async def _charged(self) -> int:
        if self.postgres is not None:
            return await self.postgres.charged_events()
        charged, _ = await asyncio.to_thread(charged_event_count, self.ledger_path)
        return charged

    async def run(self) -> DrillRun:
        config, progress = self.config, self.options.progress
        if config.store == "postgres":
            self.postgres = DrillPostgres(run_id=config.run_id, url=self.options.postgres_url)
        async with Components(
            run_id=config.run_id,
            max_receive_count=config.max_receive_count,
            sqs_endpoint_url=self.options.sqs_endpoint_url,
            redis_url=self.options.redis_url,
            private_redis=self.plan.private_redis_flag is not None,
            private_for=self.plan.private_redis_flag or "--restart-redis",
            postgres=self.postgres,
        ) as components:
            store = (
                f"PostgreSQL {self.postgres.describe()}"
                if self.postgres is not None
                else f"Redis {components.describe_redis()}"
            )
            kept = f", logs in {self.options.work_dir}" if self.options.keep_work_dir else ""
            progress.say(
                f"drill: SQS {components.sqs_endpoint_url}, {store}, "
                f"queue {components.queue_url.rsplit('/', 1)[-1]}{kept}"
            )
            create_ledger(self.ledger_path)
            env = _worker_environment(config, self.options, components, self.ledger_path)
            fleet = Fleet(
                config.worker,
                environment=env,
                log_dir=self.options.work_dir,
                clock=self.clock,
                app_dir=self.options.app_dir,
            )
            try:
                return await self._drive(components, fleet)
            finally:
                await fleet.aclose()
                # Tidying a shared Redis, even after an error; the figures do not depend on it.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(components.forget_keys(_key_prefix(config)), 10.0)

    async def _drive(self, components: Components, fleet: Fleet) -> DrillRun:
        config, progress = self.config, self.options.progress
        progress.say(f"drill: starting {config.workers} workers of {config.worker}")
        await _start_fleet(fleet, config.workers)
        interrupter = Interrupter(
            fleet,
            components,
            self.plan,
            clock=self.clock,
            stop_timeout_seconds=config.stop_timeout_seconds,
        )
        producer = Producer(components, self.plan.messages, clock=self.clock)
        started = self.clock.now()
        progress.say(
            f"drill: sending {len(self.plan.messages)} messages over "
            f"~{self.plan.sending_seconds:.0f} s, {len(self.plan.interruptions)} interruptions "
            "planned"
        )
        sending = asyncio.create_task(producer.run(started), name="producer")
        interrupting = asyncio.create_task(interrupter.run(started), name="interrupter")
        timed_out = False
        try:
            timed_out = await self._until_done(
                components, fleet, producer, sending, interrupting, interrupter
            )
        finally:
            for task in (sending, interrupting):
                task.cancel()
            await asyncio.gather(sending, interrupting, return_exceptions=True)
        progress.finish()
        progress.say("drill: the end; stopping every worker (SIGTERM, SIGKILL at stop timeout)")
        await interrupter.settle()
        await interrupter.stop_all()
        self.dead = await components.dead_letters()
        self.depth = await components.depth()
        observations = Observations(
            plan=self.plan,
            sent=producer.sent,
            ledger=await self._ledger(),
            dead_letters=tuple(self.dead),
            workers=tuple(w.summary() for w in fleet.workers),
            incidents=tuple(interrupter.incidents),
            budget=self.budget,
            wall_start=self.clock.wall_start,
            sending_started_at=started,
            duration_seconds=self.clock.now(),
            timed_out=timed_out,
            left_in_queue=self.depth.total,
            skipped_interruptions=interrupter.skipped,
            misbehave_share=self.config.misbehave_share,
            redis_outage_seconds=self.config.redis_outage_seconds,
        )
        return DrillRun(build_report(observations), observations, self.ledger_path)

    async def _until_done(
        self,
        components: Components,
        fleet: Fleet,
        producer: Producer,
        sending: asyncio.Task[None],
        interrupting: asyncio.Task[None],
        interrupter: Interrupter,
    ) -> bool:
        """Tick until the work is done (False) or ``--timeout`` after sending began (True)."""
        deadline = self.clock.now() + self.config.timeout_seconds
        unique = self.plan.unique_event_ids
        empty_ticks = 0
        while self.clock.now() < deadline:
            await asyncio.sleep(_TICK_SECONDS)
            for task in (sending, interrupting):
                if task.done() and task.exception() is not None:
                    raise DrillError(f"{task.get_name()} failed: {task.exception()!r}")
            await self._replace_crashed(fleet)
            self.depth = await components.depth()
            self.charged = await self._charged()
            self.dead_count = await components.dead_letter_count()
            self._show(producer, fleet, interrupter)
            if not sending.done() or self.depth.total:
                empty_ticks = 0
                continue
            empty_ticks += 1
            if self.charged >= len(unique):
                return False
            # Uncharged events may be in the DLQ; read it only now (it is slow-ish).
            self.dead = await components.dead_letters()
            done = (await self._ledger()).charged_events()
            done |= {d.event_id for d in self.dead if d.event_id is not None}
            # Twice empty in a row: nothing is in flight any more, whatever is missing is lost.
            if unique <= done or empty_ticks >= 2:
                return False
        return True

    async def _replace_crashed(self, fleet: Fleet) -> None:
        """A worker that exited by itself is replaced, as ECS would; a crash loop aborts."""
        for slot, worker in list(fleet.current.items()):
            if worker.alive or worker.end is not EndKind.EXITED:
                continue
            self.crash_restarts += 1
            if self.crash_restarts > 3 * self.config.workers:
                raise DrillError(
                    f"workers keep exiting by themselves ({self.crash_restarts} times); last: "
                    f"{worker.describe()} code {worker.exit_code}: "
                    f"{'; '.join(worker.errors) or worker.last_line} (log: {worker.log_path})"
                )
            await fleet.start(slot)

    def _show(self, producer: Producer, fleet: Fleet, interrupter: Interrupter) -> None:
        kinds = [incident.kind for incident in interrupter.incidents]
        alive = [w for w in fleet.workers if w.alive]
        self.options.progress.show(
            ProgressState(
                at=self.clock.now(),
                sent=producer.sent,
                to_send=len(self.plan.messages),
                charged=self.charged,
                unique=len(self.plan.unique_event_ids),
                queued=self.depth.visible + self.depth.delayed,
                in_flight=self.depth.in_flight,
                workers=len(alive),
                draining=sum(1 for w in alive if w.sigterm_at is not None),
                sigterms=kinds.count(IncidentKind.SIGTERM),
                kills=kinds.count(IncidentKind.HARD_KILL) + kinds.count(IncidentKind.OVERRUN_KILL),
                dead_lettered=self.dead_count,
            )
        )


async def run_drill(config: DrillConfig, options: DrillOptions) -> DrillRun:
    """Run one drill; raise ``DrillError`` when it cannot run at all."""
    problems = config.problems()
    if problems:
        raise DrillError("; ".join(problems))
    drill = _Drill(config, options)
    try:
        return await drill.run()
    finally:
        with contextlib.suppress(Exception):
            options.progress.finish()
