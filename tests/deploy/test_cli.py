"""`fargate-runtime check-taskdef` and `fargate-runtime size` as CI runs them: real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = [str(REPO / "deploy" / f"{name}.taskdef.json") for name in ("sqs_worker", "http_api")]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script's module with this interpreter and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "fargate_runtime.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, object], str]:
    """Write a task definition (a dict, or raw text) to a file and return its path."""

    def _write(name: str, content: object) -> str:
        path = tmp_path / name
        text = content if isinstance(content, str) else json.dumps(content)
        path.write_text(text, encoding="utf-8")
        return str(path)

    return _write


def worker() -> dict[str, Any]:
    """The worker template as a dict."""
    document: dict[str, Any] = json.loads(Path(TEMPLATES[0]).read_text(encoding="utf-8"))
    return document


def test_templates_exit_0() -> None:
    """Both templates are ok, on the capacity providers they are meant for."""
    result = cli("check-taskdef", "--capacity-provider", "FARGATE", *TEMPLATES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok\n") == 2
    assert result.stdout.endswith("2 files checked: 0 errors, 0 warnings\n")


def test_error_exits_1_with_rule_path_and_fix(write: Callable[[str, object], str]) -> None:
    """An error prints its severity, rule id, JSON path, message and fix, and exits 1."""
    task = worker()
    task["containerDefinitions"][0]["stopTimeout"] = 60
    result = cli("check-taskdef", write("bad.json", task))
    assert result.returncode == 1
    first, fix = result.stdout.splitlines()[:2]
    assert "error [stop-timeout-budget] $.containerDefinitions[0].stopTimeout:" in first
    assert fix.strip().startswith("fix: set stopTimeout to 120")


def test_json_output_for_ci(write: Callable[[str, object], str]) -> None:
    """--json prints one document with every finding and the exit code."""
    task = worker()
    task["cpu"] = "300"
    path = write("bad.json", task)
    result = cli("check-taskdef", "--json", path, TEMPLATES[0])
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["exit_code"] == 1
    assert report["errors"] == 1
    assert report["files"][0]["findings"][0]["rule"] == "cpu-memory"
    assert set(report["files"][0]["findings"][0]) == {"rule", "severity", "path", "message", "fix"}
    assert report["files"][1] == {"file": TEMPLATES[0], "findings": []}


def test_arm64_templates_pass_on_spot(write: Callable[[str, object], str]) -> None:
    """Both ARM64 templates pass on FARGATE_SPOT; a Windows task there is an error."""
    result = cli("check-taskdef", "--capacity-provider", "fargate_spot", *TEMPLATES)
    assert result.returncode == 0, result.stdout
    task = worker()
    task["runtimePlatform"]["operatingSystemFamily"] = "WINDOWS_SERVER_2022_CORE"
    windows = cli("check-taskdef", "--capacity-provider", "FARGATE_SPOT", write("w.json", task))
    assert windows.returncode == 1
    assert "[windows-spot]" in windows.stdout


def test_warnings_fail_only_when_strict(write: Callable[[str, object], str]) -> None:
    """A warning alone exits 0, and 1 with --strict."""
    task = worker()
    task["containerDefinitions"][0]["image"] = "acme/worker:1.4.2"
    path = write("warn.json", task)
    assert cli("check-taskdef", path).returncode == 0
    strict = cli("check-taskdef", "--strict", path)
    assert strict.returncode == 1
    assert "warning [image-pinned]" in strict.stdout


def test_ignore_skips_a_rule(write: Callable[[str, object], str]) -> None:
    """--ignore RULE drops that rule's findings; an unknown rule id is a usage error."""
    task = worker()
    task["containerDefinitions"][0]["image"] = "acme/worker"
    path = write("latest.json", task)
    assert cli("check-taskdef", path).returncode == 1
    assert cli("check-taskdef", "--ignore", "image-pinned", path).returncode == 0
    unknown = cli("check-taskdef", "--ignore", "no-such-rule", path)
    assert unknown.returncode == 2
    assert "unknown rule no-such-rule" in unknown.stderr


def test_missing_file_exits_2_readably(tmp_path: Path) -> None:
    """A missing file is one readable line on stderr and exit 2, not a traceback."""
    result = cli("check-taskdef", str(tmp_path / "nope.json"), TEMPLATES[0])
    assert result.returncode == 2
    missing = tmp_path / "nope.json"
    assert result.stderr == f"check-taskdef: cannot read {missing}: No such file or directory\n"
    assert ": ok" in result.stdout  # the other files are still checked


def test_non_json_exits_2_readably(write: Callable[[str, object], str]) -> None:
    """A file that is not JSON says where it stops being JSON, and exits 2."""
    path = write("broken.json", '{"family": "x",\n  "cpu": }')
    result = cli("check-taskdef", path)
    assert result.returncode == 2
    assert f"{path} is not JSON: Expecting value at line 2 column 10" in result.stderr
    assert "Traceback" not in result.stderr
    as_json = cli("check-taskdef", "--json", path)
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["files"][0]["unreadable"].startswith(path)


def test_reads_stdin() -> None:
    """`-` reads the task definition from stdin (for `aws ecs describe-task-definition | ...`)."""
    described = json.dumps({"taskDefinition": worker()})
    result = cli("check-taskdef", "-", stdin=described)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("-: ok")


def test_no_file_is_a_usage_error() -> None:
    """Without FILE (and without --list-rules) the command exits 2."""
    assert cli("check-taskdef").returncode == 2


def test_list_rules() -> None:
    """--list-rules prints every rule id with its severity."""
    from fargate_runtime.deploy.taskdef import RULES

    result = cli("check-taskdef", "--list-rules")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == [rule.id for rule in RULES]


def test_size_text() -> None:
    """45% of one core and 700 MiB, with 30% headroom, needs 1 vCPU / 2 GB."""
    result = cli("size", "--cpu-percent", "45", "--memory-mib", "700")
    assert result.returncode == 0, result.stderr
    assert 'task definition: "cpu": "1024", "memory": "2048"' in result.stdout
    assert "X86_64 $0.04937/hour, $36.04/month" in result.stdout
    assert "ARM64  $0.03950/hour" in result.stdout
    assert "2026" in result.stdout  # the prices say when they were read


def test_size_json_relative_to_the_task() -> None:
    """--vcpu makes the percentage one of the task's size, as CloudWatch reports it."""
    measured = ["--cpu-percent", "80", "--memory-mib", "3000", "--vcpu", "2"]
    result = cli("size", *measured, "--headroom", "0", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["needed"]["vcpu"] == pytest.approx(1.6)
    assert report["size"] == {"cpu": 2048, "memory": 4096}


def test_size_too_large_exits_1() -> None:
    """A peak no Fargate task holds exits 1 and says to split the work."""
    result = cli("size", "--cpu-percent", "1500", "--memory-mib", "1000")
    assert result.returncode == 1
    assert "split the work" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--cpu-percent", "-5", "--memory-mib", "100"],
        ["--cpu-percent", "ten", "--memory-mib", "100"],
        ["--cpu-percent", "10", "--memory-mib", "100", "--vcpu", "0"],
        ["--memory-mib", "100"],
    ],
)
def test_size_bad_arguments_exit_2(args: list[str]) -> None:
    """Negative, non-numeric, zero --vcpu or missing arguments are usage errors (exit 2)."""
    result = cli("size", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
