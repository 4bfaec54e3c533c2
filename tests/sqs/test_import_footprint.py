"""What a running worker has imported: no HTTP server, no OpenTelemetry unless it is used.

Each worker runs as a real process (real SQS over HTTP, the real Redis or PostgreSQL for the
keyed ones) and its handler reports the watched packages it finds in ``sys.modules`` and which
module imported them first (an import hook installed before the runtime is imported).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import TYPE_CHECKING, Any

import pytest

from tests.processes import Child
from tests.sqs.worker_support import send

if TYPE_CHECKING:
    from tests.idempotency.postgres import PostgresSchema

pytestmark = [pytest.mark.process, pytest.mark.integration]


def _imports(env: dict[str, str], app: str) -> dict[str, Any]:
    """Run ``tests.sqs.import_apps:APP`` until its handler reports; return the report."""
    argv = [
        sys.executable,
        "-c",
        "import tests.sqs.import_apps as apps; apps.main()",
        "run",
        f"tests.sqs.import_apps:{app}",
    ]
    with Child(argv, env=env) as worker:
        report = worker.wait_for_message("imports")
    return report


def _env(worker_env: dict[str, str], queue: str, **extra: str) -> dict[str, str]:
    return {**worker_env, "FARGATE_RUNTIME_SQS_QUEUE_URL": queue, **extra}


def test_plain_worker_loads_no_http_server_no_sdk_and_no_redis(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str]
) -> None:
    """A worker without keys or telemetry loads no uvicorn, starlette, redis-py or OpenTelemetry."""
    queue = queue_factory()
    send(sync_sqs, queue, [json.dumps({"event_id": "e1"})])
    report = _imports(_env(worker_env, queue), "plain")
    assert report["loaded"] == [], report


def test_keyed_worker_loads_the_sdk_only_through_redis_py(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str]
) -> None:
    """With Redis keys, no HTTP server is loaded; the SDK only by redis-py, when installed."""
    queue = queue_factory()
    send(sync_sqs, queue, [json.dumps({"event_id": "e1"})])
    report = _imports(_env(worker_env, queue), "keyed")
    loaded, importers = report["loaded"], report["importers"]
    assert "redis" in loaded
    assert not {"uvicorn", "starlette", "asyncpg", "fargate_runtime.http.server"} & set(loaded), (
        report
    )
    if importlib.util.find_spec("opentelemetry.sdk") is not None:
        # redis-py 7+ imports the SDK's metrics module whenever it is installed: not ours.
        assert importers.get("opentelemetry.sdk", "redis").startswith("redis."), report
        assert importers.get("opentelemetry", "redis").startswith("redis."), report


def test_telemetry_on_loads_the_sdk_through_the_runtime(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str]
) -> None:
    """The watch sees what it is for: telemetry on, the runtime itself imports the SDK."""
    queue = queue_factory()
    send(sync_sqs, queue, [json.dumps({"event_id": "e1"})])
    env = _env(worker_env, queue, FARGATE_RUNTIME_TELEMETRY_ENABLED="true")
    report = _imports(env, "plain")
    assert report["loaded"] == ["opentelemetry", "opentelemetry.sdk"], report
    for package in ("opentelemetry", "opentelemetry.sdk"):
        assert report["importers"][package].startswith("fargate_runtime.telemetry"), report


def test_keyed_worker_on_postgres_loads_asyncpg_and_never_redis_py(
    sync_sqs: Any, queue_factory: Any, worker_env: dict[str, str], postgres_schema: PostgresSchema
) -> None:
    """With its keys in PostgreSQL a worker imports asyncpg for them, and neither redis-py nor
    an HTTP server."""
    queue = queue_factory()
    send(sync_sqs, queue, [json.dumps({"event_id": "e1"})])
    env = _env(
        worker_env,
        queue,
        FARGATE_RUNTIME_IDEMPOTENCY_STORE="postgres",
        FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_URL=postgres_schema.url,
        FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_SCHEMA=postgres_schema.name,
    )
    report = _imports(env, "keyed")
    loaded, importers = report["loaded"], report["importers"]
    assert "asyncpg" in loaded, report
    assert importers["asyncpg"].startswith("fargate_runtime.idempotency."), report
    assert not {"redis", "uvicorn", "starlette", "fargate_runtime.http.server"} & set(loaded), (
        report
    )
