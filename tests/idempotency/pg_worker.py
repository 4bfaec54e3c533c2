"""A worker process for the crash tests: claim a key, write in a transaction, stop at a point.

``python -m tests.idempotency.pg_worker URL SCHEMA KEY MODE`` prints a JSON line and then
blocks on stdin until the test kills it. MODE ``before-commit``: ``{"event": "written"}`` inside
the open transaction; ``after-commit``: ``{"event": "committed"}`` after the COMMIT that
completes the key; ``after-step``: ``{"event": "stepped"}`` after committing the recovery point
``charged`` of a two-step effect, before its second step.
"""

from __future__ import annotations

import asyncio
import json
import sys

from fargate_runtime.idempotency import ClaimStatus, Held, PostgresStore


def _say(event: str, token: int) -> None:
    sys.stdout.write(json.dumps({"event": event, "token": token}) + "\n")
    sys.stdout.flush()


async def main(url: str, schema: str, key: str, mode: str) -> None:
    """Claim ``key`` with a 1 s lease, insert a charge, stop before or after the commit."""
    async with PostgresStore(url, schema=schema, cleanup=False) as store:
        result = await store.claim(key, "fp", owner="crashing-worker", lease_seconds=1.0)
        assert result.status is ClaimStatus.ACQUIRED
        assert result.token is not None
        recovery = store.transactional(Held(key, result.token), retention_seconds=3600)
        if mode == "after-step":
            async with recovery.step("charged") as tx:
                await tx.execute(f"INSERT INTO {schema}.charges VALUES ($1, 1)", key)
            _say("stepped", result.token)
            await asyncio.to_thread(sys.stdin.readline)  # the test SIGKILLs us here
        async with recovery.transaction() as tx:
            await tx.execute(f"INSERT INTO {schema}.charges VALUES ($1, 1)", key)
            if mode == "before-commit":
                _say("written", result.token)
                await asyncio.to_thread(sys.stdin.readline)  # the test SIGKILLs us here
        _say("committed", result.token)
        await asyncio.to_thread(sys.stdin.readline)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
