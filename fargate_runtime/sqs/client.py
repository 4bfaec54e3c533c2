"""The aioboto3 SQS client the consumer runs on, and what its errors mean to the consumer."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from .settings import MAX_WAIT_TIME_SECONDS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from types_aiobotocore_sqs import SQSClient

    from .settings import SqsSettings

__all__ = ["SQS_ERRORS", "TRANSPORT_ERRORS", "error_code", "is_fatal", "open_sqs_client"]

# What an SQS call can raise besides ClientError: botocore's own (endpoint, credentials,
# timeouts) and the HTTP layer's, which aiobotocore lets through on a dropped connection.
# ``SQS_ERRORS`` is everything an SQS call can fail with.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (BotoCoreError, OSError, TimeoutError)
SQS_ERRORS: tuple[type[Exception], ...] = (ClientError, *TRANSPORT_ERRORS)

# Client errors that no retry will fix: the queue is wrong or we may not use it. The consumer
# stops (exit 1) so the deployment's circuit breaker sees it, rather than polling forever.
_FATAL_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidAddress",
        "InvalidSecurity",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "KMS.AccessDeniedException",
        "KMS.DisabledException",
        "KMS.NotFoundException",
    }
)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ClientError (``QueryErrorCode`` preferred: the SQS name)."""
    if not isinstance(exc, ClientError):
        return None
    error = exc.response.get("Error", {})
    return str(error.get("QueryErrorCode") or error.get("Code") or "") or None


def is_fatal(exc: BaseException) -> bool:
    """True for errors that retrying cannot fix (missing queue, no permission)."""
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return bool({error.get("Code"), error.get("QueryErrorCode")} & _FATAL_CODES)


@contextlib.asynccontextmanager
async def open_sqs_client(settings: SqsSettings) -> AsyncIterator[SQSClient]:
    """An SQS client: credentials from the default chain, ``endpoint_url`` for a local SQS.

    Enter it as a supervisor resource (``await rt.enter(open_sqs_client(s), name="sqs")``) so
    it is closed after the consumer has flushed its deletes.
    """
    config = AioConfig(
        connect_timeout=5,
        # A long poll legitimately takes WaitTimeSeconds; leave room for the answer on top.
        read_timeout=MAX_WAIT_TIME_SECONDS + 10,
        # Standard mode retries throttling and 5xx with backoff; our own retry loops wrap it.
        retries={"mode": "standard", "max_attempts": 3},
        # One connection per long poll, plus deletes, visibility changes and heartbeats.
        max_pool_connections=settings.receiver_count + 8,
    )
    session = aioboto3.Session()
    async with session.client(
        "sqs",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        config=config,
    ) as client:
        yield client
