"""The worker health endpoint over a real socket, and the healthcheck command."""

from __future__ import annotations

import asyncio

from fargate_runtime.health import HealthServer, probe
from fargate_runtime.lifecycle import Lifecycle, Phase
from fargate_runtime.settings import RuntimeSettings


async def get_body(port: int, path: str) -> tuple[int, str]:
    """Status and body of ``GET path``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def get(port: int, path: str) -> int:
    """Status of ``GET path``."""
    return (await get_body(port, path))[0]


async def test_readiness_turns_503_at_shutdown_while_liveness_stays_200() -> None:
    """Draining is not unhealthy: liveness stays 200 while readiness turns 503."""
    lifecycle = Lifecycle(RuntimeSettings().budget())
    async with HealthServer(lifecycle, host="127.0.0.1", port=0) as server:
        assert server.port is not None
        assert await get(server.port, "/readyz") == 503  # still starting
        lifecycle._set_phase(Phase.RUNNING)
        assert await get(server.port, "/readyz") == 200
        assert await get(server.port, "/healthz") == 200
        lifecycle.request_shutdown("test")
        lifecycle._set_phase(Phase.DRAINING)
        assert await get(server.port, "/readyz") == 503
        assert await get(server.port, "/healthz") == 200
        assert await get(server.port, "/other") == 404


async def test_readiness_held_back_by_a_service_says_why() -> None:
    """A service's hold turns readiness 503 with its reason; lifting it turns it 200 again."""
    lifecycle = Lifecycle(RuntimeSettings().budget())
    lifecycle._set_phase(Phase.RUNNING)
    async with HealthServer(lifecycle, host="127.0.0.1", port=0) as server:
        assert server.port is not None
        lifecycle.set_unready("sqs-consumer", "idempotency store unavailable: Redis \u2013 timeout")
        assert await get_body(server.port, "/readyz") == (
            503,
            "sqs-consumer: idempotency store unavailable: Redis \u2013 timeout",
        )
        assert await get(server.port, "/healthz") == 200
        lifecycle.set_unready("sqs-consumer", None)
        assert await get_body(server.port, "/readyz") == (200, "ok")
        lifecycle.request_shutdown("test")
        assert await get_body(server.port, "/readyz") == (503, "draining")


async def test_probe_answers_true_only_for_200() -> None:
    """The healthcheck client returns True for 200, False for 503 and for no server."""
    lifecycle = Lifecycle(RuntimeSettings().budget())
    async with HealthServer(lifecycle, host="127.0.0.1", port=0) as server:
        assert server.port is not None
        port = server.port
        assert await asyncio.to_thread(probe, "127.0.0.1", port, "/healthz")
        assert not await asyncio.to_thread(probe, "127.0.0.1", port, "/readyz")
    assert not await asyncio.to_thread(probe, "127.0.0.1", port, "/healthz", timeout_seconds=0.5)


async def test_no_port_means_no_listener() -> None:
    """With health_port unset nothing listens."""
    lifecycle = Lifecycle(RuntimeSettings().budget())
    async with HealthServer(lifecycle, host="127.0.0.1", port=None) as server:
        assert server.port is None
