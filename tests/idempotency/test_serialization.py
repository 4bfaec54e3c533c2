"""Results to bytes and back: the faithful round trip, the refusals and the marker records."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import uuid
import zoneinfo
from typing import Any, NamedTuple

import pytest

from fargate_runtime.idempotency import (
    JsonSerializer,
    ResultTooLargeError,
    ResultUnavailableError,
    TypedSerializer,
    encode_result,
)
from fargate_runtime.idempotency.serialization import decode_result, unstored_marker

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


@dataclasses.dataclass(frozen=True)
class Receipt:
    """A payment handler's typical result."""

    charge: str
    amount: decimal.Decimal
    at: datetime.datetime
    tags: frozenset[str]


class Status(enum.Enum):
    """An enum result."""

    SUCCEEDED = "succeeded"


class Pair(NamedTuple):
    """A named tuple result."""

    left: int
    right: int


def same(left: Any, right: Any) -> bool:
    """Equal and of the same type at every level (NaN equal to NaN)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)


FAITHFUL = [
    None,
    True,
    0,
    -(10**30),
    1.5,
    -0.0,
    float("inf"),
    float("nan"),
    "é€\x00",
    [1, "a", None],
    {"amount": 5, "nested": {"deep": [1, 2]}},
    decimal.Decimal("12.30"),
    decimal.Decimal("1E+2"),
    datetime.datetime(2026, 5, 1, 12, 0, 0, 1),
    datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC),
    datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
    datetime.datetime(2026, 5, 1, 12, 0, tzinfo=PARIS),
    datetime.date(2026, 5, 1),
    datetime.time(23, 59, 59, 999999),
    datetime.time(8, 0, tzinfo=datetime.UTC),
    datetime.timedelta(days=-1, seconds=5, microseconds=7),
    uuid.UUID(int=7),
    b"\x00\xff\r\n",
    bytearray(b"abc"),
    {1, 2, 3},
    frozenset({"a", "b"}),
    (1, (2, "three")),
    {1: "int key", (2, 3): "tuple key", decimal.Decimal("1.5"): "decimal key"},
    {"$decimal": "a user key that reads like a tag"},
    {"$dict": [["looks", "tagged"]]},
    {"$only": 1, "other": 2},
    {"rows": [{"at": datetime.date(2026, 1, 1), "ids": {uuid.UUID(int=1)}}]},
]


@pytest.mark.parametrize("value", FAITHFUL, ids=lambda value: type(value).__name__)
def test_json_serializer_round_trips_type_and_value(value: object) -> None:
    """Every supported value replays with the same type and an equal value, nested or not."""
    serializer = JsonSerializer()
    assert same(serializer.loads(serializer.dumps(value)), value)


def test_zoneinfo_datetime_keeps_its_zone_and_fold() -> None:
    """A ZoneInfo datetime keeps the zone (not just an offset) and the DST fold."""
    serializer = JsonSerializer()
    second = datetime.datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1)  # the later 02:30
    back = serializer.loads(serializer.dumps(second))
    assert isinstance(back, datetime.datetime)
    assert back.tzinfo is PARIS
    assert back.fold == 1
    assert back.utcoffset() == datetime.timedelta(hours=1)


def test_foreign_tzinfo_replays_as_the_same_instant() -> None:
    """A tzinfo other than ZoneInfo or timezone replays as the fixed offset it had."""

    class Plus2(datetime.tzinfo):
        def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
            return datetime.timedelta(hours=2)

        def dst(self, dt: datetime.datetime | None) -> datetime.timedelta:
            return datetime.timedelta(0)

        def tzname(self, dt: datetime.datetime | None) -> str:
            return "+02"

    value = datetime.datetime(2026, 1, 1, 12, tzinfo=Plus2())
    serializer = JsonSerializer()
    back = serializer.loads(serializer.dumps(value))
    assert back == value
    assert isinstance(back, datetime.datetime)
    assert back.utcoffset() == datetime.timedelta(hours=2)


@pytest.mark.parametrize(
    "value",
    [
        Receipt("ch_1", decimal.Decimal("1"), datetime.datetime(2026, 1, 1), frozenset()),
        Status.SUCCEEDED,
        Pair(1, 2),
        object(),
        {"nested": [Status.SUCCEEDED]},
        datetime.time(8, 0, tzinfo=PARIS),
    ],
    ids=["dataclass", "enum", "namedtuple", "object", "nested-enum", "time-with-zoneinfo"],
)
def test_json_serializer_refuses_what_would_not_come_back(value: object) -> None:
    """A value JSON cannot rebuild as it was is a TypeError naming its type, never a lossy copy."""
    with pytest.raises(TypeError, match="cannot store a"):
        JsonSerializer().dumps(value)


def test_plain_json_from_earlier_versions_still_reads() -> None:
    """Records written as plain JSON (before tags) replay as that JSON."""
    assert JsonSerializer().loads(b'{"id":"ch_1","items":[1,2]}') == {"id": "ch_1", "items": [1, 2]}


def test_typed_serializer_rebuilds_dataclasses_and_enums() -> None:
    """With the result's type named, a dataclass or enum replays as itself."""
    receipt = Receipt(
        "ch_1",
        decimal.Decimal("12.30"),
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        frozenset({"card"}),
    )
    typed: TypedSerializer[Receipt] = TypedSerializer(Receipt)
    assert typed.loads(typed.dumps(receipt)) == receipt
    statuses: TypedSerializer[list[Status]] = TypedSerializer(list[Status])
    assert statuses.loads(statuses.dumps([Status.SUCCEEDED])) == [Status.SUCCEEDED]


def test_typed_serializer_refuses_a_type_too_loose_to_round_trip() -> None:
    """``dict[str, Any]`` holding a Decimal would replay a str: refused at dumps, not replayed."""
    with pytest.raises(TypeError, match="does not replay as it was"):
        TypedSerializer(dict[str, Any]).dumps({"amount": decimal.Decimal("1.5")})


def test_encode_result_refuses_oversized_results() -> None:
    """Past the limit the error says the size and the limit; nothing is truncated."""
    with pytest.raises(ResultTooLargeError, match=r"12 bytes.*limit is 10"):
        encode_result(JsonSerializer(), "x" * 10, max_bytes=10, key="k")
    assert encode_result(JsonSerializer(), "x" * 8, max_bytes=10) == b'"xxxxxxxx"'


def test_encode_result_refuses_bytes_that_would_read_as_a_marker() -> None:
    """A serializer whose output starts with 0xFF (the marker byte) is refused."""

    class Raw:
        def dumps(self, value: object) -> bytes:
            return b"\xff\x00"

        def loads(self, data: bytes) -> object:
            return data

    with pytest.raises(TypeError, match="0xFF"):
        encode_result(Raw(), "anything", max_bytes=100)


def test_a_marker_replays_as_result_unavailable_with_the_reason() -> None:
    """A marker record decodes to ResultUnavailableError naming the key and the first problem."""
    marker = unstored_marker(TypeError("cannot store a Receipt result faithfully"))
    with pytest.raises(ResultUnavailableError, match="cannot store a Receipt") as raised:
        decode_result(JsonSerializer(), marker, key="svc:charges:evt-1")
    assert raised.value.key == "svc:charges:evt-1"


def test_unreadable_stored_bytes_replay_as_result_unavailable() -> None:
    """Bytes the serializer cannot read are ResultUnavailableError, not a raw JSON error."""
    with pytest.raises(ResultUnavailableError, match="cannot be read"):
        decode_result(JsonSerializer(), b"{not json", key="k")
