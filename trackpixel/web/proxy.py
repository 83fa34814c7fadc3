"""The scheme and host a request had at a TLS-terminating reverse proxy.

The proxy reports them in ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` or in ``Forwarded``
(RFC 7239). They are read only from connections whose peer address is trusted, because any
client can send these headers. The dashboard's CSRF origin check and the ``Secure`` cookie
flag then see the public ``https://HOST`` instead of the proxy's plain-HTTP connection.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from trackpixel.identity import Network

FORWARDED_ALLOW_IPS_ENV = "TRACKPIXEL_FORWARDED_ALLOW_IPS"
DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1"
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


def parse_allow_ips(value: str) -> tuple[Network, ...] | None:
    """Parse a comma-separated list of addresses and networks; ``*`` (trust every peer)
    returns None. Raises ``ValueError`` naming an invalid entry."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if "*" in items:
        return None
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"invalid address or network {item!r} in the forwarded-allow-ips "
                             "list: expected e.g. 127.0.0.1,10.0.0.0/8 or *") from None
    return tuple(networks)


def allow_ips_from_env() -> tuple[Network, ...] | None:
    return parse_allow_ips(os.environ.get(FORWARDED_ALLOW_IPS_ENV, DEFAULT_FORWARDED_ALLOW_IPS))


class ProxyHeaders:
    """ASGI middleware that sets ``scope["scheme"]`` and the ``host`` header from the proxy
    headers of trusted peers; ``trusted`` None trusts every peer."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network] | None) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._is_trusted(scope.get("client")):
            scope = _apply_forwarded(scope)
        await self.app(scope, receive, send)

    def _is_trusted(self, client: tuple[str, int] | None) -> bool:
        if self.trusted is None:
            return True
        if not client:
            return False
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)


def _apply_forwarded(scope: Scope) -> Scope:
    proto, host = _forwarded_values(scope["headers"])
    if proto is None and host is None:
        return scope
    scope = dict(scope)
    if proto in ("http", "https"):
        scope["scheme"] = proto
    if host is not None and _HOST_RE.match(host):
        scope["headers"] = [(name, value) for name, value in scope["headers"]
                            if name != b"host"] + [(b"host", host.encode("ascii"))]
    return scope


def _forwarded_values(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """Return the (proto, host) that the nearest proxy reported.

    A proxy that appends to a header adds its own entry at the end, so the last entry is the
    one the trusted proxy wrote. The X- headers take precedence over ``Forwarded``, because
    the documented proxy set-up overwrites them but may pass a client's ``Forwarded`` on."""
    proto = host = None
    forwarded_proto = forwarded_host = None
    for name, raw in headers:
        value = raw.decode("latin-1")
        if name == b"x-forwarded-proto":
            proto = _last_entry(value).lower() or None
        elif name == b"x-forwarded-host":
            host = _last_entry(value) or None
        elif name == b"forwarded":
            element = _last_entry(value)
            for pair in element.split(";"):
                key, _, item = pair.strip().partition("=")
                item = item.strip().strip('"')
                if key.lower() == "proto" and item:
                    forwarded_proto = item.lower()
                elif key.lower() == "host" and item:
                    forwarded_host = item
    return proto or forwarded_proto, host or forwarded_host


def _last_entry(value: str) -> str:
    return value.rsplit(",", 1)[-1].strip()
