"""Local stand-ins for the cloud: Redis, PostgreSQL and an SQS endpoint (moto's server mode).

Used by the tests, the drill and ``fargate-runtime local``. Each listens on a free loopback port
and is stopped by its context manager; nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "DEFAULT_REDIS_URL",
    "LocalServiceError",
    "MotoServer",
    "PostgresServer",
    "RedisServer",
    "answering_postgres",
    "answering_redis",
    "free_port",
    "postgres_url_answers",
    "redis_answers",
    "redis_url_answers",
    "sqs_environment",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

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


def redis_url_answers(url: str) -> bool:
    """True when the Redis server of a ``redis://`` URL answers PING."""
    parts = urlsplit(url)
    return redis_answers(parts.hostname or "127.0.0.1", parts.port or 6379)


@contextlib.contextmanager
def answering_redis(url: str | None = None) -> Iterator[str]:
    """Yield the URL of a Redis that answers: ``url`` (default ``$REDIS_URL``, then
    127.0.0.1:6379) when it does, otherwise a private ``redis-server`` kept for the block."""
    wanted = url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if redis_url_answers(wanted):
        yield wanted
        return
    with RedisServer() as server:
        yield server.url


class _Process:
    """A child server process: started by ``start()``, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, port: int | None) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = port or free_port()

    def start(self) -> None:
        raise NotImplementedError

    # How a server is asked to stop, and how long it gets before SIGKILL.
    stop_signal = signal.SIGTERM
    stop_seconds = 5.0

    def stop(self) -> None:
        """Stop the server; whatever it held in memory is gone."""
        if self.process is None:
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout=self.stop_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop for good (what ``__exit__`` calls)."""
        self.stop()

    def _spawn(
        self, argv: list[str], *, ready: Callable[[], bool], hint: str, user: str | None = None
    ) -> None:
        """Start ``argv`` and poll ``ready`` until it holds; stop and raise if it never does."""
        self.process = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **sqs_environment(f"http://127.0.0.1:{self.port}")},
            user=user,
        )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        # Polled: a server announces readiness only by answering.
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LocalServiceError(f"{hint} did not start on port {self.port}")
            time.sleep(0.02)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(_Process):
    """A private ``redis-server`` on a free loopback port, keeping nothing on disk."""

    def __init__(self, *, port: int | None = None, executable: str = "redis-server") -> None:
        super().__init__(port)
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
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", self._dir.name]
        self._spawn(argv, ready=lambda: redis_answers("127.0.0.1", self.port), hint="redis-server")

    def restart(self) -> None:
        """Stop and start again on the same port, empty."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Stop answering (SIGSTOP), data kept: connections open, commands wait unanswered."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Answer again after ``pause`` (SIGCONT), with everything it held."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop and remove the working directory."""
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class MotoServer(_Process):
    """moto's server mode on a free loopback port: a real SQS endpoint over HTTP."""

    region = "us-east-1"

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(port)

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``, for aioboto3's ``endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it answers HTTP."""
        moto = Path(sys.executable).with_name("moto_server")
        command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        argv = [*command, "-H", "127.0.0.1", "-p", str(self.port)]
        self._spawn(argv, ready=self._answers_http, hint="moto_server (pip install moto[server])")

    def _answers_http(self) -> bool:
        try:
            # Loopback only; the URL is built from our own port number.
            with urllib.request.urlopen(  # noqa: S310
                self.endpoint_url + "/moto-api/", timeout=0.5
            ):
                return True
        except urllib.error.HTTPError:
            return True  # it answered HTTP: it is up
        except OSError:
            return False


def sqs_environment(endpoint_url: str, region: str = MotoServer.region) -> dict[str, str]:
    """Environment for a client of the local endpoint: region and dummy credentials."""
    return {
        "AWS_ENDPOINT_URL_SQS": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def postgres_url_answers(url: str, *, timeout_seconds: float = 0.5) -> bool:
    """True when the PostgreSQL server of ``url`` lets its user in (no client library needed).

    It sends the protocol's startup message: a URL without a password must get
    AuthenticationOk (trust), one with a password any authentication request. A server that
    answers but would refuse the user (e.g. Debian's default scram on 127.0.0.1) does not count.
    """
    parts = urlsplit(url)
    user = parts.username or "postgres"
    database = parts.path.lstrip("/") or user
    body = (3 << 16).to_bytes(4, "big")  # protocol 3.0
    body += f"user\0{user}\0database\0{database}\0\0".encode()
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 5432), timeout=timeout_seconds
        ) as sock:
            sock.sendall((len(body) + 4).to_bytes(4, "big") + body)
            reply = sock.recv(9)
    except OSError:
        return False
    if len(reply) < 9 or reply[:1] != b"R":  # 'R', int32 length, int32 code
        return False
    authentication = int.from_bytes(reply[5:9], "big")
    return authentication == 0 or parts.password is not None


@contextlib.contextmanager
def answering_postgres(url: str | None = None) -> Iterator[str]:
    """Yield the URL of a PostgreSQL that answers: ``url`` (default ``$POSTGRES_URL``, then
    127.0.0.1:5432) when it does, otherwise a private server kept for the block."""
    wanted = url or os.environ.get("POSTGRES_URL") or DEFAULT_POSTGRES_URL
    if postgres_url_answers(wanted):
        yield wanted
        return
    with PostgresServer() as server:
        yield server.url


def _postgres_binary(name: str) -> str | None:
    """``name`` on PATH, else in Debian's versioned directory (the newest version)."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


class PostgresServer(_Process):
    """A private PostgreSQL (``initdb`` into a temporary directory) on a free loopback port.

    Trust authentication for the ``postgres`` role, durability off (``fsync=off``): a throwaway
    server for tests and drills. PostgreSQL refuses to run as root; as root it runs as the
    ``postgres`` user that Debian's package creates.
    """

    # Fast shutdown: clients disconnected, their transactions rolled back (SIGTERM would wait
    # for every client to leave).
    stop_signal = signal.SIGINT
    stop_seconds = 10.0

    def __init__(self, *, port: int | None = None) -> None:
        super().__init__(port)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._user: str | None = None

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        """The cluster's directory."""
        if self._dir is None:
            raise LocalServiceError("the PostgreSQL server is not started")
        return Path(self._dir.name) / "data"

    def _prepare(self) -> str:
        """Create the cluster with ``initdb``; the ``postgres`` binary that runs it."""
        initdb, postgres = _postgres_binary("initdb"), _postgres_binary("postgres")
        if initdb is None or postgres is None:
            raise LocalServiceError(
                "no PostgreSQL answers and its server is not installed: install it "
                "(Debian: apt-get install -y postgresql) or set POSTGRES_URL"
            )
        if os.geteuid() == 0:
            self._user = "postgres"  # initdb and postgres refuse root
        self._dir = tempfile.TemporaryDirectory(prefix="fargate-runtime-postgres-")
        if self._user is not None:
            shutil.chown(self._dir.name, user=self._user)
        subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, user=self._user, timeout=120,
        )  # fmt: skip
        return postgres

    def start(self) -> None:
        """Create the cluster (first start only), start it, wait until it accepts connections."""
        postgres = self._prepare() if self._dir is None else _postgres_binary("postgres")
        assert postgres is not None  # noqa: S101 - found by _prepare on the first start
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self._dir_name,
            "fsync": "off",  # a throwaway cluster: speed over durability
            "full_page_writes": "off",
            "max_connections": "200",
        }
        argv = [postgres, "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        self._spawn(argv, ready=self._ready, hint="postgres", user=self._user)

    @property
    def _dir_name(self) -> str:
        return self._dir.name if self._dir is not None else ""

    def _ready(self) -> bool:
        # postmaster.pid's 8th line says "ready" once connections are accepted (what pg_ctl
        # waits for); a TCP answer alone can still be "the database system is starting up".
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def close(self) -> None:
        """Stop and remove the cluster's directory."""
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
