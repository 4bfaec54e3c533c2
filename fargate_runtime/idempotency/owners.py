"""Owner ids of claim attempts: what lets a retried claim recognise its own record, and only that.

A claim stores its owner id in the record. When the same owner claims a key it already holds,
the store answers ACQUIRED with the existing token (the lease restarted): that is a retry of a
call whose reply was lost (redis-py re-sends a command after a dropped connection; a caller may
retry after a timeout), and it must not find its own record "in progress" and strand the key for
a whole lease.

So an owner id names one **attempt**, never a process: two attempts on one key in one process
(a duplicate in the next SQS batch, two HTTP requests with the same Idempotency-Key, two tasks
entering one guard) have different owner ids and still exclude each other. A retry of the same
call passes the same id. ``attempt_owner(base)`` makes one::

    <base>/<process nonce>.<counter>      e.g. 158d1c8083dd49d6:7/3f9a0c1e22b4.42

``base`` says where it ran (``ecs.owner_id()``: task id and pid) for people reading records; the
nonce (random, drawn again in a forked child) keeps two processes apart even when they were
given the same base; the counter keeps the attempts of one process apart.

A caller whose attempts have a name of their own uses ``delivery_owner(base, name)`` instead:
the SQS consumer names each attempt by the message id, so a redelivery of one message to the
same process (after a release that did not reach the store, or a completion retried) finds its
own record, while a duplicate message with the same key (another message id) does not::

    <base>/<process nonce>.m.<message id>
"""

from __future__ import annotations

import itertools
import os
import secrets

__all__ = ["attempt_owner", "delivery_owner"]


class _Attempts:
    """This process's nonce and attempt counter (both renewed after a fork)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.nonce = secrets.token_hex(6)
        self.counter = itertools.count(1)


_attempts = _Attempts()
os.register_at_fork(after_in_child=_attempts.reset)


def attempt_owner(base: str) -> str:
    """A new owner id for one claim attempt; pass the same id again only to retry that call."""
    # next() on itertools.count is atomic under the GIL: threads never get the same number.
    return f"{base}/{_attempts.nonce}.{next(_attempts.counter)}"


def delivery_owner(base: str, delivery_id: str) -> str:
    """The owner id of every attempt at one delivery (an SQS message id) in this process."""
    return f"{base}/{_attempts.nonce}.m.{delivery_id}"
