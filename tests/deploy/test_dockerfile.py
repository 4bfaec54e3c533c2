"""The base image's Dockerfile, parsed: the production checklist holds for what users build FROM."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from tests.deploy.dockerfile import Stage, parse, stages

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


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
    """The runtime stage copies the builder's venv and installs nothing itself."""
    builder_runs = " ".join(i.arguments for i in build[0].all("RUN"))
    assert "python -m venv /opt/venv" in builder_runs
    assert "compileall" in builder_runs
    copies = [i for i in final.all("COPY") if i.flags.get("from") == "builder"]
    assert [c.rest for c in copies] == ["/opt/venv /opt/venv"]
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
    assert any("compileall" in run and "/app" in run for run in runs)
    # Everything the image writes happens before USER: after it, nothing is built.
    user_line = final.last("USER")
    assert user_line is not None
    assert all(i.line < user_line.line for i in final.all("RUN"))


def test_exec_form_entrypoint_and_cmd(final: Stage) -> None:
    """ENTRYPOINT and CMD in exec form: the supervisor is PID 1 and gets SIGTERM itself."""
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None
    assert cmd is not None
    assert entrypoint.exec_form == ["fargate-runtime", "run"]
    assert cmd.exec_form is not None
    assert len(cmd.exec_form) == 1
    assert re.fullmatch(r"[\w.]+:\w+", cmd.exec_form[0])


def test_default_app_module_exists(final: Stage) -> None:
    """The default CMD names a module the image copies into /app."""
    cmd = final.last("CMD")
    assert cmd is not None
    assert cmd.exec_form is not None
    module = cmd.exec_form[0].partition(":")[0]
    path = REPO / (module.replace(".", "/") + ".py")
    if not path.exists():
        pytest.skip(f"{path.relative_to(REPO)} is not written yet (the example worker's issue)")
    assert any(i.rest.split()[0] == "examples" for i in final.all("COPY"))


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
