"""The payment event the drill sends, read from an SQS message, and the charge it asks for.

One definition for every side that speaks it: the drill's producer (``plan``), the drill's
default worker (``worker``) and the example worker users copy (``examples/sqs_worker``)::

    {"event_id": "evt_1", "account": "acct_7", "amount_cents": 1250, "sequence": 3}

A body that is not such an object raises ``MalformedMessageError``: the consumer retries it
with backoff and the queue's redrive policy dead-letters it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import MalformedMessageError
from .ledger import ChargeRequest

if TYPE_CHECKING:
    from ..sqs import Message

__all__ = ["PaymentEvent"]


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

    def charge(self, *, idempotency_key: str, fencing_token: int | None) -> ChargeRequest:
        """The provider request that charges this event under ``idempotency_key``."""
        return ChargeRequest(
            idempotency_key=idempotency_key,
            event_id=self.event_id,
            account=self.account,
            amount_cents=self.amount_cents,
            sequence=self.sequence,
            fencing_token=fencing_token,
        )
