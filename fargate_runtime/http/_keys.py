"""What identifies an idempotent HTTP request: its Idempotency-Key, its client and its route.

The draft sends the key as a Structured Field String (``Idempotency-Key: "8e03-..."``); most
clients send it bare (``Idempotency-Key: 8e03-...``). Both name the same key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from starlette.types import Scope

from ..errors import IdempotencyKeyError
from ..idempotency.keys import validate_key

__all__ = [
    "STATE_NAME",
    "IdempotencyClaim",
    "Principal",
    "Route",
    "header_principal",
    "idempotency_claim",
    "parse_key",
]

# Who the client is, from the request: keys are scoped per principal. None: anonymous.
Principal: TypeAlias = Callable[[Scope], str | None]

# Bare keys: visible ASCII without quotes, commas or backslashes (what most clients send).
_BARE_KEY = re.compile(rb"[!#-+\--\[\]-~]+")
# The draft's form, a Structured Field String: "..." with \" and \\ escapes, printable ASCII.
_SF_STRING = re.compile(rb'"((?:[ !#-\[\]-~]|\\["\\])*)"')


# Where the claim is put in ``scope["state"]`` (Starlette: ``request.state.idempotency``).
STATE_NAME = "idempotency"


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """What a handler running under a fresh key sees: pass ``key`` and ``token`` downstream.

    A payment provider's own idempotency key, or a conditional write that refuses tokens lower
    than the last one it saw, covers the window the store cannot: a crash after the side effect
    and before the response is stored.
    """

    key: str  # the client's Idempotency-Key
    token: int  # the claim's fencing token: strictly increasing per key
    stored_key: str  # the key in the store, scoped per client and route


def idempotency_claim(scope: Scope) -> IdempotencyClaim | None:
    """The claim of the request being handled (``request.scope`` in Starlette), if it has one."""
    claim = scope.get("state", {}).get(STATE_NAME)
    return claim if isinstance(claim, IdempotencyClaim) else None


def header_principal(header: str, *, hashed: bool = True) -> Principal:
    """A principal taken from a request header (``x-api-key``, ``x-tenant-id``, ...).

    With ``hashed`` (the default) only a SHA-256 prefix of the value goes into stored keys, so
    API keys never show up in Redis key names; turn it off for non-secret tenant ids.
    """
    name = header.lower().encode("latin-1")

    def principal(scope: Scope) -> str | None:
        for key, value in scope["headers"]:
            if key == name and value:
                raw = bytes(value)
                return hashlib.sha256(raw).hexdigest()[:32] if hashed else raw.decode("latin-1")
        return None

    return principal


def parse_key(raw: bytes, *, max_length: int) -> str:
    """The key in an ``Idempotency-Key`` value, quoted (the draft) or bare; IdempotencyKeyError."""
    raw = raw.strip(b" \t")
    quoted = _SF_STRING.fullmatch(raw)
    if quoted is not None:
        key = re.sub(rb"\\(.)", rb"\1", quoted.group(1)).decode("ascii")
    elif _BARE_KEY.fullmatch(raw):
        key = raw.decode("ascii")
    else:
        raise IdempotencyKeyError(
            "Idempotency-Key must be printable ASCII, either a quoted string or a bare token"
        )
    return validate_key(key, max_length=max_length)


class Route:
    """A path pattern, ``{name}`` matching one segment: ``/payments/{id}/refunds``."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        parts = re.split(r"\{[^/{}]+\}", pattern)
        self._regex = re.compile("[^/]+".join(re.escape(part) for part in parts))

    def matches(self, path: str) -> bool:
        """True when ``path`` is an instance of the pattern."""
        return self._regex.fullmatch(path) is not None
