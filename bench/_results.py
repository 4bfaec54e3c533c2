"""Results files: each benchmark module merges its figures into ``bench/results/NAME.json``.

Several modules report into one file (``sqs.py`` and ``sqs_throughput.py`` both into
``sqs.json``): each replaces its own keys and keeps the others'. Figures measured in a child
process of their own come back through ``run_child``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["REPO", "RESULTS", "merge_results", "run_child"]

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent


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


def run_child(code: str) -> Any:
    """Run ``python -c code`` from the checkout; its figures: the JSON of its last stdout line."""
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])
