"""The image's run-time conditions, proven without a Docker engine (see ``sandbox.py``).

PID 1 of its own namespace, uid 10001 without capabilities, code and site-packages read-only,
only ``/tmp`` writable, started the way the image's exec-form ENTRYPOINT starts it: SIGTERM
drains the runtime and it exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import boto3  # type: ignore[import-untyped]  # boto3 ships no types and no stubs are installed
import pytest
import redis

from fargate_runtime.local import free_port, sqs_environment
from tests.deploy.sandbox import (
    REPO,
    UID,
    can_sandbox,
    namespace_init,
    sandbox_argv,
    status_field,
)
from tests.processes import Child

if TYPE_CHECKING:
    from collections.abc import Callable

_WHY_NOT = can_sandbox()
pytestmark = [pytest.mark.process, pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))]

SANDBOX_TMP = "/tmp"  # noqa: S108 - a tmpfs private to the sandbox, as the task's /tmp volume
# What the image's ENV sets, and nothing from the test's own environment.
IMAGE_ENV = {
    "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    "HOME": SANDBOX_TMP,
    "TMPDIR": SANDBOX_TMP,
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "LANG": "C.UTF-8",
}

PROBE = """
import errno, json, os, site, sys, tempfile
import fargate_runtime

def write(directory):
    path = os.path.join(directory, ".sandbox-probe")
    try:
        with open(path, "w") as handle:
            handle.write("x")
    except OSError as exc:
        return errno.errorcode[exc.errno]
    os.unlink(path)
    return "written"

status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({
    "pid": os.getpid(),
    "uid": os.getuid(),
    "gid": os.getgid(),
    "groups": os.getgroups(),
    "cap_eff": status["CapEff"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "dont_write_bytecode": sys.flags.dont_write_bytecode,
    "package": fargate_runtime.__file__,
    "repo": write(sys.argv[1]),
    "site_packages": write(site.getsitepackages()[0]),
    "interpreter": write(sys.base_prefix),
    "tmp": write(tempfile.gettempdir()),
}))
"""


@pytest.fixture
def run_sandboxed(tmp_path: Path) -> Callable[..., list[str]]:
    """argv for a command in the sandbox, with the image's environment plus ``extra``."""

    def _argv(command: list[str], **extra: str) -> list[str]:
        stage = tmp_path / "stage"
        stage.mkdir(exist_ok=True)
        return sandbox_argv(command, stage=stage, env={**IMAGE_ENV, **extra})

    return _argv


def entrypoint(app: str) -> list[str]:
    """The image's ENTRYPOINT and CMD: ``fargate-runtime run APP`` (the console script)."""
    script = Path(sys.executable).parent / "fargate-runtime"
    if script.exists():
        return [str(script), "run", app]
    return [sys.executable, "-m", "fargate_runtime.cli", "run", app]


def test_sandbox_conditions(run_sandboxed: Callable[..., list[str]]) -> None:
    """PID 1, uid 10001, no capabilities, read-only code and venv, /tmp writable."""
    argv = run_sandboxed([sys.executable, "-c", PROBE, str(REPO)])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout)
    assert seen["pid"] == 1
    assert (seen["uid"], seen["gid"], seen["groups"]) == (UID, UID, [])
    assert int(seen["cap_eff"], 16) == 0
    assert seen["no_new_privs"] == "1"
    assert seen["dont_write_bytecode"] == 1
    assert seen["package"].startswith(str(REPO))
    assert seen["repo"] == seen["site_packages"] == seen["interpreter"] == "EROFS"
    assert seen["tmp"] == "written"


def test_runtime_as_pid1_drains_on_sigterm(run_sandboxed: Callable[..., list[str]]) -> None:
    """Under the image's conditions, SIGTERM to PID 1 drains the work and the exit code is 0."""
    argv = run_sandboxed(entrypoint("tests.supervisor.apps:busy"), TEST_WORK_SECONDS="1.0")
    with Child(argv) as child:
        child.wait_for_message("work started")
        init = namespace_init(child.pid)
        assert status_field(init, "NSpid")[-1] == "1"
        assert status_field(init, "Uid") == [str(UID)] * 4
        os.kill(init, signal.SIGTERM)
        finished = child.wait_for_message("work finished", timeout=10)
        code = child.wait(timeout=15)
    assert code == 0, child.output()
    assert finished["shutdown_requested"] is True
    assert child.wait_for(lambda line: line.get("phase") == "stopped")["exit_code"] == 0
    assert not any("Read-only file system" in line for line in child.raw), child.output()


def _payment_events(count: int) -> list[str]:
    return [
        json.dumps({"event_id": f"evt_{n}", "account": "acct_1", "amount_cents": 100 + n})
        for n in range(count)
    ]


@pytest.mark.integration
@pytest.mark.skipif(
    not (REPO / "examples" / "sqs_worker" / "app.py").exists(), reason="no example worker yet"
)
def test_example_worker_as_pid1_drains_and_releases(
    run_sandboxed: Callable[..., list[str]], sqs_endpoint: str, redis_url: str
) -> None:
    """The example worker under the image's conditions: in-flight charges finish on SIGTERM,
    unstarted messages are visible again at once, exit 0."""
    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"sandbox-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    sent = _payment_events(30)
    for body in sent:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    prefix = f"frt-sandbox-{uuid.uuid4().hex[:12]}"
    argv = run_sandboxed(
        entrypoint("examples.sqs_worker.app:app"),
        **sqs_environment(sqs_endpoint),
        FARGATE_RUNTIME_SQS_QUEUE_URL=queue_url,
        FARGATE_RUNTIME_SQS_ENDPOINT_URL=sqs_endpoint,
        FARGATE_RUNTIME_SQS_REGION="us-east-1",
        FARGATE_RUNTIME_SQS_CONCURRENCY="4",
        FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS="15",
        FARGATE_RUNTIME_HEALTH_PORT=str(free_port()),
        FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX=prefix,
        REDIS_URL=redis_url,
        # The task definition's value: the ledger (the stand-in provider) lives in /tmp.
        PAYMENTS_LEDGER_PATH=f"{SANDBOX_TMP}/payments-ledger.sqlite3",
        PAYMENTS_HANDLER_DELAY_SECONDS="1.0",
    )
    try:
        with Child(argv) as child:
            child.wait_for_message("payment started", timeout=30)
            init = namespace_init(child.pid)
            assert status_field(init, "NSpid")[-1] == "1"
            assert status_field(init, "Uid") == [str(UID)] * 4
            os.kill(init, signal.SIGTERM)
            code = child.wait(timeout=30)
        counts = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
    finally:
        sqs.delete_queue(QueueUrl=queue_url)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    assert code == 0, child.output()
    started = child.messages().count("payment started")
    charged = child.messages().count("payment charged")
    assert started == charged > 0, child.output()
    assert int(counts["ApproximateNumberOfMessages"]) == len(sent) - charged
    assert int(counts["ApproximateNumberOfMessagesNotVisible"]) == 0
    assert not any("Read-only file system" in line for line in child.raw), child.output()
