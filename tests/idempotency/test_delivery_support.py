"""What stores offer the SQS consumer beyond claims: per-request owners and per-key counters.

Run against the in-memory store and a real Redis alike (the conformance harness).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fargate_runtime.idempotency import (
    ClaimRequest,
    ClaimStatus,
    Completion,
    CountChange,
    CountingStore,
    RedisStore,
    delivery_owner,
)

if TYPE_CHECKING:
    import redis.asyncio

    from tests.idempotency.conftest import Harness

pytestmark = pytest.mark.integration

LEASE = 30.0
TTL = 60.0


async def test_a_request_owner_overrides_the_call_owner(harness: Harness) -> None:
    """Each request's own owner decides whose claim it is: a redelivery of one message finds
    its claim, another message with the same key in the same call does not."""
    key = harness.key("evt-1")
    first = await harness.store.claim_many(
        [ClaimRequest(key, "fp", owner=delivery_owner("task", "msg-1"))],
        owner="receive-1",
        lease_seconds=LEASE,
    )
    again = await harness.store.claim_many(
        [
            ClaimRequest(key, "fp", owner=delivery_owner("task", "msg-1")),
            ClaimRequest(harness.key("evt-2"), "fp"),
        ],
        owner="receive-2",
        lease_seconds=LEASE,
    )
    duplicate = await harness.store.claim_many(
        [ClaimRequest(key, "fp", owner=delivery_owner("task", "msg-2"))],
        owner="receive-2",
        lease_seconds=LEASE,
    )
    assert first[0].status is again[0].status is ClaimStatus.ACQUIRED
    assert again[0].token == first[0].token
    assert again[1].status is ClaimStatus.ACQUIRED
    assert duplicate[0].status is ClaimStatus.IN_PROGRESS


async def test_a_request_without_its_own_owner_uses_the_call_owner(harness: Harness) -> None:
    """A request with no owner of its own is claimed by the call's owner, as before."""
    key = harness.key("plain")
    (first,) = await harness.store.claim_many(
        [ClaimRequest(key, "fp")], owner="attempt-1", lease_seconds=LEASE
    )
    (retry,) = await harness.store.claim_many(
        [ClaimRequest(key, "fp", owner="attempt-1")], owner="other", lease_seconds=LEASE
    )
    assert first.status is retry.status is ClaimStatus.ACQUIRED
    assert retry.token == first.token


def test_delivery_owners_differ_by_delivery_only() -> None:
    """One process gives one delivery the same owner every time, and two deliveries two."""
    assert delivery_owner("task", "m1") == delivery_owner("task", "m1")
    assert delivery_owner("task", "m1") != delivery_owner("task", "m2")
    assert delivery_owner("task", "m1").startswith("task/")


async def test_counters_add_read_and_stay_apart(harness: Harness) -> None:
    """Counters add up per key and field, a read (amount 0) changes nothing, keys are apart."""
    store = harness.store
    assert isinstance(store, CountingStore)
    a, b = harness.key("m1", scope="deliveries"), harness.key("m2", scope="deliveries")
    assert await store.count_many([CountChange(a, "r")], ttl_seconds=TTL) == [{}]
    first = await store.count_many(
        [CountChange(a, "r", 1), CountChange(b, "f", 2), CountChange(a, "r", 1)], ttl_seconds=TTL
    )
    assert first == [{"r": 1}, {"f": 2}, {"r": 2}]
    read = await store.count_many([CountChange(a, "f"), CountChange(b, "f")], ttl_seconds=TTL)
    assert read == [{"r": 2}, {"f": 2}]
    assert await store.count_many([], ttl_seconds=TTL) == []


async def test_counters_live_apart_from_records(harness: Harness) -> None:
    """A counter at a record's key never disturbs the record (keys differ by scope)."""
    record = harness.key("evt")
    counter = harness.key("evt", scope="deliveries")
    token = (await harness.store.claim(record, "fp", owner="o", lease_seconds=LEASE)).token
    assert token is not None
    assert isinstance(harness.store, CountingStore)
    await harness.store.count_many([CountChange(counter, "r", 1)], ttl_seconds=TTL)
    assert await harness.store.complete(record, token, b"ok", retention_seconds=TTL)


async def test_redis_counters_expire_with_their_ttl(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """A changed counter gets the TTL (server-side); a read leaves the TTL as it was."""
    store = RedisStore(redis_client)
    key = f"{redis_prefix}:deliveries:m1"
    await store.count_many([CountChange(key, "r", 1)], ttl_seconds=TTL)
    ttl_ms = await redis_client.pttl(key)
    assert 0 < ttl_ms <= TTL * 1000
    await redis_client.pexpire(key, 5_000)
    await store.count_many([CountChange(key, "r")], ttl_seconds=TTL)
    assert await redis_client.pttl(key) <= 5_000


async def test_complete_blocking_records_a_completion_without_the_loop(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """The watchdog's completion path: a claim completed synchronously replays afterwards, and
    a wrong token is refused."""
    store = RedisStore(redis_client)
    key = f"{redis_prefix}:orders:blocking"
    claim = await store.claim(key, "fp", owner="o", lease_seconds=LEASE)
    assert claim.token is not None
    answers = store.complete_blocking(
        [Completion(key, claim.token + 1, b"x"), Completion(key, claim.token, b"done")],
        retention_seconds=TTL,
        timeout_seconds=1.0,
    )
    assert answers == [False, True]
    replay = await store.claim(key, "fp", owner="other", lease_seconds=LEASE)
    assert replay.status is ClaimStatus.COMPLETED
    assert replay.result == b"done"


async def test_request_owners_of_any_text_stay_apart(harness: Harness) -> None:
    """Owners with colons, non-ASCII text or of different lengths, mixed with requests that
    have none, are each recognised as themselves (they travel packed in one argument)."""
    owners = ["a:b:c", "zürich/7:ü", None, "x" * 300, ""]
    requests = [
        ClaimRequest(harness.key(f"k{i}"), "fp", owner=owner) for i, owner in enumerate(owners)
    ]
    first = await harness.store.claim_many(requests, owner="call-1", lease_seconds=LEASE)
    again = await harness.store.claim_many(requests, owner="call-1", lease_seconds=LEASE)
    other = await harness.store.claim_many(requests, owner="call-2", lease_seconds=LEASE)
    assert [r.status for r in first] == [ClaimStatus.ACQUIRED] * 5
    assert [r.token for r in again] == [r.token for r in first]
    # Only the requests that had no owner of their own depend on the call's owner.
    assert [r.status for r in other] == [
        ClaimStatus.ACQUIRED,
        ClaimStatus.ACQUIRED,
        ClaimStatus.IN_PROGRESS,
        ClaimStatus.ACQUIRED,
        ClaimStatus.IN_PROGRESS,
    ]
