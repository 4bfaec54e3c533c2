"""The bounds of every idempotency number (leases, retention, timeouts, sizes), checked alike.

Settings check them through pydantic (``Field`` bounds, no NaN or infinity); constructors and
store calls check them with ``seconds`` and ``count``. A value out of bounds is refused with a
ConfigurationError naming the parameter, never clamped (a 0 s lease used to become 1 ms, and two
concurrent duplicates both ran) and never passed on to fail later (an infinite retention raised a
raw OverflowError after the work had run, leaving its record in progress).
"""

from __future__ import annotations

import math

from ..errors import ConfigurationError

__all__ = [
    "MAX_LEASE_SECONDS",
    "MAX_RESULT_BYTES_LIMIT",
    "MAX_RETENTION_SECONDS",
    "MIN_LEASE_SECONDS",
    "MIN_RETENTION_SECONDS",
    "count",
    "lease",
    "retention",
    "seconds",
]

# A lease shorter than this runs out before a loaded worker's heartbeat (every third of the
# lease) can renew it, or even before the claim's own reply has arrived.
MIN_LEASE_SECONDS = 0.1
# SQS's 12 h visibility limit: no delivery outlives it, so a longer lease only strands keys.
MAX_LEASE_SECONDS = 43_200.0
MIN_RETENTION_SECONDS = 0.1
# A year: long past any producer's retry window, and far inside Redis' PX range.
MAX_RETENTION_SECONDS = 366 * 86_400.0
# Redis strings go to 512 MiB; a result is replay information, never near that.
MAX_RESULT_BYTES_LIMIT = 64 * 1024 * 1024


def seconds(name: str, value: float, *, minimum: float, maximum: float) -> float:
    """``value`` if it is a finite number of seconds in ``[minimum, maximum]``, else
    ConfigurationError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ConfigurationError(
            f"{name} must be between {minimum:g} and {maximum:g} seconds, got {value!r}"
        )
    return float(value)


def count(name: str, value: int, *, minimum: int = 1, maximum: int) -> int:
    """``value`` if it is a whole number in ``[minimum, maximum]``, else ConfigurationError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
    if not minimum <= value <= maximum:
        raise ConfigurationError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return value


def lease(value: float, *, name: str = "lease_seconds") -> float:
    """A lease in seconds, within ``[MIN_LEASE_SECONDS, MAX_LEASE_SECONDS]``."""
    return seconds(name, value, minimum=MIN_LEASE_SECONDS, maximum=MAX_LEASE_SECONDS)


def retention(value: float, *, name: str = "retention_seconds") -> float:
    """A retention in seconds, within ``[MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS]``."""
    return seconds(name, value, minimum=MIN_RETENTION_SECONDS, maximum=MAX_RETENTION_SECONDS)
