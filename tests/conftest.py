"""Shared fixtures: real Redis and PostgreSQL servers and a real SQS endpoint (moto) over HTTP.

Redis: the one at ``REDIS_URL`` (default ``redis://127.0.0.1:6379``) when it answers, otherwise a
private ``redis-server`` on a free port. Each test gets its own key prefix and its keys are
deleted afterwards, so a shared Redis is left as it was found.

PostgreSQL: the one at ``POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
when it answers, otherwise a private server (``initdb`` into a temporary directory). Tests that
use it create a schema of their own and drop it afterwards.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING

import aioboto3
import pytest
import redis.asyncio

from fargate_runtime.idempotency import PostgresStore
from fargate_runtime.local import (
    MotoServer,
    RedisServer,
    answering_postgres,
    answering_redis,
    sqs_environment,
)
from tests.idempotency.postgres import PostgresSchema
from tests.logcapture import JsonLines

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server that answers, started privately when none does."""
    with answering_redis() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server that answers, started privately when none does."""
    with answering_postgres() as url:
        yield url


@pytest.fixture
async def postgres_schema(postgres_url: str) -> AsyncIterator[PostgresSchema]:
    """A schema of this test's own with the store's tables and functions, dropped afterwards."""
    async with PostgresSchema.created(postgres_url) as schema:
        yield schema


@pytest.fixture
async def postgres_store(postgres_schema: PostgresSchema) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on the test's own schema (cleanup task off: tests call it)."""
    store = PostgresStore(postgres_schema.url, schema=postgres_schema.name, cleanup=False)
    async with store:
        yield store


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test (or user of a shared Redis) has."""
    return f"frt-test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the test Redis; every key under ``redis_prefix`` is deleted afterwards."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own, for tests that stop or restart it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """``endpoint_url`` of a local SQS (moto's server mode), with dummy AWS credentials set."""
    with MotoServer() as server:
        saved = {name: os.environ.get(name) for name in sqs_environment(server.endpoint_url)}
        os.environ.update(sqs_environment(server.endpoint_url))
        try:
            yield server.endpoint_url
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture
def json_lines(caplog: pytest.LogCaptureFixture) -> Iterator[JsonLines]:
    """JSON lines of everything logged at INFO and above during the test."""
    captured = JsonLines()
    root = logging.getLogger()
    root.addHandler(captured)
    try:
        with caplog.at_level(logging.INFO):
            yield captured
    finally:
        root.removeHandler(captured)


@pytest.fixture
async def sqs(sqs_endpoint: str) -> AsyncIterator[SQSClient]:
    """An aioboto3 SQS client of the local endpoint (over HTTP)."""
    session = aioboto3.Session()
    async with session.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1") as client:
        yield client
