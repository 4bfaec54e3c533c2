"""Liveness (``/healthz``) and readiness (``/readyz``) over plain HTTP/1.1 for workers.

Workers have no web framework, and slim images have no curl: the endpoint is a few lines of
asyncio, and ``fargate-runtime healthcheck`` is the client a container ``HEALTHCHECK`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from .lifecycle import Lifecycle

__all__ = ["HealthServer", "check", "probe"]

logger = logging.getLogger("fargate_runtime.health")

# A probe that cannot send its request line in this time is not a probe we need to serve.
_READ_TIMEOUT_SECONDS = 2.0


class HealthServer:
    """Serves ``/healthz`` and ``/readyz`` from a Lifecycle; does nothing when ``port`` is None.

    Liveness stays 200 while draining: a failing container health check would make ECS replace
    the task in the middle of its drain. Readiness turns 503 the moment shutdown is requested,
    and while a service holds it back (an SQS consumer whose idempotency store is down); the
    503's body says why (``draining``, ``sqs-consumer: idempotency store unavailable ...``).
    """

    def __init__(self, lifecycle: Lifecycle, *, host: str, port: int | None) -> None:
        self._lifecycle = lifecycle
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int | None:
        """The bound port (useful with port 0 in tests)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> HealthServer:
        if self._port is not None:
            self._server = await asyncio.start_server(self._handle, self._host, self._port)
            logger.info("health endpoint listening", extra={"host": self._host, "port": self.port})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _answer(self, path: str) -> tuple[int, str]:
        lifecycle = self._lifecycle
        if path == "/healthz":
            return (200, "ok") if lifecycle.alive else (503, lifecycle.phase.value)
        if path == "/readyz":
            reason = lifecycle.not_ready_reason
            return (200, "ok") if reason is None else (503, reason)
        return 404, "not found"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_SECONDS):
                request_line = await reader.readline()
                # Drain the headers; we answer on the request line alone.
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request_line.decode("latin-1").split()
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, body = 405, "method not allowed"
            else:
                status, body = self._answer(parts[1].split("?", 1)[0])
            reason = http.client.responses.get(status, "")
            encoded = body.encode()
            payload = encoded if parts and parts[0] != "HEAD" else b""
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(encoded)}\r\nconnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def probe(host: str, port: int, path: str = "/healthz", *, timeout_seconds: float = 2.0) -> bool:
    """True when ``GET path`` answers 200: the client behind ``fargate-runtime healthcheck``."""
    return check(host, port, path, timeout_seconds=timeout_seconds) is None


def check(
    host: str, port: int, path: str = "/healthz", *, timeout_seconds: float = 2.0
) -> str | None:
    """None when ``GET path`` answers 200; otherwise what went wrong, in a few words."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout_seconds)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
    except ConnectionRefusedError:
        return "connection refused (nothing listens there)"
    except TimeoutError:
        return f"no answer within {timeout_seconds:g} s"
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        connection.close()
    if response.status != 200:
        return f"answered {response.status} {response.reason}".rstrip()
    return None
