"""A payment-webhook worker: each event charged exactly once, whatever SQS and the producer do.

Run it with ``fargate-runtime run examples.sqs_worker.app:app`` (see README.md). Events look
like ``{"event_id": "evt_1", "account": "acct_7", "amount_cents": 1250, "sequence": 3}``.

- Duplicates (the producer resending, SQS delivering twice): the consumer claims
  ``event_id`` in Redis; a completed event is deleted without running, one in progress in
  another worker is left for later.
- Crashes between the charge and the completion record: the handler passes the idempotency
  key (and the fencing token) to the provider, which applies one charge per key.
- Out-of-order arrivals: charges add up in any order; nothing waits for a missing sequence.
- SIGTERM (deploy, Spot interruption): in-flight charges finish within the drain budget,
  unstarted events go back to the queue at once, stragglers are cancelled and released.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fargate_runtime import Runtime, load_settings
from fargate_runtime.drill import PaymentEvent
from fargate_runtime.sqs import Handler, Message, MessageContext, json_field, sqs_worker

from .payments import ChargeOutcome, Ledger

__all__ = ["PaymentsSettings", "app", "build_handler"]

logger = logging.getLogger("examples.sqs_worker")


class PaymentsSettings(BaseSettings):
    """The worker's own settings (``PAYMENTS_*``); SQS and Redis have their own."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    ledger_path: str = Field(default="payments-ledger.sqlite3", min_length=1)
    # Demo knob: how long the "call to the provider" takes.
    handler_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)


async def build_handler(rt: Runtime) -> Handler:
    """Open the provider's client (here its ledger) as a resource; return the handler."""
    settings = load_settings(PaymentsSettings)
    ledger = await rt.enter(Ledger(settings.ledger_path), name="ledger")

    async def charge(message: Message, context: MessageContext) -> None:
        event = PaymentEvent.from_message(message)
        fields = {"event_id": event.event_id, "account": event.account}
        logger.info("payment started", extra=fields)
        await asyncio.sleep(settings.handler_delay_seconds)  # stands for the provider's latency
        # The same key on every attempt: the provider applies one charge per key, even when
        # this process dies between the charge and the completion record.
        request = event.charge(
            idempotency_key=f"charge:{context.idempotency_key}",
            fencing_token=context.fencing_token,
        )
        outcome = await ledger.charge(request)
        replayed = outcome is ChargeOutcome.REPLAYED
        logger.info("payment replayed" if replayed else "payment charged", extra=fields)

    return charge


app = sqs_worker(build_handler=build_handler, key=json_field("event_id"))
