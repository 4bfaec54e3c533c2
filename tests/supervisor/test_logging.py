"""JSON log lines: one object per line, correlation fields from contextvars."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import TYPE_CHECKING

import pytest

from fargate_runtime import bind_log_context, configure_logging
from fargate_runtime.logging import set_static

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Root logging sent to a buffer as JSON, restored afterwards."""
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(stream=buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_user_logger_writes_one_json_object_per_line(stream: io.StringIO) -> None:
    """Plain stdlib loggers come out as JSON with the standard fields and their extras."""
    logging.getLogger("payments").info("charged %s", "evt-1", extra={"amount_cents": 500})
    (line,) = lines(stream)
    assert line["message"] == "charged evt-1"
    assert line["level"] == "INFO"
    assert line["logger"] == "payments"
    assert line["amount_cents"] == 500
    assert str(line["timestamp"]).endswith("+00:00")


async def test_bound_context_is_per_task(stream: io.StringIO) -> None:
    """Fields bound in one asyncio task do not leak into another."""
    log = logging.getLogger("worker")

    async def handle(message_id: str) -> None:
        with bind_log_context(message_id=message_id):
            await asyncio.sleep(0)
            log.info("handled")

    await asyncio.gather(handle("m-1"), handle("m-2"))
    log.info("outside")
    found = {str(line["message"]) + ":" + str(line.get("message_id")) for line in lines(stream)}
    assert found == {"handled:m-1", "handled:m-2", "outside:None"}


def test_static_fields_and_exceptions(stream: io.StringIO) -> None:
    """Process-wide fields appear on every line and exceptions keep their traceback."""
    set_static(ecs_task_arn="arn:aws:ecs:us-east-1:1:task/c/abc")

    def fail() -> None:
        raise ValueError("bad payload")

    try:
        try:
            fail()
        except ValueError:
            logging.getLogger("x").exception("failed")
    finally:
        set_static(ecs_task_arn=None)
    logging.getLogger("x").info("after")
    first, second = lines(stream)
    assert first["ecs_task_arn"] == "arn:aws:ecs:us-east-1:1:task/c/abc"
    assert "ValueError: bad payload" in str(first["exception"])
    assert "ecs_task_arn" not in second
