"""The Fargate size table and the choice of the smallest size for a measured peak."""

from __future__ import annotations

import pytest

from fargate_runtime.deploy.sizing import (
    FARGATE_SIZES,
    TaskSize,
    all_sizes,
    choose_size,
    parse_cpu_units,
    parse_memory_mib,
    price_per_hour,
)


def test_table_matches_the_fargate_limits() -> None:
    """Each CPU's memory range and step, as the ECS documentation lists them."""
    gb = 1024
    expected = {
        256: [512, 1024, 2048],
        512: [n * gb for n in range(1, 5)],
        1024: [n * gb for n in range(2, 9)],
        2048: [n * gb for n in range(4, 17)],
        4096: [n * gb for n in range(8, 31)],
        8192: [n * gb for n in range(16, 61, 4)],
        16384: [n * gb for n in range(32, 121, 8)],
    }
    assert {cpu: list(memories) for cpu, memories in FARGATE_SIZES.items()} == expected


def test_prices() -> None:
    """1 vCPU and 2 GB: x86 $0.04048 + 2 x $0.004445, ARM $0.03238 + 2 x $0.00356 an hour."""
    size = TaskSize(1024, 2048)
    assert price_per_hour(size, "X86_64") == pytest.approx(0.04937)
    assert price_per_hour(size, "ARM64") == pytest.approx(0.0395)


@pytest.mark.parametrize(
    ("cpu_percent", "memory_mib", "vcpu", "headroom", "expected"),
    [
        (10, 200, 1, 0.3, (256, 512)),  # tiny: the smallest task
        (15, 600, 1, 0.3, (256, 1024)),  # 0.195 vCPU, 780 MiB
        (20, 600, 1, 0.3, (512, 1024)),  # 0.26 vCPU: just over a quarter
        (15, 1700, 1, 0.3, (512, 3072)),  # 2210 MiB: over 256's 2 GB, so 512 CPU
        (50, 1000, 2, 0.0, (1024, 2048)),  # exactly 1 vCPU fits 1 vCPU
        (45, 700, 1, 0.3, (1024, 2048)),  # 0.585 vCPU: 0.5 is too small
        (100, 6000, 4, 0.3, (8192, 16384)),  # 5.2 vCPU
        (0, 40000, 1, 0.3, (8192, 53248)),  # 52 000 MiB: 8 vCPU's 4 GB steps give 52 GB
        (0, 50000, 1, 0.3, (16384, 65536)),  # 65 000 MiB: above 8 vCPU's 60 GB
    ],
)
def test_choose_size(
    cpu_percent: float,
    memory_mib: float,
    vcpu: float,
    headroom: float,
    expected: tuple[int, int],
) -> None:
    """The cheapest valid pair at or above the peak plus headroom."""
    choice = choose_size(
        cpu_percent=cpu_percent, memory_mib=memory_mib, measured_vcpu=vcpu, headroom=headroom
    )
    assert choice.size is not None
    assert (choice.size.cpu_units, choice.size.memory_mib) == expected


def test_choice_is_the_cheapest_that_fits() -> None:
    """No valid size that holds the need costs less than the chosen one."""
    for cpu_percent in (5, 30, 90, 180, 400, 900):
        for memory in (300, 1500, 5000, 20000, 70000):
            choice = choose_size(cpu_percent=cpu_percent, memory_mib=memory)
            assert choice.size is not None
            cost = price_per_hour(choice.size, "X86_64")
            for size in all_sizes():
                if size.vcpu >= choice.needed_vcpu and size.memory_mib >= choice.needed_memory_mib:
                    assert price_per_hour(size, "X86_64") >= cost


def test_nothing_fits() -> None:
    """Above 16 vCPU or 120 GB there is no size."""
    assert choose_size(cpu_percent=1300, memory_mib=100).size is None
    assert choose_size(cpu_percent=10, memory_mib=100 * 1024).size is None


def test_negative_measurements_are_refused() -> None:
    """A negative peak is a caller's mistake."""
    with pytest.raises(ValueError, match="negative"):
        choose_size(cpu_percent=-1, memory_mib=100)


@pytest.mark.parametrize(
    ("text", "cpu", "memory"),
    [("256", 256, 256), ("1 vCPU", 1024, None), ("2 GB", None, 2048), (512, 512, 512)],
)
def test_parse_task_sizes(text: object, cpu: int | None, memory: int | None) -> None:
    """Units and GB forms are converted; what does not parse is None."""
    assert parse_cpu_units(text) == cpu
    assert parse_memory_mib(text) == memory


@pytest.mark.parametrize("text", [True, "lots", "1.3", None, [256]])
def test_unparseable_sizes(text: object) -> None:
    """Booleans, words, fractional units and other types are not sizes."""
    assert parse_cpu_units(text) is None
