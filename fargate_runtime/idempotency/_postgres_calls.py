"""The SQL calls of the PostgreSQL store's functions, and the driver they go through.

One place for the statements (shared by the store's own pool and the handler's transaction),
the argument shapes, the answers' decoding, and the errors that mean "not done".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

    import asyncpg

    from ._store import Completion

__all__ = [
    "Statements",
    "completion_arguments",
    "driver",
    "flags",
    "milliseconds",
    "unavailable_errors",
]


def driver() -> ModuleType:
    """asyncpg, or ConfigurationError naming the extra that installs it."""
    try:
        import asyncpg
    except ImportError as exc:
        raise ConfigurationError(
            "the postgres idempotency store needs asyncpg: pip install 'fargate-runtime[postgres]'"
        ) from exc
    return asyncpg


def milliseconds(seconds: float) -> int:
    """Whole milliseconds, at least 1 (the functions take leases and retention in ms)."""
    return max(1, round(seconds * 1000))


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """What a driver call raises when the database did not do (or confirm) the work."""
    asyncpg = driver()
    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Statements:
    """The calls of the schema's functions, qualified by the (validated) schema name."""

    __slots__ = (
        "claim",
        "cleanup",
        "complete",
        "count",
        "record_step",
        "release",
        "renew",
        "steps",
    )

    def __init__(self, schema: str) -> None:
        # The schema name is validated against [a-z_][a-z0-9_]* by the settings and the schema
        # check, so it can be part of the statement; every value goes as a parameter.
        s = schema
        self.claim = (
            f"SELECT * FROM {s}.idempotency_claim($1::text[], $2::text[], $3::text[], $4, $5)"  # noqa: S608
        )
        self.complete = (
            f"SELECT * FROM {s}.idempotency_complete($1::text[], $2::bigint[], $3::bytea[], $4)"  # noqa: S608
        )
        self.release = f"SELECT * FROM {s}.idempotency_release($1::text[], $2::bigint[])"  # noqa: S608
        self.renew = f"SELECT * FROM {s}.idempotency_renew($1::text[], $2::bigint[], $3)"  # noqa: S608
        self.record_step = f"SELECT {s}.idempotency_record_step($1, $2, $3, $4)"
        self.steps = f"SELECT {s}.idempotency_steps($1, $2)"
        self.cleanup = f"SELECT {s}.idempotency_cleanup($1)"
        self.count = (
            f"SELECT * FROM {s}.idempotency_count($1::text[], $2::text[], $3::bigint[], $4)"  # noqa: S608
        )


def completion_arguments(
    completions: Sequence[Completion], *, retention_seconds: float
) -> tuple[list[str], list[int], list[bytes], int]:
    """The ``idempotency_complete`` arguments for ``completions``."""
    return (
        [c.key for c in completions],
        [c.token for c in completions],
        [c.result for c in completions],
        milliseconds(retention_seconds),
    )


def flags(rows: Sequence[asyncpg.Record], count: int) -> list[bool]:
    """``(o_index, o_done)`` rows back in input order."""
    answers = [False] * count
    for index, done in rows:
        answers[index - 1] = bool(done)
    return answers
