"""What the Idempotency-Key middleware costs: the example's POST /payments with and without it.

Both variants are the example API (``examples.http_api``) under the supervisor on uvicorn, one
process pinned to one core, on loopback, writing payments to the same real Redis; the only
difference is the middleware (one claim and one completion round trip per request). The client
runs in this process, pinned to the other core when there is one, with the private Redis.

- latency: sequential requests on one keep-alive connection per variant, alternating between
  the two (p50/p99 without queueing, both under the same machine noise);
- throughput: ``CONNECTIONS`` keep-alive connections, in alternating windows adding up to
  ``THROUGHPUT_SECONDS`` per variant.

Redis is a private ``redis-server`` on loopback (``BENCH_REDIS_URL`` to use another). Writes
``bench/results/http.json``. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import uvicorn

from fargate_runtime.local import RedisServer, free_port

RESULTS = Path(__file__).parent / "results" / "http.json"
WARMUP_REQUESTS = 300
LATENCY_REQUESTS = 2000
CONNECTIONS = 16
THROUGHPUT_SECONDS = 4.0
# Throughput is measured in alternating windows (plain, idempotent, plain, ...) so that other
# load on the machine falls on both variants alike.
THROUGHPUT_WINDOWS = 4
_SERVER_CPU = 0
_BODY = b'{"amount":1250,"currency":"EUR"}'


# --- the server (a child process: python -m bench.http --serve VARIANT) ----------------------


def _serve(variant: str) -> None:
    """Run the example API, with or without the middleware, until SIGTERM."""
    from examples.http_api.app import PaymentsApiSettings, build_api
    from fargate_runtime import Runtime, Supervisor, load_settings
    from fargate_runtime.http import HttpSettings, serve_asgi
    from fargate_runtime.idempotency import RedisStore, load_idempotency_settings, redis_client

    async def setup(rt: Runtime) -> None:
        client = redis_client(load_idempotency_settings())
        await rt.enter(client, name="redis")
        store = RedisStore(client) if variant == "idempotent" else None
        api = build_api(redis=client, store=store, settings=load_settings(PaymentsApiSettings))
        await serve_asgi(rt, api, settings=load_settings(HttpSettings))

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {_SERVER_CPU})
    sys.exit(int(Supervisor(setup).run()))


# --- the client ----------------------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection sending POST /payments (a minimal, fast client)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self) -> float:
        """Send one payment with a fresh key; return the latency in seconds."""
        request = (
            b"POST /payments HTTP/1.1\r\nhost: bench\r\nx-api-key: bench\r\n"
            b"idempotency-key: " + uuid.uuid4().hex.encode() + b"\r\n"
            b"content-type: application/json\r\ncontent-length: "
            + str(len(_BODY)).encode()
            + b"\r\n\r\n"
            + _BODY
        )
        began = time.perf_counter()
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self._reader.readexactly(length)
        elapsed = time.perf_counter() - began
        if not head.startswith(b"HTTP/1.1 201"):
            raise RuntimeError(f"unexpected answer: {head[:60]!r}")
        return elapsed

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def _wait_until_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            connection = await _Connection.open(port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        await connection.close()
        return
    raise RuntimeError("server did not listen within 20 s")


async def _latencies(ports: dict[str, int]) -> dict[str, list[float]]:
    """Sequential requests, alternating between the variants so both see the same machine."""
    connections = {name: await _Connection.open(port) for name, port in ports.items()}
    for _ in range(WARMUP_REQUESTS):
        for connection in connections.values():
            await connection.post()
    samples: dict[str, list[float]] = {name: [] for name in ports}
    for _ in range(LATENCY_REQUESTS):
        for name, connection in connections.items():
            samples[name].append(await connection.post())
    for connection in connections.values():
        await connection.close()
    return {name: sorted(values) for name, values in samples.items()}


async def _throughput(port: int, seconds: float) -> int:
    """Requests completed by CONNECTIONS keep-alive connections in ``seconds``."""
    connections = [await _Connection.open(port) for _ in range(CONNECTIONS)]
    stop_at = time.perf_counter() + seconds
    done = 0

    async def drive(connection: _Connection) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await connection.post()
            done += 1

    await asyncio.gather(*(drive(connection) for connection in connections))
    for connection in connections:
        await connection.close()
    return done


async def _measure(ports: dict[str, int]) -> dict[str, dict[str, float]]:
    """Latency then throughput of each variant, interleaved in time to share the noise."""
    latencies = await _latencies(ports)
    counts = dict.fromkeys(ports, 0)
    window = THROUGHPUT_SECONDS / THROUGHPUT_WINDOWS
    for _ in range(THROUGHPUT_WINDOWS):
        for name, port in ports.items():
            counts[name] += await _throughput(port, window)
    return {
        name: {
            "rps": counts[name] / THROUGHPUT_SECONDS,
            "p50_ms": statistics.median(latencies[name]) * 1000,
            "p99_ms": latencies[name][int(len(latencies[name]) * 0.99) - 1] * 1000,
        }
        for name in ports
    }


def _start_server(variant: str, port: int, redis_url: str, prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PAYMENTS_API_KEY_PREFIX": prefix,
        "FARGATE_RUNTIME_HTTP_HOST": "127.0.0.1",
        "FARGATE_RUNTIME_HTTP_PORT": str(port),
        "FARGATE_RUNTIME_HTTP_LAME_DUCK_SECONDS": "0",
        # One log line per request would measure the logging, in both variants alike.
        "FARGATE_RUNTIME_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bench.http", "--serve", variant],
        env=env,
        stdout=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )


def _run(redis_url: str, prefix: str) -> dict[str, dict[str, float]]:
    """Both servers side by side (each on the server core), measured in one run."""
    ports = {"plain": free_port(), "idempotent": free_port()}
    processes = [_start_server(name, port, redis_url, prefix) for name, port in ports.items()]
    try:
        for process, port in zip(processes, ports.values(), strict=True):
            asyncio.run(_wait_until_listening(port, process))
        return asyncio.run(_measure(ports))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main() -> dict[str, object]:
    """Run both variants, print the table, write bench/results/http.json."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[-1]})  # the client off the server's core
    # A private redis-server (as the other benchmarks): nothing else's traffic in the figures.
    url = os.environ.get("BENCH_REDIS_URL")
    private = None if url else RedisServer()
    if private is not None:
        private.start()
        url = private.url
        if len(cpus) > 1 and private.process is not None:
            # Off the server's core too: in production Redis is another host, and its CPU
            # time is not the middleware's cost on the API's core.
            os.sched_setaffinity(private.process.pid, {cpus[-1]})
    assert url is not None
    prefix = f"frt-bench:{uuid.uuid4().hex[:8]}"
    try:
        measured = _run(url, prefix)
        plain, idempotent = measured["plain"], measured["idempotent"]
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()
        if private is not None:
            private.close()
    results: dict[str, Any] = {
        "rps_plain": round(plain["rps"], 1),
        "rps_idempotent": round(idempotent["rps"], 1),
        "p50_added_ms": round(idempotent["p50_ms"] - plain["p50_ms"], 3),
        "p99_added_ms": round(idempotent["p99_ms"] - plain["p99_ms"], 3),
        "p50_plain_ms": round(plain["p50_ms"], 3),
        "p50_idempotent_ms": round(idempotent["p50_ms"], 3),
        "p99_plain_ms": round(plain["p99_ms"], 3),
        "p99_idempotent_ms": round(idempotent["p99_ms"], 3),
        "setup": {
            "server": "examples.http_api under the supervisor, uvicorn, 1 process on 1 core",
            "latency_requests": LATENCY_REQUESTS,
            "throughput_connections": CONNECTIONS,
            "throughput_seconds": THROUGHPUT_SECONDS,
            "throughput_windows": THROUGHPUT_WINDOWS,
            "redis": "private redis-server on loopback" if private else "BENCH_REDIS_URL",
            "python": platform.python_version(),
            "uvicorn": uvicorn.__version__,
            "cpus": len(cpus),
            # Other work on the machine shows up in the figures; this says how much there was.
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
    }
    print(f"{'':12}{'plain':>12}{'idempotent':>12}{'added':>10}")
    print(f"{'req/s':12}{plain['rps']:>12.0f}{idempotent['rps']:>12.0f}")
    for name in ("p50_ms", "p99_ms"):
        added = idempotent[name] - plain[name]
        print(f"{name:12}{plain[name]:>12.3f}{idempotent[name]:>12.3f}{added:>10.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    partial = RESULTS.with_suffix(".json.tmp")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(RESULTS)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _serve(sys.argv[2])
    else:
        main()
