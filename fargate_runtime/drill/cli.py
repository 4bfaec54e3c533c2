"""``fargate-runtime drill``: interrupt real workers the way Fargate Spot does; count the damage.

Exit codes: 0 the drill passed; 1 it ran and found a problem (the report says which); 2 it could
not run (bad flags, no Redis, a worker that does not start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..local import LocalServiceError
from .compare import render_comparison
from .components import ComponentsError
from .plan import DEFAULT_WORKER, DrillConfig, expected_interruptions
from .progress import Progress
from .runner import DrillError, DrillOptions, run_drill
from .table import render_table

if TYPE_CHECKING:
    from .report import DrillReport

__all__ = ["configure_parser", "run_command"]

_DEFAULTS = DrillConfig()
_CANNOT_RUN = 2
_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        return float(low), float(high or low)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN,MAX seconds") from exc


_STORES = ("redis", "postgres")


def _stores(text: str) -> tuple[str, ...]:
    stores = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [store for store in stores if store not in _STORES]
    if not stores or unknown or len(set(stores)) != len(stores):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give redis, postgres, or both separated by a comma"
        )
    return stores


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


_EPILOG = """\
exit codes:
  0  passed: lost 0, double charges 0, overruns 0, no crash, and every duplicate
     charge attempt explained by a hard kill or a Redis restart
  1  failed: the report lists each failure and its cause
  2  could not run (bad flags, no Redis, a worker that does not start)

drilling your own worker:
  --worker mypkg.app:app runs it under `fargate-runtime run` with the drill's SQS
  (FARGATE_RUNTIME_SQS_*), Redis (REDIS_URL) and stop timeout in its environment.
  Charge through the stand-in provider so the drill can count:
      from fargate_runtime.drill import ChargeRequest, Ledger
      ledger = Ledger.from_environment()      # FARGATE_RUNTIME_DRILL_LEDGER
      await ledger.record_execution(event_id) # optional: handler_executions
      await ledger.charge(ChargeRequest(idempotency_key=context.idempotency_key, ...))
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of ``drill``."""
    d = _DEFAULTS
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.description = textwrap.fill(
        "Run K worker processes against a local SQS queue and Redis, send them payment events "
        "with duplicates, interrupt them like Fargate Spot (SIGTERM, SIGKILL at the stop "
        "timeout), replace them like ECS, and report what was lost or charged twice. "
        f"The defaults take about a minute with ~{expected_interruptions(d)} interruptions."
    )
    add = parser.add_argument
    add(
        "--events",
        type=int,
        default=d.events,
        metavar="N",
        help="unique payment events (default: %(default)s)",
    )
    add(
        "--workers",
        type=int,
        default=d.workers,
        metavar="K",
        help="worker processes at once (default: %(default)s)",
    )
    add(
        "--duplicates-share",
        type=_share,
        default=d.duplicates_share,
        metavar="F",
        help="extra messages repeating an event_id, as a share of --events (default: %(default)s)",
    )
    add(
        "--out-of-order-share",
        type=_share,
        default=d.out_of_order_share,
        metavar="F",
        help="share of events sent before an earlier one (default: %(default)s)",
    )
    add(
        "--malformed-share",
        type=_share,
        default=d.malformed_share,
        metavar="F",
        help="unreadable messages (they must end in the DLQ), as a share of --events",
    )
    add(
        "--hard-kill-share",
        type=_share,
        default=d.hard_kill_share,
        metavar="F",
        help="share of interruptions that are SIGKILL without warning",
    )
    add("--restart-redis", action="store_true", help="restart (a private) Redis half way")
    add(
        "--stop-timeout",
        type=float,
        default=d.stop_timeout_seconds,
        metavar="SECONDS",
        help="the task's stopTimeout, scaled down: SIGKILL this long after SIGTERM "
        "(default: %(default)s)",
    )
    add(
        "--worker",
        default=DEFAULT_WORKER,
        metavar="MODULE:ATTR",
        help=f"the worker app to drill (default {DEFAULT_WORKER})",
    )
    add("--app-dir", default=".", help="put first on the workers' sys.path (default: .)")
    add(
        "--worker-env",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the workers (repeatable)",
    )
    add(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="schedule seed: same seed, same events and interruptions (default: random)",
    )
    add(
        "--events-per-second",
        type=float,
        default=d.events_per_second,
        metavar="R",
        help="sending pace, messages per second (default: %(default)s)",
    )
    add(
        "--interrupt-every",
        type=_pair,
        default=(d.interrupt_min_seconds, d.interrupt_max_seconds),
        metavar="MIN,MAX",
        help="seconds between interruptions (default: 4,8)",
    )
    add(
        "--first-interrupt",
        type=float,
        default=d.first_interrupt_seconds,
        metavar="SECONDS",
        help="when the first interruption comes, after sending starts (default: %(default)s)",
    )
    add(
        "--max-receive-count",
        type=int,
        default=d.max_receive_count,
        metavar="N",
        help="the queue's redrive maxReceiveCount (default: %(default)s)",
    )
    add(
        "--timeout",
        type=float,
        default=d.timeout_seconds,
        metavar="SECONDS",
        help="give up (what is missing counts as lost) this long after sending starts "
        "(default: %(default)s)",
    )
    add(
        "--sqs-endpoint",
        default=os.environ.get("FARGATE_RUNTIME_DRILL_SQS_ENDPOINT"),
        metavar="URL",
        help="use this SQS endpoint instead of starting moto",
    )
    add(
        "--redis-url",
        default=None,
        metavar="URL",
        help="Redis to use (default: REDIS_URL, else a private redis-server)",
    )
    add(
        "--store",
        type=_stores,
        default=("redis",),
        metavar="STORE[,STORE]",
        help="where the workers keep idempotency records: redis (default) or postgres (charges "
        "commit in the handler's transaction); 'postgres,redis' runs the same schedule on each "
        "and shows them side by side",
    )
    add(
        "--postgres-url",
        default=None,
        metavar="URL",
        help="PostgreSQL for --store postgres (default: POSTGRES_URL, else 127.0.0.1:5432, "
        "else a private server); the run gets its own schema",
    )
    add("--json", type=Path, default=None, metavar="PATH", help="write the figures as JSON")
    add("--html", type=Path, default=None, metavar="PATH", help="write the timeline picture")
    add(
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the ledger and worker logs here (default: a temporary directory, kept "
        "only when the drill fails)",
    )
    add("--quiet", action="store_true", help="no progress line")


def config_from_args(args: argparse.Namespace, *, run_id: str) -> DrillConfig:
    """The drill's config from parsed flags."""
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    low, high = args.interrupt_every
    return DrillConfig(
        events=args.events,
        workers=args.workers,
        duplicates_share=args.duplicates_share,
        out_of_order_share=args.out_of_order_share,
        malformed_share=args.malformed_share,
        hard_kill_share=args.hard_kill_share,
        restart_redis=args.restart_redis,
        stop_timeout_seconds=args.stop_timeout,
        worker=args.worker,
        seed=seed,
        events_per_second=args.events_per_second,
        interrupt_min_seconds=low,
        interrupt_max_seconds=high,
        first_interrupt_seconds=args.first_interrupt,
        max_receive_count=args.max_receive_count,
        timeout_seconds=args.timeout,
        run_id=run_id,
    )


def run_command(args: argparse.Namespace) -> int:
    """Run the drill once per ``--store``, print the reports, write ``--json``/``--html``."""
    if args.restart_redis and "postgres" in args.store:
        print(  # noqa: T201 - CLI
            "fargate-runtime drill: cannot run: --restart-redis drills the Redis store; "
            "drop it with --store postgres",
            file=sys.stderr,
        )
        return _CANNOT_RUN
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    reports: dict[str, DrillReport] = {}
    for store in args.store:
        code, report = _run_one(args, store=store, seed=seed, several=len(args.store) > 1)
        if report is None:
            return code
        reports[store] = report
    if len(reports) > 1:
        print(render_comparison(reports), end="")  # noqa: T201 - the report is the output
        if args.json is not None:
            figures = {store: report.as_json() for store, report in reports.items()}
            args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    elif args.json is not None:
        next(iter(reports.values())).write_json(args.json)
    return max(report.exit_code for report in reports.values())


def _run_one(
    args: argparse.Namespace, *, store: str, seed: int, several: bool
) -> tuple[int, DrillReport | None]:
    """One drill on ``store``: (exit code, report), or (code, None) when it could not run."""
    run_id = secrets.token_hex(3)
    args.seed = seed
    config = config_from_args(args, run_id=run_id)
    keep = args.work_dir is not None
    base = args.work_dir / store if keep and several else args.work_dir
    work_dir = base or Path(tempfile.mkdtemp(prefix=f"fargate-runtime-drill-{run_id}-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    options = DrillOptions(
        work_dir=work_dir,
        sqs_endpoint_url=args.sqs_endpoint,
        redis_url=args.redis_url,
        worker_environment=dict(args.worker_env),
        app_dir=args.app_dir,
        progress=Progress(enabled=not args.quiet),
        store=store,
        postgres_url=args.postgres_url,
    )
    try:
        run = asyncio.run(run_drill(config, options))
    except KeyboardInterrupt:
        # asyncio.run cancelled the drill: its workers were killed and its servers stopped.
        print(f"fargate-runtime drill: interrupted (logs kept in {work_dir})", file=sys.stderr)  # noqa: T201 - CLI
        return _INTERRUPTED, None
    except (DrillError, ComponentsError, LocalServiceError, ConfigurationError) as exc:
        print(f"fargate-runtime drill: cannot run: {exc}", file=sys.stderr)  # noqa: T201 - CLI
        print(f"(logs kept in {work_dir})", file=sys.stderr)  # noqa: T201 - CLI output
        return _CANNOT_RUN, None
    report = run.report
    title = (
        f" - {store} store, seed {config.seed}, {config.workers} workers, {config.events} "
        f"events, stop timeout {config.stop_timeout_seconds:g} s"
    )
    print(render_table(report, title=title), end="")  # noqa: T201 - the report is the output
    if args.html is not None:
        from .picture import write_picture  # only when asked: string building only

        html = args.html.with_stem(f"{args.html.stem}-{store}") if several else args.html
        write_picture(html, run.observations, report, title=title.lstrip(" -"))
    if report.exit_code != 0 or keep:
        print(f"ledger and worker logs: {work_dir}")  # noqa: T201 - the report is the output
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    return report.exit_code, report
