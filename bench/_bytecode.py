"""Bytecode for the project's own modules, as the images ship it, before a start is measured.

The Dockerfiles compile everything (``python -m compileall``) because a read-only container
cannot write ``.pyc`` files, and this environment sets ``PYTHONDONTWRITEBYTECODE`` too. Without
this, every measured start of a worker compiled the runtime's and the example's sources again
(about 0.06 s of CPU), which no deployed task does; site-packages were compiled at install.
"""

from __future__ import annotations

import compileall

from bench._results import REPO

__all__ = ["compile_project"]


def compile_project() -> None:
    """Write ``__pycache__`` of ``fargate_runtime``, ``examples`` and ``bench`` (git ignores it)."""
    for package in ("fargate_runtime", "examples", "bench"):
        compileall.compile_dir(REPO / package, quiet=1)
