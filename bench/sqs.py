"""The SQS consumer: requests per message against two peers, overhead, idle RSS, start time.

- ``requests_per_message``: each consumer drains a busy queue of ``BUSY_MESSAGES`` prefilled
  messages on the same local SQS endpoint (moto's server mode over HTTP). Requests are counted
  at the client, by a ``before-send`` hook on the real botocore/aiobotocore client (every HTTP
  request SQS would bill). Peers: aws-sqs-consumer (PyPI, sync boto3) in its default form
  (``batch_size=1``) and with ``batch_size=10``, and a plain aioboto3 loop (receive 10, delete
  each). Ours runs with real Redis idempotency and a no-op handler. Target <= 0.25.
- ``overhead_messages_per_second``: our consumer on one core (a child process pinned with
  ``sched_setaffinity``), an in-process SQS client stub that answers at once (so only our code
  and the real Redis round trips count), real Redis idempotency, a no-op handler
  (``bench/_overhead.py``); the median of every round. Target >= 5,000 msg/s. The machine is
  shared, so ``overhead_cpu_messages_per_second`` (messages per CPU second of the consumer's
  process) is reported beside it: it moves much less with other load.
- ``overhead_messages_per_second_telemetry``: the same with telemetry on (the SDK's providers
  as ``Telemetry`` installs them, spans batched to an exporter that drops them, as a task
  exporting to a collector does in its own process): one consumer span per message, continuing
  the ``traceparent`` every stub message carries, and the consumer's metrics.
  ``overhead_telemetry_ratio`` is its CPU rate over the CPU rate with telemetry off (target
  >= 0.7; the wall-clock ratio beside it).
- ``overhead_messages_per_second_detector`` and ``detector_cost_percent``: the same again with
  the watchdog's blocked-loop detector running (its pulse on the loop, its thread beside it), as
  under the supervisor; the cost is computed from the CPU rates. Target <= 2 %.
- The three run in alternation, ``OVERHEAD_ALTERNATIONS`` times, a child process each time.
- ``idle_rss_mb`` and ``start_to_ready_seconds``: the example worker under
  ``fargate-runtime run``, from process start to the consumer's "sqs consumer started" line,
  then its resident set after a moment idle, with the project's bytecode compiled as images
  ship it (``bench/_bytecode.py``). Targets <= 90 MB and <= 1.5 s.
- ``idle_stop_seconds`` and ``killed_worker_messages_back_seconds``: an idle worker's SIGTERM
  to exit, and a SIGKILLed worker's messages back in the queue, beside a hand-written loop
  (``_sqs_stops``). Targets <= 1 s and the 10 s receive visibility (+1 s of measurement).

Writes ``bench/results/sqs.json``. Traffic goes to 127.0.0.1 only. Queues stay shallow (moto
slows down linearly with queue depth).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aioboto3
import botocore.session
import redis.asyncio
from aws_sqs_consumer import Consumer as PeerConsumer

from bench._bytecode import compile_project
from bench._overhead import (
    BUDGET,
    OVERHEAD_CONCURRENCY,
    OVERHEAD_MESSAGES,
    ROUNDS_PER_CHILD,
    body,
    delete_prefix,
    overhead_pinned,
)
from bench._results import REPO, merge_results
from bench._sqs_stops import stop_figures
from fargate_runtime.idempotency import Idempotency, RedisStore
from fargate_runtime.lifecycle import Lifecycle
from fargate_runtime.local import MotoServer, answering_redis, sqs_environment
from fargate_runtime.sqs import Consumer, Message, MessageContext, SqsSettings, json_field

BUSY_MESSAGES = 300
OVERHEAD_ALTERNATIONS = 3
STARTS = 3
TARGETS = {
    "requests_per_message": 0.25,
    "overhead_messages_per_second": 5000,
    "overhead_telemetry_ratio": 0.7,
    "idle_rss_mb": 90,
    "start_to_ready_seconds": 1.5,
    "detector_cost_percent": 2,
    "idle_stop_seconds": 1,
    # The 10 s receive visibility, plus a second for moto's expiry tick and the 0.1 s poll.
    "killed_worker_messages_back_seconds": 11,
}


def _sync_client(endpoint: str) -> Any:
    """A blocking SQS client (what aws-sqs-consumer runs on; boto3's clients are botocore's)."""
    return botocore.session.get_session().create_client("sqs", endpoint_url=endpoint)


class _Requests:
    """Counts HTTP requests a botocore client sends (``before-send`` fires once per request)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, **_: Any) -> None:
        self.count += 1


def _fill(endpoint: str, count: int) -> str:
    """A fresh queue holding ``count`` messages (sent by a separate, uncounted client)."""
    client = _sync_client(endpoint)
    queue: str = client.create_queue(QueueName=f"bench{uuid.uuid4().hex[:12]}")["QueueUrl"]
    run = uuid.uuid4().hex[:8]
    for start in range(0, count, 10):
        client.send_message_batch(
            QueueUrl=queue,
            Entries=[
                {"Id": str(i), "MessageBody": body(start + i, run)}
                for i in range(min(10, count - start))
            ],
        )
    return queue


def _assert_empty(endpoint: str, queue: str) -> None:
    client = _sync_client(endpoint)
    attributes = client.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    visible = int(attributes["ApproximateNumberOfMessages"])
    in_flight = int(attributes["ApproximateNumberOfMessagesNotVisible"])
    assert (visible, in_flight) == (0, 0), (visible, in_flight)
    client.delete_queue(QueueUrl=queue)


# --- requests per message on a busy queue ------------------------------------------------------


async def _ours_requests(endpoint: str, redis_url: str) -> float:
    queue = _fill(endpoint, BUSY_MESSAGES)
    requests = _Requests()
    redis_client = redis.asyncio.Redis.from_url(redis_url)
    prefix = f"bench-sqs-{uuid.uuid4().hex[:8]}"
    async with aioboto3.Session().client("sqs", endpoint_url=endpoint) as client:
        client.meta.events.register("before-send.sqs", requests)

        async def handle(message: Message, context: MessageContext) -> None:
            """A no-op handler."""

        settings = SqsSettings(queue_url=queue)
        consumer = Consumer(
            handle,
            client=client,
            settings=settings,
            idempotency=Idempotency(RedisStore(redis_client), prefix=prefix),
            key=json_field("event_id"),
        )
        lifecycle = Lifecycle(BUDGET)
        task = asyncio.create_task(consumer.run(lifecycle))
        while consumer.stats.deleted < BUSY_MESSAGES:
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        sent = requests.count
        lifecycle.request_shutdown("bench")
        await task
    await delete_prefix(redis_client, prefix)
    _assert_empty(endpoint, queue)
    return sent / BUSY_MESSAGES


def _peer_requests(endpoint: str, *, batch_size: int) -> float:
    queue = _fill(endpoint, BUSY_MESSAGES)
    requests = _Requests()
    client = _sync_client(endpoint)
    client.meta.events.register("before-send.sqs", requests)
    handled = 0

    class NoOp(PeerConsumer):  # type: ignore[misc]
        def handle_message(self, message: Any) -> None:
            nonlocal handled
            handled += 1
            if handled >= BUSY_MESSAGES:
                self.stop()

        def handle_message_batch(self, messages: list[Any]) -> None:
            nonlocal handled
            handled += len(messages)
            if handled >= BUSY_MESSAGES:
                self.stop()

    # Its own defaults, but for the batch size and a 20 s long poll (like ours).
    NoOp(queue_url=queue, sqs_client=client, batch_size=batch_size, wait_time_seconds=20).start()
    _assert_empty(endpoint, queue)
    return requests.count / BUSY_MESSAGES


async def _plain_loop_requests(endpoint: str) -> float:
    """The loop people write first: receive up to 10, handle, delete each one."""
    queue = _fill(endpoint, BUSY_MESSAGES)
    requests = _Requests()
    handled = 0
    async with aioboto3.Session().client("sqs", endpoint_url=endpoint) as client:
        client.meta.events.register("before-send.sqs", requests)
        while handled < BUSY_MESSAGES:
            response = await client.receive_message(
                QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=20
            )
            for message in response.get("Messages", []):
                handled += 1
                await client.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    _assert_empty(endpoint, queue)
    return requests.count / BUSY_MESSAGES


# --- the example worker: start to ready, idle RSS ----------------------------------------------


def _worker_start(endpoint: str, redis_url: str, ledger: Path) -> tuple[float, float]:
    """Start the example worker; return (seconds to ready, RSS in MB after 2 s idle)."""
    client = _sync_client(endpoint)
    queue = client.create_queue(QueueName=f"bench{uuid.uuid4().hex[:12]}")["QueueUrl"]
    env = {
        **os.environ,
        **sqs_environment(endpoint),
        "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
        "REDIS_URL": redis_url,
        "PAYMENTS_LEDGER_PATH": str(ledger),
        "PYTHONUNBUFFERED": "1",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "fargate_runtime.cli", "run", "examples.sqs_worker.app:app"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    ready = None
    for line in process.stdout:
        if '"sqs consumer started"' in line:
            ready = time.perf_counter() - started
            break
    assert ready is not None, "the worker never became ready"
    drained = threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True)
    drained.start()
    time.sleep(2.0)  # idle: its long poll is waiting on an empty queue
    rss_mb = _rss_mb(process.pid)
    process.terminate()
    assert process.wait(timeout=30) == 0
    client.delete_queue(QueueUrl=queue)
    return ready, rss_mb


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# --- main ----------------------------------------------------------------------------------------


def _overheads(redis_url: str) -> tuple[dict[str, list[float]], ...]:
    """Telemetry off, detector on, telemetry on: a pinned child each, in alternation."""
    modes: list[tuple[str | None, bool]] = [(None, False), (None, True), ("batch", False)]
    runs: list[dict[str, list[float]]] = [{"wall": [], "cpu": [], "gc_us": []} for _ in modes]
    for _ in range(OVERHEAD_ALTERNATIONS):
        for figures, (telemetry, detector) in zip(runs, modes, strict=True):
            child = overhead_pinned(redis_url, telemetry=telemetry, detector=detector)
            for field, values in child.items():
                figures[field] += values
    return tuple(runs)


def main() -> dict[str, object]:
    """Run everything, print the table, write ``bench/results/sqs.json``."""
    with answering_redis() as redis_url, MotoServer() as moto:
        os.environ.update(sqs_environment(moto.endpoint_url))
        endpoint = moto.endpoint_url
        requests = {
            "fargate_runtime": asyncio.run(_ours_requests(endpoint, redis_url)),
            "aws_sqs_consumer_default": _peer_requests(endpoint, batch_size=1),
            "aws_sqs_consumer_batch10": _peer_requests(endpoint, batch_size=10),
            "aioboto3_plain_loop": asyncio.run(_plain_loop_requests(endpoint)),
        }
        overhead, overhead_detector, overhead_telemetry = _overheads(redis_url)
        compile_project()
        with tempfile.TemporaryDirectory() as scratch:
            starts = [
                _worker_start(endpoint, redis_url, Path(scratch) / f"ledger{i}.sqlite3")
                for i in range(STARTS)
            ]
            stops = stop_figures(endpoint, redis_url, Path(scratch))
    results: dict[str, object] = {
        "requests_per_message": {name: round(value, 3) for name, value in requests.items()},
        "overhead_messages_per_second": round(statistics.median(overhead["wall"])),
        "overhead_cpu_messages_per_second": round(statistics.median(overhead["cpu"])),
        "overhead_rounds_messages_per_second": [round(rate) for rate in overhead["wall"]],
        "overhead_messages_per_second_detector": round(
            statistics.median(overhead_detector["wall"])
        ),
        "overhead_cpu_messages_per_second_detector": round(
            statistics.median(overhead_detector["cpu"])
        ),
        # CPU-based: the wall-clock rates move more with the rest of the machine than this does.
        "detector_cost_percent": round(
            100
            * (
                1 - statistics.median(overhead_detector["cpu"]) / statistics.median(overhead["cpu"])
            ),
            2,
        ),
        "overhead_messages_per_second_telemetry": round(
            statistics.median(overhead_telemetry["wall"])
        ),
        "overhead_cpu_messages_per_second_telemetry": round(
            statistics.median(overhead_telemetry["cpu"])
        ),
        "overhead_rounds_messages_per_second_telemetry": [
            round(rate) for rate in overhead_telemetry["wall"]
        ],
        # CPU-based, as the detector's cost: what telemetry keeps of the consumer's rate.
        "overhead_telemetry_ratio": round(
            statistics.median(overhead_telemetry["cpu"]) / statistics.median(overhead["cpu"]), 3
        ),
        "overhead_telemetry_ratio_wall": round(
            statistics.median(overhead_telemetry["wall"]) / statistics.median(overhead["wall"]), 3
        ),
        "overhead_telemetry_export": "BatchSpanProcessor, an exporter dropping each batch",
        "overhead_cpu_us_per_message": {
            "telemetry_off": round(1e6 / statistics.median(overhead["cpu"]), 1),
            "telemetry_on": round(1e6 / statistics.median(overhead_telemetry["cpu"]), 1),
        },
        # Of those, the garbage collector's share.
        "overhead_gc_us_per_message": {
            "telemetry_off": round(statistics.median(overhead["gc_us"]), 1),
            "telemetry_on": round(statistics.median(overhead_telemetry["gc_us"]), 1),
        },
        "idle_rss_mb": round(statistics.median(rss for _, rss in starts), 1),
        "start_to_ready_seconds": round(statistics.median(ready for ready, _ in starts), 3),
        **stops,
        "targets": TARGETS,
        "settings": {
            "busy_queue_messages": BUSY_MESSAGES,
            "overhead_messages": OVERHEAD_MESSAGES,
            "overhead_concurrency": OVERHEAD_CONCURRENCY,
            "overhead_rounds": OVERHEAD_ALTERNATIONS * ROUNDS_PER_CHILD,
            "load_average_at_end": os.getloadavg()[0],
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
    }
    merge_results("sqs", results)  # sqs_throughput.py's figures live in the same file
    _print(results)
    return results


def _print(results: dict[str, Any]) -> None:
    print("requests per processed message (busy queue, counted at the client):")
    for name, value in results["requests_per_message"].items():
        print(f"  {name:<28} {value:>7.3f}")
    overhead, cpu = (
        results["overhead_messages_per_second"],
        results["overhead_cpu_messages_per_second"],
    )
    print(f"overhead (one core, SQS stub, real Redis): {overhead} msg/s ({cpu} per CPU second)")
    traced, traced_cpu = (
        results["overhead_messages_per_second_telemetry"],
        results["overhead_cpu_messages_per_second_telemetry"],
    )
    print(
        f"  same, telemetry on (batched export): {traced} msg/s ({traced_cpu} per CPU second), "
        f"{results['overhead_telemetry_ratio']} of the CPU rate off (target >= 0.7)"
    )
    print(
        f"  same, blocked-loop detector on: {results['overhead_messages_per_second_detector']} "
        f"msg/s; cost {results['detector_cost_percent']} % of CPU per message (target <= 2 %)"
    )
    print(f"idle worker RSS: {results['idle_rss_mb']} MB")
    print(f"start to ready:  {results['start_to_ready_seconds']} s")
    for name in ("idle_stop_seconds", "killed_worker_messages_back_seconds"):
        figure = results[name]
        print(
            f"{name}: {figure['fargate_runtime']} s; hand-written loop {figure['plain_loop']} s "
            f"({figure['ratio']}x)"
        )
    print(f"targets: {results['targets']}")


if __name__ == "__main__":
    main()
