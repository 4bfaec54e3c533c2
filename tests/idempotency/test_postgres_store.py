"""The PostgreSQL store beyond the shared contract: its own semantics, start checks and faults.

Faults use real processes and a real server: a worker SIGKILLed inside its transaction or right
after its COMMIT, a private PostgreSQL stopped and started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from fargate_runtime.errors import ConfigurationError
from fargate_runtime.idempotency import (
    ClaimStatus,
    Completion,
    Held,
    PostgresStore,
    StoreKind,
    StoreUnavailableError,
    load_idempotency_settings,
    open_store,
    schema_sql,
    scoped_key,
)
from fargate_runtime.local import PostgresServer, free_port
from tests.idempotency.conftest import SHORT_LEASE_SECONDS
from tests.idempotency.postgres import PostgresSchema, wait_until_forgotten
from tests.processes import REPO, Child, runtime_argv

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

LEASE = 30.0


def key(name: str) -> str:
    """A stored key of the tests' scope."""
    return scoped_key("t", "orders", name)


async def cli(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``fargate-runtime ARGUMENTS`` in a child process (off the event loop)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fargate_runtime.cli", *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, for tests that stop it or change roles."""
    with PostgresServer() as server:
        yield server


async def test_a_retried_claim_keeps_its_token_and_recovery_points_and_restarts_the_lease(
    postgres_store: PostgresStore, postgres_schema: PostgresSchema
) -> None:
    """The same attempt claiming its live record again (a lost reply) gets its token back, keeps
    the recovery points committed under it, and its lease restarts on the database's clock."""
    name = key("retried")
    first = await postgres_store.claim(name, "fp", owner="attempt-1", lease_seconds=1.0)
    assert first.token is not None
    recovery = postgres_store.transactional(Held(name, first.token), retention_seconds=60)
    async with recovery.step("charged"):
        pass
    lease_until = "SELECT lease_until FROM idempotency_records WHERE key = $1"
    before = await postgres_schema.fetchval(lease_until, name)
    retry = await postgres_store.claim(name, "fp", owner="attempt-1", lease_seconds=LEASE)
    after = await postgres_schema.fetchval(lease_until, name)
    assert (retry.status, retry.token) == (ClaimStatus.ACQUIRED, first.token)
    assert after - before > timedelta(seconds=LEASE / 2)
    assert await recovery.steps() == ("charged",)
    other = await postgres_store.claim(name, "fp", owner="attempt-2", lease_seconds=LEASE)
    assert other.status is ClaimStatus.IN_PROGRESS


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pool_size", 0),
        ("transaction_pool_size", 10_000),
        ("call_timeout_seconds", float("inf")),
        ("connect_timeout_seconds", -1.0),
        ("idle_in_transaction_timeout_seconds", float("nan")),
        ("max_result_bytes", 0),
        ("cleanup_interval_seconds", 0.0),
        ("cleanup_batch_size", True),
    ],
)
def test_numbers_out_of_bounds_are_refused_naming_the_parameter(name: str, value: float) -> None:
    """Each numeric argument is checked like the other stores' (``_limits``): a zero, negative,
    non-finite, too large or boolean value is a ConfigurationError naming it."""
    options: dict[str, Any] = {name: value}
    with pytest.raises(ConfigurationError, match=name):
        PostgresStore("postgresql://a@127.0.0.1:1/a", **options)


async def test_a_store_used_from_a_second_event_loop_fails_at_once(
    postgres_schema: PostgresSchema,
) -> None:
    """A call from another thread's loop raises RuntimeError before sending anything: the key
    it tried stays unclaimed for the store's own loop."""
    store = PostgresStore(postgres_schema.url, schema=postgres_schema.name, cleanup=False)
    raised: list[BaseException] = []

    def from_another_thread() -> None:
        async def claim() -> None:
            await store.claim(key("elsewhere"), "fp", owner="o", lease_seconds=LEASE)

        try:
            asyncio.run(claim())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread to assert on
            raised.append(exc)

    async with store:
        await store.claim(key("first"), "fp", owner="o", lease_seconds=LEASE)
        thread = threading.Thread(target=from_another_thread)
        thread.start()
        await asyncio.to_thread(thread.join)
        assert len(raised) == 1
        assert isinstance(raised[0], RuntimeError)
        assert "one store per event loop" in str(raised[0])
        mine = await store.claim(key("elsewhere"), "fp", owner="p", lease_seconds=LEASE)
        assert mine.status is ClaimStatus.ACQUIRED


async def test_cleanup_deletes_only_forgotten_records_in_bounded_batches(
    postgres_store: PostgresStore, postgres_schema: PostgresSchema
) -> None:
    """Expired claims go, batch by batch; live claims and completed records stay."""
    expired = [key(f"old-{i}") for i in range(5)]
    for name in expired:
        await postgres_store.claim(name, "fp", owner="o", lease_seconds=SHORT_LEASE_SECONDS)
    live = await postgres_store.claim(key("live"), "fp", owner="o", lease_seconds=LEASE)
    assert live.token is not None
    await postgres_store.complete(key("live"), live.token, b"r", retention_seconds=LEASE)
    await wait_until_forgotten(postgres_store, expired[-1])
    assert await postgres_store.cleanup(batch_size=2) == 2  # one batch of two
    assert await postgres_store.cleanup(batch_size=2, max_batches=10) == 3
    remaining = await postgres_schema.fetchval("SELECT count(*) FROM idempotency_records")
    assert remaining == 1


async def test_claims_and_completions_are_one_round_trip_per_batch(
    postgres_store: PostgresStore,
) -> None:
    """Ten keys cost one claim call and one completion call on the store's pool."""
    keys = [key(f"batch-{i}") for i in range(10)]
    before = postgres_store.round_trips
    from fargate_runtime.idempotency import ClaimRequest

    results = await postgres_store.claim_many(
        [ClaimRequest(k, "fp") for k in keys], owner="o", lease_seconds=LEASE
    )
    done = await postgres_store.complete_many(
        [Completion(r.key, r.token or 0, b"") for r in results], retention_seconds=LEASE
    )
    assert done == [True] * 10
    assert postgres_store.round_trips - before == 2


def test_schema_sql_renders_another_schema_on_its_two_marked_lines() -> None:
    """The shipped file names fargate_runtime; rendering swaps exactly that name."""
    default, other = schema_sql(), schema_sql("billing_idem")
    assert "CREATE SCHEMA IF NOT EXISTS fargate_runtime;" in default
    assert "CREATE SCHEMA IF NOT EXISTS billing_idem;" in other
    assert "fargate_runtime" not in other.split("BEGIN;", 1)[1]
    with pytest.raises(ConfigurationError, match="lower case"):
        schema_sql('x"; DROP TABLE y; --')


async def test_a_missing_schema_is_a_configuration_error_naming_the_fix(postgres_url: str) -> None:
    """Opening the store on a schema nobody applied says how to create it (exit 78 at start)."""
    async with PostgresSchema.created(postgres_url, apply=False) as empty:
        store = PostgresStore(postgres_url, schema=empty.name, cleanup=False)
        with pytest.raises(ConfigurationError, match="postgres-schema --apply"):
            await store.open()
        await store.aclose()


async def test_an_unreachable_database_is_a_configuration_error() -> None:
    """Nothing listening: one line naming host, port and database, never the password."""
    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/app"
    store = PostgresStore(url, connect_timeout_seconds=1.0, cleanup=False)
    with pytest.raises(ConfigurationError, match=r"127\.0\.0\.1:\d+/app") as raised:
        await store.open()
    assert "s3cret" not in str(raised.value)


async def test_missing_rights_are_named(private_postgres: PostgresServer) -> None:
    """A role without rights on the table gets the list of what to grant."""
    admin = await asyncpg.connect(private_postgres.url)
    try:
        await admin.execute(schema_sql())
        await admin.execute("CREATE ROLE worker LOGIN")
        await admin.execute("GRANT USAGE ON SCHEMA fargate_runtime TO worker")
        await admin.execute("GRANT SELECT ON fargate_runtime.idempotency_records TO worker")
    finally:
        await admin.close()
    url = private_postgres.url.replace("postgres@", "worker@")
    store = PostgresStore(url, cleanup=False)
    with pytest.raises(ConfigurationError, match="lacks INSERT on") as raised:
        await store.open()
    assert "USAGE on fargate_runtime.idempotency_tokens" in str(raised.value)


def test_settings_select_the_store_and_refuse_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """STORE=postgres needs a URL (DATABASE_URL will do); numbers must be positive and finite."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("FARGATE_RUNTIME_IDEMPOTENCY_STORE", "postgres")
    with pytest.raises(ConfigurationError, match="needs FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_URL"):
        load_idempotency_settings()
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@db:5432/app")
    settings = load_idempotency_settings()
    assert settings.store is StoreKind.POSTGRES
    assert isinstance(open_store(settings), PostgresStore)
    for name, value in (
        ("POSTGRES_CLEANUP_BATCH_SIZE", "0"),
        ("POSTGRES_CLEANUP_INTERVAL_SECONDS", "inf"),
        ("POSTGRES_POOL_SIZE", "-1"),
        ("POSTGRES_SCHEMA", "Bad-Name"),
    ):
        with pytest.raises(ConfigurationError, match=name):
            load_idempotency_settings(**{name.lower(): value})
    with pytest.raises(ConfigurationError, match="postgresql://") as raised:
        load_idempotency_settings(postgres_url="mysql://u:topsecret@h/db")
    assert "topsecret" not in str(raised.value)


def test_another_database_in_database_url_leaves_the_redis_store_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service on Redis whose DATABASE_URL names MySQL starts: the URL is only checked for
    the postgres store."""
    monkeypatch.delenv("FARGATE_RUNTIME_IDEMPOTENCY_STORE", raising=False)
    monkeypatch.setenv("DATABASE_URL", "mysql://app:pw@db:3306/app")
    assert load_idempotency_settings().store is StoreKind.REDIS
    with pytest.raises(ConfigurationError, match="has the scheme 'mysql'"):
        load_idempotency_settings(store="postgres")


async def test_a_database_restart_fails_closed_then_recovers(
    private_postgres: PostgresServer,
) -> None:
    """While the server is down calls raise StoreUnavailableError; after it, records are there."""
    admin = await asyncpg.connect(private_postgres.url)
    await admin.execute(schema_sql())
    await admin.close()
    async with PostgresStore(
        private_postgres.url, call_timeout_seconds=1.0, connect_timeout_seconds=1.0, cleanup=False
    ) as store:
        before = await store.claim(key("kept"), "fp", owner="o", lease_seconds=LEASE)
        private_postgres.stop()
        with pytest.raises(StoreUnavailableError):
            await store.claim(key("during"), "fp", owner="o", lease_seconds=LEASE)
        private_postgres.start()
        after = await store.claim(key("kept"), "fp", owner="other", lease_seconds=LEASE)
        assert after.status is ClaimStatus.IN_PROGRESS  # PostgreSQL kept the claim
        assert before.token is not None
        assert await store.release(key("kept"), before.token)


@pytest.mark.process
@pytest.mark.parametrize("stop_at", ["before-commit", "after-commit"])
async def test_a_worker_sigkilled_around_its_commit_leaves_both_or_neither(
    stop_at: str, postgres_store: PostgresStore, postgres_schema: PostgresSchema
) -> None:
    """SIGKILL inside the transaction: no write, the key claimable after the lease; after the
    COMMIT: the write and the completed record, which a redelivery finds."""
    await postgres_schema.fetchval("CREATE TABLE charges (event_id text, amount integer)")
    name = key(f"crash-{stop_at}")
    argv = [sys.executable, "-m", "tests.idempotency.pg_worker", postgres_schema.url,
            postgres_schema.name, name, stop_at]  # fmt: skip
    event = "written" if stop_at == "before-commit" else "committed"
    with Child(argv, cwd=REPO) as child:
        line = child.wait_for(lambda line: line.get("event") == event)
        child.signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    rows = await postgres_schema.fetchval("SELECT count(*) FROM charges")
    retry = await postgres_store.claim(name, "fp", owner="next-worker", lease_seconds=LEASE)
    if stop_at == "after-commit":
        assert rows == 1
        assert (retry.status, retry.token) == (ClaimStatus.COMPLETED, line["token"])
        return
    assert rows == 0
    assert retry.status is ClaimStatus.IN_PROGRESS  # the dead worker's lease still runs
    await wait_until_forgotten(postgres_store, name)
    taken = await postgres_store.claim(name, "fp", owner="next-worker", lease_seconds=LEASE)
    assert taken.status is ClaimStatus.ACQUIRED
    assert taken.token is not None
    assert taken.token > line["token"]
    async with postgres_store.transactional(
        Held(name, taken.token), retention_seconds=60
    ).transaction() as tx:
        await tx.execute(f"INSERT INTO {postgres_schema.name}.charges VALUES ($1, 1)", name)
    assert await postgres_schema.fetchval("SELECT count(*) FROM charges") == 1


@pytest.mark.process
async def test_a_worker_sigkilled_between_steps_is_resumed_after_its_last_step(
    postgres_store: PostgresStore, postgres_schema: PostgresSchema
) -> None:
    """A two-step effect killed after its first step: the next claim sees the step, skips it,
    and completes with the second; the first step's write exists once."""
    await postgres_schema.fetchval("CREATE TABLE charges (event_id text, amount integer)")
    name = key("two-steps")
    argv = [sys.executable, "-m", "tests.idempotency.pg_worker", postgres_schema.url,
            postgres_schema.name, name, "after-step"]  # fmt: skip
    with Child(argv, cwd=REPO) as child:
        line = child.wait_for(lambda line: line.get("event") == "stepped")
        child.signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    await wait_until_forgotten(postgres_store, name)
    taken = await postgres_store.claim(name, "fp", owner="next-worker", lease_seconds=LEASE)
    assert taken.token is not None
    assert taken.token > line["token"]
    recovery = postgres_store.transactional(Held(name, taken.token), retention_seconds=60)
    assert await recovery.recovery_point() == "charged"
    async with recovery.transaction() as tx:  # the second step, which completes the key
        await tx.execute(f"INSERT INTO {postgres_schema.name}.charges VALUES ($1, 2)", name)
    amounts = await postgres_schema.fetchval("SELECT string_agg(amount::text, ',') FROM charges")
    assert amounts == "1,2"


async def test_the_background_cleanup_deletes_expired_records(
    postgres_schema: PostgresSchema,
) -> None:
    """An open store with cleanup on removes an expired claim by itself, and nothing live."""
    store = PostgresStore(
        postgres_schema.url, schema=postgres_schema.name, cleanup_interval_seconds=0.05
    )
    async with store:
        await store.claim(key("expired"), "fp", owner="o", lease_seconds=SHORT_LEASE_SECONDS)
        await store.claim(key("live"), "fp", owner="o", lease_seconds=LEASE)
        await wait_until_forgotten(store, key("expired"))
        async with asyncio.timeout(10):
            # The cleanup runs on its own interval; its only trace is the row going away.
            while await postgres_schema.fetchval("SELECT count(*) FROM idempotency_records") > 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        remaining = await postgres_schema.fetchval("SELECT key FROM idempotency_records")
        assert remaining == key("live")


async def test_a_frozen_database_backend_fails_closed_within_the_call_timeout(
    postgres_schema: PostgresSchema,
) -> None:
    """SIGSTOP of the store's server process: the call fails closed (StoreUnavailableError)
    after the call timeout; after SIGCONT the store works again."""
    # A name of this store's own: other tests' stores (parallel workers) share the database,
    # and stopping one of their backends would freeze the wrong store.
    application = f"frt-frozen-{postgres_schema.name}"
    store = PostgresStore(
        postgres_schema.url, schema=postgres_schema.name, pool_size=1,
        call_timeout_seconds=1.0, cleanup=False,
        pool_options={"server_settings": {"application_name": application}},
    )  # fmt: skip
    async with store:
        pool = await store.transaction_pool()
        await store.claim(key("before"), "fp", owner="o", lease_seconds=LEASE)
        # The one connection of the store's pool, as PostgreSQL knows it: the only other
        # backend with this name is the transaction pool's, the one asking.
        backends = await pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            " AND pid <> pg_backend_pid()",
            application,
        )
        assert len(backends) == 1, backends
        backend = backends[0]["pid"]
        os.kill(backend, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailableError, match="failed the idempotency claim"):
                await store.claim(key("during"), "fp", owner="o", lease_seconds=LEASE)
        finally:
            os.kill(backend, signal.SIGCONT)
        after = await store.claim(key("after"), "fp", owner="o", lease_seconds=LEASE)
        assert after.status is ClaimStatus.ACQUIRED


@pytest.mark.process
@pytest.mark.parametrize("problem", ["no schema", "no database"])
def test_a_worker_on_an_unusable_database_exits_78_with_one_line(
    problem: str, postgres_url: str, tmp_path: Path
) -> None:
    """The example worker on the PostgreSQL store, without its schema or its database: exit 78
    before consuming anything, one critical line naming the fix, no traceback."""
    url = postgres_url if problem == "no schema" else f"postgresql://a@127.0.0.1:{free_port()}/a"
    env = {
        "FARGATE_RUNTIME_IDEMPOTENCY_STORE": "postgres",
        "FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_URL": url,
        "FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_SCHEMA": "frt_never_applied",
        "FARGATE_RUNTIME_IDEMPOTENCY_POSTGRES_CONNECT_TIMEOUT_SECONDS": "1",
        "FARGATE_RUNTIME_SQS_QUEUE_URL": "http://127.0.0.1:9/000000000000/q",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PAYMENTS_LEDGER_PATH": str(tmp_path / "ledger.sqlite3"),
    }
    with Child(runtime_argv("examples.sqs_worker.app:app"), env=env) as child:
        assert child.wait(timeout=30) == 78, child.output()
    critical = [line for line in child.lines if line.get("level") == "CRITICAL"]
    assert len(critical) == 1, child.output()
    expected = "postgres-schema --apply" if problem == "no schema" else "cannot use PostgreSQL"
    assert expected in critical[0]["message"]
    assert "Traceback" not in child.output()


async def test_the_schema_command_prints_applies_and_checks(postgres_url: str) -> None:
    """``fargate-runtime postgres-schema``: --print, then --apply and --check on a fresh schema."""
    printed = await cli(["postgres-schema", "--print", "--schema", "frt_printed"])
    assert printed.returncode == 0, printed.stderr
    assert "CREATE SCHEMA IF NOT EXISTS frt_printed;" in printed.stdout
    async with PostgresSchema.created(postgres_url, apply=False) as fresh:
        command = ["postgres-schema", "--url", postgres_url, "--schema", fresh.name]
        missing = await cli([*command, "--check"])
        assert missing.returncode == 78
        assert missing.stderr.count("\n") == 1  # one line, no traceback
        assert "--apply" in missing.stderr
        applied = await cli([*command, "--apply"])
        assert applied.returncode == 0, applied.stderr
        assert "is ready" in applied.stdout
        again = await cli([*command, "--apply"])
        assert again.returncode == 0, again.stderr  # applying twice is safe
