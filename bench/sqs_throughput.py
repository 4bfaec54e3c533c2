"""SQS consumers end to end: throughput under heavy-tailed handlers, CPU and requests per message,
requests per message with long handlers, and what a million messages cost.

Every consumer runs in a child process of its own (``_sqs_peers``) against the same local SQS:
moto served with keep-alive by waitress (``_moto_keepalive``), as real SQS keeps connections
open; requests are counted at that server, per queue. Rounds alternate between the consumers
(the machine is shared: medians and the spread are reported, CPU time where wall time is
noisy). A feeder thread keeps each queue shallow (moto slows down with queue depth).

- ``heavy_tail``: messages per second at concurrency 10 with a seeded heavy-tailed handler
  latency (a sleep, no CPU): ours (slots refill as each message ends) against the aioboto3
  gather loop and aws-sqs-consumer's batch mode (both wait for a whole batch). Target:
  ``speedup_vs_gather_loop`` >= 3.
- ``capacity``: ours alone at concurrency 100 and 500 on an SQS stub that answers at once (moto
  could not feed it), the same latency: what one task can hold, in messages per second and CPU.
- ``cpu_ms_per_message``: a trivial handler, batch 10, 10 in flight: ours plain, with Redis
  keys, with telemetry (no exporter, and OTLP export to a collector on loopback), and the peers.
- ``requests_per_message_by_handler_seconds``: ours with handlers of 0.1 s, 5 s and 60 s, the
  consumer's settings as they are (receive visibility and heartbeat included). Target <= 0.25 at
  0.1 s; extensions batched: at most one ``ChangeMessageVisibilityBatch`` per 10 held messages
  per round.
- ``cost_per_million_messages``: SQS requests and CPU of each consumer, from the figures above
  and ``fargate_runtime.deploy.prices``.

Merges its figures into ``bench/results/sqs.json``. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import botocore.session

from bench._moto_keepalive import SERVER_NAME, KeepAliveMoto, request_counts
from bench._results import REPO, merge_results, run_child
from bench._sqs_peers import HeavyTail
from fargate_runtime.deploy.prices import PRICES_SOURCE, cost_per_million_messages
from fargate_runtime.local import answering_redis, free_port, sqs_environment

if TYPE_CHECKING:
    from collections.abc import Iterator

# What a consumer sends to SQS for its messages (the feeder's sends and depth reads are not).
CONSUMER_ACTIONS = frozenset(
    {
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
    }
)
VISIBILITY_ACTIONS = frozenset({"ChangeMessageVisibility", "ChangeMessageVisibilityBatch"})
FEED_DEPTH = 50
CONCURRENCY = 10

HEAVY_MESSAGES = 300
HEAVY_ROUNDS = 2
CAPACITY = {100: 3_000, 500: 12_000}
CPU_MESSAGES = 600
CPU_ROUNDS = 3
BY_HANDLER_SECONDS = {0.1: 200, 5.0: 60, 60.0: 20}
TARGETS = {
    "speedup_vs_gather_loop": 3,
    "requests_per_message_at_0.1_seconds": 0.25,
    "visibility_calls_per_10_extended": 1,
    "runtime_vs_plain_loop_cpu": 1.1,
    "redis_keys_added_percent": 15,
    "telemetry_no_exporter_added_percent": 10,
}

# The consumers of the CPU comparison: name -> child spec.
CPU_CONSUMERS: dict[str, dict[str, Any]] = {
    "fargate_runtime": {"kind": "runtime"},
    "fargate_runtime_redis_keys": {"kind": "runtime", "redis": True},
    "fargate_runtime_telemetry_no_exporter": {"kind": "runtime", "telemetry": "none"},
    "fargate_runtime_telemetry_otlp": {"kind": "runtime", "telemetry": "otlp"},
    "aioboto3_batch_loop": {"kind": "gather_loop"},
    "aioboto3_delete_each_loop": {"kind": "delete_each"},
    "aws_sqs_consumer_batch10": {"kind": "aws_sqs_consumer"},
}
HEAVY_CONSUMERS: dict[str, dict[str, Any]] = {
    "fargate_runtime": {"kind": "runtime"},
    # The same, gathering freed slots for longer before a receive (fewer, fuller receives).
    "fargate_runtime_gather_0.2": {"kind": "runtime", "sqs_settings": {"gather_seconds": 0.2}},
    "gather_loop": {"kind": "gather_loop"},
    "aws_sqs_consumer": {"kind": "aws_sqs_consumer"},
}


def _sync_client(endpoint: str) -> Any:
    return botocore.session.get_session().create_client("sqs", endpoint_url=endpoint)


def _body(sequence: int, run: str) -> str:
    return json.dumps({"event_id": f"{run}-{sequence}", "amount_cents": 100, "sequence": sequence})


def _feed(endpoint: str, queue: str, count: int, stop: threading.Event) -> None:
    """Send ``count`` messages, keeping at most ``FEED_DEPTH`` visible (moto slows with depth)."""
    client = _sync_client(endpoint)
    run = uuid.uuid4().hex[:8]
    sent = 0
    while sent < count and not stop.is_set():
        attributes = client.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        if int(attributes["ApproximateNumberOfMessages"]) >= FEED_DEPTH:
            stop.wait(0.02)  # polled: SQS tells depth only when asked
            continue
        batch = min(10, count - sent)
        client.send_message_batch(
            QueueUrl=queue,
            Entries=[{"Id": str(i), "MessageBody": _body(sent + i, run)} for i in range(batch)],
        )
        sent += batch


def _consumer_requests(endpoint: str, queue: str) -> dict[str, int]:
    name = queue.rstrip("/").rsplit("/", 1)[-1]
    actions: dict[str, int] = request_counts(endpoint)["queues"].get(name, {})
    return {action: n for action, n in actions.items() if action in CONSUMER_ACTIONS}


def _run_child(endpoint: str, spec: dict[str, Any], count: int) -> dict[str, Any]:
    """Run one consumer on a fresh queue fed with ``count`` messages; its figures."""
    client = _sync_client(endpoint)
    queue = client.create_queue(QueueName=f"tp{uuid.uuid4().hex[:12]}")["QueueUrl"]
    full = {**spec, "endpoint_url": endpoint, "queue_url": queue, "count": count}
    full.setdefault("concurrency", CONCURRENCY)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench._sqs_peers", json.dumps(full)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **sqs_environment(endpoint)},
    )
    assert process.stdout is not None
    stop = threading.Event()
    feeder = None
    figures: dict[str, Any] | None = None
    try:
        for line in process.stdout:
            answer = json.loads(line)
            if answer.get("ready"):
                feeder = threading.Thread(target=_feed, args=(endpoint, queue, count, stop))
                feeder.start()
            elif "handled" in answer:
                figures = answer
                break
        assert figures is not None, f"{spec} ended without figures (exit {process.wait()})"
        requests = _consumer_requests(endpoint, queue)
        process.stdout.read()
        assert process.wait(timeout=60) == 0, spec
    finally:
        stop.set()
        if feeder is not None:
            feeder.join()
        if process.poll() is None:
            process.kill()
            process.wait()
    client.delete_queue(QueueUrl=queue)
    handled = figures["handled"]
    return {
        "messages_per_second": handled / figures["wall_seconds"],
        "steady_messages_per_second": figures["steady_messages_per_second"],
        "cpu_ms_per_message": 1000 * figures["cpu_seconds"] / handled,
        "requests_per_message": sum(requests.values()) / handled,
        "peak_rss_mb": figures["peak_rss_mb"],
        "start_cpu_seconds": figures["start_cpu_seconds"],
    }


def _alternating(
    endpoint: str, consumers: dict[str, dict[str, Any]], *, count: int, rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Each consumer once per round, in the same order, ``rounds`` times; every round's figures."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in consumers}
    for round_number in range(rounds):
        for name, spec in consumers.items():
            runs[name].append(_run_child(endpoint, {**spec, "round": round_number}, count))
    return runs


def _median(runs: list[dict[str, Any]], field: str) -> float:
    return float(statistics.median(float(run[field]) for run in runs))


def _spread(runs: list[dict[str, Any]], field: str) -> list[float]:
    values = [run[field] for run in runs]
    return [round(min(values), 3), round(max(values), 3)]


# --- heavy tail and capacity ----------------------------------------------------------------------


def _heavy_tail(endpoint: str) -> dict[str, Any]:
    """Steady-state rates (10th to 90th percentile of handler ends) are the headline: a short
    run's start and its last 2 s message would otherwise weigh on every consumer."""
    tail = HeavyTail(seed=17)
    consumers = {
        name: {**spec, "latency": tail.describe()} for name, spec in HEAVY_CONSUMERS.items()
    }
    runs = _alternating(endpoint, consumers, count=HEAVY_MESSAGES, rounds=HEAVY_ROUNDS)
    steady = {name: _median(runs[name], "steady_messages_per_second") for name in consumers}
    return {
        "fargate_runtime_messages_per_second": round(steady["fargate_runtime"], 1),
        "gather_loop_messages_per_second": round(steady["gather_loop"], 1),
        "aws_sqs_consumer_messages_per_second": round(steady["aws_sqs_consumer"], 1),
        "speedup_vs_gather_loop": round(steady["fargate_runtime"] / steady["gather_loop"], 2),
        "by_consumer": {
            name: {
                "steady_messages_per_second": round(steady[name], 1),
                "steady_spread": _spread(runs[name], "steady_messages_per_second"),
                "whole_run_messages_per_second": round(
                    _median(runs[name], "messages_per_second"), 1
                ),
                "requests_per_message": round(_median(runs[name], "requests_per_message"), 3),
                "cpu_ms_per_message": round(_median(runs[name], "cpu_ms_per_message"), 3),
            }
            for name in consumers
        },
        "latency": tail.describe(),
        "ideal_messages_per_second": round(CONCURRENCY / _mean_latency(tail), 1),
        "messages": HEAVY_MESSAGES,
        "rounds": HEAVY_ROUNDS,
        "concurrency": CONCURRENCY,
    }


def _mean_latency(tail: HeavyTail) -> float:
    return statistics.fmean(tail.seconds(sequence) for sequence in range(20_000))


def _capacity_child(concurrency: int, count: int) -> None:
    """Child entry point: ours on the SQS stub at ``concurrency``, heavy-tailed; print figures."""
    from bench._overhead import StubSqs
    from bench._sqs_peers import _handled, _steady_rate
    from fargate_runtime.lifecycle import Lifecycle
    from fargate_runtime.sqs import Consumer, Message, MessageContext, SqsSettings

    tail = HeavyTail(seed=17)

    async def handle(message: Message, context: MessageContext) -> None:
        """Waits like a call downstream would (no CPU)."""
        seconds = tail.seconds(int(json.loads(message.body)["sequence"]))
        await asyncio.sleep(seconds)
        _handled(seconds)

    async def consume() -> dict[str, float]:
        stub = StubSqs(count)
        consumer = Consumer(
            handle,
            client=stub,  # type: ignore[arg-type]
            settings=SqsSettings(
                queue_url="https://sqs.bench.invalid/1/stub",
                concurrency=concurrency,
            ),
        )
        from bench._overhead import BUDGET

        lifecycle = Lifecycle(BUDGET)
        cpu, wall = time.process_time(), time.perf_counter()
        task = asyncio.create_task(consumer.run(lifecycle))
        while consumer.stats.deleted < count:
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        lifecycle.request_shutdown("bench")
        await task
        return {
            "messages_per_second": _steady_rate() or count / wall,
            "whole_run_messages_per_second": count / wall,
            "cpu_ms_per_message": 1000 * cpu / count,
        }

    sys.stdout.write(json.dumps(asyncio.run(consume())) + "\n")


def _capacity() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for concurrency, count in CAPACITY.items():
        code = (
            "from bench.sqs_throughput import _capacity_child; "
            f"_capacity_child({concurrency}, {count})"
        )
        figures = run_child(code)
        ideal = concurrency / _mean_latency(HeavyTail(seed=17))
        results[str(concurrency)] = {
            # Steady state (10th to 90th percentile of handler ends), as for the heavy tail.
            "messages_per_second": round(figures["messages_per_second"], 1),
            "whole_run_messages_per_second": round(figures["whole_run_messages_per_second"], 1),
            "ideal_messages_per_second": round(ideal, 1),
            "cpu_ms_per_message": round(figures["cpu_ms_per_message"], 3),
            "cpu_share_of_one_vcpu": round(
                figures["messages_per_second"] * figures["cpu_ms_per_message"] / 1000, 3
            ),
            "messages": count,
        }
    return results


# --- CPU and requests per message, trivial handler ---------------------------------------------


def _cpu(endpoint: str, redis_url: str, otlp_endpoint: str) -> dict[str, Any]:
    consumers = {
        name: {**spec, "redis_url": redis_url, "otlp_endpoint": otlp_endpoint}
        for name, spec in CPU_CONSUMERS.items()
    }
    runs = _alternating(endpoint, consumers, count=CPU_MESSAGES, rounds=CPU_ROUNDS)
    cpu = {name: _median(runs[name], "cpu_ms_per_message") for name in consumers}
    plain = cpu["aioboto3_batch_loop"]
    ours = cpu["fargate_runtime"]
    return {
        "cpu_ms_per_message": {name: round(value, 3) for name, value in cpu.items()},
        "cpu_ms_per_message_spread": {
            name: _spread(runs[name], "cpu_ms_per_message") for name in consumers
        },
        "cpu_vs_plain_loop": {name: round(value / plain, 2) for name, value in cpu.items()},
        "added_percent": {
            "redis_keys": round(100 * (cpu["fargate_runtime_redis_keys"] / ours - 1), 1),
            "telemetry_no_exporter": round(
                100 * (cpu["fargate_runtime_telemetry_no_exporter"] / ours - 1), 1
            ),
            "telemetry_otlp": round(100 * (cpu["fargate_runtime_telemetry_otlp"] / ours - 1), 1),
        },
        "requests_per_message_end_to_end": {
            name: round(_median(runs[name], "requests_per_message"), 3) for name in consumers
        },
        "peak_rss_mb": {name: round(_median(runs[name], "peak_rss_mb"), 1) for name in consumers},
        "messages": CPU_MESSAGES,
        "rounds": CPU_ROUNDS,
    }


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that accepts everything and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


class _Collector:
    """``_Sink`` on a free loopback port, served from a thread for the block."""

    def __enter__(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Sink)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- requests per message with long handlers ---------------------------------------------------


async def _by_handler_seconds(endpoint: str) -> dict[str, Any]:
    """Ours on three queues at once (one per handler duration); requests counted per queue."""
    from bench._overhead import BUDGET
    from fargate_runtime.lifecycle import Lifecycle
    from fargate_runtime.sqs import Consumer, Message, MessageContext, SqsSettings, open_sqs_client

    async def one(seconds: float, count: int) -> tuple[str, dict[str, Any]]:
        client = _sync_client(endpoint)
        queue = client.create_queue(QueueName=f"hs{uuid.uuid4().hex[:12]}")["QueueUrl"]
        run = uuid.uuid4().hex[:8]
        for start in range(0, count, 10):
            client.send_message_batch(
                QueueUrl=queue,
                Entries=[
                    {"Id": str(i), "MessageBody": _body(start + i, run)}
                    for i in range(min(10, count - start))
                ],
            )

        async def handle(message: Message, context: MessageContext) -> None:
            """A handler that takes ``seconds`` (a call downstream)."""
            await asyncio.sleep(seconds)

        # The consumer's own settings, as the environment and defaults give them.
        settings = SqsSettings(queue_url=queue, endpoint_url=endpoint, concurrency=CONCURRENCY)
        async with open_sqs_client(settings) as sqs:
            consumer = Consumer(handle, client=sqs, settings=settings)
            lifecycle = Lifecycle(BUDGET)
            task = asyncio.create_task(consumer.run(lifecycle))
            while consumer.stats.deleted < count:
                await asyncio.sleep(0.1)
                if task.done():
                    task.result()
            requests = _consumer_requests(endpoint, queue)
            lifecycle.request_shutdown("bench")
            await task
        client.delete_queue(QueueUrl=queue)
        extended = consumer.stats.heartbeat_extensions
        visibility_calls = sum(n for a, n in requests.items() if a in VISIBILITY_ACTIONS)
        return f"{seconds:g}", {
            "requests_per_message": round(sum(requests.values()) / count, 3),
            "by_action": requests,
            "extended_entries": extended,
            "visibility_calls": visibility_calls,
            # One ChangeMessageVisibilityBatch per 10 extended messages is the most batching
            # can do; 1.0 means every round went out in full batches.
            "visibility_calls_per_10_extended": (
                round(10 * visibility_calls / extended, 2) if extended else None
            ),
            "messages": count,
            "visibility_timeout_seconds": settings.visibility_timeout_seconds,
        }

    pairs = await asyncio.gather(*(one(s, n) for s, n in BY_HANDLER_SECONDS.items()))
    return dict(pairs)


# --- main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _servers() -> Iterator[tuple[str, str, str]]:
    """SQS (keep-alive moto), Redis and an OTLP collector, all on loopback, for the block."""
    with answering_redis() as redis_url, KeepAliveMoto() as moto, _Collector() as collector:
        os.environ.update(sqs_environment(moto.endpoint_url))
        yield moto.endpoint_url, redis_url, collector


def main() -> dict[str, object]:
    """Run everything, print the tables, merge the figures into ``bench/results/sqs.json``."""
    started = time.perf_counter()
    with _servers() as (endpoint, redis_url, collector):
        print(f"SQS: {SERVER_NAME}; requests counted at the server")
        heavy = _heavy_tail(endpoint)
        capacity = _capacity()
        cpu = _cpu(endpoint, redis_url, collector)
        by_seconds = asyncio.run(_by_handler_seconds(endpoint))
        connections = request_counts(endpoint)
    costs = _costs(cpu)
    figures: dict[str, object] = {
        "heavy_tail": heavy,
        "capacity_by_concurrency": capacity,
        "end_to_end": cpu,
        "requests_per_message_by_handler_seconds": by_seconds,
        "cost_per_million_messages": costs,
        "sqs_server": {
            "name": SERVER_NAME,
            "requests": connections["requests"],
            "connections": connections["connections"],
        },
        "throughput_targets": TARGETS,
        "throughput_settings": {
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg()[0],
            "seconds": round(time.perf_counter() - started),
            "python": sys.version.split()[0],
        },
    }
    merge_results("sqs", figures)
    _print(figures)
    return figures


def _costs(cpu: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {"prices": PRICES_SOURCE}
    for name, cpu_ms in cpu["cpu_ms_per_message"].items():
        requests = cpu["requests_per_message_end_to_end"][name]
        cost = cost_per_million_messages(requests_per_message=requests, cpu_ms_per_message=cpu_ms)
        table[name] = {
            "sqs_requests_usd": round(cost.sqs_requests_usd, 4),
            "cpu_usd": round(cost.cpu_usd, 4),
            "total_usd": round(cost.total_usd, 4),
        }
    return table


def _print(figures: dict[str, Any]) -> None:
    heavy = figures["heavy_tail"]
    print(
        "heavy-tailed handlers, concurrency 10 (msg/s): "
        f"ours {heavy['fargate_runtime_messages_per_second']}, "
        f"gather loop {heavy['gather_loop_messages_per_second']}, "
        f"aws-sqs-consumer {heavy['aws_sqs_consumer_messages_per_second']}; "
        f"speedup {heavy['speedup_vs_gather_loop']}x (target >= 3; ideal "
        f"{heavy['ideal_messages_per_second']} msg/s)"
    )
    for concurrency, row in figures["capacity_by_concurrency"].items():
        print(
            f"  ours alone at concurrency {concurrency} (SQS stub): "
            f"{row['messages_per_second']} msg/s of {row['ideal_messages_per_second']} ideal, "
            f"{row['cpu_ms_per_message']} CPU ms/msg"
        )
    end = figures["end_to_end"]
    print("trivial handler, batch 10, 10 in flight: CPU ms/msg (x plain loop), requests/msg, RSS")
    for name, value in end["cpu_ms_per_message"].items():
        print(
            f"  {name:<40} {value:>7.3f} ({end['cpu_vs_plain_loop'][name]:.2f}x) "
            f"{end['requests_per_message_end_to_end'][name]:>6.3f} "
            f"{end['peak_rss_mb'][name]:>6.1f} MB"
        )
    print(f"  added: {end['added_percent']}")
    print("requests per message by handler seconds:")
    for seconds, row in figures["requests_per_message_by_handler_seconds"].items():
        print(
            f"  {seconds:>4} s: {row['requests_per_message']} "
            f"(visibility calls per 10 extended: {row['visibility_calls_per_10_extended']})"
        )
    print(f"cost per million messages ({figures['cost_per_million_messages']['prices']}):")
    for name, row in figures["cost_per_million_messages"].items():
        if isinstance(row, dict):
            print(
                f"  {name:<40} SQS ${row['sqs_requests_usd']:.4f}  CPU ${row['cpu_usd']:.4f}  "
                f"total ${row['total_usd']:.4f}"
            )
    server = figures["sqs_server"]
    print(f"{server['name']}: {server['requests']} requests on {server['connections']} connections")


if __name__ == "__main__":
    main()
