"""Pieces of the consumer that need no server: backoff, settings, messages, keys, slots."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from fargate_runtime.errors import ConfigurationError, MalformedMessageError
from fargate_runtime.idempotency import Idempotency, MemoryStore
from fargate_runtime.settings import load_settings
from fargate_runtime.sqs import (
    AckOutcome,
    Backoff,
    Consumer,
    Message,
    MessageContext,
    SqsSettings,
    deduplication_id,
    json_field,
    message_attribute,
)
from fargate_runtime.sqs._inflight import InFlight
from fargate_runtime.sqs._receiver import Slots
from fargate_runtime.sqs.heartbeat import Heartbeat

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef


def raw_message(body: str = "{}", **attributes: Any) -> MessageTypeDef:
    """A ReceiveMessage entry as botocore returns it."""
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "rh-1",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1700000000000"},
        "MessageAttributes": {
            "tenant": {"DataType": "String", "StringValue": "t-9"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
        **attributes,  # type: ignore[typeddict-item]
    }


def test_backoff_doubles_with_receive_count_and_is_capped() -> None:
    """Delays double per receive, stay within [d/2, d] of the ceiling, never pass the cap."""
    backoff = Backoff(base_seconds=2, cap_seconds=60)
    rng = random.Random(7)
    for count, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 32), (6, 60), (40, 60)]:
        delays = {backoff.delay_seconds(count, rng=rng) for _ in range(50)}
        assert min(delays) >= round(ceiling / 2)
        assert max(delays) <= ceiling
    assert Backoff(base_seconds=0, cap_seconds=0).delay_seconds(5) == 0


def test_defaults_keep_a_full_long_poll_and_a_short_visibility() -> None:
    """WaitTimeSeconds 20 whatever the budget (shutdown abandons the poll); visibility 10 s."""
    settings = SqsSettings(queue_url="https://sqs.example/1/q")
    assert settings.wait_time_seconds == 20
    assert settings.visibility_timeout_seconds == 10
    assert settings.heartbeat_after_seconds == 5


def test_a_queue_name_or_arn_is_refused_as_the_queue_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue URL must be a URL: a name or an ARN is refused at start, naming the variable."""
    monkeypatch.setenv("FARGATE_RUNTIME_SQS_QUEUE_URL", "arn:aws:sqs:us-east-1:1:payments")
    with pytest.raises(ConfigurationError, match=r"FARGATE_RUNTIME_SQS_QUEUE_URL: .*queue's URL"):
        load_settings(SqsSettings)


def test_contradictory_settings_are_refused_naming_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A heartbeat slower than the visibility it guards is refused at start (exit 78)."""
    monkeypatch.setenv("FARGATE_RUNTIME_SQS_QUEUE_URL", "https://sqs.example/1/q")
    monkeypatch.setenv("FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS", "4")
    monkeypatch.setenv("FARGATE_RUNTIME_SQS_HEARTBEAT_TICK_SECONDS", "3")
    with pytest.raises(ConfigurationError, match="HEARTBEAT_TICK_SECONDS"):
        load_settings(SqsSettings)
    monkeypatch.delenv("FARGATE_RUNTIME_SQS_QUEUE_URL")
    monkeypatch.delenv("FARGATE_RUNTIME_SQS_HEARTBEAT_TICK_SECONDS")
    with pytest.raises(ConfigurationError, match="FARGATE_RUNTIME_SQS_QUEUE_URL"):
        load_settings(SqsSettings)


def test_settings_describe_the_queue() -> None:
    """FIFO is read from the URL, and one long poll serves up to 10 slots."""
    fifo = SqsSettings(queue_url="https://sqs.example/1/orders.fifo", concurrency=25)
    assert fifo.is_fifo
    assert fifo.queue_name == "orders.fifo"
    assert fifo.receiver_count == 3
    assert not SqsSettings(queue_url="https://sqs.example/1/q").is_fifo


def test_message_reads_system_and_message_attributes() -> None:
    """The parsed message exposes receive count, timestamps and attribute values."""
    message = Message.from_response(raw_message('{"id": 5}'))
    assert message.receive_count == 3
    assert message.sent_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert message.attributes == {"tenant": "t-9", "blob": b"\x00\x01"}
    assert message.json() == {"id": 5}
    assert message.group_id is None


def test_message_json_raises_malformed() -> None:
    """A body that is not JSON raises MalformedMessageError (the message is retried)."""
    with pytest.raises(MalformedMessageError, match="not JSON"):
        Message.from_response(raw_message("{oops")).json()


def test_key_functions_read_fields_attributes_and_deduplication_ids() -> None:
    """Each key source returns the key or raises MalformedMessageError when it is absent."""
    message = Message.from_response(raw_message('{"data": {"id": "evt_1"}, "n": 7}'))
    assert json_field("data.id")(message) == "evt_1"
    assert json_field("n")(message) == "7"
    assert message_attribute("tenant")(message) == "t-9"
    for key in (json_field("missing"), json_field("data"), message_attribute("blob")):
        with pytest.raises(MalformedMessageError):
            key(message)
    with pytest.raises(MalformedMessageError):
        deduplication_id()(message)
    fifo = Message.from_response(raw_message(Attributes={"MessageDeduplicationId": "d-1"}))
    assert deduplication_id()(fifo) == "d-1"


async def test_slots_give_what_is_free_gather_for_more_and_close() -> None:
    """A receive takes the free slots, waits briefly for a full batch, and gets 0 once closed."""
    slots = Slots(10)
    assert await slots.take(10, gather_seconds=0) == 10
    slots.give(3)
    assert await slots.take(10, gather_seconds=0) == 3
    taking = asyncio.create_task(slots.take(10, gather_seconds=5))
    slots.give(4)
    await asyncio.sleep(0)
    slots.give(6)  # a full batch before the gather window ends
    assert await asyncio.wait_for(taking, 5) == 10
    waiting = asyncio.create_task(slots.take(10, gather_seconds=0))
    slots.close()
    assert await asyncio.wait_for(waiting, 5) == 0


async def handle(message: Message, context: MessageContext) -> None:
    """A handler that does nothing."""


def test_deduplication_id_key_is_refused_on_a_standard_queue() -> None:
    """``deduplication_id()`` on a standard queue (no such ids: all malformed) is refused at
    construction, naming the queue URL variable; on a FIFO queue it is accepted."""
    client: SQSClient = object()  # type: ignore[assignment]
    idempotency = Idempotency(MemoryStore(), prefix="p")
    with pytest.raises(ConfigurationError, match=r"FARGATE_RUNTIME_SQS_QUEUE_URL .* standard"):
        Consumer(
            handle,
            client=client,
            settings=SqsSettings(queue_url="https://sqs.example/1/q"),
            idempotency=idempotency,
            key=deduplication_id(),
        )
    Consumer(
        handle,
        client=client,
        settings=SqsSettings(queue_url="https://sqs.example/1/q.fifo"),
        idempotency=idempotency,
        key=deduplication_id(),
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"batch_handler": handle},  # both forms at once
        {"idempotency": "store"},  # idempotency without a key
    ],
)
def test_consumer_refuses_ambiguous_arguments(arguments: dict[str, Any]) -> None:
    """Both handler forms, or idempotency without a key source, are configuration errors."""
    if arguments.get("idempotency") == "store":
        arguments["idempotency"] = Idempotency(MemoryStore(), prefix="p")
    client: SQSClient = object()  # type: ignore[assignment]
    with pytest.raises(ConfigurationError):
        Consumer(
            handle,
            client=client,
            settings=SqsSettings(queue_url="https://sqs.example/1/q"),
            **arguments,
        )


class RecordingVisibility:
    """Stands in for the visibility buffer: records the extensions asked for."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, int]] = []

    async def change_now(
        self, changes: list[tuple[str, str, int]], *, log_fields: object = None
    ) -> list[AckOutcome]:
        self.changes.extend((message_id, seconds) for message_id, _, seconds in changes)
        return [AckOutcome.DONE] * len(changes)


async def test_heartbeat_extends_what_runs_out_and_stops_at_the_12_hour_limit() -> None:
    """Only messages close to expiry are extended, never past 12 h from their first receive."""
    now, wall = [1000.0], [1_700_000_000.0]
    visibility = RecordingVisibility()
    heartbeat = Heartbeat(
        visibility,  # type: ignore[arg-type]
        store=None,
        visibility_timeout_seconds=20,
        extend_below_seconds=10,
        tick_seconds=1,
        clock=lambda: now[0],
        wall_clock=lambda: wall[0],
    )
    fresh = InFlight.received(Message("fresh", "{}", "rh-1"), sent_at=now[0], visibility_seconds=20)
    old = InFlight.received(Message("old", "{}", "rh-2"), sent_at=now[0], visibility_seconds=20)
    old.first_received_epoch = wall[0] - 43_200 + 25  # 25 s before the 12 h limit
    for item in (fresh, old):
        heartbeat.track(item)
    await heartbeat.beat()
    assert visibility.changes == []  # 20 s left: nothing to do yet
    now[0] += 11
    wall[0] += 11
    await heartbeat.beat()
    # fresh: a full 20 s; old: only what the 12 h limit leaves (minus a safety margin).
    assert visibility.changes == [("fresh", 20)]
    assert old.capped
    assert fresh.visible_until == now[0] + 20
