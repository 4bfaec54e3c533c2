"""The drill's HTML picture in a real headless browser: it renders, with no console errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fargate_runtime.drill.picture import write_picture
from fargate_runtime.drill.report import build_report
from tests.drill.browser import chromium, decode_png, render
from tests.drill.test_picture import seen_with_everything

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.process,
    pytest.mark.skipif(chromium() is None, reason="chromium missing: make test installs it"),
]

WIDTH, HEIGHT = 1200, 900


def hex_color(text: str) -> tuple[int, int, int]:
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def test_the_drill_picture_renders_without_console_errors(tmp_path: Path) -> None:
    """The page draws its bars in the browser (their colours are on screen), console silent."""
    seen = seen_with_everything()
    page = tmp_path / "drill.html"
    write_picture(page, seen, build_report(seen), title="seed 1")  # type: ignore[arg-type]
    rendered = render(page, tmp_path / "drill.png", width=WIDTH, height=HEIGHT)
    assert rendered.exit_code == 0
    assert rendered.console == []
    width, height, pixels = decode_png(rendered.png)
    assert (width, height) == (WIDTH, HEIGHT)
    on_screen = set(pixels)
    # Running (blue), drain (amber), charged (green) and Redis restart (violet) were painted.
    for color in ("#3b82c4", "#f0a202", "#2f9e5b", "#8a3ffc"):
        assert hex_color(color) in on_screen, f"{color} is not on the screenshot"


def test_the_browser_check_sees_console_errors(tmp_path: Path) -> None:
    """The check can fail: a page that throws shows up in the console lines."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>notAFunction();</script>", encoding="utf-8")
    rendered = render(page, tmp_path / "broken.png", width=400, height=300)
    assert any("Uncaught ReferenceError" in line for line in rendered.console), rendered.console
