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

``PAYMENTS_LEDGER=postgres`` (with ``FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres``; ``drill
--store postgres`` sets both) writes the charges to PostgreSQL instead (``postgres_ledger``),
inside ``context.transaction()``: the charge and the event's completion record commit together,
so a worker killed at any instant charges once even when the provider gets no stable key.
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

from ..errors import ConfigurationError
from ..idempotency import Idempotency, PostgresStore, load_idempotency_settings, open_store
from ..settings import load_settings
from ..sqs import Consumer, SqsSettings, json_field, open_sqs_client
from ..supervisor import Runtime, Supervisor
from .ledger import LEDGER_PATH_ENV, ChargeOutcome, Ledger
from .misbehaviour import MisbehaviourPlan
from .payments import PaymentEvent
from .postgres_ledger import charge_in_transaction, create_ledger_tables

if TYPE_CHECKING:
    from ..idempotency import IdempotencyStore
    from ..sqs import Message, MessageContext

__all__ = ["ChargeHandler", "LedgerKind", "PaymentsSettings", "Unsafe", "app", "setup"]

logger = logging.getLogger("fargate_runtime.drill.worker")


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
    """The worker's own settings (``PAYMENTS_*``); SQS and Redis have their own.

    The ledger is ``PAYMENTS_LEDGER_PATH``, else the drill's ``FARGATE_RUNTIME_DRILL_LEDGER``.
    """

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    ledger: LedgerKind = LedgerKind.SQLITE
    # SQLite: the provider's file. PostgreSQL mode still records handler runs there.
    ledger_path: str = Field(
        default_factory=lambda: os.environ.get(LEDGER_PATH_ENV, "payments-ledger.sqlite3"),
        min_length=1,
    )
    # PostgreSQL mode: the schema of the payments tables (created at start if missing).
    postgres_schema: str = Field(default="payments", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # How long the "call to the provider" takes.
    handler_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    # Work after the charge, before the handler returns (a receipt, a notification): the
    # window in which a crash strands a charge without its completion record.
    after_charge_delay_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    unsafe: Unsafe = Unsafe.NONE
    # ``drill --misbehave-share``: this share of events misbehaves on its first delivery
    # (see ``misbehaviour``) for this long, as the seed picks.
    misbehave_share: float = Field(default=0.0, ge=0.0, le=1.0)
    misbehave_seconds: float = Field(default=0.0, ge=0.0, le=3600.0)
    misbehave_seed: int = 0


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
        if self._postgres_schema is not None:
            async with context.transaction() as tx:
                outcome = await charge_in_transaction(tx, request, schema=self._postgres_schema)
                if self._after:
                    await asyncio.sleep(self._after)  # still inside: a crash rolls it back
        else:
            kind = self._misbehaviour.pick(event.event_id, receive_count=message.receive_count)
            if kind is not None:
                outcome = await self._misbehaviour.charge(kind, self._ledger, request)
            else:
                outcome = await self._ledger.charge(request)
            if self._after:
                await asyncio.sleep(self._after)  # charged, not yet recorded as completed
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
        if payments.ledger is LedgerKind.POSTGRES:
            raise ConfigurationError(
                "PAYMENTS_LEDGER=postgres charges in the transaction that completes the event's "
                "idempotency record: it cannot run with PAYMENTS_UNSAFE=no-idempotency"
            )
        logger.warning("running WITHOUT idempotency (PAYMENTS_UNSAFE=no-idempotency)")
        consumer = Consumer(handler, client=client, settings=sqs)
    else:
        store_settings = load_idempotency_settings()
        store: IdempotencyStore = await rt.enter(open_store(store_settings), name="idempotency")
        if payments.ledger is LedgerKind.POSTGRES:
            await _postgres_ledger(store, payments.postgres_schema)
        consumer = Consumer(
            handler,
            client=client,
            settings=sqs,
            idempotency=Idempotency.from_settings(store, store_settings),
            key=json_field("event_id"),
        )
    rt.add_service(consumer.run, name="sqs-consumer")


async def _postgres_ledger(store: IdempotencyStore, schema: str) -> None:
    """Check that the charges can commit with the records; create the ledger tables."""
    if not isinstance(store, PostgresStore):
        raise ConfigurationError(
            "PAYMENTS_LEDGER=postgres needs FARGATE_RUNTIME_IDEMPOTENCY_STORE=postgres: "
            "the charge commits in the transaction that completes the event's record"
        )
    # The worker's own tables (the drill made them already); the store's schema is applied
    # beforehand, never at start.
    await create_ledger_tables(await store.transaction_pool(), schema)


app = Supervisor(setup)
