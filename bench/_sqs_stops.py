"""``bench/sqs.py``'s stop figures: how fast an idle worker stops, how soon a killed one's
messages come back. Ours (the example worker under ``fargate-runtime run``) beside the worker
people write by hand (``_plain_sqs_worker``: a SIGTERM flag checked between 20 s long polls, the
queue's 30 s visibility), in the same run, on the same local SQS; the ratio is peer / ours.

- ``idle_stop_seconds``: SIGTERM half a second into an idle long poll, to the process's exit
  (ours: median of ``STOP_ROUNDS``; the peer waits out its poll, once).
- ``killed_worker_messages_back_seconds``: ``KILLED_MESSAGES`` messages in handlers that run
  for a minute, SIGKILL (Spot without warning, OOM), to all of them visible again.
"""

from __future__ import annotations

import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import botocore.session

from bench._results import REPO
from fargate_runtime.local import sqs_environment

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["stop_figures"]

STOP_ROUNDS = 3
KILLED_MESSAGES = 3
# Both visibility timeouts measured here (10 s, the peer's 30 s) are far below this.
KILLED_BACK_LIMIT_SECONDS = 120.0
_HANDLER_SECONDS = 60.0
_POLL_ON_ITS_WAY_SECONDS = 0.5


class _Worker:
    """A worker process whose output lines are read by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, marker: str, count: int = 1, timeout: float = 60.0) -> None:
        """Return once ``count`` output lines contain ``marker``."""
        deadline = time.monotonic() + timeout
        while count > 0:
            if marker in self.lines.get(timeout=max(0.01, deadline - time.monotonic())):
                count -= 1


def _ours(
    endpoint: str, redis_url: str, queue_url: str, ledger: Path
) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        **sqs_environment(endpoint),
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue_url,
        "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": f"bench-stops-{uuid.uuid4().hex[:8]}",
        "REDIS_URL": redis_url,
        "PAYMENTS_LEDGER_PATH": str(ledger),
        "PAYMENTS_HANDLER_DELAY_SECONDS": str(_HANDLER_SECONDS),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "fargate_runtime.cli", "run", "examples.sqs_worker.app:app"]
    return argv, env


def _peer(endpoint: str, queue_url: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, **sqs_environment(endpoint), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "bench._plain_sqs_worker", queue_url, str(_HANDLER_SECONDS)]
    return argv, env


def _idle_stop(argv: list[str], env: dict[str, str], ready: str) -> float:
    worker = _Worker(argv, env)
    worker.wait_for(ready)
    time.sleep(_POLL_ON_ITS_WAY_SECONDS)  # the long poll is waiting on the empty queue
    sent = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(timeout=60)
    return time.monotonic() - sent


def _killed_back(
    client: Any, queue_url: str, argv: list[str], env: dict[str, str], started: str
) -> float:
    for index in range(KILLED_MESSAGES):
        body = f'{{"event_id": "killed-{uuid.uuid4().hex}", "account": "a", "amount_cents": 1, '
        client.send_message(QueueUrl=queue_url, MessageBody=body + f'"sequence": {index}}}')
    worker = _Worker(argv, env)
    worker.wait_for(started, count=KILLED_MESSAGES)
    killed = time.monotonic()
    worker.process.kill()
    worker.process.wait(timeout=10)
    # Polled: SQS tells visibility only when asked. Bounded: a message that never comes back
    # is a failure of the benchmark, not a hang of `make bench`.
    while time.monotonic() - killed < KILLED_BACK_LIMIT_SECONDS:
        attributes = client.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        if int(attributes["ApproximateNumberOfMessages"]) == KILLED_MESSAGES:
            return time.monotonic() - killed
        time.sleep(0.1)
    raise RuntimeError(
        f"a SIGKILLed worker's {KILLED_MESSAGES} messages were not all visible again "
        f"{KILLED_BACK_LIMIT_SECONDS:g} s after the kill"
    )


def stop_figures(endpoint: str, redis_url: str, scratch: Path) -> dict[str, dict[str, float]]:
    """Both figures, ours and the peer's, with their ratio (peer / ours)."""
    client: Any = botocore.session.get_session().create_client("sqs", endpoint_url=endpoint)

    def fresh() -> str:
        name = f"benchstop{uuid.uuid4().hex[:12]}"
        url: str = client.create_queue(QueueName=name)["QueueUrl"]
        return url

    queues = [fresh() for _ in range(4)]
    try:
        ours = [
            _idle_stop(*_ours(endpoint, redis_url, queues[0], scratch / f"idle{i}.sqlite3"),
                       ready='"sqs consumer started"')
            for i in range(STOP_ROUNDS)
        ]  # fmt: skip
        idle_ours, idle_peer = (
            statistics.median(ours),
            _idle_stop(*_peer(endpoint, queues[1]), ready="ready"),
        )
        back_ours = _killed_back(
            client,
            queues[2],
            *_ours(endpoint, redis_url, queues[2], scratch / "killed.sqlite3"),
            started='"payment started"',
        )
        back_peer = _killed_back(client, queues[3], *_peer(endpoint, queues[3]), started="handling")
    finally:
        for url in queues:
            client.delete_queue(QueueUrl=url)
    return {
        "idle_stop_seconds": _pair(idle_ours, idle_peer),
        "killed_worker_messages_back_seconds": _pair(back_ours, back_peer),
    }


def _pair(ours: float, peer: float) -> dict[str, float]:
    return {
        "fargate_runtime": round(ours, 3),
        "plain_loop": round(peer, 3),
        "ratio": round(peer / ours, 1) if ours > 0 else 0.0,
    }
