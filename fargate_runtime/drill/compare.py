"""Drills of one schedule on several stores, side by side: what each store could not prevent."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from .plan import STORES

if TYPE_CHECKING:
    from pathlib import Path

    from .report import DrillReport

__all__ = ["parse_stores", "render_comparison", "write_comparison"]

# (label, figure, what it means) for each row of the comparison.
_ROWS = (
    ("charged", "charged", "unique events charged"),
    ("lost", "lost", "must be 0"),
    ("double charges", "double_charges", "must be 0"),
    ("charge attempts", "charge_attempts", "requests the ledger kept"),
    ("duplicate attempts", "duplicate_attempts", "kept requests beyond the first per event"),
    ("handler executions", "handler_executions", "handler runs, counted before any write"),
    ("chaos kills", "chaos_kills", "SIGKILL without warning"),
    ("overruns", "overruns", "must be 0"),
)


def parse_stores(text: str) -> tuple[str, ...]:
    """``--store``: ``redis``, ``postgres`` or both, comma-separated, each once, in order."""
    stores = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [store for store in stores if store not in STORES]
    if not stores or unknown or len(set(stores)) != len(stores):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give redis, postgres, or both separated by a comma"
        )
    return stores


def write_comparison(path: Path, reports: dict[str, DrillReport]) -> None:
    """``--json`` of a comparison: each store's figures under its name."""
    figures = {store: report.as_json() for store, report in reports.items()}
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def absorbed(report: DrillReport) -> int:
    """Handler runs beyond one per charged event that left no request behind.

    Runs killed before their charge, and (PostgreSQL) runs whose transaction rolled back with
    their charge in it: duplicate attempts the database absorbed.
    """
    return max(0, report.handler_executions - report.charge_attempts)


def render_comparison(reports: dict[str, DrillReport]) -> str:
    """A table with one column per store, and each store's verdict."""
    stores = list(reports)
    rows = [
        (label, [str(getattr(reports[store], name)) for store in stores], meaning)
        for label, name, meaning in _ROWS
    ]
    rows.append(
        (
            "runs that left no charge",
            [str(absorbed(reports[store])) for store in stores],
            "killed before the charge, or rolled back with it",
        )
    )
    rows.append(
        (
            "verdict",
            ["PASSED" if reports[store].exit_code == 0 else "FAILED" for store in stores],
            "",
        )
    )
    label_width = max(len(label) for label, _, _ in rows)
    widths = [max(len(store), *(len(values[i]) for _, values, _ in rows)) for i, store in
              enumerate(stores)]  # fmt: skip
    header = "  ".join(f"{store:>{width}}" for store, width in zip(stores, widths, strict=True))
    lines = ["", "Side by side (same seed, same schedule):", "", f"  {'':<{label_width}}  {header}"]
    for label, values, meaning in rows:
        cells = "  ".join(f"{value:>{width}}" for value, width in zip(values, widths, strict=True))
        lines.append(f"  {label:<{label_width}}  {cells}  {meaning}".rstrip())
    return "\n".join(lines) + "\n"
