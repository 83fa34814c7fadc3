"""Privacy-preserving identity: client IP resolution, IP anonymisation and daily salts.

The raw client IP exists only in memory while a request is handled. What is stored is the
anonymised network (IPv4 /24, IPv6 /48) and a device key: a keyed BLAKE2b hash of the IP and
user agent under a random salt that changes every UTC day. Salts older than two days are
deleted, after which a device key cannot be linked back to an address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SALT_DAYS_KEPT = 2


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """Return the client address: the rightmost ``X-Forwarded-For`` hop not in ``trusted``.

    The header is read only when the connection comes from a trusted proxy, so a client cannot
    choose its own address by sending the header directly.
    """
    address = peer or ""
    if not forwarded_for or not trusted or not _is_trusted(address, trusted):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if not hop:
            continue
        if not _is_trusted(hop, trusted):
            return _strip_port(hop)
        address = hop
    return address


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(_strip_port(address))
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _strip_port(hop: str) -> str:
    if hop.startswith("["):
        return hop[1:hop.find("]")] if "]" in hop else hop
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def anonymize_ip(address: str) -> str | None:
    """Return the /24 (IPv4) or /48 (IPv6) network address, or None for a non-IP value."""
    parts = address.split(".")
    if len(parts) == 4 and all(part.isdigit() and int(part) < 256 for part in parts):
        return f"{parts[0]}.{parts[1]}.{parts[2]}.0"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return anonymize_ip(str(ip.ipv4_mapped))
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def device_key(salt: bytes, address: str, user_agent: str) -> str:
    data = f"{address}\x00{user_agent}".encode("utf-8", "surrogateescape")
    return hashlib.blake2b(data, key=salt, digest_size=12).hexdigest()


def utc_day(ts_ms: int | None = None) -> str:
    moment = datetime.now(UTC) if ts_ms is None else datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d")


def daily_salt(conn: sqlite3.Connection, day: str) -> bytes:
    """Return the salt for a UTC day, creating it if no process has yet."""
    conn.execute("INSERT OR IGNORE INTO daily_salts VALUES (?, ?)", (day, secrets.token_bytes(32)))
    oldest = (datetime.strptime(day, "%Y-%m-%d") - timedelta(days=SALT_DAYS_KEPT)).strftime(
        "%Y-%m-%d")
    conn.execute("DELETE FROM daily_salts WHERE day < ?", (oldest,))
    row = conn.execute("SELECT salt FROM daily_salts WHERE day = ?", (day,)).fetchone()
    return bytes(row[0])


class SaltCache:
    """Today's salt, fetched from the database once per UTC day."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._day = ""
        self._salt = b""
        self._checked = 0.0

    def current(self) -> bytes:
        now = time.time()
        if now - self._checked > 1.0:
            self._checked = now
            day = utc_day()
            if day != self._day:
                self._salt = daily_salt(self._conn, day)
                self._day = day
        return self._salt
