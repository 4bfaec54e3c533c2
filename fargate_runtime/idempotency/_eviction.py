"""The eviction-policy check a Redis store makes before its first claim.

Idempotency records carry TTLs (the lease, then the retention), so every ``maxmemory-policy``
but ``noeviction`` lets Redis delete them under memory pressure: the ``volatile-*`` policies
choose among exactly the keys with a TTL, ``allkeys-*`` among all keys. A completed record that
is evicted is forgotten work, and its next duplicate runs again, silently. ElastiCache's default
parameter groups use ``volatile-lru``. Under ``noeviction`` a full Redis refuses writes instead:
claims fail closed (nothing runs twice) and the memory alarm tells someone.

The policy comes from ``CONFIG GET maxmemory-policy``, or, where CONFIG is renamed or refused
(ElastiCache, an ACL user without ``@admin``), from ``INFO memory`` (``maxmemory_policy``). On a
cluster every primary is asked. Anything but ``noeviction``, or a policy that cannot be read, is
refused unless ``FARGATE_RUNTIME_IDEMPOTENCY_ACCEPT_EVICTION_RISK`` is set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ..errors import ConfigurationError, StoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from redis.asyncio import Redis

__all__ = ["ACCEPT_SETTING", "SAFE_POLICY", "EvictionCheck", "read_policies", "refusal"]

logger = logging.getLogger("fargate_runtime.idempotency")

SAFE_POLICY = "noeviction"
ACCEPT_SETTING = "FARGATE_RUNTIME_IDEMPOTENCY_ACCEPT_EVICTION_RISK"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _server_name(client: Redis) -> str:
    options = client.connection_pool.connection_kwargs
    if "path" in options:
        return f"unix:{options['path']}"
    if "host" in options:
        return f"{options['host']}:{options.get('port', 6379)}"
    return "the Redis server"  # e.g. a Sentinel-managed pool: the address changes


def _from_config(reply: Any) -> str | None:
    # A dict (RESP2 and RESP3 alike); keys and values are bytes unless the client decodes.
    if isinstance(reply, dict):
        for name, value in reply.items():
            if _text(name) == "maxmemory-policy":
                return _text(value)
    return None


def _from_info(reply: Any) -> str | None:
    if not isinstance(reply, dict):
        return None
    if "maxmemory_policy" in reply:
        return _text(reply["maxmemory_policy"])
    # A cluster answer for one node may come keyed by the node's name.
    for section in reply.values():
        if isinstance(section, dict) and "maxmemory_policy" in section:
            return _text(section["maxmemory_policy"])
    return None


async def _policy(client: Redis | RedisCluster, **target: Any) -> tuple[str | None, list[str]]:
    """One server's policy (None when unreadable) and why each way of reading it failed.

    Connection errors propagate: the server is unreachable, not refusing.
    """
    problems = []
    try:
        policy = _from_config(await client.config_get("maxmemory-policy", **target))
    except ResponseError as exc:  # CONFIG renamed away, or not allowed to this ACL user
        problems.append(f"CONFIG GET refused: {exc}")
    else:
        if policy is not None:
            return policy, problems
        problems.append("CONFIG GET gave no maxmemory-policy")
    try:
        policy = _from_info(await client.info("memory", **target))
    except ResponseError as exc:
        problems.append(f"INFO memory refused: {exc}")
    else:
        if policy is not None:
            return policy, problems
        problems.append("INFO memory has no maxmemory_policy")
    return None, problems


async def read_policies(client: Redis | RedisCluster) -> dict[str, tuple[str | None, list[str]]]:
    """``maxmemory-policy`` of every server that holds records, by server name."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        return {
            node.name: await _policy(client, target_nodes=node) for node in client.get_primaries()
        }
    return {_server_name(client): await _policy(client)}


def refusal(policies: Mapping[str, tuple[str | None, Sequence[str]]]) -> str | None:
    """One line naming the first unsafe (or unreadable) policy and the fix; None when safe."""
    for server, (policy, problems) in policies.items():
        if policy == SAFE_POLICY:
            continue
        if policy is None:
            return (
                f"cannot read maxmemory-policy of Redis at {server} ({'; '.join(problems)}): "
                f"make sure it is {SAFE_POLICY} and set {ACCEPT_SETTING}=true to start without "
                "the check"
            )
        return (
            f"Redis at {server} has maxmemory-policy {policy}: it may evict idempotency records "
            "(they carry TTLs) and completed work would run again; set maxmemory-policy "
            f"{SAFE_POLICY} (on ElastiCache, in the cluster's parameter group), or set "
            f"{ACCEPT_SETTING}=true to accept the risk"
        )
    return None


def _unreadable(problem: BaseException, timeout_seconds: float) -> str:
    if isinstance(problem, TimeoutError):
        return f"Redis did not answer within {timeout_seconds:g} s (reading maxmemory-policy)"
    return f"cannot read Redis' maxmemory-policy: {problem}"


class EvictionCheck:
    """One store's check: made at open, or before the first claim when Redis was down at open.

    ``passed`` turns True once the policy is safe (or its risk accepted) and stays so.
    """

    def __init__(
        self, client: Redis | RedisCluster, *, accept_risk: bool, timeout_seconds: float
    ) -> None:
        self._client = client
        self._accept_risk = accept_risk
        self._timeout = timeout_seconds
        self._lock = asyncio.Lock()
        self._refusal_logged = False
        self.passed = False

    async def at_open(self) -> None:
        """ConfigurationError for an unsafe policy; a warning (and a later check) if unreachable."""
        if self.passed:
            return
        try:
            problem = await self._refusal()
        except StoreUnavailableError as exc:
            logger.warning(
                "cannot read Redis' maxmemory-policy at start; checking before the first claim",
                extra={"error": str(exc)},
            )
            return
        if problem is not None:
            raise ConfigurationError(problem)
        self.passed = True

    async def before_claim(self) -> None:
        """StoreUnavailableError while Redis is unreachable or its policy unsafe (fail closed)."""
        async with self._lock:
            if self.passed:
                return
            problem = await self._refusal()
            if problem is not None:
                if not self._refusal_logged:  # once: every refused claim says it again anyway
                    self._refusal_logged = True
                    logger.critical(problem)
                raise StoreUnavailableError(problem)
            self.passed = True

    async def _refusal(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                policies = await read_policies(self._client)
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(_unreadable(exc, self._timeout)) from exc
        problem = refusal(policies)
        if problem is not None and self._accept_risk:
            logger.warning("eviction risk accepted: %s", problem)
            return None
        return problem
