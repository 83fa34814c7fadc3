"""Small ASGI helpers for the collector's hot path, which runs without a framework."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

NO_STORE = [
    (b"cache-control", b"no-store, no-cache, must-revalidate, private"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
CORS = [(b"access-control-allow-origin", b"*")]


class BodyTooLarge(Exception):
    """The request body is longer than the endpoint accepts; ``head`` contains its first bytes."""

    def __init__(self, head: bytes, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.head = head
        self.limit = limit


class ClientDisconnected(Exception):
    pass


async def respond(send: Send, status: int, body: bytes, content_type: bytes,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    all_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        all_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, payload: object,
                       headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await respond(send, status, orjson.dumps(payload), b"application/json", headers)


async def respond_error(send: Send, status: int, code: str, message: str,
                        details: list[object] | None = None,
                        headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send the one JSON error shape: ``{"error": {"code", "message", "details"?}}``."""
    error: dict[str, object] = {"code": code, "message": message}
    if details:
        error["details"] = details
    await respond_json(send, status, {"error": error}, headers)


async def read_body(receive: Receive, limit: int) -> bytes:
    """Read the whole body; raise ``BodyTooLarge`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            raise BodyTooLarge(b"".join(chunks)[:limit], limit)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header_map(scope: Scope, wanted: frozenset[bytes]) -> dict[bytes, str]:
    """Return the wanted request headers, decoded as Latin-1 (lossless for any byte)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in wanted:
            found[name] = value.decode("latin-1")
    return found
