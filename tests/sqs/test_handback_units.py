"""Retry delays, failure accounting and the heartbeat's lease rule, without a server."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.idempotency import ClaimRequest, Held, ManualClock, MemoryStore
from fargate_runtime.lifecycle import Lifecycle
from fargate_runtime.settings import RuntimeSettings
from fargate_runtime.sqs import BatchContext, Message, MessageContext, Retry
from fargate_runtime.sqs._handback import RELEASES, failures_so_far
from fargate_runtime.sqs._inflight import InFlight
from fargate_runtime.sqs.heartbeat import Heartbeat
from fargate_runtime.sqs.message import REQUEUE_ATTRIBUTE

from .test_units import RecordingVisibility

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef


@pytest.mark.parametrize("delay", [-5, -0.1, math.inf, math.nan, -math.inf])
def test_a_negative_or_non_finite_retry_delay_is_a_clear_error(delay: float) -> None:
    """``Retry(-5)`` is no silent 0: it raises ValueError naming the delay, so the handler
    fails with it; so does ``BatchContext.fail``."""
    with pytest.raises(ValueError, match="delay_seconds must be a finite number of seconds >= 0"):
        Retry("x", delay_seconds=delay)
    context = BatchContext(
        Lifecycle(RuntimeSettings().budget()),
        contexts={
            "m": MessageContext(
                Lifecycle(RuntimeSettings().budget()),
                message_id="m",
                idempotency_key=None,
                fencing_token=None,
            )
        },
    )
    with pytest.raises(ValueError, match="fail: delay_seconds"):
        context.fail(Message("m", "{}", "rh"), delay_seconds=delay)


def test_a_long_retry_delay_is_kept_for_the_consumer_to_clamp() -> None:
    """A delay beyond 12 h is accepted by Retry (the consumer clamps it per message)."""
    assert Retry("later", delay_seconds=50_000).delay_seconds == 50_000
    assert Retry("soon", delay_seconds=0).delay_seconds == 0
    assert Retry("default").delay_seconds is None


def received(receive_count: int, *, earlier: int = 0) -> InFlight:
    """A held message at its ``receive_count``-th receive, copied after ``earlier`` failures."""
    raw: MessageTypeDef = {
        "MessageId": "m-1",
        "ReceiptHandle": "rh",
        "Body": "{}",
        "Attributes": {"ApproximateReceiveCount": str(receive_count)},
    }
    if earlier:
        raw["MessageAttributes"] = {
            REQUEUE_ATTRIBUTE: {"DataType": "String", "StringValue": f"{earlier} m-0"}
        }
    return InFlight.received(Message.from_response(raw), sent_at=0.0, visibility_seconds=10)


def test_runtime_hand_backs_do_not_count_as_failures() -> None:
    """Five receives, four of them ended by the runtime (``r`` = 4 after this one's): no
    failure; a killed worker's delivery (no word) counts as one."""
    assert failures_so_far(received(5), {RELEASES: 5}, delivery_open=False) == 0
    assert failures_so_far(received(5), {RELEASES: 4}, delivery_open=False) == 1
    assert failures_so_far(received(3), {}, delivery_open=False) == 3


def test_a_copy_carries_its_earlier_failures_and_in_process_ones_add() -> None:
    """A copy starts at receive 1 with the failures of its original; FIFO retries add up."""
    copy = received(1, earlier=2)
    assert copy.message.earlier_failures == 2
    assert copy.message.first_message_id == "m-0"
    assert REQUEUE_ATTRIBUTE not in copy.message.attributes
    assert failures_so_far(copy, {}, delivery_open=False) == 3
    fifo = received(2)
    fifo.failures_in_process = 3  # counted here before the store's answer came back
    assert failures_so_far(fifo, {RELEASES: 1}, delivery_open=True) == 3


async def test_a_lost_lease_stops_the_heartbeat_and_an_expired_one_is_taken_again() -> None:
    """A renewal refused because another owner holds the key marks the message lost: never
    extended again. One refused because the record ran out with nobody taking the key (a
    blocked loop) claims it again as the same delivery: extended, with a new token."""
    store = MemoryStore(clock=ManualClock())
    now = [100.0]
    visibility = RecordingVisibility()
    heartbeat = Heartbeat(
        visibility,  # type: ignore[arg-type]
        store=store,
        visibility_timeout_seconds=10,
        extend_below_seconds=5,
        tick_seconds=1,
        clock=lambda: now[0],
    )
    items = {}
    for name in ("kept", "expired", "taken"):
        item = InFlight.received(
            Message(name, "{}", f"rh-{name}"), sent_at=now[0], visibility_seconds=10
        )
        item.request = ClaimRequest(f"p:s:{name}", "fp", owner=f"delivery-{name}")
        (claim,) = await store.claim_many([item.request], owner="x", lease_seconds=10)
        assert claim.token is not None
        item.held = Held(item.request.key, claim.token)
        heartbeat.track(item)
        items[name] = item
    expired, taken = items["expired"], items["taken"]
    assert expired.held is not None
    assert taken.held is not None
    old_token = expired.held.token
    await store.release_many([expired.held, taken.held])  # both records gone...
    await store.claim_many(  # ...and another worker took one of the keys
        [ClaimRequest("p:s:taken", "fp", owner="another-worker")], owner="x", lease_seconds=10
    )
    now[0] += 6
    await heartbeat.beat()
    assert taken.lease_lost
    assert not expired.lease_lost
    assert expired.held.token > old_token
    assert sorted(visibility.changes) == [("expired", 10), ("kept", 10)]
    now[0] += 6
    await heartbeat.beat()
    assert sorted(visibility.changes) == [("expired", 10)] * 2 + [("kept", 10)] * 2
    assert heartbeat.lost == 1
