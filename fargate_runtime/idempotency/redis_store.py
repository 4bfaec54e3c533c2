"""The Redis store: every record change is a Lua script, one round trip per batch (per slot).

Scripts are called by SHA (``EVALSHA``); a server that does not know them (first call, restart,
failover, ``SCRIPT FLUSH``) answers NOSCRIPT and gets the body once with ``EVAL``, which caches
it again. On Redis Cluster a batch is split by hash slot and the per-slot scripts run
concurrently (see ``_slots``). redis-py errors are translated here, and only here, into
StoreUnavailableError: whatever Redis answered, the caller must treat the work as not recorded.

What Redis can and cannot promise (FACTS.md, "Redis for idempotency"): records live while Redis
keeps them. A failover can drop an acknowledged write and a restart without persistence drops
every record, so the key and the fencing token should also reach the downstream system. Run the
Redis with ``maxmemory-policy noeviction`` (or a ``volatile-*`` policy): evicting a record is
forgetting that its work was done.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from ..errors import StoreUnavailableError
from ._blocking_release import release_blocking
from ._script_calls import ScriptCalls, pack
from ._scripts import CLAIM, COMPLETE, RELEASE, RENEW, Script
from ._slots import fence_key, group_by_slot
from ._store import ClaimResult, ClaimStatus, Held, StoreBase
from .serialization import DEFAULT_MAX_RESULT_BYTES, check_result_size

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from redis.asyncio import Redis

    from ._store import ClaimRequest, Completion

__all__ = ["RedisStore"]

T = TypeVar("T")

_STATUSES = {
    b"1": ClaimStatus.ACQUIRED,
    b"2": ClaimStatus.COMPLETED,
    b"3": ClaimStatus.IN_PROGRESS,
    b"4": ClaimStatus.MISMATCH,
}


def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds for ``PEXPIRE`` (at least 1: 0 would delete the key)."""
    return max(1, round(seconds * 1000))


def _bytes(value: bytes | str) -> bytes:
    # A client made with decode_responses=True hands back str; we read bytes.
    return value.encode() if isinstance(value, str) else value


def _joined(numbers: Iterable[int]) -> str:
    return " ".join(map(str, numbers))


def _claim_results(keys: Sequence[str], reply: list[Any]) -> list[ClaimResult]:
    """Decode the claim script's ``{header, stored results...}`` reply (see ``_scripts``)."""
    words = _bytes(reply[0]).split()
    stored = iter(reply[1:])
    results = []
    for key, word in zip(keys, words, strict=True):
        code, _, token = word.partition(b":")
        status = _STATUSES[code]
        if status is ClaimStatus.ACQUIRED:
            results.append(ClaimResult(key, status, int(token)))
        elif status is ClaimStatus.COMPLETED:
            results.append(ClaimResult(key, status, int(token), _bytes(next(stored))))
        else:
            results.append(ClaimResult(key, status))
    return results


def _flags(reply: bytes | str) -> list[bool]:
    return [flag == ord("1") for flag in _bytes(reply)]


class RedisStore(StoreBase):
    """An ``IdempotencyStore`` on Redis (standalone, or a cluster client for Cluster/Serverless).

    ``open_store(settings)`` builds one with deliberate timeouts and retries; any redis-py
    asyncio client works. ``call_timeout_seconds`` bounds each call, retries included: past it
    the call fails closed (StoreUnavailableError). ``owns_client=True`` makes ``aclose`` close
    the client.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        call_timeout_seconds: float | None = 2.0,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._call_timeout = call_timeout_seconds
        self._cluster = isinstance(client, RedisCluster)
        self._max_result_bytes = max_result_bytes
        self._owns_client = owns_client
        self._slots_known = False
        self._discovery = asyncio.Lock()
        # A standalone client's scripts skip redis-py's per-command path (see _script_calls);
        # a cluster client routes every call by slot itself.
        self._calls = (
            None if isinstance(client, RedisCluster) else ScriptCalls(client.connection_pool)
        )

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client this store talks through."""
        return self._client

    async def aclose(self) -> None:
        """Give back the store's connections; close the client too if this store owns it."""
        if self._calls is not None:
            await self._calls.aclose()
        if self._owns_client:
            await self._client.aclose()

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless Redis answers (for readiness checks)."""
        try:
            async with asyncio.timeout(self._call_timeout):
                await self._run("PING")
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(f"Redis does not answer PING: {exc}") from exc

    async def _run(self, *command: str | bytes | int) -> Any:
        if self._calls is not None:
            return await self._calls.call(pack(command))
        return await self._client.execute_command(*command)

    async def _eval(
        self, script: Script, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> Any:
        try:
            async with asyncio.timeout(self._call_timeout):
                try:
                    return await self._run("EVALSHA", script.sha, len(keys), *keys, *args)
                except NoScriptError:
                    # Script cache empty (restart, failover, SCRIPT FLUSH): EVAL runs and
                    # caches it again.
                    return await self._run("EVAL", script.body, len(keys), *keys, *args)
        except TimeoutError as exc:
            # The abandoned command's connection is closed by redis-py, never reused.
            raise StoreUnavailableError(
                f"Redis did not answer the idempotency {script.name} script within "
                f"{self._call_timeout:g} s"
            ) from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(
                f"Redis failed to run the idempotency {script.name} script: {exc}"
            ) from exc
        except Exception as exc:
            # Anything else the client raises (redis-py 8.1's cluster client can fail with an
            # AttributeError when a re-initialization tears down a connection another command
            # is opening) still means "not recorded": fail closed with it, don't crash past it.
            raise StoreUnavailableError(
                f"the Redis client failed while running the idempotency {script.name} script: "
                f"{exc!r}"
            ) from exc

    async def _per_slot(
        self, keys: Sequence[str], run: Callable[[list[int]], Awaitable[list[T]]]
    ) -> tuple[list[T | None], list[BaseException]]:
        """Run ``run`` once per slot group; results placed back in input order."""
        if not self._cluster:
            return list(await run(list(range(len(keys))))), []
        await self._discover_slots()
        groups = group_by_slot(keys)
        outcomes = await asyncio.gather(*(run(group) for group in groups), return_exceptions=True)
        placed: list[T | None] = [None] * len(keys)
        failures: list[BaseException] = []
        for group, outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failures.append(outcome)
                continue
            for index, result in zip(group, outcome, strict=True):
                placed[index] = result
        return placed, failures

    async def _discover_slots(self) -> None:
        # A fresh cluster client learns the slot map on its first command; several first
        # commands at once (one per slot group) would each start that discovery and trip over
        # each other's connections. Learn it once, before the first fan-out.
        if self._slots_known or not isinstance(self._client, RedisCluster):
            return
        async with self._discovery:
            if not self._slots_known:
                try:
                    await self._client.initialize()
                except (RedisError, RedisClusterException, OSError) as exc:
                    raise StoreUnavailableError(f"Redis Cluster is unreachable: {exc}") from exc
                self._slots_known = True

    @staticmethod
    def _all(placed: list[T | None], failures: list[BaseException]) -> list[T]:
        if failures:
            raise failures[0]
        return [result for result in placed if result is not None]

    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, owner: str, lease_seconds: float
    ) -> list[ClaimResult]:
        """Claim every key, one script per slot (see ``IdempotencyStore.claim_many``)."""
        if not requests:
            return []
        keys = [request.key for request in requests]
        fences = [fence_key(key, cluster=self._cluster) for key in keys]
        lease = _ms(lease_seconds)

        async def run(group: list[int]) -> list[ClaimResult]:
            counters: dict[str, int] = {}
            # 1-based position of each record's counter among the script's counter keys.
            positions = [counters.setdefault(fences[i], len(counters) + 1) for i in group]
            group_keys = [keys[i] for i in group]
            reply = await self._eval(
                CLAIM,
                [*group_keys, *counters],
                [
                    owner,
                    lease,
                    _joined(positions) if len(counters) > 1 else "",
                    *(requests[i].fingerprint for i in group),
                ],
            )
            return _claim_results(group_keys, reply)

        placed, failures = await self._per_slot(keys, run)
        if failures:
            # Some slots answered: give back what we got there before reporting the failure,
            # rather than strand those keys for a whole lease.
            acquired = [
                Held(result.key, result.token)
                for result in placed
                if result is not None
                and result.status is ClaimStatus.ACQUIRED
                and result.token is not None
            ]
            with contextlib.suppress(StoreUnavailableError):
                await self.release_many(acquired)
        return self._all(placed, failures)

    async def complete_many(
        self, completions: Sequence[Completion], *, retention_seconds: float
    ) -> list[bool]:
        """Complete claims still ours (see ``IdempotencyStore.complete_many``)."""
        for completion in completions:
            check_result_size(
                completion.result, max_bytes=self._max_result_bytes, key=completion.key
            )
        retention = _ms(retention_seconds)

        async def run(group: list[int]) -> list[bool]:
            reply = await self._eval(
                COMPLETE,
                [completions[i].key for i in group],
                [
                    retention,
                    _joined(completions[i].token for i in group),
                    *(completions[i].result for i in group),
                ],
            )
            return _flags(reply)

        return await self._held_call([c.key for c in completions], run)

    async def release_many(self, held: Sequence[Held]) -> list[bool]:
        """Delete claims still ours (see ``IdempotencyStore.release_many``)."""

        async def run(group: list[int]) -> list[bool]:
            reply = await self._eval(
                RELEASE, [held[i].key for i in group], [_joined(held[i].token for i in group)]
            )
            return _flags(reply)

        return await self._held_call([item.key for item in held], run)

    def release_blocking(self, held: Sequence[Held], *, timeout_seconds: float) -> int:
        """Release claims still ours without the event loop (the watchdog's last resort)."""
        if isinstance(self._client, RedisCluster):
            return 0  # per-slot scripts need the cluster client's routing: left to the lease
        return release_blocking(self._client, held, timeout_seconds=timeout_seconds)

    async def renew_many(self, held: Sequence[Held], *, lease_seconds: float) -> list[bool]:
        """Extend leases still ours (see ``IdempotencyStore.renew_many``)."""
        lease = _ms(lease_seconds)

        async def run(group: list[int]) -> list[bool]:
            reply = await self._eval(
                RENEW,
                [held[i].key for i in group],
                [lease, _joined(held[i].token for i in group)],
            )
            return _flags(reply)

        return await self._held_call([item.key for item in held], run)

    async def _held_call(
        self, keys: list[str], run: Callable[[list[int]], Awaitable[list[bool]]]
    ) -> list[bool]:
        if not keys:
            return []
        placed, failures = await self._per_slot(keys, run)
        return self._all(placed, failures)
