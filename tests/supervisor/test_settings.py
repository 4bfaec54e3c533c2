"""The shutdown budget arithmetic and the errors that name the offending setting."""

from __future__ import annotations

import pytest

from fargate_runtime import ConfigurationError, RuntimeSettings, load_settings


def test_default_budget_leaves_23_seconds_to_drain() -> None:
    """ECS's default 30 s stop timeout minus margin 2, release 2 and close 3 leaves 23 s."""
    budget = RuntimeSettings().budget()
    assert budget.total_seconds == 28
    assert budget.drain_seconds == 23


def test_explicit_drain_that_fits_is_kept() -> None:
    """An explicit drain_seconds inside the budget is used as given."""
    settings = RuntimeSettings(stop_timeout_seconds=120, drain_seconds=100)
    assert settings.budget().drain_seconds == 100


def test_drain_that_does_not_fit_names_every_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal shows the arithmetic with the environment variable names."""
    monkeypatch.setenv("FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS", "10")
    monkeypatch.setenv("FARGATE_RUNTIME_DRAIN_SECONDS", "9")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(RuntimeSettings)
    message = str(raised.value)
    assert "FARGATE_RUNTIME_DRAIN_SECONDS" in message
    assert "FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS 10" in message
    assert "= 16 s > " in message


def test_stop_timeout_too_short_for_release_and_close_is_refused() -> None:
    """A stop timeout that leaves no drain time at all is refused, not silently zeroed."""
    with pytest.raises(ConfigurationError, match="leaves no time to drain"):
        RuntimeSettings(stop_timeout_seconds=6, shutdown_margin_seconds=1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS", "121"),
        ("FARGATE_RUNTIME_STOP_TIMEOUT_SECONDS", "thirty"),
        ("FARGATE_RUNTIME_LOG_LEVEL", "LOUD"),
        ("FARGATE_RUNTIME_HEALTH_PORT", "70000"),
    ],
)
def test_invalid_values_name_the_variable_and_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Each invalid environment value is reported with its variable name and the value given."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings(RuntimeSettings)
    assert name in str(raised.value)
    assert value in str(raised.value)


def test_values_of_credential_like_settings_are_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad value of a URL/password/token setting is named but not shown (it may hold secrets)."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class CacheSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="CACHE_")
        redis_url: int = 0
        pool_size: int = 1

    monkeypatch.setenv("CACHE_REDIS_URL", "redis://:hunter2@cache:6379")
    monkeypatch.setenv("CACHE_POOL_SIZE", "many")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(CacheSettings)
    message = str(raised.value)
    assert "CACHE_REDIS_URL" in message
    assert "hunter2" not in message
    assert "(value hidden)" in message
    assert "'many'" in message
