"""Redis stopped and restarted under a run: fail-closed means nothing runs twice or falsely done."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING, cast

import pytest
import redis
import redis.asyncio
from pydantic import SecretStr

from fargate_runtime.idempotency import (
    Idempotency,
    IdempotencySettings,
    RedisStore,
    StoreUnavailableError,
    open_store,
)
from tests.idempotency.conftest import texts

if TYPE_CHECKING:
    from fargate_runtime.local import RedisServer

pytestmark = pytest.mark.integration


def settings_for(server: RedisServer) -> IdempotencySettings:
    """Settings for the private server: fail fast so the test does not wait on retries."""
    return IdempotencySettings(
        redis_url=SecretStr(server.url),
        key_prefix="outage",
        retries=1,
        socket_timeout_seconds=0.5,
        socket_connect_timeout_seconds=0.5,
    )


async def process(
    idem: Idempotency, keys: list[str], effects: redis.asyncio.Redis, effects_key: str
) -> tuple[list[str], list[str]]:
    """Run each key's effect under the guard, concurrently; return (done, failed closed)."""
    done: list[str] = []
    refused: list[str] = []

    async def one(key: str) -> None:
        try:
            async with idem.guard("payments", key, payload=key) as claim:
                if not claim.replayed:
                    await effects.rpush(effects_key, key)
            done.append(key)
        except StoreUnavailableError:
            refused.append(key)

    await asyncio.gather(*(one(key) for key in keys))
    return done, refused


async def test_stop_and_restart_fails_closed_and_runs_each_effect_once(
    private_redis: RedisServer, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """While Redis is down no effect runs and nothing is reported done; after, each runs once."""
    effects_key = f"{redis_prefix}:effects"  # on the shared Redis, not the one we stop
    async with open_store(settings_for(private_redis)) as store:
        idem = Idempotency(store, prefix="outage", owner="worker")
        before = [f"a{i}" for i in range(10)]
        during = [f"b{i}" for i in range(10)]

        done, refused = await process(idem, before, redis_client, effects_key)
        assert sorted(done) == sorted(before)
        assert refused == []

        private_redis.stop()
        done, refused = await process(idem, during, redis_client, effects_key)
        assert done == []
        assert sorted(refused) == sorted(during)
        assert await redis_client.llen(effects_key) == len(before)

        # Back, empty (nothing persisted, script cache gone): the refused work now runs once.
        private_redis.start()
        done, refused = await process(idem, during, redis_client, effects_key)
        assert sorted(done) == sorted(during)
        assert refused == []
        done, refused = await process(idem, during, redis_client, effects_key)
        assert sorted(done) == sorted(during)  # replayed this time

    effects = texts(await redis_client.lrange(effects_key, 0, -1))
    assert collections.Counter(effects) == dict.fromkeys(before + during, 1)


async def test_outage_between_effect_and_completion_is_reported_as_failure(
    private_redis: RedisServer,
) -> None:
    """Redis dying mid-block makes the guard raise: the work is never reported as recorded.

    The effect did run, so the retry after the restart runs it again: that is the documented
    gap the key and fencing token passed downstream close. The retry's token is higher than the
    lost one (the fencing counter restarts from the server clock), so a downstream that keeps the
    highest token it has seen accepts the retry and would refuse the older writer.
    """
    async with open_store(settings_for(private_redis)) as store:
        idem = Idempotency(store, prefix="outage", owner="worker")
        tokens: list[int] = []

        async def charge_while_redis_dies() -> None:
            async with idem.guard("payments", "p1") as first:
                tokens.append(first.token)
                private_redis.stop()
                first.set_result("charged")

        with pytest.raises(StoreUnavailableError):
            await charge_while_redis_dies()
        assert idem.stats.completed == 0

        private_redis.start()
        async with idem.guard("payments", "p1") as retry:
            assert not retry.replayed
            retry.set_result("charged")
        assert retry.token > tokens[0]


async def test_scripts_reload_after_the_server_forgets_them(private_redis: RedisServer) -> None:
    """A restart empties the script cache; the next call answers normally (NOSCRIPT handled)."""
    async with open_store(settings_for(private_redis)) as store:
        idem = Idempotency(store, prefix="outage", owner="worker")
        async with idem.guard("payments", "p1"):
            pass
        private_redis.restart()
        async with idem.guard("payments", "p2") as claim:
            assert claim.token > 0
        async with idem.guard("payments", "p2") as replay:
            assert replay.replayed
        async with idem.guard("payments", "p3"):
            pass
        assert isinstance(store, RedisStore)
        stats = await store.client.info("commandstats")
    # Each script's body is sent once (claim, complete: EVAL after NOSCRIPT), then only SHAs:
    # the replay's claim and p3's claim and completion.
    assert stats["cmdstat_eval"]["calls"] == 2
    assert stats["cmdstat_evalsha"]["failed_calls"] == 2
    assert stats["cmdstat_evalsha"]["calls"] - stats["cmdstat_evalsha"]["failed_calls"] == 3


async def test_a_redis_that_never_answers_fails_closed_within_the_call_timeout() -> None:
    """A black-holed Redis (connects, never replies) ends each call with StoreUnavailableError."""
    silent: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # read nothing back, answer nothing
        await reader.read()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = IdempotencySettings(
        redis_url=SecretStr(f"redis://127.0.0.1:{port}"), call_timeout_seconds=0.3, retries=0
    )
    try:
        async with open_store(settings) as store:
            idem = Idempotency(store, prefix="outage", owner="worker")
            ran = False
            with pytest.raises(StoreUnavailableError, match=r"within 0\.3 s"):
                async with idem.guard("payments", "p1"):
                    ran = True
            assert not ran
    finally:
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()


class ReplyDropper:
    """A loopback proxy to Redis that, once armed, cuts the connection right after Redis has
    answered the next script call, so the reply never reaches the client: a lost reply."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.armed = False
        self.dropped = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        """Listen on a free loopback port; return it."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers += [client_out, server_out]
        script_sent = asyncio.Event()

        async def upstream() -> None:
            while data := await client_in.read(65536):
                if self.armed and b"EVAL" in data:
                    script_sent.set()
                server_out.write(data)
                await server_out.drain()

        async def downstream() -> None:
            while data := await server_in.read(65536):
                if script_sent.is_set():
                    # Redis has run the script; its answer is dropped with the connection.
                    self.armed = False
                    client_out.close()
                    server_out.close()
                    self.dropped.set()
                    return
                client_out.write(data)
                await client_out.drain()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(upstream(), downstream())


async def test_a_claim_whose_reply_was_lost_is_recognised_on_retry(
    private_redis: RedisServer,
) -> None:
    """The claim runs in Redis but its reply is lost with the connection; redis-py's retry
    sends it again as the same attempt, which finds its own record and proceeds as acquired
    (before owner ids per attempt, it found the key "in progress" and stranded it for the lease).
    """
    dropper = ReplyDropper(private_redis.port)
    port = await dropper.start()
    settings = IdempotencySettings(redis_url=SecretStr(f"redis://127.0.0.1:{port}"), retries=1)
    admin = redis.Redis(port=private_redis.port)
    try:
        async with open_store(settings) as store:
            idem = Idempotency(store, prefix="outage", owner="worker")
            async with idem.guard("payments", "warm-up"):
                pass  # the scripts are cached: the dropped reply is the claim's own
            dropper.armed = True
            async with idem.guard("payments", "p1") as claim:
                assert dropper.dropped.is_set()
                stored = cast("bytes | None", admin.get("outage:payments:p1"))
                assert stored is not None
                assert stored.startswith(f"p{claim.token}:".encode())  # the first try's record
                claim.set_result("charged")
            async with idem.guard("payments", "p1") as replay:
                assert replay.replayed
                assert replay.result == "charged"
        stats = admin.info("commandstats")["cmdstat_evalsha"]
        # By SHA (the warm-up's went by EVAL after NOSCRIPT): the claim and its retry, the
        # completion, the replay's claim.
        assert stats["calls"] - stats["failed_calls"] == 4
    finally:
        admin.close()
        await dropper.close()
