"""Every public module declares ``__all__``, and every name in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import fargate_runtime


def public_modules() -> list[str]:
    found = pkgutil.walk_packages(fargate_runtime.__path__, prefix="fargate_runtime.")
    names = [
        info.name
        for info in found
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return sorted(["fargate_runtime", *names])


@pytest.mark.parametrize("name", public_modules())
def test_public_module_declares_all_and_its_names_exist(name: str) -> None:
    """Each public module has a sorted, duplicate-free ``__all__`` of names it really defines."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [item for item in exported if not hasattr(module, item)]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"


def test_top_level_surface_stays_small() -> None:
    """The top level is a curated surface of about a dozen names, not everything."""
    assert 8 <= len(fargate_runtime.__all__) <= 20
    assert "Supervisor" in fargate_runtime.__all__
    assert "ExitCode" in fargate_runtime.__all__
