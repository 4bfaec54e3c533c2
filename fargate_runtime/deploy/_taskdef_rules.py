"""The task-definition checklist: rule ids, severities, findings, and what secrets and
unpinned images look like (the catalogue ``fargate_runtime.deploy.taskdef`` checks against)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ..settings import ENV_PREFIX

__all__ = [
    "ECS_DEFAULT_STOP_TIMEOUT_SECONDS",
    "ECS_MAX_STOP_TIMEOUT_SECONDS",
    "HEALTH_CHECK_RANGES",
    "RULES",
    "RULES_BY_ID",
    "TMP_PATH",
    "USER_FIX",
    "Finding",
    "Rule",
    "Severity",
    "image_problem",
    "plaintext_secret",
]

# ECS: stopTimeout defaults to 30 s and is at most 120 s on Fargate.
ECS_DEFAULT_STOP_TIMEOUT_SECONDS = 30
ECS_MAX_STOP_TIMEOUT_SECONDS = 120
# ECS container healthCheck ranges (seconds; a count for retries).
HEALTH_CHECK_RANGES = {
    "interval": (5, 300),
    "timeout": (2, 60),
    "retries": (1, 10),
    "startPeriod": (0, 300),
}
TMP_PATH = "/tmp"  # noqa: S108 - the path we ask task definitions to mount, not a file we create
USER_FIX = 'set "user": "10001:10001" (the uid of the fargate-runtime image)'


class Severity(enum.StrEnum):
    """Errors fail the check; warnings fail it only in strict mode."""

    ERROR = "error"
    WARNING = "warning"


_E, _W = Severity.ERROR, Severity.WARNING


@dataclass(frozen=True, slots=True)
class Rule:
    """A checklist item: its id, usual severity, what it asks for and the usual fix."""

    id: str
    severity: Severity
    summary: str
    fix: str


RULES: tuple[Rule, ...] = (
    Rule("task-definition", _E, "the file is a task definition with containerDefinitions",
         "give register-task-definition JSON or describe-task-definition output"),
    Rule("fargate-compatible", _E, "requiresCompatibilities includes FARGATE",
         'set "requiresCompatibilities": ["FARGATE"]'),
    Rule("network-mode", _E, "networkMode is awsvpc, the only mode Fargate has",
         'set "networkMode": "awsvpc"'),
    Rule("cpu-memory", _E, "task cpu and memory are a valid Fargate pair",
         "pick a pair with `fargate-runtime size`"),
    Rule("windows-spot", _E, "no Windows task on FARGATE_SPOT (Spot runs Linux, x86_64 and ARM64)",
         "run Windows tasks on FARGATE only"),
    Rule("execution-role", _E, "an executionRoleArn when secrets, awslogs or ECR need one",
         "add an execution role that may pull the image, write logs and read the secrets"),
    Rule("essential-container", _E, "at least one container is essential",
         'set "essential": true on the main container'),
    Rule("image-pinned", _E, "images pinned by digest or commit tag, never latest",
         "refer to the image by digest (name@sha256:...) or by a git commit tag"),
    Rule("non-root-user", _E, "a non-root user (a warning when left to the image)", USER_FIX),
    Rule("readonly-rootfs", _E, "readonlyRootFilesystem is true",
         'set "readonlyRootFilesystem": true and mount a volume at /tmp'),
    Rule("tmp-volume", _W, "a read-only container has a writable volume at /tmp",
         'add "volumes": [{"name": "tmp"}] and a mountPoint of it at /tmp'),
    Rule("init-process", _W, "linuxParameters.initProcessEnabled (reaps zombies, forwards signals)",
         'set "linuxParameters": {"initProcessEnabled": true}'),
    Rule("plaintext-secret", _E, "no secrets in environment; secrets with valueFrom instead",
         'move it to "secrets" with a valueFrom (a Secrets Manager or SSM parameter ARN)'),
    Rule("log-configuration", _E, "a logConfiguration (awslogs: group, region, stream prefix)",
         'add "logConfiguration": {"logDriver": "awslogs", "options": {...}}'),
    Rule("health-check", _E, "essential containers have a valid healthCheck",
         'add "healthCheck": {"command": ["CMD", "fargate-runtime", "healthcheck"], ...}'),
    Rule("health-check-start-period", _W, "healthCheck has a startPeriod",
         'set "startPeriod" to the start time with a margin (e.g. 15)'),
    Rule("health-check-port", _W, "`fargate-runtime healthcheck` is told the health port",
         f"add {ENV_PREFIX}HEALTH_PORT to environment (the runtime serves /healthz there)"),
    Rule("stop-timeout-range", _E, "stopTimeout is 0..120 s (Fargate's range)",
         f"set stopTimeout to at most {ECS_MAX_STOP_TIMEOUT_SECONDS}"),
    Rule("runtime-settings", _E, "the runtime accepts its FARGATE_RUNTIME_* environment",
         "fix the FARGATE_RUNTIME_* values the message names"),
    Rule("stop-timeout-budget", _E, "the runtime's planned shutdown ends before ECS's SIGKILL",
         f"make stopTimeout and {ENV_PREFIX}STOP_TIMEOUT_SECONDS equal"),
    Rule("stop-timeout-mismatch", _W, "the runtime plans with the stopTimeout ECS gives it",
         f"make stopTimeout and {ENV_PREFIX}STOP_TIMEOUT_SECONDS equal"),
)  # fmt: skip
RULES_BY_ID = {rule.id: rule for rule in RULES}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: which rule, how bad, where (a JSON path), what is wrong and how to fix it."""

    rule: str
    severity: Severity
    path: str
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-ready strings."""
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }


# --- what values look like -----------------------------------------------------------------

# Names: a secret word anywhere, or KEY last; names ending like a pointer are no secret.
_SECRET_WORDS = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIALS", "APIKEY"})
_POINTER_SUFFIXES = frozenset(
    {"ARN", "NAME", "ID", "PATH", "FILE", "URL", "URI", "HEADER", "TTL", "SECONDS", "PREFIX"}
)
_AWS_CREDENTIALS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
# Values: a URL with a password (redis://:pw@host), AWS key ids, private keys, known tokens.
_SECRET_VALUES = (
    (re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE), "URL with a password"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "private key"),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|xox[abposr]-|[sr]k_live_|glpat-)"), "API token"),
    (re.compile(r"\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\."), "JSON web token"),
)
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# A git commit in a tag: 7-40 hex digits with at least one letter and one digit (not a date).
_COMMIT = re.compile(r"(?<![0-9a-f])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![0-9a-f])")


def plaintext_secret(name: str, value: str) -> str | None:
    """Why ``name=value`` looks like a secret, or None; the reason never echoes the value."""
    for pattern, what in _SECRET_VALUES:
        if pattern.search(value):
            return f"its value holds a {what}"
    if name.upper() in _AWS_CREDENTIALS:
        return "static AWS credentials; the task role provides credentials"
    words = re.split(r"[^A-Z0-9]+", name.upper())
    secret_name = bool(_SECRET_WORDS.intersection(words)) or words[-1] == "KEY"
    if value and secret_name and words[-1] not in _POINTER_SUFFIXES:
        return "its name"
    return None


def image_problem(image: str) -> tuple[Severity, str] | None:
    """How ``image`` fails to be pinned (latest, no tag, a movable tag), or None."""
    if _DIGEST.search(image):
        return None
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    if tag is None or tag.lower() == "latest":
        return _E, f"image {image!r} means latest: each new task may run different code"
    if _COMMIT.search(tag):
        return None
    return _W, f"image tag {tag!r} can be moved to other code (no digest, no commit)"
