"""The ``fargate-runtime`` console script.

Each subcommand lives in the module that owns its concept and exposes two functions,
``configure_parser(parser)`` and ``run_command(args) -> int``; they are imported only when that
subcommand runs, so ``fargate-runtime healthcheck`` stays fast enough for a container probe.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("fargate_runtime.cli.run", "run a Supervisor (or setup function) MODULE:ATTR"),
    "healthcheck": (
        "fargate_runtime.cli.healthcheck",
        "exit 0 when the health endpoint answers 200 (for a container HEALTHCHECK)",
    ),
    "check-taskdef": ("fargate_runtime.cli.check_taskdef", "lint ECS task definitions"),
    "size": ("fargate_runtime.cli.size", "the smallest Fargate size for a measured peak"),
    "drill": (
        "fargate_runtime.drill.cli",
        "interrupt real workers like Fargate Spot; report anything lost or charged twice",
    ),
    "local": (
        "fargate_runtime.drill.local_command",
        "start a local SQS endpoint and Redis, create a queue, print the env to use them",
    ),
}


class _CommandModule(Protocol):
    def configure_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def run_command(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> _CommandModule:
    return cast("_CommandModule", importlib.import_module(COMMANDS[name][0]))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; return its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="fargate-runtime", description="A runtime for Python containers on ECS on Fargate."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported (the others get a stub for --help).
    chosen = next((a for a in arguments if not a.startswith("-")), None)
    for name, (_, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).configure_parser(sub)
    args = parser.parse_args(arguments)
    return _load(args.command).run_command(args)
