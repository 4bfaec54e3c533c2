"""Many workers racing over overlapping keys; every effect is logged to a Redis list.

Used in-process by the tests (asyncio tasks) and as a child process
(``python -m tests.idempotency.hammer``) so several processes race on one Redis. The effect log
is a plain list outside the store under test: the test reads it to prove each key ran once.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys

import redis.asyncio

from fargate_runtime.idempotency import (
    AlreadyInProgressError,
    Idempotency,
    IdempotencySettings,
    open_store,
)


class Flaky(Exception):
    """A failure before the effect, to make workers release and retry."""


def fail_sometimes(rng: random.Random, key: str) -> None:
    """Raise Flaky one time in ten."""
    if rng.random() < 0.1:
        raise Flaky(key)


async def work_through(
    idem: Idempotency,
    keys: list[str],
    *,
    effects: redis.asyncio.Redis,
    effects_key: str,
    worker: str,
    seed: int,
) -> dict[str, object]:
    """Process every key until each is seen completed; return each key's observed result."""
    rng = random.Random(seed)
    pending = list(keys)
    rng.shuffle(pending)
    seen: dict[str, object] = {}
    while pending:
        key = pending.pop(0)
        try:
            async with idem.guard("hammer", key, payload={"key": key}) as claim:
                if claim.replayed:
                    seen[key] = claim.result
                    continue
                for _ in range(rng.randrange(3)):
                    await asyncio.sleep(0)  # let other tasks interleave mid-handler
                fail_sometimes(rng, key)  # before the effect: released, retried later
                await effects.rpush(effects_key, key)
                claim.set_result(f"{key} by {worker}")
                seen[key] = claim.result
        except (AlreadyInProgressError, Flaky):
            pending.append(key)
            await asyncio.sleep(0)
    return seen


async def _child(args: argparse.Namespace) -> None:
    settings = IdempotencySettings(redis_url=args.redis_url, key_prefix=args.prefix)
    effects = redis.asyncio.Redis.from_url(args.redis_url)
    async with open_store(settings) as store:
        idem = Idempotency.from_settings(store, settings, owner=f"process-{args.seed}")
        keys = [f"k{i}" for i in range(args.keys)]
        # Ready, then wait for the go: every process starts hammering at the same moment.
        await effects.rpush(f"{args.prefix}:ready", args.seed)
        await effects.blpop([f"{args.prefix}:go"], timeout=30)
        results = await asyncio.gather(
            *(
                work_through(
                    idem,
                    keys,
                    effects=effects,
                    effects_key=f"{args.prefix}:effects",
                    worker=f"p{args.seed}-t{task}",
                    seed=args.seed * 1000 + task,
                )
                for task in range(args.tasks)
            )
        )
    # Every task saw every key done, with the one result that was stored.
    for seen in results:
        await effects.rpush(f"{args.prefix}:seen", *(f"{k}={v}" for k, v in sorted(seen.items())))
    await effects.aclose()


def main(argv: list[str]) -> int:
    """Run one hammering process (see ``_child``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(_child(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
