"""One guarded block, ``async with idem.guard(...)``: claim, run, complete or release, renew.

A guarded block runs once per key: it claims the key, runs, and completes the record with its
result; a completed duplicate replays that result instead of running. Whatever the block raises
(``BaseException``: errors, cancellation, ``SystemExit``) releases the claim so the work can run
again, and the block's own exception is what propagates. Once the block has succeeded its work
is never released: a result that cannot be stored (not serializable, too large) completes the
record with a marker, the first caller keeps its result, and duplicates get
ResultUnavailableError instead of running again. Each entry is one attempt with its own owner id
(see ``owners``). Long blocks keep their lease alive: a renewal every third of the lease
restarts it, so two renewals can fail before it ends::

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
import logging
from typing import TYPE_CHECKING

from ..errors import (
    AlreadyInProgressError,
    LeaseLostError,
    PayloadMismatchError,
    ResultTooLargeError,
    ResultUnavailableError,
    StoreUnavailableError,
)
from ._background import spawn
from ._store import ClaimRequest, ClaimStatus, Completion, Held
from .claim import Claim
from .owners import attempt_owner
from .serialization import decode_result, encode_result, unstored_marker
from .settings import FailurePolicy

if TYPE_CHECKING:
    from types import TracebackType

    from ._store import ClaimResult
    from .serialization import Serializer
    from .service import Idempotency

__all__ = ["Guard", "claim_attempt", "release_after"]

logger = logging.getLogger("fargate_runtime.idempotency")


class Guard:
    """One guarded block: ``async with idem.guard(scope, key, payload=...) as claim``."""

    __slots__ = ("_claim", "_closed", "_fingerprint", "_idem", "_key", "_serializer", "_timer")

    def __init__(
        self,
        idem: Idempotency,
        key: str,
        fingerprint: str,
        serializer: Serializer | None = None,
    ) -> None:
        self._idem = idem
        self._key = key
        self._fingerprint = fingerprint
        self._serializer = serializer or idem.serializer
        self._claim: Claim | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def __aenter__(self) -> Claim:
        idem = self._idem
        try:
            result = await claim_attempt(idem, ClaimRequest(self._key, self._fingerprint))
        except StoreUnavailableError:
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
            try:
                stored = decode_result(self._serializer, result.result or b"null", key=self._key)
            except ResultUnavailableError as unavailable:
                return Claim(self._key, result.token, replayed=True, unavailable=unavailable)
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

    def _encode(self, claim: Claim) -> tuple[bytes, BaseException | None]:
        """The bytes to complete with: the result's, or a marker saying why it cannot be kept.

        The work has run: whatever goes wrong here must not release the claim.
        """
        idem = self._idem
        try:
            value = claim.result
            return encode_result(
                self._serializer, value, max_bytes=idem.max_result_bytes, key=claim.key
            ), None
        except BaseException as problem:  # noqa: BLE001 - user serializers may raise anything
            return unstored_marker(problem), problem

    async def _complete(self, claim: Claim) -> None:
        data, problem = self._encode(claim)
        try:
            await self._record(claim, data, problem)
        finally:
            if problem is not None and not isinstance(problem, Exception):
                # KeyboardInterrupt, SystemExit while serializing: recorded first, now on its way.
                raise problem

    async def _record(self, claim: Claim, data: bytes, problem: BaseException | None) -> None:
        """Complete with ``data`` (a marker when the store refuses its size), count, log."""
        idem = self._idem
        try:
            try:
                done = await self._completion(claim, data)
            except ResultTooLargeError as too_large:  # the store's own limit is lower
                problem = too_large
                try:
                    done = await self._completion(claim, unstored_marker(too_large))
                except ResultTooLargeError:  # even the marker's reason: keep the bare marker
                    done = await self._completion(claim, unstored_marker(None))
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
        if problem is not None:
            idem.stats.unstored += 1
            logger.error(
                "idempotent work completed WITHOUT its result: it cannot be stored (%r); the "
                "work will not run again, duplicates get ResultUnavailableError",
                problem,
                extra={"idempotency_key": claim.key, "fencing_token": claim.token},
            )

    async def _completion(self, claim: Claim, data: bytes) -> bool:
        """Complete ``claim`` with ``data``; the write finishes even if we are cancelled."""
        task = spawn(
            self._idem.store.complete_many(
                [Completion(claim.key, claim.token, data)],
                retention_seconds=self._idem.retention_seconds,
            )
        )
        (done,) = await asyncio.shield(task)
        return bool(done)

    async def _release(self, claim: Claim, error: BaseException) -> None:
        await release_after(self._idem, Held(claim.key, claim.token), error)

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


# -- what a guarded block and a guarded transaction (postgres_guard) both do -----------------


async def claim_attempt(idem: Idempotency, request: ClaimRequest) -> ClaimResult:
    """Claim ``request`` as one attempt (its own owner id: a retry of it recognises it).

    Shielded: a caller cancelled meanwhile leaves the claim to finish on the server and gives it
    back when it does. A StoreUnavailableError is counted and raised: a reply lost for good (past
    the client's retries, which recognise their own claim) may leave the claim behind until its
    lease ends.
    """
    owner = attempt_owner(idem.owner)
    task = spawn(idem.store.claim_many([request], owner=owner, lease_seconds=idem.lease_seconds))
    try:
        (result,) = await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda done: _release_if_acquired(idem, done))
        raise
    except StoreUnavailableError:
        idem.stats.store_errors += 1
        raise
    return result


async def release_after(idem: Idempotency, held: Held, error: BaseException) -> None:
    """Release ``held`` after ``error`` (bounded, shielded); a failure here is logged and noted
    on ``error``, never raised over it."""
    task = spawn(idem.store.release_many([held]))
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
        f"idempotency claim {held.key!r} (token {held.token}) could not be released "
        f"({problem!r}); it becomes free when its lease ends"
    )
    error.add_note(note)
    logger.warning(note, extra={"idempotency_key": held.key})


def _release_if_acquired(idem: Idempotency, task: asyncio.Future[list[ClaimResult]]) -> None:
    """Done-callback for a claim whose caller was cancelled: release what it acquired."""
    if task.cancelled() or task.exception() is not None:
        return
    held = [
        Held(result.key, result.token)
        for result in task.result()
        if result.status is ClaimStatus.ACQUIRED and result.token is not None
    ]
    if held:
        spawn(_release_quietly(idem, held))


async def _release_quietly(idem: Idempotency, held: list[Held]) -> None:
    try:
        await idem.store.release_many(held)
    except StoreUnavailableError as exc:
        logger.warning(
            "could not release claims of a cancelled caller; they end with their lease",
            extra={"idempotency_keys": [item.key for item in held], "error": repr(exc)},
        )
