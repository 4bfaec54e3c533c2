"""Local stand-ins for the cloud: a Redis server and an SQS endpoint (moto's server mode).

Used by the tests, the drill and ``fargate-runtime local``. Both listen on a free loopback port
and are stopped by their context manager; nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "LocalServiceError",
    "MotoServer",
    "RedisServer",
    "free_port",
    "redis_answers",
    "sqs_environment",
]

_START_TIMEOUT_SECONDS = 15.0


class LocalServiceError(RuntimeError):
    """A local server could not be started; the message says how to get one."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(host: str, port: int, *, timeout_seconds: float = 0.5) -> bool:
    """True when a Redis server answers PING at host:port (no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class _Process:
    """A child server process stopped on exit (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def _stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class RedisServer(_Process):
    """A private ``redis-server`` on a free loopback port, keeping nothing on disk."""

    def __init__(self, *, port: int | None = None, executable: str = "redis-server") -> None:
        super().__init__()
        self.port = port or free_port()
        self._executable = executable
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart on the same port) and wait until it answers PING."""
        binary = shutil.which(self._executable)
        if binary is None:
            raise LocalServiceError(
                "no Redis answers and redis-server is not installed: install it "
                "(Debian: apt-get install -y redis-server) or set REDIS_URL"
            )
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="fargate-runtime-redis-")
        self.process = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not redis_answers("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise LocalServiceError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is persisted)."""
        self._stop()

    def restart(self) -> None:
        """Stop and start again on the same port, empty."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class MotoServer(_Process):
    """moto's server mode on a free loopback port: a real SQS endpoint over HTTP."""

    region = "us-east-1"

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``, for aioboto3's ``endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it answers HTTP."""
        moto = Path(sys.executable).with_name("moto_server")
        command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        self.process = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
            [*command, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **sqs_environment(self.endpoint_url)},
        )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while True:
            try:
                # Loopback only; the URL is built from our own port number.
                with urllib.request.urlopen(  # noqa: S310
                    self.endpoint_url + "/moto-api/", timeout=0.5
                ):
                    return
            except urllib.error.HTTPError:
                return  # it answered HTTP: it is up
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise LocalServiceError(
                    f"moto_server did not start on port {self.port}: install moto[server]"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server; its queues are gone."""
        self._stop()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def sqs_environment(endpoint_url: str, region: str = MotoServer.region) -> dict[str, str]:
    """Environment for a client of the local endpoint: region and dummy credentials."""
    return {
        "AWS_ENDPOINT_URL_SQS": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
