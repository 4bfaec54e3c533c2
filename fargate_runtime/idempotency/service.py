"""The guards of one service: a store, a key prefix, the lease, retention and failure policy.

``Idempotency`` makes guards (``idem.guard(...)``) and the ``@idem.idempotent`` decorator; the
guarded block's mechanics (claim, complete, release, heartbeat) are ``guard.Guard``'s.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from ..ecs import owner_id
from . import _limits
from .claim import GuardStats, bind_claim
from .guard import Guard
from .keys import fingerprint as fingerprint_of
from .keys import scoped_key
from .serialization import DEFAULT_MAX_RESULT_BYTES, JsonSerializer, TypedSerializer
from .settings import FailurePolicy

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Awaitable, Callable

    from ._store import IdempotencyStore
    from .postgres_transaction import Transaction
    from .serialization import Serializer
    from .settings import IdempotencySettings

__all__ = ["Idempotency"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("fargate_runtime.idempotency")


class Idempotency:
    """Guards for one service: a store, a key prefix and the lease, retention and policy.

    Example::

        idem = Idempotency(store, prefix="payments-worker")

        async with idem.guard("charges", event["id"], payload=event["body"]) as claim:
            if claim.replayed:
                return claim.result
            receipt = await psp.charge(..., idempotency_key=claim.key, fence=claim.token)
            claim.set_result(receipt)
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        prefix: str,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        retention_seconds: float = 24 * 3600.0,
        serializer: Serializer | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        failure_policy: FailurePolicy = FailurePolicy.CLOSED,
        heartbeat: bool = True,
        release_timeout_seconds: float = 2.0,
        hash_tags: bool = False,
    ) -> None:
        scoped_key(prefix, "scope", "key")  # validate the prefix now, not on the first message
        self.store = store
        self.prefix = prefix
        # Where attempts run (task and pid); each attempt's owner id adds its own suffix.
        self.owner = owner or owner_id()
        self.lease_seconds = _limits.lease(lease_seconds)
        self.retention_seconds = _limits.retention(retention_seconds)
        self.serializer: Serializer = serializer or JsonSerializer()
        self.max_result_bytes = _limits.count(
            "max_result_bytes", max_result_bytes, maximum=_limits.MAX_RESULT_BYTES_LIMIT
        )
        self.failure_policy = failure_policy
        self.heartbeat = heartbeat
        self.release_timeout_seconds = _limits.seconds(
            "release_timeout_seconds", release_timeout_seconds, minimum=0.001, maximum=60.0
        )
        self.hash_tags = hash_tags
        self.stats = GuardStats()
        if failure_policy is FailurePolicy.OPEN:
            logger.warning(
                "idempotency failure policy is OPEN: when the store is down, work runs "
                "unprotected and duplicates may run twice",
                extra={"idempotency_prefix": prefix},
            )

    @classmethod
    def from_settings(
        cls, store: IdempotencyStore, settings: IdempotencySettings, **overrides: Any
    ) -> Idempotency:
        """Guards configured by ``settings`` (``overrides`` win, e.g. ``serializer=``)."""
        options: dict[str, Any] = {
            "prefix": settings.key_prefix,
            "lease_seconds": settings.lease_seconds,
            "retention_seconds": settings.retention_seconds,
            "max_result_bytes": settings.max_result_bytes,
            "failure_policy": settings.failure_policy,
            "release_timeout_seconds": settings.release_timeout_seconds,
            "hash_tags": settings.cluster_hash_tags,
        }
        options.update(overrides)
        return cls(store, **options)

    def key(self, scope: str, key: str) -> str:
        """The stored key for ``key`` in ``scope`` (``prefix:scope:key``)."""
        return scoped_key(self.prefix, scope, key, hash_tag=self.hash_tags)

    def guard(
        self,
        scope: str,
        key: str,
        *,
        payload: object = None,
        fingerprint: str | None = None,
        serializer: Serializer | None = None,
    ) -> Guard:
        """Guard a block by ``key`` within ``scope``.

        ``payload`` (or a ready ``fingerprint``) identifies the request: the same key with a
        different payload raises PayloadMismatchError. Raises AlreadyInProgressError when another
        attempt holds the key and StoreUnavailableError (fail-closed) when the store is down.
        ``serializer`` replaces this ``Idempotency``'s for this block's result.
        """
        stored = self.key(scope, key)
        return Guard(self, stored, fingerprint or fingerprint_of(payload), serializer)

    def transaction(
        self,
        scope: str,
        key: str,
        *,
        payload: object = None,
        fingerprint: str | None = None,
        isolation: str | None = None,
        serializer: Serializer | None = None,
    ) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """Guard a block whose PostgreSQL writes commit together with its completion.

        Needs the PostgreSQL store; see ``postgres_guard`` (replays, leases, failures).
        ``serializer`` replaces this ``Idempotency``'s for this block's result.
        """
        from .postgres_guard import guarded_transaction

        return guarded_transaction(
            self,
            scope,
            key,
            payload=payload,
            fingerprint=fingerprint,
            isolation=isolation,
            serializer=serializer,
        )

    def idempotent(
        self,
        scope: str,
        *,
        key: Callable[P, str],
        payload: Callable[P, object] | None = None,
        result_type: object = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Decorate an async function so it runs once per key and replays its result after.

        ``key`` and ``payload`` receive the function's arguments; without ``payload`` all the
        arguments are fingerprinted. Inside, ``current_claim()`` gives the key and token. A
        replayed result comes back through the serializer: built-in values as they were (see
        ``JsonSerializer``); for a dataclass, pydantic model or enum, name its type with
        ``result_type`` (``TypedSerializer``). A result that cannot be stored still runs once:
        duplicates then raise ResultUnavailableError.
        """
        serializer: Serializer | None = None
        if result_type is not None:
            serializer = TypedSerializer(result_type)

        def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(function)
            async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
                if payload is not None:
                    selected = payload(*args, **kwargs)
                else:
                    selected = {"args": args, "kwargs": kwargs}
                stored_key = key(*args, **kwargs)
                async with self.guard(
                    scope, stored_key, payload=selected, serializer=serializer
                ) as claim:
                    if claim.replayed:
                        return cast("R", claim.result)
                    with bind_claim(claim):
                        value = await function(*args, **kwargs)
                    claim.set_result(value)
                    return value

            return guarded

        return decorate
