"""The Dockerfiles, parsed: the base holds the production checklist, the children build FROM it.

No Docker engine runs here; ``tests/deploy/test_container.py`` runs the runtime the way the
image does (PID 1, uid 10001, read-only root) instead.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Stage, parse, stages

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
CHILDREN = sorted(REPO.glob("examples/*/Dockerfile"))


@pytest.fixture(scope="module")
def build() -> list[Stage]:
    """The stages of the repository's Dockerfile."""
    return stages(parse(DOCKERFILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def final(build: list[Stage]) -> Stage:
    """The stage that becomes the image."""
    return build[-1]


def test_parser_joins_continuations_and_drops_comments() -> None:
    """Continued lines join, comment lines inside them vanish, exec and shell form differ."""
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.11.14-slim AS base\n"
        "RUN apt-get update \\\n"
        "    # a comment inside the continuation\n"
        " && true\n"
        "\n"
        'CMD ["app:main", "--flag"]\n'
        "ENTRYPOINT python -m app\n"
        "HEALTHCHECK --interval=5s --retries=2 \\\n"
        '  CMD ["probe"]\n'
    )
    instructions = parse(text)
    assert [i.keyword for i in instructions] == ["FROM", "RUN", "CMD", "ENTRYPOINT", "HEALTHCHECK"]
    assert instructions[1].arguments == "apt-get update && true"
    assert instructions[2].exec_form == ["app:main", "--flag"]
    assert instructions[3].exec_form is None
    health = instructions[4]
    assert health.flags == {"interval": "5s", "retries": "2"}
    assert health.rest == 'CMD ["probe"]'
    assert stages(instructions)[0].name == "base"


def test_parser_refuses_a_dangling_continuation() -> None:
    """A file that ends inside a continued instruction is reported, not half-parsed."""
    with pytest.raises(ValueError, match="ends inside"):
        parse("FROM x:1\nRUN true \\\n")


def test_multi_stage_with_one_pinned_base(build: list[Stage]) -> None:
    """A builder stage and a runtime stage on the same pinned slim Python 3.11 base."""
    assert len(build) >= 2
    assert build[0].name == "builder"
    assert {stage.base for stage in build} == {build[0].base}, "stages must share the base"
    base = build[0].base
    assert "latest" not in base
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_venv_is_built_in_the_builder_and_copied(build: list[Stage], final: Stage) -> None:
    """The runtime stage copies the builder's venv (and its constraints) and installs nothing."""
    builder_runs = " ".join(i.arguments for i in build[0].all("RUN"))
    assert "python -m venv /opt/venv" in builder_runs
    assert "compileall" in builder_runs
    copies = [i for i in final.all("COPY") if i.flags.get("from") == "builder"]
    assert copies[0].rest == "/opt/venv /opt/venv"
    assert not any("pip install" in i.arguments for i in final.all("RUN"))


def test_runs_as_uid_10001(final: Stage) -> None:
    """The last USER is the numeric non-root uid task definitions name."""
    user = final.last("USER")
    assert user is not None
    assert user.arguments == "10001:10001"
    groupadd = " ".join(i.arguments for i in final.all("RUN"))
    assert "--uid 10001" in groupadd


def test_read_only_root_filesystem_friendly(final: Stage) -> None:
    """No .pyc writes at run time, bytecode compiled at build time, HOME and TMPDIR in /tmp."""
    env = final.environment()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"  # noqa: S108 - the image's scratch path, checked
    assert env["PATH"].startswith("/opt/venv/bin:")
    runs = [i.arguments for i in final.all("RUN")]
    assert any("compileall" in run and "stdlib" in run for run in runs)
    # Everything the image writes happens before USER: after it, nothing is built.
    user_line = final.last("USER")
    assert user_line is not None
    assert all(i.line < user_line.line for i in final.all("RUN"))


def test_exec_form_entrypoint_and_no_application(final: Stage) -> None:
    """ENTRYPOINT in exec form (the supervisor is PID 1); no CMD and no example in the base."""
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None
    assert entrypoint.exec_form == ["fargate-runtime", "run"]
    assert final.last("CMD") is None, "a child that forgets CMD must not run someone else's app"
    copied = " ".join(i.rest for i in final.all("COPY"))
    assert "examples" not in copied


def test_child_installs_are_held_to_the_tested_versions(build: list[Stage], final: Stage) -> None:
    """PIP_CONSTRAINT names a file the image holds: the versions the builder installed."""
    constraint = final.environment()["PIP_CONSTRAINT"]
    builder_runs = " ".join(i.arguments for i in build[0].all("RUN"))
    frozen = f"pip list --format=freeze --exclude pip --exclude setuptools > {constraint}"
    assert frozen in builder_runs
    copies = [i.rest.split() for i in final.all("COPY") if i.flags.get("from") == "builder"]
    assert [constraint, constraint] in copies
    # The builder installs with the repository's constraints, so the frozen file holds them.
    assert "-c constraints.txt" in builder_runs


@pytest.fixture(params=CHILDREN, ids=lambda path: path.parent.name)
def child(request: pytest.FixtureRequest) -> tuple[Path, list[Stage]]:
    """An example's Dockerfile and its stages."""
    path: Path = request.param
    return path, stages(parse(path.read_text(encoding="utf-8")))


def test_every_example_has_a_child_dockerfile() -> None:
    """Each example folder (a package with app.py) has a Dockerfile beside it."""
    examples = {p.parent for p in REPO.glob("examples/*/app.py")}
    assert examples
    assert {p.parent for p in CHILDREN} == examples


def test_child_builds_from_the_base(child: tuple[Path, list[Stage]]) -> None:
    """One stage, FROM the base image given as a build argument; the base's ENTRYPOINT kept."""
    path, built = child
    text = path.read_text(encoding="utf-8")
    assert len(built) == 1
    assert built[0].base.startswith("fargate-runtime:"), built[0].base
    assert "FROM ${BASE_IMAGE}" in text
    assert built[0].last("ENTRYPOINT") is None
    assert built[0].last("HEALTHCHECK") is None  # inherited from the base


def test_child_cmd_names_a_module_it_copies(child: tuple[Path, list[Stage]]) -> None:
    """CMD is one exec-form MODULE:ATTR whose module file is copied from beside the Dockerfile."""
    path, built = child
    stage = built[0]
    cmd = stage.last("CMD")
    assert cmd is not None
    assert cmd.exec_form is not None
    assert len(cmd.exec_form) == 1
    module, _, attribute = cmd.exec_form[0].partition(":")
    assert attribute
    package, _, name = module.rpartition(".")
    copies = [i.rest.split() for i in stage.all("COPY") if "from" not in i.flags]
    targets = {words[-1].rstrip("/"): words[:-1] for words in copies}
    sources = targets[f"/app/{package}"]
    assert f"{name}.py" in sources
    assert "__init__.py" in sources
    for words in copies:
        for source in words[:-1]:
            assert (path.parent / source).is_file(), f"{path}: COPY {source} is not in the context"


def test_child_installs_under_the_constraints_and_runs_as_10001(
    child: tuple[Path, list[Stage]],
) -> None:
    """pip installs its requirements (never overriding PIP_CONSTRAINT); code compiled; uid 10001."""
    path, built = child
    stage = built[0]
    runs = [i.arguments for i in stage.all("RUN")]
    assert any(run.startswith("pip install") and "-r /app/requirements.txt" in run for run in runs)
    assert not any("PIP_CONSTRAINT" in run or "--no-deps" in run for run in runs)
    assert "PIP_CONSTRAINT" not in stage.environment()
    assert any("compileall" in run and "/app" in run and "/opt/venv" in run for run in runs)
    user = stage.last("USER")
    assert user is not None
    assert user.arguments == "10001:10001"
    assert all(i.line < user.line for i in stage.all("RUN"))
    assert (path.parent / "requirements.txt").is_file()


def test_stop_signal_is_sigterm(final: Stage) -> None:
    """STOPSIGNAL SIGTERM: what ECS sends is what the supervisor handles."""
    stop = final.last("STOPSIGNAL")
    assert stop is not None
    assert stop.arguments == "SIGTERM"


def test_healthcheck_uses_the_runtime_probe(final: Stage) -> None:
    """HEALTHCHECK runs `fargate-runtime healthcheck` in exec form, with a start period."""
    health = final.last("HEALTHCHECK")
    assert health is not None
    keyword, _, command = health.rest.partition(" ")
    assert keyword == "CMD"
    assert command.startswith("[")
    assert parse(f"CMD {command}")[0].exec_form == ["fargate-runtime", "healthcheck"]
    assert {"interval", "timeout", "start-period", "retries"} <= health.flags.keys()
    # The probe reads the port from the environment the image sets.
    assert final.environment()["FARGATE_RUNTIME_HEALTH_PORT"].isdigit()


def _ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    # Approximates Docker's matcher: a pattern matches the path or one of its parents.
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        or fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], pattern.removeprefix("**/"))
        for pattern in patterns
        if not pattern.startswith("!")
        for prefix in prefixes
    )


def test_dockerignore_keeps_what_the_build_copies(build: list[Stage]) -> None:
    """Every path COPY takes from the context is sent; the venv, git and tests are not."""
    patterns = _ignore_patterns()
    sources = [
        source
        for stage in build
        for copy in stage.all("COPY")
        if "from" not in copy.flags
        for source in copy.rest.split()[:-1]
    ]
    assert sources, "the Dockerfile copies nothing from the context"
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    for private in (".venv", ".git", "tests", "fargate_runtime/__pycache__", "deploy", ".env"):
        assert _ignored(private, patterns), f"{private} would be sent to the builder"
