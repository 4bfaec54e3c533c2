"""Settings read from the environment (prefix ``FARGATE_RUNTIME_``) and the shutdown budget.

The shutdown budget is the one timing invariant everything else is sized against::

    SIGTERM                                                     SIGKILL (ECS)
    |<------------------------- stop_timeout_seconds ------------------------->|
    |<--------------- budget (stop - margin) ---------------->|<-- margin -->|
    |<------ drain_seconds ------>|<- release ->|<- close --->|
      in-flight work finishes       cancel and    resources
      (no new intake)               release       close, telemetry flushes

Settings whose parts do not fit are refused at start (exit 78), never discovered at SIGKILL.
So is a ``FARGATE_RUNTIME_*`` variable that no setting reads (``check_environment``): a typo
(``..._SQS_BATCH_SIZE`` for ``..._SQS_CONCURRENCY``) would otherwise be ignored in silence.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ENV_PREFIX",
    "RETIRED_VARIABLES",
    "RuntimeSettings",
    "ShutdownBudget",
    "check_environment",
    "known_variables",
    "load_settings",
]

logger = logging.getLogger("fargate_runtime.settings")

ENV_PREFIX = "FARGATE_RUNTIME_"

# Where the package's settings models live: imported only when a variable needs looking up.
_SETTINGS_MODULES = (
    "fargate_runtime.settings",
    "fargate_runtime.sqs.settings",
    "fargate_runtime.idempotency.settings",
    "fargate_runtime.http.settings",
    "fargate_runtime.telemetry._settings",
)
# Variables under the prefix that the package reads without a settings model.
_OTHER_VARIABLES = frozenset({"FARGATE_RUNTIME_DRILL_LEDGER", "FARGATE_RUNTIME_DRILL_SQS_ENDPOINT"})
# Settings that were removed: still accepted, with one warning saying why they do nothing.
RETIRED_VARIABLES = {
    "FARGATE_RUNTIME_SQS_ABANDON_RECEIVE_ON_SHUTDOWN": (
        "the receive in flight is always abandoned at shutdown now (its messages stay hidden "
        "for FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS at most)"
    ),
}

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """How the seconds between SIGTERM and SIGKILL are spent."""

    stop_timeout_seconds: float
    margin_seconds: float
    drain_seconds: float
    release_seconds: float
    close_seconds: float

    @property
    def total_seconds(self) -> float:
        """Everything the runtime may use after the first signal (stop timeout minus margin)."""
        return self.stop_timeout_seconds - self.margin_seconds


class RuntimeSettings(BaseSettings):
    """Settings of the supervisor, health endpoint and logs.

    ``stop_timeout_seconds`` must say what the task definition's ``stopTimeout`` says: the
    runtime plans its whole shutdown to end ``shutdown_margin_seconds`` before ECS sends SIGKILL.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    service_name: str = Field(default="fargate-runtime", min_length=1, max_length=255)
    stop_timeout_seconds: float = Field(default=30.0, ge=2.0, le=120.0)
    # Kept free before SIGKILL. The watchdog's forced exit (stacks logged, final releases, logs
    # flushed) runs in the first part of it, faulthandler's backstop at its middle.
    shutdown_margin_seconds: float = Field(default=2.0, ge=0.5)
    # Cancelling stragglers and releasing their messages/claims: a few round trips each.
    release_seconds: float = Field(default=2.0, gt=0.0)
    # Closing resources (pools, clients) and flushing telemetry, all of them together.
    close_seconds: float = Field(default=3.0, gt=0.0)
    # None: whatever is left of the budget once margin, release and close are set aside.
    drain_seconds: float | None = Field(default=None, gt=0.0)
    health_port: int | None = Field(default=None, ge=1, le=65535)
    # Loopback by default: the container HEALTHCHECK runs inside the task's network namespace.
    health_host: str = "127.0.0.1"
    log_level: LogLevel = "INFO"
    log_json: bool = True
    # A loop that has not turned for this long gets one warning with the blocked code's stack.
    blocked_loop_seconds: float = Field(default=1.0, gt=0.0, le=3600.0)

    @model_validator(mode="after")
    def _budget_fits(self) -> RuntimeSettings:
        self.budget()
        return self

    def budget(self) -> ShutdownBudget:
        """Split the stop timeout; raise ConfigurationError naming the settings if it won't fit."""
        total = self.stop_timeout_seconds - self.shutdown_margin_seconds
        reserved = self.release_seconds + self.close_seconds
        p = ENV_PREFIX
        if self.drain_seconds is None:
            drain = total - reserved
            if drain <= 0:
                raise ConfigurationError(
                    f"{p}STOP_TIMEOUT_SECONDS={self.stop_timeout_seconds:g} leaves no time to "
                    f"drain: {self.stop_timeout_seconds:g} - {p}SHUTDOWN_MARGIN_SECONDS "
                    f"{self.shutdown_margin_seconds:g} - {p}RELEASE_SECONDS "
                    f"{self.release_seconds:g} - {p}CLOSE_SECONDS {self.close_seconds:g} "
                    f"= {drain:g} s"
                )
        else:
            drain = self.drain_seconds
            if drain + reserved > total:
                raise ConfigurationError(
                    f"{p}DRAIN_SECONDS={drain:g} does not fit: {p}DRAIN_SECONDS {drain:g} + "
                    f"{p}RELEASE_SECONDS {self.release_seconds:g} + {p}CLOSE_SECONDS "
                    f"{self.close_seconds:g} + {p}SHUTDOWN_MARGIN_SECONDS "
                    f"{self.shutdown_margin_seconds:g} = "
                    f"{drain + reserved + self.shutdown_margin_seconds:g} s > "
                    f"{p}STOP_TIMEOUT_SECONDS {self.stop_timeout_seconds:g} s"
                )
        return ShutdownBudget(
            stop_timeout_seconds=self.stop_timeout_seconds,
            margin_seconds=self.shutdown_margin_seconds,
            drain_seconds=drain,
            release_seconds=self.release_seconds,
            close_seconds=self.close_seconds,
        )

    @property
    def log_level_number(self) -> int:
        """The stdlib logging level for ``log_level``."""
        return logging.getLevelNamesMapping()[self.log_level]


# Values of fields whose names hold these words may carry credentials: never echo them.
_SENSITIVE_WORDS = ("secret", "password", "token", "url", "key", "auth")


def _describe(cls: type[BaseSettings], exc: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        name = f"{prefix}{field}".upper() if field else cls.__name__
        sensitive = any(word in field.lower() for word in _SENSITIVE_WORDS)
        shown = " (value hidden)" if sensitive else f" (got {error.get('input')!r})"
        problems.append(f"{name}: {error['msg']}{shown}")
    return "; ".join(problems)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build ``cls`` from the environment and ``overrides``; bad values raise ConfigurationError.

    The message names each offending environment variable, so the one log line a failed task
    leaves in CloudWatch is enough to fix it.
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {_describe(cls, exc)}") from exc


def _models() -> list[type[BaseSettings]]:
    for module in _SETTINGS_MODULES:
        importlib.import_module(module)
    found: list[type[BaseSettings]] = []
    pending = list(BaseSettings.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if str(model.model_config.get("env_prefix", "")).upper().startswith(ENV_PREFIX):
            found.append(model)
    return found


def known_variables() -> frozenset[str]:
    """Every ``FARGATE_RUNTIME_*`` variable something in the package reads (upper case)."""
    names = set(_OTHER_VARIABLES)
    for model in _models():
        prefix = str(model.model_config.get("env_prefix", "")).upper()
        names.update(f"{prefix}{field}".upper() for field in model.model_fields)
    return frozenset(names)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse ``FARGATE_RUNTIME_*`` variables no setting reads (ConfigurationError, exit 78).

    The message names each one and the closest known setting (a typo, most likely). Retired
    settings get one warning each instead. Names compare case-insensitively, as the settings
    read them.
    """
    names = os.environ if environ is None else environ
    ours = [name for name in names if name.upper().startswith(ENV_PREFIX)]
    if not ours:
        return
    known = known_variables()
    unknown: list[str] = []
    for name in sorted(ours):
        upper = name.upper()
        if upper in RETIRED_VARIABLES:
            logger.warning("%s is no longer used: %s; remove it", name, RETIRED_VARIABLES[upper])
        elif upper not in known:
            unknown.append(name)
    if not unknown:
        return
    problems = [f"{name} (did you mean {_closest(name.upper(), known)}?)" for name in unknown]
    raise ConfigurationError(
        f"unknown setting{'s' if len(problems) > 1 else ''} {'; '.join(problems)}: no part of "
        f"the runtime reads {'them' if len(problems) > 1 else 'it'} (every setting is in the "
        "README's Settings tables)"
    )


def _closest(name: str, known: frozenset[str]) -> str:
    """The known variable most like ``name``, looked for first in its own section (``_SQS_``)."""
    section = "_".join(name.split("_")[:3]) + "_"
    candidates = sorted(k for k in known if k.startswith(section)) or sorted(known)
    return difflib.get_close_matches(name, candidates, n=1, cutoff=0.0)[0]
