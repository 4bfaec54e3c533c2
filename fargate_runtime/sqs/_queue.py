"""What the consumer reads about its queue at start, and the refusals that stop a start (exit 78).

One ``GetQueueAttributes`` before the first receive::

    QueueArn, FifoQueue        which queue this is
    VisibilityTimeout          the queue's own default (the consumer sets its own on every
                               receive: said once in the log, with why)
    MessageRetentionPeriod     how long the per-message counters must live (``_handback``)
    RedrivePolicy              maxReceiveCount and the dead-letter queue: how many receives a
                               message has before SQS moves it, and where the runtime moves a
                               message it knows has failed that often

A queue that does not exist, or that the task role may not read, is a ``ConfigurationError``
naming ``FARGATE_RUNTIME_SQS_QUEUE_URL`` (exit 78): polling it would only fail forever.
Transport errors (SQS not reachable yet) are retried for ``START_TIMEOUT_SECONDS``, then
refused the same way (a wrong endpoint or region looks exactly like that).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ParamValidationError

from ..errors import ConfigurationError
from .client import SQS_ERRORS, error_code, is_fatal
from .settings import SQS_ENV_PREFIX

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from .settings import SqsSettings

__all__ = ["START_TIMEOUT_SECONDS", "QueueFacts", "log_queue", "read_queue"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

START_TIMEOUT_SECONDS = 15.0
_RETRY_FIRST_SECONDS = 0.5
_RETRY_CAP_SECONDS = 4.0
_DEFAULT_RETENTION_SECONDS = 4 * 24 * 3600  # SQS's default retention period
_ATTRIBUTES = [
    "QueueArn",
    "FifoQueue",
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "RedrivePolicy",
]
_SETTING = f"{SQS_ENV_PREFIX}QUEUE_URL"


@dataclass(frozen=True, slots=True)
class QueueFacts:
    """The queue as SQS describes it."""

    url: str
    fifo: bool
    visibility_timeout_seconds: int | None = None
    retention_seconds: int = _DEFAULT_RETENTION_SECONDS
    # From the redrive policy; None when the queue has none (nothing is ever dead-lettered).
    max_receive_count: int | None = None
    dead_letter_url: str | None = None

    @property
    def name(self) -> str:
        """The queue's name (the URL's last part)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @classmethod
    def assumed(cls, settings: SqsSettings) -> QueueFacts:
        """What can be known without asking SQS (before ``read_queue``, or for tests)."""
        return cls(url=settings.queue_url, fifo=settings.is_fifo)


def _dead_letter_url(queue_url: str, arn: str) -> str | None:
    """The DLQ's URL from its ARN: same endpoint, its account and name (redrive requires the
    same region), so no ``GetQueueUrl`` permission is needed."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        return None
    base = queue_url.rstrip("/").rsplit("/", 2)[0]
    return f"{base}/{parts[4]}/{parts[5]}"


def _redrive(queue_url: str, raw: str | None) -> tuple[int | None, str | None]:
    if not raw:
        return None, None
    try:
        policy = json.loads(raw)
        count = int(policy["maxReceiveCount"])
        target = str(policy["deadLetterTargetArn"])
    except (ValueError, KeyError, TypeError):
        logger.warning("redrive policy unreadable; treated as none", extra={"redrive": raw})
        return None, None
    return count, _dead_letter_url(queue_url, target)


def _refusal(settings: SqsSettings, code: str | None) -> ConfigurationError:
    url = settings.queue_url
    if code in {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}:
        return ConfigurationError(f"{_SETTING}: there is no queue at {url} ({code})")
    if code is not None and "AccessDenied" in code:
        return ConfigurationError(
            f"{_SETTING}: the task role may not read {url} ({code}): the consumer needs "
            "sqs:GetQueueAttributes (and ReceiveMessage, DeleteMessage, ChangeMessageVisibility, "
            "SendMessage) on it"
        )
    return ConfigurationError(f"{_SETTING}: SQS refuses {url} ({code}): check the credentials")


async def read_queue(client: SQSClient, settings: SqsSettings) -> QueueFacts:
    """Describe the queue; ConfigurationError when it cannot be used (see the module docstring)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_SECONDS
    delay = _RETRY_FIRST_SECONDS
    while True:
        try:
            response = await client.get_queue_attributes(
                QueueUrl=settings.queue_url,
                AttributeNames=_ATTRIBUTES,  # type: ignore[arg-type]
            )
            break
        except SQS_ERRORS as exc:
            code = error_code(exc)
            if isinstance(exc, ParamValidationError):
                raise ConfigurationError(f"{_SETTING}: {exc}") from None
            if is_fatal(exc) or (code is not None and code.startswith("InvalidParameter")):
                raise _refusal(settings, code) from None
            if loop.time() + delay > deadline:
                raise ConfigurationError(
                    f"{_SETTING}: SQS did not answer for {settings.queue_url} within "
                    f"{START_TIMEOUT_SECONDS:g} s ({exc!r}): check the URL, "
                    f"{SQS_ENV_PREFIX}ENDPOINT_URL and {SQS_ENV_PREFIX}REGION"
                ) from None
            logger.warning(
                "sqs queue not readable yet; retrying",
                extra={"error": repr(exc), "retry_in_seconds": delay},
            )
            await asyncio.sleep(delay)
            delay = min(_RETRY_CAP_SECONDS, delay * 2)
    attributes = response.get("Attributes", {})
    count, dead_letter_url = _redrive(settings.queue_url, attributes.get("RedrivePolicy"))
    visibility = attributes.get("VisibilityTimeout")
    retention = attributes.get("MessageRetentionPeriod")
    return QueueFacts(
        url=settings.queue_url,
        fifo=attributes.get("FifoQueue", "false").lower() == "true" or settings.is_fifo,
        visibility_timeout_seconds=int(visibility) if visibility else None,
        retention_seconds=int(retention) if retention else _DEFAULT_RETENTION_SECONDS,
        max_receive_count=count,
        dead_letter_url=dead_letter_url,
    )


def log_queue(facts: QueueFacts, settings: SqsSettings) -> None:
    """The one start line about the queue: its redrive, and which visibility is used and why."""
    logger.info(
        "sqs queue checked",
        extra={
            "queue": facts.name,
            "fifo": facts.fifo,
            "max_receive_count": facts.max_receive_count,
            "dead_letter_queue": facts.dead_letter_url,
            "visibility_timeout_seconds": settings.visibility_timeout_seconds,
            "queue_visibility_timeout_seconds": facts.visibility_timeout_seconds,
            "visibility": (
                f"{SQS_ENV_PREFIX}VISIBILITY_TIMEOUT_SECONDS, set on every receive (the queue's "
                "own applies only to receives that set none): what a stopped or killed worker "
                "held comes back this soon; the heartbeat extends messages that run longer"
            ),
        },
    )
    if facts.max_receive_count is None:
        logger.warning(
            "the queue has no redrive policy: a message that always fails is retried until "
            "its retention period ends",
            extra={"queue": facts.name},
        )
