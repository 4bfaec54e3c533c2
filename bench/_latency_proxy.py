"""A loopback TCP proxy that delays every chunk by a fixed time each way: a network hop.

Loopback Redis answers in ~75 us, a client in the same availability zone as ElastiCache sees
several hundred. The idempotency benchmark runs once more through this proxy so the figures show
how the gap between 0.2 and 2 round trips per message grows with a real network's latency.

Run as ``python -m bench._latency_proxy LISTEN_PORT TARGET_HOST TARGET_PORT ONE_WAY_MS`` (a
process of its own, so its work does not share the benchmark's interpreter).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

_CHUNK = 65536


async def _forward(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_seconds: float
) -> None:
    loop = asyncio.get_running_loop()
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        # One writer per direction, in arrival order: equal delays keep the byte stream intact.
        while True:
            when, data = await due.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, when - loop.time()))
            writer.write(data)
            await writer.drain()
        writer.close()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(_CHUNK):
            due.put_nowait((loop.time() + delay_seconds, data))
    except ConnectionError:
        pass
    finally:
        due.put_nowait((loop.time(), b""))
        with contextlib.suppress(ConnectionError):
            await delivering


async def _serve(listen_port: int, host: str, port: int, delay_seconds: float) -> None:
    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(
            _forward(client_reader, server_writer, delay_seconds),
            _forward(server_reader, client_writer, delay_seconds),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    """Serve until killed."""
    listen_port, host, port, one_way_ms = int(argv[0]), argv[1], int(argv[2]), float(argv[3])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(listen_port, host, port, one_way_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
