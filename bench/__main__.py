"""``python -m bench``: run every benchmark module in this folder, one after another.

Each benchmark module has a ``main() -> dict`` that runs it, prints its table and writes
``bench/results/<name>.json``. ``python -m bench NAME...`` runs only those.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all when none is named)."""
    here = Path(__file__).parent
    names = argv or sorted(
        info.name for info in pkgutil.iter_modules([str(here)]) if not info.name.startswith("_")
    )
    for name in names:
        print(f"== bench/{name}.py")
        module = importlib.import_module(f"bench.{name}")
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
