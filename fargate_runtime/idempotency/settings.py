"""Idempotency settings, read from ``FARGATE_RUNTIME_IDEMPOTENCY_*`` (and plain ``REDIS_URL``).

The Redis URL is taken from ``FARGATE_RUNTIME_IDEMPOTENCY_REDIS_URL``, else ``REDIS_URL`` (what
most tools and our local stand-ins read), else ``redis://127.0.0.1:6379``. ``rediss://`` turns
on TLS (ElastiCache in-transit encryption); AUTH comes from the URL
(``rediss://user:password@host:6379/0``) or from ``..._REDIS_USERNAME`` / ``..._REDIS_PASSWORD``
(handy when ECS injects the password from Secrets Manager). ``memory://`` selects the in-process
store, for local runs. The URL and password are secrets: never shown in reprs or errors.

``FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres`` keeps the records in PostgreSQL instead (see
``postgres_store``): ``..._POSTGRES_URL``, else ``DATABASE_URL``, names the database, which
should be the one the handlers write to, so their writes and the records commit together.
"""

from __future__ import annotations

import enum
import os
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..errors import ConfigurationError, IdempotencyKeyError
from ._limits import (
    MAX_LEASE_SECONDS,
    MAX_RESULT_BYTES_LIMIT,
    MAX_RETENTION_SECONDS,
    MIN_LEASE_SECONDS,
    MIN_RETENTION_SECONDS,
)
from .keys import MAX_PREFIX_LENGTH, scoped_key
from .serialization import DEFAULT_MAX_RESULT_BYTES

__all__ = [
    "ENV_PREFIX",
    "FailurePolicy",
    "IdempotencySettings",
    "StoreKind",
    "load_idempotency_settings",
]

ENV_PREFIX = "FARGATE_RUNTIME_IDEMPOTENCY_"
# Inputs never repeated in an error message: a Redis URL may carry a password.
_SECRET_MARKERS = ("url", "password")


class FailurePolicy(enum.Enum):
    """What the guard does when the store cannot be reached."""

    # The work is not done; the caller learns it (StoreUnavailableError) and retries later.
    CLOSED = "closed"
    # The work runs unprotected, logged at ERROR: a duplicate may then run twice.
    OPEN = "open"


class StoreKind(enum.Enum):
    """Where the records live."""

    REDIS = "redis"  # the Redis store (``memory://`` as its URL: the in-process store)
    POSTGRES = "postgres"  # PostgreSQL: records can commit in the handler's own transaction


# A PostgreSQL identifier we never need to quote: lower case, at most 63 bytes.
_SCHEMA_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


class IdempotencySettings(BaseSettings):
    """Where idempotency records live, how long they live and what happens when Redis is down."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379")
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    # A CA bundle for ``rediss://`` servers whose certificate no system CA signed.
    redis_tls_ca_file: str | None = None
    # Redis Cluster / ElastiCache Serverless: batches are split by hash slot.
    cluster: bool = False
    # ``prefix:{scope}:key``: a whole scope on one slot, so a batch is one script on a cluster.
    cluster_hash_tags: bool = False
    key_prefix: str = Field(default="fargate-runtime", min_length=1, max_length=MAX_PREFIX_LENGTH)
    # In progress: long enough for a typical handler; the heartbeat renews longer ones. A crashed
    # worker's keys come back after at most this long.
    lease_seconds: float = Field(
        default=30.0, ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS, allow_inf_nan=False
    )
    retention_seconds: float = Field(
        default=24 * 3600.0,
        ge=MIN_RETENTION_SECONDS,
        le=MAX_RETENTION_SECONDS,
        allow_inf_nan=False,
    )
    max_result_bytes: int = Field(default=DEFAULT_MAX_RESULT_BYTES, gt=0, le=MAX_RESULT_BYTES_LIMIT)
    failure_policy: FailurePolicy = FailurePolicy.CLOSED
    # A claim is sub-millisecond on a healthy Redis; a second is an outage, not a slow reply.
    socket_timeout_seconds: float = Field(default=1.0, gt=0.0, le=60.0, allow_inf_nan=False)
    socket_connect_timeout_seconds: float = Field(default=1.0, gt=0.0, le=60.0, allow_inf_nan=False)
    # One store call (a whole batch), waiting for a connection, reconnects and retries included;
    # then it fails closed. Inside the shutdown's release phase (2 s by default) with room.
    call_timeout_seconds: float = Field(default=1.5, gt=0.0, le=120.0, allow_inf_nan=False)
    # Retries (on connection errors and timeouts only) ride over a failover or a stale pooled
    # connection; more would only delay the fail-closed answer the caller has to handle anyway.
    retries: int = Field(default=2, ge=0, le=10)
    # Bound on releasing a claim after the handler failed; the shutdown's release phase is ~2 s.
    release_timeout_seconds: float = Field(default=2.0, gt=0.0, le=60.0, allow_inf_nan=False)
    # The client's connection pool (a blocking one: beyond it, calls wait their turn). The
    # store's scripts take at most half; the rest stays for the readiness probe and your own.
    # Not for a cluster client, which keeps redis-py's pool per node.
    max_connections: int = Field(default=32, ge=2, le=10_000)
    # Start even though Redis' maxmemory-policy may evict records (anything but noeviction),
    # or cannot be read: completed work whose record is evicted runs again.
    accept_eviction_risk: bool = False

    store: StoreKind = StoreKind.REDIS
    # postgresql://user:password@host:5432/dbname (TLS: ?sslmode=require); else DATABASE_URL.
    postgres_url: SecretStr | None = None
    postgres_password: SecretStr | None = None
    # The schema that postgres_schema.sql created (``fargate-runtime postgres-schema``).
    postgres_schema: str = Field(default="fargate_runtime", pattern=_SCHEMA_NAME)
    # The store's own calls (claims, renewals, completions): short, so a few connections do.
    postgres_pool_size: int = Field(default=4, ge=1, le=100)
    # Handlers' transactions, each holding a connection while it runs: match the concurrency.
    postgres_transaction_pool_size: int = Field(default=10, ge=1, le=1000)
    postgres_connect_timeout_seconds: float = Field(
        default=5.0, gt=0.0, le=120.0, allow_inf_nan=False
    )
    # A transaction idle this long is ended by PostgreSQL: a frozen (SIGSTOPped) or stuck worker
    # must not hold its locks for ever.
    postgres_idle_in_transaction_timeout_seconds: float = Field(
        default=60.0, gt=0.0, le=86400.0, allow_inf_nan=False
    )
    # Expired records are deleted by every store in batches of this size, every interval
    # (with jitter); each batch is one short transaction that skips locked rows.
    postgres_cleanup: bool = True
    postgres_cleanup_interval_seconds: float = Field(
        default=60.0, gt=0.0, le=86400.0, allow_inf_nan=False
    )
    postgres_cleanup_batch_size: int = Field(default=1000, ge=1, le=100_000)

    @model_validator(mode="before")
    @classmethod
    def _plain_redis_url(cls, data: Any) -> Any:
        # Our own variable (or an argument) wins; plain REDIS_URL is the fallback.
        if isinstance(data, dict) and data.get("redis_url") is None and "REDIS_URL" in os.environ:
            data = {**data, "redis_url": os.environ["REDIS_URL"]}
        if (
            isinstance(data, dict)
            and data.get("postgres_url") is None
            and os.environ.get("DATABASE_URL")
        ):
            data = {**data, "postgres_url": os.environ["DATABASE_URL"]}
        return data

    @model_validator(mode="after")
    def _postgres_is_complete(self) -> IdempotencySettings:
        # Checked only for the postgres store: DATABASE_URL may name another database (MySQL)
        # of a service whose records live in Redis.
        if self.store is not StoreKind.POSTGRES:
            return self
        if self.postgres_url is None:
            raise ValueError(
                f"the postgres store needs {ENV_PREFIX}POSTGRES_URL (or DATABASE_URL), "
                "e.g. postgresql://app@db.internal:5432/app"
            )
        scheme = self.postgres_url.get_secret_value().partition("://")[0].lower()
        if scheme not in {"postgres", "postgresql"}:
            raise ValueError(
                f"{ENV_PREFIX}POSTGRES_URL (or DATABASE_URL) has the scheme {scheme!r}: "
                "use postgresql://"
            )
        return self

    @field_validator("key_prefix")
    @classmethod
    def _prefix_is_valid(cls, value: str) -> str:
        try:
            scoped_key(value, "scope", "key")
        except IdempotencyKeyError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("redis_url")
    @classmethod
    def _url_scheme_is_known(cls, value: SecretStr) -> SecretStr:
        scheme = value.get_secret_value().partition("://")[0].lower()
        if scheme not in {"redis", "rediss", "unix", "memory"}:
            # Never echo the URL: it may carry a password.
            raise ValueError(
                f"unsupported scheme {scheme!r}: use redis://, rediss:// (TLS), unix:// or memory://"
            )
        return value

    @property
    def in_memory(self) -> bool:
        """True for ``memory://``: the in-process store (one process, nothing shared)."""
        return self.redis_url.get_secret_value().lower().startswith("memory://")


def load_idempotency_settings(**overrides: Any) -> IdempotencySettings:
    """Build the settings from the environment and ``overrides``; bad values raise
    ConfigurationError naming each variable, without ever echoing the URL or the password.
    """
    try:
        return IdempotencySettings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]).upper()
            if not field:  # a rule across fields: its input is every value, secrets too
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            secret = any(marker in field.lower() for marker in _SECRET_MARKERS)
            shown = "" if secret else f" (got {error.get('input')!r})"
            problems.append(f"{ENV_PREFIX}{field}: {error['msg']}{shown}")
        # Not chained: pydantic's own message repeats every input, secrets included.
        raise ConfigurationError(f"invalid idempotency settings: {'; '.join(problems)}") from None
