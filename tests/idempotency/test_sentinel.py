"""Sentinel failover: a store on ``Sentinel.master_for()`` follows the new master by itself.

A private master, its replica and one ``redis-server --sentinel`` run on free loopback ports in
a temporary directory; ``SENTINEL FAILOVER`` promotes the replica. The store's old connection
path kept talking to the demoted master ("previous master is now a slave") until a restart;
through redis-py's own path the client's retry reconnects to whichever master Sentinel names.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from fargate_runtime.idempotency import Idempotency, RedisStore, StoreUnavailableError
from fargate_runtime.local import free_port, redis_answers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICE = "frt-master"
RECOVERY_SECONDS = 10.0  # a forced failover on loopback takes one to three seconds


def _until(condition: Callable[[], bool], *, seconds: float, what: str) -> None:
    # Polled: replication links and Sentinel's view announce themselves only when asked.
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {seconds} s")
        time.sleep(0.05)


def _info(port: int, section: str) -> dict[str, Any]:
    client = redis.Redis(port=port)
    try:
        info: dict[str, Any] = client.info(section)
        return info
    finally:
        client.close()


def _sentinel_command(port: int, *args: str) -> Any:
    client = redis.Redis(port=port)
    try:
        return cast("Any", client).execute_command(*args)
    finally:
        client.close()


def _failover(sentinel_port: int) -> bool:
    """Ask Sentinel to fail over; False while it has no replica it deems good yet."""
    try:
        _sentinel_command(sentinel_port, "SENTINEL", "FAILOVER", SERVICE)
    except redis.ResponseError as exc:
        if "NOGOODSLAVE" in str(exc):
            return False
        raise
    return True


@pytest.fixture
def sentinel_setup() -> Iterator[tuple[int, int, int]]:
    """(master port, replica port, sentinel port) of a fresh private set, torn down after."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is needed for a Sentinel set")
    master, replica, sentinel = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="fargate-runtime-sentinel-") as workdir:
        config = Path(workdir) / "sentinel.conf"
        config.write_text(
            f"port {sentinel}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
        argvs = [
            ["redis-server", "--port", str(master), *common],
            ["redis-server", "--port", str(replica), "--replicaof", f"127.0.0.1 {master}", *common],
            ["redis-server", str(config), "--sentinel"],
        ]
        servers = [
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for argv in argvs
        ]
        try:
            _until(
                lambda: all(redis_answers("127.0.0.1", p) for p in (master, replica, sentinel)),
                seconds=15,
                what="the servers did not answer",
            )
            _until(
                lambda: _info(replica, "replication").get("master_link_status") == "up",
                seconds=15,
                what="the replica did not sync",
            )
            _until(
                lambda: bool(_sentinel_command(sentinel, "SENTINEL", "REPLICAS", SERVICE)),
                seconds=15,
                what="Sentinel did not discover the replica",
            )
            yield master, replica, sentinel
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(timeout=10)


async def test_calls_succeed_again_within_seconds_of_a_failover(
    sentinel_setup: tuple[int, int, int],
) -> None:
    """After ``SENTINEL FAILOVER`` and the old master's demotion ("previous master is now a
    slave" on its pooled connections), the store's calls succeed against the promoted replica
    within seconds, and a record completed before the failover still replays."""
    master, replica, sentinel_port = sentinel_setup
    sentinel = Sentinel([("127.0.0.1", sentinel_port)], socket_timeout=1.0)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        SERVICE,
        socket_timeout=1.0,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3),
    )
    store = RedisStore(client, call_timeout_seconds=2.0)
    idem = Idempotency(store, prefix="sentinel", owner="worker")
    try:
        await store.open()
        async with idem.guard("payments", "before") as claim:
            claim.set_result("charged before")
        _sentinel_command(master, "WAIT", "1", "2000")  # replicated before the switch

        _until(
            lambda: _failover(sentinel_port), seconds=RECOVERY_SECONDS, what="no failover started"
        )
        started = time.monotonic()
        _until(
            lambda: _info(replica, "replication")["role"] == "master",
            seconds=RECOVERY_SECONDS,
            what="Sentinel did not promote the replica",
        )
        # What Sentinel itself tells the old master some seconds later (it waits to hear other
        # Sentinels' configs first): until then that master still takes writes, which the switch
        # throws away (FACTS.md: a failover can lose acknowledged writes).
        _sentinel_command(master, "REPLICAOF", "127.0.0.1", str(replica))
        failures = 0
        while True:
            try:
                async with idem.guard("payments", f"during-{failures}") as claim:
                    claim.set_result("charged")
                break
            except StoreUnavailableError:
                failures += 1  # fail closed meanwhile: nothing ran
                assert time.monotonic() - started < RECOVERY_SECONDS
                await asyncio.sleep(0.1)  # a caller's backoff between retries of new work
        recovered_seconds = time.monotonic() - started
        assert recovered_seconds < RECOVERY_SECONDS
        # The store's pooled connection met the demoted master (READONLY, which redis-py turns
        # into "the previous master is now a slave" and retries), then wrote to the new one.
        assert "errorstat_READONLY" in _info(master, "errorstats")
        assert _sentinel_command(replica, "EXISTS", f"sentinel:payments:during-{failures}") == 1

        for index in range(10):  # and it stays recovered
            async with idem.guard("payments", f"after-{index}") as claim:
                claim.set_result(index)
        async with idem.guard("payments", "before") as replay:
            assert replay.replayed
            assert replay.result == "charged before"
        assert idem.stats.completed == 12
        assert idem.stats.store_errors == failures
    finally:
        await client.aclose()
        for managed in sentinel.sentinels:
            await managed.aclose()
