"""The task-definition linter: the templates pass, and each rule catches its own mistake."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fargate_runtime.deploy.sizing import FARGATE_SIZES
from fargate_runtime.deploy.taskdef import (
    RULES,
    Severity,
    check_task_definition,
    image_problem,
    plaintext_secret,
)
from fargate_runtime.settings import RuntimeSettings, load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TaskDefinition = dict[str, Any]


def load(name: str) -> TaskDefinition:
    """A task definition template from deploy/."""
    document: TaskDefinition = json.loads((DEPLOY / name).read_text(encoding="utf-8"))
    return document


def worker() -> TaskDefinition:
    """A fresh copy of the worker template, to break one thing in."""
    return copy.deepcopy(load("sqs_worker.taskdef.json"))


def container(task: TaskDefinition) -> dict[str, Any]:
    """The first container definition."""
    first: dict[str, Any] = task["containerDefinitions"][0]
    return first


def set_env(task: TaskDefinition, name: str, value: str | None) -> None:
    """Set (or with None remove) one environment variable of the first container."""
    env = [e for e in container(task)["environment"] if e["name"] != name]
    if value is not None:
        env.append({"name": name, "value": value})
    container(task)["environment"] = env


def rules_of(task: object, *providers: str) -> set[str]:
    """The rule ids that fire on ``task``."""
    return {f.rule for f in check_task_definition(task, capacity_providers=providers)}


@pytest.mark.parametrize(
    ("name", "providers"),
    [
        ("sqs_worker.taskdef.json", ("FARGATE", "FARGATE_SPOT")),
        ("http_api.taskdef.json", ("FARGATE",)),
    ],
)
def test_templates_pass(name: str, providers: tuple[str, ...]) -> None:
    """The task definitions users copy have no finding at all, warnings included."""
    assert check_task_definition(load(name), capacity_providers=providers) == []


def test_worker_template_matches_its_runtime_settings() -> None:
    """stopTimeout 120 and FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS 120 agree in the worker."""
    worker_container = container(load("sqs_worker.taskdef.json"))
    env = {e["name"]: e["value"] for e in worker_container["environment"]}
    assert worker_container["stopTimeout"] == 120
    assert env["FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS"] == "120"


@pytest.mark.parametrize("name", ["sqs_worker.taskdef.json", "http_api.taskdef.json"])
def test_template_environment_loads_in_the_runtime(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each template's environment is accepted by the settings of the parts it configures."""
    from fargate_runtime.http.settings import HttpSettings
    from fargate_runtime.sqs.settings import SqsSettings

    for key in list(os.environ):
        if key.startswith("FARGATE_RUNTIME_"):
            monkeypatch.delenv(key)
    for entry in container(load(name))["environment"]:
        monkeypatch.setenv(entry["name"], entry["value"])
    budget = load_settings(RuntimeSettings).budget()
    assert budget.stop_timeout_seconds == container(load(name))["stopTimeout"]
    if name.startswith("sqs_worker"):
        sqs = load_settings(SqsSettings)
        assert sqs.wait_time_seconds == 20  # a full long poll: shutdown abandons it anyway
        assert sqs.queue_name == "sqs-worker-payments"
    else:
        load_settings(HttpSettings).check_budget(budget)


def _mutate(change: Callable[[TaskDefinition], object]) -> TaskDefinition:
    task = worker()
    change(task)
    return task


def _pop(mapping: dict[str, Any], key: str) -> object:
    return mapping.pop(key)


# One broken task definition per rule: (rule id, how to break the worker template).
BAD: list[tuple[str, Callable[[TaskDefinition], object]]] = [
    ("fargate-compatible", lambda t: t.update(requiresCompatibilities=["EC2"])),
    ("network-mode", lambda t: t.update(networkMode="bridge")),
    ("cpu-memory", lambda t: t.update(cpu="256", memory="4096")),
    ("execution-role", lambda t: _pop(t, "executionRoleArn")),
    ("essential-container", lambda t: container(t).update(essential=False)),
    ("image-pinned", lambda t: container(t).update(image="public.ecr.aws/acme/worker:latest")),
    ("non-root-user", lambda t: container(t).update(user="0:0")),
    ("readonly-rootfs", lambda t: container(t).update(readonlyRootFilesystem=False)),
    ("tmp-volume", lambda t: _pop(container(t), "mountPoints")),
    ("init-process", lambda t: _pop(container(t), "linuxParameters")),
    (
        "plaintext-secret",
        lambda t: set_env(t, "REDIS_URL", "rediss://default:s3cr3t-pw@cache.example.com:6379"),
    ),
    ("log-configuration", lambda t: _pop(container(t), "logConfiguration")),
    ("health-check", lambda t: _pop(container(t), "healthCheck")),
    ("health-check-start-period", lambda t: _pop(container(t)["healthCheck"], "startPeriod")),
    ("health-check-port", lambda t: set_env(t, "FARGATE_RUNTIME_HEALTH_PORT", None)),
    ("stop-timeout-range", lambda t: container(t).update(stopTimeout=300)),
    ("runtime-settings", lambda t: set_env(t, "FARGATE_RUNTIME_DRAIN_SECONDS", "200")),
    ("stop-timeout-budget", lambda t: container(t).update(stopTimeout=60)),
    ("stop-timeout-mismatch", lambda t: set_env(t, "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS", "60")),
]


@pytest.mark.parametrize(("rule", "change"), BAD, ids=[rule for rule, _ in BAD])
def test_each_rule_catches_its_mistake(
    rule: str, change: Callable[[TaskDefinition], object]
) -> None:
    """Breaking one thing in the worker template fires exactly that thing's rule."""
    assert rules_of(_mutate(change), "FARGATE_SPOT") == {rule}


def test_not_a_task_definition() -> None:
    """JSON that is no task definition is one task-definition error, not a crash."""
    assert rules_of({"family": "x"}) == {"task-definition"}
    assert rules_of([1, 2]) == {"task-definition"}
    assert rules_of({"containerDefinitions": "nope"}) == {"task-definition"}


def test_arm64_runs_on_spot_and_windows_does_not() -> None:
    """ARM64 on FARGATE_SPOT is fine (platform 1.4.0+); Windows there is refused."""
    task = worker()
    task["runtimePlatform"]["cpuArchitecture"] = "ARM64"
    assert rules_of(task, "FARGATE_SPOT") == set()
    task["runtimePlatform"]["operatingSystemFamily"] = "WINDOWS_SERVER_2022_CORE"
    assert rules_of(task, "FARGATE") == set()
    assert rules_of(task, "fargate_spot") == {"windows-spot"}


def test_every_rule_has_a_bad_example() -> None:
    """The list of broken task definitions covers every rule."""
    covered = {rule for rule, _ in BAD} | {"task-definition", "windows-spot"}
    assert covered == {rule.id for rule in RULES}


def test_runtime_settings_message_is_the_runtimes_own() -> None:
    """The finding quotes the ConfigurationError the runtime itself raises at start."""
    task = _mutate(lambda t: set_env(t, "FARGATE_RUNTIME_DRAIN_SECONDS", "200"))
    (finding,) = check_task_definition(task)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the runtime's own error, whatever it is
        load_settings(RuntimeSettings, stop_timeout_seconds=120, drain_seconds=200)
    assert str(raised.value) in finding.message
    assert finding.path == "$.containerDefinitions[0].environment"


def test_an_unknown_runtime_variable_is_the_runtimes_refusal() -> None:
    """A typo'd FARGATE_RUNTIME_* variable is reported as the exit 78 the task would meet."""
    task = _mutate(lambda t: set_env(t, "FARGATE_RUNTIME_SQS_CONCURENCY", "20"))
    (finding,) = check_task_definition(task)
    assert finding.rule == "runtime-settings"
    assert "did you mean FARGATE_RUNTIME_SQS_CONCURRENCY?" in finding.message


def test_absent_stop_timeout_means_the_ecs_default() -> None:
    """No stopTimeout is 30 s: a runtime planning 120 s would be SIGKILLed mid-drain."""
    task = _mutate(lambda t: _pop(container(t), "stopTimeout"))
    (finding,) = check_task_definition(task)
    assert finding.rule == "stop-timeout-budget"
    assert finding.severity is Severity.ERROR
    assert "after 30 s (ECS's default stopTimeout" in finding.message
    assert finding.fix == "set stopTimeout to 120, or FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS to 30"


def test_runtime_defaults_fit_the_ecs_default() -> None:
    """Neither stopTimeout nor runtime settings: 30 s on both sides, nothing to report."""
    task = worker()
    _pop(container(task), "stopTimeout")
    set_env(task, "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS", None)
    assert rules_of(task) == set()


def test_linter_ignores_its_own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings in the linter's process environment never leak into the task's settings."""
    monkeypatch.setenv("FARGATE_RUNTIME_DRAIN_SECONDS", "500")
    monkeypatch.setenv("FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS", "5")
    assert rules_of(load("sqs_worker.taskdef.json")) == set()


def test_sidecar_without_runtime_settings_is_not_budget_checked() -> None:
    """A sidecar (no FARGATE_RUNTIME_* env) keeps its own stopTimeout without a budget finding."""
    task = worker()
    sidecar = copy.deepcopy(container(task))
    sidecar.update(name="otel-collector", essential=False, stopTimeout=5, command=["--config=x"])
    sidecar["environment"] = []
    task["containerDefinitions"].append(sidecar)
    assert check_task_definition(task, capacity_providers=["FARGATE"]) == []


def test_findings_name_the_container_and_path() -> None:
    """Paths are JSON paths into the file; messages say which container."""
    task = _mutate(lambda t: container(t).update(user="root"))
    (finding,) = check_task_definition(task)
    assert finding.path == "$.containerDefinitions[0].user"
    assert finding.message.startswith("container 'worker': ")
    assert finding.fix
    assert finding.as_dict()["severity"] == "error"


def test_describe_output_is_unwrapped() -> None:
    """`aws ecs describe-task-definition` output is checked too, with paths into it."""
    task = _mutate(lambda t: t.update(networkMode="host"))
    (finding,) = check_task_definition({"taskDefinition": task, "tags": []})
    assert finding.path == "$.taskDefinition.networkMode"


def test_missing_user_is_a_warning() -> None:
    """No user: the image decides, which the linter cannot see, so only a warning."""
    task = _mutate(lambda t: _pop(container(t), "user"))
    (finding,) = check_task_definition(task)
    assert (finding.rule, finding.severity) == ("non-root-user", Severity.WARNING)


def test_health_check_ranges() -> None:
    """Values ECS refuses (interval below 5 s, retries above 10) are errors."""
    task = worker()
    container(task)["healthCheck"].update(interval=1, retries=11)
    paths = {f.path for f in check_task_definition(task)}
    assert paths == {
        "$.containerDefinitions[0].healthCheck.interval",
        "$.containerDefinitions[0].healthCheck.retries",
    }


@pytest.mark.parametrize(("cpu", "memories"), list(FARGATE_SIZES.items()))
def test_every_fargate_pair_is_valid(cpu: int, memories: tuple[int, ...]) -> None:
    """Each pair of the Fargate table passes; a memory between two steps does not."""

    def sized(memory: int) -> TaskDefinition:
        task = worker()
        task.update(cpu=str(cpu), memory=str(memory))
        return task

    for memory in memories:
        assert rules_of(sized(memory)) == set()
    assert rules_of(sized(memories[0] + 256)) == {"cpu-memory"}  # never a whole GB


@pytest.mark.parametrize(
    ("cpu", "memory", "valid"),
    [
        ("1 vCPU", "2 GB", True),
        ("0.25 vCPU", "0.5GB", True),
        (4096, 30720, True),
        ("4096", "31744", False),  # 31 GB: above 4 vCPU's 30 GB
        ("8192", "20480", True),
        ("8192", "18432", False),  # 18 GB: not a 4 GB step
        ("16384", "40960", True),
        ("16384", "36864", False),  # 36 GB: not an 8 GB step
        ("128", "512", False),
        (None, "512", False),
    ],
)
def test_cpu_memory_forms(cpu: object, memory: object, valid: bool) -> None:
    """Numbers, strings and the "1 vCPU" / "2 GB" forms ECS accepts are read alike."""
    task = _mutate(lambda t: t.update(cpu=cpu, memory=memory))
    assert rules_of(task) == (set() if valid else {"cpu-memory"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_PASSWORD", "hunter2"),
        ("STRIPE_API_KEY", "abc"),
        ("github_token", "abc"),
        ("JWT_SECRET", "x"),
        ("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKLMNOP"),
        ("CACHE", "redis://:pw@cache:6379/0"),
        ("NOTE", "-----BEGIN RSA PRIVATE KEY-----"),
        ("HOOK", "xoxb-123-456"),
        ("CLIENT_CREDENTIALS", "id:secret"),
    ],
)
def test_plaintext_secrets_found(name: str, value: str) -> None:
    """Secret-looking names and credential-looking values are found, the value never echoed."""
    reason = plaintext_secret(name, value)
    assert reason is not None
    assert value not in reason


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FARGATE_RUNTIME_SQS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q"),
        ("STRIPE_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:s"),
        ("TOKEN_URL", "https://auth.example.com/token"),
        ("IDEMPOTENCY_KEY_HEADER", "Idempotency-Key"),
        ("DB_PASSWORD", ""),
        ("REDIS_URL", "redis://cache:6379/0"),
        ("SORT_ORDER", "asc"),
    ],
)
def test_plain_values_are_not_secrets(name: str, value: str) -> None:
    """Pointers to secrets, empty values and password-less URLs are fine."""
    assert plaintext_secret(name, value) is None


@pytest.mark.parametrize(
    ("image", "severity"),
    [
        ("123.dkr.ecr.us-east-1.amazonaws.com/app@sha256:" + "ab" * 32, None),
        ("registry:5000/team/app:git-1a2b3c4", None),
        ("app:1.4.2-3f9c2ab1", None),
        ("app:3f9c2ab", None),
        ("app", Severity.ERROR),
        ("registry:5000/app", Severity.ERROR),
        ("app:LATEST", Severity.ERROR),
        ("app:1.4.2", Severity.WARNING),
        ("app:20260101", Severity.WARNING),
        ("app:deadbeef", Severity.WARNING),
    ],
)
def test_image_pinning(image: str, severity: Severity | None) -> None:
    """Digests and commit tags are pinned; latest or no tag is an error; a bare tag a warning."""
    problem = image_problem(image)
    assert (problem[0] if problem else None) == severity
