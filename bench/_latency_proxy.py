"""A loopback TCP proxy that delays every chunk by a fixed time each way: a network hop.

Loopback Redis answers in ~30-75 us; a client in the same availability zone as ElastiCache sees
a few hundred. The idempotency benchmark runs once more through this proxy so the figures show
how the gap between 0.2 and 2 round trips per message grows with a real network's latency.

Each direction of each connection has a reader thread (stamps chunks with their due time) and
a writer thread (sleeps until then, sends). Threads, not asyncio: the event loop wakes on a
whole-millisecond timer, which made a "0.25 ms" hop about 1.3 ms each way; ``time.sleep`` on
Linux wakes within ~0.1 ms of the deadline. The benchmark records the round trip it measured
through the proxy beside its figures.

Run as ``python -m bench._latency_proxy LISTEN_PORT TARGET_HOST TARGET_PORT ONE_WAY_MS`` (a
process of its own, so its work does not share the benchmark's interpreter).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import sys
import threading
import time

_CHUNK = 65536


def _pipe(source: socket.socket, sink: socket.socket, delay_seconds: float) -> None:
    """Copy ``source`` to ``sink``, each chunk ``delay_seconds`` after it arrived, in order."""
    due: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def deliver() -> None:
        # One writer per direction, in arrival order: equal delays keep the byte stream intact.
        while True:
            when, data = due.get()
            if not data:
                break
            remaining = when - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            try:
                sink.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    writer = threading.Thread(target=deliver, daemon=True)
    writer.start()
    try:
        while data := source.recv(_CHUNK):
            due.put((time.monotonic() + delay_seconds, data))
    except OSError:
        pass
    finally:
        due.put((time.monotonic(), b""))
        writer.join()


def _serve_one(client: socket.socket, host: str, port: int, delay_seconds: float) -> None:
    with client, socket.create_connection((host, port)) as server:
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pipe, args=(server, client, delay_seconds), daemon=True)
        back.start()
        _pipe(client, server, delay_seconds)
        back.join()


def main(argv: list[str]) -> int:
    """Serve until killed."""
    listen_port, host, port, one_way_ms = int(argv[0]), argv[1], int(argv[2]), float(argv[3])
    with socket.create_server(("127.0.0.1", listen_port)) as listener:
        print("ready", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                client, _ = listener.accept()
                threading.Thread(
                    target=_serve_one, args=(client, host, port, one_way_ms / 1000), daemon=True
                ).start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
