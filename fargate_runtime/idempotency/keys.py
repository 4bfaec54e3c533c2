"""Idempotency keys: namespacing (``prefix:scope:key``), validation and payload fingerprints.

A stored key is ``prefix:scope:key``. The prefix names the service (it may itself contain
colons, e.g. ``payments:prod``); in the scope and the key, ``%``, ``:``, ``{`` and ``}`` are
percent-escaped, so the last two colons always split a stored key unambiguously and two
services or tenants sharing a Redis cannot collide::

    scoped_key("payments", "tenant-7:POST /charges", "a:b")
        == "payments:tenant-7%3APOST /charges:a%3Ab"

The per-scope fencing counter lives next to the records at ``prefix:scope:%fence``: an escaped
key never contains ``%f``, so no record can ever be named like a counter.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import json
import uuid
from typing import Any

from ..errors import IdempotencyKeyError

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_PREFIX_LENGTH",
    "fence_base",
    "fingerprint",
    "scoped_key",
    "validate_key",
]

MAX_KEY_LENGTH = 255
MAX_PREFIX_LENGTH = 128
_FENCE_SUFFIX = ":%fence"
_ESCAPES = str.maketrans({"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D"})


def validate_key(key: str, *, what: str = "key", max_length: int = MAX_KEY_LENGTH) -> str:
    """Return ``key`` if it is non-empty, at most ``max_length`` characters and printable."""
    if not isinstance(key, str):
        raise IdempotencyKeyError(f"idempotency {what} must be a str, got {type(key).__name__}")
    if not key:
        raise IdempotencyKeyError(f"idempotency {what} is empty")
    if len(key) > max_length:
        raise IdempotencyKeyError(
            f"idempotency {what} is {len(key)} characters long; the limit is {max_length}"
        )
    if not key.isprintable():
        raise IdempotencyKeyError(f"idempotency {what} {key!r} contains unprintable characters")
    return key


def _validate_prefix(prefix: str) -> str:
    validate_key(prefix, what="prefix", max_length=MAX_PREFIX_LENGTH)
    # Braces would turn part of the prefix into a Redis Cluster hash tag for every key.
    if any(char.isspace() or char in "{}%" for char in prefix):
        raise IdempotencyKeyError(
            f"idempotency prefix {prefix!r} must not contain whitespace, '{{', '}}' or '%'"
        )
    if prefix.endswith(":"):
        raise IdempotencyKeyError(f"idempotency prefix {prefix!r} must not end with ':'")
    return prefix


def scoped_key(prefix: str, scope: str, key: str, *, hash_tag: bool = False) -> str:
    """The stored key ``prefix:scope:key``, validated and escaped.

    ``hash_tag=True`` writes the scope as a Redis Cluster hash tag (``prefix:{scope}:key``): all
    keys of a scope then share one slot, so a batch is always one script on a cluster, at the
    price of putting the whole scope on one shard.
    """
    return _namespace(prefix, scope, hash_tag) + validate_key(key).translate(_ESCAPES)


@functools.lru_cache(maxsize=1024)
def _namespace(prefix: str, scope: str, hash_tag: bool) -> str:
    # Cached: a service uses a handful of scopes, validated and escaped again on every key
    # otherwise. Errors are not cached (lru_cache keeps only returned values).
    _validate_prefix(prefix)
    escaped_scope = validate_key(scope, what="scope").translate(_ESCAPES)
    if hash_tag:
        escaped_scope = "{" + escaped_scope + "}"
    return f"{prefix}:{escaped_scope}:"


def fence_base(stored_key: str) -> str:
    """The fencing counter of a stored key's scope: ``prefix:scope:%fence``.

    Raises IdempotencyKeyError for a key that is not ``prefix:scope:key`` (see ``scoped_key``).
    """
    namespace, colon, key = stored_key.rpartition(":")
    if not colon or not key or ":" not in namespace or namespace.startswith(":"):
        raise IdempotencyKeyError(
            f"stored idempotency key {stored_key!r} is not 'prefix:scope:key'; build it with "
            "scoped_key()"
        )
    return namespace + _FENCE_SUFFIX


def _canonical(value: object) -> Any:
    """Turn common non-JSON types into JSON values that compare equal when the inputs do."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic models
        return model_dump(mode="json")
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, set | frozenset):
        # Sets have no order: sort by the canonical text of each member.
        return sorted(value, key=lambda member: _dumps(member))
    raise TypeError(
        f"cannot fingerprint a {type(value).__name__}: pass a JSON-like part of the payload"
    )


# One encoder for every fingerprint: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_canonical
)


def _dumps(value: object) -> str:
    return _CANONICAL.encode(value)


def fingerprint(payload: object) -> str:
    """A stable hash of ``payload``: SHA-256 of its canonical JSON (sorted keys, no spaces).

    ``bytes`` are hashed as they are. Equal dicts give equal fingerprints whatever their key
    order; pass the part of a payload that identifies the request (not timestamps or trace ids
    that differ between retries) to hash only that part.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
    else:
        data = _dumps(payload).encode()
    return hashlib.sha256(data).hexdigest()
