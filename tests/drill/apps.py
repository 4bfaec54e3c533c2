"""Deliberately broken workers the drill must catch (run by ``fargate-runtime run``, not imported).

``deaf`` is the drill's default payment worker in a container whose SIGTERM never reaches Python (a
shell-form ``CMD``): it keeps working until the platform's SIGKILL.
"""

from __future__ import annotations

import signal

from fargate_runtime import Runtime, Supervisor
from fargate_runtime.drill.worker import setup

deaf = Supervisor(setup, handle_signals=False)


@deaf.setup
async def ignore_sigterm(rt: Runtime) -> None:
    """Ignore SIGTERM for the rest of the process's life, as a swallowing shell would."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
