"""``python -m examples.sqs_worker.demo``: the worker against a local SQS and Redis, in one command.

Starts moto's server mode and a Redis (the one at ``REDIS_URL`` when it answers), creates a
queue with a dead-letter queue, sends payment webhooks the way producers do (duplicates, out of
order, one malformed), runs the worker under ``fargate-runtime run`` until every event is
charged, stops it with SIGTERM and prints what the provider's ledger saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fargate_runtime.drill.components import Components

from .payments import Ledger

EVENTS = 8
DUPLICATES = 4
_SETTLED_WITHIN_SECONDS = 60.0


def webhooks(run: str) -> list[str]:
    """``EVENTS`` payment events, ``DUPLICATES`` of them sent twice, shuffled, one malformed."""
    events = [
        {"event_id": f"evt_{run}_{n}", "account": f"acct_{n % 3}", "amount_cents": 100 * n + 99}
        | {"sequence": n}
        for n in range(1, EVENTS + 1)
    ]
    bodies = [json.dumps(event) for event in events + events[:DUPLICATES]]
    random.shuffle(bodies)
    return [*bodies, "this is not JSON"]


async def demo() -> int:
    """Run the demo; return the worker's exit code."""
    run = uuid.uuid4().hex[:6]
    async with Components(
        run_id=run,
        max_receive_count=3,
        queue_name="payments-demo",
        redis_url=os.environ.get("REDIS_URL"),
    ) as local:
        for body in webhooks(run):
            await local.client.send_message(QueueUrl=local.queue_url, MessageBody=body)
        ledger_path = Path(tempfile.mkdtemp(prefix="payments-demo-")) / "ledger.sqlite3"
        env = {
            **os.environ,
            **local.worker_environment(),
            "PAYMENTS_LEDGER_PATH": str(ledger_path),
            "PAYMENTS_HANDLER_DELAY_SECONDS": "0.2",
            "FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX": f"payments-demo-{run}",
            "FARGATE_RUNTIME_LOG_JSON": "false",
            # Retry the malformed one quickly so it reaches the DLQ during the demo.
            "FARGATE_RUNTIME_SQS_BACKOFF_BASE_SECONDS": "0.5",
            "FARGATE_RUNTIME_SQS_BACKOFF_CAP_SECONDS": "1",
            # Resent events wait 1 s for the first copy to finish, not 5.
            "FARGATE_RUNTIME_SQS_IN_PROGRESS_DELAY_SECONDS": "1",
            # An idle worker's drain waits for its long poll; keep the demo's short.
            "FARGATE_RUNTIME_SQS_WAIT_TIME_SECONDS": "2",
        }
        argv = ["-m", "fargate_runtime.cli", "run", "examples.sqs_worker.app:app"]
        worker = await asyncio.create_subprocess_exec(sys.executable, *argv, env=env)
        async with Ledger(ledger_path) as ledger:
            # Done when every event is charged, every duplicate deleted and the malformed
            # webhook dead-lettered: the queue is empty.
            deadline = time.monotonic() + _SETTLED_WITHIN_SECONDS
            while worker.returncode is None and time.monotonic() < deadline:
                charged = (await asyncio.to_thread(ledger.totals)).charges
                if charged == EVENTS and (await local.depth()).total == 0:
                    break
                await asyncio.sleep(0.2)
            worker.send_signal(signal.SIGTERM)
            code = await worker.wait()
            totals = await asyncio.to_thread(ledger.totals)
        dead = await local.dead_letter_count()
        await local.forget_keys(env["FARGATE_RUNTIME_IDEMPOTENCY_KEY_PREFIX"])  # a shared Redis
        print(  # noqa: T201 - the demo's report is for people
            f"\nsent {EVENTS + DUPLICATES + 1} webhooks ({EVENTS} events, {DUPLICATES} resent, "
            f"1 malformed)\nprovider: {totals.requests} charge requests, {totals.replayed} "
            f"replayed, {totals.charges} charges, {totals.double_charged_events} double charges\n"
            f"dead-letter queue: {dead}; worker exit code {code}; ledger {ledger_path}"
        )
        return code


if __name__ == "__main__":
    sys.exit(asyncio.run(demo()))
