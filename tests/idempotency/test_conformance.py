"""The store contract, run against the in-memory store and a real Redis alike."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.errors import ConfigurationError
from fargate_runtime.idempotency import (
    ClaimRequest,
    ClaimStatus,
    Completion,
    Held,
    IdempotencyKeyError,
    IdempotencyStore,
    ResultTooLargeError,
    StoreBase,
)
from tests.idempotency.conftest import SHORT_LEASE_SECONDS

if TYPE_CHECKING:
    from tests.idempotency.conftest import Harness

pytestmark = pytest.mark.integration

LEASE = 30.0
RETENTION = 3600.0


async def acquire(store: StoreBase, key: str, fingerprint: str = "fp", **kw: float) -> int:
    """Claim ``key`` and return the token, failing the test unless it was acquired."""
    result = await store.claim(
        key, fingerprint, owner="owner-a", lease_seconds=kw.get("lease", LEASE)
    )
    assert result.status is ClaimStatus.ACQUIRED, result
    assert result.token is not None
    return result.token


def test_stores_satisfy_the_protocol(harness: Harness) -> None:
    """Both stores are IdempotencyStores (the protocol other components are written against)."""
    assert isinstance(harness.store, IdempotencyStore)


async def test_first_claim_acquires_with_a_positive_token(harness: Harness) -> None:
    """A new key is acquired with a positive fencing token and no stored result."""
    result = await harness.store.claim(harness.key("a"), "fp", owner="owner-a", lease_seconds=LEASE)
    assert result.status is ClaimStatus.ACQUIRED
    assert result.token is not None
    assert result.token > 0
    assert result.result is None


async def test_second_claim_sees_in_progress(harness: Harness) -> None:
    """A key held by someone else is reported in progress, with no token."""
    key = harness.key("a")
    await acquire(harness.store, key)
    again = await harness.store.claim(key, "fp", owner="owner-b", lease_seconds=LEASE)
    assert again.status is ClaimStatus.IN_PROGRESS
    assert again.token is None


@pytest.mark.parametrize("owner", ["b", "owner-a"], ids=["another-owner", "its-own-owner"])
async def test_different_fingerprint_is_a_mismatch(harness: Harness, owner: str) -> None:
    """The same key with another payload fingerprint is a mismatch, in progress or completed,
    also for the owner holding it (recognising one's own claim never skips the payload check)."""
    key = harness.key("a")
    token = await acquire(harness.store, key)
    in_progress = await harness.store.claim(key, "other", owner=owner, lease_seconds=LEASE)
    assert in_progress.status is ClaimStatus.MISMATCH
    await harness.store.complete(key, token, b"1", retention_seconds=RETENTION)
    completed = await harness.store.claim(key, "other", owner=owner, lease_seconds=LEASE)
    assert completed.status is ClaimStatus.MISMATCH


async def test_identical_retry_after_completion_replays_the_result(harness: Harness) -> None:
    """After completion the same key and payload replays the stored result and token."""
    key = harness.key("a")
    token = await acquire(harness.store, key)
    assert await harness.store.complete(key, token, b'{"ok":true}', retention_seconds=RETENTION)
    replay = await harness.store.claim(key, "fp", owner="owner-b", lease_seconds=LEASE)
    assert replay.status is ClaimStatus.COMPLETED
    assert replay.result == b'{"ok":true}'
    assert replay.token == token


async def test_completed_record_is_never_overwritten(harness: Harness) -> None:
    """Neither a second completion, a release, a renew nor a claim changes a completed record."""
    key = harness.key("a")
    token = await acquire(harness.store, key)
    assert await harness.store.complete(key, token, b"first", retention_seconds=RETENTION)
    # The same token again (a retried call whose reply was lost): True, result unchanged.
    assert await harness.store.complete(key, token, b"second", retention_seconds=RETENTION)
    assert not await harness.store.complete(key, token + 1, b"third", retention_seconds=1)
    assert not await harness.store.release(key, token)
    assert not await harness.store.renew(key, token, lease_seconds=LEASE)
    replay = await harness.store.claim(key, "fp", owner="owner-b", lease_seconds=LEASE)
    assert replay.status is ClaimStatus.COMPLETED
    assert replay.result == b"first"


async def test_wrong_token_cannot_complete_release_or_renew(harness: Harness) -> None:
    """Complete, release and renew are compare-and-set on the fencing token."""
    key = harness.key("a")
    token = await acquire(harness.store, key)
    assert not await harness.store.complete(key, token + 1, b"x", retention_seconds=RETENTION)
    assert not await harness.store.release(key, token - 1)
    assert not await harness.store.renew(key, token + 7, lease_seconds=LEASE)
    assert await harness.store.renew(key, token, lease_seconds=LEASE)
    assert await harness.store.release(key, token)


async def test_release_frees_the_key_with_a_higher_token_next(harness: Harness) -> None:
    """A released key can be claimed again, and the new token is higher than the old one."""
    key = harness.key("a")
    first = await acquire(harness.store, key)
    assert await harness.store.release(key, first)
    second = await acquire(harness.store, key)
    assert second > first


async def test_tokens_increase_across_keys_of_a_scope(harness: Harness) -> None:
    """Tokens from one scope's counter strictly increase, claim after claim."""
    tokens = [await acquire(harness.store, harness.key(f"k{i}")) for i in range(5)]
    assert tokens == sorted(set(tokens))


async def test_operations_on_absent_keys_answer_false(harness: Harness) -> None:
    """Completing, releasing or renewing a key nobody claimed is refused, not an error."""
    key = harness.key("never")
    assert not await harness.store.complete(key, 1, b"x", retention_seconds=RETENTION)
    assert not await harness.store.release(key, 1)
    assert not await harness.store.renew(key, 1, lease_seconds=LEASE)


async def test_lease_expiry_then_late_calls_by_the_old_owner_are_refused(
    harness: Harness,
) -> None:
    """After a lease runs out and another owner claims, the old owner is told lease lost."""
    key = harness.key("a")
    old = await acquire(harness.store, key, lease=SHORT_LEASE_SECONDS)
    await harness.expire(key)
    new = await acquire(harness.store, key)
    assert new > old
    assert not await harness.store.renew(key, old, lease_seconds=LEASE)
    assert not await harness.store.complete(key, old, b"zombie", retention_seconds=RETENTION)
    assert not await harness.store.release(key, old)
    # The new owner's claim is untouched and completes normally.
    assert await harness.store.complete(key, new, b"winner", retention_seconds=RETENTION)
    replay = await harness.store.claim(key, "fp", owner="c", lease_seconds=LEASE)
    assert replay.result == b"winner"
    assert replay.token == new


async def test_lease_expiry_alone_refuses_completion(harness: Harness) -> None:
    """A claim whose lease ran out cannot be completed even if nobody else claimed it."""
    key = harness.key("a")
    token = await acquire(harness.store, key, lease=SHORT_LEASE_SECONDS)
    await harness.expire(key)
    assert not await harness.store.complete(key, token, b"late", retention_seconds=RETENTION)
    assert (await acquire(harness.store, key)) > token


async def test_retention_expiry_forgets_the_completed_record(harness: Harness) -> None:
    """A completed record lives for its retention, then the key is new again."""
    key = harness.key("a")
    token = await acquire(harness.store, key)
    await harness.store.complete(key, token, b"x", retention_seconds=SHORT_LEASE_SECONDS)
    await harness.expire(key)
    assert (await acquire(harness.store, key)) > token


async def test_concurrent_claims_of_a_new_key_have_exactly_one_winner(harness: Harness) -> None:
    """Fifty simultaneous claims of one new key: one acquires, the others see it in progress."""
    key = harness.key("contended")
    results = await asyncio.gather(
        *(
            harness.store.claim(key, "fp", owner=f"owner-{i}", lease_seconds=LEASE)
            for i in range(50)
        )
    )
    statuses = [result.status for result in results]
    assert statuses.count(ClaimStatus.ACQUIRED) == 1
    assert statuses.count(ClaimStatus.IN_PROGRESS) == 49


async def test_batch_claim_classifies_each_key_in_order(harness: Harness) -> None:
    """One batch call answers per key, in input order, for every state."""
    done, busy, clash, new = (harness.key(name) for name in ("done", "busy", "clash", "new"))
    done_token = await acquire(harness.store, done)
    await harness.store.complete(done, done_token, b"d", retention_seconds=RETENTION)
    await acquire(harness.store, busy)
    await acquire(harness.store, clash, "fp-1")
    results = await harness.store.claim_many(
        [
            ClaimRequest(new, "fp"),
            ClaimRequest(done, "fp"),
            ClaimRequest(busy, "fp"),
            ClaimRequest(clash, "fp-2"),
        ],
        owner="batch",
        lease_seconds=LEASE,
    )
    assert [result.key for result in results] == [new, done, busy, clash]
    assert [result.status for result in results] == [
        ClaimStatus.ACQUIRED,
        ClaimStatus.COMPLETED,
        ClaimStatus.IN_PROGRESS,
        ClaimStatus.MISMATCH,
    ]
    assert results[1].result == b"d"


async def test_a_key_repeated_in_one_batch_is_claimed_once(harness: Harness) -> None:
    """A duplicate inside one batch is acquired by its first occurrence only."""
    key = harness.key("twice")
    results = await harness.store.claim_many(
        [ClaimRequest(key, "fp"), ClaimRequest(key, "fp")], owner="batch", lease_seconds=LEASE
    )
    assert [result.status for result in results] == [
        ClaimStatus.ACQUIRED,
        ClaimStatus.IN_PROGRESS,
    ]


async def test_a_key_repeated_in_one_batch_with_another_payload_is_a_mismatch(
    harness: Harness,
) -> None:
    """Inside one batch, a second payload for the same key is a mismatch, not a second claim."""
    key = harness.key("twice")
    results = await harness.store.claim_many(
        [ClaimRequest(key, "fp-1"), ClaimRequest(key, "fp-2")], owner="batch", lease_seconds=LEASE
    )
    assert [result.status for result in results] == [ClaimStatus.ACQUIRED, ClaimStatus.MISMATCH]


async def test_a_key_repeated_in_one_completion_keeps_the_first_result(harness: Harness) -> None:
    """Completing one claim twice in a call answers True twice and stores the first result."""
    key = harness.key("twice")
    token = await acquire(harness.store, key)
    done = await harness.store.complete_many(
        [Completion(key, token, b"first"), Completion(key, token, b"second")],
        retention_seconds=RETENTION,
    )
    assert done == [True, True]
    replay = await harness.store.claim(key, "fp", owner="b", lease_seconds=LEASE)
    assert replay.result == b"first"


async def test_a_key_repeated_in_one_release_is_released_once(harness: Harness) -> None:
    """Releasing one claim twice in a call releases it once."""
    key = harness.key("twice")
    token = await acquire(harness.store, key)
    assert await harness.store.release_many([Held(key, token), Held(key, token)]) == [True, False]


async def test_batch_complete_release_renew_answer_per_key(harness: Harness) -> None:
    """Batch complete, release and renew succeed where the token matches and fail elsewhere."""
    keys = [harness.key(f"k{i}") for i in range(4)]
    claimed = await harness.store.claim_many(
        [ClaimRequest(key, "fp") for key in keys], owner="batch", lease_seconds=LEASE
    )
    tokens = [result.token or 0 for result in claimed]
    renewed = await harness.store.renew_many(
        [Held(keys[0], tokens[0]), Held(keys[1], 0)], lease_seconds=LEASE
    )
    assert renewed == [True, False]
    released = await harness.store.release_many([Held(keys[2], tokens[2]), Held(keys[3], 1)])
    assert released == [True, False]
    completed = await harness.store.complete_many(
        [
            Completion(keys[0], tokens[0], b"0"),
            Completion(keys[1], tokens[1], b"1"),
            Completion(keys[2], tokens[2], b"2"),  # released just above
        ],
        retention_seconds=RETENTION,
    )
    assert completed == [True, True, False]


async def test_empty_batches_answer_empty_lists(harness: Harness) -> None:
    """Empty batches are valid and cost nothing."""
    store = harness.store
    assert await store.claim_many([], owner="o", lease_seconds=LEASE) == []
    assert await store.complete_many([], retention_seconds=RETENTION) == []
    assert await store.release_many([]) == []
    assert await store.renew_many([], lease_seconds=LEASE) == []


async def test_results_are_binary_safe(harness: Harness) -> None:
    """Any bytes, including NUL and invalid UTF-8, replay exactly."""
    key = harness.key("binary")
    token = await acquire(harness.store, key)
    blob = bytes(range(256)) * 4
    await harness.store.complete(key, token, blob, retention_seconds=RETENTION)
    replay = await harness.store.claim(key, "fp", owner="b", lease_seconds=LEASE)
    assert replay.result == blob


async def test_oversized_result_is_refused_before_anything_is_written(harness: Harness) -> None:
    """A result over the store's limit raises ResultTooLargeError and the claim stays held."""
    key = harness.key("big")
    token = await acquire(harness.store, key)
    with pytest.raises(ResultTooLargeError, match="limit is 262144"):
        await harness.store.complete(key, token, b"x" * (256 * 1024 + 1), retention_seconds=60)
    assert await harness.store.release(key, token)


async def test_keys_that_are_not_scoped_are_refused(harness: Harness) -> None:
    """A store only accepts ``prefix:scope:key`` keys (it derives the fencing counter from them)."""
    with pytest.raises(IdempotencyKeyError, match="scoped_key"):
        await harness.store.claim("no-scope", "fp", owner="o", lease_seconds=LEASE)


async def test_scopes_are_isolated(harness: Harness) -> None:
    """The same key in two scopes is two records."""
    a = harness.key("same", scope="tenant-a")
    b = harness.key("same", scope="tenant-b")
    await acquire(harness.store, a)
    await acquire(harness.store, b)


async def test_a_retried_claim_recognises_its_own_record(harness: Harness) -> None:
    """The same owner claiming again (a retry after a lost reply) gets its claim and token back;
    any other owner still sees it in progress."""
    key = harness.key("lost-reply")
    first = await harness.store.claim(key, "fp", owner="attempt-1", lease_seconds=LEASE)
    retry = await harness.store.claim(key, "fp", owner="attempt-1", lease_seconds=LEASE)
    other = await harness.store.claim(key, "fp", owner="attempt-2", lease_seconds=LEASE)
    assert first.status is retry.status is ClaimStatus.ACQUIRED
    assert retry.token == first.token
    assert other.status is ClaimStatus.IN_PROGRESS
    assert await harness.store.complete(key, retry.token or 0, b"done", retention_seconds=RETENTION)


async def test_a_completed_record_replays_to_its_own_owner_too(harness: Harness) -> None:
    """Once completed, the record replays even to the owner that claimed it: never re-acquired."""
    key = harness.key("own")
    token = await acquire(harness.store, key)
    await harness.store.complete(key, token, b"r", retention_seconds=RETENTION)
    replay = await harness.store.claim(key, "fp", owner="owner-a", lease_seconds=LEASE)
    assert replay.status is ClaimStatus.COMPLETED
    assert replay.result == b"r"


async def test_a_retried_batch_still_claims_a_repeated_key_once(harness: Harness) -> None:
    """A key twice in one batch: acquired once on the first try and once again on the retry."""
    key = harness.key("twice")
    batch = [ClaimRequest(key, "fp"), ClaimRequest(key, "fp")]
    first = await harness.store.claim_many(batch, owner="receive-1", lease_seconds=LEASE)
    retry = await harness.store.claim_many(batch, owner="receive-1", lease_seconds=LEASE)
    for results in (first, retry):
        assert [result.status for result in results] == [
            ClaimStatus.ACQUIRED,
            ClaimStatus.IN_PROGRESS,
        ]
    assert retry[0].token == first[0].token


async def test_an_expired_own_claim_is_claimed_anew(harness: Harness) -> None:
    """Once its lease ran out, the same owner gets a new claim with a higher token."""
    key = harness.key("expired")
    old = await acquire(harness.store, key, lease=SHORT_LEASE_SECONDS)
    await harness.expire(key)
    assert await acquire(harness.store, key) > old


@pytest.mark.parametrize("seconds", [0.0, -5.0, 0.01, float("inf"), float("nan"), 86400.0])
async def test_leases_out_of_bounds_are_refused_before_anything_is_written(
    harness: Harness, seconds: float
) -> None:
    """A zero, negative, tiny, infinite or NaN lease (or one past 12 h) is a ConfigurationError
    naming the parameter, and nothing is claimed."""
    key = harness.key("bounds")
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        await harness.store.claim(key, "fp", owner="o", lease_seconds=seconds)
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        await harness.store.renew(key, 1, lease_seconds=seconds)
    assert (await acquire(harness.store, key)) > 0  # the key was never claimed


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("inf"), 10.0**12])
async def test_retentions_out_of_bounds_are_refused_and_the_claim_stays_held(
    harness: Harness, seconds: float
) -> None:
    """An impossible retention is refused before writing: the claim is still ours to finish."""
    key = harness.key("retention")
    token = await acquire(harness.store, key)
    with pytest.raises(ConfigurationError, match="retention_seconds"):
        await harness.store.complete(key, token, b"r", retention_seconds=seconds)
    assert await harness.store.complete(key, token, b"r", retention_seconds=RETENTION)
