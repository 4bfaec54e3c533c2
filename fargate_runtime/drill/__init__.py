"""The Spot interruption drill, and the stand-in payment provider whose ledger keeps it honest.

Workers under a drill charge through ``Ledger`` (its file is named by
``FARGATE_RUNTIME_DRILL_LEDGER``); ``fargate-runtime drill`` runs them, interrupts them the way
Fargate Spot does, and reads the ledger to count what was lost or charged twice. ``PaymentEvent``
is the event the drill sends. Only these two are imported here, not the drill's machinery (moto,
processes, reports). The drill's default worker is ``fargate_runtime.drill.worker``.
"""

from __future__ import annotations

from .ledger import (
    LEDGER_PATH_ENV,
    ChargeOutcome,
    ChargeRejectedError,
    ChargeRequest,
    Ledger,
    LedgerTotals,
)
from .payments import PaymentEvent

__all__ = [
    "LEDGER_PATH_ENV",
    "ChargeOutcome",
    "ChargeRejectedError",
    "ChargeRequest",
    "Ledger",
    "LedgerTotals",
    "PaymentEvent",
]
