"""The consumer's last resort: give back what it still holds without the event loop.

Registered with the lifecycle when the consumer starts, run at most once, in a thread, right
before the process ends: by the supervisor after its teardown (messages whose handler outlived
its cancellation in a thread, now finished), or by the watchdog at the hard deadline (the loop
is blocked, or work would not stop). It sends, with a synchronous botocore client of its own:

    finished work recorded                   (a handler that returned, its completion not yet
                                              on record: completed now, synchronously)
    claims of unfinished messages released   (so a redelivery can claim the key at once)
    unfinished messages made visible         (ChangeMessageVisibilityBatch 0)
    finished messages deleted                (completed, or their delete still queued; also
                                              finished ones whose completion the store could
                                              not take: the work is done, a rerun is what the
                                              record was for)

Recording finished work here is what keeps a forced exit (a blocked loop that never sent a
completion already queued) from running that work again elsewhere.

The async client cannot be used: its calls need the loop that is blocked or gone. botocore is
already loaded (aiobotocore is built on it); the client itself is built in ``prepare``, when
the shutdown starts, so the release only sends.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..idempotency import Completion
from .settings import MAX_BATCH

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

    from ..idempotency import IdempotencyStore
    from ._holdings import Holdings
    from ._inflight import InFlight

__all__ = ["FinalRelease"]

logger = logging.getLogger("fargate_runtime.sqs.consumer")

# One attempt, short timeouts: this runs inside the last second of the process.
_CONNECT_TIMEOUT_SECONDS = 0.2
_READ_TIMEOUT_SECONDS = 0.25


class FinalRelease:
    """``release(seconds)``: hand back everything still held, from any thread, once."""

    def __init__(
        self,
        holdings: Holdings,
        *,
        client: SQSClient,
        store: IdempotencyStore | None,
        retention_seconds: float = 0.0,
    ) -> None:
        self._holdings = holdings
        self._retention = retention_seconds
        self._queue_url = holdings.settings.queue_url
        self._async_client = client
        self._store = store
        self._sync: Any = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Build the synchronous client (about 0.1 s) before it is needed."""
        self._client()

    def _client(self) -> Any:
        with self._lock:
            if self._sync is None:
                import botocore.session
                from botocore.config import Config

                # Where the consumer's own client sends its calls (a local endpoint in tests).
                meta = self._async_client.meta
                self._sync = botocore.session.get_session().create_client(
                    "sqs",
                    region_name=meta.region_name,
                    endpoint_url=meta.endpoint_url,
                    config=Config(
                        connect_timeout=_CONNECT_TIMEOUT_SECONDS,
                        read_timeout=_READ_TIMEOUT_SECONDS,
                        retries={"total_max_attempts": 1},
                    ),
                )
            return self._sync

    def __call__(self, seconds: float) -> None:
        """Release what is held, delete what is finished, within about ``seconds``."""
        deadline = time.monotonic() + seconds
        held = self._holdings.snapshot()
        recorded, _ = self._record(
            [i for i in held if i.succeeded and not i.completed and not i.lease_lost], deadline
        )
        finished = [item for item in held if item.completed or item in recorded]
        unfinished = [item for item in held if item not in finished]
        deletes = [(i.message_id, i.message.receipt_handle) for i in finished]
        deletes += self._holdings.deletes.unsent()
        if not unfinished and not deletes:
            return
        claims = [item.held for item in unfinished if item.held is not None]
        released_claims = 0
        release_blocking = getattr(self._store, "release_blocking", None)
        if claims and release_blocking is not None:
            released_claims = release_blocking(
                claims, timeout_seconds=max(0.05, min(0.1, deadline - time.monotonic()))
            )
        client = self._client()
        made_visible = self._send(
            client.change_message_visibility_batch,
            [
                {"Id": str(n), "ReceiptHandle": i.message.receipt_handle, "VisibilityTimeout": 0}
                for n, i in enumerate(unfinished)
            ],
            deadline,
        )
        deleted = self._send(
            client.delete_message_batch,
            [{"Id": str(n), "ReceiptHandle": handle} for n, (_, handle) in enumerate(deletes)],
            deadline,
        )
        logger.warning(
            "final release: what was still held handed back without the event loop",
            extra={
                "recorded": len(recorded),
                "made_visible": made_visible,
                "of_unfinished": len(unfinished),
                "deleted": deleted,
                "of_finished": len(deletes),
                "claims_released": released_claims,
                "of_claims": len(claims),
            },
        )

    def _record(
        self, items: list[InFlight], deadline: float
    ) -> tuple[list[InFlight], list[InFlight]]:
        """Complete finished work's claims synchronously: (finished, refused). A store that
        cannot be asked leaves them finished (deleted: the work is done)."""
        claimed = [item for item in items if item.held is not None]
        complete_blocking = getattr(self._store, "complete_blocking", None)
        if not claimed or complete_blocking is None or self._retention <= 0:
            return items, []
        answers = complete_blocking(
            [Completion(i.held.key, i.held.token, b"") for i in claimed if i.held is not None],
            retention_seconds=self._retention,
            timeout_seconds=max(0.05, min(0.1, deadline - time.monotonic())),
        )
        if answers is None:
            logger.error(
                "final release: finished work not recorded (the store did not answer); its "
                "messages are deleted all the same",
                extra={"count": len(claimed)},
            )
            return items, []
        refused = [item for item, ok in zip(claimed, answers, strict=True) if not ok]
        return [item for item in items if item not in refused], refused

    def _send(self, call: Any, entries: list[dict[str, Any]], deadline: float) -> int:
        """Send ``entries`` in batches of 10 until the deadline; return how many succeeded."""
        done = 0
        for start in range(0, len(entries), MAX_BATCH):
            if time.monotonic() >= deadline:
                break
            try:
                response = call(
                    QueueUrl=self._queue_url, Entries=entries[start : start + MAX_BATCH]
                )
            except Exception as exc:  # noqa: BLE001 - last resort: log, the rest goes on
                logger.error("final release call failed", extra={"error": repr(exc)})
                continue
            done += len(response.get("Successful", []))
        return done
