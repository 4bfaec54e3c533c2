"""Worker processes: each runs ``fargate-runtime run MODULE:ATTR`` and is watched through its logs.

Every worker's stdout (JSON lines) goes to its own log file in the run directory; the lines the
drill needs are also kept in memory: its phases (``running`` is when it is ready, ``draining``
proves SIGTERM reached the supervisor), the consumer's final counters (``sqs consumer stopped``:
``released_on_shutdown``, ``hidden_by_abandoned_receive``, ...) and the first errors. Times are
seconds on the drill's clock (``Clock``), taken in this process: the drain time of a worker is
from the moment the drill sent SIGTERM to the moment it saw the process exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Clock", "EndKind", "Fleet", "WorkerProcess", "WorkerSummary"]

# The consumer's last log line carries its counters.
CONSUMER_STOPPED = "sqs consumer stopped"
# A JSON line with a traceback can be long; asyncio's default line limit is 64 KiB.
_LINE_LIMIT = 1024 * 1024
_KEPT_ERRORS = 5
# The runtime's blocked-loop detector's lines (the watchdog's), with ``blocked_seconds``.
LOOP_BLOCKED = "event loop blocked"
LOOP_UNBLOCKED = "event loop unblocked"


class Clock:
    """Seconds since the drill started, on the monotonic clock, with the wall time it maps to."""

    def __init__(self) -> None:
        self._monotonic = time.monotonic()
        self.wall_start = time.time()

    def now(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self._monotonic

    def from_wall(self, wall: float) -> float:
        """Drill seconds of a unix time (the ledger's timestamps)."""
        return wall - self.wall_start


class EndKind(enum.Enum):
    """How a worker's life ended."""

    RUNNING = "running"  # not ended yet
    DRAINED = "drained"  # SIGTERM, then it exited by itself
    OVERRUN = "overrun"  # SIGTERM, still alive at the stop timeout: SIGKILLed
    HARD_KILLED = "hard_killed"  # chaos: SIGKILL without warning
    EXITED = "exited"  # exited without being told to (crash, bad config)
    ABORTED = "aborted"  # killed because the drill itself stopped on an error


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSummary:
    """What the report needs of one worker's life (drill seconds; None: did not happen)."""

    name: str
    slot: int
    pid: int
    started_at: float
    ready_at: float | None = None
    sigterm_at: float | None = None
    draining_at: float | None = None
    sigkill_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    end: EndKind = EndKind.RUNNING
    final: bool = False
    stats: dict[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    last_line: str = ""
    log_path: str = ""
    # (start, end) of each time its event loop was blocked past the runtime's threshold.
    stalls: tuple[tuple[float, float], ...] = ()

    @property
    def drain_seconds(self) -> float | None:
        """SIGTERM to exit, as the drill measured it (None when it got no SIGTERM)."""
        if self.sigterm_at is None or self.exited_at is None:
            return None
        return self.exited_at - self.sigterm_at

    def describe(self) -> str:
        """``w3 (pid 1234)``."""
        return f"{self.name} (pid {self.pid})"


@dataclass(slots=True)
class WorkerProcess:
    """One worker process and what the drill saw of it."""

    name: str  # w1, w2, ... in start order
    slot: int  # the ECS "task slot" it fills; a replacement takes over the slot
    process: asyncio.subprocess.Process
    log_path: Path
    started_at: float
    final: bool = False  # stopped at the end of the drill (scale-in), not interrupted
    ready_at: float | None = None  # logged phase running
    sigterm_at: float | None = None
    draining_at: float | None = None  # logged phase draining (SIGTERM reached the supervisor)
    sigkill_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    end: EndKind = EndKind.RUNNING
    stats: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    last_line: str = ""
    lines: int = 0
    stalls: list[tuple[float, float]] = field(default_factory=list)
    _stall_started: float | None = None
    _exited: asyncio.Event = field(default_factory=asyncio.Event)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """True until the drill saw it exit."""
        return not self._exited.is_set()

    async def wait_exit(self, within_seconds: float | None = None) -> bool:
        """Wait until the process exits; False when ``within_seconds`` passed first."""
        try:
            async with asyncio.timeout(within_seconds):
                await self._exited.wait()
        except TimeoutError:
            return False
        return True

    async def wait_ready(self, within_seconds: float) -> bool:
        """Wait until it logged phase running (True), or exited or the time passed (False)."""
        waiters = {
            asyncio.ensure_future(self._ready.wait()),
            asyncio.ensure_future(self._exited.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=within_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._ready.is_set() and self.alive

    def describe(self) -> str:
        """``w3 (pid 1234)``."""
        return f"{self.name} (pid {self.pid})"

    def summary(self) -> WorkerSummary:
        """A frozen copy of what was seen, for the report."""
        return WorkerSummary(
            name=self.name,
            slot=self.slot,
            pid=self.pid,
            started_at=self.started_at,
            ready_at=self.ready_at,
            sigterm_at=self.sigterm_at,
            draining_at=self.draining_at,
            sigkill_at=self.sigkill_at,
            exited_at=self.exited_at,
            exit_code=self.exit_code,
            end=self.end,
            final=self.final,
            stats=dict(self.stats),
            errors=tuple(self.errors),
            last_line=self.last_line,
            log_path=str(self.log_path),
            stalls=tuple(self.stalls),
        )


class Fleet:
    """Starts workers, signals them, and keeps every one it ever started (for the report)."""

    def __init__(
        self,
        app: str,
        *,
        environment: dict[str, str],
        log_dir: Path,
        clock: Clock,
        app_dir: str = ".",
    ) -> None:
        self._argv = [sys.executable, "-m", "fargate_runtime.cli", "run", app, "--app-dir", app_dir]
        self._environment = environment
        self._log_dir = log_dir
        self._clock = clock
        self.workers: list[WorkerProcess] = []
        self.current: dict[int, WorkerProcess] = {}

    async def start(self, slot: int) -> WorkerProcess:
        """Start a worker in ``slot`` (replacing whatever was there as the slot's current one)."""
        name = f"w{len(self.workers) + 1}"
        process = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self._environment},
            limit=_LINE_LIMIT,
        )
        worker = WorkerProcess(
            name=name,
            slot=slot,
            process=process,
            log_path=self._log_dir / f"{name}.log",
            started_at=self._clock.now(),
        )
        worker._tasks.append(asyncio.create_task(self._watch(worker), name=f"watch-{name}"))
        self.workers.append(worker)
        self.current[slot] = worker
        return worker

    async def _watch(self, worker: WorkerProcess) -> None:
        """Read its lines until EOF, then reap it and note the exit time and code."""
        stream = worker.process.stdout
        if stream is None:  # started without a pipe: nothing to read
            raise RuntimeError(f"{worker.name} has no stdout pipe")
        with worker.log_path.open("w", encoding="utf-8") as log:
            while True:
                try:
                    raw = await stream.readline()
                except ValueError:  # a line longer than the limit: skip what was read
                    continue
                if not raw:
                    break
                text = raw.decode(errors="replace").rstrip("\n")
                log.write(text + "\n")
                self._note(worker, text)
        code = await worker.process.wait()
        worker.exited_at = self._clock.now()
        worker.exit_code = code
        if worker._stall_started is not None:  # ended while blocked (a forced exit)
            worker.stalls.append((worker._stall_started, worker.exited_at))
        if worker.end is EndKind.RUNNING:
            worker.end = EndKind.DRAINED if worker.sigterm_at is not None else EndKind.EXITED
        worker._exited.set()

    def _note(self, worker: WorkerProcess, text: str) -> None:
        worker.lines += 1
        worker.last_line = text
        try:
            line: Any = json.loads(text)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            if text.strip() and len(worker.errors) < _KEPT_ERRORS and worker.ready_at is None:
                worker.errors.append(text)  # plain output before start: usually a traceback
            return
        phase = line.get("phase")
        if phase == "running" and worker.ready_at is None:
            worker.ready_at = self._clock.now()
            worker._ready.set()
        elif phase == "draining" and worker.draining_at is None:
            worker.draining_at = self._clock.now()
        message = line.get("message")
        if message == CONSUMER_STOPPED:
            worker.stats = {k: v for k, v in line.items() if isinstance(v, int)}
        elif message in (LOOP_BLOCKED, LOOP_UNBLOCKED):
            self._note_stall(worker, message, line.get("blocked_seconds"))
        level = line.get("level")
        if level in {"ERROR", "CRITICAL"} and len(worker.errors) < _KEPT_ERRORS:
            worker.errors.append(str(line.get("message", text)))

    def _note_stall(self, worker: WorkerProcess, message: str, seconds: object) -> None:
        """The runtime's blocked-loop detector spoke: open or close a stall."""
        if not isinstance(seconds, int | float):
            return
        now = self._clock.now()
        if message == LOOP_BLOCKED:
            worker._stall_started = now - seconds
        else:
            worker.stalls.append((now - seconds, now))
            worker._stall_started = None

    def send(self, worker: WorkerProcess, signum: signal.Signals) -> bool:
        """Signal ``worker``; False when it had already exited."""
        if not worker.alive:
            return False
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signum)
            return True
        return False

    def sigterm(self, worker: WorkerProcess) -> None:
        """Spot's warning: SIGTERM, the drain starts."""
        if self.send(worker, signal.SIGTERM) and worker.sigterm_at is None:
            worker.sigterm_at = self._clock.now()

    def sigkill(self, worker: WorkerProcess, end: EndKind) -> None:
        """SIGKILL: at the stop timeout (overrun) or without warning (hard kill)."""
        if self.send(worker, signal.SIGKILL):
            worker.sigkill_at = self._clock.now()
            worker.end = end

    async def aclose(self) -> None:
        """Kill whatever still runs (only after an error) and wait for the watchers."""
        for worker in self.workers:
            if worker.alive:
                self.sigkill(worker, EndKind.ABORTED)
        for worker in self.workers:
            for task in worker._tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, timeout=10)
