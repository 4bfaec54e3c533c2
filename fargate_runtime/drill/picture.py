"""``--html``: one self-contained page with the drill on one time axis (inline SVG, no scripts).

::

    w1  ──starting──████████ running ████████▼▓▓drain▓▓| 1.52 s   ¦ exit 0
    w2  ──starting──██████████████████ ✕ hard kill
    w4            ──starting──██████████████████████████▼▓▓| 0.80 s  ¦ exit 0
        ┆ Redis restart                                 ▼ SIGTERM   ¦ stop-timeout deadline
    charges/s  ▁▂▅▇▇▆▇▅▃▁      (applied; duplicate attempts stacked on top)

One row per worker process (a replacement gets its own row), all rows on the drill's clock.
Each drain carries its length as text; the dashed tick after a SIGTERM is where ECS would send
SIGKILL (the stop timeout). The legend lists only what the picture shows.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import TYPE_CHECKING

from .interrupter import IncidentKind
from .table import render_table
from .workers import EndKind

if TYPE_CHECKING:
    from pathlib import Path

    from .report import DrillReport, Observations
    from .workers import WorkerSummary

__all__ = ["render_legend", "render_page", "render_svg", "write_picture"]

_WIDTH = 1100
_LEFT = 120  # room for row labels
_RIGHT = 70  # room for exit codes
_ROW = 24
_TOP = 40
_CHART = 110  # height of the charges-per-second chart
_COLORS = {
    "starting": "#c7ccd4",
    "running": "#3b82c4",
    "drain": "#f0a202",
    "overrun": "#d1342f",
    "applied": "#2f9e5b",
    "duplicate": "#e8702a",
    "restart": "#8a3ffc",
    "sigterm": "#333333",
    "deadline": "#d1342f",
}
# The legend, in this order; each entry shown only when the picture draws it.
_LEGEND = {
    "starting": ("starting", "bar"),
    "running": ("running", "bar"),
    "drain": ("drain (SIGTERM to exit, seconds written beside it)", "bar"),
    "overrun": ("overrun: SIGKILL at the stop timeout", "bar"),
    "sigterm": ("SIGTERM", "triangle"),
    "deadline": ("stop-timeout deadline (ECS's SIGKILL)", "tick"),
    "hard_kill": ("SIGKILL without warning (hard kill)", "cross"),
    "restart": ("Redis restart", "dashed"),
    "applied": ("charged", "bar"),
    "duplicate": ("duplicate charge attempt", "bar"),
}


def _x(seconds: float, span: float) -> float:
    return _LEFT + max(0.0, seconds) / span * (_WIDTH - _LEFT - _RIGHT)


def _row(
    worker: WorkerSummary, y: float, span: float, end: float, *, stop_timeout: float, used: set[str]
) -> list[str]:
    """One worker's life: starting, running, drain, SIGTERM/SIGKILL marks, exit code."""
    parts = [
        f'<g class="worker" id="worker-{html.escape(worker.name)}">',
        f'<text x="{_LEFT - 8}" y="{y + 15}" text-anchor="end" class="label">'
        f"{html.escape(worker.name)} <tspan class='dim'>pid {worker.pid}</tspan></text>",
    ]
    gone = worker.exited_at if worker.exited_at is not None else end
    ready = worker.ready_at if worker.ready_at is not None else gone
    stop = min(x for x in (worker.sigterm_at, worker.sigkill_at, gone) if x is not None)

    def bar(start: float, finish: float, kind: str, title: str, height: float = 12) -> None:
        x0, x1 = _x(start, span), _x(finish, span)
        top = y + (_ROW - height) / 2
        used.add(kind)
        parts.append(
            f'<rect class="{kind}" x="{x0:.1f}" y="{top:.1f}" width="{max(1.0, x1 - x0):.1f}" '
            f'height="{height}" fill="{_COLORS[kind]}"><title>{html.escape(title)}</title></rect>'
        )

    bar(worker.started_at, ready, "starting", f"{worker.name} starting", height=4)
    if ready < stop:
        bar(ready, stop, "running", f"{worker.name} running")
    if worker.sigterm_at is not None:
        drain_end = worker.exited_at if worker.exited_at is not None else end
        kind = "overrun" if worker.end is EndKind.OVERRUN else "drain"
        seconds = drain_end - worker.sigterm_at
        bar(worker.sigterm_at, drain_end, kind, f"drain {seconds:.2f} s (SIGTERM to exit)")
        x = _x(worker.sigterm_at, span)
        used.add("sigterm")
        parts.append(
            f'<path class="sigterm" d="M{x:.1f},{y + 1} l-5,-6 h10 z" fill="{_COLORS["sigterm"]}">'
            f"<title>SIGTERM at {worker.sigterm_at:.2f} s</title></path>"
        )
        # Where ECS would SIGKILL: the drain must end before this tick.
        deadline = _x(worker.sigterm_at + stop_timeout, span)
        used.add("deadline")
        parts.append(
            f'<line class="deadline" x1="{deadline:.1f}" y1="{y + 2}" x2="{deadline:.1f}" '
            f'y2="{y + _ROW - 2}" stroke="{_COLORS["deadline"]}" stroke-width="1.5" '
            f'stroke-dasharray="2,2"><title>stop-timeout deadline at '
            f"{worker.sigterm_at + stop_timeout:.2f} s</title></line>"
        )
        parts.append(
            f'<text class="drain-seconds" x="{_x(drain_end, span) + 4:.1f}" y="{y + 9}">'
            f"{seconds:.2f} s</text>"
        )
    if worker.sigkill_at is not None:
        x, mid = _x(worker.sigkill_at, span), y + _ROW / 2
        overrun = worker.end is EndKind.OVERRUN
        what = "SIGKILL (overrun)" if overrun else "SIGKILL (hard kill)"
        used.add("overrun" if overrun else "hard_kill")
        parts.append(
            f'<path class="sigkill" d="M{x - 5:.1f},{mid - 5} l10,10 m0,-10 l-10,10" '
            f'stroke="{_COLORS["overrun"]}" stroke-width="2.5">'
            f"<title>{what} at {worker.sigkill_at:.2f} s</title></path>"
        )
    if worker.exit_code is not None:
        code = "killed" if worker.exit_code == -9 else f"exit {worker.exit_code}"
        parts.append(f'<text x="{_x(gone, span) + 8:.1f}" y="{y + 21}" class="code">{code}</text>')
    parts.append("</g>")
    return parts


def _chart(seen: Observations, top: float, span: float, used: set[str]) -> list[str]:
    """Charges per second: applied in green, duplicate attempts stacked in orange."""
    applied: Counter[int] = Counter()
    duplicates: Counter[int] = Counter()
    first_seen: set[str] = set()
    for request in seen.ledger.requests:
        second = int(request.at - seen.wall_start)
        if request.event_id in first_seen:
            duplicates[second] += 1
        else:
            first_seen.add(request.event_id)
            applied[second] += 1
    peak = max([applied[s] + duplicates[s] for s in applied | duplicates] or [1])
    scale = (_CHART - 20) / peak
    width = max(1.0, _x(1.0, span) - _x(0.0, span) - 1)
    parts = [
        f'<text x="{_LEFT - 8}" y="{top + 14}" text-anchor="end" class="label">charges/s</text>',
        f'<text x="{_LEFT - 8}" y="{top + 30}" text-anchor="end" class="dim">peak {peak}</text>',
    ]
    base = top + _CHART
    for second in sorted(applied | duplicates):
        x = _x(float(second), span)
        ok, dup = applied[second] * scale, duplicates[second] * scale
        used.update(kind for kind, count in (("applied", ok), ("duplicate", dup)) if count)
        if ok:
            parts.append(
                f'<rect x="{x:.1f}" y="{base - ok:.1f}" width="{width:.1f}" height="{ok:.1f}" '
                f'fill="{_COLORS["applied"]}"><title>{second} s: {applied[second]} charged'
                "</title></rect>"
            )
        if dup:
            parts.append(
                f'<rect x="{x:.1f}" y="{base - ok - dup:.1f}" width="{width:.1f}" '
                f'height="{dup:.1f}" fill="{_COLORS["duplicate"]}"><title>{second} s: '
                f"{duplicates[second]} duplicate attempts</title></rect>"
            )
    return parts


def render_svg(seen: Observations, used: set[str] | None = None) -> str:
    """The timeline as one ``<svg>`` element; ``used`` collects what it draws (for the legend)."""
    used = set() if used is None else used
    workers = sorted(seen.workers, key=lambda w: w.started_at)
    end = max(seen.duration_seconds, 1.0)
    span = math.ceil(end / 5) * 5.0
    rows_height = len(workers) * _ROW
    height = _TOP + rows_height + 30 + _CHART + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="sans-serif" font-size="12">',
        "<style>.label{fill:#222}.dim{fill:#777;font-size:10px}.code{fill:#222;font-size:11px}"
        "</style>",
    ]
    bottom = _TOP + rows_height + 30 + _CHART
    step = 5 if span <= 60 else 10 if span <= 180 else 30
    for tick in range(0, int(span) + 1, step):
        x = _x(float(tick), span)
        parts.append(
            f'<line x1="{x:.1f}" y1="{_TOP - 6}" x2="{x:.1f}" y2="{bottom}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" class="dim">{tick} s</text>'
        )
    stop_timeout = seen.budget.stop_timeout_seconds
    for index, worker in enumerate(workers):
        y = _TOP + index * _ROW
        parts.extend(_row(worker, y, span, end, stop_timeout=stop_timeout, used=used))
    for incident in seen.incidents:
        if incident.kind is IncidentKind.REDIS_RESTART:
            used.add("restart")
            x = _x(incident.at, span)
            parts.append(
                f'<line x1="{x:.1f}" y1="{_TOP - 10}" x2="{x:.1f}" y2="{bottom}" '
                f'stroke="{_COLORS["restart"]}" stroke-dasharray="4,3" stroke-width="2">'
                f"<title>Redis restart at {incident.at:.2f} s</title></line>"
                f'<text x="{x + 4:.1f}" y="{_TOP - 12}" fill="{_COLORS["restart"]}">'
                "Redis restart</text>"
            )
    start = _x(seen.sending_started_at, span)
    parts.append(
        f'<text x="{start:.1f}" y="{_TOP - 24}" class="dim">sending starts</text>'
        f'<line x1="{start:.1f}" y1="{_TOP - 20}" x2="{start:.1f}" y2="{bottom}" '
        'stroke="#999" stroke-dasharray="2,3"/>'
    )
    parts.extend(_chart(seen, _TOP + rows_height + 30, span, used))
    parts.append("</svg>")
    return "\n".join(parts)


def _swatch(kind: str, shape: str) -> str:
    color = _COLORS["overrun" if kind == "hard_kill" else kind]
    drawn = {
        "bar": f'<rect x="0" y="2" width="14" height="10" fill="{color}"/>',
        "triangle": f'<path d="M2,2 h10 l-5,7 z" fill="{color}"/>',
        "tick": f'<line x1="7" y1="0" x2="7" y2="14" stroke="{color}" stroke-width="1.5" '
        'stroke-dasharray="2,2"/>',
        "cross": f'<path d="M2,2 l10,10 m0,-10 l-10,10" stroke="{color}" stroke-width="2.5"/>',
        "dashed": f'<line x1="7" y1="0" x2="7" y2="14" stroke="{color}" stroke-width="2" '
        'stroke-dasharray="4,3"/>',
    }[shape]
    return f'<svg width="14" height="14" viewBox="0 0 14 14" aria-hidden="true">{drawn}</svg>'


def render_legend(used: set[str]) -> str:
    """The legend: an entry per kind of mark the picture draws, none for what did not happen."""
    entries = [
        f'<span data-kind="{kind}">{_swatch(kind, shape)}{html.escape(name)}</span>'
        for kind, (name, shape) in _LEGEND.items()
        if kind in used
    ]
    return f"<p class='legend'>{''.join(entries)}</p>"


def render_page(seen: Observations, report: DrillReport, *, title: str = "") -> str:
    """The whole HTML page: heading, legend, picture, and the report as text."""
    used: set[str] = set()
    svg = render_svg(seen, used)
    verdict = "passed" if report.exit_code == 0 else "FAILED"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>fargate-runtime drill: {verdict}</title><style>"
        "body{font-family:sans-serif;margin:24px;color:#222}"
        ".legend span{margin-right:16px;font-size:13px;white-space:nowrap}"
        ".legend svg{vertical-align:middle;margin-right:4px}"
        ".drain-seconds{fill:#7a5200;font-size:10px}"
        "pre{background:#f6f6f6;padding:12px;overflow-x:auto}"
        "</style></head><body>\n"
        f"<h1>fargate-runtime drill: {verdict}</h1>\n<p>{html.escape(title)}</p>\n"
        f"{render_legend(used)}\n{svg}\n"
        f"<pre>{html.escape(render_table(report))}</pre>\n</body></html>\n"
    )


def write_picture(path: Path, seen: Observations, report: DrillReport, *, title: str = "") -> None:
    """Write the page to ``path``."""
    path.write_text(render_page(seen, report, title=title), encoding="utf-8")
