"""Redis' eviction policy, checked when the store opens: only ``noeviction`` keeps every record.

Each test configures a private ``redis-server`` (CONFIG SET and ACL users on a server of its
own, never the shared one) the way users' servers are set up: ElastiCache's default
``volatile-lru``, ``allkeys-lru``, CONFIG refused as on ElastiCache, nothing readable at all.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

import pytest
import redis
from pydantic import SecretStr

from fargate_runtime.errors import ConfigurationError
from fargate_runtime.idempotency import (
    IdempotencySettings,
    RedisStore,
    StoreUnavailableError,
    open_store,
    scoped_key,
)
from fargate_runtime.idempotency._eviction import refusal
from tests.processes import Child, runtime_argv

if TYPE_CHECKING:
    from fargate_runtime.local import RedisServer

pytestmark = pytest.mark.integration

ACCEPT = "FARGATE_RUNTIME_IDEMPOTENCY_ACCEPT_EVICTION_RISK"


def configure(server: RedisServer, *, policy: str, user: str | None = None) -> str:
    """Set the private server's policy (and an ACL user with ``user`` rules); return its URL."""
    admin = redis.Redis(port=server.port)
    try:
        admin.config_set("maxmemory-policy", policy)
        if user is None:
            return server.url
        admin.acl_setuser(
            "app", enabled=True, passwords=["+app-secret"], keys=["*"], commands=user.split()
        )
        return f"redis://app:app-secret@127.0.0.1:{server.port}"
    finally:
        admin.close()


def settings(url: str, **overrides: object) -> IdempotencySettings:
    """Settings for the private server, failing fast."""
    return IdempotencySettings(redis_url=SecretStr(url), retries=0, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl", "allkeys-lru", "allkeys-lfu"])
async def test_an_evicting_policy_refuses_to_open(private_redis: RedisServer, policy: str) -> None:
    """Any policy but noeviction is a ConfigurationError naming the policy and both ways out."""
    url = configure(private_redis, policy=policy)
    with pytest.raises(ConfigurationError) as raised:
        async with open_store(settings(url)):
            pytest.fail("the store opened on a Redis that may evict its records")
    message = str(raised.value)
    assert f"maxmemory-policy {policy}" in message
    assert "noeviction" in message
    assert ACCEPT in message
    assert "\n" not in message


async def test_noeviction_opens(private_redis: RedisServer) -> None:
    """The safe policy opens and claims."""
    url = configure(private_redis, policy="noeviction")
    async with open_store(settings(url)) as store:
        result = await store.claim(scoped_key("ev", "s", "k"), "fp", owner="o", lease_seconds=5)
        assert result.token is not None


async def test_the_policy_is_read_from_info_where_config_is_refused(
    private_redis: RedisServer,
) -> None:
    """An ACL user without CONFIG (as on ElastiCache) is judged by ``INFO memory``."""
    url = configure(private_redis, policy="volatile-lru", user="+@all -config")
    with pytest.raises(ConfigurationError, match="maxmemory-policy volatile-lru"):
        async with open_store(settings(url)):
            pass
    configure(private_redis, policy="noeviction")
    async with open_store(settings(url)):
        pass


async def test_an_unreadable_policy_is_refused_unless_accepted(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With CONFIG and INFO both refused the store will not guess: refused, or accepted loudly."""
    url = configure(private_redis, policy="noeviction", user="+@all -config -info")
    with pytest.raises(ConfigurationError, match="cannot read maxmemory-policy"):
        async with open_store(settings(url)):
            pass
    with caplog.at_level(logging.WARNING, logger="fargate_runtime.idempotency"):
        async with open_store(settings(url, accept_eviction_risk=True)) as store:
            result = await store.claim(scoped_key("ev", "s", "k"), "fp", owner="o", lease_seconds=5)
            assert result.token is not None
    assert any("eviction risk accepted" in record.getMessage() for record in caplog.records)


async def test_accepting_the_risk_opens_on_an_evicting_policy(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``accept_eviction_risk`` opens on volatile-lru, with a warning naming the policy."""
    url = configure(private_redis, policy="volatile-lru")
    with caplog.at_level(logging.WARNING, logger="fargate_runtime.idempotency"):
        async with open_store(settings(url, accept_eviction_risk=True)):
            pass
    warnings = [record.getMessage() for record in caplog.records]
    assert any("volatile-lru" in message for message in warnings)


async def test_redis_down_at_open_is_checked_before_the_first_claim(
    private_redis: RedisServer,
) -> None:
    """Unreachable at open: the store opens, then refuses claims (fail closed) until the check
    passes, and refuses them while the policy is unsafe."""
    url = private_redis.url
    private_redis.stop()
    async with open_store(settings(url, call_timeout_seconds=0.5)) as store:
        key = scoped_key("ev", "s", "k")
        with pytest.raises(StoreUnavailableError, match=r"did not answer|cannot read"):
            await store.claim(key, "fp", owner="o", lease_seconds=5)
        private_redis.start()
        configure(private_redis, policy="volatile-lru")
        for _ in range(2):  # refused every time, not just once
            with pytest.raises(StoreUnavailableError, match="maxmemory-policy volatile-lru"):
                await store.claim(key, "fp", owner="o", lease_seconds=5)
        assert isinstance(store, RedisStore)
        with pytest.raises(StoreUnavailableError, match="volatile-lru"):
            await store.ping()  # readiness says so too
        configure(private_redis, policy="noeviction")
        result = await store.claim(key, "fp", owner="o", lease_seconds=5)
        assert result.token is not None


def test_refusal_names_the_first_unsafe_server() -> None:
    """Of several servers (a cluster's primaries), the unsafe one is named; all safe is None."""
    safe: dict[str, tuple[str | None, list[str]]] = {
        "a:1": ("noeviction", []),
        "b:2": ("noeviction", []),
    }
    assert refusal(safe) is None
    mixed = {**safe, "c:3": ("volatile-lru", [])}
    assert "Redis at c:3 has maxmemory-policy volatile-lru" in (refusal(mixed) or "")


@pytest.mark.process
def test_the_supervisor_exits_78_with_one_line_naming_the_policy(
    private_redis: RedisServer,
) -> None:
    """A worker started against volatile-lru exits 78 with one CRITICAL line and no traceback;
    with the risk accepted it starts and stops cleanly."""
    url = configure(private_redis, policy="volatile-lru")
    env = {"REDIS_URL": url}
    with Child(runtime_argv("tests.idempotency.apps:store_app"), env=env) as child:
        code = child.wait(timeout=30)
        assert code == 78, child.output()
        critical = [line for line in child.lines if line.get("level") == "CRITICAL"]
        assert len(critical) == 1, child.output()
        assert "maxmemory-policy volatile-lru" in critical[0]["message"]
        assert "Traceback" not in child.output()
        assert "store ready" not in child.messages()
    with Child(
        runtime_argv("tests.idempotency.apps:store_app"), env={**env, ACCEPT: "true"}
    ) as child:
        child.wait_for_message("store ready")
        child.signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0, child.output()
