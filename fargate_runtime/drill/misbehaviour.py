"""Handlers that misbehave on purpose, for ``fargate-runtime drill --misbehave-share``.

Ordinary application code does these things, and the runtime's promise (out before SIGKILL,
nothing lost, nothing charged twice, nothing released while it can still run) must hold
through them. Each runs for longer than the whole stop timeout, on an event's first delivery
only (a redelivery charges normally, so the drill ends)::

    block    time.sleep: the event loop stops turning (a sync library call)
    spin     a CPU-bound loop: the same, and the GIL is busy
    swallow  catches CancelledError and carries on waiting
    thread   the charge itself runs in asyncio.to_thread, after a wait: cancellation cannot
             stop it, so the message must stay held until the thread ends

Which events misbehave, and how, follows from the seed and the event id: every worker of one
drill agrees, and the same seed misbehaves the same way again.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ledger import ChargeOutcome, ChargeRequest, Ledger

__all__ = ["Misbehaviour", "MisbehaviourPlan"]

logger = logging.getLogger("fargate_runtime.drill.worker")


class Misbehaviour(enum.Enum):
    """What a misbehaving handler does before (or instead of) its charge."""

    BLOCK = "block"
    SPIN = "spin"
    SWALLOW = "swallow"
    THREAD = "thread"


_KINDS = tuple(Misbehaviour)


@dataclass(frozen=True, slots=True)
class MisbehaviourPlan:
    """Which events misbehave (``share``), how long (``seconds``), chosen by ``seed``."""

    share: float
    seconds: float
    seed: int

    def pick(self, event_id: str, *, receive_count: int) -> Misbehaviour | None:
        """The misbehaviour of this delivery of ``event_id``, or None (behave)."""
        if self.share <= 0 or receive_count > 1:
            return None
        digest = hashlib.sha256(f"{self.seed}:{event_id}".encode()).digest()
        if int.from_bytes(digest[:4]) / 2**32 >= self.share:
            return None
        return _KINDS[digest[4] % len(_KINDS)]

    async def charge(
        self, kind: Misbehaviour, ledger: Ledger, request: ChargeRequest
    ) -> ChargeOutcome:
        """Misbehave for ``seconds`` the ``kind`` way, then charge (unless stopped first)."""
        logger.warning(
            "payment misbehaving", extra={"event_id": request.event_id, "misbehaviour": kind.value}
        )
        seconds = self.seconds
        if kind is Misbehaviour.BLOCK:
            time.sleep(seconds)  # noqa: ASYNC251 - the misbehaviour being drilled
        elif kind is Misbehaviour.SPIN:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pass
        elif kind is Misbehaviour.SWALLOW:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                try:
                    await asyncio.sleep(left)
                except asyncio.CancelledError:
                    logger.warning("cancellation swallowed", extra={"event_id": request.event_id})
        else:
            return await asyncio.to_thread(_slow_charge, ledger, request, seconds)
        return await ledger.charge(request)


def _slow_charge(ledger: Ledger, request: ChargeRequest, seconds: float) -> ChargeOutcome:
    """In a thread: the provider call that takes too long, then charges."""
    time.sleep(seconds)
    return ledger.charge_blocking(request)
