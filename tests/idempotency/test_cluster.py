"""Redis Cluster: batches split by hash slot, counters placed in each slot, one script per slot.

The integration tests run against a real local 3-node cluster (``redis-server
--cluster-enabled yes`` + ``redis-cli --cluster create``); the grouping rules are also unit
tested so they hold where no cluster can be started.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis
from pydantic import SecretStr

from fargate_runtime.idempotency import (
    ClaimRequest,
    ClaimStatus,
    Completion,
    Held,
    IdempotencySettings,
    RedisStore,
    open_store,
    scoped_key,
)
from fargate_runtime.idempotency._slots import fence_key, group_by_slot, slot_of, slot_tag
from fargate_runtime.local import free_port, redis_answers

if TYPE_CHECKING:
    from collections.abc import Iterator

CLUSTER_NODES = 3


def _port_pair_free(port: int) -> bool:
    """True when ``port`` and its cluster bus port (``port + 10000``) can both be bound."""
    if port + 10000 > 65535:
        return False
    with socket.socket() as bus:
        try:
            bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            return False
    return True


def _start_cluster(workdir: str, servers: list[subprocess.Popen[bytes]]) -> list[int]:
    """Start the nodes (appended to ``servers`` at once, so a failure still stops them)."""
    ports: list[int] = []
    while len(ports) < CLUSTER_NODES:
        port = free_port()
        if port not in ports and _port_pair_free(port):
            ports.append(port)
    servers.extend(
        subprocess.Popen(
            [
                *("redis-server", "--bind", "127.0.0.1", "--port", str(port)),
                *("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"),
                *("--dir", workdir, "--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    )
    deadline = time.monotonic() + 15
    while not all(redis_answers("127.0.0.1", port) for port in ports):
        if time.monotonic() > deadline:
            raise RuntimeError("cluster nodes did not start")
        time.sleep(0.05)
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for port in ports:
        client = redis.Redis(port=port)
        try:
            while cast("Any", client).execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                if time.monotonic() > deadline + 30:
                    raise RuntimeError("cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        finally:
            client.close()
    return ports


@pytest.fixture(scope="module")
def cluster_ports() -> Iterator[list[int]]:
    """Ports of a fresh local 3-node Redis Cluster (no replicas), torn down afterwards."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are needed for a local cluster")
    with tempfile.TemporaryDirectory(prefix="fargate-runtime-cluster-") as workdir:
        servers: list[subprocess.Popen[bytes]] = []
        try:
            ports = _start_cluster(workdir, servers)
            yield ports
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(timeout=10)


def command_calls(ports: list[int], *names: str) -> dict[int, int]:
    """Successful calls of the named commands so far, per node (``INFO commandstats``)."""
    calls = {}
    for port in ports:
        client = redis.Redis(port=port)
        try:
            stats: dict[str, Any] = client.info("commandstats")
        finally:
            client.close()
        calls[port] = sum(
            stats.get(f"cmdstat_{name}", {}).get("calls", 0)
            - stats.get(f"cmdstat_{name}", {}).get("failed_calls", 0)
            for name in names
        )
    return calls


def script_calls(ports: list[int]) -> dict[int, int]:
    """Scripts run so far, per node: EVALSHA + EVAL calls that did not fail (NOSCRIPT)."""
    return command_calls(ports, "evalsha", "eval")


async def warm_up(store: RedisStore) -> None:
    """Let the client learn the slot map and every node cache every script, off the record."""
    keys = [scoped_key(prefix(), "warm-up", f"k{i}") for i in range(64)]
    claimed = await store.claim_many(
        [ClaimRequest(key, "fp") for key in keys], owner="w", lease_seconds=30
    )
    held = [Held(r.key, r.token or 0) for r in claimed]
    await store.renew_many(held, lease_seconds=30)
    await store.complete_many(
        [Completion(h.key, h.token, b"") for h in held[:32]], retention_seconds=5
    )
    await store.release_many(held[32:])


@pytest.fixture
async def cluster_store(cluster_ports: list[int]) -> Any:
    """A store on the local cluster through a cluster client built from settings."""
    settings = IdempotencySettings(
        redis_url=SecretStr(f"redis://127.0.0.1:{cluster_ports[0]}"), cluster=True
    )
    async with open_store(settings) as store:
        assert isinstance(store, RedisStore)
        await warm_up(store)
        yield store


def prefix() -> str:
    """A prefix of this test's own (the cluster is private to the module anyway)."""
    return f"frt-cluster-{uuid.uuid4().hex[:8]}"


@pytest.mark.integration
async def test_batch_spanning_slots_is_one_script_per_slot(
    cluster_store: RedisStore, cluster_ports: list[int]
) -> None:
    """Ten keys over several slots and nodes: each slot group is one script, results in order."""
    keys = [scoped_key(prefix(), "orders", f"k{i}") for i in range(10)]
    slots = {slot_of(key) for key in keys}
    assert len(slots) == 10
    before = script_calls(cluster_ports)
    reads_before = sum(command_calls(cluster_ports, "mget").values())
    claimed = await cluster_store.claim_many(
        [ClaimRequest(key, "fp") for key in keys], owner="w", lease_seconds=30
    )
    after = script_calls(cluster_ports)
    assert sum(after.values()) - sum(before.values()) == len(slots)
    assert sum(1 for port in cluster_ports if after[port] > before[port]) > 1  # several nodes
    # Each slot's records were read exactly once (one MGET per script): no script ran twice.
    assert sum(command_calls(cluster_ports, "mget").values()) - reads_before == len(slots)
    assert [result.key for result in claimed] == keys
    assert all(result.status is ClaimStatus.ACQUIRED for result in claimed)
    completions = [Completion(r.key, r.token or 0, r.key.encode()) for r in claimed]
    assert await cluster_store.complete_many(completions, retention_seconds=60) == [True] * 10
    replays = await cluster_store.claim_many(
        [ClaimRequest(key, "fp") for key in keys], owner="w2", lease_seconds=30
    )
    assert [r.result for r in replays] == [key.encode() for key in keys]
    assert [r.token for r in replays] == [r.token for r in claimed]


@pytest.mark.integration
async def test_hash_tagged_scope_batch_is_a_single_script(
    cluster_store: RedisStore, cluster_ports: list[int]
) -> None:
    """With ``prefix:{scope}:key`` a whole batch shares one slot: one script per call."""
    keys = [scoped_key(prefix(), "orders", f"k{i}", hash_tag=True) for i in range(10)]
    assert len({slot_of(key) for key in keys}) == 1
    before = sum(script_calls(cluster_ports).values())
    claimed = await cluster_store.claim_many(
        [ClaimRequest(key, "fp") for key in keys], owner="w", lease_seconds=30
    )
    held = [Held(r.key, r.token or 0) for r in claimed]
    assert await cluster_store.renew_many(held, lease_seconds=30) == [True] * 10
    assert await cluster_store.release_many(held) == [True] * 10
    assert sum(script_calls(cluster_ports).values()) - before == 3


@pytest.mark.integration
async def test_tokens_of_a_key_keep_increasing_on_a_cluster(cluster_store: RedisStore) -> None:
    """A key's per-slot counter gives every new claim a higher token; stale tokens are refused."""
    key = scoped_key(prefix(), "orders", "k")
    tokens = []
    for _ in range(3):
        (result,) = await cluster_store.claim_many(
            [ClaimRequest(key, "fp")], owner="w", lease_seconds=30
        )
        assert result.token is not None
        tokens.append(result.token)
        assert await cluster_store.release_many([Held(key, result.token)]) == [True]
    assert tokens == sorted(set(tokens))
    assert await cluster_store.release_many([Held(key, tokens[0])]) == [False]


def test_group_by_slot_keeps_input_order_within_groups() -> None:
    """Grouping returns every index once, grouped by slot, in order of first appearance."""
    keys = ["p:{a}:1", "p:{b}:1", "p:{a}:2", "p:{b}:2", "p:{c}:1"]
    assert group_by_slot(keys) == [[0, 2], [1, 3], [4]]


def test_fence_key_shares_the_records_slot() -> None:
    """On a cluster every record's counter hashes to the record's own slot."""
    for i in range(200):
        key = scoped_key("svc", "orders", f"k{i}")
        assert slot_of(fence_key(key, cluster=True)) == slot_of(key)
        assert fence_key(key, cluster=False) == "svc:orders:%fence"
    tagged = scoped_key("svc", "orders", "k", hash_tag=True)
    assert fence_key(tagged, cluster=True) == "svc:{orders}:%fence"


def test_slot_tags_cover_every_slot() -> None:
    """Each of the 16384 slots has a tag that hashes to it."""
    assert all(slot_of(slot_tag(slot)) == slot for slot in range(16384))
