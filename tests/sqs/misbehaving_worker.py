"""A worker whose SQS handler misbehaves the way ordinary handlers do (blocks, spins, threads).

``MISBEHAVE`` picks the behaviour, ``MISBEHAVE_SECONDS`` how long. Each effect is written to
``EFFECTS_PATH`` as ``start|end <event_id> <pid> <wall time>`` lines, so a test can tell
whether one event's effect ever ran in two processes at once. Lines marked
``# culprit: NAME`` are where the watchdog must point.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from fargate_runtime import Runtime, Supervisor, load_settings
from fargate_runtime.idempotency import Idempotency, load_idempotency_settings, open_store
from fargate_runtime.sqs import (
    Consumer,
    Message,
    MessageContext,
    SqsSettings,
    json_field,
    open_sqs_client,
)

logger = logging.getLogger("tests.misbehaving_worker")

MISBEHAVE = os.environ.get("MISBEHAVE", "")
SECONDS = float(os.environ.get("MISBEHAVE_SECONDS", "60"))
EFFECTS_PATH = os.environ.get("EFFECTS_PATH", "effects.log")


def effect(what: str, event_id: str) -> None:
    """Append one line to the effects file (O_APPEND: lines from processes never interleave)."""
    with open(EFFECTS_PATH, "a", encoding="utf-8") as out:
        out.write(f"{what} {event_id} {os.getpid()} {time.time():.6f}\n")


def slow_effect(event_id: str, seconds: float) -> None:
    effect("start", event_id)
    time.sleep(seconds)  # culprit: thread
    effect("end", event_id)


def cpu_bound(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # culprit: cpu
        pass  # culprit: cpu


async def handle(message: Message, context: MessageContext) -> None:
    """Misbehave on every message, the way the environment says."""
    body = message.json()
    event_id = str(body["event_id"]) if isinstance(body, dict) else message.message_id
    logger.info("misbehaving", extra={"behaviour": MISBEHAVE, "event_id": event_id})
    if MISBEHAVE == "sleep":
        time.sleep(SECONDS)  # noqa: ASYNC251 - the misbehaviour under test  # culprit: sleep
    elif MISBEHAVE == "cpu":
        cpu_bound(SECONDS)
    elif MISBEHAVE == "thread":
        await asyncio.to_thread(slow_effect, event_id, SECONDS)
        return
    elif MISBEHAVE == "swallow":
        while True:
            try:
                await asyncio.sleep(SECONDS)  # culprit: swallow
                break
            except asyncio.CancelledError:
                logger.info("cancellation swallowed")
    elif MISBEHAVE in ("cancelled-error", "generator-exit"):
        if body.get("fail", True) if isinstance(body, dict) else True:
            raise asyncio.CancelledError if MISBEHAVE == "cancelled-error" else GeneratorExit
    elif MISBEHAVE == "system-exit":
        raise SystemExit(5)
    effect("start", event_id)
    effect("end", event_id)


app = Supervisor()


@app.setup
async def setup(rt: Runtime) -> None:
    """SQS, the Redis store and the consumer, from the environment."""
    sqs = load_settings(SqsSettings)
    client = await rt.enter(open_sqs_client(sqs), name="sqs")
    store_settings = load_idempotency_settings()
    store = await rt.enter(open_store(store_settings), name="idempotency")
    consumer = Consumer(
        handle,
        client=client,
        settings=sqs,
        idempotency=Idempotency.from_settings(store, store_settings),
        key=json_field("event_id"),
    )
    rt.add_service(consumer.run, name="sqs-consumer")
