"""``fargate-runtime healthcheck``: the probe a container ``HEALTHCHECK`` runs (no curl needed).

Exit 0 when the endpoint answers 200, 1 otherwise, with one line on stderr saying what was tried
and what came back (Docker keeps it in ``docker inspect``'s health log). Bad arguments exit 1
too, not 2: Docker reserves exit code 2 of a health check.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..health import check
from ..settings import ENV_PREFIX
from ._numbers import bounded_float, bounded_int

__all__ = ["USAGE_EXIT_CODE", "configure_parser", "run_command"]

EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1
# What the console script returns for a usage error of this command (Docker reserves 2).
USAGE_EXIT_CODE = EXIT_UNHEALTHY
_PORT_ENV = f"{ENV_PREFIX}HEALTH_PORT"
_port = bounded_int(minimum=1, maximum=65535)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``healthcheck``; the port defaults to FARGATE_RUNTIME_HEALTH_PORT."""
    parser.epilog = "exit codes: 0 healthy; 1 anything else, bad arguments included"
    parser.add_argument(
        "--port", type=_port, default=None, help=f"health port (default: ${_PORT_ENV})"
    )
    parser.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1)")
    parser.add_argument(
        "--path", default="/healthz", help="/healthz (liveness, default) or /readyz (readiness)"
    )
    parser.add_argument(
        "--timeout",
        type=bounded_float(above=0, maximum=300),
        default=2.0,
        help="seconds (default: 2)",
    )


def _fail(message: str) -> int:
    sys.stderr.write(f"fargate-runtime healthcheck: {message}\n")
    return EXIT_UNHEALTHY


def run_command(args: argparse.Namespace) -> int:
    """0 when the endpoint answers 200, 1 otherwise (as Docker and ECS health checks expect)."""
    port: int | None = args.port
    if port is None:
        configured = os.environ.get(_PORT_ENV)
        if not configured:
            return _fail(f"no port: pass --port or set {_PORT_ENV}")
        try:
            port = _port(configured)
        except argparse.ArgumentTypeError as exc:
            return _fail(f"{_PORT_ENV}={configured!r}: {exc}")
    if not args.path.startswith("/"):
        return _fail(f"--path {args.path!r} must start with / (e.g. /healthz)")
    url = f"http://{args.host}:{port}{args.path}"
    problem = check(args.host, port, args.path, timeout_seconds=args.timeout)
    if problem is not None:
        return _fail(f"GET {url}: {problem}")
    return EXIT_HEALTHY
