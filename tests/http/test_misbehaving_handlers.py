"""HTTP handlers that block, spin, swallow cancellation or run threads: out before SIGKILL.

The API runs as a real process on the test Redis; the budget is stop timeout 4 s, margin 1 s
(hard deadline 3 s after SIGTERM), a lame duck of 0.2 s.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio

from fargate_runtime.local import free_port
from tests.processes import Child, runtime_argv

pytestmark = [pytest.mark.process, pytest.mark.integration]

APP = "tests.http.misbehaving_api:app"
SOURCE = Path(__file__).with_name("misbehaving_api.py")
STOP_TIMEOUT = 4.0
HARD = STOP_TIMEOUT - 1.0


def marked(name: str) -> list[str]:
    """``misbehaving_api.py:N `` for each line N marked ``# culprit: NAME``."""
    return [
        f"misbehaving_api.py:{number} "
        for number, text in enumerate(SOURCE.read_text().splitlines(), start=1)
        if re.search(rf"# culprit: {re.escape(name)}$", text)
    ]


@pytest.mark.parametrize("behaviour", ["sleep", "cpu", "swallow", "thread"])
def test_a_stuck_request_is_ended_in_time(
    behaviour: str, redis_url: str, redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    """Exit 70 before the hard deadline + 0.5 s, naming the handler's line; a key whose work
    ran in a thread is not released under it (a retry elsewhere gets 409, not a second run)."""
    del redis_client  # requested for its cleanup of ``redis_prefix`` keys
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "TEST_KEY_PREFIX": redis_prefix,
        "MISBEHAVE": behaviour,
        "FARGATE_RUNTIME_HTTP_HOST": "127.0.0.1",
        "FARGATE_RUNTIME_HTTP_PORT": str(port),
        "FARGATE_RUNTIME_HTTP_LAME_DUCK_SECONDS": "0.2",
        "FARGATE_RUNTIME_HTTP_REQUEST_DRAIN_SECONDS": "0.5",
        "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT),
        "FARGATE_RUNTIME_SHUTDOWN_MARGIN_SECONDS": "1",
        "FARGATE_RUNTIME_RELEASE_SECONDS": "0.5",
        "FARGATE_RUNTIME_CLOSE_SECONDS": "0.5",
    }
    with Child(runtime_argv(APP), env=env) as child:
        child.wait_for_message("http listener bound")
        request = threading.Thread(
            target=_post, args=(port, uuid.uuid4().hex), daemon=True, name="client"
        )
        request.start()
        child.wait_for_message("misbehaving")
        sent = child.signal(signal.SIGTERM)
        code = child.wait(timeout=STOP_TIMEOUT + 10)
        elapsed = time.monotonic() - sent
    assert code == 70, child.output()
    assert elapsed < HARD + 0.5
    culprits = " ".join(str(line.get("culprit")) for line in child.lines)
    assert any(mark in culprits for mark in marked(behaviour)), child.output()
    if behaviour == "thread":
        assert "request cut while its work runs in a thread; key left to its lease" in (
            child.messages()
        )
        client = redis.Redis.from_url(redis_url)
        try:
            records = [k for k in client.scan_iter(match=f"{redis_prefix}*") if b"fence" not in k]
        finally:
            client.close()
        assert len(records) == 1  # the claim is still there: no concurrent second run


def _post(port: int, key: str) -> None:
    """The client: one POST that the shutdown cuts (whatever it gets back is fine)."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            f"http://127.0.0.1:{port}/work",
            json={},
            headers={"idempotency-key": key, "x-api-key": "client"},
            timeout=30,
        )
