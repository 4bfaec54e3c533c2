"""The in-process store: the Redis store's contract in a dict, for local runs and tests.

Each call does its whole batch without awaiting in between, which makes it atomic for every task
of the event loop (the same guarantee a Lua script gives on Redis). Leases and retention are
measured on an injectable clock, so tests expire a lease by advancing time instead of sleeping.
It is per process: several processes need the Redis store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import StoreUnavailableError
from . import _limits
from ._loop import LoopBinding
from ._store import ClaimResult, ClaimStatus, RecordState, StoreBase
from .keys import fence_base
from .serialization import DEFAULT_MAX_RESULT_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._store import ClaimRequest, Completion, CountChange, Held

__all__ = ["ManualClock", "MemoryStore"]


@dataclass(slots=True)
class _Record:
    state: RecordState
    owner: str
    token: int
    fingerprint: str
    expires_at: float
    result: bytes = b""


class ManualClock:
    """A clock for tests: time moves only when ``advance`` is called."""

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.now += seconds


class MemoryStore(StoreBase):
    """An ``IdempotencyStore`` kept in this process's memory.

    ``set_unavailable(True)`` makes every call raise StoreUnavailableError, to test failure
    policies without stopping a server.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self._clock = clock
        self._max_result_bytes = _limits.count(
            "max_result_bytes", max_result_bytes, maximum=_limits.MAX_RESULT_BYTES_LIMIT
        )
        self._loop = LoopBinding("MemoryStore")
        self._records: dict[str, _Record] = {}
        self._counters: dict[str, int] = {}
        # CountingStore's counters: key -> (fields, expiry).
        self._counts: dict[str, tuple[dict[str, int], float]] = {}
        self._unavailable = False

    def set_unavailable(self, unavailable: bool) -> None:
        """Simulate an outage (True) or end it (False)."""
        self._unavailable = unavailable

    async def ping(self) -> None:
        """Raise StoreUnavailableError while set unavailable (the Redis store's readiness probe)."""
        await self._enter()

    def __len__(self) -> int:
        """How many live records there are."""
        now = self._clock()
        return sum(1 for record in self._records.values() if record.expires_at > now)

    async def _enter(self) -> float:
        # Atomic only within one event loop: a second loop (another thread) could interleave.
        self._loop.check()
        # Yield once, as a network call would, so tasks interleave between calls (never inside).
        await asyncio.sleep(0)
        if self._unavailable:
            raise StoreUnavailableError("the in-memory store is set unavailable")
        return self._clock()

    def _live(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and record.expires_at <= now:
            del self._records[key]  # what a server-side TTL would have done
            return None
        return record

    def _held(self, key: str, token: int, now: float) -> _Record | None:
        record = self._live(key, now)
        if record is None or record.state is not RecordState.IN_PROGRESS or record.token != token:
            return None
        return record

    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, owner: str, lease_seconds: float
    ) -> list[ClaimResult]:
        """Claim every key atomically (see ``IdempotencyStore.claim_many``)."""
        lease = _limits.lease(lease_seconds)
        counters = [fence_base(request.key) for request in requests]
        now = await self._enter()
        results = []
        answered: set[str] = set()
        for request, counter in zip(requests, counters, strict=True):
            record = self._live(request.key, now)
            first = request.key not in answered
            answered.add(request.key)
            if record is None:
                token = self._counters.get(counter, 0) + 1
                self._counters[counter] = token
                self._records[request.key] = _Record(
                    RecordState.IN_PROGRESS,
                    request.owner or owner,
                    token,
                    request.fingerprint,
                    now + lease,
                )
                results.append(ClaimResult(request.key, ClaimStatus.ACQUIRED, token))
            elif record.fingerprint != request.fingerprint:
                results.append(ClaimResult(request.key, ClaimStatus.MISMATCH))
            elif record.state is RecordState.COMPLETED:
                results.append(
                    ClaimResult(request.key, ClaimStatus.COMPLETED, record.token, record.result)
                )
            elif first and record.owner == (request.owner or owner):
                # This attempt's own claim (a retry after a lost reply): ours, lease restarted.
                record.expires_at = now + lease
                results.append(ClaimResult(request.key, ClaimStatus.ACQUIRED, record.token))
            else:
                results.append(ClaimResult(request.key, ClaimStatus.IN_PROGRESS))
        return results

    async def complete_many(
        self, completions: Sequence[Completion], *, retention_seconds: float
    ) -> list[bool]:
        """Complete claims still ours (see ``IdempotencyStore.complete_many``)."""
        retention = _limits.retention(retention_seconds)
        self.check_results(completions)
        now = await self._enter()
        done = []
        for completion in completions:
            record = self._live(completion.key, now)
            if record is None or record.token != completion.token:
                done.append(False)
                continue
            if record.state is RecordState.IN_PROGRESS:
                record.state = RecordState.COMPLETED
                record.result = completion.result
                record.expires_at = now + retention
            done.append(True)  # completed by this very token: a retried call, kept as it was
        return done

    async def release_many(self, held: Sequence[Held]) -> list[bool]:
        """Delete claims still ours (see ``IdempotencyStore.release_many``)."""
        now = await self._enter()
        released = []
        for item in held:
            record = self._held(item.key, item.token, now)
            if record is not None:
                del self._records[item.key]
            released.append(record is not None)
        return released

    async def renew_many(self, held: Sequence[Held], *, lease_seconds: float) -> list[bool]:
        """Extend leases still ours (see ``IdempotencyStore.renew_many``)."""
        lease = _limits.lease(lease_seconds)
        now = await self._enter()
        renewed = []
        for item in held:
            record = self._held(item.key, item.token, now)
            if record is not None:
                record.expires_at = now + lease
            renewed.append(record is not None)
        return renewed

    async def count_many(
        self, changes: Sequence[CountChange], *, ttl_seconds: float
    ) -> list[dict[str, int]]:
        """Change and read per-key counters atomically (see ``CountingStore``)."""
        ttl = _limits.retention(ttl_seconds)
        now = await self._enter()
        answers = []
        for change in changes:
            fields, expires_at = self._counts.get(change.key, ({}, now))
            if expires_at <= now:
                fields = {}
            if change.amount:
                fields[change.field] = fields.get(change.field, 0) + change.amount
                expires_at = now + ttl
            if fields:
                self._counts[change.key] = (fields, expires_at)
            else:
                self._counts.pop(change.key, None)  # expired: what a TTL would have done
            answers.append(dict(fields))
        return answers
