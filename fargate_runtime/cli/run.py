"""``fargate-runtime run MODULE:ATTR``: import an app and run it under the supervisor.

Whatever stops the app from loading is one JSON log line and exit code 78 (configuration), the
same as bad settings: no app named (an image whose child forgot its ``CMD``), an ``--app-dir``
that is not there, a module that cannot be found, a module that raises while it is imported
(the line names the exception and the ``file:line`` it came from), an attribute that is missing
or is neither a Supervisor nor an async setup function.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..lifecycle import ExitCode
from ..logging import configure_logging
from ..supervisor import Supervisor

if TYPE_CHECKING:
    import argparse

__all__ = ["AppLoadError", "configure_parser", "load_app", "run_command"]

logger = logging.getLogger("fargate_runtime.cli")

_NO_APP = (
    "no app to run: give MODULE:ATTR (fargate-runtime run app.main:app); in an image built "
    'FROM the fargate-runtime base, set CMD ["app.main:app"]'
)


class AppLoadError(ConfigurationError):
    """The app could not be loaded; ``fields`` say which module and where it failed."""

    def __init__(self, message: str, **fields: str) -> None:
        super().__init__(message)
        self.fields = fields


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``run``."""
    parser.epilog = (
        "exit codes: 0 clean stop, 75 drain deadline hit (work released), 70 forced by the hard "
        "deadline, 78 configuration (bad settings, an app that cannot be loaded), 1 a crash"
    )
    parser.add_argument(
        "app",
        nargs="?",
        metavar="MODULE:ATTR",
        help="a Supervisor, or an async setup function taking a Runtime",
    )
    parser.add_argument(
        "--app-dir",
        default=".",
        help="directory put first on sys.path before importing MODULE (default: .)",
    )


def _location(exc: BaseException) -> str:
    """``file:line`` where ``exc`` was raised (a SyntaxError: where the bad code is)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "unknown"


def _import(module_name: str, app_dir: Path) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise AppLoadError(
                f"cannot import {module_name!r}: no module {missing!r} in {app_dir} or on the "
                "Python path (check MODULE and --app-dir)",
                app_module=module_name,
            ) from exc
        raise _failed(module_name, exc) from exc
    except (Exception, SystemExit) as exc:
        raise _failed(module_name, exc) from exc


def _failed(module_name: str, exc: BaseException) -> AppLoadError:
    location = _location(exc)
    described = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return AppLoadError(
        f"importing {module_name!r} failed: {described} (at {location})",
        app_module=module_name,
        exception=described,
        location=location,
    )


def load_app(target: str | None, *, app_dir: str = ".") -> Supervisor:
    """Import ``MODULE:ATTR`` and return it as a Supervisor; raise AppLoadError if unfit."""
    if not target:
        raise AppLoadError(_NO_APP)
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise AppLoadError(f"app {target!r} must look like MODULE:ATTR (e.g. app.main:app)")
    directory = Path(app_dir).resolve()
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise AppLoadError(f"--app-dir {app_dir!r} {problem}")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    value = _import(module_name, directory)
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AppLoadError(
                f"module {module_name!r} has no attribute {attribute!r}", app_module=module_name
            ) from None
    if isinstance(value, Supervisor):
        return value
    if inspect.iscoroutinefunction(value):
        return Supervisor(value)
    raise AppLoadError(
        f"{target!r} is a {type(value).__name__}, not a Supervisor or an async setup function",
        app_module=module_name,
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the app to the end and return its exit code."""
    configure_logging()
    try:
        app = load_app(args.app, app_dir=args.app_dir)
    except AppLoadError as exc:
        code = int(ExitCode.CONFIGURATION)
        logger.critical(str(exc), extra={**exc.fields, "app": args.app, "exit_code": code})
        return code
    return app.run()
