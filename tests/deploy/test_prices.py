"""The cost of a million messages, from the prices kept in one place."""

from __future__ import annotations

import pytest

from fargate_runtime.deploy.prices import (
    PRICES,
    SQS_USD_PER_MILLION_REQUESTS,
    cost_per_million_messages,
)
from fargate_runtime.deploy.sizing import PRICES as SIZING_PRICES


def test_batched_consumer_pays_eight_cents_of_requests_per_million() -> None:
    """0.2 requests per message are 200,000 requests: $0.08 at $0.40 per million."""
    cost = cost_per_million_messages(requests_per_message=0.2, cpu_ms_per_message=0.0)
    assert cost.sqs_requests_usd == pytest.approx(0.2 * SQS_USD_PER_MILLION_REQUESTS)
    assert cost.cpu_usd == 0.0


def test_cpu_charge_is_the_vcpu_hours_burnt_at_the_architectures_price() -> None:
    """3.6 CPU ms per message are one vCPU-hour per million messages."""
    x86 = cost_per_million_messages(requests_per_message=0.0, cpu_ms_per_message=3.6)
    arm = cost_per_million_messages(
        requests_per_message=0.0, cpu_ms_per_message=3.6, architecture="ARM64"
    )
    assert x86.cpu_usd == pytest.approx(PRICES["X86_64"].vcpu_hour)
    assert arm.cpu_usd == pytest.approx(PRICES["ARM64"].vcpu_hour)
    assert x86.total_usd == pytest.approx(x86.cpu_usd)


def test_negative_figures_are_refused() -> None:
    """A negative measurement is a bug in the caller, not a discount."""
    with pytest.raises(ValueError, match="cannot be negative"):
        cost_per_million_messages(requests_per_message=-0.1, cpu_ms_per_message=0.4)


def test_sizing_prices_tasks_with_the_same_table() -> None:
    """The size table and the cost table read one set of prices."""
    assert SIZING_PRICES is PRICES
