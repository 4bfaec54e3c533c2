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
from pathlib import Path

from tests.processes import namespace_init

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
        # The sandbox replaces /tmp itself; nothing is written to the host's /tmp here.
        *_fresh_tmp(q(str(REPO)), inside_tmp=REPO.is_relative_to("/tmp")),  # noqa: S108
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


def _fresh_tmp(repo: str, *, inside_tmp: bool) -> list[str]:
    """Steps that put an empty tmpfs on /tmp, keeping the repository if it lives under /tmp.

    A checkout under /tmp (CI clones there) would vanish under the new tmpfs: it is parked on
    a scratch mount first, then bound back read-only at the same path inside the new /tmp.
    """
    tmpfs = "mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp"
    if not inside_tmp:
        return [tmpfs]
    return [
        "mount -t tmpfs -o size=1m tmpfs /mnt",
        "mkdir /mnt/repo",
        f"mount --bind {repo} /mnt/repo",
        tmpfs,
        f"mkdir -p {repo}",
        f"mount --bind /mnt/repo {repo}",
        f"mount -o remount,bind,ro {repo}",
        "umount /mnt/repo",
        "umount /mnt",
    ]


def status_field(pid: int, name: str) -> list[str]:
    """A field of /proc/PID/status, split (e.g. ``Uid`` -> real, effective, saved, fs)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.split()
    raise KeyError(name)
