"""How results are turned into bytes for the store and back, with the size guard.

JSON by default; anything with ``dumps(value) -> bytes`` and ``loads(data) -> object`` plugs in
(pickle is deliberately not offered: a shared Redis must never make a worker unpickle data).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import ResultTooLargeError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "JsonSerializer",
    "Serializer",
    "check_result_size",
    "encode_result",
]

# Results are replay information (a status, an id, a small body), not blobs; 256 KiB keeps a
# completed batch of 10 well under Redis' comfortable reply sizes.
DEFAULT_MAX_RESULT_BYTES = 256 * 1024


@runtime_checkable
class Serializer(Protocol):
    """Turns a handler's result into bytes to store, and stored bytes back into a result."""

    def dumps(self, value: object) -> bytes:
        """Serialize ``value``."""
        ...

    def loads(self, data: bytes) -> object:
        """Deserialize what ``dumps`` wrote."""
        ...


class JsonSerializer:
    """Compact UTF-8 JSON; ``default`` converts what ``json`` cannot (as in ``json.dumps``)."""

    __slots__ = ("_encoder",)

    def __init__(self, *, default: Callable[[Any], Any] | None = None) -> None:
        # Built once: json.dumps with options builds a new encoder on every call.
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=default)

    def dumps(self, value: object) -> bytes:
        """Serialize ``value`` as compact JSON."""
        return self._encoder.encode(value).encode()

    def loads(self, data: bytes) -> object:
        """Parse JSON."""
        return json.loads(data)


def encode_result(serializer: Serializer, value: object, *, max_bytes: int, key: str = "") -> bytes:
    """Serialize ``value``; raise ResultTooLargeError (never truncate) past ``max_bytes``."""
    data = serializer.dumps(value)
    check_result_size(data, max_bytes=max_bytes, key=key)
    return data


def check_result_size(data: bytes, *, max_bytes: int, key: str = "") -> None:
    """Raise ResultTooLargeError when ``data`` is larger than ``max_bytes``."""
    if len(data) > max_bytes:
        where = f" for idempotency key {key!r}" if key else ""
        raise ResultTooLargeError(
            f"result{where} is {len(data)} bytes once serialized; the limit is {max_bytes} "
            "(FARGATE_RUNTIME_IDEMPOTENCY_MAX_RESULT_BYTES): store a reference, not the payload"
        )
