"""The store on the clients users really build: small and blocking pools, health checks,
OpenTelemetry's Redis instrumentation, and one event loop per store."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fargate_runtime.idempotency import ClaimStatus, Idempotency, RedisStore, scoped_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fargate_runtime.local import RedisServer

pytestmark = pytest.mark.integration

BURST = 50


def small_pool(redis_url: str, kind: str) -> redis.asyncio.Redis:
    """A client on a 4-connection pool: plain (fails when empty) or blocking (waits)."""
    if kind == "blocking":
        pool: redis.asyncio.ConnectionPool = redis.asyncio.BlockingConnectionPool.from_url(
            redis_url, max_connections=4, timeout=5
        )
    else:
        pool = redis.asyncio.ConnectionPool.from_url(redis_url, max_connections=4)
    return redis.asyncio.Redis.from_pool(pool)


@pytest.mark.parametrize("kind", ["plain", "blocking"])
async def test_a_burst_of_guards_on_a_small_pool_leaves_room_for_the_application(
    redis_url: str, redis_prefix: str, kind: str
) -> None:
    """Fifty guards at once on 4 connections all succeed, and the application's own commands and
    the readiness probe, run all through the burst, never find the pool exhausted."""
    client = small_pool(redis_url, kind)
    store = RedisStore(client)
    idem = Idempotency(store, prefix=redis_prefix, owner="burst")
    ran: list[int] = []
    burst_over = asyncio.Event()

    async def guarded(index: int) -> None:
        async with idem.guard("charges", f"evt-{index}") as claim:
            ran.append(index)
            claim.set_result(index)

    async def application() -> int:
        commands = 0
        while not burst_over.is_set() or commands < 10:
            await client.incr(f"{redis_prefix}:app-counter")
            await store.ping()
            commands += 1
        return commands

    try:
        app = asyncio.create_task(application())
        results = await asyncio.gather(
            *(guarded(index) for index in range(BURST)), return_exceptions=True
        )
        burst_over.set()
        commands = await app
        assert [result for result in results if result is not None] == []
        assert sorted(ran) == list(range(BURST))
        assert idem.stats.completed == BURST
        assert int(await client.get(f"{redis_prefix}:app-counter") or 0) == commands
    finally:
        await client.aclose()


async def test_the_store_takes_at_most_half_the_pool(redis_url: str, redis_prefix: str) -> None:
    """While a burst runs, the store's scripts never hold more than half the pool's connections."""
    client = small_pool(redis_url, "plain")
    pool = client.connection_pool
    store = RedisStore(client)
    idem = Idempotency(store, prefix=redis_prefix, owner="burst")
    most = 0
    calls = 0

    original: Callable[..., Awaitable[Any]] = client.execute_command

    async def observed(*args: Any, **options: Any) -> Any:
        nonlocal most, calls
        calls += 1
        result = await original(*args, **options)
        return result

    def count_in_use() -> None:
        nonlocal most
        most = max(most, len(pool._in_use_connections))

    client.execute_command = observed  # type: ignore[method-assign]
    try:
        tasks = [asyncio.create_task(_run_guard(idem, index)) for index in range(BURST)]
        while not all(task.done() for task in tasks):
            count_in_use()
            await asyncio.sleep(0)  # one loop turn: sample between the calls' steps
        await asyncio.gather(*tasks)
        assert calls >= BURST * 2  # every claim and completion went through execute_command
        assert 1 <= most <= 2
    finally:
        await client.aclose()


async def _run_guard(idem: Idempotency, index: int) -> None:
    async with idem.guard("charges", f"evt-{index}") as claim:
        claim.set_result(index)


async def test_health_checks_of_the_client_run_before_the_stores_commands(
    private_redis: RedisServer,
) -> None:
    """A client made with ``health_check_interval`` PINGs an idle connection before the store's
    scripts use it, as it does before its own commands (the store's old path skipped it)."""
    client = redis.asyncio.Redis.from_url(private_redis.url, health_check_interval=0.05)
    admin = redis.Redis(port=private_redis.port)
    try:
        store = RedisStore(client)
        await store.open()
        before = admin.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
        for index in range(2):
            # A health check is due by time alone, with no event to wait for: outlive it.
            await asyncio.sleep(0.1)
            key = scoped_key("health", "s", f"k{index}")
            result = await store.claim(key, "fp", owner="o", lease_seconds=5)
            assert result.status is ClaimStatus.ACQUIRED
        after = admin.info("commandstats")["cmdstat_ping"]["calls"]
        assert after - before >= 2
    finally:
        admin.close()
        await client.aclose()


async def test_opentelemetry_redis_instrumentation_sees_the_scripts(
    redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    """An instrumented client traces the store's script calls like any other command."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    RedisInstrumentor.instrument_client(redis_client, tracer_provider=provider)
    try:
        idem = Idempotency(RedisStore(redis_client), prefix=redis_prefix, owner="traced")
        async with idem.guard("charges", "evt-1") as claim:
            claim.set_result("ok")
    finally:
        RedisInstrumentor.uninstrument_client(redis_client)
        provider.shutdown()
    names = [span.name for span in exporter.get_finished_spans()]
    assert names.count("EVALSHA") + names.count("EVAL") >= 2  # the claim and the completion


async def test_a_store_used_from_a_second_event_loop_fails_at_once(
    redis_client: redis.asyncio.Redis, redis_url: str, redis_prefix: str
) -> None:
    """A call from another thread's loop raises RuntimeError before sending anything: the key
    it tried stays free for the store's own loop."""
    other_client = redis.asyncio.Redis.from_url(redis_url)
    store = RedisStore(other_client)
    key = scoped_key(redis_prefix, "s", "k")
    await store.claim(scoped_key(redis_prefix, "s", "first"), "fp", owner="o", lease_seconds=5)
    raised: list[BaseException] = []

    def from_another_thread() -> None:
        async def claim() -> None:
            await store.claim(key, "fp", owner="o", lease_seconds=5)

        try:
            asyncio.run(claim())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread to assert on
            raised.append(exc)

    thread = threading.Thread(target=from_another_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    try:
        assert len(raised) == 1
        assert isinstance(raised[0], RuntimeError)
        assert "one store per event loop" in str(raised[0])
        assert not await redis_client.exists(key)
    finally:
        await other_client.aclose()
