"""JSON log lines on stdout with correlation fields bound through contextvars.

One JSON object per line is what the ``awslogs`` driver and FireLens ship as one event. Plain
stdlib ``logging`` stays underneath, so the users' own loggers flow through the same formatter.

Correlation fields (``message_id``, ``request_id``, ``trace_id``/``span_id``) come from the
context the line is logged in. An exception leaving a ``bind_log_context`` block takes them
along, so the line that reports it later, outside the block (uvicorn's "Exception in ASGI
application", a consumer's "handler failed"), still names the request or message it was about.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from opentelemetry import trace

__all__ = [
    "JsonFormatter",
    "bind_log_context",
    "configure_logging",
    "log_context",
    "log_context_of",
    "remember_log_context",
    "set_static",
    "span_log_fields",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "fargate_runtime_log_context", default=_EMPTY
)
# Fields on every line of the process: service name, ECS task identity.
_static: dict[str, Any] = {}

# Where an exception keeps the correlation fields of the block it left.
_EXCEPTION_FIELDS = "__fargate_runtime_log_context__"

# Attributes every LogRecord has; anything else came in through ``extra=`` and is logged.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


@contextlib.contextmanager
def bind_log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (message id, request id, ...) to every log line written inside the block.

    Bound through a contextvar, so each asyncio task sees its own fields. An exception leaving
    the block carries them (and the current span's ids) to wherever it is logged.
    """
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    except BaseException as exc:
        remember_log_context(exc)
        raise
    finally:
        _context.reset(token)


def remember_log_context(exc: BaseException) -> None:
    """Keep the current correlation fields (and span ids) on ``exc``, for where it is logged.

    The innermost block's fields, the most complete, win over those of blocks it leaves later.
    (An exception instance raised again later, a module-level singleton, keeps its first
    fields: raising one instance twice is rare, and Python grows its traceback each time.)
    """
    if _EXCEPTION_FIELDS in getattr(exc, "__dict__", {}):
        return
    remembered = {**_context.get(), **_trace_fields()}
    # Exceptions without a __dict__ (C types with slots) simply go without.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _EXCEPTION_FIELDS, remembered)


def log_context_of(exc: BaseException | None) -> Mapping[str, Any]:
    """The correlation fields in force where ``exc`` left a ``bind_log_context`` block."""
    if exc is None:
        return _EMPTY
    remembered = getattr(exc, "__dict__", {}).get(_EXCEPTION_FIELDS)
    return remembered if isinstance(remembered, dict) else _EMPTY


def log_context() -> Mapping[str, Any]:
    """The correlation fields bound in the current context."""
    return _context.get()


def set_static(**fields: Any) -> None:
    """Add fields to every log line of the process (``None`` removes one)."""
    for name, value in fields.items():
        if value is None:
            _static.pop(name, None)
        else:
            _static[name] = value


def span_log_fields(span: trace.Span | None) -> dict[str, str]:
    """``trace_id`` and ``span_id`` of ``span``, as the X-Ray/OTel consoles search them."""
    if span is None:
        return {}
    span_context = span.get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}


def _trace_fields() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span (none outside a span).

    Asked only once the OpenTelemetry API is loaded: before, no span can exist, and a worker
    without telemetry need not load it.
    """
    api = sys.modules.get("opentelemetry.trace")
    return {} if api is None else span_log_fields(api.get_current_span())


def _exception_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    """The correlation fields the logged exception brought from where it was raised."""
    if record.exc_info and record.exc_info[1] is not None:
        return log_context_of(record.exc_info[1])
    return _EMPTY


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What came in through ``extra=``: every attribute a plain LogRecord does not have."""
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _RECORD_ATTRIBUTES and not name.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: timestamp, level, logger, message, then context."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_static)
        line.update(_exception_fields(record))
        line.update(_context.get())
        line.update(_trace_fields())
        line.update(_extra_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    """Human-readable lines for local runs, with the bound context appended."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {**_exception_fields(record), **_context.get(), **_extra_fields(record)}
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


def configure_logging(
    *, level: int | str = logging.INFO, json_lines: bool = True, stream: TextIO | None = None
) -> None:
    """Send the root logger to ``stream`` (stdout) as JSON lines, replacing earlier handlers."""
    handler = logging.StreamHandler(stream or sys.stdout)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # botocore logs credentials lookups at DEBUG; keep third parties at WARNING unless asked.
    for noisy in ("botocore", "aiobotocore", "aioboto3", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
