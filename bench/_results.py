"""Results files: each benchmark module merges its figures into ``bench/results/NAME.json``.

Several modules report into one file (``sqs.py`` and ``sqs_throughput.py`` both into
``sqs.json``): each replaces its own keys and keeps the others'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "merge_results"]

RESULTS = Path(__file__).parent / "results"


def merge_results(name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` into ``results/NAME.json``, keeping keys other modules wrote there."""
    path = RESULTS / f"{name}.json"
    merged: dict[str, Any] = {}
    if path.exists():
        merged = json.loads(path.read_text())
    merged.update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return path
