"""The idempotency record's states and the store protocol every backend implements.

A record per key, written only atomically by the store::

    absent ──claim──▶ in_progress {owner, token, fingerprint}      TTL: lease, heartbeat renews
                        │ complete(token) ──▶ completed {token, fingerprint, result}
                        │                                          TTL: retention (24 h)
                        │ release(token)  ──▶ absent
                        └ lease expires   ──▶ absent (the next claim gets a higher token)

``complete``, ``release`` and ``renew`` are compare-and-set on the fencing token: a worker whose
lease expired gets ``False`` (lease lost) and cannot touch the new owner's claim.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .serialization import DEFAULT_MAX_RESULT_BYTES, check_result_size

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType
    from typing import Self

__all__ = [
    "ClaimRequest",
    "ClaimResult",
    "ClaimStatus",
    "Completion",
    "CountChange",
    "CountingStore",
    "Held",
    "IdempotencyStore",
    "RecordState",
    "StoreBase",
]


class RecordState(enum.Enum):
    """A stored record's state (absent records are not stored)."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class ClaimStatus(enum.Enum):
    """What a claim found, decided and written in one atomic step."""

    ACQUIRED = "acquired"  # the key is ours, with a new fencing token
    COMPLETED = "completed"  # done before: the stored result replays
    IN_PROGRESS = "in_progress"  # another owner holds a live lease
    MISMATCH = "mismatch"  # the key was used with a different payload fingerprint


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One key to claim: the full key (see ``scoped_key``) and the payload's fingerprint.

    ``owner`` names this key's attempt when it differs from the call's (the SQS consumer gives
    each message its own, so a redelivery of that message recognises its claim while a
    duplicate message with the same key does not); None: the ``owner`` of the call.
    """

    key: str
    fingerprint: str
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The outcome of a claim.

    ``token`` is our new fencing token when ACQUIRED, the completing claim's token when
    COMPLETED, and None otherwise. ``result`` is the stored, serialized result when COMPLETED.
    """

    key: str
    status: ClaimStatus
    token: int | None = None
    result: bytes | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """A claim we hold: its key and our fencing token."""

    key: str
    token: int


@dataclass(frozen=True, slots=True)
class Completion:
    """A claim to complete, with the serialized result to keep for replays."""

    key: str
    token: int
    result: bytes


@dataclass(frozen=True, slots=True)
class CountChange:
    """Add ``amount`` to counter ``field`` of the counters at ``key`` (0: only read them)."""

    key: str
    field: str
    amount: int = 0


@runtime_checkable
class CountingStore(Protocol):
    """A store that also keeps small integer counters per key: an optional capability.

    The SQS consumer counts there how often the runtime itself handed a message back (at a
    shutdown, behind a failed FIFO message), so a receive count climbed for those reasons does
    not send the message to the dead-letter queue. Counters are not idempotency records: they
    live beside them (their own keys) and expire ``ttl_seconds`` after their last change.
    """

    async def count_many(
        self, changes: Sequence[CountChange], *, ttl_seconds: float
    ) -> list[dict[str, int]]:
        """Apply every change in one atomic step; return each key's counters after it."""
        ...


@runtime_checkable
class IdempotencyStore(Protocol):
    """What the guard, the SQS consumer and the HTTP middleware need from a store.

    Each method is one atomic step (one round trip for a remote store) for the whole sequence;
    results come back in the order of the inputs. Methods that take a token answer False where
    the lease was lost. Unreachable storage raises ``StoreUnavailableError``.

    Fencing tokens are positive and strictly increase across the claims of one key, so a
    downstream system that remembers the highest token it saw can refuse a zombie's write.
    """

    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, owner: str, lease_seconds: float
    ) -> list[ClaimResult]:
        """Claim every key; a key repeated in one call is claimed once (later ones IN_PROGRESS).

        A key in progress under the same owner (the request's own, else ``owner``) and
        fingerprint is that owner's claim: ACQUIRED again with its token, the lease restarted.
        """
        ...

    async def complete_many(
        self, completions: Sequence[Completion], *, retention_seconds: float
    ) -> list[bool]:
        """Mark claims completed with their results; False where the lease was lost.

        A completion repeated with the same token (a retry after a lost reply) answers True
        again; a completed record is never overwritten.
        """
        ...

    async def release_many(self, held: Sequence[Held]) -> list[bool]:
        """Delete claims still ours so the work can run again; False where not ours any more."""
        ...

    async def renew_many(self, held: Sequence[Held], *, lease_seconds: float) -> list[bool]:
        """Extend leases still ours to ``lease_seconds`` from now; False where lost."""
        ...


class StoreBase(abc.ABC):
    """A backend's base: implement the four batch methods, get the single-key forms for free.

    Each single-key method is its batch method with one entry: one round trip, same atomicity.
    A store is an async context manager; ``aclose`` releases its connections (if it owns any).
    """

    # The largest result one completion may store, in bytes (each store sets its own).
    _max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most stores hold nothing
        """Release what the store holds (connections); nothing by default."""

    def check_results(self, completions: Sequence[Completion]) -> None:
        """ResultTooLargeError before anything is written (the claims stay held)."""
        for completion in completions:
            check_result_size(
                completion.result, max_bytes=self._max_result_bytes, key=completion.key
            )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, owner: str, lease_seconds: float
    ) -> list[ClaimResult]:
        """See ``IdempotencyStore.claim_many``."""

    @abc.abstractmethod
    async def complete_many(
        self, completions: Sequence[Completion], *, retention_seconds: float
    ) -> list[bool]:
        """See ``IdempotencyStore.complete_many``."""

    @abc.abstractmethod
    async def release_many(self, held: Sequence[Held]) -> list[bool]:
        """See ``IdempotencyStore.release_many``."""

    @abc.abstractmethod
    async def renew_many(self, held: Sequence[Held], *, lease_seconds: float) -> list[bool]:
        """See ``IdempotencyStore.renew_many``."""

    async def claim(
        self, key: str, fingerprint: str, *, owner: str, lease_seconds: float
    ) -> ClaimResult:
        """Claim one key (see ``claim_many``)."""
        (result,) = await self.claim_many(
            [ClaimRequest(key, fingerprint)], owner=owner, lease_seconds=lease_seconds
        )
        return result

    async def complete(
        self, key: str, token: int, result: bytes, *, retention_seconds: float
    ) -> bool:
        """Complete one claim; False when the lease was lost (see ``complete_many``)."""
        (done,) = await self.complete_many(
            [Completion(key, token, result)], retention_seconds=retention_seconds
        )
        return done

    async def release(self, key: str, token: int) -> bool:
        """Release one claim; False when it is not ours any more (see ``release_many``)."""
        (released,) = await self.release_many([Held(key, token)])
        return released

    async def renew(self, key: str, token: int, *, lease_seconds: float) -> bool:
        """Extend one lease; False when it was lost (see ``renew_many``)."""
        (renewed,) = await self.renew_many([Held(key, token)], lease_seconds=lease_seconds)
        return renewed
