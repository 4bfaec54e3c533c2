"""``fargate-runtime drill``: interrupt real workers the way Fargate Spot does; count the damage.

Exit codes: 0 the drill passed; 1 it ran and found a problem (the report says which); 2 it could
not run (bad flags, a named Redis, PostgreSQL or SQS endpoint that does not answer, a worker
that does not start). ``--store postgres,redis`` runs one schedule on each store, side by side
(``compare``); the worst verdict is the exit code.

Adding a flag: one ``add(...)`` in ``configure_parser`` (numbers through ``bounded_float`` /
``bounded_int``, so ``inf`` and ``nan`` are refused), its field in ``DrillConfig`` (``plan``),
and one line in ``config_from_args``; flags about where the drill runs (not what it does) go to
``DrillOptions`` (``runner``) through ``options_from_args``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli._numbers import bounded_float, bounded_int, parse_float
from .compare import parse_stores, render_comparison, write_comparison
from .components import ComponentsError, redacted
from .plan import DEFAULT_WORKER, DrillConfig, expected_interruptions
from .postgres import postgres_url_named
from .progress import Progress
from .runner import DrillError, DrillOptions, run_drill
from .table import render_table

if TYPE_CHECKING:
    from .report import DrillReport

__all__ = ["configure_parser", "run_command"]

_DEFAULTS = DrillConfig()
_CANNOT_RUN = 2
_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


_share = bounded_float(minimum=0, maximum=1)
_seconds = bounded_float(minimum=0, maximum=3600)


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        pair = parse_float(low), parse_float(high or low)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN,MAX seconds") from None
    if not 0 < pair[0] <= pair[1] <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} needs 0 < MIN <= MAX <= 3600 seconds")
    return pair


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


_EPILOG = """\
exit codes:
  0  passed: lost 0, double charges 0, overruns 0, no crash, nothing dead-lettered
     by a Redis outage, and every duplicate charge attempt explained by a hard kill
     or a Redis restart
  1  failed: the report lists each failure and its cause
  2  could not run (bad flags, a named Redis, PostgreSQL or SQS endpoint that does
     not answer, a worker that does not start)

components: --sqs-endpoint and --redis-url (default $REDIS_URL) must answer; named
  nowhere, the drill starts moto's server and uses 127.0.0.1:6379 or, when nothing
  answers there, a private redis-server. --restart-redis and --redis-outage-seconds always
  use a private one. --store postgres uses --postgres-url (default $POSTGRES_URL) the
  same way, else 127.0.0.1:5432, else a private server; its default worker then charges
  inside the handler's transaction (PAYMENTS_LEDGER=postgres).

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
        type=bounded_int(minimum=1, maximum=1_000_000),
        default=d.events,
        metavar="N",
        help="unique payment events (default: %(default)s)",
    )
    add(
        "--workers",
        type=bounded_int(minimum=1, maximum=64),
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
    add(
        "--misbehave-share",
        type=_share,
        default=d.misbehave_share,
        metavar="F",
        help="share of events whose first delivery misbehaves past the stop timeout: blocks "
        "the loop, spins the CPU, swallows cancellation or charges from a thread (the default "
        "worker; forced exits are counted)",
    )
    add("--restart-redis", action="store_true", help="restart (a private) Redis half way")
    add(
        "--redis-outage-seconds",
        type=bounded_float(minimum=0, maximum=600),
        default=d.redis_outage_seconds,
        metavar="SECONDS",
        help="a quarter of the way in, (a private) Redis stops answering for this long, its "
        "data kept; the report counts events it sent to the DLQ (must be 0)",
    )
    add(
        "--stop-timeout",
        type=bounded_float(minimum=2, maximum=120),
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
        type=bounded_float(above=0, maximum=10_000),
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
        type=_seconds,
        default=d.first_interrupt_seconds,
        metavar="SECONDS",
        help="when the first interruption comes, after sending starts (default: %(default)s)",
    )
    add(
        "--max-receive-count",
        type=bounded_int(minimum=1, maximum=1000),
        default=d.max_receive_count,
        metavar="N",
        help="the queue's redrive maxReceiveCount (default: %(default)s)",
    )
    add(
        "--timeout",
        type=bounded_float(above=0, maximum=86_400),
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
        help="Redis to use; it must answer (default: $REDIS_URL; neither: 127.0.0.1:6379, "
        "else a private redis-server)",
    )
    add(
        "--store",
        type=parse_stores,
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
        help="PostgreSQL for --store postgres; it must answer (default: $POSTGRES_URL; neither: "
        "127.0.0.1:5432, else a private server); each run gets a schema of its own",
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
        misbehave_share=args.misbehave_share,
        restart_redis=args.restart_redis,
        store=args.store[0],
        redis_outage_seconds=args.redis_outage_seconds,
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


def options_from_args(
    args: argparse.Namespace, *, work_dir: Path, keep_work_dir: bool
) -> DrillOptions:
    """Where the drill runs (not what it does), from parsed flags."""
    return DrillOptions(
        work_dir=work_dir,
        sqs_endpoint_url=args.sqs_endpoint,
        redis_url=_redis_url(args),
        postgres_url=postgres_url_named(args.postgres_url),
        worker_environment=dict(args.worker_env),
        app_dir=args.app_dir,
        progress=Progress(enabled=not args.quiet),
        keep_work_dir=keep_work_dir,
    )


def _private_flag(args: argparse.Namespace) -> str | None:
    """The flag that needs a Redis of the drill's own (it restarts or pauses it), if any."""
    if args.restart_redis:
        return "--restart-redis"
    if args.redis_outage_seconds > 0:
        return "--redis-outage-seconds"
    return None


def _redis_url(args: argparse.Namespace) -> str | None:
    """The Redis named for this run: --redis-url, else REDIS_URL (not with a private one)."""
    if args.redis_url is not None or _private_flag(args) is not None:
        return str(args.redis_url) if args.redis_url is not None else None
    return os.environ.get("REDIS_URL") or None


def _say(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201 - the CLI's own messages


def run_command(args: argparse.Namespace) -> int:
    """Run the drill once per ``--store`` (one seed: one schedule), print the reports, write
    ``--json``/``--html``; return the worst exit code."""
    flag = _private_flag(args)
    if flag is not None and args.redis_url is not None:
        _say(
            f"fargate-runtime drill: {flag} needs a private redis-server the drill starts "
            f"itself, not the one at {redacted(args.redis_url)}: drop one of the two flags"
        )
        return _CANNOT_RUN
    first = config_from_args(args, run_id=secrets.token_hex(3))
    configs = [first] + [
        replace(first, store=store, run_id=secrets.token_hex(3)) for store in args.store[1:]
    ]
    problems = dict.fromkeys(problem for config in configs for problem in config.problems())
    if problems:
        _say(f"fargate-runtime drill: {'; '.join(problems)}")
        return _CANNOT_RUN
    reports: dict[str, DrillReport] = {}
    for config in configs:
        code, report = _run_one(args, config, several=len(configs) > 1)
        if report is None:
            return code
        reports[config.store] = report
    if len(reports) > 1:
        print(render_comparison(reports), end="")  # noqa: T201 - the report is the output
        if args.json is not None:
            write_comparison(args.json, reports)
    elif args.json is not None:
        reports[first.store].write_json(args.json)
    return max(report.exit_code for report in reports.values())


def _run_one(
    args: argparse.Namespace, config: DrillConfig, *, several: bool
) -> tuple[int, DrillReport | None]:
    """One drill: (exit code, report), or (exit code, None) when it could not run."""
    ours = args.work_dir is None  # a temporary directory: removed unless it explains a failure
    if ours:
        work_dir = Path(tempfile.mkdtemp(prefix=f"fargate-runtime-drill-{config.run_id}-"))
    else:
        work_dir = args.work_dir / config.store if several else args.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    options = options_from_args(args, work_dir=work_dir, keep_work_dir=not ours)
    try:
        run = asyncio.run(run_drill(config, options))
    except KeyboardInterrupt:
        # asyncio.run cancelled the drill: its workers were killed and its servers stopped.
        _say(f"fargate-runtime drill: interrupted{_logs(work_dir, ours=ours, keep=True)}")
        return _INTERRUPTED, None
    except (DrillError, ComponentsError) as exc:
        _say(f"fargate-runtime drill: cannot run: {exc}{_logs(work_dir, ours=ours, keep=True)}")
        return _CANNOT_RUN, None
    report = run.report
    title = (
        f" - {config.store} store, seed {config.seed}, {config.workers} workers, "
        f"{config.events} events, stop timeout {config.stop_timeout_seconds:g} s"
    )
    print(render_table(report, title=title), end="")  # noqa: T201 - the report is the output
    if args.html is not None:
        from .picture import write_picture  # only when asked: string building only

        html = args.html.with_stem(f"{args.html.stem}-{config.store}") if several else args.html
        write_picture(html, run.observations, report, title=title.lstrip(" -"))
    logs = _logs(work_dir, ours=ours, keep=report.exit_code != 0)
    if logs:
        print(logs.strip(" ()"))  # noqa: T201 - the report is the output
    return report.exit_code, report


def _logs(work_dir: Path, *, ours: bool, keep: bool) -> str:
    """`` (ledger and worker logs in DIR)`` when the work dir stays and holds something.

    A temporary directory is removed unless ``keep`` (the logs explain a failure) and it holds
    something; a directory named by ``--work-dir`` is the user's and is never removed.
    """
    holds_logs = work_dir.is_dir() and any(work_dir.iterdir())
    if holds_logs and (keep or not ours):
        return f" (ledger and worker logs in {work_dir})"
    if ours:
        shutil.rmtree(work_dir, ignore_errors=True)
    return ""
