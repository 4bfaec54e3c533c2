"""Workers whose handler reports what the process has imported, for the import-footprint tests.

Run with ``python -c "import tests.sqs.import_apps as a; a.main()" run APP``: ``main`` installs
the import watch before anything of the runtime is imported, so every import is seen.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import FrameType, ModuleType

    from fargate_runtime.sqs import Message, MessageContext

# Packages a plain worker must not load, and the first module that imported each of them.
WATCHED = (
    "uvicorn",
    "starlette",
    "opentelemetry",
    "opentelemetry.sdk",
    "redis",
    "asyncpg",
    "fargate_runtime.http.server",
)
_importers: dict[str, str] = {}


class _Watch(importlib.abc.MetaPathFinder):
    """Records which module first imported a watched package; finds nothing itself."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname in WATCHED and fullname not in _importers:
            _importers[fullname] = _importer()
        return None


def _importer() -> str:
    """The first module up the stack that is not import machinery: the one importing."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", "?"))
        if not name.startswith(("importlib", "_frozen_importlib")) and name != __name__:
            return name
        frame = frame.f_back
    return "?"


async def report(message: Message, context: MessageContext) -> None:
    """Print, as one JSON line, which watched packages are loaded and who loaded them."""
    loaded = [name for name in WATCHED if name in sys.modules]
    line = {"message": "imports", "loaded": loaded, "importers": _importers}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _plain() -> object:
    from fargate_runtime.sqs import sqs_worker

    return sqs_worker(report)


def _keyed() -> object:
    from fargate_runtime.sqs import json_field, sqs_worker

    return sqs_worker(report, key=json_field("event_id"))


def __getattr__(name: str) -> object:
    """``plain`` (no keys, no Redis) and ``keyed`` (Redis keys), built when the CLI asks."""
    builders = {"plain": _plain, "keyed": _keyed}
    if name in builders:
        return builders[name]()
    raise AttributeError(name)


def main() -> None:
    """Watch imports from here on, then run the CLI with this process's arguments."""
    sys.meta_path.insert(0, _Watch())
    from fargate_runtime.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))
