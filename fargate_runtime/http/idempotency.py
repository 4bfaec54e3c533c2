"""Idempotency-Key for HTTP: a pure ASGI middleware on the idempotency store.

It follows draft-ietf-httpapi-idempotency-key-header: for the configured methods and routes, a
request carries ``Idempotency-Key``; the first one with a key runs, and a retry with the same key
gets the first response again instead of running twice::

    request ─▶ key missing (required)        400
               key malformed / too long       400
               same key, other request        422  (fingerprint: method, path, query, body)
               same key, still running        409  Retry-After: 1
               same key, completed            the stored status, headers and body, byte for
                                              byte, with "Idempotent-Replayed: true"
               store unreachable              503  Retry-After: 1 (fail closed: nothing ran)
               new key ─▶ the app runs
                          2xx, 4xx            stored before the last body byte is sent, kept
                                              for ``retention_seconds`` (24 h by default);
                                              too large to keep: its status and headers, with
                                              a note for the body (never a second run)
                          5xx, exception,     the key is released: a retry runs again
                          cut at shutdown

Keys are scoped per client (``principal``: an API key, a tenant header, ...) and per route, so
another client's key, or the same key on another route, never replays. Errors are
``application/problem+json`` (RFC 9457). Retention is not sent in a header: document it in the
API's documentation (``HttpIdempotencySettings.retention_seconds``), as the draft suggests.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from http import HTTPStatus
from typing import TYPE_CHECKING

from ..errors import IdempotencyKeyError, StoreUnavailableError
from ..idempotency import (
    ClaimRequest,
    ClaimResult,
    ClaimStatus,
    Held,
    attempt_owner,
    fingerprint,
    scoped_key,
)
from ..settings import load_settings
from ..telemetry import IdempotencyOutcome, mark_idempotency_outcome
from ._execution import Execution
from ._keys import (
    STATE_NAME,
    IdempotencyClaim,
    Principal,
    Route,
    header_principal,
    idempotency_claim,
    parse_key,
)
from ._replay import StoredResponse
from .settings import HttpIdempotencySettings

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from starlette.types import ASGIApp, Receive, Scope, Send

    from ..idempotency import IdempotencyStore

__all__ = [
    "IdempotencyClaim",
    "IdempotencyMiddleware",
    "Principal",
    "header_principal",
    "idempotency_claim",
    "parse_key",
]

logger = logging.getLogger("fargate_runtime.http.idempotency")

_HEADER = b"idempotency-key"
_REPLAYED = (b"idempotent-replayed", b"true")
_ANONYMOUS = "anonymous"
# The outcome on the request's span (when one records): claimed, replayed, 409, 422.
_OUTCOMES = {
    ClaimStatus.ACQUIRED: IdempotencyOutcome.CLAIMED,
    ClaimStatus.COMPLETED: IdempotencyOutcome.REPLAYED,
    ClaimStatus.IN_PROGRESS: IdempotencyOutcome.IN_PROGRESS,
    ClaimStatus.MISMATCH: IdempotencyOutcome.MISMATCH,
}


class IdempotencyMiddleware:
    """Make ``methods`` on ``routes`` safe to retry with an ``Idempotency-Key`` header.

    Usage with Starlette (FastAPI's ``app.add_middleware`` takes the same arguments)::

        app = Starlette(
            routes=[...],
            middleware=[
                Middleware(
                    IdempotencyMiddleware,
                    store=RedisStore(redis),
                    principal=header_principal("x-api-key"),
                    routes=["/payments", "/payments/{id}/refunds"],
                )
            ],
        )

    ``routes`` are path patterns (``{name}`` is one segment; None: every path); the pattern, not
    the concrete path, scopes the key, so one key used on ``/payments/1/refunds`` and then on
    ``/payments/2/refunds`` is a 422. ``principal`` names the client; requests without one share
    the ``anonymous`` scope. With ``required=False`` a request without a key just runs.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: IdempotencyStore,
        principal: Principal,
        routes: Sequence[str] | None = None,
        methods: Collection[str] = ("POST", "PATCH"),
        required: bool = True,
        prefix: str = "http",
        settings: HttpIdempotencySettings | None = None,
        owner: str | None = None,
    ) -> None:
        self._app = app
        self._store = store
        self._principal = principal
        self._routes = None if routes is None else [Route(pattern) for pattern in routes]
        self._methods = frozenset(method.upper() for method in methods)
        self._required = required
        self._prefix = prefix
        self._settings = (
            settings if settings is not None else load_settings(HttpIdempotencySettings)
        )
        self._owner = owner or f"http:{socket.gethostname()}:{os.getpid()}"
        # Fail at construction, not on the first request, on a prefix the store would refuse.
        scoped_key(prefix, "check", "check")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route_of(scope)
        values = [] if route is None else [v for n, v in scope["headers"] if n == _HEADER]
        if route is None or (not values and not self._required):
            await self._app(scope, receive, send)
            return
        try:
            key, stored_key, body = await self._admit(scope, receive, route, values)
            claim = await self._claim(scope, stored_key, body)
        except _Problem as problem:
            await problem.send(send)
            return
        except _ClientGone:
            return  # nothing ran, nobody to answer
        mark_idempotency_outcome(_OUTCOMES[claim.status])
        if claim.status is ClaimStatus.COMPLETED:
            await self._replay(send, claim.result or b"", key=stored_key)
        elif claim.status is ClaimStatus.IN_PROGRESS:
            await _Problem(
                409,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
                retry=True,
            ).send(send)
        elif claim.status is ClaimStatus.MISMATCH:
            await _Problem(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request",
            ).send(send)
        else:
            # ACQUIRED always carries our new fencing token.
            held = Held(stored_key, int(claim.token or 0))
            state = scope.setdefault("state", {})
            state[STATE_NAME] = IdempotencyClaim(key, held.token, stored_key)
            execution = Execution(self._app, self._store, self._settings, held)
            await execution.run(scope, receive, send, body)

    def _route_of(self, scope: Scope) -> str | None:
        """The route pattern scoping this request's key; None when the request is not guarded."""
        if scope["type"] != "http" or scope["method"] not in self._methods:
            return None
        path: str = scope["path"]
        if self._routes is None:
            return path
        return next((route.pattern for route in self._routes if route.matches(path)), None)

    async def _admit(
        self, scope: Scope, receive: Receive, route: str, values: list[bytes]
    ) -> tuple[str, str, bytes]:
        """The client's key, the stored key and the body; _Problem when the request is unfit."""
        settings = self._settings
        if not values:
            raise _Problem(
                400, "idempotency_key_missing", "this request needs an Idempotency-Key header"
            )
        if len(values) > 1:
            raise _Problem(400, "idempotency_key_invalid", "send exactly one Idempotency-Key")
        try:
            key = parse_key(values[0], max_length=settings.max_key_length)
            client = self._principal(scope) or _ANONYMOUS
            # An unprintable path (when every path is a route) is refused here too.
            stored_key = scoped_key(self._prefix, f"{client} {route}", key)
        except IdempotencyKeyError as exc:
            raise _Problem(400, "idempotency_key_invalid", str(exc)) from exc
        body = await _read_body(scope, receive, settings.max_body_bytes)
        if body is None:
            raise _Problem(
                413,
                "request_too_large",
                f"the body of an idempotent request may be at most {settings.max_body_bytes} bytes",
            )
        return key, stored_key, body

    async def _claim(self, scope: Scope, stored_key: str, body: bytes) -> ClaimResult:
        """One round trip: claim the key with the request's fingerprint (503 when unreachable)."""
        target = scope.get("raw_path") or scope["path"].encode()
        parts = (scope["method"].encode(), target, scope.get("query_string", b""), body)
        request = ClaimRequest(stored_key, fingerprint(b"\0".join(parts)))
        try:
            # Each request is its own attempt: two requests with one key never pass as the same.
            [claim] = await self._store.claim_many(
                [request],
                owner=attempt_owner(self._owner),
                lease_seconds=self._settings.lease_seconds,
            )
        except StoreUnavailableError as exc:
            mark_idempotency_outcome(IdempotencyOutcome.STORE_ERROR)
            logger.exception("idempotency store unavailable; request refused")
            raise _Problem(503, "idempotency_store_unavailable", "retry later", retry=True) from exc
        return claim

    async def _replay(self, send: Send, record: bytes, *, key: str) -> None:
        try:
            stored = StoredResponse.decode(record)
        except ValueError:
            logger.exception("stored idempotent response unreadable", extra={"key": key})
            await _Problem(
                500,
                "idempotency_record_unreadable",
                "the stored response for this Idempotency-Key cannot be read",
            ).send(send)
            return
        headers = [*stored.headers, _REPLAYED]
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body})


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it is larger than ``limit``."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Problem(Exception):
    """An RFC 9457 problem answer; ``code`` is a stable, machine-readable member."""

    def __init__(self, status: int, code: str, detail: str, *, retry: bool = False) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry = retry

    async def send(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": HTTPStatus(self.status).phrase,
                "status": self.status,
                "detail": self.detail,
                "code": self.code,
            }
        ).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if self.retry:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
