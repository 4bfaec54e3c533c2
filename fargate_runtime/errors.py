"""The whole exception tree of fargate-runtime.

Every error the runtime raises derives from one root, and a caller acts on one of a few bases::

    FargateRuntimeError
    ├── ConfigurationError            bad settings; the process exits 78 at start
    ├── StartupError                  a resource or app failed to start (ASGI lifespan startup)
    ├── ShutdownError                 the supervisor could not run or stop as asked
    │   └── SignalHandlingError       signal handlers cannot be installed (not the main thread)
    ├── IdempotencyError
    │   ├── IdempotencyKeyError       the key is empty, too long or not printable
    │   ├── AlreadyInProgressError    another owner holds a live claim on the key
    │   ├── PayloadMismatchError      same key, different payload fingerprint
    │   ├── LeaseLostError            our claim expired or was taken over; we must not complete it
    │   ├── ResultTooLargeError       the result to store exceeds the configured limit
    │   ├── ResultUnavailableError    the work completed once, but its result cannot be replayed
    │   └── StoreUnavailableError     the store (Redis) could not be reached; fail closed
    └── ConsumerError
        ├── MalformedMessageError     a message body or key cannot be read; retried, then DLQ
        └── SqsError                  an SQS call failed (wraps botocore's error)

A completed duplicate is not an error: it is an outcome (the stored result replays). Third-party
errors (redis-py, botocore) are translated only where Redis or AWS is called, chained with
``from exc`` so the original stays in the traceback.
"""

from __future__ import annotations

__all__ = [
    "AlreadyInProgressError",
    "ConfigurationError",
    "ConsumerError",
    "FargateRuntimeError",
    "IdempotencyError",
    "IdempotencyKeyError",
    "LeaseLostError",
    "MalformedMessageError",
    "PayloadMismatchError",
    "ResultTooLargeError",
    "ResultUnavailableError",
    "ShutdownError",
    "SignalHandlingError",
    "SqsError",
    "StartupError",
    "StoreUnavailableError",
]


class FargateRuntimeError(Exception):
    """Root of every error raised by fargate-runtime."""


class ConfigurationError(FargateRuntimeError):
    """Settings are invalid or do not fit together; the process must not start (exit 78)."""


class StartupError(FargateRuntimeError):
    """A resource or the hosted app failed to start; the process exits 1 before serving."""


class ShutdownError(FargateRuntimeError):
    """The supervisor cannot run or stop the way it was asked to."""


class SignalHandlingError(ShutdownError):
    """Signal handlers cannot be installed here (for example outside the main thread)."""


class IdempotencyError(FargateRuntimeError):
    """Base of the errors raised by idempotency keys and their stores."""


class IdempotencyKeyError(IdempotencyError, ValueError):
    """An idempotency key is empty, longer than allowed or contains unprintable characters."""


class AlreadyInProgressError(IdempotencyError):
    """Another owner holds a live claim on the key; retry later rather than run twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} is being processed by another owner")
        self.key = key


class PayloadMismatchError(IdempotencyError):
    """The key was used before with a different payload fingerprint."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was used with a different payload")
        self.key = key


class LeaseLostError(IdempotencyError):
    """Our claim expired or belongs to someone else now; completing it would break fencing."""

    def __init__(self, key: str, token: int) -> None:
        super().__init__(f"lease lost on idempotency key {key!r} (fencing token {token})")
        self.key = key
        self.token = token


class ResultTooLargeError(IdempotencyError):
    """The serialized result is larger than the store is configured to keep."""


class ResultUnavailableError(IdempotencyError):
    """The key's work completed once, but its result cannot be replayed to this duplicate.

    The result could not be stored (not serializable, too large: the record was completed with
    a marker instead, so the work did not run again), or the stored bytes cannot be read.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was completed, but its result is not available: {reason}"
        )
        self.key = key
        self.reason = reason


class StoreUnavailableError(IdempotencyError):
    """The idempotency store could not be reached; the work is not done and must be retried."""


class ConsumerError(FargateRuntimeError):
    """Base of the errors raised by the SQS consumer."""


class MalformedMessageError(ConsumerError):
    """A message cannot be read (bad JSON, missing key field); it is retried, then dead-lettered."""


class SqsError(ConsumerError):
    """An SQS API call failed."""
