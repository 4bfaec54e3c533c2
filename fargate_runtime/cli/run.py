"""``fargate-runtime run MODULE:ATTR``: import an app and run it under the supervisor."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..lifecycle import ExitCode
from ..logging import configure_logging
from ..supervisor import Supervisor

if TYPE_CHECKING:
    import argparse

__all__ = ["configure_parser", "load_app", "run_command"]

logger = logging.getLogger("fargate_runtime.cli")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``run``."""
    parser.add_argument(
        "app",
        metavar="MODULE:ATTR",
        help="a Supervisor, or an async setup function taking a Runtime",
    )
    parser.add_argument(
        "--app-dir",
        default=".",
        help="directory put first on sys.path before importing MODULE (default: .)",
    )


def load_app(target: str, *, app_dir: str = ".") -> Supervisor:
    """Import ``MODULE:ATTR`` and return it as a Supervisor; raise ConfigurationError if unfit."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"app {target!r} must look like MODULE:ATTR")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    value = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError as exc:
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}") from exc
    if isinstance(value, Supervisor):
        return value
    if inspect.iscoroutinefunction(value):
        return Supervisor(value)
    raise ConfigurationError(
        f"{target!r} is a {type(value).__name__}, not a Supervisor or an async setup function"
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the app to the end and return its exit code."""
    configure_logging()
    try:
        app = load_app(args.app, app_dir=args.app_dir)
    except ConfigurationError as exc:
        logger.critical(str(exc), extra={"exit_code": int(ExitCode.CONFIGURATION)})
        return ExitCode.CONFIGURATION
    return app.run()
