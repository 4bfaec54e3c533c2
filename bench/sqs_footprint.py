"""What a worker costs before it handles anything: start-up CPU, idle memory, and where they go.

- ``footprint.worker``: the example worker (``fargate-runtime run examples.sqs_worker.app:app``,
  Redis keys, telemetry off) from exec to its "sqs consumer started" line: the process's CPU
  seconds then (``/proc/PID/stat``), and its resident set after 2 s idle in a long poll.
- ``footprint.plain_worker``: the same for the smallest ``sqs_worker`` (no keys, no HTTP, no
  telemetry: ``bench/_footprint_apps.py``), what the runtime itself costs.
- ``footprint.plain_loop``: the same for a plain aioboto3 loop (import, client, first receive).
- ``footprint.imports``: what importing a set of packages costs a fresh interpreter (CPU seconds
  and RSS), so the floor under the workers' figures is visible: aioboto3 alone, with
  pydantic-settings (the runtime's settings), then the plain worker's module; with redis-py,
  then the example worker's module. ``sdk_installed`` says whether the OpenTelemetry SDK is
  importable: redis-py 7+ imports its metrics module whenever it is
  (``imports.with_redis_without_sdk`` shows the difference). ``with_otel_api`` is what the
  OpenTelemetry API would add (a worker without telemetry no longer loads it).
- ``footprint.floor``: the plain loop plus what pydantic-settings (and, for the example worker,
  redis-py) add to a bare aioboto3 import: below it no worker on these libraries can go.

The project's bytecode is compiled first, as the images ship it (``bench/_bytecode.py``). Rounds
alternate between the workers and the plain loop; medians are reported. Merges into
``bench/results/sqs.json`` (``start_cpu_seconds``, ``idle_rss_mb_worker``, their
``_plain_worker`` twins and ``footprint``).
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

from bench._bytecode import compile_project
from bench._results import REPO, merge_results
from fargate_runtime.local import MotoServer, answering_redis, sqs_environment

ROUNDS = 5
IDLE_SECONDS = 2.0
TARGETS = {"start_cpu_seconds": 0.4, "idle_rss_mb": 60}
READY_LINE = "ready to receive"

# What a fresh interpreter has imported, in two chains: without redis-py, then with it.
IMPORT_STEPS = {
    "python": "pass",
    "aioboto3": "import aioboto3",
    "with_pydantic_settings": "import aioboto3, pydantic_settings",
    "with_otel_api": (
        "import aioboto3, pydantic_settings, opentelemetry.trace, opentelemetry.metrics"
    ),
    "plain_worker_module": "import bench._footprint_apps",
    "with_redis": "import aioboto3, pydantic_settings, redis.asyncio",
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
    compile_project()
    worker_runs: list[dict[str, float]] = []
    plain_runs: list[dict[str, float]] = []
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
            "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": f"bench-fp-{uuid.uuid4().hex[:8]}",
            "REDIS_URL": redis_url,
            "PAYMENTS_LEDGER_PATH": str(Path(d) / "ledger.sqlite3"),
            "QUEUE_URL": queue,
            "PYTHONUNBUFFERED": "1",
        }
        run = [sys.executable, "-m", "fargate_runtime.cli", "run"]
        ready = '"sqs consumer started"'
        for _ in range(ROUNDS):
            worker_runs.append(_start([*run, "examples.sqs_worker.app:app"], env, ready))
            plain_runs.append(_start([*run, "bench._footprint_apps:plain"], env, ready))
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
        "plain_worker": medians(plain_runs),
        "plain_loop": medians(loop_runs),
        "imports": imports,
        "floor": _floor(medians(loop_runs), imports),
        "sdk_installed": importlib.util.find_spec("opentelemetry.sdk") is not None,
        "targets": TARGETS,
        "rounds": ROUNDS,
    }
    figures: dict[str, object] = {
        "start_cpu_seconds": footprint["worker"]["start_cpu_seconds"],
        "idle_rss_mb_worker": footprint["worker"]["idle_rss_mb"],
        "start_cpu_seconds_plain_worker": footprint["plain_worker"]["start_cpu_seconds"],
        "idle_rss_mb_plain_worker": footprint["plain_worker"]["idle_rss_mb"],
        "footprint": footprint,
    }
    merge_results("sqs", figures)
    print(_summary(footprint))
    print(f"imports (CPU s, RSS MB), SDK installed: {footprint['sdk_installed']}:")
    for name, row in imports.items():
        print(f"  {name:<28} {row['cpu_seconds']:>6.3f} s {row['rss_mb']:>6.1f} MB")
    return figures


def _floor(loop: dict[str, float], imports: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The plain loop plus what the libraries a worker needs add to a bare aioboto3 import."""

    def added(step: str) -> tuple[float, float]:
        return (
            imports[step]["cpu_seconds"] - imports["aioboto3"]["cpu_seconds"],
            imports[step]["rss_mb"] - imports["aioboto3"]["rss_mb"],
        )

    floors: dict[str, Any] = {}
    for worker, step in (("plain_worker", "with_pydantic_settings"), ("worker", "with_redis")):
        cpu, rss = added(step)
        floors[worker] = {
            "start_cpu_seconds": round(loop["start_cpu_seconds"] + cpu, 3),
            "idle_rss_mb": round(loop["idle_rss_mb"] + rss, 1),
            "libraries": step,
        }
    return floors


def _summary(footprint: dict[str, Any]) -> str:
    lines = []
    for name in ("worker", "plain_worker", "plain_loop"):
        row = footprint[name]
        floor = footprint["floor"].get(name)
        under = (
            f" (floor {floor['start_cpu_seconds']} s, {floor['idle_rss_mb']} MB)" if floor else ""
        )
        lines.append(
            f"{name:<13} {row['start_cpu_seconds']:.3f} s CPU to ready, "
            f"{row['idle_rss_mb']:.1f} MB idle{under}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
