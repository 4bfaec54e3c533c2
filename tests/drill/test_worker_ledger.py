"""The drill's worker refuses a PostgreSQL ledger it could not charge exactly once into."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.processes import Child, runtime_argv

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.process, pytest.mark.integration]


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ({}, "PAYMENTS_LEDGER=postgres needs FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres"),
        ({"PAYMENTS_UNSAFE": "no-idempotency"}, "cannot run with PAYMENTS_UNSAFE=no-idempotency"),
    ],
    ids=["redis store", "no idempotency"],
)
def test_a_postgres_ledger_without_the_postgres_store_exits_78(
    mode: dict[str, str], says: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """With the records in Redis (or nowhere) the charge cannot commit with its record: the
    worker stops at start with exit 78 and one line saying why."""
    env = {
        "PAYMENTS_LEDGER": "postgres",
        "PAYMENTS_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
        "REDIS_URL": redis_url,
        "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": redis_prefix,
        "FARGATE_RUNTIME_SQS_QUEUE_URL": "http://127.0.0.1:9/000000000000/q",
        "AWS_DEFAULT_REGION": "us-east-1",
        **mode,
    }
    with Child(runtime_argv("fargate_runtime.drill.worker:app"), env=env) as child:
        assert child.wait(timeout=30) == 78, child.output()
    critical = [line for line in child.lines if line.get("level") == "CRITICAL"]
    assert len(critical) == 1, child.output()
    assert says in critical[0]["message"]
    assert "Traceback" not in child.output()
