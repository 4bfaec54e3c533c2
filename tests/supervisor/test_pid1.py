"""The supervisor as PID 1 of a new PID namespace, the way a container runs it.

PID 1 ignores every signal it has no handler for, so a Python PID 1 without one never sees
SIGTERM and ECS SIGKILLs it at ``stopTimeout``. ``unshare --pid --fork --mount-proc`` makes the
command PID 1 of a fresh namespace; the test signals that process from outside.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from tests.processes import Child, namespace_init, runtime_argv


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = os.system("unshare --pid --fork --mount-proc true >/dev/null 2>&1")  # noqa: S605 - fixed command, probing a capability
    return probe == 0


pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        not _can_unshare(), reason="unshare --pid needs root or user namespaces (util-linux)"
    ),
]


def ns_pid(host_pid: int) -> int:
    """The pid a process has inside its own (innermost) PID namespace."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


def test_supervisor_as_pid1_drains_on_sigterm() -> None:
    """As PID 1 of its namespace, the supervisor gets SIGTERM, drains and exits 0."""
    argv = [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        *runtime_argv("tests.supervisor.apps:busy"),
    ]
    with Child(argv, env={"TEST_WORK_SECONDS": "1.0"}) as child:
        child.wait_for_message("work started")
        init = namespace_init(child.pid)
        assert ns_pid(init) == 1
        os.kill(init, signal.SIGTERM)
        finished = child.wait_for_message("work finished", timeout=10)
        code = child.wait(timeout=15)
    assert code == 0, child.output()
    assert finished["shutdown_requested"] is True
    assert child.wait_for(lambda line: line.get("phase") == "stopped")["exit_code"] == 0


def test_plain_python_as_pid1_ignores_sigterm() -> None:
    """The failure the runtime fixes: a PID 1 with no handler keeps running after SIGTERM."""
    script = (
        "import itertools, time\n"
        "for n in itertools.count():\n"
        "    print(f'tick {n}', flush=True)\n"
        "    time.sleep(0.05)\n"
    )
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script]
    with Child(argv) as child:
        child.wait_for_message("tick 1")
        init = namespace_init(child.pid)
        os.kill(init, signal.SIGTERM)
        # The kernel drops a signal PID 1 has no handler for at send time: ticks go on.
        ticks_after = len(child.lines) + 3
        alive_later = child.wait_for(lambda _: len(child.lines) >= ticks_after)
        os.kill(init, signal.SIGKILL)
        code = child.wait(timeout=10)
    assert str(alive_later["message"]).startswith("tick")
    assert code != 0
