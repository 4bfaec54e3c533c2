"""The prices every cost figure uses, in one place, dated, with their source.

Fargate: us-east-1, Linux, on demand, per vCPU-hour and GB-hour (``sizing`` prices task sizes
with them). SQS: standard queues, per million requests, each 64 KiB chunk of a payload one
request, empty receives billed. ``cost_per_million_messages`` turns a consumer's measured CPU
and requests per message into dollars (the benchmarks' cost table). Check the AWS pricing pages
before relying on these: they change, and other regions differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "PRICES",
    "PRICES_READ",
    "PRICES_SOURCE",
    "SQS_USD_PER_MILLION_REQUESTS",
    "Architecture",
    "MessageCost",
    "Price",
    "cost_per_million_messages",
]

# When the figures below were read.
PRICES_READ: Final = "2026"

# Spelled as in a task definition's runtimePlatform.cpuArchitecture.
Architecture = Literal["X86_64", "ARM64"]


@dataclass(frozen=True, slots=True)
class Price:
    """On-demand price of one vCPU and one GB of memory for an hour, in US dollars."""

    vcpu_hour: float
    gb_hour: float


# Secondary sources, read in 2026. Spot (x86_64 and ARM64) is up to 70% off and varies, so no
# figure.
PRICES_SOURCE: Final = f"us-east-1 on-demand Linux prices, secondary sources, {PRICES_READ}"
PRICES: Mapping[Architecture, Price] = MappingProxyType(
    {
        "X86_64": Price(vcpu_hour=0.04048, gb_hour=0.004445),
        "ARM64": Price(vcpu_hour=0.03238, gb_hour=0.00356),
    }
)

# Amazon SQS pricing page, standard queues past the free tier (the first million requests a
# month are free), read in 2026. FIFO requests cost more ($0.50).
SQS_USD_PER_MILLION_REQUESTS: Final = 0.40


@dataclass(frozen=True, slots=True)
class MessageCost:
    """What one million messages cost a consumer, in US dollars."""

    sqs_requests_usd: float
    cpu_usd: float

    @property
    def total_usd(self) -> float:
        """SQS requests and CPU together."""
        return self.sqs_requests_usd + self.cpu_usd


def cost_per_million_messages(
    *,
    requests_per_message: float,
    cpu_ms_per_message: float,
    architecture: Architecture = "X86_64",
) -> MessageCost:
    """The SQS request charge and the CPU charge of a million messages.

    The CPU charge is the vCPU time the consumer burns, at the on-demand vCPU-hour price: what
    that share of a task costs when the task is kept busy (an idle task costs its whole size).
    Memory is billed by task size, not per message, so it is not in here.
    """
    if requests_per_message < 0 or cpu_ms_per_message < 0:
        raise ValueError("requests and CPU per message cannot be negative")
    cpu_hours = cpu_ms_per_message / 1000 * 1_000_000 / 3600
    return MessageCost(
        sqs_requests_usd=requests_per_message * SQS_USD_PER_MILLION_REQUESTS,
        cpu_usd=cpu_hours * PRICES[architecture].vcpu_hour,
    )
