"""The Spot interruption drill, and the stand-in payment provider whose ledger keeps it honest.

Workers under a drill charge through ``Ledger`` (its file is named by
``FARGATE_RUNTIME_DRILL_LEDGER``); ``fargate-runtime drill`` runs them, interrupts them the way
Fargate Spot does, and reads the ledger to count what was lost or charged twice. Only the ledger
is imported here: a worker importing this package pulls in nothing but ``sqlite3``.
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

__all__ = [
    "LEDGER_PATH_ENV",
    "ChargeOutcome",
    "ChargeRejectedError",
    "ChargeRequest",
    "Ledger",
    "LedgerTotals",
]
