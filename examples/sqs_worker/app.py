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

``PAYMENTS_LEDGER=postgres`` (with ``FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres``) writes the
ledger to PostgreSQL instead, inside ``context.transaction()``: the charge and the event's
completion record commit together, so a worker killed at any instant charges once even when
the provider gets no stable key.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fargate_runtime import Runtime, Supervisor, load_settings
from fargate_runtime.errors import ConfigurationError, MalformedMessageError
from fargate_runtime.idempotency import (
    Idempotency,
    PostgresStore,
    load_idempotency_settings,
    open_store,
)
from fargate_runtime.sqs import (
    Consumer,
    Message,
    MessageContext,
    SqsSettings,
    json_field,
    open_sqs_client,
)

from .payments import (
    ChargeOutcome,
    ChargeRequest,
    Ledger,
    charge_in_transaction,
    create_ledger_tables,
)

if TYPE_CHECKING:
    from fargate_runtime.idempotency import IdempotencyStore

__all__ = ["ChargeHandler", "LedgerKind", "PaymentEvent", "PaymentsSettings", "Unsafe", "app"]

logger = logging.getLogger("examples.sqs_worker")


class Unsafe(enum.Enum):
    """Deliberately broken modes, for the interruption drill to show what they cost."""

    # The default: a stable key downstream and Redis claims.
    NONE = "none"
    # A fresh key on every attempt: a crash between charge and completion charges twice.
    NO_DOWNSTREAM_KEY = "no-downstream-key"
    # No claims and a fresh key: every duplicate delivery charges again.
    NO_IDEMPOTENCY = "no-idempotency"


class LedgerKind(enum.Enum):
    """Where charges are written."""

    # The stand-in provider's SQLite file, called with the idempotency key (like Stripe).
    SQLITE = "sqlite"
    # Tables in PostgreSQL, written in the transaction that completes the event's record.
    POSTGRES = "postgres"


class PaymentsSettings(BaseSettings):
    """The worker's own settings (``PAYMENTS_*``); SQS and Redis have their own."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    ledger: LedgerKind = LedgerKind.SQLITE
    # SQLite: the provider's file. PostgreSQL mode still records handler runs there.
    ledger_path: str = Field(default="payments-ledger.sqlite3", min_length=1)
    # PostgreSQL mode: the schema of the payments tables (created at start if missing).
    postgres_schema: str = Field(default="payments", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Demo knob: how long the "call to the provider" takes.
    handler_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    # Demo knob: work after the charge, before the handler returns (a receipt, a notification):
    # the window in which a crash strands a charge without its completion record.
    after_charge_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    unsafe: Unsafe = Unsafe.NONE


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """A payment webhook event."""

    event_id: str
    account: str
    amount_cents: int
    sequence: int | None

    @classmethod
    def from_message(cls, message: Message) -> PaymentEvent:
        """Parse and check the body; ``MalformedMessageError`` (retried, then DLQ) if unfit."""
        body: Any = message.json()
        if not isinstance(body, dict):
            raise MalformedMessageError(f"message {message.message_id}: event is not an object")
        event_id, account = body.get("event_id"), body.get("account")
        amount, sequence = body.get("amount_cents"), body.get("sequence")
        if not isinstance(event_id, str) or not event_id:
            raise MalformedMessageError(f"message {message.message_id}: no event_id")
        if not isinstance(account, str) or not account:
            raise MalformedMessageError(f"event {event_id}: no account")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise MalformedMessageError(f"event {event_id}: amount_cents must be a positive int")
        if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool)):
            raise MalformedMessageError(f"event {event_id}: sequence must be an int")
        return cls(event_id, account, amount, sequence)


class ChargeHandler:
    """Charges one event through the provider, passing the idempotency key downstream.

    In PostgreSQL ledger mode the charge is written in ``context.transaction()`` instead: it
    commits with the event's completion record, or not at all.
    """

    def __init__(self, ledger: Ledger, *, settings: PaymentsSettings) -> None:
        self._ledger = ledger
        self._delay = settings.handler_delay_seconds
        self._after = settings.after_charge_delay_seconds
        self._unsafe = settings.unsafe
        self._postgres_schema = (
            settings.postgres_schema if settings.ledger is LedgerKind.POSTGRES else None
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
        request = ChargeRequest(
            idempotency_key=self._downstream_key(event, context),
            event_id=event.event_id,
            account=event.account,
            amount_cents=event.amount_cents,
            sequence=event.sequence,
            fencing_token=context.fencing_token,
        )
        if self._postgres_schema is not None:
            async with context.transaction() as tx:
                outcome = await charge_in_transaction(tx, request, schema=self._postgres_schema)
                if self._after:
                    await asyncio.sleep(self._after)  # still inside: a crash rolls it back
        else:
            outcome = await self._ledger.charge(request)
            if self._after:
                await asyncio.sleep(self._after)  # charged, not yet recorded as completed
        if outcome is ChargeOutcome.REPLAYED:
            logger.info("payment replayed by the provider", extra=fields)
        else:
            logger.info("payment charged", extra=fields)


app = Supervisor()


@app.setup
async def setup(rt: Runtime) -> None:
    """Open SQS, the ledger and the idempotency store, then start the consumer."""
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
        if payments.ledger is LedgerKind.POSTGRES:
            if not isinstance(store, PostgresStore):
                raise ConfigurationError(
                    "PAYMENTS_LEDGER=postgres needs FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres: "
                    "the charge commits in the transaction that completes the event's record"
                )
            # The example's own tables; the idempotency schema is applied beforehand.
            await create_ledger_tables(await store.transaction_pool(), payments.postgres_schema)
        consumer = Consumer(
            handler,
            client=client,
            settings=sqs,
            idempotency=Idempotency.from_settings(store, store_settings),
            key=json_field("event_id"),
        )
    rt.add_service(consumer.run, name="sqs-consumer")
