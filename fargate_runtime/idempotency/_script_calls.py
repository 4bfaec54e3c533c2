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
them, and closing the client closes them even if the store is never closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ._background import spawn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio.connection import AbstractConnection, ConnectionPool

__all__ = ["ScriptCalls", "pack"]


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
        self._closed = False

    async def call(self, request: bytes) -> Any:
        """Send one packed command and return its parsed reply (retried per the client)."""
        if self._idle:
            connection = self._idle.pop()
        else:
            connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
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
        if self._closed:
            spawn(self._pool.release(connection))
        else:
            self._idle.append(connection)

    async def aclose(self) -> None:
        """Return the idle connections to the pool (calls in flight return theirs after)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._pool.release(connection)
