"""Every field of every settings model has a README row: its variable, its default, a meaning.

The models are found, not listed: a settings class added anywhere in the package (a new field of
``RuntimeSettings``, a new model for a new store) fails this test until the README says what it
is.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

import fargate_runtime

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]+)`[^|]*\|([^|]*)\|([^|]*)\|\s*$")


def settings_models() -> list[type[BaseSettings]]:
    """Every public-named BaseSettings subclass the package defines (in any of its modules:
    a public namespace may define its models in a private module and re-export them)."""
    found: dict[str, type[BaseSettings]] = {}
    modules = pkgutil.walk_packages(fargate_runtime.__path__, prefix="fargate_runtime.")
    for info in modules:
        if info.name.endswith(".__main__"):
            continue  # runs the command line when imported
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseSettings)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[f"{module.__name__}.{name}"] = value
    return [found[key] for key in sorted(found)]


def variable(model: type[BaseSettings], field: str) -> str:
    """The environment variable of ``field``."""
    return f"{model.model_config.get('env_prefix', '')}{field}".upper()


def rendered(default: object) -> str | None:
    """How a default is written in the README's default column (None: any text will do)."""
    if default is PydanticUndefined:
        return "required"
    if default is None:
        return "unset"
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def readme_rows() -> dict[str, list[tuple[str, str]]]:
    """Variable -> (default cell, meaning cell) of every table row that starts with one."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            rows.setdefault(match[1], []).append((match[2].strip(), match[3].strip()))
    return rows


FIELDS = [
    (model, name, info) for model in settings_models() for name, info in model.model_fields.items()
]


def test_the_models_are_found() -> None:
    """The scan sees the runtime, SQS, idempotency, HTTP and telemetry models at least."""
    names = {model.__name__ for model in settings_models()}
    assert {
        "RuntimeSettings", "SqsSettings", "IdempotencySettings", "HttpSettings",
        "HttpIdempotencySettings", "TelemetrySettings",
    } <= names  # fmt: skip


@pytest.mark.parametrize(
    ("model", "name", "info"),
    FIELDS,
    ids=[variable(model, name) for model, name, _ in FIELDS],
)
def test_each_setting_has_a_row_with_its_default_and_meaning(
    model: type[BaseSettings], name: str, info: object
) -> None:
    """A README row names the variable, shows the model's default and says what it means."""
    env = variable(model, name)
    rows = readme_rows().get(env)
    assert rows, f"{env} ({model.__name__}.{name}) is in no README table"
    default_factory = getattr(info, "default_factory", None)
    wanted = None if default_factory is not None else rendered(getattr(info, "default", None))
    fitting = [(d, m) for d, m in rows if m and (wanted is None or d.startswith(wanted))]
    assert fitting, f"{env}: no row shows default {wanted!r} with a meaning: {rows}"


def test_every_relative_link_of_the_docs_resolves() -> None:
    """Links in README, docs and example READMEs point at files that exist (no shared notes)."""
    root = README.parent
    documents = [README, *root.glob("docs/*.md"), *root.glob("examples/*/README.md")]
    documents.append(root / "deploy" / "README.md")
    for document in documents:
        text = document.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, f"{document} points at notes outside the repository"
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (document.parent / target).exists(), f"{document}: broken link {target}"
