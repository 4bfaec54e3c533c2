"""The drill's default worker: charges payment events through the ledger, once per event.

``fargate-runtime drill`` runs ``fargate_runtime.drill.worker:app`` unless ``--worker`` names
another; it ships in the package so the drill works from an installed wheel. It is the drill's
subject, with knobs the drill needs and a service should not copy: a handler delay standing for
the provider's latency, and deliberately broken modes (``PAYMENTS_UNSAFE``) that show what each
safety is worth. The starter to copy is ``examples/sqs_worker`` (the same charge, in the short
form of ``sqs_worker``).

- Duplicates (the producer resending, SQS delivering twice): the consumer claims
  ``event_id`` in Redis; a completed event is deleted without running, one in progress in
  another worker is left for later.
- Crashes between the charge and the completion record: the handler passes the idempotency
  key (and the fencing token) to the provider, which applies one charge per key.
- SIGTERM: in-flight charges finish within the drain budget, unstarted events go back to the
  queue at once, stragglers are cancelled and released.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import uuid
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..idempotency import Idempotency, load_idempotency_settings, open_store
from ..settings import load_settings
from ..sqs import Consumer, SqsSettings, json_field, open_sqs_client
from ..supervisor import Runtime, Supervisor
from .ledger import LEDGER_PATH_ENV, ChargeOutcome, Ledger
from .misbehaviour import MisbehaviourPlan
from .payments import PaymentEvent

if TYPE_CHECKING:
    from ..idempotency import IdempotencyStore
    from ..sqs import Message, MessageContext

__all__ = ["ChargeHandler", "PaymentsSettings", "Unsafe", "app", "setup"]

logger = logging.getLogger("fargate_runtime.drill.worker")


class Unsafe(enum.Enum):
    """Deliberately broken modes, for the interruption drill to show what they cost."""

    # The default: a stable key downstream and Redis claims.
    NONE = "none"
    # A fresh key on every attempt: a crash between charge and completion charges twice.
    NO_DOWNSTREAM_KEY = "no-downstream-key"
    # No claims and a fresh key: every duplicate delivery charges again.
    NO_IDEMPOTENCY = "no-idempotency"


class PaymentsSettings(BaseSettings):
    """The worker's own settings (``PAYMENTS_*``); SQS and Redis have their own.

    The ledger is ``PAYMENTS_LEDGER_PATH``, else the drill's ``FARGATE_RUNTIME_DRILL_LEDGER``.
    """

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    ledger_path: str = Field(
        default_factory=lambda: os.environ.get(LEDGER_PATH_ENV, "payments-ledger.sqlite3"),
        min_length=1,
    )
    # How long the "call to the provider" takes.
    handler_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    unsafe: Unsafe = Unsafe.NONE
    # ``drill --misbehave-share``: this share of events misbehaves on its first delivery
    # (see ``misbehaviour``) for this long, as the seed picks.
    misbehave_share: float = Field(default=0.0, ge=0.0, le=1.0)
    misbehave_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    misbehave_seed: int = 0


class ChargeHandler:
    """Charges one event through the provider, passing the idempotency key downstream."""

    def __init__(self, ledger: Ledger, *, settings: PaymentsSettings) -> None:
        self._ledger = ledger
        self._delay = settings.handler_delay_seconds
        self._unsafe = settings.unsafe
        self._misbehaviour = MisbehaviourPlan(
            settings.misbehave_share, settings.misbehave_seconds, settings.misbehave_seed
        )

    def _downstream_key(self, event: PaymentEvent, context: MessageContext) -> str:
        if self._unsafe is Unsafe.NONE and context.idempotency_key is not None:
            return f"charge:{context.idempotency_key}"
        # Broken on purpose: a new key per attempt defeats the provider's deduplication.
        return f"charge:{event.event_id}:{uuid.uuid4().hex}"

    async def __call__(self, message: Message, context: MessageContext) -> None:
        event = PaymentEvent.from_message(message)
        fields = {"event_id": event.event_id, "account": event.account, "pid": os.getpid()}
        logger.info("payment started", extra=fields)
        await self._ledger.record_execution(event.event_id)  # for the drill's accounting
        if self._delay:
            await asyncio.sleep(self._delay)  # stands for the provider's latency
        request = event.charge(
            idempotency_key=self._downstream_key(event, context),
            fencing_token=context.fencing_token,
        )
        kind = self._misbehaviour.pick(event.event_id, receive_count=message.receive_count)
        if kind is not None:
            outcome = await self._misbehaviour.charge(kind, self._ledger, request)
        else:
            outcome = await self._ledger.charge(request)
        if outcome is ChargeOutcome.REPLAYED:
            logger.info("payment replayed by the provider", extra=fields)
        else:
            logger.info("payment charged", extra=fields)


async def setup(rt: Runtime) -> None:
    """Open SQS, the ledger and (unless unsafe) the idempotency store; start the consumer."""
    payments = load_settings(PaymentsSettings)
    sqs = load_settings(SqsSettings)
    client = await rt.enter(open_sqs_client(sqs), name="sqs")
    ledger = await rt.enter(Ledger(payments.ledger_path), name="ledger")
    handler = ChargeHandler(ledger, settings=payments)
    if payments.unsafe is Unsafe.NO_IDEMPOTENCY:
        logger.warning("running WITHOUT idempotency (PAYMENTS_UNSAFE=no-idempotency)")
        consumer = Consumer(handler, client=client, settings=sqs)
    else:
        store_settings = load_idempotency_settings()
        store: IdempotencyStore = await rt.enter(open_store(store_settings), name="idempotency")
        consumer = Consumer(
            handler,
            client=client,
            settings=sqs,
            idempotency=Idempotency.from_settings(store, store_settings),
            key=json_field("event_id"),
        )
    rt.add_service(consumer.run, name="sqs-consumer")


app = Supervisor(setup)
