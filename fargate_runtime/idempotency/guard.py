"""The guard user code reads naturally: ``async with idem.guard(...)`` and ``@idem.idempotent``.

A guarded block runs once per key: it claims the key, runs, and completes the record with its
result; a completed duplicate replays that result instead of running. Whatever the block raises
(``BaseException``: errors, cancellation, ``SystemExit``) releases the claim so the work can run
again, and the block's own exception is what propagates. Long blocks keep their lease alive:
a renewal every third of the lease restarts it, so two renewals can fail before it ends::

    claim       renew       renew       renew             complete (or release on error)
    |--lease/3--|--lease/3--|--lease/3--|---- block ... ---|
    |<------- lease ------->|
                |<------- lease ------->|
                            |<------- lease ------->|      ...and so on while the block runs

Cleanup writes (a completion, a release) are shielded: a cancellation arriving meanwhile does
not cut them off halfway; the write finishes in the background and the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from ..ecs import owner_id
from ..errors import (
    AlreadyInProgressError,
    LeaseLostError,
    PayloadMismatchError,
    StoreUnavailableError,
)
from ._background import spawn
from ._store import ClaimRequest, ClaimStatus, Completion, Held
from .claim import Claim, GuardStats, bind_claim
from .keys import fingerprint as fingerprint_of
from .keys import scoped_key
from .serialization import DEFAULT_MAX_RESULT_BYTES, JsonSerializer, encode_result
from .settings import FailurePolicy

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from ._store import ClaimResult, IdempotencyStore
    from .postgres_transaction import Transaction
    from .serialization import Serializer
    from .settings import IdempotencySettings

__all__ = ["Guard", "Idempotency"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("fargate_runtime.idempotency")


class Guard:
    """One guarded block: ``async with idem.guard(scope, key, payload=...) as claim``."""

    __slots__ = ("_claim", "_closed", "_fingerprint", "_idem", "_key", "_timer")

    def __init__(self, idem: Idempotency, key: str, fingerprint: str) -> None:
        self._idem = idem
        self._key = key
        self._fingerprint = fingerprint
        self._claim: Claim | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def __aenter__(self) -> Claim:
        idem = self._idem
        task = spawn(
            idem.store.claim_many(
                [ClaimRequest(self._key, self._fingerprint)],
                owner=idem.owner,
                lease_seconds=idem.lease_seconds,
            )
        )
        try:
            (result,) = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The claim may still succeed on the server: give it back when it does.
            task.add_done_callback(idem._release_if_acquired)
            raise
        except StoreUnavailableError:
            idem.stats.store_errors += 1
            if idem.failure_policy is FailurePolicy.CLOSED:
                raise
            idem.stats.unprotected += 1
            logger.exception(
                "idempotency store unavailable: running WITHOUT idempotency (fail-open policy); "
                "a duplicate of this work may run twice",
                extra={"idempotency_key": self._key, "failure_policy": "open"},
            )
            self._claim = Claim(self._key, 0, protected=False)
            return self._claim
        self._claim = self._classify(result)
        return self._claim

    def _classify(self, result: ClaimResult) -> Claim:
        idem = self._idem
        if result.status is ClaimStatus.ACQUIRED and result.token is not None:
            idem.stats.acquired += 1
            self._start_heartbeat()
            return Claim(self._key, result.token)
        if result.status is ClaimStatus.COMPLETED and result.token is not None:
            idem.stats.replayed += 1
            stored = idem.serializer.loads(result.result or b"null")
            return Claim(self._key, result.token, replayed=True, result=stored)
        if result.status is ClaimStatus.MISMATCH:
            idem.stats.mismatched += 1
            raise PayloadMismatchError(self._key)
        idem.stats.in_progress += 1
        raise AlreadyInProgressError(self._key)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        claim = self._claim
        if claim is None or claim.replayed or not claim.protected:
            return
        if exc is None:
            await self._complete(claim)
        else:
            await self._release(claim, exc)

    async def _complete(self, claim: Claim) -> None:
        idem = self._idem
        try:
            data = encode_result(
                idem.serializer, claim.result, max_bytes=idem.max_result_bytes, key=claim.key
            )
        except BaseException as exc:
            await self._release(claim, exc)
            raise
        task = spawn(
            idem.store.complete_many(
                [Completion(claim.key, claim.token, data)],
                retention_seconds=idem.retention_seconds,
            )
        )
        try:
            (done,) = await asyncio.shield(task)
        except StoreUnavailableError:
            idem.stats.store_errors += 1
            if idem.failure_policy is FailurePolicy.CLOSED:
                # The work ran but is not recorded: the caller must not report it done.
                raise
            logger.exception(
                "idempotency store unavailable: work done but NOT recorded (fail-open policy); "
                "a duplicate may run it again",
                extra={"idempotency_key": claim.key, "fencing_token": claim.token},
            )
            return
        if not done:
            idem.stats.lease_lost += 1
            logger.warning(
                "idempotency lease lost before completion; the result was not stored",
                extra={"idempotency_key": claim.key, "fencing_token": claim.token},
            )
            raise LeaseLostError(claim.key, claim.token)
        idem.stats.completed += 1

    async def _release(self, claim: Claim, error: BaseException) -> None:
        """Release after ``error``; a failure here is logged and noted, never raised over it."""
        idem = self._idem
        task = spawn(idem.store.release_many([Held(claim.key, claim.token)]))
        problem: BaseException | None = None
        try:
            (released,) = await asyncio.wait_for(asyncio.shield(task), idem.release_timeout_seconds)
        except (StoreUnavailableError, TimeoutError) as exc:
            problem = exc
        else:
            if released:
                idem.stats.released += 1
            return
        idem.stats.store_errors += 1
        note = (
            f"idempotency claim {claim.key!r} (token {claim.token}) could not be released "
            f"({problem!r}); it becomes free when its lease ends"
        )
        error.add_note(note)
        logger.warning(note, extra={"idempotency_key": claim.key})

    def _start_heartbeat(self) -> None:
        if self._idem.heartbeat:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._idem.lease_seconds / 3, self._beat)

    def _beat(self) -> None:
        self._timer = None
        if not self._closed:
            spawn(self._renew())

    async def _renew(self) -> None:
        claim, idem = self._claim, self._idem
        if claim is None:
            return
        try:
            (renewed,) = await idem.store.renew_many(
                [Held(claim.key, claim.token)], lease_seconds=idem.lease_seconds
            )
        except StoreUnavailableError as exc:
            logger.warning(
                "could not renew an idempotency lease; trying again",
                extra={"idempotency_key": claim.key, "error": repr(exc)},
            )
            renewed = True  # unknown: the next beat tells
        if self._closed:
            return
        if not renewed:
            claim.lease_lost = True
            logger.warning(
                "idempotency lease lost while the work was running",
                extra={"idempotency_key": claim.key, "fencing_token": claim.token},
            )
            return
        self._start_heartbeat()


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
        self.owner = owner or owner_id()
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self.serializer: Serializer = serializer or JsonSerializer()
        self.max_result_bytes = max_result_bytes
        self.failure_policy = failure_policy
        self.heartbeat = heartbeat
        self.release_timeout_seconds = release_timeout_seconds
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
        self, scope: str, key: str, *, payload: object = None, fingerprint: str | None = None
    ) -> Guard:
        """Guard a block by ``key`` within ``scope``.

        ``payload`` (or a ready ``fingerprint``) identifies the request: the same key with a
        different payload raises PayloadMismatchError. Raises AlreadyInProgressError when another
        owner holds the key and StoreUnavailableError (fail-closed) when the store is down.
        """
        stored = self.key(scope, key)
        return Guard(self, stored, fingerprint or fingerprint_of(payload))

    def transaction(
        self,
        scope: str,
        key: str,
        *,
        payload: object = None,
        fingerprint: str | None = None,
        isolation: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """Guard a block whose PostgreSQL writes commit together with its completion.

        Needs the PostgreSQL store; see ``postgres_guard`` (replays, leases, failures).
        """
        from .postgres_guard import guarded_transaction

        return guarded_transaction(
            self, scope, key, payload=payload, fingerprint=fingerprint, isolation=isolation
        )

    def idempotent(
        self,
        scope: str,
        *,
        key: Callable[P, str],
        payload: Callable[P, object] | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Decorate an async function so it runs once per key and replays its result after.

        ``key`` and ``payload`` receive the function's arguments; without ``payload`` all the
        arguments are fingerprinted. Inside, ``current_claim()`` gives the key and token. A
        replayed result comes back through the serializer (JSON: dicts, lists, scalars).
        """

        def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            @functools.wraps(function)
            async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
                if payload is not None:
                    selected = payload(*args, **kwargs)
                else:
                    selected = {"args": args, "kwargs": kwargs}
                async with self.guard(scope, key(*args, **kwargs), payload=selected) as claim:
                    if claim.replayed:
                        return cast("R", claim.result)
                    with bind_claim(claim):
                        value = await function(*args, **kwargs)
                    claim.set_result(value)
                    return value

            return guarded

        return decorate

    def _release_if_acquired(self, task: asyncio.Future[list[ClaimResult]]) -> None:
        """Done-callback for a claim whose caller was cancelled: release what it acquired."""
        if task.cancelled() or task.exception() is not None:
            return
        held = [
            Held(result.key, result.token)
            for result in task.result()
            if result.status is ClaimStatus.ACQUIRED and result.token is not None
        ]
        if held:
            spawn(self._release_quietly(held))

    async def _release_quietly(self, held: list[Held]) -> None:
        try:
            await self.store.release_many(held)
        except StoreUnavailableError as exc:
            logger.warning(
                "could not release claims of a cancelled caller; they end with their lease",
                extra={"idempotency_keys": [item.key for item in held], "error": repr(exc)},
            )
