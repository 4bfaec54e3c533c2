"""PostgreSQL helpers for the tests: a schema or database of the test's own, waiting out a lease."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fargate_runtime.idempotency import PostgresStore, schema_sql

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

_EXPIRY_WAIT_SECONDS = 10.0
# Seconds until a record's lease, or its retention, ends, on the database's clock.
_LEFT = (
    "extract(epoch FROM LEAST(expires_at, COALESCE(lease_until, expires_at)) - clock_timestamp())"
)


@dataclass(frozen=True)
class PostgresSchema:
    """A schema created with ``postgres_schema.sql`` for one test."""

    url: str
    name: str

    @classmethod
    @contextlib.asynccontextmanager
    async def created(cls, url: str, *, apply: bool = True) -> AsyncIterator[PostgresSchema]:
        """Create ``frt_test_<random>`` (with the store's objects unless ``apply=False``), drop it
        with everything in it afterwards."""
        name = f"frt_test_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(url)
        try:
            if apply:
                await connection.execute(schema_sql(name))
            else:
                await connection.execute(f"CREATE SCHEMA {name}")
            yield cls(url, name)
        finally:
            await connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            await connection.close()

    async def fetchval(self, query: str, *args: object) -> Any:
        """One query on a connection of its own (to look at rows behind the store's back)."""
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f"SET search_path TO {self.name}")
            return await connection.fetchval(query, *args)
        finally:
            await connection.close()


class PostgresDatabase:
    """A database of one test's own, for code that writes outside any schema we name."""

    @staticmethod
    @contextlib.asynccontextmanager
    async def created(url: str) -> AsyncIterator[str]:
        """Create ``frt_test_<random>`` on the server of ``url``; yield its URL; drop it after
        (with ``FORCE``: a connection a killed process left behind does not keep it)."""
        name = f"frt_test_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(f"CREATE DATABASE {name}")
            try:
                yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
            finally:
                await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()


async def wait_until_forgotten(store: PostgresStore, key: str) -> None:
    """Wait until PostgreSQL's clock passes the record's lease (or its retention).

    There is no event for time passing in the database: the wait is what its own clock says is
    left, read again after each wait (the test machine's clock is not the database's).
    """
    pool = await store.transaction_pool()
    table = f"{store.schema}.idempotency_records"
    async with asyncio.timeout(_EXPIRY_WAIT_SECONDS):
        while True:
            left = await pool.fetchval(f"SELECT {_LEFT} FROM {table} WHERE key = $1", key)
            if left is None or left < 0:
                return
            await asyncio.sleep(float(left) + 0.001)
