"""Long polls that ask only for free concurrency slots: nothing is received that cannot start.

Before each receive a loop passes the consumer's gate: while the idempotency store is down
(``_outage``) no receive is started, so no receive count is spent on a message that could not
run. At shutdown the loops are cancelled where they are (a long poll in flight is abandoned).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING

from ..errors import SqsError
from .client import SQS_ERRORS, error_code, is_fatal
from .settings import MAX_BATCH

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef, ReceiveMessageRequestTypeDef

    from .settings import SqsSettings

__all__ = ["Receiver", "Slots"]

logger = logging.getLogger("fargate_runtime.sqs.receiver")

# After a failed receive: 0.5 s, 1 s, 2 s ... at most 10 s, so an SQS outage is not hammered.
_ERROR_BACKOFF_FIRST_SECONDS = 0.5
_ERROR_BACKOFF_CAP_SECONDS = 10.0
# Short polling (WAIT_TIME_SECONDS=0): pause after an empty answer rather than spin on an idle
# queue, paying for every empty receive.
_SHORT_POLL_PAUSE_SECONDS = 1.0


class Slots:
    """Concurrency permits. A message holds one from receive until deleted or released."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self.closed = False
        self._changed = asyncio.Event()

    def give(self, count: int = 1) -> None:
        """Return ``count`` permits."""
        self.free += count
        self._changed.set()

    def close(self) -> None:
        """Wake every waiter; ``take`` answers 0 from now on (shutdown: no new receive)."""
        self.closed = True
        self._changed.set()

    async def wait_changed(self, seconds: float | None = None) -> None:
        """Wait until permits are given back or the slots close (or ``seconds`` pass)."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._changed.wait()

    async def take(self, most: int, *, gather_seconds: float) -> int:
        """Take up to ``most`` permits once at least one is free; 0 once closed.

        With fewer than ``most`` free while others are busy, wait up to ``gather_seconds`` for
        more to free up: one receive of 10 costs what one receive of 1 costs.
        """
        loop = asyncio.get_running_loop()
        while not self.closed:
            if self.free == 0:
                await self.wait_changed()
                continue
            gather_until = loop.time() + gather_seconds
            while not self.closed and 0 < self.free < most:
                left = gather_until - loop.time()
                if left <= 0:
                    break
                await self.wait_changed(left)
            if self.closed or self.free == 0:  # another receiver took them meanwhile
                continue
            taken = min(self.free, most)
            self.free -= taken
            return taken
        return 0


class Receiver:
    """Runs one long-poll loop per ``receivers`` setting; hands what it gets to ``accept``."""

    def __init__(
        self,
        client: SQSClient,
        *,
        settings: SqsSettings,
        slots: Slots,
        accept: Callable[[list[MessageTypeDef], float], None],
        gate: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._settings = settings
        self._slots = slots
        self._gate = gate
        self._wait = settings.wait_time_seconds
        self._accept = accept
        self._clock = clock
        # Receive calls on their way, by loop: how many messages each may bring.
        self.receiving: dict[int, int] = {}
        self.receives = 0
        self.empty_receives = 0
        self.loops: dict[int, asyncio.Task[None]] = {}

    def start(self) -> None:
        """Start the ``receiver_count`` loops."""
        self.loops = {
            index: asyncio.create_task(self.loop(index), name=f"sqs-receive-{index}")
            for index in range(self._settings.receiver_count)
        }

    async def until(self, shutdown: asyncio.Task[None]) -> BaseException | None:
        """Wait for ``shutdown``, or for a loop's fatal error (returned, not raised: the
        consumer drains what is in flight before it raises it)."""
        done, _ = await asyncio.wait(
            {shutdown, *self.loops.values()}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not shutdown and not task.cancelled():
                error = task.exception()
                if error is not None:
                    return error
        return None

    def abandon(self) -> tuple[int, int]:
        """Cancel every loop where it is; (receive calls abandoned on their way, messages they
        could still take: SQS may hand them to the abandoned request)."""
        abandoned = hidden = 0
        for index, task in self.loops.items():
            if task.done():
                continue
            if index in self.receiving:
                abandoned += 1
                hidden += self.receiving[index]
            task.cancel()
        return abandoned, hidden

    async def stopped(self) -> None:
        """Wait for every loop to end (after ``abandon``)."""
        await asyncio.gather(*self.loops.values(), return_exceptions=True)

    def _request(self, count: int, attempt_id: str | None) -> ReceiveMessageRequestTypeDef:
        request: ReceiveMessageRequestTypeDef = {
            "QueueUrl": self._settings.queue_url,
            "MaxNumberOfMessages": count,
            "WaitTimeSeconds": self._wait,
            "VisibilityTimeout": self._settings.visibility_timeout_seconds,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if attempt_id is not None:
            # FIFO: a retried receive with the same id gets the same messages back instead of
            # leaving them hidden (SQS ReceiveMessage reference).
            request["ReceiveRequestAttemptId"] = attempt_id
        return request

    async def loop(self, index: int) -> None:
        """Receive until the slots are closed (shutdown); raise ``SqsError`` on fatal errors."""
        most = min(MAX_BATCH, self._slots.total)
        while True:
            if self._gate is not None:
                await self._gate()
            count = await self._slots.take(most, gather_seconds=self._settings.gather_seconds)
            if count == 0:
                return
            messages, sent_at = await self._receive(index, count)
            self._slots.give(count - len(messages))
            if messages:
                self._accept(messages, sent_at)
            elif self._wait == 0 and await self._closed_within(_SHORT_POLL_PAUSE_SECONDS):
                return

    async def _receive(self, index: int, count: int) -> tuple[list[MessageTypeDef], float]:
        """One logical receive, retried on transient errors with the same attempt id."""
        attempt_id = uuid.uuid4().hex if self._settings.is_fifo else None
        failures = 0
        while True:
            sent_at = self._clock()
            self.receiving[index] = count
            try:
                response = await self._client.receive_message(**self._request(count, attempt_id))
            except SQS_ERRORS as exc:
                if is_fatal(exc):
                    raise SqsError(
                        f"cannot receive from {self._settings.queue_url}: {error_code(exc)}"
                    ) from exc
                failures += 1
                delay = min(
                    _ERROR_BACKOFF_CAP_SECONDS, _ERROR_BACKOFF_FIRST_SECONDS * 2 ** (failures - 1)
                )
                logger.warning(
                    "receive failed; retrying",
                    extra={"error": repr(exc), "retry_in_seconds": delay, "failures": failures},
                )
                if await self._closed_within(delay):
                    return [], sent_at
                continue
            finally:
                self.receiving.pop(index, None)
            self.receives += 1
            messages = response.get("Messages", [])
            if not messages:
                self.empty_receives += 1
            return messages, sent_at

    async def _closed_within(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the slots close first; True when they are closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._slots.closed and (left := deadline - loop.time()) > 0:
            await self._slots.wait_changed(left)
        return self._slots.closed
