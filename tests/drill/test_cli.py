"""``fargate-runtime drill`` takes the issue's flags and turns them into the drill's config."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pytest

from fargate_runtime.cli import COMMANDS
from fargate_runtime.drill.cli import (
    config_from_args,
    configure_parser,
    options_from_args,
    run_command,
)
from fargate_runtime.drill.plan import DEFAULT_WORKER

if TYPE_CHECKING:
    from pathlib import Path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="drill")
    configure_parser(parser)
    return parser.parse_args(list(argv))


def test_every_flag_reaches_the_config() -> None:
    """Each documented flag sets its field; the seed is kept as given."""
    args = parse(
        "--events", "50", "--workers", "4", "--duplicates-share", "0.3",
        "--hard-kill-share", "0.5", "--malformed-share", "0.05", "--restart-redis",
        "--stop-timeout", "12", "--worker", "my.app:app", "--seed", "9",
        "--json", "out.json", "--html", "out.html", "--timeout", "60",
        "--interrupt-every", "2,3", "--worker-env", "A=1", "--store", "postgres,redis",
    )  # fmt: skip
    config = config_from_args(args, run_id="r")
    assert config.store == "postgres"  # the first store's run
    assert (config.events, config.workers, config.seed) == (50, 4, 9)
    assert (config.duplicates_share, config.hard_kill_share, config.malformed_share) == (
        0.3,
        0.5,
        0.05,
    )
    assert config.restart_redis
    assert (config.stop_timeout_seconds, config.timeout_seconds) == (12.0, 60.0)
    assert config.worker == "my.app:app"
    assert (config.interrupt_min_seconds, config.interrupt_max_seconds) == (2.0, 3.0)
    assert (str(args.json), str(args.html), args.worker_env) == (
        "out.json",
        "out.html",
        [("A", "1")],
    )


def test_defaults_drill_the_example_worker_with_a_random_seed() -> None:
    """No flags: the example worker, and a seed drawn (and then printed) for replay."""
    config = config_from_args(parse(), run_id="r")
    assert config.worker == DEFAULT_WORKER
    assert 0 <= config.seed < 1_000_000


def test_a_share_outside_zero_to_one_is_refused() -> None:
    """A share of 1.5 is a usage error (exit 2), not a strange drill."""
    with pytest.raises(SystemExit) as exit_info:
        parse("--hard-kill-share", "1.5")
    assert exit_info.value.code == 2


def test_drill_and_local_are_registered_commands() -> None:
    """The console script knows both subcommands."""
    assert COMMANDS["drill"][0] == "fargate_runtime.drill.cli"
    assert COMMANDS["local"][0] == "fargate_runtime.drill.local_command"


def test_store_takes_one_store_or_both_in_order() -> None:
    """--store postgres,redis runs both (in that order); anything else is a usage error."""
    assert parse().store == ("redis",)
    assert parse("--store", "postgres,redis").store == ("postgres", "redis")
    for bad in ("mysql", "redis,redis", ""):
        with pytest.raises(SystemExit) as exit_info:
            parse("--store", bad)
        assert exit_info.value.code == 2


def test_restarting_redis_under_the_postgres_store_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--restart-redis with --store postgres cannot run (exit 2) and says why in one line."""
    code = run_command(parse("--store", "postgres", "--restart-redis"))
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_where_the_drill_runs_reaches_its_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--postgres-url, else POSTGRES_URL, names the PostgreSQL; neither names none."""
    monkeypatch.setenv("POSTGRES_URL", "postgresql://env@127.0.0.1:5432/env")
    named = options_from_args(
        parse("--postgres-url", "postgresql://flag@db/flag", "--sqs-endpoint", "http://sqs"),
        work_dir=tmp_path,
        keep_work_dir=True,
    )
    assert (named.postgres_url, named.sqs_endpoint_url) == (
        "postgresql://flag@db/flag",
        "http://sqs",
    )
    assert named.keep_work_dir
    from_env = options_from_args(parse(), work_dir=tmp_path, keep_work_dir=False)
    assert from_env.postgres_url == "postgresql://env@127.0.0.1:5432/env"
    monkeypatch.delenv("POSTGRES_URL")
    assert options_from_args(parse(), work_dir=tmp_path, keep_work_dir=False).postgres_url is None
