"""The store's own line to a standalone Redis: commands packed here, connections kept here.

A script call is one round trip, so everything around it is overhead that a batch pays twice
(claim, then complete). redis-py's ``execute_command`` path costs 20 to 30 µs a call on a
2-core machine beyond the socket's own round trip (pool lock, a readiness probe of the socket,
observability hooks, generic packing), about a fifth of a batch on loopback. ``ScriptCalls``
borrows connections from the client's pool once and keeps them between calls, and packs the
RESP request itself.

What it keeps from redis-py: connecting, TLS, AUTH, the RESP parser (error replies become
``ResponseError`` subclasses such as ``NoScriptError``) and the client's ``Retry`` policy.
What makes skipping the pool's readiness probe safe: a connection goes back to the idle list
only after its reply was read whole; any other outcome (timeout, cancellation, a dropped
socket) disconnects it, and the next call on it reconnects.

Borrowed connections stay counted as in use by the pool, so ``max_connections`` still bounds
them (redis-py's default is 100), and closing the client closes them even if the store is never
closed. At most ``MAX_IDLE_CONNECTIONS`` are kept between calls; the rest go back to the pool.
A burst of calls beyond the pool's bound waits for one of the store's connections to come back,
in arrival order, instead of failing (the store's call timeout still bounds the wait).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING, Any

from redis.exceptions import MaxConnectionsError, ResponseError

from ._background import spawn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio.connection import AbstractConnection, ConnectionPool

__all__ = ["MAX_IDLE_CONNECTIONS", "ScriptCalls", "pack"]

# Kept idle between calls at most; more go back to the pool after a burst, so that whoever
# else uses the client (a readiness probe, the application) still finds connections there.
MAX_IDLE_CONNECTIONS = 16


def pack(args: Sequence[str | bytes | int]) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8, int as decimal)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class ScriptCalls:
    """Round trips on connections borrowed from ``pool`` and kept idle between calls."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[AbstractConnection] = []
        self._borrowed = 0
        self._waiters: collections.deque[asyncio.Future[AbstractConnection]] = collections.deque()
        self._closed = False

    async def _connection(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        self._borrowed += 1  # counted from the start: the pool counts it from the start too
        try:
            connection: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except MaxConnectionsError:
            self._borrowed -= 1
            if not self._borrowed:
                raise  # none of ours will come back: the pool is full with others' connections
            return await self._wait_for_one()
        except BaseException:
            self._borrowed -= 1
            raise
        return connection

    async def _wait_for_one(self) -> AbstractConnection:
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection just as we were cancelled: pass it on, don't lose it.
                self._give_back(waiter.result())
            else:
                with contextlib.suppress(ValueError):  # a give-back may have skipped it already
                    self._waiters.remove(waiter)
            raise

    async def call(self, request: bytes) -> Any:
        """Send one packed command and return its parsed reply (retried per the client)."""
        connection = await self._connection()
        try:
            reply = await connection.retry.call_with_retry(
                lambda: self._round_trip(connection, request),
                lambda _error: connection.disconnect(nowait=True),
            )
        except ResponseError:
            # Redis answered (with an error, e.g. NOSCRIPT): the reply was read whole.
            self._give_back(connection)
            raise
        except BaseException:
            # The reply may still be on its way: this socket must not carry another request.
            await connection.disconnect(nowait=True)
            self._give_back(connection)
            raise
        self._give_back(connection)
        return reply

    @staticmethod
    async def _round_trip(connection: AbstractConnection, request: bytes) -> Any:
        await connection.send_packed_command(request, check_health=False)
        return await connection.read_response()

    def _give_back(self, connection: AbstractConnection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if self._closed or len(self._idle) >= MAX_IDLE_CONNECTIONS:
            self._borrowed -= 1
            spawn(self._pool.release(connection))
        else:
            self._idle.append(connection)

    async def aclose(self) -> None:
        """Return the idle connections to the pool (calls in flight return theirs after)."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._borrowed -= len(idle)
        for connection in idle:
            await self._pool.release(connection)
