"""The PostgreSQL store's schema: the SQL file shipped in the package, applied and checked.

``postgres_schema.sql`` is the one source of the schema: the documented file a DBA applies with
``psql``, and what ``fargate-runtime postgres-schema --apply`` runs. Nothing applies it
implicitly: a worker that starts against a database without it (or without the rights to use
it) exits 78 with one line saying what is missing, never a half-created table.
"""

from __future__ import annotations

import importlib.resources
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigurationError

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "check_schema",
    "describe_url",
    "schema_sql",
]

DEFAULT_SCHEMA = "fargate_runtime"
SCHEMA_VERSION = 2
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# The two lines of the file that name the schema (each ends with the marker "-- schema").
_MARKED = re.compile(r"^(.*\b)fargate_runtime(\b.*-- schema)$", re.MULTILINE)
_FUNCTIONS = (
    "idempotency_claim(text[], text[], text[], text, bigint)",
    "idempotency_complete(text[], bigint[], bytea[], bigint)",
    "idempotency_release(text[], bigint[])",
    "idempotency_renew(text[], bigint[], bigint)",
    "idempotency_record_step(text, bigint, text, bigint)",
    "idempotency_steps(text, bigint)",
    "idempotency_cleanup(integer)",
    "idempotency_count(text[], text[], bigint[], bigint)",
)


def _checked_name(schema: str) -> str:
    if not _NAME.match(schema):
        raise ConfigurationError(
            f"PostgreSQL schema name {schema!r} must be lower case letters, digits and '_' "
            "(at most 63, not starting with a digit)"
        )
    return schema


def schema_sql(schema: str = DEFAULT_SCHEMA) -> str:
    """The schema file's SQL, for ``schema`` (the file itself names ``fargate_runtime``)."""
    text = (
        importlib.resources.files(__package__ or "fargate_runtime.idempotency")
        .joinpath("postgres_schema.sql")
        .read_text(encoding="utf-8")
    )
    rendered, count = _MARKED.subn(rf"\g<1>{_checked_name(schema)}\g<2>", text)
    if count != 2:  # pragma: no cover - guards the file's own layout
        raise RuntimeError("postgres_schema.sql must name its schema on exactly two marked lines")
    return rendered


def describe_url(url: str) -> str:
    """``host:port/database`` of a PostgreSQL URL: enough to say where, never the password."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "(default database)"
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}/{database}"


async def check_schema(
    connection: asyncpg.Connection | PoolConnectionProxy[asyncpg.Record], schema: str
) -> None:
    """Raise ConfigurationError unless ``schema`` holds our schema version with usable rights."""
    import asyncpg

    name = _checked_name(schema)
    apply_hint = (
        f"create it with `fargate-runtime postgres-schema --apply --schema {name}` "
        "(or psql -f postgres_schema.sql)"
    )
    try:
        version = await connection.fetchval(f"SELECT {name}.idempotency_schema_version()")
    except (asyncpg.UndefinedFunctionError, asyncpg.InvalidSchemaNameError) as exc:
        raise ConfigurationError(
            f"PostgreSQL schema {name!r} has no idempotency records table: {apply_hint}"
        ) from exc
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ConfigurationError(
            f"the database role may not use PostgreSQL schema {name!r}: {exc} (grant USAGE on "
            "the schema)"
        ) from exc
    if version != SCHEMA_VERSION:
        raise ConfigurationError(
            f"PostgreSQL schema {name!r} is at idempotency schema version {version}; this "
            f"fargate-runtime needs {SCHEMA_VERSION}: {apply_hint}"
        )
    checks = [
        (f"{right} on {name}.{table}", "has_table_privilege", table, right)
        for table in ("idempotency_records", "idempotency_counters")
        for right in ("SELECT", "INSERT", "UPDATE", "DELETE")
    ]
    checks.append(
        (
            f"USAGE on {name}.idempotency_tokens",
            "has_sequence_privilege",
            "idempotency_tokens",
            "USAGE",
        )
    )
    checks += [
        (f"EXECUTE on {name}.{function}", "has_function_privilege", function, "EXECUTE")
        for function in _FUNCTIONS
    ]
    query = "SELECT " + ", ".join(
        f"{check}('{name}.{target}', '{right}')" for _, check, target, right in checks
    )
    row = await connection.fetchrow(query)
    missing = [what for (what, *_), granted in zip(checks, row or (), strict=True) if not granted]
    if missing:
        raise ConfigurationError(
            f"the database role lacks {', '.join(missing)} (grant them, see postgres_schema.sql)"
        )
