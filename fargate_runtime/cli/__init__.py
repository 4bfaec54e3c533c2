"""The ``fargate-runtime`` console script.

Each subcommand lives in a module of this package (the drill's in ``fargate_runtime.drill``) and
exposes two functions, ``configure_parser(parser)`` and ``run_command(args) -> int``; they are
imported only when that subcommand runs, so ``fargate-runtime healthcheck`` stays fast enough
for a container probe. A usage error is one line on stderr and exit code 2 (a module may set
``USAGE_EXIT_CODE``: ``healthcheck`` uses 1, as Docker reserves 2); every command documents its
exit codes in its ``--help`` and in ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, NoReturn, Protocol, cast

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["COMMANDS", "EXIT_USAGE", "UsageError", "main"]

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("fargate_runtime.cli.run", "run a Supervisor (or setup function) MODULE:ATTR"),
    "healthcheck": (
        "fargate_runtime.cli.healthcheck",
        "exit 0 when the health endpoint answers 200 (for a container HEALTHCHECK)",
    ),
    "check-taskdef": ("fargate_runtime.cli.check_taskdef", "lint ECS task definitions"),
    "size": ("fargate_runtime.cli.size", "the smallest Fargate size for a measured peak"),
    "postgres-schema": (
        "fargate_runtime.cli.postgres_schema",
        "print, apply or check the PostgreSQL idempotency store's schema",
    ),
    "drill": (
        "fargate_runtime.drill.cli",
        "interrupt real workers like Fargate Spot; report anything lost or charged twice",
    ),
    "local": (
        "fargate_runtime.drill.local_command",
        "start a local SQS endpoint and Redis, create a queue, print the env to use them",
    ),
}


EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command line; the message is the one line shown."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not the usage text) and no exit of its own."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class _CommandModule(Protocol):
    def configure_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def run_command(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> _CommandModule:
    return cast("_CommandModule", importlib.import_module(COMMANDS[name][0]))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; return its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(
        prog="fargate-runtime",
        description="A runtime for Python containers on ECS on Fargate.",
        epilog="Each COMMAND --help lists its exit codes; a usage error exits 2.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported (the others get a stub for --help).
    chosen = next((a for a in arguments if not a.startswith("-")), None)
    for name, (_, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).configure_parser(sub)
    try:
        args = parser.parse_args(arguments)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        module = _load(chosen) if chosen in COMMANDS else None
        return int(getattr(module, "USAGE_EXIT_CODE", EXIT_USAGE))
    return _load(args.command).run_command(args)
