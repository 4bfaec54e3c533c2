"""``fargate-runtime healthcheck``: the probe a container ``HEALTHCHECK`` runs (no curl needed)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..health import probe
from ..settings import ENV_PREFIX

if TYPE_CHECKING:
    import argparse

__all__ = ["configure_parser", "run_command"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``healthcheck``; the port defaults to FARGATE_RUNTIME_HEALTH_PORT."""
    port = os.environ.get(f"{ENV_PREFIX}HEALTH_PORT")
    parser.add_argument(
        "--port",
        type=int,
        default=int(port) if port and port.isdigit() else None,
        help=f"health port (default: ${ENV_PREFIX}HEALTH_PORT)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--path", default="/healthz", help="/healthz (liveness, default) or /readyz (readiness)"
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default: 2)")


def run_command(args: argparse.Namespace) -> int:
    """0 when the endpoint answers 200, 1 otherwise (as Docker and ECS health checks expect)."""
    if args.port is None:
        print(f"healthcheck: no port: pass --port or set {ENV_PREFIX}HEALTH_PORT")  # noqa: T201
        return 1
    return 0 if probe(args.host, args.port, args.path, timeout_seconds=args.timeout) else 1
