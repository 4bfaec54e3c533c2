"""fargate-runtime: an asyncio runtime for containers on Amazon ECS on Fargate.

The top level holds what a worker's entry point needs; ``fargate_runtime.idempotency``,
``fargate_runtime.sqs``, ``fargate_runtime.http`` and ``fargate_runtime.testing`` are the public
namespaces for the rest.
"""

from __future__ import annotations

from .errors import ConfigurationError, FargateRuntimeError
from .lifecycle import ExitCode, Lifecycle, Phase
from .logging import bind_log_context, configure_logging
from .settings import RuntimeSettings, ShutdownBudget, load_settings
from .supervisor import Runtime, Service, Setup, Supervisor

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ExitCode",
    "FargateRuntimeError",
    "Lifecycle",
    "Phase",
    "Runtime",
    "RuntimeSettings",
    "Service",
    "Setup",
    "ShutdownBudget",
    "Supervisor",
    "__version__",
    "bind_log_context",
    "configure_logging",
    "load_settings",
]
