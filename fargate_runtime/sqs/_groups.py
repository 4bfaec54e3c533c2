"""FIFO groups: in order, one at a time, and a failure retried in process while its group waits.

SQS hands out a FIFO group in order or not at all, and counts every receive of every message
toward ``maxReceiveCount``. Releasing a group's followers whenever its head failed used to climb
their receive counts until a follower was dead-lettered without ever running. So the group is
held (the heartbeat extends every message of it) and only the head is tried again::

    head fails -> its failures counted (``f``, ``_handback``) -> wait its backoff (or the Retry's
        delay) -> run it again; the followers wait, in order, their receive counts untouched
    head failed maxReceiveCount times -> moved to the DLQ by the runtime, alone; the followers
        run at once, in order
    head's key in progress elsewhere -> wait ``in_progress_delay_seconds``, claim again
    shutdown -> what is still held goes back at once (the drain releases it)
    no DLQ to move to (send refused) / lease lost -> the head is handed back and its followers
        released behind it, as SQS would have it

A batch handler gets, each round, every message that may run: those before the first message
of their group that may not (a failure, an in-progress key). The first failed message of a
group is that group's head; the batch handler should fail its followers too (``BatchContext``),
and they run again behind it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ._claiming import Verdict
from ._inflight import MessageState, Ran
from ._outage import first_of
from .events import MessageOutcome

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._inflight import InFlight
    from ._running import Runner

__all__ = ["GroupRunner"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")


class GroupRunner:
    """Runs the FIFO groups of one receive batch (see the module docstring)."""

    def __init__(self, runner: Runner, *, verdicts: dict[InFlight, Verdict]) -> None:
        self._runner = runner
        self._verdicts = verdicts
        self._holdings = runner.holdings
        self._handback = runner.holdings.handback
        self._settings = runner.holdings.settings
        self._stats = runner.holdings.stats
        self._lifecycle = runner.lifecycle

    @staticmethod
    def split(items: Iterable[InFlight]) -> list[list[InFlight]]:
        """The batch's groups, each in queue order."""
        groups: dict[str | None, list[InFlight]] = {}
        for item in items:
            groups.setdefault(item.message.group_id, []).append(item)
        return list(groups.values())

    async def run_group(self, group: list[InFlight]) -> None:
        """Single-message mode: one group, in order."""
        for index, item in enumerate(group):
            verdict: Verdict | None = self._verdicts.get(item, Verdict.RUN)
            while verdict is not None and item.state is MessageState.RECEIVED:
                if verdict is Verdict.WAIT:
                    verdict = await self._after(item, self._settings.in_progress_delay_seconds)
                    continue
                ran = Ran.FAILED if verdict is Verdict.FAILED else await self._runner.run_one(item)
                if ran is not Ran.FAILED:
                    break
                verdict = await self._retry(item, item.retry_delay_seconds)
            if item.state is not MessageState.DONE:
                # Could not go on (handed back, or the process is stopping): nor can the rest.
                await self._release(group[index + 1 :])
                return

    async def run_batch(self, items: list[InFlight]) -> None:
        """Batch mode: rounds of every message that may run, heads retried in between."""
        pending = [item for item in items if item.state is MessageState.RECEIVED]
        while pending:
            heads: dict[str | None, InFlight] = {}
            runnable: list[InFlight] = []
            for item in pending:
                group = item.message.group_id
                if group in heads:
                    continue
                if self._verdicts.get(item) in (Verdict.WAIT, Verdict.FAILED):
                    heads[group] = item
                else:
                    runnable.append(item)
            failed = await self._runner.run_batch(runnable)
            for item in runnable:
                if item in failed and item.message.group_id not in heads:
                    heads[item.message.group_id] = item
            waits = [await self._judge(head, failed) for head in heads.values()]
            pending = [item for item in pending if item.state is MessageState.RECEIVED]
            wait = min((seconds for seconds in waits if seconds is not None), default=0.0)
            if pending and not await self._pause(wait):
                return
            retry = [head for head in heads.values() if head.state is MessageState.RECEIVED]
            for head in retry:
                if self._verdicts.get(head) is not Verdict.WAIT and head.held is not None:
                    self._verdicts[head] = Verdict.RUN
            await self._claim_again([h for h in retry if h.held is None])

    async def _judge(self, head: InFlight, failed: dict[InFlight, float | None]) -> float | None:
        """A batch head: how long its group waits (None: it left, the group may go on)."""
        if self._verdicts.get(head) is Verdict.WAIT:
            return self._settings.in_progress_delay_seconds
        delay = await self._failure(head, failed.get(head))
        if delay is None and head.state is MessageState.RECEIVED:
            # No DLQ to move it to: handed back, and its followers behind it.
            await self._runner.fail([head], {head.message_id: failed.get(head)}, counted=True)
            group = head.message.group_id
            await self._release([i for i in self._holdings.items() if i.message.group_id == group])
        return delay

    async def _retry(self, item: InFlight, asked: float | None) -> Verdict | None:
        """After a failure: wait and return the next verdict, or None (it left, or we stop)."""
        delay = await self._failure(item, asked)
        if delay is None:
            if item.state is MessageState.RECEIVED:
                await self._runner.fail([item], {item.message_id: asked}, counted=True)
            return None
        return await self._after(item, delay)

    async def _failure(self, item: InFlight, asked: float | None) -> float | None:
        """Count a failure; dead-letter it after maxReceiveCount; else the delay before its next
        try. None: it left (dead-lettered) or must be handed back (no DLQ to move it to)."""
        self._stats.failed += 1  # every failure, also those retried in process
        failures = await self._handback.failed_in_process(item)
        most = self._handback.queue.max_receive_count
        if most is not None and failures >= most:
            await self._handback.dead_letter(item, failures)
            return None
        self._stats.retried_in_process += 1
        seconds = self._handback.backoff_seconds(item, failures) if asked is None else asked
        seconds = self._handback.visibility(item, seconds)
        logger.info(
            "FIFO message failed: retried in process, its group held meanwhile",
            extra={**item.log_fields(), "failures": failures, "retry_in_seconds": seconds},
        )
        return seconds

    async def _after(self, item: InFlight, seconds: float) -> Verdict | None:
        """Wait ``seconds`` (None when the process stops first), then claim again if needed."""
        if not await self._pause(seconds):
            return None
        if item.held is not None:
            return Verdict.RUN
        await self._claim_again([item])
        return self._verdicts.get(item)

    async def _claim_again(self, items: list[InFlight]) -> None:
        if not items:
            return
        verdicts = await self._runner.claim(items)
        if verdicts is not None:
            self._verdicts.update(verdicts)

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the process starts stopping; False when it does."""
        if seconds > 0 and not self._lifecycle.shutdown_requested:
            await first_of(asyncio.sleep(seconds), self._lifecycle.wait_shutdown_requested())
        return not self._lifecycle.shutdown_requested

    async def _release(self, followers: list[InFlight]) -> None:
        rest = [item for item in followers if item.state is MessageState.RECEIVED]
        if not rest:
            return
        if self._lifecycle.shutdown_requested:
            await self._holdings.release_on_shutdown(rest)
            return
        await self._handback.released(rest, outcome=MessageOutcome.GROUP_FAILED)
        self._stats.released_after_group_failure += len(rest)
