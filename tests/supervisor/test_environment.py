"""Unknown ``FARGATE_RUNTIME_*`` variables: refused at start with the closest known setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fargate_runtime.errors import ConfigurationError
from fargate_runtime.lifecycle import ExitCode
from fargate_runtime.settings import (
    ENV_PREFIX,
    RETIRED_VARIABLES,
    check_environment,
    known_variables,
)
from tests.docs.test_settings_documented import settings_models, variable
from tests.processes import Child, runtime_argv

PACKAGE = Path(__file__).resolve().parents[2] / "fargate_runtime"


def test_a_typo_is_refused_naming_the_closest_setting() -> None:
    """``..._SQS_VISIBILITY_TIMEOUT`` (no ``_SECONDS``) is refused, pointing at the real one."""
    with pytest.raises(ConfigurationError) as caught:
        check_environment({"FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT": "30", "HOME": "/root"})
    message = str(caught.value)
    assert "FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT " in message
    assert "did you mean FARGATE_RUNTIME_SQS_VISIBILITY_TIMEOUT_SECONDS?" in message
    assert "\n" not in message


def test_every_unknown_variable_is_named_once() -> None:
    """Two unknown names are both named, in one message."""
    with pytest.raises(ConfigurationError, match="unknown settings") as caught:
        check_environment({"FARGATE_RUNTIME_LOGLEVEL": "x", "FARGATE_RUNTIME_SQS_BATCH_SIZE": "20"})
    message = str(caught.value)
    assert message.count("FARGATE_RUNTIME_LOGLEVEL") == 1
    assert "did you mean FARGATE_RUNTIME_LOG_LEVEL?" in message
    assert "FARGATE_RUNTIME_SQS_BATCH_SIZE (did you mean FARGATE_RUNTIME_SQS_" in message


def test_known_names_pass_in_any_case_and_other_variables_are_ignored() -> None:
    """Every setting's variable passes (also in lower case, as settings read it); others pass."""
    environ = dict.fromkeys(known_variables(), "1")
    environ["fargate_runtime_log_level"] = "INFO"
    environ["PAYMENTS_LEDGER_PATH"] = "x"
    check_environment(environ)


def test_a_retired_setting_is_a_warning_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """A removed setting still starts the process, with one line saying why it does nothing."""
    (retired,) = RETIRED_VARIABLES
    check_environment({retired: "true"})
    assert [r.getMessage() for r in caplog.records if retired in r.getMessage()] != []


def test_every_settings_model_and_literal_variable_is_known() -> None:
    """No settings model or ``FARGATE_RUNTIME_*`` literal of the package is missing from the
    known names (a new model or variable would otherwise be refused at every start)."""
    known = known_variables()
    for model in settings_models():
        if str(model.model_config.get("env_prefix", "")).startswith(ENV_PREFIX):
            for field in model.model_fields:
                assert variable(model, field) in known, (model, field)
    literals = set()
    for path in PACKAGE.rglob("*.py"):
        literals |= set(re.findall(r'"(FARGATE_RUNTIME_[A-Z0-9_]*[A-Z0-9])"', path.read_text()))
    missing = {name for name in literals if name not in known and name not in RETIRED_VARIABLES}
    assert missing == set()


@pytest.mark.process
def test_a_worker_with_a_typo_exits_78_with_one_line() -> None:
    """``fargate-runtime run`` with ``FARGATE_RUNTIME_SQS_BATCH_SIZE=20`` exits 78 before
    anything starts, with one JSON line naming the variable and no traceback."""
    env = {
        "FARGATE_RUNTIME_SQS_QUEUE_URL": "http://127.0.0.1:9/000000000000/never-used",
        "FARGATE_RUNTIME_SQS_BATCH_SIZE": "20",
    }
    with Child(runtime_argv("examples.sqs_worker.app:app"), env=env) as worker:
        code = worker.wait(timeout=30)
    assert code == ExitCode.CONFIGURATION, worker.output()
    (line,) = [line for line in worker.lines if line.get("level") == "CRITICAL"]
    assert "FARGATE_RUNTIME_SQS_BATCH_SIZE" in line["message"]
    assert "Traceback" not in worker.output()


def test_checking_the_variables_imports_no_consumer_and_no_http_server() -> None:
    """The check at every start reads the settings models only: an HTTP API's process loads no
    aioboto3 for it, a worker's no uvicorn (each package's heavy parts load on first use)."""
    probe = (
        "import sys; from fargate_runtime.settings import check_environment; "
        "check_environment(); "
        "print(sorted(m for m in ('aioboto3', 'aiohttp', 'botocore', 'uvicorn', 'starlette',"
        " 'redis', 'asyncpg', 'opentelemetry') if m in sys.modules))"
    )
    env = {"FARGATE_RUNTIME_HTTP_PORT": "8080", "FARGATE_RUNTIME_SQS_CONCURRENCY": "4"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
