"""The Terraform starter, parsed with python-hcl2: it agrees with the worker's task definition.

No provider can be downloaded here, so ``terraform validate`` cannot run; these tests read the
configuration itself. ``local.X``, ``var.X`` (defaults) and ``tostring(...)`` of them are resolved;
references to resources stay as ``${...}`` text and are checked as such.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from fargate_runtime.deploy.taskdef import check_task_definition

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TERRAFORM = DEPLOY / "terraform"
Block = dict[str, Any]


class Config:
    """Every block of the module's .tf files, with locals and variable defaults resolved."""

    def __init__(self, directory: Path) -> None:
        options = SerializationOptions(
            strip_string_quotes=True, explicit_blocks=False, with_comments=False
        )
        self.blocks: dict[str, list[Block]] = {}
        for path in sorted(directory.glob("*.tf")):
            with path.open(encoding="utf-8") as handle:
                parsed = hcl2.load(handle, serialization_options=options)
            for kind, blocks in parsed.items():
                self.blocks.setdefault(kind, []).extend(blocks)
        self.variables = {
            name: body.get("default")
            for block in self.blocks["variable"]
            for name, body in block.items()
        }
        self.locals: Block = {}
        for block in self.blocks["locals"]:
            self.locals.update(block)

    def resource(self, kind: str, name: str) -> Block:
        """The body of ``resource "kind" "name"``."""
        for block in self.blocks["resource"]:
            if kind in block and name in block[kind]:
                body: Block = block[kind][name]
                return body
        raise KeyError(f"no resource {kind}.{name}")

    def data(self, kind: str, name: str) -> Block:
        """The body of ``data "kind" "name"``."""
        for block in self.blocks["data"]:
            if kind in block and name in block[kind]:
                body: Block = block[kind][name]
                return body
        raise KeyError(f"no data {kind}.{name}")

    def resolve(self, value: Any) -> Any:
        """``value`` with local/var references (and tostring of them) replaced by their values."""
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, str):
            return value
        whole = re.fullmatch(r"\$\{(.*)\}", value)
        if whole and "${" not in whole.group(1):
            found = self._lookup(whole.group(1))
            return value if found is None else found
        return re.sub(
            r"\$\{([^{}]*)\}",
            lambda m: m.group(0) if (v := self._lookup(m.group(1))) is None else str(v),
            value,
        )

    def _lookup(self, expression: str) -> Any:
        text = expression.strip()
        converted = re.fullmatch(r"tostring\((.*)\)", text)
        if converted:
            inner = self._lookup(converted.group(1))
            return None if inner is None else str(inner)
        scope, _, name = text.partition(".")
        if scope == "local" and name in self.locals:
            return self.resolve(self.locals[name])
        if scope == "var" and self.variables.get(name) is not None:
            return self.resolve(self.variables[name])
        return None


@pytest.fixture(scope="module")
def config() -> Config:
    """The parsed Terraform module."""
    return Config(TERRAFORM)


@pytest.fixture(scope="module")
def taskdef() -> dict[str, Any]:
    """deploy/sqs_worker.taskdef.json."""
    document: dict[str, Any] = json.loads(
        (DEPLOY / "sqs_worker.taskdef.json").read_text(encoding="utf-8")
    )
    return document


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container["environment"]}


def test_container_matches_the_task_definition(config: Config, taskdef: dict[str, Any]) -> None:
    """Terraform's container is the JSON template's, field for field, but for what it injects."""
    container = config.resolve(config.locals["worker_container"])
    template = taskdef["containerDefinitions"][0]
    injected = {"image", "environment", "secrets", "logConfiguration"}
    assert container.keys() == template.keys()
    for key in container.keys() - injected:
        assert container[key] == template[key], key
    assert container["image"] == "${var.image}"
    assert [s["name"] for s in container["secrets"]] == [s["name"] for s in template["secrets"]]
    assert container["secrets"][0]["valueFrom"] == "${var.redis_url_secret_arn}"


def test_stop_timeout_and_runtime_settings_agree(config: Config, taskdef: dict[str, Any]) -> None:
    """stopTimeout 120 in both, and the runtime told the same number in both."""
    container = config.resolve(config.locals["worker_container"])
    template = taskdef["containerDefinitions"][0]
    assert container["stopTimeout"] == template["stopTimeout"] == 120
    assert _env(container)["FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS"] == "120"
    assert _env(template)["FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS"] == "120"


def test_environment_agrees(config: Config, taskdef: dict[str, Any]) -> None:
    """Same variables; same values, but the queue URL, which Terraform takes from the queue."""
    terraform_env = _env(config.resolve(config.locals["worker_container"]))
    template_env = _env(taskdef["containerDefinitions"][0])
    assert terraform_env.keys() == template_env.keys()
    queue = "FARGATE_RUNTIME_SQS_QUEUE_URL"
    assert terraform_env[queue] == "${aws_sqs_queue.main.url}"
    for name in terraform_env.keys() - {queue}:
        assert terraform_env[name] == template_env[name], name


def test_queue_names_agree(config: Config, taskdef: dict[str, Any]) -> None:
    """The template's queue URL names the queue Terraform creates; the DLQ is named after it."""
    main = config.resolve(config.resource("aws_sqs_queue", "main"))
    dlq = config.resolve(config.resource("aws_sqs_queue", "dlq"))
    queue_url = _env(taskdef["containerDefinitions"][0])["FARGATE_RUNTIME_SQS_QUEUE_URL"]
    assert queue_url.rsplit("/", 1)[-1] == main["name"] == "sqs-worker-payments"
    assert dlq["name"] == f"{main['name']}-dlq"
    # The visibility timeout the consumer is told is the queue's own.
    visibility = _env(taskdef["containerDefinitions"][0])
    assert (
        str(main["visibility_timeout_seconds"])
        == visibility["FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS"]
    )


def test_redrive_to_the_dlq(config: Config) -> None:
    """The main queue redrives to the DLQ, which accepts redrives from it only."""
    main = config.resource("aws_sqs_queue", "main")
    assert "deadLetterTargetArn = aws_sqs_queue.dlq.arn" in main["redrive_policy"]
    assert "maxReceiveCount = var.max_receive_count" in main["redrive_policy"]
    allow = config.resource("aws_sqs_queue_redrive_allow_policy", "dlq")
    assert "sourceQueueArns = [aws_sqs_queue.main.arn]" in allow["redrive_allow_policy"]


def test_task_definition_resource_agrees(config: Config, taskdef: dict[str, Any]) -> None:
    """Size, network mode, platform, volume and log group match the JSON template."""
    resource = config.resolve(config.resource("aws_ecs_task_definition", "worker"))
    assert str(resource["cpu"]) == taskdef["cpu"]
    assert str(resource["memory"]) == taskdef["memory"]
    assert resource["network_mode"] == taskdef["networkMode"]
    assert resource["requires_compatibilities"] == taskdef["requiresCompatibilities"]
    platform = resource["runtime_platform"][0]
    assert platform["cpu_architecture"] == taskdef["runtimePlatform"]["cpuArchitecture"]
    assert [v["name"] for v in resource["volume"]] == [v["name"] for v in taskdef["volumes"]]
    assert resource["container_definitions"] == "${jsonencode([local.worker_container])}"
    options = config.resolve(config.locals["worker_container"])["logConfiguration"]["options"]
    template_options = taskdef["containerDefinitions"][0]["logConfiguration"]["options"]
    assert options == template_options
    log_group = config.resolve(config.resource("aws_cloudwatch_log_group", "worker"))
    assert log_group["name"] == template_options["awslogs-group"]


def test_terraform_task_definition_passes_the_linter(config: Config) -> None:
    """The task definition Terraform registers, rebuilt from its HCL, passes check-taskdef."""
    resource = config.resolve(config.resource("aws_ecs_task_definition", "worker"))
    container = config.resolve(config.locals["worker_container"])
    container["image"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/worker:git-1a2b3c4"
    task = {
        "requiresCompatibilities": resource["requires_compatibilities"],
        "networkMode": resource["network_mode"],
        "cpu": str(resource["cpu"]),
        "memory": str(resource["memory"]),
        "runtimePlatform": {"cpuArchitecture": resource["runtime_platform"][0]["cpu_architecture"]},
        "executionRoleArn": resource["execution_role_arn"],
        "volumes": [{"name": v["name"]} for v in resource["volume"]],
        "containerDefinitions": [container],
    }
    assert check_task_definition(task, capacity_providers=["FARGATE", "FARGATE_SPOT"]) == []


def test_service_on_fargate_base_and_spot_weight(config: Config) -> None:
    """On-demand base, Spot by weight, circuit breaker with rollback, autoscaling owns the count."""
    service = config.resolve(config.resource("aws_ecs_service", "worker"))
    strategy = {s["capacity_provider"]: s for s in service["capacity_provider_strategy"]}
    assert strategy.keys() == {"FARGATE", "FARGATE_SPOT"}
    assert strategy["FARGATE"]["base"] >= 1
    assert strategy["FARGATE_SPOT"]["weight"] > 0
    assert "launch_type" not in service  # it would override the strategy
    breaker = service["deployment_circuit_breaker"][0]
    assert breaker == {"enable": True, "rollback": True}
    assert service["lifecycle"][0]["ignore_changes"] == ["desired_count"]
    providers = config.resource("aws_ecs_cluster_capacity_providers", "this")
    assert set(providers["capacity_providers"]) == {"FARGATE", "FARGATE_SPOT"}


def test_target_tracking_on_backlog_per_task(config: Config) -> None:
    """The scaling metric is visible messages of the queue divided by running tasks."""
    policy = config.resource("aws_appautoscaling_policy", "backlog_per_task")
    assert policy["policy_type"] == "TargetTrackingScaling"
    tracking = policy["target_tracking_scaling_policy_configuration"][0]
    metrics = {m["id"]: m for m in tracking["customized_metric_specification"][0]["metrics"]}
    visible = metrics["visible"]["metric_stat"][0]["metric"][0]
    assert visible["metric_name"] == "ApproximateNumberOfMessagesVisible"
    assert visible["dimensions"][0]["value"] == "${aws_sqs_queue.main.name}"
    running = metrics["running"]["metric_stat"][0]["metric"][0]
    assert running["metric_name"] == "RunningTaskCount"
    returned = [m for m in metrics.values() if m["return_data"]]
    assert [m["id"] for m in returned] == ["backlog_per_task"]
    assert "visible / " in returned[0]["expression"]


def test_task_role_only_consumes_its_queue(config: Config) -> None:
    """The task role may consume its own queue and read it, and send to it and its DLQ (copies
    and dead-letter moves), nothing else."""
    statements = config.data("aws_iam_policy_document", "task")["statement"]
    assert len(statements) == 2
    consume, send = statements
    assert sorted(consume["actions"]) == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert consume["resources"] == ["${aws_sqs_queue.main.arn}"]
    assert send["actions"] == ["sqs:SendMessage"]
    assert send["resources"] == ["${aws_sqs_queue.main.arn}", "${aws_sqs_queue.dlq.arn}"]
    for statement in statements:
        assert "effect" not in statement or statement["effect"] == "Allow"


def test_execution_role_is_separate_and_narrow(config: Config) -> None:
    """The execution role pulls, logs and reads the one secret; the two roles are distinct."""
    task = config.resolve(config.resource("aws_ecs_task_definition", "worker"))
    assert task["execution_role_arn"] == "${aws_iam_role.execution.arn}"
    assert task["task_role_arn"] == "${aws_iam_role.task.arn}"
    statements = config.data("aws_iam_policy_document", "execution")["statement"]
    wildcard = [s for s in statements if s["resources"] == ["*"]]
    assert [s["actions"] for s in wildcard] == [["ecr:GetAuthorizationToken"]]
    secrets = next(s for s in statements if s["sid"] == "ReadSecrets")
    assert secrets["resources"] == ["${var.redis_url_secret_arn}"]
    assert not any("sqs:" in action for s in statements for action in s["actions"])


def test_elasticache_parameter_group_never_evicts(config: Config) -> None:
    """The starter's ElastiCache parameter group sets noeviction (idempotency records carry
    TTLs, which ElastiCache's default volatile-lru evicts first), and its name is an output."""
    group = config.resource("aws_elasticache_parameter_group", "idempotency")
    assert group["parameter"] == [{"name": "maxmemory-policy", "value": "noeviction"}]
    assert config.resolve(group["family"]) == "redis7"
    outputs = {name for block in config.blocks["output"] for name in block}
    assert "elasticache_parameter_group_name" in outputs


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_terraform_fmt() -> None:
    """`terraform fmt -check` (offline, unlike validate) finds nothing to reformat."""
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
