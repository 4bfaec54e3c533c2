"""``--html`` renders one self-contained page whose SVG has one row per worker process."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from fargate_runtime.drill.interrupter import IncidentKind
from fargate_runtime.drill.ledger import ChargeOutcome
from fargate_runtime.drill.picture import render_page, render_svg, write_picture
from fargate_runtime.drill.report import build_report
from fargate_runtime.drill.workers import EndKind
from tests.drill.builders import charge, incident, observations, worker

if TYPE_CHECKING:
    from pathlib import Path

SVG = "{http://www.w3.org/2000/svg}"


def seen_with_everything() -> object:
    workers = [
        worker("w1", 101, sigterm_at=10.0, exited_at=11.5),
        worker("w2", 102, end=EndKind.HARD_KILLED, sigkill_at=12.0, exited_at=12.0, exit_code=-9),
        worker("w3", 103, end=EndKind.OVERRUN, sigterm_at=20.0, sigkill_at=30.0, exit_code=-9),
        worker("w4", 104, exited_at=None, exit_code=None),
    ]
    incidents = [
        incident(10.0, IncidentKind.SIGTERM, 101),
        incident(12.0, IncidentKind.HARD_KILL, 102),
        incident(15.0, IncidentKind.REDIS_RESTART),
    ]
    requests = [charge(n, pid=101, at=2.0 + n) for n in range(3)]
    requests.append(charge(0, pid=104, at=16.0, outcome=ChargeOutcome.REPLAYED))
    return observations(requests, workers=workers, incidents=incidents)


def test_svg_is_valid_xml_with_one_row_per_worker() -> None:
    """The picture parses as SVG and has exactly one row group per worker process."""
    seen = seen_with_everything()
    root = ET.fromstring(render_svg(seen))  # type: ignore[arg-type]  # noqa: S314 - our own output
    assert root.tag == f"{SVG}svg"
    rows = [g for g in root.iter(f"{SVG}g") if g.get("class") == "worker"]
    assert [g.get("id") for g in rows] == ["worker-w1", "worker-w2", "worker-w3", "worker-w4"]
    titles = " ".join(t.text or "" for t in root.iter(f"{SVG}title"))
    assert "SIGTERM at 10.00 s" in titles
    assert "SIGKILL (hard kill) at 12.00 s" in titles
    assert "SIGKILL (overrun) at 30.00 s" in titles
    assert "Redis restart at 15.00 s" in titles
    assert "duplicate attempts" in titles  # the replay at 16 s, stacked in the chart
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "exit 0" in texts
    assert "killed" in texts


def test_page_is_self_contained(tmp_path: Path) -> None:
    """One HTML file: inline SVG and styles, the report as text, nothing fetched from outside."""
    seen = seen_with_everything()
    path = tmp_path / "drill.html"
    write_picture(path, seen, build_report(seen), title="seed 1")  # type: ignore[arg-type]
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('id="timeline"') == 1
    assert "fargate-runtime drill: " in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert "<script" not in page


def legend_kinds(page: str) -> list[str]:
    """The ``data-kind`` of each legend entry, in order."""
    return re.findall(r'<span data-kind="([a-z_]+)">', page)


def test_legend_lists_only_what_happened() -> None:
    """A run with clean drains only: no overrun, hard kill, restart or duplicate in the legend."""
    workers = [worker("w1", 101, sigterm_at=10.0, exited_at=11.5), worker("w2", 102)]
    seen = observations([charge(0, pid=101, at=2.0)], workers=workers)
    page = render_page(seen, build_report(seen))
    assert legend_kinds(page) == ["starting", "running", "drain", "sigterm", "deadline", "applied"]
    everything = seen_with_everything()
    full = render_page(everything, build_report(everything))  # type: ignore[arg-type]
    assert set(legend_kinds(full)) == {
        "starting", "running", "drain", "overrun", "sigterm", "deadline", "hard_kill",
        "restart", "applied", "duplicate",
    }  # fmt: skip


def test_each_drain_shows_its_seconds_and_its_stop_timeout_deadline() -> None:
    """The drain's length is text beside it; a dashed tick marks SIGTERM + stop timeout."""
    seen = seen_with_everything()
    root = ET.fromstring(render_svg(seen))  # type: ignore[arg-type]  # noqa: S314 - our own output
    rows = {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("class") == "worker"}
    w1 = rows["worker-w1"]
    drains = [t.text for t in w1.iter(f"{SVG}text") if t.get("class") == "drain-seconds"]
    assert drains == ["1.50 s"]
    ticks = [line for line in w1.iter(f"{SVG}line") if line.get("class") == "deadline"]
    assert len(ticks) == 1
    title = ticks[0].find(f"{SVG}title")
    assert title is not None
    assert title.text == "stop-timeout deadline at 20.00 s"  # SIGTERM at 10 s + stop timeout 10
    assert not [g for g in rows["worker-w2"].iter(f"{SVG}line") if g.get("class") == "deadline"]
