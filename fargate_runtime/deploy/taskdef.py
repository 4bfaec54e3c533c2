"""Lint an ECS task definition against the Fargate production checklist and this runtime's needs.

Each finding names a rule id, a severity, the JSON path it is about and a one-line fix. Errors
are what ECS refuses, what kills tasks (SIGKILL mid-drain, exit 78 at start) or what leaks
(plaintext secrets); warnings are defaults worth changing. ``RULES`` lists them all.

The runtime's own settings judge its ``FARGATE_RUNTIME_*`` environment: the container's
``environment`` is loaded into ``RuntimeSettings`` as the runtime would load it at start, so a
refusal here carries the very message the task would log before exiting 78.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from ..errors import ConfigurationError
from ..settings import ENV_PREFIX, RuntimeSettings, check_environment, load_settings
from ._taskdef_rules import (
    ECS_DEFAULT_STOP_TIMEOUT_SECONDS,
    ECS_MAX_STOP_TIMEOUT_SECONDS,
    HEALTH_CHECK_RANGES,
    RULES,
    RULES_BY_ID,
    TMP_PATH,
    Finding,
    Rule,
    Severity,
    image_problem,
    plaintext_secret,
)
from .sizing import FARGATE_SIZES, allowed_memory_mib, parse_cpu_units, parse_memory_mib

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator

    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

_E, _W = Severity.ERROR, Severity.WARNING

__all__ = [
    "RULES",
    "RULES_BY_ID",
    "Finding",
    "Rule",
    "Severity",
    "check_task_definition",
    "image_problem",
    "plaintext_secret",
]


class _Problem(NamedTuple):
    rule: str
    path: str
    message: str
    fix: str | None = None  # None: the rule's usual fix
    severity: Severity | None = None  # None: the rule's usual severity


# --- reading the document --------------------------------------------------------------------


def _dict(value: object) -> dict[str, object]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class _Task:
    data: dict[str, object]
    capacity_providers: frozenset[str]

    @property
    def containers(self) -> list[dict[str, object]]:
        return [_dict(c) for c in _list(self.data.get("containerDefinitions"))]


@dataclass(frozen=True, slots=True)
class _Container:
    data: dict[str, object]
    task: _Task
    runs_runtime: bool  # fargate-runtime is its process: its settings are checked

    @property
    def environment(self) -> list[tuple[int, str, str]]:
        """(index, name, value) of each well-formed ``environment`` entry."""
        found = []
        for index, item in enumerate(_list(self.data.get("environment"))):
            name, value = _dict(item).get("name"), _dict(item).get("value")
            if isinstance(name, str):
                found.append((index, name, "" if value is None else str(value)))
        return found

    @property
    def essential(self) -> bool:
        return self.data.get("essential", True) is not False  # ECS's default is true


def _mentions_runtime(container: dict[str, object]) -> bool:
    words = _list(container.get("entryPoint")) + _list(container.get("command"))
    env = _list(container.get("environment"))
    return any("fargate-runtime" in str(w) for w in words) or any(
        str(_dict(e).get("name", "")).startswith(ENV_PREFIX) for e in env
    )


# --- task-level rules ----------------------------------------------------------------------


def _fargate_and_network(task: _Task) -> Iterator[_Problem]:
    compatibilities = [str(c).upper() for c in _list(task.data.get("requiresCompatibilities"))]
    if "FARGATE" not in compatibilities:
        shown = compatibilities or "missing"
        yield _Problem(
            "fargate-compatible",
            ".requiresCompatibilities",
            f"requiresCompatibilities is {shown}: Fargate will not run this task",
        )
    mode = task.data.get("networkMode")
    if mode != "awsvpc":
        yield _Problem(
            "network-mode", ".networkMode", f"networkMode is {mode!r}: Fargate supports only awsvpc"
        )


def _cpu_memory(task: _Task) -> Iterator[_Problem]:
    cpu, memory = task.data.get("cpu"), task.data.get("memory")
    cpu_units, memory_mib = parse_cpu_units(cpu), parse_memory_mib(memory)
    if cpu_units is None or cpu_units not in FARGATE_SIZES:
        valid = ", ".join(str(c) for c in FARGATE_SIZES)
        yield _Problem(
            "cpu-memory",
            ".cpu",
            f"task cpu {cpu!r} is not a Fargate size",
            f'set "cpu" to one of {valid} (CPU units; 1024 = 1 vCPU)',
        )
    elif memory_mib not in allowed_memory_mib(cpu_units):
        shown = ", ".join(str(m) for m in allowed_memory_mib(cpu_units))
        other = [str(c) for c, sizes in FARGATE_SIZES.items() if memory_mib in sizes]
        alternative = f', or "cpu" to {_one_of(other)}' if other else ""
        yield _Problem(
            "cpu-memory",
            ".memory",
            f"task memory {memory!r} MiB is not valid with cpu {cpu_units} on Fargate",
            f'set "memory" to one of {shown}{alternative}',
        )


def _one_of(values: list[str]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def _windows_spot(task: _Task) -> Iterator[_Problem]:
    # Fargate Spot runs Linux tasks, x86_64 (platform 1.3.0+) and ARM64 (1.4.0+; the ECS API
    # reference, CapacityProviderStrategyItem): Graviton and Spot discounts combine. Windows
    # containers have no Spot.
    family = str(_dict(task.data.get("runtimePlatform")).get("operatingSystemFamily", "LINUX"))
    if family.upper().startswith("WINDOWS") and "FARGATE_SPOT" in task.capacity_providers:
        yield _Problem(
            "windows-spot",
            ".runtimePlatform.operatingSystemFamily",
            f"{family} on the FARGATE_SPOT capacity provider: Fargate Spot runs Linux tasks "
            "only, so these tasks never start",
        )


def _execution_role(task: _Task) -> Iterator[_Problem]:
    if task.data.get("executionRoleArn"):
        return
    needs = set()
    for container in task.containers:
        if container.get("secrets"):
            needs.add("secrets")
        if _dict(container.get("logConfiguration")).get("logDriver") == "awslogs":
            needs.add("awslogs")
        if ".dkr.ecr." in str(container.get("image", "")):
            needs.add("an ECR image")
    if needs:
        yield _Problem(
            "execution-role",
            ".executionRoleArn",
            f"no executionRoleArn, but the task uses {', '.join(sorted(needs))}: it cannot start",
        )


def _essential(task: _Task) -> Iterator[_Problem]:
    if not any(c.get("essential", True) is not False for c in task.containers):
        yield _Problem(
            "essential-container",
            ".containerDefinitions",
            "no container is essential: ECS refuses such a task",
        )


# --- container rules -----------------------------------------------------------------------


def _image(c: _Container) -> Iterator[_Problem]:
    image = c.data.get("image")
    problem = image_problem(image) if isinstance(image, str) else (_E, "no image")
    if problem is not None:
        yield _Problem("image-pinned", ".image", problem[1], severity=problem[0])


def _user(c: _Container) -> Iterator[_Problem]:
    user = c.data.get("user")
    if user is None:
        message = "no user: it runs as whatever user the image says"
        yield _Problem("non-root-user", ".user", message, severity=_W)
    elif str(user).split(":", 1)[0] in {"0", "root"}:
        yield _Problem("non-root-user", ".user", f"runs as root ({user!r})")


def _filesystem(c: _Container) -> Iterator[_Problem]:
    if c.data.get("readonlyRootFilesystem") is not True:
        yield _Problem(
            "readonly-rootfs", ".readonlyRootFilesystem", "the root filesystem is writable"
        )
        return
    volumes = {_dict(v).get("name") for v in _list(c.task.data.get("volumes"))}
    mounts = [_dict(m) for m in _list(c.data.get("mountPoints"))]
    if not any(
        m.get("containerPath") == TMP_PATH and m.get("sourceVolume") in volumes for m in mounts
    ):
        yield _Problem(
            "tmp-volume",
            ".mountPoints",
            "read-only root filesystem and no volume at /tmp: tempfile will fail",
        )


def _init_process(c: _Container) -> Iterator[_Problem]:
    if _dict(c.data.get("linuxParameters")).get("initProcessEnabled") is not True:
        yield _Problem(
            "init-process",
            ".linuxParameters.initProcessEnabled",
            "no init process: zombie subprocesses are never reaped",
        )


def _secrets(c: _Container) -> Iterator[_Problem]:
    for index, name, value in c.environment:
        reason = plaintext_secret(name, value)
        if reason is not None:
            yield _Problem(
                "plaintext-secret",
                f".environment[{index}]",
                f"{name} looks like a plaintext secret ({reason})",
                f'move {name} to "secrets" with a valueFrom (Secrets Manager or SSM parameter ARN)',
            )


def _logs(c: _Container) -> Iterator[_Problem]:
    logs = _dict(c.data.get("logConfiguration"))
    if not logs.get("logDriver"):
        yield _Problem("log-configuration", ".logConfiguration", "no log driver: logs are lost")
    elif logs["logDriver"] == "awslogs":
        options = _dict(logs.get("options"))
        # awslogs-stream-prefix is required on Fargate; group and region everywhere.
        wanted = ("awslogs-group", "awslogs-region", "awslogs-stream-prefix")
        missing = [key for key in wanted if not options.get(key)]
        if missing:
            yield _Problem(
                "log-configuration",
                ".logConfiguration.options",
                f"awslogs without {', '.join(missing)}",
                f"add {', '.join(missing)} to the awslogs options",
            )


def _health(c: _Container) -> Iterator[_Problem]:
    if not c.essential:
        return
    check = c.data.get("healthCheck")
    if not isinstance(check, dict):
        yield _Problem("health-check", ".healthCheck", "no healthCheck: a hung process stays")
        return
    check = _dict(check)
    command = [str(word) for word in _list(check.get("command"))]
    if len(command) < 2 or command[0] not in {"CMD", "CMD-SHELL"}:
        yield _Problem(
            "health-check",
            ".healthCheck.command",
            f"healthCheck command {command} does not start with CMD or CMD-SHELL",
            'use ["CMD", "fargate-runtime", "healthcheck"]',
        )
    for key, (low, high) in HEALTH_CHECK_RANGES.items():
        value = check.get(key)
        if value is not None and not (isinstance(value, int) and low <= value <= high):
            yield _Problem(
                "health-check",
                f".healthCheck.{key}",
                f"healthCheck {key} {value!r} is outside {low}..{high}",
                f"set {key} between {low} and {high}",
            )
    if "startPeriod" not in check:
        yield _Problem(
            "health-check-start-period",
            ".healthCheck.startPeriod",
            "no startPeriod: checks failing during start count against the task",
        )
    words = " ".join(command)
    names = {name for _, name, _ in c.environment}
    told = "--port" in words or f"{ENV_PREFIX}HEALTH_PORT" in names
    if "fargate-runtime healthcheck" in words and not told:
        yield _Problem(
            "health-check-port",
            ".environment",
            f"the health check relies on the image's {ENV_PREFIX}HEALTH_PORT",
        )


class _EnvironmentOnlySettings(RuntimeSettings):
    """RuntimeSettings read from the task definition only, never from the linter's own env."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _stop_timeout(c: _Container) -> Iterator[_Problem]:
    raw = c.data.get("stopTimeout")
    if raw is not None and not (isinstance(raw, int) and 0 <= raw <= ECS_MAX_STOP_TIMEOUT_SECONDS):
        yield _Problem(
            "stop-timeout-range",
            ".stopTimeout",
            f"stopTimeout {raw!r} is outside 0..{ECS_MAX_STOP_TIMEOUT_SECONDS} s",
        )
        return
    if not c.runs_runtime:
        return
    # Load the settings exactly as the runtime will at start, from this container's env only.
    overrides = {
        name.removeprefix(ENV_PREFIX).lower(): value
        for _, name, value in c.environment
        if name.startswith(ENV_PREFIX)
    }
    try:
        check_environment({name: value for _, name, value in c.environment})
        settings = load_settings(_EnvironmentOnlySettings, **overrides)
    except ConfigurationError as exc:
        yield _Problem("runtime-settings", ".environment", f"the runtime would exit 78: {exc}")
        return
    given = raw if isinstance(raw, int) else ECS_DEFAULT_STOP_TIMEOUT_SECONDS
    where = "stopTimeout" if raw is not None else "ECS's default stopTimeout, none is set"
    planned, name = settings.stop_timeout_seconds, f"{ENV_PREFIX}STOP_TIMEOUT_SECONDS"
    if planned > given:
        yield _Problem(
            "stop-timeout-budget",
            ".stopTimeout",
            f"the runtime plans a {planned:g} s shutdown ({name}) but ECS sends "
            f"SIGKILL after {given} s ({where}): the drain is cut mid-work",
            f"set stopTimeout to {planned:g}, or {name} to {given}",
        )
    elif planned < given:
        yield _Problem(
            "stop-timeout-mismatch",
            ".stopTimeout",
            f"ECS waits {given} s ({where}) but the runtime plans for {planned:g} s "
            f"({name}): {given - planned:g} s of drain time go unused",
            f"set {name} to {given} in environment",
        )


_TASK_RULES: tuple[Callable[[_Task], Iterator[_Problem]], ...] = (
    _fargate_and_network,
    _cpu_memory,
    _windows_spot,
    _execution_role,
    _essential,
)
_CONTAINER_RULES: tuple[Callable[[_Container], Iterator[_Problem]], ...] = (
    _image,
    _user,
    _filesystem,
    _init_process,
    _secrets,
    _logs,
    _health,
    _stop_timeout,
)


def _finding(problem: _Problem, root: str, prefix: str = "") -> Finding:
    rule = RULES_BY_ID[problem.rule]
    return Finding(
        rule=rule.id,
        severity=problem.severity or rule.severity,
        path=root + problem.path,
        message=prefix + problem.message,
        fix=problem.fix or rule.fix,
    )


def check_task_definition(
    document: object, *, capacity_providers: Collection[str] = ()
) -> list[Finding]:
    """Lint one task definition (register-task-definition JSON, or describe output).

    ``capacity_providers`` says where the task will run (e.g. ``{"FARGATE_SPOT"}``): nothing in a
    task definition tells whether it runs on Spot.
    """
    root = "$"
    if isinstance(document, dict) and isinstance(document.get("taskDefinition"), dict):
        document, root = document["taskDefinition"], "$.taskDefinition"
    task = _Task(_dict(document), frozenset(p.upper() for p in capacity_providers))
    if not isinstance(document, dict) or not task.containers:
        what = "an object" if isinstance(document, dict) else f"a JSON {type(document).__name__}"
        problem = _Problem("task-definition", "", f"{what} without containerDefinitions")
        return [_finding(problem, root)]
    findings = [_finding(p, root) for rule in _TASK_RULES for p in rule(task)]
    # The runtime's settings are checked in the containers that run it: those with
    # FARGATE_RUNTIME_* settings or the console script; failing any, the essential ones.
    runtime = [_mentions_runtime(c) for c in task.containers]
    if not any(runtime):
        runtime = [c.get("essential", True) is not False for c in task.containers]
    for index, (data, runs_runtime) in enumerate(zip(task.containers, runtime, strict=True)):
        container = _Container(data, task, runs_runtime)
        prefix = f"container {data.get('name', index)!r}: "
        at = f"{root}.containerDefinitions[{index}]"
        findings += [_finding(p, at, prefix) for rule in _CONTAINER_RULES for p in rule(container)]
    return findings
