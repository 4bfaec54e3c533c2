"""Capture log records as the runtime's JSON lines, in the logging call's own context."""

from __future__ import annotations

import json
import logging
from typing import Any

from fargate_runtime.logging import JsonFormatter


class JsonLines(logging.Handler):
    """Keeps every record as the JSON object the runtime's formatter makes of it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Formatted here, in the logging call's context: that is where the current span and
        # the bound correlation fields are.
        self.lines.append(json.loads(self.format(record)))

    def with_message(self, message: str) -> list[dict[str, Any]]:
        """The lines whose message is ``message``."""
        return [line for line in self.lines if line["message"] == message]
