"""Removal of personal data from URLs, referrers and raw requests before storage."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

# An email address, plain or percent-encoded (%40 for the at sign).
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9.\-]+\.[A-Za-z]{2,}", re.I)
EMAIL_BYTES_RE = re.compile(rb"[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9.\-]+\.[A-Za-z]{2,}", re.I)
REDACTED = "redacted"


def scrub_url(url: str | None, params: Iterable[str]) -> str | None:
    """Drop the named query parameters (lower-case names; a frozenset is used as given) and
    every value that looks like an email address.

    The fragment is dropped too: it is client-side state, often an auth token."""
    if not url:
        return url
    if "?" not in url and "#" not in url and "@" not in url and "%40" not in url:
        return url  # nothing to remove: no query, no fragment, no email address
    try:
        parts = urlsplit(url)
    except ValueError:
        return EMAIL_RE.sub(REDACTED, url)
    banned = params if isinstance(params, frozenset) else {name.lower() for name in params}
    kept = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True, errors="replace"):
        if key.lower() in banned:
            continue
        kept.append((key, EMAIL_RE.sub(REDACTED, value)))
    path = EMAIL_RE.sub(REDACTED, parts.path)
    query = urlencode(kept, quote_via=quote) if kept else ""
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def scrub_bytes(raw: bytes) -> bytes:
    """Mask email addresses in a raw request kept for debugging."""
    if b"@" not in raw and b"%40" not in raw and b"%40".upper() not in raw:
        return raw
    return EMAIL_BYTES_RE.sub(REDACTED.encode(), raw)
