"""A package's names imported on first use (PEP 562 ``__getattr__``), one mechanism for all.

A worker that never asks for the HTTP host must not import uvicorn, one that only reads its
settings must not import aioboto3, and telemetry off must not import OpenTelemetry: each package
lists its heavy names here instead of importing them. The standard library's ``LazyLoader``
defers whole modules, not names of a package, hence these few lines of our own.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], object]:
    """The ``__getattr__`` of ``package``: each name of ``names`` comes from its module
    (relative to ``package``) when first asked for, then stays in the package."""
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
