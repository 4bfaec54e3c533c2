"""The guard and the decorator over both stores: run once, replay, release on any exception."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest

from fargate_runtime.idempotency import (
    AlreadyInProgressError,
    ClaimRequest,
    ClaimStatus,
    FailurePolicy,
    Held,
    Idempotency,
    LeaseLostError,
    MemoryStore,
    PayloadMismatchError,
    StoreUnavailableError,
    current_claim,
)
from tests.idempotency.conftest import SHORT_LEASE_SECONDS, RecordingStore

if TYPE_CHECKING:
    from tests.idempotency.conftest import Harness

pytestmark = pytest.mark.integration


def guards(harness: Harness, **options: Any) -> Idempotency:
    """Guards over the harness's store, under the test's prefix."""
    return Idempotency(harness.store, prefix=harness.prefix, owner="test-owner", **options)


async def is_free(idem: Idempotency, scope: str, key: str) -> bool:
    """True when nobody holds the key (checked by claiming it and giving it straight back)."""
    stored = idem.key(scope, key)
    (result,) = await idem.store.claim_many(
        [ClaimRequest(stored, "probe")], owner="probe", lease_seconds=30
    )
    if result.status is ClaimStatus.ACQUIRED and result.token is not None:
        await idem.store.release_many([Held(stored, result.token)])
        return True
    return False


async def test_guard_runs_once_then_replays_the_result(harness: Harness) -> None:
    """The first guard runs and stores its result; the next one replays it without running."""
    idem = guards(harness)
    runs = 0
    for _ in range(3):
        async with idem.guard("charges", "evt-1", payload={"amount": 5}) as claim:
            if claim.replayed:
                assert claim.result == {"charge": "ch_1"}
                continue
            runs += 1
            claim.set_result({"charge": "ch_1"})
    assert runs == 1
    assert idem.stats.acquired == 1
    assert idem.stats.completed == 1
    assert idem.stats.replayed == 2


async def test_claim_carries_the_scoped_key_and_a_fencing_token(harness: Harness) -> None:
    """The block sees the full scoped key and a positive token to pass downstream."""
    idem = guards(harness)
    async with idem.guard("charges", "evt:1", payload=None) as claim:
        assert claim.key == f"{harness.prefix}:charges:evt%3A1"
        assert claim.token > 0
        assert claim.protected


async def test_exception_releases_the_claim_and_propagates_unchanged(harness: Harness) -> None:
    """A failing block releases its claim and its own exception object reaches the caller."""
    idem = guards(harness)
    boom = ValueError("card declined")
    with pytest.raises(ValueError, match="card declined") as raised:
        async with idem.guard("charges", "evt-1"):
            raise boom
    assert raised.value is boom
    assert idem.stats.released == 1
    assert await is_free(idem, "charges", "evt-1")


async def test_cancellation_inside_the_guard_releases_the_claim(harness: Harness) -> None:
    """A cancelled block releases its claim before the cancellation reaches the caller."""
    idem = guards(harness)
    entered = asyncio.Event()

    async def work() -> None:
        async with idem.guard("charges", "evt-1"):
            entered.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert idem.stats.released == 1
    assert await is_free(idem, "charges", "evt-1")


@pytest.mark.parametrize("exit_exception", [SystemExit(3), KeyboardInterrupt()])
async def test_process_exits_inside_the_guard_release_the_claim(
    harness: Harness, exit_exception: BaseException
) -> None:
    """SystemExit and KeyboardInterrupt inside the block release the claim and propagate."""
    idem = guards(harness)
    with pytest.raises(type(exit_exception)):
        async with idem.guard("charges", "evt-1"):
            raise exit_exception
    assert await is_free(idem, "charges", "evt-1")


async def test_cancelled_while_claiming_gives_the_claim_back(harness: Harness) -> None:
    """A caller cancelled during the claim round trip does not strand the key it acquired."""
    store = RecordingStore(harness.store)
    idem = Idempotency(store, prefix=harness.prefix, owner="test-owner")
    body_ran = False

    async def work() -> None:
        nonlocal body_ran
        async with idem.guard("charges", "evt-1"):
            body_ran = True

    task = asyncio.create_task(work())
    await asyncio.sleep(0)  # one loop turn: the task sends its claim and waits for the reply
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.wait_for(lambda: bool(store.released))
    assert not body_ran
    (claimed,) = store.claimed
    assert claimed.status is ClaimStatus.ACQUIRED
    assert store.released == [(Held(claimed.key, claimed.token or 0), True)]


async def test_key_in_progress_elsewhere_raises_without_running(harness: Harness) -> None:
    """A key another owner holds raises AlreadyInProgressError and the block does not run."""
    idem = guards(harness)
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def holder() -> None:
        async with idem.guard("charges", "evt-1"):
            inside.set()
            await leave.wait()

    task = asyncio.create_task(holder())
    await inside.wait()
    with pytest.raises(AlreadyInProgressError) as raised:
        async with idem.guard("charges", "evt-1"):
            pytest.fail("a second block ran while the first held the key")
    assert raised.value.key == idem.key("charges", "evt-1")
    leave.set()
    await task
    assert idem.stats.in_progress == 1


async def test_same_key_different_payload_raises_mismatch(harness: Harness) -> None:
    """Reusing a key for another payload raises PayloadMismatchError, even after completion."""
    idem = guards(harness)
    async with idem.guard("charges", "evt-1", payload={"amount": 5}):
        pass
    with pytest.raises(PayloadMismatchError):
        async with idem.guard("charges", "evt-1", payload={"amount": 6}):
            pytest.fail("ran with a mismatching payload")


async def test_lease_lost_before_completion_raises_and_keeps_the_new_owner(
    harness: Harness,
) -> None:
    """A block that outlives its lease (no heartbeat) cannot complete over the new owner."""
    idem = guards(harness, lease_seconds=SHORT_LEASE_SECONDS, heartbeat=False)
    other = guards(harness, lease_seconds=30)
    tokens: list[int] = []

    async def zombie() -> None:
        async with idem.guard("charges", "evt-1") as claim:
            tokens.append(claim.token)
            await harness.expire(claim.key)
            async with other.guard("charges", "evt-1") as newer:
                tokens.append(newer.token)
                newer.set_result("the new owner's")
            claim.set_result("the zombie's")

    with pytest.raises(LeaseLostError) as raised:
        await zombie()
    assert raised.value.token == tokens[0]
    assert tokens[1] > tokens[0]
    assert idem.stats.lease_lost == 1
    async with other.guard("charges", "evt-1") as replay:
        assert replay.replayed
        assert replay.result == "the new owner's"


async def test_replayed_claim_refuses_a_new_result(harness: Harness) -> None:
    """Setting a result on a replayed claim is a programming error, said at once."""
    idem = guards(harness)
    async with idem.guard("charges", "evt-1"):
        pass
    with pytest.raises(RuntimeError, match="replayed"):
        async with idem.guard("charges", "evt-1") as claim:
            claim.set_result("again")


async def test_decorator_runs_once_and_replays(harness: Harness) -> None:
    """``@idempotent`` runs the function once per key and returns the stored result after."""
    idem = guards(harness)
    calls: list[tuple[str, int]] = []

    @idem.idempotent("charges", key=lambda event, amount: event)
    async def charge(event: str, amount: int) -> dict[str, Any]:
        claim = current_claim()
        calls.append((claim.key, claim.token))
        return {"event": event, "amount": amount}

    first = await charge("evt-1", 5)
    second = await charge("evt-1", 5)
    assert first == second == {"event": "evt-1", "amount": 5}
    assert len(calls) == 1
    assert calls[0][0] == idem.key("charges", "evt-1")
    with pytest.raises(PayloadMismatchError):
        await charge("evt-1", 6)


async def test_decorator_payload_selects_what_is_compared(harness: Harness) -> None:
    """With ``payload=``, arguments outside the selection may differ between retries."""
    idem = guards(harness)
    runs = 0

    @idem.idempotent("charges", key=lambda event, trace: event["id"], payload=lambda e, t: e)
    async def charge(event: dict[str, Any], trace: str) -> int:
        nonlocal runs
        runs += 1
        return runs

    assert await charge({"id": "e1", "amount": 5}, "trace-1") == 1
    assert await charge({"id": "e1", "amount": 5}, "trace-2") == 1
    assert runs == 1


async def test_decorator_releases_on_error_so_a_retry_runs(harness: Harness) -> None:
    """A failed call leaves the key free; the retry runs and its result is the one stored."""
    idem = guards(harness)
    attempts = 0

    @idem.idempotent("charges", key=lambda event: event)
    async def charge(event: str) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionResetError("provider hiccup")
        return attempts

    with pytest.raises(ConnectionResetError):
        await charge("evt-1")
    assert await charge("evt-1") == 2
    assert await charge("evt-1") == 2


def test_current_claim_outside_a_guarded_function_raises() -> None:
    """``current_claim()`` outside an ``@idempotent`` function is a LookupError."""
    with pytest.raises(LookupError):
        current_claim()


async def test_fail_closed_raises_and_does_not_run() -> None:
    """With the store down and the default policy, the block does not run: the caller retries."""
    store = MemoryStore()
    idem = Idempotency(store, prefix="svc")
    store.set_unavailable(True)
    with pytest.raises(StoreUnavailableError):
        async with idem.guard("charges", "evt-1"):
            pytest.fail("ran while the store was down under fail-closed")
    assert idem.stats.store_errors == 1


async def test_fail_open_runs_unprotected_and_logs_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under fail-open the block runs without a claim (token 0) and an ERROR line says so."""
    store = MemoryStore()
    with caplog.at_level(logging.WARNING, logger="fargate_runtime.idempotency"):
        idem = Idempotency(store, prefix="svc", failure_policy=FailurePolicy.OPEN)
        store.set_unavailable(True)
        async with idem.guard("charges", "evt-1") as claim:
            assert not claim.protected
            assert claim.token == 0
            claim.set_result("done")
    assert idem.stats.unprotected == 1
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert errors
    assert "WITHOUT idempotency" in errors[0].getMessage()
    store.set_unavailable(False)
    assert len(store) == 0  # nothing was recorded for the unprotected run


async def test_store_down_at_completion_is_reported_not_hidden() -> None:
    """If the store fails after the work ran, fail-closed raises: the work is not marked done."""
    store = MemoryStore()
    idem = Idempotency(store, prefix="svc")
    with pytest.raises(StoreUnavailableError):
        async with idem.guard("charges", "evt-1"):
            store.set_unavailable(True)
    assert idem.stats.completed == 0


async def test_release_failure_never_hides_the_users_exception() -> None:
    """When the release fails too, the block's exception propagates, with a note about it."""
    store = MemoryStore()
    idem = Idempotency(store, prefix="svc")

    async def fail_with_the_store_down() -> None:
        async with idem.guard("charges", "evt-1"):
            store.set_unavailable(True)
            raise ValueError("the real problem")

    with pytest.raises(ValueError, match="the real problem") as raised:
        await fail_with_the_store_down()
    notes = getattr(raised.value, "__notes__", [])
    assert any("could not be released" in note for note in notes)


def test_prefix_is_validated_when_guards_are_made() -> None:
    """A bad prefix fails at construction, not on the first message."""
    with pytest.raises(ValueError, match="prefix"):
        Idempotency(MemoryStore(), prefix="has space")
