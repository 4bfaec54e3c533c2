"""What guarded code sees of its claim: the key, the fencing token, a replayed result."""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..errors import ResultUnavailableError

__all__ = ["Claim", "GuardStats", "ReplayableResult", "bind_claim", "current_claim"]

_current: contextvars.ContextVar[Claim] = contextvars.ContextVar("fargate_runtime_claim")


@dataclass(slots=True)
class GuardStats:
    """Counts of what the guards of one ``Idempotency`` saw (for logs and metrics)."""

    acquired: int = 0
    replayed: int = 0
    completed: int = 0
    released: int = 0
    in_progress: int = 0
    mismatched: int = 0
    lease_lost: int = 0
    store_errors: int = 0
    unprotected: int = 0  # ran without a claim because the store was down (fail-open)
    unstored: int = 0  # completed without their result (unserializable, too large): see logs


class ReplayableResult:
    """A block's result: the stored one when replayed, else what ``set_result`` was given.

    Shared by the guard's ``Claim`` and the PostgreSQL form's ``Transaction``.
    """

    __slots__ = ("_result", "_unavailable", "key", "replayed")

    def __init__(
        self,
        key: str,
        *,
        replayed: bool,
        result: object,
        unavailable: ResultUnavailableError | None,
    ) -> None:
        self.key = key
        self.replayed = replayed
        self._result = result
        self._unavailable = unavailable

    @property
    def result(self) -> object:
        """The stored result when replayed, else what ``set_result`` was given (None).

        Raises ResultUnavailableError for a replay whose result was not kept.
        """
        if self._unavailable is not None:
            raise self._unavailable.with_traceback(None)  # a fresh traceback each time
        return self._result

    def set_result(self, value: object) -> None:
        """The result to store on completion and replay to duplicates."""
        if self.replayed:
            raise RuntimeError(f"idempotency key {self.key!r} is replayed: it has its result")
        self._result = value


class Claim(ReplayableResult):
    """What the guarded code sees: the key and fencing token to pass downstream.

    ``replayed`` is True when the key was completed before: the block must not run its effect
    again and ``result`` holds the stored result (reading it raises ResultUnavailableError when
    the first run's result could not be stored: the work is done, its result is not kept).
    ``protected`` is False only under the fail-open policy while the store is down (the token is
    then 0, lower than any real token).
    """

    __slots__ = ("lease_lost", "protected", "token")

    def __init__(
        self,
        key: str,
        token: int,
        *,
        replayed: bool = False,
        protected: bool = True,
        result: object = None,
        unavailable: ResultUnavailableError | None = None,
    ) -> None:
        super().__init__(key, replayed=replayed, result=result, unavailable=unavailable)
        self.token = token
        self.protected = protected
        self.lease_lost = False

    def __repr__(self) -> str:
        return (
            f"Claim(key={self.key!r}, token={self.token}, replayed={self.replayed}, "
            f"protected={self.protected})"
        )


def current_claim() -> Claim:
    """The claim of the ``@idempotent`` function running in this task (LookupError outside)."""
    return _current.get()


@contextlib.contextmanager
def bind_claim(claim: Claim) -> Iterator[None]:
    """Make ``claim`` what ``current_claim()`` returns inside the block (this task only)."""
    token = _current.set(claim)
    try:
        yield
    finally:
        _current.reset(token)
