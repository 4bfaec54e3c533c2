"""The PostgreSQL store: the Redis store's contract in a table, and commits in the handler's own.

Every record change is one call of a function of ``postgres_schema.sql`` (one round trip, one
transaction, a whole batch of keys): claim, complete, release, renew, as on Redis. What Redis
cannot offer is the transactional form (``TransactionalClaim``, in ``postgres_transaction``):
the completion record is written inside the handler's own transaction, so its writes and the
record commit together; a crash at any instant leaves both or neither. Concurrency between two
workers on a key is settled by the database (the primary key and row locks, taken in key
order), leases and retention by its clock (``clock_timestamp()``), never by a worker's clock.

The driver is asyncpg (the optional ``fargate-runtime[postgres]`` extra), for four reasons: it
speaks the binary protocol with C codecs, so a call costs the least CPU in the worker, which is
what the benchmark measures; it brings its own pool (connection reset on release, replaced when
broken), so there is no second package to pin; its wheels need no libpq, on x86-64 and on
Graviton alike; and a handler receives a plain ``asyncpg.Connection``, the connection most
async PostgreSQL code (and SQLAlchemy's asyncpg dialect) already speaks. psycopg 3's pipeline
mode could send the completion with the COMMIT in one round trip; asyncpg needs one more, which
the issue's budget (one extra round trip per message) allows.

Two pools: the store's own calls run on a small one, handlers' transactions on another, so a
burst of long transactions can never starve claims and lease renewals of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, StoreUnavailableError
from . import _limits
from ._loop import LoopBinding
from ._postgres_calls import (
    Statements,
    completion_arguments,
    driver,
    flags,
    milliseconds,
    unavailable_errors,
)
from ._store import ClaimResult, ClaimStatus, Held, StoreBase
from .keys import fence_base
from .postgres_schema import DEFAULT_SCHEMA, check_schema, describe_url
from .serialization import DEFAULT_MAX_RESULT_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Self

    import asyncpg

    from ._store import ClaimRequest, Completion, CountChange
    from .postgres_transaction import TransactionalClaim
    from .settings import IdempotencySettings

logger = logging.getLogger("fargate_runtime.idempotency.postgres")

__all__ = ["PostgresStore"]

_STATUSES = {
    1: ClaimStatus.ACQUIRED,
    2: ClaimStatus.COMPLETED,
    3: ClaimStatus.IN_PROGRESS,
    4: ClaimStatus.MISMATCH,
}
# A cleanup pass stops after this many full batches, to start again at the next interval.
_MAX_CLEANUP_BATCHES = 10


async def _no_reset(connection: asyncpg.Connection) -> None:
    """A store connection goes back to its pool as it is (see ``PostgresStore.open``)."""


class PostgresStore(StoreBase):
    """An ``IdempotencyStore`` in a PostgreSQL table, with transactions in the handler's commit.

    Build it from settings (``open_store`` does) or from a URL; enter it (``async with``, or
    ``rt.enter``) to open its pools and check the schema: an unreachable database, a missing
    schema or missing rights raise ConfigurationError (exit 78 at start). While open it deletes
    expired records every ``cleanup_interval_seconds``, ``cleanup_batch_size`` at a time.
    ``pool_options`` go to ``asyncpg.create_pool`` (e.g. ``ssl``, or ``statement_cache_size=0``
    behind PgBouncer in transaction mode).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        password: str | None = None,
        pool_size: int = 4,
        transaction_pool_size: int = 10,
        connect_timeout_seconds: float = 5.0,
        call_timeout_seconds: float = 2.0,
        idle_in_transaction_timeout_seconds: float = 60.0,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        cleanup: bool = True,
        cleanup_interval_seconds: float = 60.0,
        cleanup_batch_size: int = 1000,
        pool_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._url = url
        self._password = password
        self.schema = schema
        self._pool_size = _limits.count("pool_size", pool_size, maximum=100)
        self._transaction_pool_size = _limits.count(
            "transaction_pool_size", transaction_pool_size, maximum=1000
        )
        self.connect_timeout_seconds = _limits.seconds(
            "connect_timeout_seconds", connect_timeout_seconds, minimum=0.001, maximum=120.0
        )
        self.call_timeout_seconds = _limits.seconds(
            "call_timeout_seconds", call_timeout_seconds, minimum=0.001, maximum=120.0
        )
        idle_timeout = _limits.seconds(
            "idle_in_transaction_timeout_seconds",
            idle_in_transaction_timeout_seconds,
            minimum=0.001,
            maximum=86_400.0,
        )
        self._idle_timeout_ms = milliseconds(idle_timeout)
        self._max_result_bytes = _limits.count(
            "max_result_bytes", max_result_bytes, maximum=_limits.MAX_RESULT_BYTES_LIMIT
        )
        self._cleanup = cleanup
        self._cleanup_interval = _limits.seconds(
            "cleanup_interval_seconds", cleanup_interval_seconds, minimum=0.001, maximum=86_400.0
        )
        self._cleanup_batch = _limits.count(
            "cleanup_batch_size", cleanup_batch_size, maximum=100_000
        )
        # Passed to asyncpg.create_pool for both pools: ssl, statement_cache_size=0 behind
        # PgBouncer in transaction mode, connection_class, init, ...
        self._pool_options = dict(pool_options or {})
        self._pool: asyncpg.Pool | None = None
        self._transaction_pool: asyncpg.Pool | None = None
        self._cleaner: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()
        # asyncpg's pools belong to one event loop, like redis-py's: refuse a second at once.
        self._loop = LoopBinding("PostgresStore")
        self.where = describe_url(url)
        self.round_trips = 0  # calls made on the store's own pool (for benchmarks and tests)
        self._sql = Statements(schema)

    @classmethod
    def from_settings(cls, settings: IdempotencySettings) -> PostgresStore:
        """The store the ``FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_*`` settings describe."""
        if settings.postgres_url is None:
            raise ConfigurationError("the postgres store needs a URL (POSTGRES_URL/DATABASE_URL)")
        password = settings.postgres_password
        return cls(
            settings.postgres_url.get_secret_value(),
            schema=settings.postgres_schema,
            password=password.get_secret_value() if password is not None else None,
            pool_size=settings.postgres_pool_size,
            transaction_pool_size=settings.postgres_transaction_pool_size,
            connect_timeout_seconds=settings.postgres_connect_timeout_seconds,
            call_timeout_seconds=settings.call_timeout_seconds,
            idle_in_transaction_timeout_seconds=settings.postgres_idle_in_transaction_timeout_seconds,
            max_result_bytes=settings.max_result_bytes,
            cleanup=settings.postgres_cleanup,
            cleanup_interval_seconds=settings.postgres_cleanup_interval_seconds,
            cleanup_batch_size=settings.postgres_cleanup_batch_size,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def open(self) -> None:
        """Open both pools and check the schema; ConfigurationError says what is wrong."""
        self._loop.check()
        async with self._opening:
            if self._pool is not None:
                return
            pg = driver()
            options: dict[str, Any] = {
                "min_size": 1,
                "timeout": self.connect_timeout_seconds,
                "password": self._password,
                **self._pool_options,
                "server_settings": {
                    "application_name": "fargate-runtime",
                    **self._pool_options.get("server_settings", {}),
                    "idle_in_transaction_session_timeout": str(self._idle_timeout_ms),
                },
            }
            pool: asyncpg.Pool | None = None
            # ValueError: asyncpg's answer to a URL it cannot parse.
            failures: tuple[type[BaseException], ...] = (*unavailable_errors(), ValueError)
            try:
                # The store's own connections only ever run one function call, leaving no
                # session state behind: asyncpg's reset on release (RESET ALL, UNLISTEN, ...)
                # would double every call's round trips. Handlers' connections keep it.
                pool = await pg.create_pool(
                    self._url, max_size=self._pool_size, reset=_no_reset, **options
                )
                async with pool.acquire() as connection:
                    await check_schema(connection, self.schema)
                transactions = await pg.create_pool(
                    self._url, max_size=self._transaction_pool_size, **options
                )
            except ConfigurationError:
                if pool is not None:
                    await pool.close()
                raise
            except failures as exc:
                if pool is not None:
                    pool.terminate()
                raise ConfigurationError(
                    f"cannot use PostgreSQL at {self.where}: {type(exc).__name__}: {exc}"
                ) from exc
            self._pool, self._transaction_pool = pool, transactions
            if self._cleanup:
                self._cleaner = asyncio.create_task(
                    self._clean_forever(), name="idempotency-cleanup"
                )
            logger.info(
                "postgres idempotency store open",
                extra={"postgres": self.where, "schema": self.schema},
            )

    async def aclose(self) -> None:
        """Stop the cleanup and close both pools (their connections end their transactions)."""
        if self._cleaner is not None:
            self._cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleaner
            self._cleaner = None
        for pool in (self._transaction_pool, self._pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), self.connect_timeout_seconds)
                except unavailable_errors():  # TimeoutError included
                    pool.terminate()
        self._pool = self._transaction_pool = None

    async def _store_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            await self.open()
        assert self._pool is not None  # noqa: S101 - open() sets it or raises
        return self._pool

    async def transaction_pool(self) -> asyncpg.Pool:
        """The pool handlers' transactions run on (opened with the store)."""
        self._loop.check()
        if self._transaction_pool is None:
            await self.open()
        assert self._transaction_pool is not None  # noqa: S101 - open() sets it or raises
        return self._transaction_pool

    # -- calls ------------------------------------------------------------------------------

    async def _fetch(self, what: str, query: str, *args: object) -> list[asyncpg.Record]:
        """One function call on the store's pool; every failure is StoreUnavailableError."""
        self._loop.check()  # before the catch-all below: a wrong loop is the caller's bug
        try:
            pool = await self._store_pool()
            self.round_trips += 1
            deadline = asyncio.get_running_loop().time() + self.call_timeout_seconds
            async with asyncio.timeout_at(deadline):
                connection = await pool.acquire()
            try:
                async with asyncio.timeout_at(deadline):
                    return await connection.fetch(query, *args)
            except driver().PostgresError:
                raise  # the server answered with an error: the connection is fine
            except BaseException:
                # Cut off mid-call (timeout, cancellation, a broken socket): drop the connection
                # rather than wait for the server to acknowledge a cancel; a frozen server
                # never would, and the release below would wait with it.
                connection.terminate()
                raise
            finally:
                await pool.release(connection)
        except ConfigurationError as exc:
            raise StoreUnavailableError(f"the idempotency {what} failed: {exc}") from exc
        except unavailable_errors() as exc:
            # A call cut off mid-way may have committed: every function is safe to repeat.
            raise StoreUnavailableError(
                f"PostgreSQL at {self.where} failed the idempotency {what}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the database answers (for readiness checks)."""
        await self._fetch("ping", "SELECT 1")

    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, owner: str, lease_seconds: float
    ) -> list[ClaimResult]:
        """Claim every key in one call (see ``IdempotencyStore.claim_many``)."""
        lease = milliseconds(_limits.lease(lease_seconds))
        if not requests:
            return []
        for request in requests:
            fence_base(request.key)  # only prefix:scope:key, like every store
        rows = await self._fetch(
            "claim",
            self._sql.claim,
            [request.key for request in requests],
            [request.fingerprint for request in requests],
            [request.owner for request in requests],  # None: the call's owner
            owner,
            lease,
        )
        results: list[ClaimResult | None] = [None] * len(requests)
        for index, status, token, result in rows:
            request = requests[index - 1]
            results[index - 1] = ClaimResult(request.key, _STATUSES[status], token, result)
        return [result for result in results if result is not None]

    async def complete_many(
        self, completions: Sequence[Completion], *, retention_seconds: float
    ) -> list[bool]:
        """Complete claims still ours (see ``IdempotencyStore.complete_many``)."""
        _limits.retention(retention_seconds)
        if not completions:
            return []
        self.check_results(completions)
        return flags(
            await self._fetch(
                "completion",
                self._sql.complete,
                *completion_arguments(completions, retention_seconds=retention_seconds),
            ),
            len(completions),
        )

    async def release_many(self, held: Sequence[Held]) -> list[bool]:
        """Release claims still ours; one with recovery points keeps them for the next claim."""
        if not held:
            return []
        rows = await self._fetch(
            "release", self._sql.release, [h.key for h in held], [h.token for h in held]
        )
        return flags(rows, len(held))

    async def renew_many(self, held: Sequence[Held], *, lease_seconds: float) -> list[bool]:
        """Extend leases still ours (see ``IdempotencyStore.renew_many``)."""
        lease = milliseconds(_limits.lease(lease_seconds))
        if not held:
            return []
        rows = await self._fetch(
            "renewal",
            self._sql.renew,
            [h.key for h in held],
            [h.token for h in held],
            lease,
        )
        return flags(rows, len(held))

    async def count_many(
        self, changes: Sequence[CountChange], *, ttl_seconds: float
    ) -> list[dict[str, int]]:
        """Change and read per-key counters in one call (see ``CountingStore``)."""
        ttl = milliseconds(_limits.retention(ttl_seconds))
        if not changes:
            return []
        rows = await self._fetch(
            "counters",
            self._sql.count,
            [change.key for change in changes],
            [change.field for change in changes],
            [change.amount for change in changes],
            ttl,
        )
        answers: list[dict[str, int]] = [{} for _ in changes]
        for index, counters in rows:
            # asyncpg hands jsonb back as its text
            answers[index - 1] = {k: int(v) for k, v in json.loads(counters).items()}
        return answers

    # -- transactions -----------------------------------------------------------------------

    def transactional(
        self,
        held: Held,
        *,
        retention_seconds: float,
        on_completed: Callable[[], None] | None = None,
    ) -> TransactionalClaim:
        """Transactions for a claim we hold: its writes commit with its completion or steps."""
        from .postgres_transaction import TransactionalClaim

        return TransactionalClaim(
            self, held, retention_seconds=retention_seconds, on_completed=on_completed
        )

    @property
    def statements(self) -> Statements:
        """The SQL of each call, for the transactional form (same functions, caller's tx)."""
        return self._sql

    # -- cleanup ----------------------------------------------------------------------------

    async def cleanup(self, *, batch_size: int | None = None, max_batches: int = 1) -> int:
        """Delete expired records, ``batch_size`` per short transaction; how many went."""
        size = batch_size or self._cleanup_batch
        deleted = 0
        for _ in range(max_batches):
            rows = await self._fetch("cleanup", self._sql.cleanup, size)
            count = int(rows[0][0]) if rows else 0
            deleted += count
            if count < size:
                break
        return deleted

    async def _clean_forever(self) -> None:
        # Every store of a fleet runs this; jitter keeps them from all deleting at once, and
        # SKIP LOCKED keeps two that do from waiting on each other.
        while True:
            await asyncio.sleep(self._cleanup_interval * random.uniform(0.5, 1.5))  # noqa: S311
            try:
                deleted = await self.cleanup(max_batches=_MAX_CLEANUP_BATCHES)
            except StoreUnavailableError as exc:
                logger.warning(
                    "idempotency cleanup failed; next interval", extra={"error": str(exc)}
                )
                continue
            if deleted:
                logger.info("expired idempotency records deleted", extra={"deleted": deleted})
