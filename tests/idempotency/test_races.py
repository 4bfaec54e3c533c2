"""The races that break non-atomic idempotency layers, as tests: tasks, processes, lost leases."""

from __future__ import annotations

import asyncio
import collections
import sys
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.idempotency import (
    Idempotency,
    LeaseLostError,
    ManualClock,
    MemoryStore,
    RedisStore,
)
from tests.idempotency.conftest import RecordingStore, texts
from tests.idempotency.hammer import work_through
from tests.processes import REPO

if TYPE_CHECKING:
    import redis.asyncio

    from tests.idempotency.conftest import Harness

pytestmark = pytest.mark.integration


async def test_many_tasks_on_overlapping_keys_run_each_effect_once(
    harness: Harness, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """Sixteen tasks race over the same 60 keys (with failures and retries): one effect per key."""
    idem = Idempotency(harness.store, prefix=harness.prefix, owner="tasks")
    keys = [f"k{i}" for i in range(60)]
    effects_key = f"{redis_prefix}:effects"
    seen = await asyncio.gather(
        *(
            work_through(
                idem,
                keys,
                effects=redis_client,
                effects_key=effects_key,
                worker=f"t{task}",
                seed=task,
            )
            for task in range(16)
        )
    )
    effects = collections.Counter(texts(await redis_client.lrange(effects_key, 0, -1)))
    assert effects == dict.fromkeys(keys, 1)
    # Every task observed, for every key, the single result that was stored.
    for key in keys:
        assert len({observed[key] for observed in seen}) == 1
    assert idem.stats.completed == len(keys)


@pytest.mark.process
async def test_several_processes_on_overlapping_keys_run_each_effect_once(
    redis_url: str, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """Three processes of eight tasks each race over the same 80 keys on one Redis."""
    processes, keys = 3, 80
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.idempotency.hammer",
            f"--redis-url={redis_url}",
            f"--prefix={redis_prefix}",
            f"--keys={keys}",
            "--tasks=8",
            f"--seed={seed}",
            cwd=REPO,
        )
        for seed in range(processes)
    ]
    try:
        for _ in range(processes):  # all started and connected: release them together
            assert await redis_client.blpop([f"{redis_prefix}:ready"], timeout=60) is not None
        await redis_client.rpush(f"{redis_prefix}:go", *range(processes))
        async with asyncio.timeout(90):
            codes = [await child.wait() for child in children]
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert codes == [0] * processes
    effects = collections.Counter(
        texts(await redis_client.lrange(f"{redis_prefix}:effects", 0, -1))
    )
    assert effects == {f"k{i}": 1 for i in range(keys)}
    seen = set(texts(await redis_client.lrange(f"{redis_prefix}:seen", 0, -1)))
    assert len(seen) == keys  # 24 tasks, each saw the same one result per key


async def test_heartbeat_keeps_a_long_block_alive_past_its_lease(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """On Redis, a block running longer than its lease keeps the key by renewing it."""
    lease = 0.3
    store = RecordingStore(RedisStore(redis_client))
    idem = Idempotency(store, prefix=redis_prefix, lease_seconds=lease)

    def renewals() -> int:
        return sum(1 for _, ok in store.renewed if ok)

    async with idem.guard("charges", "slow") as claim:
        # Four renewals, each lease/3 apart: the block has outlived its original lease.
        await store.wait_for(lambda: renewals() >= 4)
        assert await redis_client.exists(claim.key)
        claim.set_result("finished")
    assert not claim.lease_lost
    assert idem.stats.completed == 1


async def test_heartbeat_notices_a_lost_lease() -> None:
    """When the lease was lost (here: expired and reclaimed), the heartbeat marks the claim."""
    clock = ManualClock()
    store = RecordingStore(MemoryStore(clock=clock))
    idem = Idempotency(store, prefix="svc", lease_seconds=0.3, owner="zombie")
    other = Idempotency(store, prefix="svc", lease_seconds=30, owner="new")
    flagged: list[bool] = []

    async def outlive_the_lease() -> None:
        async with idem.guard("charges", "evt-1") as claim:
            clock.advance(1.0)
            async with other.guard("charges", "evt-1"):
                await store.wait_for(lambda: bool(store.renewed))
            flagged.append(claim.lease_lost)

    with pytest.raises(LeaseLostError):
        await outlive_the_lease()
    assert flagged == [True]
    assert store.renewed[0][1] is False
