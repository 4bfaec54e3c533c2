"""Settings of the SQS consumer (env prefix ``FARGATE_RUNTIME_SQS_``) and how they meet the budget.

How the consumer's timings nest inside one another and inside the shutdown budget::

    receive                                   (message invisible to other consumers)
    |<----------- visibility_timeout_seconds (20) ----------->|
    |<-- heartbeat_after (10) -->| extend by 20 from now, renew the lease with it
                                 |<--------------- 20 --------------->| ...up to 12 h
    lease (Redis) = visibility: claimed just after the receive, renewed on the same tick,
    so a hard-killed worker's claim is gone when SQS hands its message out again.

    SIGTERM
    |<------------------ drain_seconds ------------------>|
    |<- effective WaitTimeSeconds ->|<- receive headroom ->|
      the receive already in flight     its answer arrives and what it
      returns (empty or not)            brought is released (visibility 0)

``WaitTimeSeconds`` is **clamped**, not refused: the same image runs under task definitions with
different ``stopTimeout``s, and the right long poll for an idle queue is simply "as long as the
drain budget can absorb". The clamp is logged once at start. Settings that contradict each other
whatever the budget (a heartbeat that fires after the visibility timeout, a backoff base above
its cap) are refused at start with ``ConfigurationError`` (exit 78).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..settings import ENV_PREFIX

if TYPE_CHECKING:
    from ..settings import ShutdownBudget

__all__ = [
    "MAX_VISIBILITY_SECONDS",
    "MAX_WAIT_TIME_SECONDS",
    "RECEIVE_HEADROOM_SECONDS",
    "SQS_ENV_PREFIX",
    "SqsSettings",
]

SQS_ENV_PREFIX = f"{ENV_PREFIX}SQS_"
# SQS limits (ReceiveMessage / ChangeMessageVisibility API reference).
MAX_WAIT_TIME_SECONDS = 20
MAX_VISIBILITY_SECONDS = 43_200  # 12 h, cumulative from the first receive
MAX_BATCH = 10
# Time, inside the drain budget, for the last long poll's answer to travel back and for what it
# brought to be released (one ChangeMessageVisibilityBatch round trip).
RECEIVE_HEADROOM_SECONDS = 1.0


class SqsSettings(BaseSettings):
    """What the consumer needs to know about its queue and how hard to work it.

    Only ``queue_url`` is required. Credentials come from the default chain (the ECS task role in
    production); ``endpoint_url`` points at a local SQS (moto's server mode) for development.
    """

    model_config = SettingsConfigDict(env_prefix=SQS_ENV_PREFIX, extra="ignore", frozen=True)

    queue_url: str = Field(min_length=1)
    endpoint_url: str | None = None
    region: str | None = None
    # Handlers running at once; a receive never asks for more than the free ones.
    concurrency: int = Field(default=10, ge=1, le=1000)
    # Long polls running at once; None: one per 10 slots (a receive returns at most 10).
    receivers: int | None = Field(default=None, ge=1, le=50)
    wait_time_seconds: int = Field(default=MAX_WAIT_TIME_SECONDS, ge=0, le=MAX_WAIT_TIME_SECONDS)
    # Short on purpose: the heartbeat extends only the messages that need it, so what a
    # hard-killed worker (or an abandoned receive) held is back within 20 s, not SQS's 30 s or
    # a "safe" 15 minutes. 20 rather than 10: a handler that blocks the event loop for up to
    # half of it (10 s) still does not lose its message.
    visibility_timeout_seconds: int = Field(default=20, ge=2, le=MAX_VISIBILITY_SECONDS)
    # Extend visibility when less than this fraction of it remains (0.5: at 10 s of 20).
    heartbeat_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    # How often the heartbeat looks at what is in flight (an in-memory scan; cheap).
    heartbeat_tick_seconds: float = Field(default=1.0, gt=0.0, le=60.0)
    # Deletes and visibility changes wait this long for a full batch of 10 before going out.
    flush_interval_seconds: float = Field(default=0.1, gt=0.0, le=5.0)
    # With fewer than a full batch of slots free, wait this long for more before receiving:
    # receives of 10 instead of 1 are what keep requests per message low on a busy queue.
    gather_seconds: float = Field(default=0.02, ge=0.0, le=1.0)
    backoff_base_seconds: float = Field(default=2.0, ge=0.0, le=MAX_VISIBILITY_SECONDS)
    backoff_cap_seconds: float = Field(default=300.0, ge=0.0, le=MAX_VISIBILITY_SECONDS)
    # Store errors, in-progress duplicates: wait this long before the message comes back.
    in_progress_delay_seconds: int = Field(default=5, ge=0, le=MAX_VISIBILITY_SECONDS)
    # Shutdown: abandon the receive in flight instead of letting it return (faster exit, but
    # what SQS hands the abandoned request stays hidden for visibility_timeout_seconds).
    abandon_receive_on_shutdown: bool = False
    # Attempts per delete / visibility entry before it is logged as given up.
    ack_attempts: int = Field(default=3, ge=1, le=10)
    # With telemetry's metrics on: read the queue's visible backlog into the backlog gauge once
    # per this many seconds (one GetQueueAttributes per task: 1,440 a day at 60 s); 0: never.
    backlog_interval_seconds: float = Field(default=60.0, ge=0.0, le=3600.0)

    @model_validator(mode="after")
    def _consistent(self) -> SqsSettings:
        p = SQS_ENV_PREFIX
        if self.backoff_base_seconds > self.backoff_cap_seconds:
            raise ValueError(
                f"{p}BACKOFF_BASE_SECONDS {self.backoff_base_seconds:g} is above "
                f"{p}BACKOFF_CAP_SECONDS {self.backoff_cap_seconds:g}"
            )
        if self.heartbeat_tick_seconds >= self.visibility_timeout_seconds * self.heartbeat_fraction:
            raise ValueError(
                f"{p}HEARTBEAT_TICK_SECONDS {self.heartbeat_tick_seconds:g} must be shorter than "
                f"{p}VISIBILITY_TIMEOUT_SECONDS x {p}HEARTBEAT_FRACTION "
                f"({self.visibility_timeout_seconds} x {self.heartbeat_fraction:g}): the "
                "heartbeat would notice too late that a message needs extending"
            )
        return self

    @property
    def is_fifo(self) -> bool:
        """FIFO queues' names end in ``.fifo``."""
        return self.queue_url.rstrip("/").endswith(".fifo")

    @property
    def queue_name(self) -> str:
        """The last part of the queue URL."""
        return self.queue_url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def receiver_count(self) -> int:
        """Long polls to run at once."""
        if self.receivers is not None:
            return min(self.receivers, self.concurrency)
        return max(1, math.ceil(self.concurrency / MAX_BATCH))

    @property
    def heartbeat_after_seconds(self) -> float:
        """Extend a message's visibility when fewer seconds than this remain."""
        return self.visibility_timeout_seconds * self.heartbeat_fraction

    def effective_wait_time_seconds(self, budget: ShutdownBudget) -> int:
        """``wait_time_seconds`` clamped so a receive in flight at SIGTERM returns in the drain.

        ``floor(drain_seconds - RECEIVE_HEADROOM_SECONDS)``, at least 0 (short polling).
        """
        fits = math.floor(budget.drain_seconds - RECEIVE_HEADROOM_SECONDS)
        return max(0, min(self.wait_time_seconds, fits))
