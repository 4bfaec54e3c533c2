"""Keys, fingerprints, serialization and settings: the pure parts, no store needed."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import hashlib
import importlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from pydantic import SecretStr

import fargate_runtime.idempotency as idempotency
from fargate_runtime.errors import ConfigurationError
from fargate_runtime.idempotency import (
    FailurePolicy,
    Idempotency,
    IdempotencyKeyError,
    IdempotencySettings,
    JsonSerializer,
    MemoryStore,
    RedisStore,
    ResultTooLargeError,
    attempt_owner,
    encode_result,
    fingerprint,
    load_idempotency_settings,
    open_store,
    scoped_key,
)
from fargate_runtime.idempotency.keys import fence_base


def test_scoped_key_joins_prefix_scope_and_key() -> None:
    """A plain key becomes ``prefix:scope:key``."""
    assert scoped_key("payments", "charges", "evt-1") == "payments:charges:evt-1"


def test_colons_in_scope_and_key_cannot_collide() -> None:
    """Scope/key splits that would read the same are escaped apart."""
    a = scoped_key("svc", "a:b", "c")
    b = scoped_key("svc", "a", "b:c")
    assert a != b
    assert a == "svc:a%3Ab:c"
    assert b == "svc:a:b%3Ac"


def test_prefix_may_hold_colons_and_the_last_two_still_split() -> None:
    """A prefix like ``payments:prod`` is kept; the counter is found from the right."""
    key = scoped_key("payments:prod", "charges", "k:1")
    assert key == "payments:prod:charges:k%3A1"
    assert fence_base(key) == "payments:prod:charges:%fence"


def test_escaping_is_injective_for_percent_signs() -> None:
    """A literal ``%3A`` in a key stays distinct from an escaped colon."""
    assert scoped_key("s", "c", "%3A") != scoped_key("s", "c", ":")


def test_braces_are_escaped_unless_a_hash_tag_is_asked_for() -> None:
    """User braces never make a hash tag; ``hash_tag=True`` tags the scope."""
    assert scoped_key("s", "{t}", "{k}") == "s:%7Bt%7D:%7Bk%7D"
    assert scoped_key("s", "tenant", "k", hash_tag=True) == "s:{tenant}:k"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("x" * 256, "256 characters"),
        ("line\nbreak", "unprintable"),
        ("tab\there", "unprintable"),
    ],
)
def test_invalid_keys_are_refused(key: str, message: str) -> None:
    """Empty, over-long and unprintable keys raise IdempotencyKeyError (a ValueError)."""
    with pytest.raises(IdempotencyKeyError, match=message):
        scoped_key("svc", "scope", key)


def test_longest_allowed_key_is_accepted() -> None:
    """255 printable characters, unicode included, are a valid key."""
    key = "é" * 255
    assert scoped_key("svc", "scope", key).endswith(key)


@pytest.mark.parametrize("prefix", ["", "has space", "tag{x}", "trailing:", "pct%"])
def test_invalid_prefixes_are_refused(prefix: str) -> None:
    """Prefixes with whitespace, braces, ``%`` or a trailing colon are refused."""
    with pytest.raises(IdempotencyKeyError):
        scoped_key(prefix, "scope", "key")


@pytest.mark.parametrize("stored", ["plain", "only:two", ":scope:key", "p:s:"])
def test_fence_base_refuses_keys_that_are_not_scoped(stored: str) -> None:
    """The counter can only be derived from a ``prefix:scope:key`` key."""
    with pytest.raises(IdempotencyKeyError):
        fence_base(stored)


def test_fingerprint_ignores_key_order_and_whitespace() -> None:
    """Equal payloads give equal fingerprints whatever their dict order."""
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})


def test_fingerprint_differs_for_different_payloads() -> None:
    """A changed amount changes the fingerprint."""
    assert fingerprint({"amount": 5}) != fingerprint({"amount": 6})


def test_fingerprint_is_stable_across_runs() -> None:
    """The fingerprint is SHA-256 of canonical JSON: the same in every process and release."""
    expected = hashlib.sha256('{"a":"x","b":1,"c":"é"}'.encode()).hexdigest()
    assert fingerprint({"c": "é", "b": 1, "a": "x"}) == expected


def test_fingerprint_canonicalizes_common_types() -> None:
    """Dataclasses, dates, decimals, UUIDs and sets have stable canonical forms."""

    @dataclasses.dataclass
    class Payment:
        amount: decimal.Decimal
        at: datetime.date
        tags: frozenset[str]

    one = Payment(decimal.Decimal("1.50"), datetime.date(2026, 1, 2), frozenset({"b", "a"}))
    two = Payment(decimal.Decimal("1.50"), datetime.date(2026, 1, 2), frozenset({"a", "b"}))
    assert fingerprint(one) == fingerprint(two)
    assert fingerprint(uuid.UUID(int=1)) == fingerprint(str(uuid.UUID(int=1)))


def test_fingerprint_refuses_what_it_cannot_canonicalize() -> None:
    """An arbitrary object is a TypeError naming its type, not a silently unstable hash."""
    with pytest.raises(TypeError, match="object"):
        fingerprint({"client": object()})


def test_fingerprint_of_bytes_hashes_them_as_they_are() -> None:
    """Raw bodies (HTTP requests) are hashed byte for byte."""
    assert fingerprint(b'{"a":1}') == hashlib.sha256(b'{"a":1}').hexdigest()


def test_encode_result_refuses_oversized_results() -> None:
    """Past the limit the error says the size and the limit; nothing is truncated."""
    with pytest.raises(ResultTooLargeError, match=r"12 bytes.*limit is 10"):
        encode_result(JsonSerializer(), "x" * 10, max_bytes=10, key="k")
    assert encode_result(JsonSerializer(), "x" * 8, max_bytes=10) == b'"xxxxxxxx"'


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults: local Redis, fail closed, 30 s lease, 24 h retention."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("FARGATE_RUNTIME_IDEMPOTENCY_REDIS_URL", raising=False)
    settings = IdempotencySettings()
    assert settings.redis_url.get_secret_value() == "redis://127.0.0.1:6379"
    assert settings.failure_policy is FailurePolicy.CLOSED
    assert settings.lease_seconds == 30.0
    assert settings.retention_seconds == 86400.0


def test_settings_read_our_variable_before_plain_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """``FARGATE_RUNTIME_IDEMPOTENCY_REDIS_URL`` wins over ``REDIS_URL``, which is the fallback."""
    monkeypatch.setenv("REDIS_URL", "redis://plain:6379")
    assert IdempotencySettings().redis_url.get_secret_value() == "redis://plain:6379"
    monkeypatch.setenv("FARGATE_RUNTIME_IDEMPOTENCY_REDIS_URL", "rediss://ours:6380")
    monkeypatch.setenv("FARGATE_RUNTIME_IDEMPOTENCY_FAILURE_POLICY", "open")
    settings = IdempotencySettings()
    assert settings.redis_url.get_secret_value() == "rediss://ours:6380"
    assert settings.failure_policy is FailurePolicy.OPEN


def test_settings_errors_never_echo_the_url_or_password() -> None:
    """A bad URL is reported by variable name without repeating its secret parts."""
    with pytest.raises(ConfigurationError) as raised:
        load_idempotency_settings(
            redis_url="http://user:hunter2@host", redis_password="hunter2", lease_seconds=-1
        )
    message = str(raised.value)
    assert "FARGATE_RUNTIME_IDEMPOTENCY_REDIS_URL" in message
    assert "FARGATE_RUNTIME_IDEMPOTENCY_LEASE_SECONDS" in message
    assert "hunter2" not in message
    assert raised.value.__cause__ is None
    assert "hunter2" not in repr(IdempotencySettings(redis_password=SecretStr("hunter2")))


def test_settings_refuse_a_bad_prefix() -> None:
    """The key prefix is validated like any stored key's prefix."""
    with pytest.raises(ConfigurationError, match="KEY_PREFIX"):
        load_idempotency_settings(key_prefix="has space")


async def test_open_store_picks_the_backend_from_the_url() -> None:
    """``memory://`` gives the in-process store; a Redis URL gives a TLS-capable Redis store."""
    async with open_store(IdempotencySettings(redis_url=SecretStr("memory://"))) as memory:
        assert isinstance(memory, MemoryStore)
    settings = IdempotencySettings(redis_url=SecretStr("rediss://user:pw@cache.example:6380/0"))
    store = open_store(settings)  # not entered: that would connect (to check the policy)
    try:
        assert isinstance(store, RedisStore)
        kwargs = store.client.connection_pool.connection_kwargs  # type: ignore[union-attr]
        assert kwargs["host"] == "cache.example"
        assert kwargs["username"] == "user"
        assert kwargs["socket_connect_timeout"] == 1.0
        assert kwargs["socket_timeout"] is None  # the store bounds whole calls instead
        assert store.client.connection_pool.connection_class.__name__ == "SSLConnection"  # type: ignore[union-attr]
        assert store.client.connection_pool.max_connections == 32  # type: ignore[union-attr]
    finally:
        await store.aclose()


def test_public_namespace_is_curated() -> None:
    """Every module's ``__all__`` names exist, none is private, none is listed twice."""
    package = Path(idempotency.__file__).parent
    names = ["fargate_runtime.idempotency"] + [
        f"fargate_runtime.idempotency.{path.stem}"
        for path in sorted(package.glob("*.py"))
        if path.stem != "__init__"
    ]
    for name in names:
        module = importlib.import_module(name)
        exported = module.__all__
        assert len(exported) == len(set(exported)), name
        for attribute in exported:
            assert hasattr(module, attribute), f"{name}.{attribute}"
            assert not attribute.startswith("_"), f"{name}.{attribute}"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("lease_seconds", "0"),
        ("lease_seconds", "-5"),
        ("lease_seconds", "inf"),
        ("retention_seconds", "inf"),
        ("retention_seconds", "nan"),
        ("call_timeout_seconds", "inf"),
        ("release_timeout_seconds", "0"),
        ("max_connections", "1"),
    ],
)
def test_settings_refuse_zero_negative_and_infinite_numbers(variable: str, value: str) -> None:
    """Each numeric setting out of bounds is a ConfigurationError naming its variable."""
    with pytest.raises(ConfigurationError, match=f"FARGATE_RUNTIME_IDEMPOTENCY_{variable.upper()}"):
        load_idempotency_settings(**{variable: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lease_seconds", 0.0),
        ("lease_seconds", -5.0),
        ("retention_seconds", float("inf")),
        ("max_result_bytes", 0),
        ("release_timeout_seconds", float("nan")),
    ],
)
def test_guards_refuse_numbers_out_of_bounds(option: str, value: float) -> None:
    """``Idempotency`` checks its numbers when made, naming the parameter."""
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigurationError, match=option):
        Idempotency(MemoryStore(), prefix="svc", **options)


@pytest.mark.parametrize(
    ("option", "value"),
    [("call_timeout_seconds", float("inf")), ("max_concurrent_calls", -1), ("max_result_bytes", 0)],
)
async def test_redis_store_refuses_numbers_out_of_bounds(option: str, value: float) -> None:
    """``RedisStore`` checks its numbers when made (the client is never used)."""
    client = redis.asyncio.Redis()
    options: dict[str, Any] = {option: value}
    try:
        with pytest.raises(ConfigurationError, match=option):
            RedisStore(client, **options)
    finally:
        await client.aclose()


def test_attempt_owners_are_unique_and_keep_their_base() -> None:
    """Every attempt gets its own owner id, readable as where it ran."""
    owners = {attempt_owner("task-1:42") for _ in range(1000)}
    assert len(owners) == 1000
    assert all(owner.startswith("task-1:42/") for owner in owners)


def test_a_forked_child_draws_a_new_nonce() -> None:
    """Two processes given the same base never make the same owner id (the nonce is redrawn)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first owner id and leave at once
        os.write(write, attempt_owner("same").encode())
        os._exit(0)
    os.close(write)
    child_owner = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent_owner = attempt_owner("same")
    assert child_owner.split("/")[1].split(".")[0] != parent_owner.split("/")[1].split(".")[0]
