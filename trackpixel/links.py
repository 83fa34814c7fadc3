"""Destination URLs of tracked links: validated and normalised to the ASCII form that a
browser sends, so the redirect's ``Location`` header is always a valid header value."""

from __future__ import annotations

import ipaddress
import unicodedata
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

MAX_DESTINATION_CHARS = 4096
# Printable ASCII characters that browsers percent-encode in each part (the WHATWG URL
# Standard's fragment, special-query and path percent-encode sets). Controls, spaces and
# non-ASCII characters are encoded in every part. "%" is kept, so an encoded URL stays as it is.
_FRAGMENT_ENCODED = frozenset('"<>`')
_QUERY_ENCODED = frozenset("\"#<>'")
_PATH_ENCODED = frozenset('"#<>?`{}')


class InvalidDestination(ValueError):
    """A destination URL that cannot be used for a redirect; the message gives the reason."""


def normalize_destination(url: str) -> str:
    """Return ``url`` as an absolute http or https URL in ASCII: the host IDNA-encoded and the
    path, query and fragment percent-encoded. Raises ``InvalidDestination``."""
    value = url.strip(" ")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise InvalidDestination(f"destination {url!r} contains a control character "
                                 "(such as a line break or tab)")
    if len(value) > MAX_DESTINATION_CHARS:
        raise InvalidDestination(f"destination is longer than {MAX_DESTINATION_CHARS} "
                                 "characters")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidDestination(f"destination {url!r} must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise InvalidDestination(f"destination {url!r} must not contain a user name or "
                                 "password")
    netloc = _netloc(parts.hostname, _port(parts, url), url)
    return urlunsplit((scheme, netloc, _percent_encode(parts.path, _PATH_ENCODED) or "/",
                       _percent_encode(parts.query, _QUERY_ENCODED),
                       _percent_encode(parts.fragment, _FRAGMENT_ENCODED)))


def _percent_encode(text: str, encoded: frozenset[str]) -> str:
    return "".join(quote(char, safe="") if char in encoded or not "!" <= char <= "~" else char
                   for char in text)


def _port(parts: SplitResult, url: str) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise InvalidDestination(f"destination {url!r} has an invalid port") from None


def _netloc(hostname: str | None, port: int | None, url: str) -> str:
    if not hostname:
        raise InvalidDestination(f"destination {url!r} has no host, e.g. https://example.com/")
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        address = None
    if address is not None:
        host = f"[{address.compressed}]" if address.version == 6 else address.compressed
    else:
        if any(char in hostname for char in " %/\\<>\"'`^{}|[]"):
            raise InvalidDestination(f"destination {url!r} has an invalid host {hostname!r}")
        try:
            # NOTE: the standard library's codec implements IDNA 2003; browsers follow UTS #46,
            # which differs for a few characters such as "ß".
            host = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidDestination(f"destination {url!r} has an invalid host "
                                     f"{hostname!r}") from None
    return host if port is None else f"{host}:{port}"
