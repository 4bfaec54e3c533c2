"""Run the runtime in real child processes and watch their JSON log lines.

Waiting is on events (a log line appearing, the process exiting), never on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent

Line = dict[str, Any]


class Child:
    """A child process whose stdout lines are parsed as JSON and kept, read by a thread."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
        )
        self.lines: list[Line] = []
        self.raw: list[str] = []
        self._queue: queue.Queue[Line | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            text = raw.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            try:
                line = json.loads(text)
            except ValueError:
                line = {"message": text, "raw": True}
            if not isinstance(line, dict):
                line = {"message": text, "raw": True}
            line["_received"] = time.monotonic()
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[Line], bool], *, timeout: float = 30.0) -> Line:
        """Return the first line (already seen or coming) for which ``predicate`` holds."""
        for line in list(self.lines):
            if predicate(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching line within {timeout} s; output:\n{self.output()}")
            try:
                arrived = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if arrived is None:
                raise AssertionError(f"process exited before a matching line:\n{self.output()}")
            if predicate(arrived):
                return arrived

    def wait_for_message(self, message: str, *, timeout: float = 30.0) -> Line:
        """Return the first line whose ``message`` equals ``message``."""
        return self.wait_for(lambda line: line.get("message") == message, timeout=timeout)

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> float:
        """Send ``signum``; return the monotonic time it was sent."""
        sent = time.monotonic()
        os.kill(self.pid, signum)
        return sent

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the exit and the last output line; return the exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def messages(self) -> list[str]:
        """Every ``message`` field seen so far, in order."""
        return [str(line.get("message")) for line in self.lines]

    def output(self) -> str:
        """Everything the child printed, for failure messages."""
        return "\n".join(self.raw)

    def kill(self) -> None:
        """SIGKILL the child if it still runs, and close its pipe (test cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def runtime_argv(app: str) -> list[str]:
    """argv that runs ``fargate-runtime run APP`` with this interpreter."""
    return [sys.executable, "-m", "fargate_runtime.cli", "run", app]


def namespace_init(unshare_pid: int, *, timeout: float = 10.0) -> int:
    """The host pid of PID 1 of the namespace that ``unshare --fork`` (``unshare_pid``) made."""
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children")
    deadline = time.monotonic() + timeout
    # Polled: /proc is the only place the forked child's pid shows up.
    while time.monotonic() < deadline:
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
        time.sleep(0.01)
    raise TimeoutError("unshare did not fork its child")
