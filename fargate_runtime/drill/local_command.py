"""``fargate-runtime local``: a local SQS endpoint and Redis for running an example by hand.

Starts moto's server mode on a loopback port and finds (or starts) a Redis, creates a queue with
a DLQ and a redrive policy, prints the environment to run a worker against them, and waits.
Ctrl-C (or SIGTERM) stops what it started; a Redis it did not start is left alone.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .components import Components, ComponentsError
from .ledger import LEDGER_PATH_ENV
from .plan import DEFAULT_WORKER

if TYPE_CHECKING:
    import argparse

__all__ = ["READY_LINE", "configure_parser", "environment_for", "run_command"]

# The last line printed once everything is up (tests and scripts wait for it).
READY_LINE = "Ready. Ctrl-C stops them."
_CANNOT_RUN = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``local``."""
    parser.add_argument("--queue", default="payments", help="queue name (default: payments)")
    parser.add_argument(
        "--max-receive-count", type=int, default=5, metavar="N", help="redrive maxReceiveCount"
    )
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="start a private redis-server (default: REDIS_URL, which must answer; unset: "
        "127.0.0.1:6379 if it answers, else a private one)",
    )
    parser.add_argument(
        "--ledger",
        default="payments-ledger.sqlite3",
        metavar="PATH",
        help="ledger file the example worker charges into (default: payments-ledger.sqlite3)",
    )
    parser.add_argument(
        "--env-file", type=Path, default=None, metavar="PATH", help="also write NAME=VALUE lines"
    )


def environment_for(components: Components, *, ledger: str) -> dict[str, str]:
    """The variables a worker needs to use ``components``."""
    ledger_path = str(Path(ledger).resolve())
    return {
        **components.worker_environment(),
        "PAYMENTS_LEDGER_PATH": ledger_path,
        LEDGER_PATH_ENV: ledger_path,
    }


async def _serve(args: argparse.Namespace) -> int:
    components = Components(
        run_id="local",
        redis_url=None if args.private_redis else os.environ.get("REDIS_URL"),
        queue_name=args.queue,
        max_receive_count=args.max_receive_count,
        private_redis=args.private_redis,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with components:
            env = environment_for(components, ledger=args.ledger)
            exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
            print(  # noqa: T201 - this command's output is for people
                f"SQS (moto) at {components.sqs_endpoint_url}, queue {components.queue_url}\n"
                f"  DLQ {components.dlq_url} (maxReceiveCount {args.max_receive_count})\n"
                f"Redis at {components.describe_redis()}\n\n"
                "In another shell:\n\n"
                f"{exports}\n"
                f"fargate-runtime run {DEFAULT_WORKER}\n",
                flush=True,
            )
            if args.env_file is not None:
                lines = "".join(f"{k}={v}\n" for k, v in env.items())
                args.env_file.write_text(lines, encoding="utf-8")
            print(READY_LINE, flush=True)  # noqa: T201 - this command's output is for people
            await stop.wait()
            print("Stopping.", flush=True)  # noqa: T201 - this command's output is for people
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run until Ctrl-C; 0 after a clean stop, 2 when a component cannot be had."""
    try:
        return asyncio.run(_serve(args))
    except ComponentsError as exc:
        print(f"fargate-runtime local: {exc}", file=sys.stderr)  # noqa: T201 - CLI error
        return _CANNOT_RUN
