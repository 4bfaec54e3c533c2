"""The webhook source: sends the plan's messages on time, in batches of 10, keeping SQS shallow.

moto answers every call more slowly as the queue gets deeper (a receive of 10 takes 64 ms at 100
queued, 576 ms at 1000), and a slow SQS would make drains slow for reasons that are not the
runtime's. So the producer sends on the plan's schedule and, when workers fall behind and more
than ``max_depth`` messages wait, pauses until they catch up (the schedule slides by the pause).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    from .components import Components
    from .plan import PlannedMessage
    from .workers import Clock

__all__ = ["Producer"]

logger = logging.getLogger("fargate_runtime.drill")

_BATCH = 10  # SendMessageBatch's limit
# Messages due within this window go out together in one batch.
_BATCH_WINDOW_SECONDS = 0.4
_DEPTH_CHECK_SECONDS = 0.5
_SEND_ATTEMPTS = 5


class Producer:
    """Sends planned messages; ``sent`` and ``paused_seconds`` say how it went."""

    def __init__(
        self,
        components: Components,
        messages: tuple[PlannedMessage, ...],
        *,
        clock: Clock,
        max_depth: int = 100,
    ) -> None:
        self._components = components
        self._messages = messages
        self._clock = clock
        self._max_depth = max_depth
        self.sent = 0
        self.paused_seconds = 0.0
        self.finished_at: float | None = None
        self._last_depth_check = -1.0

    async def run(self, started_at: float) -> None:
        """Send everything; the plan's times count from ``started_at``."""
        index = 0
        while index < len(self._messages):
            due = started_at + self.paused_seconds + self._messages[index].at_seconds
            wait = due - self._clock.now()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._hold_while_deep()
            horizon = self._messages[index].at_seconds + _BATCH_WINDOW_SECONDS
            batch: list[PlannedMessage] = []
            while (
                index < len(self._messages)
                and len(batch) < _BATCH
                and self._messages[index].at_seconds <= horizon
            ):
                batch.append(self._messages[index])
                index += 1
            await self._send(batch)
            self.sent += len(batch)
        self.finished_at = self._clock.now()

    async def _hold_while_deep(self) -> None:
        """Pause (bounded by the drill's timeout, which cancels us) while the queue is deep."""
        now = self._clock.now()
        if now - self._last_depth_check < _DEPTH_CHECK_SECONDS:
            return
        self._last_depth_check = now
        while (await self._components.depth()).visible > self._max_depth:
            await asyncio.sleep(_DEPTH_CHECK_SECONDS)
            self.paused_seconds += _DEPTH_CHECK_SECONDS

    async def _send(self, batch: list[PlannedMessage]) -> None:
        """One SendMessageBatch; entries that failed are retried (each answer is checked)."""
        pending: dict[str, SendMessageBatchRequestEntryTypeDef] = {
            str(number): {"Id": str(number), "MessageBody": message.body}
            for number, message in enumerate(batch)
        }
        for attempt in range(_SEND_ATTEMPTS):
            response = await self._components.client.send_message_batch(
                QueueUrl=self._components.queue_url, Entries=list(pending.values())
            )
            for entry in response.get("Successful", []):
                pending.pop(entry["Id"], None)
            if not pending:
                return
            logger.warning("send failed; retrying", extra={"failed": len(pending)})
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"SQS refused {len(pending)} messages {_SEND_ATTEMPTS} times")
