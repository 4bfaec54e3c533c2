"""How results become bytes in the store and come back: a faithful round trip, or a refusal.

``JsonSerializer`` (the default) writes JSON and tags what JSON cannot say, so that a replayed
result has the same type and an equal value at every level (``replayed == original``)::

    result                               stored as
    None, bool, int, float (NaN, ±inf)   themselves
    str, list                            themselves (a list's items tagged as needed)
    dict with str keys                   a JSON object (a lone "$..." key is escaped as below)
    dict with other keys                 {"$dict": [[key, value], ...]}
    tuple, set, frozenset                {"$tuple": [...]}, {"$set": [...]}, {"$frozenset": [...]}
    bytes, bytearray                     {"$bytes": "<base64>"}, {"$bytearray": "<base64>"}
    decimal.Decimal                      {"$decimal": "12.30"}           (exponent kept)
    uuid.UUID                            {"$uuid": "..."}
    datetime.date, .time, .timedelta     {"$date": "2024-05-01"}, {"$time": "12:00:00"}, ...
    datetime.datetime                    {"$datetime": "2024-05-01T12:00:00+02:00"}; with a
                                         zoneinfo.ZoneInfo: [naive ISO, zone key, fold]

Aware datetimes keep their zone when it is a ``zoneinfo.ZoneInfo`` (DST fold included) or a
``datetime.timezone``; any other tzinfo (pytz, dateutil) replays as the fixed UTC offset it had:
an equal instant. Anything else (dataclasses, pydantic models, enums, named tuples, your own
classes) cannot be rebuilt from JSON without naming a class in the stored data, which a shared
Redis must never be trusted to do (the reason pickle is not offered), so it is **refused** with
a TypeError. For those, ``TypedSerializer(T)`` round-trips through pydantic with the type you
name (``@idem.idempotent(..., result_type=Receipt)``).

A result that is refused or too large never makes the work run twice: the guard completes the
record with a marker instead (see ``encode_result``), and a duplicate gets ResultUnavailableError
rather than a result. Stored bytes starting with ``0xFF`` are those markers; a serializer must
not produce such bytes (UTF-8 JSON never does) and its output is refused if it does.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import uuid
import zoneinfo
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import TypeAdapter

from ..errors import ResultTooLargeError, ResultUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "JsonSerializer",
    "Serializer",
    "TypedSerializer",
    "check_result_size",
    "decode_result",
    "encode_result",
    "unstored_marker",
]

T = TypeVar("T")

# Results are replay information (a status, an id, a small body), not blobs; 256 KiB keeps a
# completed batch of 10 well under Redis' comfortable reply sizes.
DEFAULT_MAX_RESULT_BYTES = 256 * 1024
# First byte of a marker record (see the module docstring): never the first byte of UTF-8.
_MARKER = b"\xff"
_MARKER_REASON_CHARS = 500


@runtime_checkable
class Serializer(Protocol):
    """Turns a handler's result into bytes to store, and stored bytes back into a result.

    ``dumps`` raises (TypeError, ValueError) for a value it cannot round-trip faithfully.
    """

    def dumps(self, value: object) -> bytes:
        """Serialize ``value``."""
        ...

    def loads(self, data: bytes) -> object:
        """Deserialize what ``dumps`` wrote."""
        ...


def _refuse(value: object) -> TypeError:
    return TypeError(
        f"cannot store a {type(value).__name__} result faithfully: return built-in values "
        "(dict, list, str, numbers, Decimal, datetime, UUID, bytes, set, tuple), or name the "
        "result's type (result_type=..., TypedSerializer) for dataclasses, models and enums"
    )


def _tag(value: object) -> Any:
    """``value`` as a JSON-ready structure with tags (see the module docstring)."""
    # Exact types, not isinstance: a subclass (an IntEnum, a NamedTuple) would not come back.
    kind = type(value)
    if value is None or kind is str or kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, list) and kind is list:
        return [_tag(item) for item in value]
    if isinstance(value, dict) and kind is dict:
        return _tag_dict(value)
    if isinstance(value, tuple | set | frozenset) and kind in (tuple, set, frozenset):
        return {f"${kind.__name__}": [_tag(item) for item in value]}
    if isinstance(value, bytes | bytearray) and kind in (bytes, bytearray):
        return {f"${kind.__name__}": base64.b64encode(value).decode()}
    if kind is decimal.Decimal or kind is uuid.UUID:
        return {f"${kind.__name__.lower()}": str(value)}
    if isinstance(value, datetime.datetime) and kind is datetime.datetime:
        return _tag_datetime(value)
    if isinstance(value, datetime.date) and kind is datetime.date:
        return {"$date": value.isoformat()}
    if (
        isinstance(value, datetime.time)
        and kind is datetime.time
        and (value.tzinfo is None or type(value.tzinfo) is datetime.timezone)
    ):
        # A time with a ZoneInfo has no offset of its own: nothing faithful to store.
        return {"$time": [value.isoformat(), value.fold]}
    if isinstance(value, datetime.timedelta) and kind is datetime.timedelta:
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    raise _refuse(value)


def _tag_dict(value: dict[Any, Any]) -> Any:
    if all(type(key) is str for key in value) and not (
        len(value) == 1 and next(iter(value)).startswith("$")
    ):
        return {key: _tag(item) for key, item in value.items()}
    # Keys JSON cannot keep (JSON would turn 1 into "1"), or one that reads like a tag.
    return {"$dict": [[_tag(key), _tag(item)] for key, item in value.items()]}


def _tag_datetime(value: datetime.datetime) -> Any:
    zone = value.tzinfo
    if isinstance(zone, zoneinfo.ZoneInfo) and zone.key is not None:
        return {"$datetime": [value.replace(tzinfo=None).isoformat(), zone.key, value.fold]}
    if zone is not None and type(zone) is not datetime.timezone:
        # pytz, dateutil...: kept as the offset it had then (the same instant).
        offset = value.utcoffset()
        value = value.replace(tzinfo=None if offset is None else datetime.timezone(offset))
    if value.fold:
        return {"$datetime": [value.isoformat(), None, 1]}
    return {"$datetime": value.isoformat()}


def _untag_datetime(spec: str | list[Any]) -> datetime.datetime:
    if isinstance(spec, str):
        return datetime.datetime.fromisoformat(spec)
    text, zone, fold = spec
    value = datetime.datetime.fromisoformat(text).replace(fold=fold)
    return value if zone is None else value.replace(tzinfo=zoneinfo.ZoneInfo(zone))


def _untag_time(spec: list[Any]) -> datetime.time:
    text, fold = spec
    return datetime.time.fromisoformat(text).replace(fold=fold)


_UNTAG: dict[str, Callable[[Any], object]] = {
    "$dict": dict,
    "$tuple": tuple,
    "$set": set,
    "$frozenset": frozenset,
    "$bytes": base64.b64decode,
    "$bytearray": lambda text: bytearray(base64.b64decode(text)),
    "$decimal": decimal.Decimal,
    "$uuid": uuid.UUID,
    "$date": datetime.date.fromisoformat,
    "$time": _untag_time,
    "$timedelta": lambda parts: datetime.timedelta(*parts),
    "$datetime": _untag_datetime,
}


def _untag(obj: dict[str, Any]) -> object:
    # json calls this for every object, innermost first: a tag's payload is already decoded.
    if len(obj) == 1:
        ((name, payload),) = obj.items()
        untag = _UNTAG.get(name)
        if untag is not None:
            return untag(payload)
    return obj


class JsonSerializer:
    """Tagged UTF-8 JSON with a faithful round trip (see the module docstring)."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        # Built once: json.dumps/loads with options build a new coder on every call.
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
        self._decoder = json.JSONDecoder(object_hook=_untag)

    def dumps(self, value: object) -> bytes:
        """Serialize ``value``; TypeError for a value that would not replay as it was."""
        return self._encoder.encode(_tag(value)).encode()

    def loads(self, data: bytes) -> object:
        """Parse what ``dumps`` wrote (plain JSON from earlier versions reads as plain JSON)."""
        return self._decoder.decode(data.decode())


class TypedSerializer(Generic[T]):
    """Results of one declared type, through pydantic: dataclasses, models, enums, typed dicts.

    ``dumps`` checks the round trip (validating the JSON back must give an equal value of the
    same type) and raises TypeError where it does not hold, e.g. a ``dict[str, Any]`` holding a
    Decimal, which JSON would replay as a str.
    """

    __slots__ = ("_adapter", "result_type")

    def __init__(self, result_type: type[T] | Any) -> None:
        self.result_type = result_type
        self._adapter: TypeAdapter[T] = TypeAdapter(result_type)

    def dumps(self, value: object) -> bytes:
        """Serialize ``value`` as JSON by its declared type."""
        data = self._adapter.dump_json(value)  # type: ignore[arg-type]
        back = self._adapter.validate_json(data)
        if type(back) is not type(value) or back != value:
            raise TypeError(
                f"a {type(value).__name__} result does not replay as it was through "
                f"{self.result_type!r}: declare a more precise result type"
            )
        return data

    def loads(self, data: bytes) -> T:
        """Validate stored JSON back into the declared type."""
        return self._adapter.validate_json(data)


def encode_result(serializer: Serializer, value: object, *, max_bytes: int, key: str = "") -> bytes:
    """Serialize ``value``: TypeError where the serializer refuses it (or writes a marker's
    first byte), ResultTooLargeError (never truncated) past ``max_bytes``."""
    data = serializer.dumps(value)
    if data.startswith(_MARKER):
        raise TypeError("the serializer wrote bytes starting with 0xFF, reserved for markers")
    check_result_size(data, max_bytes=max_bytes, key=key)
    return data


def unstored_marker(problem: BaseException | None) -> bytes:
    """The record kept instead of a result that could not be stored (replays as an error);
    without a ``problem``, the one-byte marker (fits under any size limit)."""
    if problem is None:
        return _MARKER
    reason = f"{type(problem).__name__}: {problem}"[:_MARKER_REASON_CHARS]
    return _MARKER + json.dumps({"unstored": reason}).encode()


def decode_result(serializer: Serializer, data: bytes, *, key: str) -> object:
    """A stored result back; ResultUnavailableError for a marker or unreadable bytes."""
    if data.startswith(_MARKER):
        try:
            reason = str(json.loads(data[len(_MARKER) :])["unstored"])
        except (ValueError, KeyError, TypeError):
            reason = "the reason was too large to keep"
        raise ResultUnavailableError(key, f"it could not be stored ({reason})")
    try:
        return serializer.loads(data)
    except Exception as exc:
        raise ResultUnavailableError(key, f"the stored bytes cannot be read ({exc!r})") from exc


def check_result_size(data: bytes, *, max_bytes: int, key: str = "") -> None:
    """Raise ResultTooLargeError when ``data`` is larger than ``max_bytes``."""
    if len(data) > max_bytes:
        where = f" for idempotency key {key!r}" if key else ""
        raise ResultTooLargeError(
            f"result{where} is {len(data)} bytes once serialized; the limit is {max_bytes} "
            "(FARGATE_RUNTIME_IDEMPOTENCY_MAX_RESULT_BYTES): store a reference, not the payload"
        )
