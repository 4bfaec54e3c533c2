"""An app for the process tests: a supervisor that enters the idempotency store from settings.

Run as ``fargate-runtime run tests.idempotency.apps:store_app`` with ``REDIS_URL`` (and any
``FARGATE_RUNTIME_IDEMPOTENCY_*``) in the environment; it logs "store ready" once the store is
open and then idles until told to stop.
"""

from __future__ import annotations

import logging

from fargate_runtime import Lifecycle, Runtime, Supervisor
from fargate_runtime.idempotency import load_idempotency_settings, open_store

logger = logging.getLogger("tests.idempotency.apps")

store_app = Supervisor()


@store_app.setup
async def enter_store(runtime: Runtime) -> None:
    """Open the store the way the example worker does: as a resource, from settings."""
    await runtime.enter(open_store(load_idempotency_settings()), name="idempotency")


@store_app.service
async def idle(lifecycle: Lifecycle) -> None:
    """Say the store is open, then wait for SIGTERM."""
    logger.info("store ready")
    await lifecycle.wait_shutdown_requested()
