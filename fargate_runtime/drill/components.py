"""The drill's infrastructure: an SQS endpoint, a store, and a fresh queue with its DLQ per run.

Nothing is substituted silently: a component that was named must answer, or the drill cannot
run (``ComponentsError``, exit 2).

SQS: the endpoint named (``--sqs-endpoint``), which must answer HTTP; else moto's server mode
on a free loopback port, started and stopped here. Redis: the URL named (``--redis-url``, else
``REDIS_URL``), which must answer PING; named nowhere, ``redis://127.0.0.1:6379`` when it
answers, else a private ``redis-server`` on a free port (``redis_origin`` says which).
``--restart-redis`` and ``--redis-outage-seconds`` need a private one (the drill never restarts
or pauses a Redis it does not own), so they cannot be combined with a named URL. With
``--store postgres`` the store is a PostgreSQL instead, chosen by the same rules (``postgres``),
and no Redis is needed. Queues are named after the run and deleted at the end when the endpoint
is not ours to throw away.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aioboto3
import redis.asyncio

from ..local import (
    LocalServiceError,
    MotoServer,
    RedisServer,
    redis_url_answers,
    sqs_environment,
)

if TYPE_CHECKING:
    from types import TracebackType

    from types_aiobotocore_sqs import SQSClient

    from .postgres import DrillPostgres

__all__ = ["Components", "ComponentsError", "DeadLetter", "QueueDepth", "RedisOrigin", "redacted"]

logger = logging.getLogger("fargate_runtime.drill")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
_REGION = MotoServer.region
# Bounded reads of the DLQ: at most this many receives per read (10 messages each).
_MAX_DLQ_RECEIVES = 500
# Bound on the keys deleted from a shared Redis after a run (a drill writes a few per event).
_MAX_FORGOTTEN_KEYS = 1_000_000


class RedisOrigin(enum.Enum):
    """How the drill's Redis was chosen."""

    NONE = "none"  # not started yet
    NAMED = "named"  # --redis-url or REDIS_URL
    DEFAULT = "default"  # nothing named, and 127.0.0.1:6379 answered
    PRIVATE = "private"  # a redis-server the drill started (and may restart)


class ComponentsError(RuntimeError):
    """A component cannot be had; the message says how to get it."""


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (a Redis URL may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.hostname or ""
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _answers_http(url: str) -> bool:
    """True when something answers HTTP at ``url`` (any status: an SQS endpoint answers 4xx)."""
    if not url.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(url, timeout=2.0):  # noqa: S310 - the scheme is checked above
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """The main queue's approximate counts (exact on moto)."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        """Every message still in the queue, visible or not."""
        return self.visible + self.in_flight + self.delayed


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message found in the DLQ."""

    message_id: str
    body: str
    receive_count: int

    @property
    def event_id(self) -> str | None:
        """The body's ``event_id`` when it has a usable one."""
        try:
            parsed: Any = json.loads(self.body)
        except ValueError:
            return None
        value = parsed.get("event_id") if isinstance(parsed, dict) else None
        return value if isinstance(value, str) and value else None


@dataclass(slots=True)
class Components:
    """Start (or find) SQS and Redis, create the run's queues; ``async with`` stops them."""

    run_id: str
    max_receive_count: int
    queue_name: str | None = None  # default: frt-drill-RUN_ID (the DLQ adds -dlq)
    sqs_endpoint_url: str | None = None
    redis_url: str | None = None
    private_redis: bool = False
    # The flag that asked for the private Redis, for the messages about it.
    private_for: str = "--restart-redis"
    queue_url: str = ""
    dlq_url: str = ""
    redis_origin: RedisOrigin = RedisOrigin.NONE
    moto: MotoServer | None = None
    redis: RedisServer | None = None
    # The run's PostgreSQL (``--store postgres``), in place of Redis; started on entry.
    postgres: DrillPostgres | None = None
    _client: SQSClient | None = None
    _client_context: Any = None
    _dead_letters: dict[str, DeadLetter] = field(default_factory=dict)

    @property
    def client(self) -> SQSClient:
        """The drill's own SQS client (producer, depth checks, DLQ reads)."""
        if self._client is None:
            raise RuntimeError("components are not started")
        return self._client

    @property
    def redis_restartable(self) -> bool:
        """True when the Redis is ours (a private server we may restart)."""
        return self.redis is not None

    def worker_environment(self) -> dict[str, str]:
        """What a worker needs to reach these components."""
        if self.sqs_endpoint_url is None or (self.redis_url is None and self.postgres is None):
            raise RuntimeError("components are not started")
        env = {
            **sqs_environment(self.sqs_endpoint_url, _REGION),
            "FARGATE_RUNTIME_SQS_QUEUE_URL": self.queue_url,
            "FARGATE_RUNTIME_SQS_ENDPOINT_URL": self.sqs_endpoint_url,
            "FARGATE_RUNTIME_SQS_REGION": _REGION,
        }
        if self.postgres is not None:
            env.update(self.postgres.worker_environment())
        elif self.redis_url is not None:
            env["REDIS_URL"] = env["FARGATE_RUNTIME_IDEMPOTENCY_REDIS_URL"] = self.redis_url
        return env

    async def __aenter__(self) -> Components:
        try:
            await asyncio.to_thread(self._start_servers)
            if self.postgres is not None:
                await self.postgres.create_schema()
            await self._open_client()
            await self._create_queues()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _start_servers(self) -> None:
        # What was named is checked before anything is started.
        if self.sqs_endpoint_url is not None and not _answers_http(self.sqs_endpoint_url):
            raise ComponentsError(
                f"no SQS endpoint answers at {self.sqs_endpoint_url} (--sqs-endpoint): start it, "
                "or leave the flag out and the drill starts moto's server"
            )
        if self.postgres is not None:
            self.postgres.choose()
        else:
            self._choose_redis()
        if self.sqs_endpoint_url is None:
            self.moto = MotoServer()
            try:
                self.moto.start()
            except LocalServiceError as exc:
                raise ComponentsError(str(exc)) from exc
            self.sqs_endpoint_url = self.moto.endpoint_url

    def _choose_redis(self) -> None:
        if self.private_redis and self.redis_url is not None:
            flag = self.private_for
            raise ComponentsError(
                f"{flag} needs a private redis-server the drill starts itself; it will not "
                f"touch the Redis at {redacted(self.redis_url)}: drop --redis-url or {flag}"
            )
        if self.redis_url is not None:
            if not redis_url_answers(self.redis_url):
                raise ComponentsError(
                    f"no Redis answers at {redacted(self.redis_url)} (--redis-url or REDIS_URL): "
                    "start it, or name neither and the drill uses 127.0.0.1:6379 or its own"
                )
            self.redis_origin = RedisOrigin.NAMED
            return
        if not self.private_redis and redis_url_answers(DEFAULT_REDIS_URL):
            self.redis_url, self.redis_origin = DEFAULT_REDIS_URL, RedisOrigin.DEFAULT
            return
        if shutil.which("redis-server") is None:
            why = (
                f"{self.private_for} needs a private Redis the drill may stop"
                if self.private_redis
                else f"no Redis answers at {DEFAULT_REDIS_URL}"
            )
            raise ComponentsError(
                f"{why}, and redis-server is not installed: install it (Debian/Ubuntu: "
                "apt-get install -y redis-server; macOS: brew install redis), or start one and "
                "pass --redis-url (e.g. docker run -p 6379:6379 redis)"
            )
        self.redis = RedisServer()
        try:
            self.redis.start()
        except LocalServiceError as exc:
            raise ComponentsError(str(exc)) from exc
        self.redis_url, self.redis_origin = self.redis.url, RedisOrigin.PRIVATE

    def describe_redis(self) -> str:
        """Where the Redis is and why that one, for the drill's first line."""
        url = redacted(self.redis_url or "")
        if self.redis_origin is RedisOrigin.PRIVATE:
            why = self.private_for if self.private_redis else f"nothing at {DEFAULT_REDIS_URL}"
            return f"{url} (a private redis-server: {why})"
        return url

    async def _open_client(self) -> None:
        session = aioboto3.Session(
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            region_name=_REGION,
        )
        self._client_context = session.client("sqs", endpoint_url=self.sqs_endpoint_url)
        self._client = await self._client_context.__aenter__()

    async def _create_queues(self) -> None:
        client = self.client
        name = self.queue_name or f"frt-drill-{self.run_id}"
        dlq = await client.create_queue(QueueName=f"{name}-dlq")
        self.dlq_url = dlq["QueueUrl"]
        attributes = await client.get_queue_attributes(
            QueueUrl=self.dlq_url, AttributeNames=["QueueArn"]
        )
        redrive = {
            "deadLetterTargetArn": attributes["Attributes"]["QueueArn"],
            "maxReceiveCount": str(self.max_receive_count),
        }
        queue = await client.create_queue(
            QueueName=name,
            Attributes={"RedrivePolicy": json.dumps(redrive)},
        )
        self.queue_url = queue["QueueUrl"]

    async def depth(self) -> QueueDepth:
        """The main queue's counts right now."""
        response = await self.client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        values = response.get("Attributes", {})
        return QueueDepth(
            visible=int(values.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(values.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(values.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    async def dead_letter_count(self) -> int:
        """Messages in the DLQ right now (including those the drill has read)."""
        response = await self.client.get_queue_attributes(
            QueueUrl=self.dlq_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        values = response.get("Attributes", {})
        return int(values.get("ApproximateNumberOfMessages", 0)) + int(
            values.get("ApproximateNumberOfMessagesNotVisible", 0)
        )

    async def dead_letters(self) -> list[DeadLetter]:
        """Every message that reached the DLQ so far (read once each, then kept here).

        Each is received with a long visibility timeout so the next read does not see it
        again; the drill is the DLQ's only reader.
        """
        for _ in range(_MAX_DLQ_RECEIVES):
            response = await self.client.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=3600,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            messages = response.get("Messages", [])
            if not messages:
                break
            for message in messages:
                message_id = message.get("MessageId", "")
                count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "0"))
                self._dead_letters.setdefault(
                    message_id, DeadLetter(message_id, message.get("Body", ""), count)
                )
        return list(self._dead_letters.values())

    async def forget_keys(self, prefix: str) -> int:
        """Delete the run's keys (``prefix:*``) from a shared Redis; a private one just stops.

        Completed records are kept for 24 h; a shared Redis should not carry every drill's.
        """
        if self.redis is not None or self.redis_url is None:
            return 0
        client = redis.asyncio.Redis.from_url(self.redis_url)
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(await client.delete(*batch))
                    batch.clear()
                if deleted >= _MAX_FORGOTTEN_KEYS:
                    break
            if batch:
                deleted += int(await client.delete(*batch))
        finally:
            await client.aclose()
        return deleted

    async def restart_redis(self) -> None:
        """Stop the private Redis and start it again, empty, on the same port."""
        if self.redis is None:
            raise ComponentsError("the drill restarts only a private Redis it started itself")
        await asyncio.to_thread(self.redis.restart)

    async def pause_redis(self, seconds: float) -> None:
        """Make the private Redis stop answering for ``seconds`` (paused: its data kept)."""
        if self.redis is None:
            raise ComponentsError("the drill pauses only a private Redis it started itself")
        self.redis.pause()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.redis.resume()

    async def aclose(self) -> None:
        """Delete the queues (on an endpoint we do not own), close the client, stop servers."""
        if self._client is not None:
            if self.moto is None:
                for url in (self.queue_url, self.dlq_url):
                    if url:
                        with contextlib.suppress(Exception):
                            await self._client.delete_queue(QueueUrl=url)
            with contextlib.suppress(Exception):
                await self._client_context.__aexit__(None, None, None)
            self._client = None
        if self.postgres is not None:
            await self.postgres.aclose()
        servers: list[MotoServer | RedisServer] = [s for s in (self.redis, self.moto) if s]
        for server in servers:
            await asyncio.to_thread(server.close)
        self.redis = self.moto = None
