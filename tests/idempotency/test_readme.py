"""The README's idempotency section: its Python code blocks run as written, against real Redis."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from typing import TYPE_CHECKING

import pytest

from tests.processes import REPO

if TYPE_CHECKING:
    import redis.asyncio

pytestmark = pytest.mark.integration

SECTION = "## Idempotency keys"


def idempotency_blocks() -> list[str]:
    """The ```python blocks between the section's heading and the next ``## `` heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_section_has_code_to_run() -> None:
    """The section shows code (so the test below is not vacuous)."""
    assert idempotency_blocks()


@pytest.mark.parametrize("index", range(len(idempotency_blocks())))
async def test_code_block_runs(
    index: int, redis_url: str, redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    """Each block runs to completion in a fresh interpreter (its keys under the test's prefix)."""
    block = idempotency_blocks()[index]
    env = {"REDIS_URL": redis_url, "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": redis_prefix}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        block,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, **env},
    )
    output, _ = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 0, output.decode()
    if '"evt-1"' in block:  # the guard example: its record is in Redis, not in memory
        assert await redis_client.exists(f"{redis_prefix}:charges:evt-1")
