"""Signed tokens for email-open pixels and click redirects.

A token is ``base64url(JSON payload) "." base64url(HMAC-SHA256(secret, purpose "." payload))``,
with the MAC cut to 16 bytes. The purpose ("open" or "click") is part of the signed text, so an
open token cannot be replayed as a click token and the other way round.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, Literal

import orjson

Purpose = Literal["open", "click"]
MAC_BYTES = 16
MAX_TOKEN_CHARS = 4096


class BadToken(Exception):
    """A token is malformed, too long or carries a signature that does not match."""


def sign(secret: bytes, purpose: Purpose, payload: dict[str, Any]) -> str:
    body = _b64encode(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    return f"{body}.{_mac(secret, purpose, body)}"


def verify(secret: bytes, purpose: Purpose, token: str) -> dict[str, Any]:
    """Return the payload of a valid token; raise ``BadToken`` otherwise."""
    if len(token) > MAX_TOKEN_CHARS:
        raise BadToken(f"token longer than {MAX_TOKEN_CHARS} characters")
    body, dot, mac = token.partition(".")
    if not dot or not body or not mac:
        raise BadToken("token has no signature part")
    if not hmac.compare_digest(mac, _mac(secret, purpose, body)):
        raise BadToken("token signature does not match")
    try:
        payload = orjson.loads(_b64decode(body))
    except (binascii.Error, ValueError) as exc:
        raise BadToken("token payload is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise BadToken("token payload is not a JSON object")
    return payload


def _mac(secret: bytes, purpose: str, body: str) -> str:
    digest = hmac.new(secret, f"{purpose}.{body}".encode(), hashlib.sha256).digest()
    return _b64encode(digest[:MAC_BYTES])


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
