"""Helpers for the SQS tests that run workers as real processes: bodies, queue counts, waits."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.processes import Child


def payment(event_id: str, sequence: int, account: str = "acct_1") -> str:
    """A payment event body."""
    return json.dumps(
        {"event_id": event_id, "account": account, "amount_cents": 500, "sequence": sequence}
    )


def send(sqs: Any, queue: str, bodies: list[str], *, group: str | None = None) -> None:
    """Send ``bodies`` one by one (FIFO: in ``group``, deduplicated by a fresh id)."""
    for body in bodies:
        extra = {}
        if group is not None:
            extra = {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
        sqs.send_message(QueueUrl=queue, MessageBody=body, **extra)


def counts(sqs: Any, queue: str) -> tuple[int, int]:
    """(visible, in flight) of ``queue``."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def ledger_rows(path: str) -> list[tuple[str, str, int]]:
    """(event_id, outcome, worker_pid) of every request the provider received, in order."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT event_id, outcome, worker_pid FROM requests ORDER BY id"
        ).fetchall()
    return [(str(event), str(outcome), int(pid)) for event, outcome, pid in rows]


def poll_until(condition: Callable[[], bool], *, timeout: float = 60.0, what: str) -> None:
    """Poll ``condition`` (queue attributes, ledger rows) every 100 ms until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def wait_for_count(child: Child, message: str, count: int, *, timeout: float = 60.0) -> None:
    """Wait until ``message`` has been logged ``count`` times."""
    child.wait_for(
        lambda _line: sum(1 for line in child.lines if line.get("message") == message) >= count,
        timeout=timeout,
    )


def stopped_stats(child: Child) -> dict[str, Any]:
    """The consumer's closing stats line."""
    return child.wait_for_message("sqs consumer stopped", timeout=5)
