"""``fargate-runtime size``: the smallest valid Fargate size for a measured peak, with its price."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from ..deploy.sizing import (
    ARCHITECTURES,
    HOURS_PER_MONTH,
    PRICES_SOURCE,
    SizeChoice,
    TaskSize,
    choose_size,
    price_per_hour,
)
from ._numbers import bounded_float

if TYPE_CHECKING:
    import argparse

__all__ = ["configure_parser", "run_command"]

EXIT_OK, EXIT_NO_FIT = 0, 1
# Figures in --json keep this many decimals (0.45 x 1.3 is 0.5850000000000001 in floats).
_DECIMALS = 4

_non_negative = bounded_float(minimum=0)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``size``."""
    parser.add_argument(
        "--cpu-percent",
        type=_non_negative,
        required=True,
        metavar="P",
        help="measured peak CPU, in percent of --vcpu (CloudWatch CPUUtilization, docker stats)",
    )
    parser.add_argument(
        "--memory-mib", type=_non_negative, required=True, metavar="M", help="measured peak memory"
    )
    parser.add_argument(
        "--vcpu",
        type=bounded_float(above=0, maximum=1024),
        default=1.0,
        metavar="V",
        help="vCPUs the percentage is of: the task's size for CloudWatch (default: 1, one core)",
    )
    parser.add_argument(
        "--headroom",
        type=bounded_float(minimum=0, maximum=10),
        default=0.3,
        metavar="H",
        help="spare capacity on top of the peak, 0..10 (default: 0.3, i.e. 30%%)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.epilog = "exit codes: 0 a size fits; 1 no Fargate size holds the peak; 2 bad arguments"


def _prices(size: TaskSize) -> dict[str, dict[str, float]]:
    return {
        architecture: {
            "per_hour": round(price_per_hour(size, architecture), 5),
            "per_month": round(price_per_hour(size, architecture) * HOURS_PER_MONTH, 2),
        }
        for architecture in ARCHITECTURES
    }


def _as_dict(choice: SizeChoice) -> dict[str, object]:
    size = choice.size
    cpu_use, memory_use = choice.cpu_utilization_at_peak, choice.memory_utilization_at_peak
    return {
        "peak": {"vcpu": _round(choice.peak_vcpu), "memory_mib": _round(choice.peak_memory_mib)},
        "headroom": choice.headroom,
        "needed": {
            "vcpu": _round(choice.needed_vcpu),
            "memory_mib": _round(choice.needed_memory_mib),
        },
        "size": None if size is None else {"cpu": size.cpu_units, "memory": size.memory_mib},
        "utilization_at_peak": None
        if size is None
        else {"cpu": _round(cpu_use), "memory": _round(memory_use)},
        "prices_usd": None if size is None else _prices(size),
        "prices_source": PRICES_SOURCE,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, _DECIMALS)


def _text(choice: SizeChoice) -> str:
    lines = [
        f"measured peak: {choice.peak_vcpu:.3g} vCPU, {choice.peak_memory_mib:g} MiB",
        f"with {choice.headroom:.0%} headroom: {choice.needed_vcpu:.3g} vCPU, "
        f"{choice.needed_memory_mib:.0f} MiB",
    ]
    size = choice.size
    if size is None:
        lines.append("no Fargate size holds that (largest: 16 vCPU, 120 GB): split the work")
        return "\n".join(lines) + "\n"
    cpu_use, memory_use = choice.cpu_utilization_at_peak, choice.memory_utilization_at_peak
    prices = _prices(size)
    x86, arm = prices["X86_64"], prices["ARM64"]
    lines += [
        f"smallest Fargate size: {size.vcpu:g} vCPU, {size.memory_gb:g} GB",
        f'  task definition: "cpu": "{size.cpu_units}", "memory": "{size.memory_mib}"',
        f"  at the measured peak: CPU {cpu_use or 0:.0%}, memory {memory_use or 0:.0%}",
        f"price ({PRICES_SOURCE}):",
        f"  X86_64 ${x86['per_hour']:.5f}/hour, ${x86['per_month']:.2f}/month",
        f"  ARM64  ${arm['per_hour']:.5f}/hour, ${arm['per_month']:.2f}/month",
        "  FARGATE_SPOT: up to 70% off, X86_64 and ARM64 (platform 1.4.0+); the discount varies",
    ]
    return "\n".join(lines) + "\n"


def run_command(args: argparse.Namespace) -> int:
    """Print the size (text or JSON); 1 when no Fargate size is large enough."""
    choice = choose_size(
        cpu_percent=args.cpu_percent,
        memory_mib=args.memory_mib,
        measured_vcpu=args.vcpu,
        headroom=args.headroom,
    )
    output = json.dumps(_as_dict(choice), indent=2) + "\n" if args.json else _text(choice)
    sys.stdout.write(output)
    return EXIT_OK if choice.size is not None else EXIT_NO_FIT
