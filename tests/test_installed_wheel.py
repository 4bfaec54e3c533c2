"""From a built wheel, outside the checkout: ``fargate-runtime run`` and ``drill`` work there.

The wheel is built from this checkout, installed with its ``[drill]`` extra (pinned by
``constraints.txt``) into a fresh venv in a temporary directory, and used from a project
directory that holds nothing but the user's module: nothing of the checkout is importable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.session
import pytest

from fargate_runtime.local import sqs_environment
from tests.processes import Child

if TYPE_CHECKING:
    import redis.asyncio

pytestmark = [pytest.mark.slow, pytest.mark.process, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]

USER_APP = """\
from fargate_runtime.sqs import Message, MessageContext, json_field, sqs_worker


async def handle(message: Message, context: MessageContext) -> None:
    print("handled", message.json()["event_id"], "key", context.idempotency_key, flush=True)


app = sqs_worker(handle, key=json_field("event_id"))
"""


def _clean_environment() -> dict[str, str]:
    """This process's environment without anything that would make the checkout importable."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))
    )
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh venv holding the wheel built from this checkout, with ``[drill]``."""
    root = tmp_path_factory.mktemp("installed")
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("fargate_runtime-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [
            str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
            "-c", str(REPO / "constraints.txt"), f"{wheel}[drill]",
        ],
        check=True,
        capture_output=True,
        timeout=600,
        env=_clean_environment(),
    )  # fmt: skip
    return venv / "bin"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project directory: one module, nothing else."""
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "worker.py").write_text(USER_APP, encoding="utf-8")
    return directory


def test_the_package_comes_from_the_venv_not_the_checkout(installed: Path, project: Path) -> None:
    """``import fargate_runtime`` in the project resolves to the venv's site-packages."""
    done = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import fargate_runtime; print(fargate_runtime.__file__)",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
        env=_clean_environment(),
    )
    location = Path(done.stdout.strip())
    assert location.is_relative_to(installed.parent), location
    assert not location.is_relative_to(REPO)


def test_run_a_user_module_from_the_wheel(
    installed: Path,
    project: Path,
    sqs_endpoint: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    """``fargate-runtime run worker:app`` handles a message once, then drains on SIGTERM."""
    del redis_client  # requested for its cleanup of ``redis_prefix`` keys
    sqs: Any = botocore.session.get_session().create_client(
        "sqs", endpoint_url=sqs_endpoint, region_name="us-east-1"
    )
    queue = sqs.create_queue(QueueName=f"wheel{uuid.uuid4().hex[:12]}")["QueueUrl"]
    try:
        env = {
            **_clean_environment(),
            **sqs_environment(sqs_endpoint),
            "FARGATE_RUNTIME_SQS_QUEUE_URL": queue,
            "REDIS_URL": redis_url,
            "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": redis_prefix,
            "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": "10",
        }
        body = json.dumps({"event_id": "evt_wheel_1"})
        with Child(
            [str(installed / "fargate-runtime"), "run", "worker:app"], env=env, cwd=project
        ) as worker:
            worker.wait_for_message("phase running")
            sqs.send_message(QueueUrl=queue, MessageBody=body)
            sqs.send_message(QueueUrl=queue, MessageBody=body)  # a resent webhook
            worker.wait_for_message("handled evt_wheel_1 key evt_wheel_1")
            worker.wait_for_message("duplicate of completed work deleted")
            worker.signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, worker.output()
        assert worker.messages().count("handled evt_wheel_1 key evt_wheel_1") == 1
    finally:
        sqs.delete_queue(QueueUrl=queue)


def test_drill_its_default_worker_from_the_wheel(
    installed: Path, project: Path, redis_url: str, tmp_path: Path
) -> None:
    """``fargate-runtime drill`` starts moto from the [drill] extra and drills its own worker."""
    report = tmp_path / "drill.json"
    done = subprocess.run(
        [
            str(installed / "fargate-runtime"), "drill", "--quiet", "--redis-url", redis_url,
            "--events", "30", "--workers", "2", "--events-per-second", "30",
            "--first-interrupt", "0.5", "--interrupt-every", "1,1.5", "--json", str(report),
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=_clean_environment(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(report.read_text())
    assert figures["charged"] == figures["unique_events"] == 30
    assert (figures["lost"], figures["double_charges"]) == (0, 0)
    assert "fargate_runtime.drill.worker:app" not in done.stderr  # no failure about the worker
