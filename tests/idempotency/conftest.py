"""Fixtures for the idempotency tests: one harness per store (memory, real Redis, PostgreSQL).

The harness hides the only thing the stores do differently in a test: how a lease is made to
run out (advancing the injected clock; a short real ``PX`` lease and polling Redis until the key
is gone; a short lease and waiting out what PostgreSQL's own clock says is left of it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import redis.asyncio

from fargate_runtime.idempotency import (
    ManualClock,
    MemoryStore,
    PostgresStore,
    RedisStore,
    StoreBase,
    scoped_key,
)
from tests.idempotency.postgres import wait_until_forgotten

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from fargate_runtime.idempotency import ClaimRequest, ClaimResult, Completion, Held

# Short enough to expire quickly on a real Redis, long enough not to expire mid-call on a busy
# 2-core machine.
SHORT_LEASE_SECONDS = 0.2
_EXPIRY_WAIT_SECONDS = 10.0


def texts(items: list[bytes] | list[str] | list[bytes | str]) -> list[str]:
    """Redis replies as text (the test clients do not decode responses)."""
    return [item.decode() if isinstance(item, bytes) else item for item in items]


@dataclass
class Harness:
    """A store under test and the way to let one of its leases run out."""

    name: str
    store: StoreBase
    prefix: str
    expire: Callable[[str], Awaitable[None]]

    def key(self, name: str, scope: str = "orders") -> str:
        """A stored key under this test's prefix."""
        return scoped_key(self.prefix, scope, name)


async def wait_until_gone(client: redis.asyncio.Redis, key: str) -> None:
    """Poll Redis until ``key`` has expired (server-side TTL), failing after a generous bound."""
    async with asyncio.timeout(_EXPIRY_WAIT_SECONDS):
        # Redis expires keys on its own clock and tells nobody (without keyspace events, which
        # a shared server should not be reconfigured for): polling is how to see it.
        while await client.exists(key):  # noqa: ASYNC110 - no event exists to wait on
            await asyncio.sleep(0.01)


@pytest.fixture
async def decoding_redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client that decodes replies as latin-1 text: the store must not care (keys cleaned up
    by ``redis_client``)."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True, encoding="latin-1")
    try:
        yield client
    finally:
        await client.aclose()


# Each store joins the conformance suite with one entry here (and its branch below).
STORES = ["memory", "redis", "redis-decoding", "postgres"]


@pytest.fixture(params=STORES)
def harness(request: pytest.FixtureRequest, redis_prefix: str) -> Harness:
    """The conformance harness over each store: in memory, a real Redis, a real Redis through a
    client made with ``decode_responses=True`` and ``encoding="latin-1"``, and a real PostgreSQL."""
    if request.param == "postgres":
        store: PostgresStore = request.getfixturevalue("postgres_store")

        async def forgotten(key: str) -> None:
            await wait_until_forgotten(store, key)

        return Harness("postgres", store, redis_prefix, forgotten)
    if request.param == "memory":
        clock = ManualClock()

        async def advance(key: str) -> None:
            clock.advance(SHORT_LEASE_SECONDS * 2)

        return Harness("memory", MemoryStore(clock=clock), redis_prefix, advance)
    client: redis.asyncio.Redis = request.getfixturevalue("redis_client")

    async def gone(key: str) -> None:
        await wait_until_gone(client, key)

    if request.param == "redis-decoding":
        decoding = request.getfixturevalue("decoding_redis_client")
        return Harness("redis-decoding", RedisStore(decoding), redis_prefix, gone)
    return Harness("redis", RedisStore(client), redis_prefix, gone)


@pytest.fixture
async def effects(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> Callable[[], Awaitable[list[str]]]:
    """Read back the effect log: a Redis list outside the store under test."""

    async def read() -> list[str]:
        return texts(await redis_client.lrange(f"{redis_prefix}:effects", 0, -1))

    return read


class RecordingStore(StoreBase):
    """Passes every call to a real store and records what it answered (an observer, not a fake).

    ``changed`` is set after every call, so a test can wait for "a release happened" on an
    event instead of sleeping.
    """

    def __init__(self, inner: StoreBase) -> None:
        self.inner = inner
        self.claimed: list[ClaimResult] = []
        self.released: list[tuple[Held, bool]] = []
        self.renewed: list[tuple[Held, bool]] = []
        self.changed = asyncio.Event()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_for(self, condition: Callable[[], bool], *, seconds: float = 10.0) -> None:
        """Wait (bounded) until ``condition()`` holds, re-checking after every store call."""
        async with asyncio.timeout(seconds):
            while not condition():
                await self.changed.wait()

    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, owner: str, lease_seconds: float
    ) -> list[ClaimResult]:
        """Claim through the inner store and record the results."""
        results = await self.inner.claim_many(requests, owner=owner, lease_seconds=lease_seconds)
        self.claimed.extend(results)
        self._notify()
        return results

    async def complete_many(
        self, completions: Sequence[Completion], *, retention_seconds: float
    ) -> list[bool]:
        """Complete through the inner store."""
        done = await self.inner.complete_many(completions, retention_seconds=retention_seconds)
        self._notify()
        return done

    async def release_many(self, held: Sequence[Held]) -> list[bool]:
        """Release through the inner store and record the answers."""
        released = await self.inner.release_many(held)
        self.released.extend(zip(held, released, strict=True))
        self._notify()
        return released

    async def renew_many(self, held: Sequence[Held], *, lease_seconds: float) -> list[bool]:
        """Renew through the inner store and record the answers."""
        renewed = await self.inner.renew_many(held, lease_seconds=lease_seconds)
        self.renewed.extend(zip(held, renewed, strict=True))
        self._notify()
        return renewed
