"""Deliberately broken workers the drill must catch (run by ``fargate-runtime run``, not imported).

``deaf`` is the example payment worker in a container whose SIGTERM never reaches Python (a
shell-form ``CMD``): it keeps working until the platform's SIGKILL.
"""

from __future__ import annotations

import signal

from examples.sqs_worker.app import setup
from fargate_runtime import Runtime, Supervisor

deaf = Supervisor(setup, handle_signals=False)


@deaf.setup
async def ignore_sigterm(rt: Runtime) -> None:
    """Ignore SIGTERM for the rest of the process's life, as a swallowing shell would."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
