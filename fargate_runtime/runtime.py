"""What a setup function gets: resources entered in order and closed in exact reverse order,
each close bounded (by its own timeout and the close deadline) inside the one shield, and the
services to run once setup is done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from .lifecycle import Lifecycle
    from .settings import RuntimeSettings

__all__ = ["DEFAULT_CLOSE_TIMEOUT_SECONDS", "Runtime", "Service", "Setup"]

logger = logging.getLogger("fargate_runtime.supervisor")

T = TypeVar("T")
Service = Callable[["Lifecycle"], Awaitable[None]]
Setup = Callable[["Runtime"], Awaitable[None]]

# Default close bound for one resource when the caller names none.
DEFAULT_CLOSE_TIMEOUT_SECONDS = 2.0


@dataclass(slots=True)
class _Resource:
    name: str
    manager: AbstractAsyncContextManager[Any]
    close_timeout_seconds: float


class Runtime:
    """The handle a setup function gets: enter resources, register services."""

    def __init__(self, settings: RuntimeSettings, lifecycle: Lifecycle) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self._resources: list[_Resource] = []
        self._services: list[tuple[str, Service]] = []

    async def enter(
        self,
        manager: AbstractAsyncContextManager[T],
        *,
        name: str,
        close_timeout_seconds: float = DEFAULT_CLOSE_TIMEOUT_SECONDS,
    ) -> T:
        """Enter ``manager`` now; it is closed after the services stop, in reverse order."""
        value = await manager.__aenter__()
        self._resources.append(_Resource(name, manager, close_timeout_seconds))
        logger.debug("resource entered", extra={"resource": name})
        return value

    def add_service(self, service: Service, *, name: str | None = None) -> None:
        """Run ``service(lifecycle)`` once setup is done, alongside the other services."""
        label = name or str(getattr(service, "__name__", "service"))
        self._services.append((label, service))

    async def _close_resources(self) -> None:
        """Close in exact reverse order; each close bounded and shielded, failures logged."""
        lifecycle = self.lifecycle
        while self._resources:
            resource = self._resources.pop()
            timeout = resource.close_timeout_seconds
            deadlines = lifecycle.deadlines
            if deadlines is not None:
                timeout = min(timeout, max(0.0, deadlines.close - lifecycle.now()))
            started = time.monotonic()
            try:
                with lifecycle.cleanup_scope(seconds=timeout) as scope:
                    await resource.manager.__aexit__(None, None, None)
            except Exception:
                logger.exception("resource close failed", extra={"resource": resource.name})
                continue
            if scope.expired:
                logger.error(
                    "resource close timed out",
                    extra={"resource": resource.name, "timeout_seconds": round(timeout, 3)},
                )
            else:
                logger.info(
                    "resource closed",
                    extra={
                        "resource": resource.name,
                        "duration_seconds": round(time.monotonic() - started, 3),
                    },
                )
