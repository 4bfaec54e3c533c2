"""Fargate task sizes: the valid CPU/memory pairs, their price, and the smallest size for a peak.

The prices themselves live in ``prices`` (one place for every cost figure).

The pairs are the ones ECS accepts for a Fargate task (Linux, platform 1.4.0+; the 8 and
16 vCPU sizes need it). ``cpu`` is in CPU units (1024 = 1 vCPU), ``memory`` in MiB, as in a
task definition.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, get_args

from .prices import PRICES, PRICES_SOURCE, Architecture, Price

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ARCHITECTURES",
    "FARGATE_SIZES",
    "HOURS_PER_MONTH",
    "PRICES",
    "PRICES_SOURCE",
    "Architecture",
    "Price",
    "SizeChoice",
    "TaskSize",
    "all_sizes",
    "allowed_memory_mib",
    "choose_size",
    "parse_cpu_units",
    "parse_memory_mib",
    "price_per_hour",
]

CPU_UNITS_PER_VCPU = 1024
MIB_PER_GB = 1024
HOURS_PER_MONTH = 730  # AWS's own convention in its pricing calculator


def _steps(first_gb: int, last_gb: int, step_gb: int) -> tuple[int, ...]:
    return tuple(gb * MIB_PER_GB for gb in range(first_gb, last_gb + 1, step_gb))


ARCHITECTURES: tuple[Architecture, ...] = get_args(Architecture)


# Source: AWS ECS developer guide, "Task CPU and memory" (Fargate).
FARGATE_SIZES: Mapping[int, tuple[int, ...]] = MappingProxyType(
    {
        256: (512, 1024, 2048),
        512: _steps(1, 4, 1),
        1024: _steps(2, 8, 1),
        2048: _steps(4, 16, 1),
        4096: _steps(8, 30, 1),
        8192: _steps(16, 60, 4),
        16384: _steps(32, 120, 8),
    }
)


@dataclass(frozen=True, slots=True)
class TaskSize:
    """One valid Fargate task size."""

    cpu_units: int
    memory_mib: int

    @property
    def vcpu(self) -> float:
        """The size in vCPUs."""
        return self.cpu_units / CPU_UNITS_PER_VCPU

    @property
    def memory_gb(self) -> float:
        """The memory in GB (GiB, as Fargate bills it)."""
        return self.memory_mib / MIB_PER_GB


def price_per_hour(size: TaskSize, architecture: Architecture) -> float:
    """On-demand dollars per hour for ``size`` on ``architecture`` (see PRICES_SOURCE)."""
    price = PRICES[architecture]
    return size.vcpu * price.vcpu_hour + size.memory_gb * price.gb_hour


def allowed_memory_mib(cpu_units: int) -> tuple[int, ...]:
    """The memory values (MiB) Fargate accepts with ``cpu_units``; empty if the CPU is invalid."""
    return FARGATE_SIZES.get(cpu_units, ())


def all_sizes() -> list[TaskSize]:
    """Every valid size, smallest CPU first, then smallest memory."""
    return [TaskSize(cpu, memory) for cpu, memories in FARGATE_SIZES.items() for memory in memories]


@dataclass(frozen=True, slots=True)
class SizeChoice:
    """What a measured peak needs, with headroom, and the cheapest size that holds it."""

    peak_vcpu: float
    peak_memory_mib: float
    headroom: float
    needed_vcpu: float
    needed_memory_mib: float
    size: TaskSize | None  # None: more than the largest Fargate task

    @property
    def cpu_utilization_at_peak(self) -> float | None:
        """The measured CPU peak as a fraction of the chosen size."""
        return None if self.size is None else self.peak_vcpu / self.size.vcpu

    @property
    def memory_utilization_at_peak(self) -> float | None:
        """The measured memory peak as a fraction of the chosen size."""
        return None if self.size is None else self.peak_memory_mib / self.size.memory_mib


def choose_size(
    *, cpu_percent: float, memory_mib: float, measured_vcpu: float = 1.0, headroom: float = 0.3
) -> SizeChoice:
    """The cheapest Fargate size holding a measured peak plus ``headroom`` (0.3 = 30% more).

    ``cpu_percent`` is relative to ``measured_vcpu``: CloudWatch's ECS ``CPUUtilization`` is a
    percentage of the task's CPU (pass the task's vCPUs), ``top`` and ``docker stats`` show a
    percentage of one core (keep the default of 1).
    """
    if cpu_percent < 0 or memory_mib < 0 or measured_vcpu <= 0 or headroom < 0:
        raise ValueError("measurements and headroom must not be negative")
    peak_vcpu = cpu_percent / 100 * measured_vcpu
    needed_vcpu = peak_vcpu * (1 + headroom)
    needed_memory = memory_mib * (1 + headroom)
    fitting = [
        size
        for size in all_sizes()
        # A tiny tolerance so that an exact fit (e.g. 50% of 2 vCPU) is not pushed up by rounding.
        if size.vcpu + 1e-9 >= needed_vcpu and size.memory_mib + 1e-6 >= needed_memory
    ]
    chosen = min(fitting, key=lambda s: price_per_hour(s, "X86_64"), default=None)
    return SizeChoice(
        peak_vcpu=peak_vcpu,
        peak_memory_mib=memory_mib,
        headroom=headroom,
        needed_vcpu=needed_vcpu,
        needed_memory_mib=needed_memory,
        size=chosen,
    )


_CPU = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(vcpu)?\s*$", re.IGNORECASE)
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gb)?\s*$", re.IGNORECASE)


def _parse(value: object, pattern: re.Pattern[str], unit: int) -> int | None:
    # ECS takes "1024" as well as "1 vCPU" / "2 GB"; a JSON number is accepted too.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    match = pattern.match(text)
    if match is None:
        return None
    number = float(match.group(1)) * (unit if match.group(2) else 1)
    return int(number) if math.isclose(number, round(number)) else None


def parse_cpu_units(value: object) -> int | None:
    """Task-level ``cpu`` ("256", "0.25 vCPU", 256) in CPU units; None if unreadable."""
    return _parse(value, _CPU, CPU_UNITS_PER_VCPU)


def parse_memory_mib(value: object) -> int | None:
    """Task-level ``memory`` ("2048", "2 GB", 2048) in MiB; None if unreadable."""
    return _parse(value, _MEMORY, MIB_PER_GB)
