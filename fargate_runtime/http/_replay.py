"""The stored form of an HTTP response, replayed byte for byte for a completed Idempotency-Key.

Layout (one bytes value in the store, no base64 or JSON escaping of the body)::

    b"FRH1" | meta length (4 bytes, big endian) | meta (JSON) | body
    meta = {"status": 201, "headers": [["content-type", "application/json"], ...]}

Header names and values are bytes on the wire; latin-1 maps each byte to one code point, so
they survive JSON unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["StoredResponse"]

_MAGIC = b"FRH1"
_LENGTH_BYTES = 4
_OMITTED_HEADER = b"idempotent-body-omitted"
# Headers that describe the body: not kept when the body is not.
_BODY_HEADERS = frozenset({b"content-length", b"content-type", b"content-encoding", b"etag"})
_OMITTED_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Response body not kept",
        "detail": "the first response to this Idempotency-Key was too large to keep; that "
        "request was processed once and is not run again. Its status and headers are replayed.",
    }
).encode()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """Status, headers (in order) and body of a response the app sent."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @classmethod
    def omitted(cls, status: int, headers: list[tuple[bytes, bytes]]) -> StoredResponse:
        """The status and headers of a response too large to keep, with a note for its body.

        Releasing the key instead would let a retry run the request a second time: the
        client could not tell it from the first, so it is charged twice.
        """
        kept = [(name, value) for name, value in headers if name.lower() not in _BODY_HEADERS]
        return cls(
            status,
            [
                *kept,
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(_OMITTED_BODY)).encode()),
                (_OMITTED_HEADER, b"true"),
            ],
            _OMITTED_BODY,
        )

    @property
    def body_omitted(self) -> bool:
        """True for a record made by ``omitted``."""
        return any(name == _OMITTED_HEADER for name, _ in self.headers)

    def encode(self) -> bytes:
        """The bytes kept in the store."""
        meta = json.dumps(
            {
                "status": self.status,
                "headers": [
                    [name.decode("latin-1"), value.decode("latin-1")]
                    for name, value in self.headers
                ],
            },
            separators=(",", ":"),
        ).encode()
        return b"".join((_MAGIC, len(meta).to_bytes(_LENGTH_BYTES, "big"), meta, self.body))

    @classmethod
    def decode(cls, data: bytes) -> StoredResponse:
        """Read what ``encode`` wrote; ValueError when it is not such a record."""
        if not data.startswith(_MAGIC):
            raise ValueError("not a stored HTTP response")
        start = len(_MAGIC) + _LENGTH_BYTES
        length = int.from_bytes(data[len(_MAGIC) : start], "big")
        try:
            meta = json.loads(data[start : start + length])
            status = int(meta["status"])
            headers = [
                (str(name).encode("latin-1"), str(value).encode("latin-1"))
                for name, value in meta["headers"]
            ]
        except (KeyError, TypeError, UnicodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"stored HTTP response has unreadable metadata: {exc}") from exc
        return cls(status, headers, data[start + length :])
