"""``fargate-runtime check-taskdef FILE...``: lint task definitions, as text or JSON for CI.

Exit codes: 0 no errors (warnings too with ``--strict``), 1 findings that fail the check, 2 a
file that cannot be read or is not JSON (or a bad argument).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..deploy.taskdef import RULES, RULES_BY_ID, Finding, Severity, check_task_definition

if TYPE_CHECKING:
    import argparse

__all__ = ["configure_parser", "run_command"]

EXIT_OK, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2
CAPACITY_PROVIDERS = ("FARGATE", "FARGATE_SPOT")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``check-taskdef``."""
    parser.add_argument("files", nargs="*", metavar="FILE", help="JSON file, - for stdin")
    parser.add_argument("--json", action="store_true", help="print one JSON document (for CI)")
    parser.add_argument("--strict", action="store_true", help="warnings fail the check too")
    parser.add_argument(
        "--capacity-provider",
        action="append",
        default=[],
        type=str.upper,
        choices=CAPACITY_PROVIDERS,
        help="where the task runs (repeatable); the task definition cannot say it is Spot",
    )
    parser.add_argument(
        "--ignore", action="append", default=[], metavar="RULE", help="skip a rule (repeatable)"
    )
    parser.add_argument("--list-rules", action="store_true", help="list the rules and exit")
    parser.epilog = (
        "exit codes: 0 no error (warnings allowed unless --strict); 1 a failing finding; "
        "2 a file that cannot be read or is not JSON, or a bad argument"
    )


def _read(name: str) -> object:
    """The parsed JSON of ``name``; ValueError with a readable message when it cannot be."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {name}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text: {exc.reason}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{name} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def _fails(finding: Finding, *, strict: bool) -> bool:
    return finding.severity is Severity.ERROR or strict


def _text(name: str, findings: list[Finding]) -> str:
    if not findings:
        return f"{name}: ok\n"
    lines = [
        f"{name}: {f.severity.value} [{f.rule}] {f.path}: {f.message}\n    fix: {f.fix}\n"
        for f in findings
    ]
    return "".join(lines)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def run_command(args: argparse.Namespace) -> int:
    """Check each file; print findings; return 0, 1 or 2 as the module docstring says."""
    if args.list_rules:
        width = max(len(rule.id) for rule in RULES)
        for rule in RULES:
            sys.stdout.write(f"{rule.id:<{width}}  {rule.severity.value:<7}  {rule.summary}\n")
        return EXIT_OK
    unknown = sorted(set(args.ignore) - RULES_BY_ID.keys())
    if unknown or not args.files:
        problem = f"unknown rule {', '.join(unknown)}" if unknown else "no FILE given"
        sys.stderr.write(f"check-taskdef: {problem} (see --list-rules)\n")
        return EXIT_UNREADABLE
    reports: list[dict[str, object]] = []
    errors = warnings = unreadable = 0
    code = EXIT_OK
    for name in args.files:
        try:
            document = _read(name)
        except ValueError as exc:
            code = EXIT_UNREADABLE
            unreadable += 1
            reports.append({"file": name, "unreadable": str(exc)})
            if not args.json:
                sys.stderr.write(f"check-taskdef: {exc}\n")
            continue
        findings = [
            f
            for f in check_task_definition(document, capacity_providers=args.capacity_provider)
            if f.rule not in args.ignore
        ]
        errors += sum(f.severity is Severity.ERROR for f in findings)
        warnings += sum(f.severity is Severity.WARNING for f in findings)
        if code == EXIT_OK and any(_fails(f, strict=args.strict) for f in findings):
            code = EXIT_FINDINGS
        reports.append({"file": name, "findings": [f.as_dict() for f in findings]})
        if not args.json:
            sys.stdout.write(_text(name, findings))
    if args.json:
        summary = {
            "files": reports,
            "checked": len(args.files) - unreadable,
            "unreadable": unreadable,
            "errors": errors,
            "warnings": warnings,
            "exit_code": code,
        }
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        checked = f"{_plural(len(args.files), 'file')} checked"
        if unreadable:
            checked = (
                f"{len(args.files) - unreadable} of {_plural(len(args.files), 'file')} checked, "
                f"{unreadable} unreadable"
            )
        found = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
        sys.stdout.write(f"{checked}: {found}{' (strict)' if args.strict else ''}\n")
    return code
