"""The live progress line on stderr: one line redrawn on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

__all__ = ["Progress", "ProgressState"]

# Not a terminal (CI, a pipe): a plain line this often instead of redrawing.
_PLAIN_EVERY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ProgressState:
    """One moment of the drill, as the progress line shows it."""

    at: float
    sent: int
    to_send: int
    charged: int
    unique: int
    queued: int
    in_flight: int
    workers: int
    draining: int
    sigterms: int
    kills: int
    dead_lettered: int

    def text(self) -> str:
        """``[ 12.3s] sent 300/1320 · charged 280/1200 · ...``."""
        return (
            f"[{self.at:6.1f}s] sent {self.sent}/{self.to_send} | charged {self.charged}/"
            f"{self.unique} | queue {self.queued} (+{self.in_flight} in flight) | workers "
            f"{self.workers} ({self.draining} draining) | SIGTERM {self.sigterms} | "
            f"SIGKILL {self.kills} | DLQ {self.dead_lettered}"
        )


class Progress:
    """Writes progress states; ``enabled=False`` writes nothing (``--quiet``, tests)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = enabled and self._stream.isatty()
        self._last_plain = -_PLAIN_EVERY_SECONDS
        self._drawn = False

    def show(self, state: ProgressState) -> None:
        """Redraw the line (terminal) or print it every few seconds (anything else)."""
        if not self._enabled:
            return
        if self._tty:
            self._stream.write("\r\x1b[2K" + state.text())
            self._drawn = True
        elif state.at - self._last_plain >= _PLAIN_EVERY_SECONDS:
            self._stream.write(state.text() + "\n")
            self._last_plain = state.at
        self._stream.flush()

    def say(self, message: str) -> None:
        """A line of its own (a phase of the drill), above the progress line."""
        if not self._enabled:
            return
        self.finish()
        self._stream.write(message + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """End the redrawn line so the next output starts on a fresh one."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
