"""Building the Redis client and the store from settings: URL, TLS, AUTH, timeouts, retries.

redis-py is imported when a Redis client is built, not with this module: a worker without
idempotency keys (or on the in-memory store) never loads it, nor what it loads in turn
(redis-py 7+ imports the OpenTelemetry SDK's metrics module whenever that is installed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .memory_store import MemoryStore
from .postgres_store import PostgresStore
from .settings import StoreKind

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from .redis_store import RedisStore
    from .settings import IdempotencySettings

__all__ = ["open_store", "redis_client"]

# First retry after ~50 ms, never more than 0.5 s apart: long enough for a pooled connection
# to be replaced or a failover to be announced, short enough to fail closed within a second or
# two when Redis is really gone.
_BACKOFF_BASE_SECONDS = 0.05
_BACKOFF_CAP_SECONDS = 0.5


def redis_client(
    settings: IdempotencySettings, *, socket_timeout: bool = True
) -> Redis | RedisCluster:
    """A redis-py asyncio client for ``settings.redis_url`` (a cluster client if configured).

    A standalone client gets a blocking pool of ``max_connections`` (beyond it, a command waits
    up to ``call_timeout_seconds`` for a connection instead of failing at once); a cluster
    client keeps redis-py's own pool per node (a batch fans out to several nodes at once, which
    one bound could not describe). ``socket_timeout=False`` leaves reads and writes
    unbounded by redis-py, for a caller that bounds every call itself (the store does, with
    ``call_timeout_seconds``): on Python 3.11 redis-py's write timeout wraps every command in
    an extra task, about 10 % of a batch.
    """
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    url = settings.redis_url.get_secret_value()
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_seconds if socket_timeout else None,
        "socket_connect_timeout": settings.socket_connect_timeout_seconds,
        # Only connection errors and timeouts are retried: every script is safe to repeat
        # (a repeated claim finds its own record in progress, a repeated completion answers
        # True again), but nothing else would succeed on a second try.
        "retry": Retry(
            ExponentialWithJitterBackoff(base=_BACKOFF_BASE_SECONDS, cap=_BACKOFF_CAP_SECONDS),
            retries=settings.retries,
        ),
        "decode_responses": False,
    }
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls_ca_file is not None and url.lower().startswith("rediss://"):
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.cluster:
        return RedisCluster.from_url(url, **options)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        timeout=settings.call_timeout_seconds,
        **options,
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the pool


def open_store(settings: IdempotencySettings) -> RedisStore | MemoryStore | PostgresStore:
    """The store ``settings`` describe: enter it (``async with``, or ``Runtime.enter``) to check
    Redis' eviction policy at start, or to connect to PostgreSQL and check its schema; close it
    with ``aclose`` (or by leaving the block)."""
    if settings.store is StoreKind.POSTGRES:
        return PostgresStore.from_settings(settings)
    if settings.in_memory:
        return MemoryStore(max_result_bytes=settings.max_result_bytes)
    from .redis_store import RedisStore

    return RedisStore(
        redis_client(settings, socket_timeout=False),
        max_result_bytes=settings.max_result_bytes,
        call_timeout_seconds=settings.call_timeout_seconds,
        accept_eviction_risk=settings.accept_eviction_risk,
        owns_client=True,
    )
