"""Settings of the SQS consumer (env prefix ``FARGATE_RUNTIME_SQS_``) and how their timings nest.

::

    receive (VisibilityTimeout = visibility_timeout_seconds, 10 s by default)
    |<------------- 10 s ------------->|   a killed worker's (or an abandoned receive's)
    |<-- 5 s -->| heartbeat: less than half left: extend to 10 s from now, renew the lease
                |<------------- 10 s ------------->| ...and so on, up to 12 h
    lease (Redis) = the visibility: claimed just after the receive, renewed on the same beat,
    so a hard-killed worker's claim is gone when SQS hands its message out again.

    SIGTERM: the long poll in flight is abandoned at once (an idle worker exits in well under
    a second); what SQS still hands that request stays hidden for the visibility, 10 s at most.

Why 10 s: a handler that finishes within 5 s (half of it) costs no extension at all, so a busy
queue stays at a receive and a delete per 10 messages (0.2 requests per message); a handler
that blocks the event loop for up to ~4 s (a sync call: the heartbeat cannot beat meanwhile)
still keeps its message; and what a SIGKILLed worker held is back within 10 s instead of the
queue's 30 s default. Handlers that run longer are extended beat by beat (one
``ChangeMessageVisibilityBatch`` per 10 messages per beat).

``WaitTimeSeconds`` stays 20 whatever the stop timeout: shutdown does not wait for the poll.
Settings that contradict each other (a heartbeat that ticks slower than the visibility it
watches, a backoff base above its cap) are refused at start with ``ConfigurationError`` (exit
78), and so is a queue that does not exist or cannot be read (``_queue``).
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..settings import ENV_PREFIX

__all__ = [
    "MAX_DELAY_SECONDS",
    "MAX_VISIBILITY_SECONDS",
    "MAX_WAIT_TIME_SECONDS",
    "SQS_ENV_PREFIX",
    "SqsSettings",
]

SQS_ENV_PREFIX = f"{ENV_PREFIX}SQS_"
# SQS limits (ReceiveMessage / ChangeMessageVisibility API reference).
MAX_WAIT_TIME_SECONDS = 20
MAX_VISIBILITY_SECONDS = 43_200  # 12 h, cumulative from the first receive
MAX_BATCH = 10
MAX_DELAY_SECONDS = 900  # SendMessage DelaySeconds (a requeued copy's backoff)


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
    # The receive-time visibility (and the claim's lease): short on purpose, see the module's
    # docstring; the heartbeat extends only the messages that run longer.
    visibility_timeout_seconds: int = Field(default=10, ge=2, le=MAX_VISIBILITY_SECONDS)
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
    # A key in progress in another worker: the message comes back after this long (FIFO: its
    # group waits this long in process, then claims again).
    in_progress_delay_seconds: int = Field(default=5, ge=0, le=MAX_VISIBILITY_SECONDS)
    # Attempts per delete / visibility entry before it is logged as given up.
    ack_attempts: int = Field(default=3, ge=1, le=10)
    # With telemetry's metrics on: read the queue's visible backlog into the backlog gauge once
    # per this many seconds (one GetQueueAttributes per task: 1,440 a day at 60 s); 0: never.
    backlog_interval_seconds: float = Field(default=60.0, ge=0.0, le=3600.0)

    @field_validator("queue_url")
    @classmethod
    def _a_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(
                "must be the queue's URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), "
                "not its name or ARN"
            )
        return value

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
