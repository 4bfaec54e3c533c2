"""The peer of ``bench/sqs.py``'s stop figures: the SQS worker people write by hand.

A SIGTERM handler sets a flag that the loop checks between long polls; messages are received
without a ``VisibilityTimeout`` (the queue's own applies); each is handled in a task of its own,
then deleted. Run as
``python -m bench._plain_sqs_worker QUEUE_URL HANDLER_SECONDS``; prints ``ready`` once its
first long poll is on its way and ``handling`` as each message starts.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import aioboto3


async def main(queue_url: str, handler_seconds: float) -> None:
    """Receive, handle, delete until SIGTERM (checked between polls)."""
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    async with aioboto3.Session().client("sqs") as client:

        async def handle(receipt_handle: str) -> None:
            print("handling", flush=True)
            await asyncio.sleep(handler_seconds)
            await client.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle)

        handlers: set[asyncio.Task[None]] = set()
        print("ready", flush=True)
        while not stopping.is_set():
            response = await client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20
            )
            for message in response.get("Messages", []):
                task = asyncio.create_task(handle(message["ReceiptHandle"]))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
        await asyncio.gather(*handlers)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
