"""moto's SQS served with keep-alive (waitress), counting every request per queue and action.

moto's own server (werkzeug) answers ``Connection: close``: every SQS call opens a new TCP
connection (795 connections for about 800 requests), which real SQS does not do, and which
inflates the client's CPU per call. The benchmarks serve the same WSGI app with waitress instead,
which keeps connections open as SQS does. The count happens here, at the server, so it is what
SQS would bill whichever client sent it (aiobotocore, boto3, kombu).

``python -m bench._moto_keepalive PORT`` runs the server; ``KeepAliveMoto`` starts it as a child
process on a free loopback port. ``GET /_bench/requests`` answers the counts as JSON:
``{"queues": {NAME: {ACTION: n}}, "requests": n, "connections": n}``.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from fargate_runtime.local import MotoServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["SERVER_NAME", "KeepAliveMoto", "request_counts"]

SERVER_NAME = "moto under waitress (HTTP keep-alive)"
_COUNTS_PATH = "/_bench/requests"
# Long polls hold a thread for up to 20 s each: enough threads that they never queue.
_THREADS = 64

Environ = dict[str, Any]
StartResponse = Any


class _Counting:
    """WSGI middleware: counts each SQS request by queue and action, and client connections."""

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._by_queue: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._requests = 0
        self._connections: set[tuple[str, str]] = set()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == _COUNTS_PATH:
            return self._answer_counts(start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        action, queue = _action_and_queue(environ, body)
        with self._lock:
            self._requests += 1
            self._by_queue[queue][action] += 1
            self._connections.add((environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT", "")))
        return self._app(environ, start_response)

    def _answer_counts(self, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            answer = {
                "queues": {name: dict(actions) for name, actions in self._by_queue.items()},
                "requests": self._requests,
                "connections": len(self._connections),
            }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]


def _action_and_queue(environ: Environ, body: bytes) -> tuple[str, str]:
    """SQS's JSON protocol names the action in ``X-Amz-Target``; the query protocol in the form."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    fields: dict[str, Any]
    if target:
        action = target.rsplit(".", 1)[-1]
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            fields = {}
    else:
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        form.update(urllib.parse.parse_qs(environ.get("QUERY_STRING", "")))
        fields = {name: values[0] for name, values in form.items()}
        action = str(fields.get("Action", "unknown"))
    url = str(fields.get("QueueUrl") or fields.get("QueueName") or environ.get("PATH_INFO", ""))
    return action, url.rstrip("/").rsplit("/", 1)[-1] or "-"


def request_counts(endpoint_url: str) -> dict[str, Any]:
    """The server's counts so far."""
    # Loopback only: the URL is the benchmark's own server.
    with urllib.request.urlopen(endpoint_url + _COUNTS_PATH, timeout=5) as answer:  # noqa: S310
        counts: dict[str, Any] = json.load(answer)
    return counts


class KeepAliveMoto(MotoServer):
    """``MotoServer``, but moto's WSGI app under waitress: keep-alive, counted requests."""

    def start(self) -> None:
        """Start ``python -m bench._moto_keepalive PORT`` and wait until it answers HTTP."""
        argv = [sys.executable, "-m", "bench._moto_keepalive", str(self.port)]
        self._spawn(argv, ready=self._answers_http, hint="moto under waitress")


def main(port: int) -> None:
    """Serve moto's apps (all services, as ``moto_server`` does) on 127.0.0.1:PORT."""
    import waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = _Counting(DomainDispatcherApplication(create_backend_app))
    waitress.serve(
        app,
        host="127.0.0.1",
        port=port,
        threads=_THREADS,
        connection_limit=1000,
        channel_timeout=120,
        _quiet=True,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
