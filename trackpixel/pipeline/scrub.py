"""Removal of personal data from URLs, referrers and raw requests before storage.

An email address is matched plain or percent-encoded, at any depth of encoding (``%40``,
``%2540``). Its local part may contain only characters that stay inside one query value or
one URL component. So a match never crosses ``&``, ``=``, ``/``, ``?`` or ``#``, plain or
percent-encoded, and masking keeps the structure of the URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import (
    parse_qsl,
    quote,
    quote_from_bytes,
    unquote_to_bytes,
    urlencode,
    urlsplit,
    urlunsplit,
)

REDACTED = "redacted"

# Percent-escapes allowed inside an address: "+", "-", ".", "_" and the bytes of non-ASCII
# characters, each escaped once or several times over (%2B, %252B).
_ESCAPE = r"%(?:25)*(?:2[BbDdEe]|5[Ff]|[89A-Fa-f][0-9A-Fa-f])"
_AT = r"(?:@|%(?:25)*40)"
# A match starts where a local part starts: not inside a run of address characters, which
# also keeps the search linear, and not inside a percent-escape. Right after an escape of any
# other character (%3D for "=", %2F for "/") a local part may start.
_START = (r"(?:(?<![{word}.+\-%])(?<!%[0-9A-Fa-f])"
          r"|(?<=%[0-9A-Fa-f][0-9A-Fa-f])(?<!%2[BbDdEe])(?<!%5[Ff])(?<!%[89A-Fa-f][0-9A-Fa-f]))")
_ADDRESS = (_START + r"(?:[{word}.+\-]|" + _ESCAPE + r")+" + _AT
            + r"(?:[{word}\-]|" + _ESCAPE + r")+(?:\.(?:[{word}\-]|" + _ESCAPE + r")+)*"
            + r"\.[A-Za-z]{{2,}}")

# ``\w`` matches any Unicode letter or digit in text. In bytes, the UTF-8 bytes of non-ASCII
# characters (0x80 to 0xFF) take its place.
EMAIL_RE = re.compile(_ADDRESS.format(word=r"\w"))
EMAIL_BYTES_RE = re.compile(_ADDRESS.format(word=r"A-Za-z0-9_\x80-\xff").encode("ascii"))
_AT_BYTES_RE = re.compile(rb"@|%(?:25)*40")


def scrub_text(text: str) -> str:
    """Replace every email address in ``text`` by ``redacted``."""
    if "@" not in text and "%" not in text:
        return text
    return EMAIL_RE.sub(REDACTED, text)


def scrub_url(url: str | None, params: Iterable[str]) -> str | None:
    """Drop the named query parameters (lower-case names; a frozenset is used as given) and
    mask every email address.

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
    if not _AT_BYTES_RE.search(raw):
        return raw
    return EMAIL_BYTES_RE.sub(REDACTED.encode(), raw)


def scrub_query(raw: bytes) -> bytes:
    """Mask email addresses in the names and values of a raw query string, one
    percent-decoded field at a time.

    A field without an address keeps its bytes as received. A field with one is
    percent-encoded again after masking, so ``u=http%3A%2F%2Fexample.org%2F%3Fe%3Da%40b.org``
    becomes ``u=http%3A%2F%2Fexample.org%2F%3Fe%3Dredacted``. Bytes that are not UTF-8 stay
    as they are, so the processor still rejects them as ``invalid_utf8``."""
    if not _AT_BYTES_RE.search(raw):
        return raw
    fields = raw.split(b"&")
    for index, field in enumerate(fields):
        if not _AT_BYTES_RE.search(field):
            continue
        name, separator, value = field.partition(b"=")
        fields[index] = _scrub_query_part(name) + separator + _scrub_query_part(value)
    return b"&".join(fields)


def _scrub_query_part(part: bytes) -> bytes:
    decoded = unquote_to_bytes(part.replace(b"+", b" "))
    masked = EMAIL_BYTES_RE.sub(REDACTED.encode(), decoded)
    if masked == decoded:
        return part
    return quote_from_bytes(masked, safe="").encode("ascii")


def scrub_json(value: Any) -> Any:
    """Return a parsed JSON value with email addresses masked in every string and object key.

    Containers without an address are returned as the same objects, so a caller can test
    ``scrub_json(value) is value`` to learn whether anything was masked."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        items = [scrub_json(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items
    if isinstance(value, dict):
        pairs = [(scrub_text(key), scrub_json(item)) for key, item in value.items()]
        if all(new_key is key and new_item is item for (new_key, new_item), (key, item)
               in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    return value
