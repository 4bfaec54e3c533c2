"""The Redis store: each batch operation is one Lua script call, through redis-py's own path.

Scripts are called by SHA (``EVALSHA``); a server that does not know them (first call, restart,
failover, ``SCRIPT FLUSH``) answers NOSCRIPT and gets the body once with ``EVAL``, which caches
it again. Every call goes through the client's ``execute_command``, so whatever the client does
for its own commands it does for ours: Sentinel failover, Cluster routing, blocking pools,
health checks, retries, redis-py's command metrics and OpenTelemetry's Redis instrumentation.
On Redis Cluster a batch is split by hash slot and the per-slot scripts run concurrently (see
``_slots``). redis-py errors are translated here, and only here, into StoreUnavailableError:
whatever Redis answered, the caller must treat the work as not recorded.

Independent of the client's settings:

- bytes: keys, owners and fingerprints are sent as UTF-8 and replies read undecoded, so a
  client made with ``decode_responses=True`` or another ``encoding`` stores and replays the
  same bytes (a latin-1 client used to replay results corrupted);
- connections: the scripts take at most ``max_concurrent_calls`` of the pool at once (half its
  ``max_connections`` by default) and wait their turn beyond that, so a burst of claims never
  exhausts a small pool (``MaxConnectionsError``) and the application's own commands and the
  readiness probe always find a connection; redis-py's pools cannot reserve connections, hence
  the semaphore here;
- the eviction policy: checked before the first claim (see ``_eviction``), at ``open()`` when
  Redis answers then (a refusal there is a ConfigurationError: exit 78).

What Redis can and cannot promise (FACTS.md, "Redis for idempotency"): records live while Redis
keeps them. A failover can drop an acknowledged write and a restart without persistence drops
every record, so the key and the fencing token should also reach the downstream system.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from ..errors import StoreUnavailableError
from . import _limits
from ._blocking_release import complete_blocking, release_blocking
from ._eviction import EvictionCheck
from ._loop import LoopBinding
from ._scripts import CLAIM, COMPLETE, COUNT, RELEASE, RENEW, Script, claim_results, counts, flags
from ._slots import fence_key, group_by_slot
from ._store import ClaimResult, ClaimStatus, Held, StoreBase
from .serialization import DEFAULT_MAX_RESULT_BYTES

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence
    from typing import Self

    from redis.asyncio import Redis

    from ._store import ClaimRequest, Completion, CountChange

__all__ = ["RedisStore"]

T = TypeVar("T")


def _ms(seconds: float) -> int:
    """Seconds (validated: at least 0.1) as whole milliseconds for ``PX`` / ``PEXPIRE``."""
    return round(seconds * 1000)


def _utf8(text: str) -> bytes:
    # Sent as bytes, the client's own ``encoding`` never touches them.
    return text.encode()


def _joined(numbers: Iterable[int]) -> bytes:
    return b" ".join(b"%d" % number for number in numbers)


def _packed(owners: Sequence[str | None]) -> bytes:
    """Per-record owners in one argument, ``<bytes>:<owner>`` each; empty when none has one."""
    if not any(owners):
        return b""
    parts = [_utf8(owner or "") for owner in owners]
    return b"".join(b"%d:%s" % (len(part), part) for part in parts)


def _default_call_limit(client: Redis | RedisCluster) -> int | None:
    """Half the pool's connections (at least one); None for a cluster (a pool per node)."""
    if isinstance(client, RedisCluster) or client.connection is not None:
        return None
    maximum = getattr(client.connection_pool, "max_connections", None)
    return max(1, maximum // 2) if isinstance(maximum, int) else None


class RedisStore(StoreBase):
    """An ``IdempotencyStore`` on Redis (standalone, Sentinel, or a cluster client).

    ``open_store(settings)`` builds one with deliberate timeouts and retries; any redis-py
    asyncio client works. ``call_timeout_seconds`` bounds each call, waiting for a connection
    and retries included: past it the call fails closed (StoreUnavailableError).
    ``max_concurrent_calls`` caps the connections the scripts hold at once (default: half the
    pool). ``accept_eviction_risk`` starts even when Redis may evict records (logged).
    ``owns_client=True`` makes ``aclose`` close the client. Enter it (``async with``) or call
    ``open()`` to check the eviction policy at start; a store never opened checks it before its
    first claim.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        call_timeout_seconds: float = 2.0,
        max_concurrent_calls: int | None = None,
        accept_eviction_risk: bool = False,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._call_timeout = _limits.seconds(
            "call_timeout_seconds", call_timeout_seconds, minimum=0.001, maximum=120.0
        )
        self._max_result_bytes = _limits.count(
            "max_result_bytes", max_result_bytes, maximum=_limits.MAX_RESULT_BYTES_LIMIT
        )
        limit = _default_call_limit(client)
        if max_concurrent_calls is not None:
            limit = _limits.count("max_concurrent_calls", max_concurrent_calls, maximum=1_000_000)
        self._calls = asyncio.Semaphore(limit) if limit is not None else None
        self._owns_client = owns_client
        self._cluster = isinstance(client, RedisCluster)
        self._slots_known = False
        self._discovery = asyncio.Lock()
        self._eviction = EvictionCheck(
            client, accept_risk=accept_eviction_risk, timeout_seconds=self._call_timeout
        )
        self._loop = LoopBinding("RedisStore")
        self._closed = False

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client this store talks through."""
        return self._client

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.aclose()  # no __aexit__ follows a failed __aenter__: close here
            raise
        return self

    async def open(self) -> None:
        """Check Redis' eviction policy now: ConfigurationError (exit 78) when it is unsafe.

        When Redis does not answer, the store still opens (the caller's outage handling takes
        over) and makes the check before its first claim instead.
        """
        self._usable()
        await self._eviction.at_open()

    async def aclose(self) -> None:
        """Refuse calls from now on; close the client if this store owns it (a shared client is
        its owner's to close)."""
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless Redis answers (for readiness checks)."""
        if not self._eviction.passed:
            self._usable()
            await self._eviction.before_claim()  # proves Redis answers, refuses a bad policy
            return
        try:
            await self._call("PING", limited=False)
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(f"Redis does not answer PING: {exc}") from exc

    def _usable(self) -> None:
        """RuntimeError on another event loop; StoreUnavailableError once closed (background
        cleanup that outlives its caller must not reopen connections)."""
        self._loop.check()
        if self._closed:
            raise StoreUnavailableError("the idempotency store is closed")

    async def _call(self, *command: bytes | str | int, limited: bool = True) -> Any:
        """One command through redis-py (see ``_bounded``)."""
        execute = self._client.execute_command
        return await self._bounded(
            repr(command[0]), lambda: execute(*command, **{NEVER_DECODE: []}), limited=limited
        )

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[bytes | int]) -> Any:
        """Run ``script`` by SHA, sending its body once where the server lacks it."""
        self._usable()  # before the catch-all below: a wrong loop is the caller's bug, said as is
        execute = self._client.execute_command
        keys_and_args = [*(_utf8(key) for key in keys), *args]

        async def send() -> Any:
            try:
                return await execute(
                    "EVALSHA", script.sha, len(keys), *keys_and_args, **{NEVER_DECODE: []}
                )
            except NoScriptError:
                # Script cache empty (restart, failover, SCRIPT FLUSH): EVAL runs and caches it.
                return await execute(
                    "EVAL", script.body, len(keys), *keys_and_args, **{NEVER_DECODE: []}
                )

        try:
            return await self._bounded(f"the idempotency {script.name} script", send)
        except StoreUnavailableError:
            raise
        except Exception as exc:
            # Anything else the client raises (redis-py 8.1's cluster client can fail with an
            # AttributeError when a re-initialization tears down a connection another command
            # is opening) still means "not recorded": fail closed with it, don't crash past it.
            raise StoreUnavailableError(
                f"the Redis client failed while running the idempotency {script.name} script: "
                f"{exc!r}"
            ) from exc

    async def _bounded(
        self, what: str, send: Callable[[], Awaitable[Any]], *, limited: bool = True
    ) -> Any:
        """Await ``send()`` on this store's loop, within the call timeout (waiting for a
        connection included), holding one of the store's connection slots when ``limited``;
        Redis' failures become StoreUnavailableError."""
        self._usable()
        try:
            async with asyncio.timeout(self._call_timeout):
                if limited and self._calls is not None:
                    async with self._calls:
                        return await send()
                return await send()
        except TimeoutError as exc:
            # The abandoned command's connection is closed by redis-py, never reused.
            raise StoreUnavailableError(
                f"Redis did not answer {what} within {self._call_timeout:g} s"
            ) from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(f"Redis failed to run {what}: {exc}") from exc

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
        lease = _ms(_limits.lease(lease_seconds))
        if not requests:
            return []
        if not self._eviction.passed:
            self._usable()
            await self._eviction.before_claim()
        keys = [request.key for request in requests]
        fences = [fence_key(key, cluster=self._cluster) for key in keys]
        who = _utf8(owner)

        async def run(group: list[int]) -> list[ClaimResult]:
            counters: dict[str, int] = {}
            # 1-based position of each record's counter among the script's counter keys.
            positions = [counters.setdefault(fences[i], len(counters) + 1) for i in group]
            group_keys = [keys[i] for i in group]
            reply = await self._eval(
                CLAIM,
                [*group_keys, *counters],
                [
                    who,
                    lease,
                    _joined(positions) if len(counters) > 1 else b"",
                    *(_utf8(requests[i].fingerprint) for i in group),
                    _packed([requests[i].owner for i in group]),
                ],
            )
            return claim_results(group_keys, reply)

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
        retention = _ms(_limits.retention(retention_seconds))
        self.check_results(completions)

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
            return flags(reply)

        return await self._held_call([c.key for c in completions], run)

    async def release_many(self, held: Sequence[Held]) -> list[bool]:
        """Delete claims still ours (see ``IdempotencyStore.release_many``)."""

        async def run(group: list[int]) -> list[bool]:
            reply = await self._eval(
                RELEASE, [held[i].key for i in group], [_joined(held[i].token for i in group)]
            )
            return flags(reply)

        return await self._held_call([item.key for item in held], run)

    def release_blocking(self, held: Sequence[Held], *, timeout_seconds: float) -> int:
        """Release claims still ours without the event loop (the watchdog's last resort)."""
        if isinstance(self._client, RedisCluster):
            return 0  # per-slot scripts need the cluster client's routing: left to the lease
        return release_blocking(self._client, held, timeout_seconds=timeout_seconds)

    def complete_blocking(
        self, completions: Sequence[Completion], *, retention_seconds: float, timeout_seconds: float
    ) -> list[bool] | None:
        """Complete claims without the event loop (the watchdog's last resort); None when Redis
        could not be asked (unreachable, or a cluster client: its routing needs the loop)."""
        if isinstance(self._client, RedisCluster):
            return None
        return complete_blocking(
            self._client,
            completions,
            retention_ms=_ms(_limits.retention(retention_seconds)),
            timeout_seconds=timeout_seconds,
        )

    async def count_many(
        self, changes: Sequence[CountChange], *, ttl_seconds: float
    ) -> list[dict[str, int]]:
        """Change and read per-key counters, one script per slot (see ``CountingStore``)."""
        ttl = _ms(_limits.retention(ttl_seconds))
        if not changes:
            return []

        async def run(group: list[int]) -> list[dict[str, int]]:
            arguments: list[bytes | int] = [ttl]
            for i in group:
                arguments += [_utf8(changes[i].field), changes[i].amount]
            reply = await self._eval(COUNT, [changes[i].key for i in group], arguments)
            return counts(reply)

        placed, failures = await self._per_slot([change.key for change in changes], run)
        return self._all(placed, failures)

    async def renew_many(self, held: Sequence[Held], *, lease_seconds: float) -> list[bool]:
        """Extend leases still ours (see ``IdempotencyStore.renew_many``)."""
        lease = _ms(_limits.lease(lease_seconds))

        async def run(group: list[int]) -> list[bool]:
            reply = await self._eval(
                RENEW,
                [held[i].key for i in group],
                [lease, _joined(held[i].token for i in group)],
            )
            return flags(reply)

        return await self._held_call([item.key for item in held], run)

    async def _held_call(
        self, keys: list[str], run: Callable[[list[int]], Awaitable[list[bool]]]
    ) -> list[bool]:
        if not keys:
            return []
        placed, failures = await self._per_slot(keys, run)
        return self._all(placed, failures)
