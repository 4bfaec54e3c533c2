"""The drill's settings and its schedule, drawn once from the seed: same seed, same drill.

The schedule fixes *what* happens and *when* it is due; the run then carries it out against real
processes, whose timing varies. Everything random is drawn here, from one ``random.Random(seed)``::

    messages       which events, in which order, which are duplicates (same event_id, new
                   message) or out of order (a later sequence of an account sent first),
                   which bodies are malformed, and when each is due to be sent
    interruptions  when, which worker slot, SIGTERM (Spot's warning) or SIGKILL (hard kill)
    redis restart  when (half way through the sending), if asked for
    redis outage   when (a quarter of the way through the sending) and for how long: Redis
                   stops answering (paused, its data kept), if asked for
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_WORKER",
    "STORES",
    "DrillConfig",
    "Interruption",
    "Plan",
    "PlannedMessage",
    "build_plan",
]

DEFAULT_WORKER = "fargate_runtime.drill.worker:app"
# Where the workers keep idempotency records (``--store``).
STORES = ("redis", "postgres")
_ACCOUNTS = 25


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillConfig:
    """What the drill does; every default is sized so ``fargate-runtime drill`` takes a minute.

    ``stop_timeout_seconds`` is the task definition's ``stopTimeout`` scaled down (Spot's real
    warning is 120 s): the worker's whole shutdown budget, and the moment the interrupter sends
    SIGKILL to a worker that has not exited.
    """

    events: int = 1200
    workers: int = 3
    duplicates_share: float = 0.1
    out_of_order_share: float = 0.2
    malformed_share: float = 0.0
    hard_kill_share: float = 0.0
    # Share of events whose first delivery misbehaves (blocks the loop, spins, swallows
    # cancellation, or charges from a thread) for longer than the stop timeout.
    misbehave_share: float = 0.0
    restart_redis: bool = False
    # "postgres": the workers keep their records in PostgreSQL and charge inside the handler's
    # transaction (the default worker's PAYMENTS_LEDGER=postgres), in the run's own schema.
    store: str = "redis"
    # Redis stops answering (paused, data kept) for this long, a quarter into the sending.
    redis_outage_seconds: float = 0.0
    stop_timeout_seconds: float = 10.0
    worker: str = DEFAULT_WORKER
    seed: int = 1
    # Sending pace: moto slows down with queue depth, and a real webhook source is paced too.
    events_per_second: float = 25.0
    # Interruptions come every [min, max] seconds while events are being sent.
    interrupt_min_seconds: float = 4.0
    interrupt_max_seconds: float = 8.0
    # Grace before the first interruption: the first workers are starting.
    first_interrupt_seconds: float = 5.0
    max_receive_count: int = 5
    timeout_seconds: float = 300.0
    run_id: str = field(default="drill")

    def problems(self) -> list[str]:
        """What is wrong with these settings (empty when they are usable)."""
        found = []
        if self.events < 1:
            found.append("--events must be at least 1")
        if self.workers < 1:
            found.append("--workers must be at least 1")
        for name in (
            "duplicates_share",
            "out_of_order_share",
            "malformed_share",
            "hard_kill_share",
            "misbehave_share",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                found.append(f"--{name.replace('_', '-')} must be between 0 and 1 (got {value})")
        if self.events_per_second <= 0:
            found.append("--events-per-second must be positive")
        if not 0 < self.interrupt_min_seconds <= self.interrupt_max_seconds:
            found.append("--interrupt-every needs 0 < MIN <= MAX")
        if not 0 <= self.redis_outage_seconds <= 600:
            found.append("--redis-outage-seconds must be between 0 and 600")
        if self.first_interrupt_seconds < 0:
            found.append("--first-interrupt must not be negative")
        if not 1 <= self.max_receive_count <= 1000:
            found.append("--max-receive-count must be between 1 and 1000 (SQS redrive limit)")
        if self.timeout_seconds <= 0:
            found.append("--timeout must be positive")
        if self.store not in STORES:
            found.append(f"--store must be one of {', '.join(STORES)} (got {self.store!r})")
        redis_only = {
            "--restart-redis": self.restart_redis,
            "--redis-outage-seconds": self.redis_outage_seconds > 0,
            "--misbehave-share": self.misbehave_share > 0,
        }
        if self.store != "redis":
            found.extend(
                f"{flag} is drilled on the redis store only: drop it with --store postgres"
                for flag, asked in redis_only.items()
                if asked
            )
        if ":" not in self.worker:
            found.append(f"--worker must look like MODULE:ATTR (got {self.worker!r})")
        return found


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """One message to send: its body, and what the drill knows about it."""

    at_seconds: float  # due time, from the start of sending
    body: str
    event_id: str | None  # None for a malformed body
    duplicate: bool = False  # a second message for an event already sent
    out_of_order: bool = False  # sent before an earlier sequence of the same account


@dataclass(frozen=True, slots=True)
class Interruption:
    """One interruption: at ``at_seconds`` after sending starts, in worker slot ``slot``."""

    at_seconds: float
    slot: int
    hard: bool  # SIGKILL with no warning (chaos) instead of SIGTERM


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole schedule of one drill."""

    messages: tuple[PlannedMessage, ...]
    interruptions: tuple[Interruption, ...]
    redis_restart_at_seconds: float | None
    redis_outage_at_seconds: float | None = None
    redis_outage_seconds: float = 0.0

    @property
    def unique_event_ids(self) -> frozenset[str]:
        """Every well-formed event id sent (each must end up charged or dead-lettered)."""
        return frozenset(m.event_id for m in self.messages if m.event_id is not None)

    @property
    def duplicates(self) -> int:
        """Messages repeating an event already sent."""
        return sum(1 for m in self.messages if m.duplicate)

    @property
    def malformed(self) -> int:
        """Messages with a body the worker cannot read."""
        return sum(1 for m in self.messages if m.event_id is None)

    @property
    def private_redis_flag(self) -> str | None:
        """The flag that needs a Redis the drill owns (it restarts or pauses it), if any."""
        if self.redis_restart_at_seconds is not None:
            return "--restart-redis"
        if self.redis_outage_at_seconds is not None:
            return "--redis-outage-seconds"
        return None

    @property
    def sending_seconds(self) -> float:
        """When the last message is due."""
        return self.messages[-1].at_seconds if self.messages else 0.0


def _events(config: DrillConfig, rng: random.Random) -> list[dict[str, object]]:
    """Payment events in true order: each account's ``sequence`` counts up."""
    sequences = [0] * _ACCOUNTS
    events: list[dict[str, object]] = []
    for number in range(config.events):
        account = rng.randrange(_ACCOUNTS)
        sequences[account] += 1
        events.append(
            {
                "event_id": f"evt-{config.run_id}-{number:06d}",
                "account": f"acct_{account:03d}",
                "amount_cents": rng.randrange(100, 50_000),
                "sequence": sequences[account],
            }
        )
    return events


def _malformed_body(rng: random.Random, number: int) -> str:
    """A body no payment worker can read: not JSON, or JSON without an event id."""
    if rng.random() < 0.5:
        return f"not json {{ malformed {number}"
    return json.dumps({"account": "acct_000", "amount_cents": 100, "malformed": number})


def build_plan(config: DrillConfig) -> Plan:
    """Draw the whole schedule from ``config.seed``."""
    rng = random.Random(config.seed)  # noqa: S311 - a reproducible schedule, not a secret
    events = _events(config, rng)
    # Out of order: swap an event with one a few places later, so a later sequence of an
    # account may arrive first (webhooks do).
    order = list(range(len(events)))
    out_of_order: set[int] = set()
    for position in range(len(order) - 1):
        if rng.random() < config.out_of_order_share / 2:
            other = min(len(order) - 1, position + rng.randint(1, 5))
            order[position], order[other] = order[other], order[position]
            out_of_order.add(order[position])
    bodies: list[tuple[str, str | None, bool, bool]] = [
        (json.dumps(events[i]), str(events[i]["event_id"]), False, i in out_of_order) for i in order
    ]
    # Duplicates: the same event again as a new message, soon (often while the first copy is
    # being handled: the in-progress path) or much later (the completed path).
    for _ in range(round(config.events * config.duplicates_share)):
        source = rng.randrange(len(bodies))
        body, event_id, _, _ = bodies[source]
        gap = rng.randint(1, 4) if rng.random() < 0.5 else rng.randint(20, 300)
        bodies.insert(min(len(bodies), source + gap), (body, event_id, True, False))
    for number in range(round(config.events * config.malformed_share)):
        bodies.insert(
            rng.randrange(len(bodies) + 1), (_malformed_body(rng, number), None, False, False)
        )
    interval = 1.0 / config.events_per_second
    messages = tuple(
        PlannedMessage(round(index * interval, 3), body, event_id, duplicate, late)
        for index, (body, event_id, duplicate, late) in enumerate(bodies)
    )
    sending = messages[-1].at_seconds
    interruptions = []
    at = config.first_interrupt_seconds
    while at <= sending:
        hard = rng.random() < config.hard_kill_share
        interruptions.append(Interruption(round(at, 3), rng.randrange(config.workers), hard))
        at += rng.uniform(config.interrupt_min_seconds, config.interrupt_max_seconds)
    restart = round(sending / 2, 3) if config.restart_redis else None
    outage = round(sending / 4, 3) if config.redis_outage_seconds > 0 else None
    return Plan(messages, tuple(interruptions), restart, outage, config.redis_outage_seconds)


def expected_interruptions(config: DrillConfig) -> int:
    """Roughly how many interruptions the schedule holds (for sizing defaults and help)."""
    sending = config.events * (1 + config.duplicates_share + config.malformed_share)
    sending /= config.events_per_second
    mean = (config.interrupt_min_seconds + config.interrupt_max_seconds) / 2
    return max(0, math.floor((sending - config.first_interrupt_seconds) / mean) + 1)
