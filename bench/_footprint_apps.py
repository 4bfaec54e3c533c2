"""Workers for the footprint benchmark: the smallest ``sqs_worker``, no keys, no HTTP, no telemetry.

``fargate-runtime run bench._footprint_apps:plain`` consumes ``FARGATE_RUNTIME_SQS_QUEUE_URL``
with a no-op handler: what the runtime itself costs over a hand-written aioboto3 loop.
"""

from __future__ import annotations

from fargate_runtime.sqs import Message, MessageContext, sqs_worker

__all__ = ["plain"]


async def _handle(message: Message, context: MessageContext) -> None:
    """A no-op handler."""


plain = sqs_worker(_handle)
