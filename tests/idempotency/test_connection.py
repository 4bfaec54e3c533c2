"""Connecting from settings to a Redis that requires AUTH (password, ACL user)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import redis
from pydantic import SecretStr

from fargate_runtime.idempotency import (
    ClaimStatus,
    IdempotencySettings,
    StoreUnavailableError,
    open_store,
    scoped_key,
)

if TYPE_CHECKING:
    from fargate_runtime.local import RedisServer

pytestmark = pytest.mark.integration


def require_auth(server: RedisServer) -> None:
    """Give the private server a default password and an ACL user ``worker``."""
    admin = redis.Redis(port=server.port)
    try:
        admin.acl_setuser(
            "worker", enabled=True, passwords=["+worker-secret"], keys=["*"], commands=["+@all"]
        )
        admin.config_set("requirepass", "default-secret")
    finally:
        admin.close()


async def claims(settings: IdempotencySettings) -> bool:
    """True when a store built from ``settings`` can claim a key."""
    async with open_store(settings) as store:
        key = scoped_key("auth", "s", uuid.uuid4().hex)
        result = await store.claim(key, "fp", owner="o", lease_seconds=5)
        return result.status is ClaimStatus.ACQUIRED


async def test_password_and_acl_user_from_the_url(private_redis: RedisServer) -> None:
    """``redis://:password@`` and ``redis://user:password@`` authenticate."""
    require_auth(private_redis)
    port = private_redis.port
    assert await claims(
        IdempotencySettings(redis_url=SecretStr(f"redis://:default-secret@127.0.0.1:{port}"))
    )
    assert await claims(
        IdempotencySettings(redis_url=SecretStr(f"redis://worker:worker-secret@127.0.0.1:{port}"))
    )


async def test_credentials_from_separate_settings(private_redis: RedisServer) -> None:
    """A password injected on its own (ECS secret) works with a URL that has none."""
    require_auth(private_redis)
    settings = IdempotencySettings(
        redis_url=SecretStr(private_redis.url),
        redis_username="worker",
        redis_password=SecretStr("worker-secret"),
    )
    assert await claims(settings)


async def test_wrong_password_fails_closed_without_leaking_it(private_redis: RedisServer) -> None:
    """Bad credentials are a StoreUnavailableError whose message does not repeat the secret."""
    require_auth(private_redis)
    settings = IdempotencySettings(
        redis_url=SecretStr(f"redis://:not-the-secret@127.0.0.1:{private_redis.port}"),
        retries=0,
    )
    with pytest.raises(StoreUnavailableError) as raised:
        await claims(settings)
    assert "not-the-secret" not in str(raised.value)
