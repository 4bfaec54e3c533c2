"""Argument types for numbers: finite, in range, and an error that names the flag and the value.

``float()`` accepts ``inf``, ``nan`` and ``1e400``; none of them is a sane number of seconds,
vCPUs or events, and each used to travel on until it printed ``inf vCPU`` or never ended.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["bounded_float", "bounded_int", "parse_float"]


def parse_float(text: str) -> float:
    """``text`` as a finite float; ``ArgumentTypeError`` saying why not."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def bounded_float(
    *, minimum: float | None = None, maximum: float | None = None, above: float | None = None
) -> Callable[[str], float]:
    """A type for ``add_argument``: a finite float ``>= minimum``, ``> above``, ``<= maximum``."""

    def parse(text: str) -> float:
        value = parse_float(text)
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than {above:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at most {maximum:g}")
        return value

    return parse


def bounded_int(*, minimum: int, maximum: int) -> Callable[[str], int]:
    """A type for ``add_argument``: an integer in ``minimum..maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be {minimum}..{maximum}")
        return value

    return parse
