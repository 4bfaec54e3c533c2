"""Releasing and completing claims without the event loop: the last resort of a process that
must end now.

When the watchdog ends a process whose loop is blocked (or stopped), ``redis.asyncio`` cannot
run; claims left behind would block their keys for the rest of their lease, and work that
finished but whose completion never went out would run again. This builds a synchronous
redis-py client to the same server (host/port or Unix socket, TLS, credentials taken from the
async client's pool) and runs the same compare-and-set scripts (release, complete) once, with
short timeouts. Sentinel-managed and Cluster clients are not rebuilt here: their claims are
left to their lease (logged by the caller).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from ._scripts import COMPLETE, RELEASE, flags

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis

    from ._store import Completion, Held

__all__ = ["complete_blocking", "release_blocking"]

logger = logging.getLogger("fargate_runtime.idempotency")

# Connection settings a synchronous client understands and the async pool may carry.
_PASSED_ON = (
    "host",
    "port",
    "db",
    "username",
    "password",
    "credential_provider",
    "path",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
)


def _sync_client(client: Redis, timeout_seconds: float) -> redis.Redis | None:
    pool = client.connection_pool
    kind = pool.connection_class
    if kind.__module__ != "redis.asyncio.connection":
        return None  # Sentinel (its own connection class) or something custom
    kwargs: dict[str, Any] = {
        name: pool.connection_kwargs[name] for name in _PASSED_ON if name in pool.connection_kwargs
    }
    if issubclass(kind, UnixDomainSocketConnection):
        kwargs["unix_socket_path"] = kwargs.pop("path")
    elif issubclass(kind, SSLConnection):
        kwargs["ssl"] = True
    return redis.Redis(
        **kwargs, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )


def release_blocking(client: Redis, held: Sequence[Held], *, timeout_seconds: float) -> int:
    """Release the claims still ours, synchronously; return how many were released."""
    if not held:
        return 0
    sync = _sync_client(client, timeout_seconds)
    if sync is None:
        logger.warning("claims left to their lease: no blocking client", extra={"count": len(held)})
        return 0
    keys = [claim.key for claim in held]
    tokens = " ".join(str(claim.token) for claim in held)
    try:
        reply = sync.eval(RELEASE.body, len(keys), *keys, tokens)
    except (redis.RedisError, OSError) as exc:
        logger.warning("claims left to their lease", extra={"count": len(held), "error": repr(exc)})
        return 0
    finally:
        sync.close()
    return sum(flags(reply))


def complete_blocking(
    client: Redis,
    completions: Sequence[Completion],
    *,
    retention_ms: int,
    timeout_seconds: float,
) -> list[bool] | None:
    """Complete the claims still ours, synchronously: each one's answer, None when unreachable."""
    if not completions:
        return []
    sync = _sync_client(client, timeout_seconds)
    if sync is None:
        return None
    keys = [completion.key for completion in completions]
    tokens = " ".join(str(completion.token) for completion in completions)
    results = [completion.result for completion in completions]
    try:
        reply = sync.eval(COMPLETE.body, len(keys), *keys, retention_ms, tokens, *results)
    except (redis.RedisError, OSError) as exc:
        logger.warning("completions not recorded", extra={"count": len(keys), "error": repr(exc)})
        return None
    finally:
        sync.close()
    return flags(reply)
