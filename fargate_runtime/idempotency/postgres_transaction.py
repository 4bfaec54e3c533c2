"""Exactly-once database effects: the handler's writes and the record commit in one transaction.

A claim we hold (``Held``: key and fencing token) opens transactions on the store's transaction
pool. The last statement before COMMIT is the record's own write, fenced on the token and the
lease, in the same transaction as the handler's writes::

    BEGIN
      handler's writes ...                       (any number of statements)
      idempotency_complete(key, token, result)   fails unless the claim is still ours
    COMMIT                                       -> writes and "completed" land together

A crash before COMMIT leaves neither: the claim's lease ends, the key is claimable again and
nothing was written. A crash after it leaves both: the next delivery finds the key completed. A
stale owner (lease lost, another worker holding the key) fails the fenced write and rolls its
own writes back: it can never commit. The row lock that write takes is held only until the
COMMIT right after it, so claims by other workers never wait behind a running handler.

Recovery points (Brandur Leach's "Stripe-like idempotency keys in Postgres") split a multi-step
effect into transactions that each commit their writes with a named step; a redelivery resumes
after the last step committed instead of starting over::

    recovery = store.transactional(held, retention_seconds=...)   # context.recovery in SQS
    done = await recovery.steps()              # () on a fresh key
    if "reserved" not in done:
        async with recovery.step("reserved") as tx:
            await tx.execute("INSERT INTO reservations ...")
    receipt = await provider.charge(..., idempotency_key=recovery.key)  # outside a transaction
    async with recovery.transaction() as tx:   # the last one completes the record
        await tx.execute("UPDATE reservations SET receipt = $1 ...", receipt.id)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..errors import LeaseLostError, StoreUnavailableError
from . import _limits
from ._postgres_calls import completion_arguments, flags, unavailable_errors
from ._store import Completion
from .claim import ReplayableResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from typing import TypeAlias

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    # What a pool hands out: a proxy with every method of asyncpg.Connection.
    Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]

    from ..errors import ResultUnavailableError
    from ._store import Held
    from .postgres_store import PostgresStore

__all__ = ["Transaction", "TransactionalClaim"]

logger = logging.getLogger("fargate_runtime.idempotency.postgres")

# A rollback that takes longer than this is given up: the connection is closed instead, which
# makes PostgreSQL roll the transaction back on its side.
_ROLLBACK_SECONDS = 2.0


class Transaction(ReplayableResult):
    """One open transaction of a claim: where the handler writes, and the result to keep.

    ``connection`` is the ``asyncpg.Connection`` the transaction runs on; ``execute``,
    ``fetch``, ``fetchrow`` and ``fetchval`` are its methods, for short handlers. ``result``
    and ``set_result`` are the guard's: what the completion stores (bytes, or what the guard
    form encodes) and duplicates replay.
    """

    __slots__ = ("_connection", "token")

    def __init__(
        self,
        connection: Connection | None,
        *,
        key: str,
        token: int,
        replayed: bool = False,
        result: object = None,
        unavailable: ResultUnavailableError | None = None,
    ) -> None:
        super().__init__(key, replayed=replayed, result=result, unavailable=unavailable)
        self._connection = connection
        self.token = token

    @property
    def connection(self) -> Connection:
        """The connection of the open transaction (none for a replayed key: nothing runs)."""
        if self._connection is None:
            raise RuntimeError(f"idempotency key {self.key!r} is replayed: no transaction runs")
        return self._connection

    async def execute(self, query: str, *args: Any) -> str:
        """``connection.execute``."""
        return await self.connection.execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """``connection.fetch``."""
        return await self.connection.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        """``connection.fetchrow``."""
        return await self.connection.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        """``connection.fetchval``."""
        return await self.connection.fetchval(query, *args)


class TransactionalClaim:
    """Transactions of one claim we hold; see the module docstring for the guarantees.

    ``transaction()`` commits the handler's writes with the completion (once); ``step(name)``
    commits them with a recovery point. ``encode`` turns ``Transaction.result`` into the bytes
    to store (default: bytes as they are, None as empty). ``on_completed`` runs once the
    completion has committed (the SQS consumer then skips its own completion call).
    """

    def __init__(
        self,
        store: PostgresStore,
        held: Held,
        *,
        retention_seconds: float,
        encode: Callable[[object], bytes] | None = None,
        on_completed: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._held = held
        self._retention = _limits.retention(retention_seconds)
        self._encode = encode or _raw
        self._on_completed = on_completed
        self._steps: tuple[str, ...] | None = None
        self.completed = False

    @property
    def key(self) -> str:
        """The stored key (``prefix:scope:key``): pass it downstream."""
        return self._held.key

    @property
    def token(self) -> int:
        """Our fencing token."""
        return self._held.token

    async def steps(self) -> tuple[str, ...]:
        """Recovery points committed so far for this key, by any attempt, in order.

        One read the first time (the claim may have resumed a crashed attempt's record), then
        kept up to date by ``step``. Raises LeaseLostError when the claim is no longer ours.
        """
        if self._steps is None:
            rows = await self._store._fetch(
                "recovery point read", self._store.statements.steps, self.key, self.token
            )
            recorded = rows[0][0] if rows else None
            if recorded is None:
                raise LeaseLostError(self.key, self.token)
            self._steps = tuple(recorded)
        return self._steps

    async def recovery_point(self) -> str | None:
        """The last recovery point committed for this key (None: start from the beginning)."""
        done = await self.steps()
        return done[-1] if done else None

    def transaction(
        self, *, isolation: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """A transaction whose COMMIT also completes the record (at most once per claim).

        Raises LeaseLostError (everything written rolled back) when the claim is not ours any
        more, and StoreUnavailableError when the database failed; after a failed COMMIT the
        outcome is unknown, and consistent either way: both landed, or neither. At
        ``repeatable_read`` or ``serializable``, a transaction open across a lease renewal fails
        to serialize (the renewal updated the record after its snapshot) and rolls back: keep
        those shorter than a third of the lease.
        """
        return self._run(None, isolation)

    def step(
        self, name: str, *, isolation: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """A transaction whose COMMIT also records the recovery point ``name``.

        A step recorded before (check ``steps()`` first) raises RuntimeError and its writes are
        rolled back: a step's effect commits once.
        """
        if not name or not name.isprintable():
            raise ValueError(f"recovery point name {name!r} must be printable and non-empty")
        return self._run(name, isolation)

    @contextlib.asynccontextmanager
    async def _run(self, step: str | None, isolation: str | None) -> AsyncIterator[Transaction]:
        if self.completed:
            raise RuntimeError(f"idempotency key {self.key!r} is already completed")
        store = self._store
        try:
            pool = await store.transaction_pool()
            # A handler may wait its turn for a connection (backpressure), not for ever.
            connection = await pool.acquire(timeout=store.connect_timeout_seconds)
        except Exception as exc:
            raise StoreUnavailableError(
                f"no PostgreSQL connection for a transaction at {store.where}: {exc!r}"
            ) from exc
        try:
            transaction = connection.transaction(isolation=isolation)  # type: ignore[arg-type]
            await transaction.start()
            handle = Transaction(connection, key=self.key, token=self.token)
            try:
                yield handle
                await self._record(connection, step, handle)
                try:
                    await transaction.commit()
                except unavailable_errors() as exc:
                    raise StoreUnavailableError(
                        f"COMMIT of idempotency key {self.key!r} failed ({exc!r}): its writes "
                        "and its record landed together or not at all"
                    ) from exc
            except BaseException as exc:
                await _abort(connection, transaction, exc)
                raise
        finally:
            # Bounded: the reset on release is a round trip too, and a server that froze after
            # our COMMIT must not hold the handler (asyncpg closes the connection on timeout).
            await pool.release(connection, timeout=store.call_timeout_seconds)
        if step is None:
            self.completed = True
            if self._on_completed is not None:
                self._on_completed()
        elif self._steps is not None:
            self._steps = (*self._steps, step)

    async def _record(self, connection: Connection, step: str | None, handle: Transaction) -> None:
        """The fenced write of the record, last in the handler's transaction."""
        sql = self._store.statements
        try:
            if step is None:
                completion = Completion(self.key, self.token, self._encode(handle.result))
                self._store.check_results([completion])
                arguments = completion_arguments([completion], retention_seconds=self._retention)
                (done,) = flags(await connection.fetch(sql.complete, *arguments), 1)
                status = 1 if done else 0
            else:
                status = await connection.fetchval(
                    sql.record_step, self.key, self.token, step, round(self._retention * 1000)
                )
        except unavailable_errors() as exc:
            raise StoreUnavailableError(
                f"PostgreSQL failed the idempotency record of {self.key!r}: {exc!r}"
            ) from exc
        if status == 0:
            logger.warning(
                "idempotency lease lost: the transaction is rolled back",
                extra={"idempotency_key": self.key, "fencing_token": self.token},
            )
            raise LeaseLostError(self.key, self.token)
        if status == 2:
            raise RuntimeError(
                f"recovery point {step!r} of {self.key!r} was committed before; its writes "
                "were rolled back (skip the steps that steps() lists)"
            )


def _raw(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(
        f"a transaction result must be bytes here, not {type(value).__name__} (the guard form "
        "idem.transaction() serializes objects)"
    )


async def _abort(
    connection: Connection,
    transaction: asyncpg.transaction.Transaction,
    error: BaseException,
) -> None:
    """Roll back after ``error``; close the connection when that cannot be done cleanly."""
    if isinstance(error, asyncio.CancelledError) or connection.is_closed():
        # No waiting while cancelled: closing the connection makes the server roll back.
        connection.terminate()
        return
    try:
        async with asyncio.timeout(_ROLLBACK_SECONDS):
            await transaction.rollback()
    except Exception:  # noqa: BLE001 - whatever failed, the connection's end rolls back
        connection.terminate()
    except BaseException:
        connection.terminate()
        raise
