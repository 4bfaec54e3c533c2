"""Settings of the HTTP server (env prefix ``FARGATE_RUNTIME_HTTP_``) and how they meet the budget.

How an HTTP task spends its drain budget (defaults: stop timeout 30 s, drain 23 s)::

    SIGTERM                                                        drain deadline
    |<------------------------ drain_seconds (23) ------------------------>|
    |<- lame_duck_seconds (5) ->|<---- in-flight requests finish -------->|
      /readyz 503, requests     | listeners closed, idle keep-alive        | still running:
      still served, responses   | connections closed, responses carry      | cut (503),
      carry "Connection: close" | "Connection: close"                      | exit 75
                                |<- request_drain_seconds (10): minimum ->|

Deploys deregister the target before SIGTERM, but a manual ``StopTask`` and (since a Sep 2025
regression) Fargate Spot may not: the lame duck keeps answering while the load balancer catches
up. Settings whose lame duck leaves less than ``request_drain_seconds`` to the requests in flight
are refused at start with ``ConfigurationError`` (exit 78).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..errors import ConfigurationError
from ..settings import ENV_PREFIX

if TYPE_CHECKING:
    from ..settings import ShutdownBudget

__all__ = ["HTTP_ENV_PREFIX", "HttpIdempotencySettings", "HttpSettings"]

HTTP_ENV_PREFIX = f"{ENV_PREFIX}HTTP_"
_IDEMPOTENCY_ENV_PREFIX = f"{HTTP_ENV_PREFIX}IDEMPOTENCY_"


class HttpSettings(BaseSettings):
    """Where the ASGI app listens and how it leaves: lame duck, request drain, keep-alive."""

    model_config = SettingsConfigDict(env_prefix=HTTP_ENV_PREFIX, extra="ignore", frozen=True)

    # All interfaces: in awsvpc mode the load balancer reaches the task on its ENI address.
    host: str = "0.0.0.0"  # noqa: S104 - a container's listener must be reachable from the ALB
    # 0 picks a free port (tests); the bound one is ``HttpServer.port``.
    port: int = Field(default=8000, ge=0, le=65535)
    # Serving on after SIGTERM while /readyz says 503, for load balancers that still route here.
    lame_duck_seconds: float = Field(default=5.0, ge=0.0)
    # The least time requests in flight get after the listeners close; they may use whatever is
    # left of the drain budget, and are cut (503, exit 75) at the drain deadline.
    request_drain_seconds: float = Field(default=10.0, gt=0.0)
    # Above the ALB idle timeout (60 s): the load balancer must be the side that closes an idle
    # connection. If the target closes first, the ALB can send a request on a connection the
    # target is closing and answers the client 502 (AWS: "configure the idle timeout of your
    # application to be larger than the idle timeout configured for the load balancer").
    # uvicorn's own default is 5 s.
    keep_alive_seconds: int = Field(default=75, ge=1)
    # The load balancer's idle timeout, to refuse a keep-alive at or below it; 0 when there is no
    # load balancer in front (local runs, service-to-service calls).
    load_balancer_idle_timeout_seconds: int = Field(default=60, ge=0, le=4000)
    # Bound on the app's lifespan shutdown (closing its own pools), inside the close budget.
    lifespan_shutdown_seconds: float = Field(default=2.0, gt=0.0)
    # Served by the runtime in front of the app, from the supervisor's lifecycle; "" disables.
    liveness_path: str = "/healthz"
    readiness_path: str = "/readyz"
    # uvicorn's text access log; off by default, ``RequestContextMiddleware`` logs JSON instead.
    access_log: bool = False
    backlog: int = Field(default=2048, ge=1)

    @model_validator(mode="after")
    def _keep_alive_outlives_load_balancer(self) -> HttpSettings:
        idle = self.load_balancer_idle_timeout_seconds
        if idle and self.keep_alive_seconds <= idle:
            p = HTTP_ENV_PREFIX
            raise ConfigurationError(
                f"{p}KEEP_ALIVE_SECONDS={self.keep_alive_seconds} must be above "
                f"{p}LOAD_BALANCER_IDLE_TIMEOUT_SECONDS={idle}: when the target closes an idle "
                "connection first, the load balancer answers 502 (set the latter to 0 when no "
                "load balancer is in front)"
            )
        return self

    def check_budget(self, budget: ShutdownBudget) -> None:
        """Raise ConfigurationError, naming the variables, when lame duck + drain won't fit."""
        needed = self.lame_duck_seconds + self.request_drain_seconds
        if needed > budget.drain_seconds:
            p = HTTP_ENV_PREFIX
            raise ConfigurationError(
                f"{p}LAME_DUCK_SECONDS {self.lame_duck_seconds:g} + {p}REQUEST_DRAIN_SECONDS "
                f"{self.request_drain_seconds:g} = {needed:g} s does not fit the drain budget of "
                f"{budget.drain_seconds:g} s ({ENV_PREFIX}DRAIN_SECONDS, or "
                f"{ENV_PREFIX}STOP_TIMEOUT_SECONDS {budget.stop_timeout_seconds:g} minus margin, "
                "release and close): shorten them or raise the stop timeout"
            )


class HttpIdempotencySettings(BaseSettings):
    """Limits and timings of ``IdempotencyMiddleware`` (env prefix ``..._HTTP_IDEMPOTENCY_``).

    ``retention_seconds`` is how long a completed key replays its response: it is the retention
    policy the draft asks servers to publish, and the API's documentation should state it.
    """

    model_config = SettingsConfigDict(
        env_prefix=_IDEMPOTENCY_ENV_PREFIX, extra="ignore", frozen=True
    )

    # 24 h, as common public APIs do: long enough for a client's retries after an outage.
    retention_seconds: float = Field(default=86_400.0, gt=0.0)
    # A claim outlives a crashed process by at most this long; renewed while a request runs.
    lease_seconds: float = Field(default=30.0, ge=1.0)
    # At most 255: the store's own limit on a key (``idempotency.keys.MAX_KEY_LENGTH``).
    max_key_length: int = Field(default=255, ge=1, le=255)
    # The request body is buffered to fingerprint it; larger bodies are refused with 413.
    max_body_bytes: int = Field(default=1_048_576, ge=0)
    # A larger response is sent whole once; only its status and headers are kept (a retry gets
    # them with a note for the body, never a second run). The store has its own limit on a
    # record (256 KiB by default); going over it does the same.
    max_response_bytes: int = Field(default=256 * 1024, ge=0)
    # Bound on releasing a claim when the request failed or was cut.
    release_timeout_seconds: float = Field(default=2.0, gt=0.0)
