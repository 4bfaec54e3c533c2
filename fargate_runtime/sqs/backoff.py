"""How long a failed message stays invisible before its next try, and how a handler asks for one.

A failed message is not deleted: its visibility is set to a backoff derived from
``ApproximateReceiveCount``, so retries spread out instead of hammering a broken dependency
every ``visibility_timeout_seconds``; the queue's redrive policy (``maxReceiveCount``) moves it
to the dead-letter queue once it has failed often enough.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .settings import MAX_VISIBILITY_SECONDS

__all__ = ["Backoff", "Retry"]


class Retry(Exception):
    """Raise from a handler to retry the message after ``delay_seconds`` (not logged as a crash).

    ``delay_seconds=None`` uses the consumer's backoff for the message's receive count.
    """

    def __init__(self, reason: str = "retry requested", *, delay_seconds: float | None = None):
        super().__init__(reason)
        self.delay_seconds = delay_seconds


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
