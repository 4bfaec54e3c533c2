"""Redis Cluster hash slots: which keys may share one script, and where each fencing counter lives.

A script may only touch keys of one hash slot (CROSSSLOT otherwise), so a batch is split into one
script per slot. Each script also needs its scope's fencing counter in that same slot: the
counter of scope S for slot N is ``prefix:S:%fence{tag}``, where ``tag`` is a short string that
hashes to N. A key always maps to the same slot, hence to the same counter, so its tokens still
strictly increase. With hash-tagged scopes (``prefix:{S}:key``) the plain counter already shares
the slot and no tag is added.
"""

from __future__ import annotations

import functools
import itertools
import string
from typing import TYPE_CHECKING

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .keys import fence_base

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["fence_key", "group_by_slot", "slot_of", "slot_tag"]


def slot_of(key: str) -> int:
    """The Redis Cluster hash slot of ``key`` (honouring ``{hash tags}``)."""
    return key_slot(key.encode())


def _candidates() -> Iterator[str]:
    alphabet = string.ascii_lowercase + string.digits
    for length in itertools.count(1):
        for letters in itertools.product(alphabet, repeat=length):
            yield "".join(letters)


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    # Built once, on the first cluster batch: about 170k CRC16 sums, ~0.5 s of one core.
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing = REDIS_CLUSTER_HASH_SLOTS
    for candidate in _candidates():
        slot = key_slot(candidate.encode())
        if tags[slot] is None:
            tags[slot] = candidate
            missing -= 1
            if not missing:
                break
    return tuple(tag for tag in tags if tag is not None)


def slot_tag(slot: int) -> str:
    """The shortest lowercase/digit string (first found) whose hash slot is ``slot``."""
    return _slot_tags()[slot]


def fence_key(key: str, *, cluster: bool) -> str:
    """The fencing counter for ``key``: its scope's counter, in ``key``'s slot on a cluster."""
    base = fence_base(key)
    if not cluster:
        return base
    slot = slot_of(key)
    if slot_of(base) == slot:
        return base
    return f"{base}{{{slot_tag(slot)}}}"


def group_by_slot(keys: Sequence[str]) -> list[list[int]]:
    """Indices of ``keys`` grouped by hash slot, groups in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(slot_of(key), []).append(index)
    return list(groups.values())
