"""Telemetry settings (env prefix ``FARGATE_RUNTIME_TELEMETRY_``)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..settings import ENV_PREFIX

__all__ = ["TELEMETRY_ENV_PREFIX", "TelemetrySettings", "redacted_endpoint"]

TELEMETRY_ENV_PREFIX = f"{ENV_PREFIX}TELEMETRY_"


class TelemetrySettings(BaseSettings):
    """Telemetry settings (env prefix ``FARGATE_RUNTIME_TELEMETRY_``).

    Off by default. On without an endpoint, spans and metrics are made (trace ids reach the
    logs) but not exported. OTLP requests are given at most the supervisor's close share
    (``FARGATE_RUNTIME_CLOSE_SECONDS``) each, so the final flush can end inside it.
    """

    model_config = SettingsConfigDict(env_prefix=TELEMETRY_ENV_PREFIX, extra="ignore", frozen=True)

    enabled: bool = False
    # OTLP over HTTP, e.g. the ADOT collector sidecar at http://127.0.0.1:4318. None: no export.
    otlp_endpoint: str | None = None
    # Head sampling of new traces; a producer's or caller's sampled trace is always continued.
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    metric_export_interval_seconds: float = Field(default=60.0, gt=0.0)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:4318")
        return value.strip()


def redacted_endpoint(endpoint: str) -> str:
    """``endpoint`` without credentials or query, fit for a log line."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
