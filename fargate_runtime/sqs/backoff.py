"""How long a failed message stays invisible before its next try, and how a handler asks for one.

A failed message is not deleted: its visibility is set to a backoff derived from
``ApproximateReceiveCount``, so retries spread out instead of hammering a broken dependency
every ``visibility_timeout_seconds``; the queue's redrive policy (``maxReceiveCount``) moves it
to the dead-letter queue once it has failed often enough.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .settings import MAX_VISIBILITY_SECONDS

__all__ = ["Backoff", "Retry", "checked_delay"]


def checked_delay(delay_seconds: float | None, *, what: str) -> float | None:
    """``delay_seconds`` when it is None or a finite number of seconds >= 0; else ValueError.

    A delay longer than SQS still accepts for the message (12 h from its first receive) is
    not refused here: the consumer clamps it when it hands the message back, with one log line.
    """
    if delay_seconds is None:
        return None
    if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, int | float):
        raise TypeError(f"{what}: delay_seconds must be a number of seconds, not {delay_seconds!r}")
    if not math.isfinite(delay_seconds) or delay_seconds < 0:
        raise ValueError(
            f"{what}: delay_seconds must be a finite number of seconds >= 0, not {delay_seconds!r}"
        )
    return float(delay_seconds)


class Retry(Exception):
    """Raise from a handler to retry the message after ``delay_seconds`` (not logged as a crash).

    ``delay_seconds=None`` uses the consumer's backoff for the message's receive count. A
    negative or non-finite delay raises ValueError where the Retry is made (so the handler
    fails with it, visibly); one beyond what SQS accepts (12 h from the first receive) is
    clamped to it, with one log line.
    """

    def __init__(self, reason: str = "retry requested", *, delay_seconds: float | None = None):
        super().__init__(reason)
        self.delay_seconds = checked_delay(delay_seconds, what="Retry")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter", capped: half fixed, half random.

    ``base * 2 ** (receive_count - 1)``, capped at ``cap_seconds``, then drawn from
    ``[d/2, d]``: the fixed half guarantees the dependency some rest, the random half keeps a
    batch that failed together from coming back together.
    """

    base_seconds: float = 2.0
    cap_seconds: float = 300.0

    def delay_seconds(self, receive_count: int, *, rng: random.Random | None = None) -> int:
        """Visibility timeout (whole seconds, as SQS takes it) for a message that failed."""
        exponent = min(max(receive_count, 1) - 1, 30)  # 2**30 s is far past any cap
        ceiling = min(self.cap_seconds, self.base_seconds * 2**exponent)
        # Jitter spreads retries; it is not a security feature.
        draw = (rng or random).uniform(ceiling / 2, ceiling)
        return clamp_visibility(draw)


def clamp_visibility(seconds: float) -> int:
    """Round to the whole seconds SQS accepts, within 0..12 h."""
    return max(0, min(MAX_VISIBILITY_SECONDS, round(seconds)))
