"""Run a command the way the image runs it, without a Docker engine: a container stand-in.

Inside a new mount and PID namespace (``unshare``): the command is PID 1, runs as uid/gid
10001 with no capabilities and no way to gain any (``setpriv``), sees the repository (code and
``.venv``) and the Python installation read-only (bind mounts remounted ``ro``), and has a fresh
tmpfs at ``/tmp`` as its only writable place (like the task definition's ``/tmp`` volume).
A directory on the interpreter's path that uid 10001 may not enter (``/root`` here) is covered
by a tmpfs that holds only the interpreter, bound back read-only.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["UID", "can_sandbox", "namespace_init", "sandbox_argv", "status_field"]

UID = 10001
REPO = Path(__file__).resolve().parents[2]


def _blocker(path: Path) -> Path | None:
    """The highest ancestor of ``path`` that others may not traverse, if any."""
    for ancestor in reversed(path.parents):
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def can_sandbox() -> str | None:
    """Why the sandbox cannot run here, or None when it can."""
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "mount namespaces with bind mounts need root"
    if _blocker(REPO) is not None:
        return f"{REPO} is not reachable for uid {UID}"
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return None if probe.returncode == 0 else "unshare --mount --pid is not permitted here"


def sandbox_argv(command: list[str], *, stage: Path, env: dict[str, str]) -> list[str]:
    """argv that runs ``command`` as PID 1 of a read-only, uid-10001 sandbox.

    ``stage`` is an empty directory used while re-exposing the interpreter; ``env`` is the whole
    environment of the command (nothing else leaks in).
    """
    prefix = Path(sys.base_prefix).resolve()
    q = shlex.quote
    steps = ["set -e"]
    blocker = _blocker(prefix)
    if blocker is not None:
        # Keep the interpreter, hide everything else of the blocking directory.
        steps += [
            f"mount --bind {q(str(prefix))} {q(str(stage))}",
            f"mount -t tmpfs -o mode=0755,size=1m tmpfs {q(str(blocker))}",
            f"mkdir -p {q(str(prefix))}",
            f"mount --bind {q(str(stage))} {q(str(prefix))}",
            f"umount {q(str(stage))}",
        ]
    else:
        steps.append(f"mount --bind {q(str(prefix))} {q(str(prefix))}")
    steps += [
        f"mount -o remount,bind,ro {q(str(prefix))}",
        f"mount --bind {q(str(REPO))} {q(str(REPO))}",
        f"mount -o remount,bind,ro {q(str(REPO))}",
        "mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp",
        f"cd {q(str(REPO))}",
        # exec all the way down: the command itself becomes PID 1.
        f"exec setpriv --reuid={UID} --regid={UID} --clear-groups --no-new-privs "
        '--inh-caps=-all --bounding-set=-all env -i "$@"',
    ]
    assignments = [f"{name}={value}" for name, value in env.items()]
    return [
        "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
        "sh", "-c", "\n".join(steps), "sandbox", *assignments, *command,
    ]  # fmt: skip


def namespace_init(unshare_pid: int, *, timeout: float = 10.0) -> int:
    """The host pid of PID 1 of the namespace that ``unshare`` (``unshare_pid``) created."""
    children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
        time.sleep(0.01)
    raise TimeoutError("unshare did not fork its child")


def status_field(pid: int, name: str) -> list[str]:
    """A field of /proc/PID/status, split (e.g. ``Uid`` -> real, effective, saved, fs)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.split()
    raise KeyError(name)
