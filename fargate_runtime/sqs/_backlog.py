"""The backlog gauge: the queue's visible messages, read at most once per interval.

Each task reads ``ApproximateNumberOfMessages`` with one ``GetQueueAttributes`` call per
``backlog_interval_seconds`` (60 s: 1,440 requests a day per task, about $0.0006 at $0.40 per
million) and only while a meter provider is installed, so a consumer without telemetry makes no
such call. A task cannot see how many others run (the task metadata has no desired or running
count), so the gauge holds the queue's backlog as this task read it; backlog per task is that
divided by the running tasks, done where the tasks' series meet (the average of the gauge over
tasks divided by their count, or CloudWatch metric math with ``RunningTaskCount``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from .client import SQS_ERRORS, error_code, is_fatal

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from ..telemetry._instruments import ConsumerMetrics

__all__ = ["BacklogSampler"]

logger = logging.getLogger("fargate_runtime.sqs.backlog")

_ATTRIBUTE: Final = "ApproximateNumberOfMessages"


class BacklogSampler:
    """Reads the queue's visible backlog every ``interval_seconds`` into the backlog gauge."""

    def __init__(
        self,
        client: SQSClient,
        *,
        queue_url: str,
        interval_seconds: float,
        metrics: ConsumerMetrics,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._interval = interval_seconds
        self._metrics = metrics
        self.samples = 0

    async def run(self) -> None:
        """Sample now, then once per interval, until cancelled or refused for good."""
        while True:
            if not await self.sample():
                return
            await asyncio.sleep(self._interval)

    async def sample(self) -> bool:
        """Read the backlog once and record it; False when retrying is pointless.

        The gauge is an aid for scaling, not part of the work: no failure here stops the
        consumer. A refusal (``AccessDenied``: the task role lacks ``sqs:GetQueueAttributes``)
        is logged once and sampling stops; anything else is logged and tried next interval.
        """
        try:
            response = await self._client.get_queue_attributes(
                QueueUrl=self._queue_url, AttributeNames=[_ATTRIBUTE]
            )
            visible = int(response["Attributes"][_ATTRIBUTE])
        except SQS_ERRORS as exc:
            if is_fatal(exc):
                logger.warning(
                    "backlog gauge off: GetQueueAttributes refused "
                    "(the task role needs sqs:GetQueueAttributes on the queue)",
                    extra={"error": error_code(exc)},
                )
                return False
            logger.warning("backlog not read; trying again", extra={"error": repr(exc)})
            return True
        except (KeyError, ValueError) as exc:
            logger.warning("backlog answer unreadable", extra={"error": repr(exc)})
            return True
        self._metrics.record_backlog(visible)
        self.samples += 1
        return True
