"""``fargate-runtime postgres-schema``: print, apply or check the PostgreSQL store's schema.

Exit codes: 0 done; 78 the database cannot be used as configured (unreachable, schema missing,
rights missing, a bad setting), with one line on stderr naming the problem; 2 a bad argument.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..idempotency.postgres_schema import schema_sql
from ..lifecycle import ExitCode

if TYPE_CHECKING:
    from ..idempotency import IdempotencySettings

__all__ = ["configure_parser", "run_command"]


def _schema_name(text: str) -> str:
    """A schema name the store accepts (a bad one is a usage error, not a setting)."""
    try:
        schema_sql(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _postgres_url(text: str) -> str:
    """A ``postgresql://`` (or ``postgres://``) URL; never echoed (it may hold a password)."""
    if text.partition("://")[0].lower() not in {"postgres", "postgresql"}:
        raise argparse.ArgumentTypeError("the URL must start with postgresql://")
    return text


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``postgres-schema``: one action, where, and which schema."""
    actions = parser.add_mutually_exclusive_group()
    add = actions.add_argument
    add("--print", dest="action", action="store_const", const="print",
        help="write the schema's SQL to stdout (for psql or a migration tool)")  # fmt: skip
    add("--apply", dest="action", action="store_const", const="apply",
        help="create what is missing (safe to repeat), then check")  # fmt: skip
    add("--check", dest="action", action="store_const", const="check",
        help="exit 0 when the store can use the database (the default)")  # fmt: skip
    add("--cleanup", dest="action", action="store_const", const="cleanup",
        help="delete expired records now, in batches of the configured size")  # fmt: skip
    parser.set_defaults(action="check")
    parser.epilog = (
        "exit codes: 0 done; 78 the database cannot be used as configured (unreachable, "
        "schema or rights missing, a bad setting: one line says which); 2 bad arguments"
    )
    parser.add_argument(
        "--url",
        type=_postgres_url,
        default=None,
        help="postgresql:// URL (default: FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_URL, DATABASE_URL)",
    )
    parser.add_argument(
        "--schema",
        type=_schema_name,
        default=None,
        help="schema name (default: FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_SCHEMA, fargate_runtime)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the action; 78 with one line on stderr when the database cannot be used."""
    try:
        if args.action == "print":
            sys.stdout.write(
                schema_sql(args.schema or _settings(args, printing=True).postgres_schema)
            )
            return 0
        return asyncio.run(_run(args))
    except ConfigurationError as exc:
        print(f"fargate-runtime postgres-schema: {exc}", file=sys.stderr)  # noqa: T201 - CLI
        return int(ExitCode.CONFIGURATION)


def _settings(args: argparse.Namespace, *, printing: bool = False) -> IdempotencySettings:
    from ..idempotency import StoreKind, load_idempotency_settings

    # Printing needs only the schema's name: no database, so no URL either.
    overrides: dict[str, object] = {"store": StoreKind.REDIS if printing else StoreKind.POSTGRES}
    if args.url is not None:
        overrides["postgres_url"] = args.url
    if args.schema is not None:
        overrides["postgres_schema"] = args.schema
    return load_idempotency_settings(**overrides)


async def _run(args: argparse.Namespace) -> int:
    from ..idempotency import PostgresStore
    from ..idempotency._postgres_calls import driver, unavailable_errors

    settings = _settings(args)
    store = PostgresStore.from_settings(settings)
    # ValueError: asyncpg's answer to a URL it cannot parse.
    cannot_connect: tuple[type[BaseException], ...] = (*unavailable_errors(), ValueError)
    if args.action == "apply":
        url = settings.postgres_url.get_secret_value() if settings.postgres_url else ""
        password = settings.postgres_password
        try:
            connection = await driver().connect(
                url,
                password=password.get_secret_value() if password is not None else None,
                timeout=settings.postgres_connect_timeout_seconds,
            )
        except cannot_connect as exc:
            raise ConfigurationError(
                f"cannot connect to PostgreSQL at {store.where}: {exc}"
            ) from exc
        try:
            await connection.execute(schema_sql(settings.postgres_schema))
        except unavailable_errors() as exc:
            raise ConfigurationError(
                f"applying the schema at {store.where} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            await connection.close()
        print(f"schema {settings.postgres_schema} applied at {store.where}")  # noqa: T201 - CLI
    async with store:  # opening checks the schema and the rights
        if args.action == "cleanup":
            deleted = await store.cleanup(max_batches=1_000_000)
            print(f"{deleted} expired records deleted at {store.where}")  # noqa: T201 - CLI
            return 0
    print(f"schema {settings.postgres_schema} at {store.where} is ready")  # noqa: T201 - CLI
    return 0
