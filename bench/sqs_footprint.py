"""What a worker costs before it handles anything: start-up CPU, idle memory, and where they go.

- ``footprint.worker``: the example worker (``fargate-runtime run examples.sqs_worker.app:app``,
  Redis keys, telemetry off) from exec to its "sqs consumer started" line: the process's CPU
  seconds then (``/proc/PID/stat``), and its resident set after 2 s idle in a long poll.
- ``footprint.plain_loop``: the same for a plain aioboto3 loop (import, client, first receive).
- ``footprint.imports``: what importing each dependency costs a fresh interpreter (CPU seconds
  and RSS), cumulatively, so the floor under the worker's figures is visible: aioboto3 alone,
  then redis-py, then pydantic-settings, then the OpenTelemetry API, then the runtime.
  ``sdk_installed`` says whether the OpenTelemetry SDK is importable: redis-py 7+ imports its
  metrics module whenever it is (``imports.with_redis_without_sdk`` shows the difference).

Rounds alternate between the worker and the plain loop; medians are reported. Merges into
``bench/results/sqs.json`` (``start_cpu_seconds``, ``idle_rss_mb_worker`` and ``footprint``).
"""

from __future__ import annotations

import importlib.util
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

import botocore.session

from bench._results import merge_results
from fargate_runtime.local import MotoServer, answering_redis, sqs_environment

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 3
IDLE_SECONDS = 2.0
TARGETS = {"start_cpu_seconds": 0.4, "idle_rss_mb": 60}
READY_LINE = "ready to receive"

# Each step imports what the one before did, and more.
IMPORT_STEPS = {
    "python": "pass",
    "aioboto3": "import aioboto3",
    "with_redis": "import aioboto3, redis.asyncio",
    "with_pydantic_settings": "import aioboto3, redis.asyncio, pydantic_settings",
    "with_otel_api": (
        "import aioboto3, redis.asyncio, pydantic_settings, opentelemetry.trace, "
        "opentelemetry.metrics"
    ),
    "example_worker_module": "import examples.sqs_worker.app",
}
# Hides the SDK from redis-py as an install without it would (a finder that refuses it).
_WITHOUT_SDK = (
    "import sys\n"
    "class _NoSdk:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'opentelemetry.sdk' or name.startswith('opentelemetry.sdk.'):\n"
    "            raise ModuleNotFoundError(name, name=name)\n"
    "sys.meta_path.insert(0, _NoSdk())\n"
)
_MEASURE = (
    "import resource\n"
    "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]\n"
    "print(usage.ru_utime + usage.ru_stime, int(rss) / 1024)\n"
)

_PLAIN_LOOP = """
import asyncio, aioboto3, os, sys
async def main():
    async with aioboto3.Session().client("sqs") as client:
        print("ready to receive", flush=True)
        while True:
            await client.receive_message(
                QueueUrl=os.environ["QUEUE_URL"], MaxNumberOfMessages=10, WaitTimeSeconds=20
            )
asyncio.run(main())
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _start(argv: list[str], env: dict[str, str], ready: str) -> dict[str, float]:
    """Start ``argv``; its CPU when ``ready`` shows, and its RSS after ``IDLE_SECONDS`` idle."""
    process = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    start_cpu = None
    for line in process.stdout:
        if ready in line:
            start_cpu = _cpu_seconds(process.pid)
            break
    assert start_cpu is not None, f"{argv} never became ready"
    drained = threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True)
    drained.start()
    time.sleep(IDLE_SECONDS)  # idle: its long poll waits on an empty queue
    rss = _rss_mb(process.pid)
    process.terminate()
    process.wait(timeout=30)
    return {"start_cpu_seconds": start_cpu, "idle_rss_mb": rss}


def _imports(code: str, *, without_sdk: bool = False) -> dict[str, float]:
    prelude = _WITHOUT_SDK if without_sdk else ""
    runs = []
    for _ in range(ROUNDS):
        output = subprocess.run(
            [sys.executable, "-c", f"{prelude}{code}\n{_MEASURE}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        runs.append((float(output[0]), float(output[1])))
    return {
        "cpu_seconds": round(statistics.median(cpu for cpu, _ in runs), 3),
        "rss_mb": round(statistics.median(rss for _, rss in runs), 1),
    }


def main() -> dict[str, object]:
    """Measure, print, merge into ``bench/results/sqs.json``."""
    worker_runs: list[dict[str, float]] = []
    loop_runs: list[dict[str, float]] = []
    with answering_redis() as redis_url, MotoServer() as moto, tempfile.TemporaryDirectory() as d:
        os.environ.update(sqs_environment(moto.endpoint_url))
        client: Any = botocore.session.get_session().create_client(
            "sqs", endpoint_url=moto.endpoint_url, region_name=moto.region
        )
        queue = client.create_queue(QueueName=f"fp{uuid.uuid4().hex[:12]}")["QueueUrl"]
        env = {
            **os.environ,
            **sqs_environment(moto.endpoint_url),
            "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
            "FARGATE_RUNTIME_SQS_ABANDON_RECEIVE_ON_SHUTDOWN": "true",
            "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": f"bench-fp-{uuid.uuid4().hex[:8]}",
            "REDIS_URL": redis_url,
            "PAYMENTS_LEDGER_PATH": str(Path(d) / "ledger.sqlite3"),
            "QUEUE_URL": queue,
            "PYTHONUNBUFFERED": "1",
        }
        worker = [sys.executable, "-m", "fargate_runtime.cli", "run", "examples.sqs_worker.app:app"]
        for _ in range(ROUNDS):
            worker_runs.append(_start(worker, env, '"sqs consumer started"'))
            loop_runs.append(_start([sys.executable, "-c", _PLAIN_LOOP], env, READY_LINE))
        client.delete_queue(QueueUrl=queue)
    imports = {name: _imports(code) for name, code in IMPORT_STEPS.items()}
    imports["with_redis_without_sdk"] = _imports(IMPORT_STEPS["with_redis"], without_sdk=True)

    def medians(runs: list[dict[str, float]]) -> dict[str, float]:
        return {
            field: round(statistics.median(run[field] for run in runs), 3)
            for field in ("start_cpu_seconds", "idle_rss_mb")
        }

    footprint: dict[str, Any] = {
        "worker": medians(worker_runs),
        "plain_loop": medians(loop_runs),
        "imports": imports,
        "sdk_installed": importlib.util.find_spec("opentelemetry.sdk") is not None,
        "targets": TARGETS,
        "rounds": ROUNDS,
    }
    figures: dict[str, object] = {
        "start_cpu_seconds": footprint["worker"]["start_cpu_seconds"],
        "idle_rss_mb_worker": footprint["worker"]["idle_rss_mb"],
        "footprint": footprint,
    }
    merge_results("sqs", figures)
    print(_summary(footprint))
    print(f"imports (CPU s, RSS MB), SDK installed: {footprint['sdk_installed']}:")
    for name, row in imports.items():
        print(f"  {name:<28} {row['cpu_seconds']:>6.3f} s {row['rss_mb']:>6.1f} MB")
    return figures


def _summary(footprint: dict[str, Any]) -> str:
    worker, loop = footprint["worker"], footprint["plain_loop"]
    return (
        f"worker: {worker['start_cpu_seconds']} s CPU to ready, {worker['idle_rss_mb']} MB idle; "
        f"plain loop: {loop['start_cpu_seconds']} s, {loop['idle_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
