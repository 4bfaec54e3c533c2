"""The store's own line to Redis (``_script_calls``): packing, reuse, and never a stale reply."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis.asyncio
from pydantic import SecretStr
from redis.exceptions import NoScriptError

from fargate_runtime.idempotency import IdempotencySettings, _background
from fargate_runtime.idempotency._script_calls import MAX_IDLE_CONNECTIONS, ScriptCalls, pack
from fargate_runtime.idempotency.connection import redis_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def test_pack_matches_redis_py_wire_format() -> None:
    args: list[str | bytes | int] = ["EVALSHA", "ab" * 20, 2, "k:é", b"\x00\r\n", 0, -7, ""]
    packer = redis.asyncio.Connection()
    assert pack(args) == b"".join(packer.pack_command(*args))


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client built the way the store builds its own (retries on, no socket timeout)."""
    made = redis_client(IdempotencySettings(redis_url=SecretStr(redis_url)), socket_timeout=False)
    assert isinstance(made, redis.asyncio.Redis)
    try:
        yield made
    finally:
        await made.aclose()


async def _client_id(calls: ScriptCalls) -> int:
    reply = await calls.call(pack(["CLIENT", "ID"]))
    assert isinstance(reply, int)
    return reply


async def test_calls_reuse_one_connection(client: redis.asyncio.Redis) -> None:
    calls = ScriptCalls(client.connection_pool)
    first = await _client_id(calls)
    for _ in range(5):
        assert await _client_id(calls) == first
    await calls.aclose()


async def test_error_reply_keeps_the_connection(client: redis.asyncio.Redis) -> None:
    calls = ScriptCalls(client.connection_pool)
    first = await _client_id(calls)
    with pytest.raises(NoScriptError):
        await calls.call(pack(["EVALSHA", "0" * 40, 0]))
    assert await _client_id(calls) == first
    await calls.aclose()


async def test_cancelled_call_never_hands_its_reply_to_the_next(
    client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """A call cut off before its reply (cancelled here) drops its socket: the next call gets
    its own answer on a new connection, not the abandoned command's late reply."""
    calls = ScriptCalls(client.connection_pool)
    first = await _client_id(calls)
    blocked = asyncio.create_task(calls.call(pack(["BLPOP", f"{redis_prefix}:empty", 5])))
    # Wait until Redis shows the BLPOP blocked, so the cancellation lands mid-call.
    async with asyncio.timeout(10):
        while not any(c["cmd"] == "blpop" for c in await client.client_list()):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert await calls.call(pack(["ECHO", "mine"])) == b"mine"
    assert await _client_id(calls) != first
    await calls.aclose()


async def test_connection_killed_while_idle_is_replaced(client: redis.asyncio.Redis) -> None:
    """Redis restarted or the idle connection dropped: the next call reconnects (client retry)."""
    calls = ScriptCalls(client.connection_pool)
    first = await _client_id(calls)
    assert await client.client_kill_filter(_id=str(first)) == 1
    assert await calls.call(pack(["ECHO", "again"])) == b"again"
    assert await _client_id(calls) != first
    await calls.aclose()


async def test_close_returns_connections_to_the_pool(client: redis.asyncio.Redis) -> None:
    pool = client.connection_pool
    calls = ScriptCalls(pool)
    await asyncio.gather(*(_client_id(calls) for _ in range(3)))
    borrowed = len(pool._in_use_connections)
    assert borrowed >= 1
    await calls.aclose()
    assert len(pool._in_use_connections) == 0
    assert len(pool._available_connections) == borrowed


async def test_concurrent_calls_each_get_their_own_reply(client: redis.asyncio.Redis) -> None:
    calls = ScriptCalls(client.connection_pool)
    words = [f"call-{index}" for index in range(50)]  # within the pool's max_connections
    replies = await asyncio.gather(*(calls.call(pack(["ECHO", word])) for word in words))
    assert replies == [word.encode() for word in words]
    # Connections past the idle cap go back to the pool in background tasks: wait for those.
    await asyncio.gather(*_background._background)
    # After the burst the store keeps a few connections; the rest are the pool's again.
    held = len(client.connection_pool._in_use_connections)
    assert 1 <= held <= MAX_IDLE_CONNECTIONS
    assert client.connection_pool._available_connections
    assert await client.ping()
    await calls.aclose()


async def test_burst_beyond_max_connections_waits_its_turn(redis_url: str) -> None:
    """More calls at once than the pool allows: they queue for the store's connections."""
    small = redis.asyncio.Redis.from_url(redis_url, max_connections=2)
    calls = ScriptCalls(small.connection_pool)
    words = [f"burst-{index}" for index in range(30)]
    replies = await asyncio.gather(*(calls.call(pack(["ECHO", word])) for word in words))
    assert replies == [word.encode() for word in words]
    assert len(small.connection_pool._in_use_connections) == 2
    await calls.aclose()
    await small.aclose()


async def test_cancelled_waiter_loses_no_connection(
    client: redis.asyncio.Redis, redis_url: str, redis_prefix: str
) -> None:
    single = redis.asyncio.Redis.from_url(redis_url, max_connections=1)
    calls = ScriptCalls(single.connection_pool)
    queue = f"{redis_prefix}:queue"
    holder = asyncio.create_task(calls.call(pack(["BLPOP", queue, 10])))
    async with asyncio.timeout(10):
        while not any(c["cmd"] == "blpop" for c in await client.client_list()):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    waiter = asyncio.create_task(calls.call(pack(["ECHO", "never"])))
    await asyncio.sleep(0)  # let it queue behind the holder
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await client.rpush(queue, "item")
    assert await holder == [queue.encode(), b"item"]
    async with asyncio.timeout(5):  # the one connection came back: this does not hang
        assert await calls.call(pack(["ECHO", "after"])) == b"after"
    await calls.aclose()
    await single.aclose()
