"""Data directory layout, the server secret and the optional ``config.toml``.

A data directory contains:

- ``trackpixel.db``: sites, events, rejected hits and processing state (SQLite, WAL mode);
- ``spool/``: one SQLite spool per collector process, holding acknowledged raw hits until the
  processor has turned them into events;
- ``secret.key``: 32 random bytes (hex) that sign open and click tokens;
- ``config.toml``: optional settings, see ``Settings``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = "./trackpixel-data"
# Settings read by the storage backends from ``Settings.extra``: the event store URL and the
# spool row limit.
EXTRA_KEYS = frozenset({"store", "max_spool_rows"})
DATA_DIR_ENV = "TRACKPIXEL_DATA_DIR"


class ConfigError(Exception):
    """The configuration file or a setting is invalid."""


@dataclass(frozen=True)
class Settings:
    """Server settings read from ``config.toml``; every field has a working default."""

    # Proxies whose X-Forwarded-For entries are believed. Empty: the connection address is used.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Largest pixel query string stored as an event, in bytes; longer ones are rejected.
    max_query_bytes: int = 8192
    # Largest beacon or server API body accepted, in bytes.
    max_body_bytes: int = 65536
    # Minutes without an event after which the next event starts a new session.
    session_timeout_minutes: int = 30
    # SQLite synchronous mode for the spool: "normal" survives a killed process,
    # "full" also survives power loss at the cost of an fsync per group commit.
    spool_sync: str = "normal"
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DataDir:
    """Paths inside one data directory."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "trackpixel.db"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def secret_path(self) -> Path:
        return self.root / "secret.key"

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    def ensure(self) -> None:
        """Create the directory, the spool folder and the secret if they are missing."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.spool_dir.mkdir(exist_ok=True)
        if not self.secret_path.exists():
            fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))

    def secret(self) -> bytes:
        return bytes.fromhex(self.secret_path.read_text().strip())

    def settings(self) -> Settings:
        if not self.config_path.exists():
            return Settings()
        try:
            raw = tomllib.loads(self.config_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{self.config_path}: invalid TOML: {exc}") from exc
        return parse_settings(raw, str(self.config_path))


def resolve_data_dir(value: str | None) -> DataDir:
    """Return the data directory named on the command line, in the environment, or the default."""
    chosen = value or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return DataDir(Path(chosen).resolve())


def parse_settings(raw: dict[str, object], origin: str) -> Settings:
    """Validate a parsed ``config.toml`` table into ``Settings``."""
    proxies_raw = raw.get("trusted_proxies", [])
    if not isinstance(proxies_raw, list):
        raise ConfigError(f"{origin}: trusted_proxies must be a list of addresses or networks")
    proxies = []
    for item in proxies_raw:
        try:
            proxies.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{origin}: trusted_proxies: invalid network {item!r}") from exc

    spool_sync = str(raw.get("spool_sync", "normal"))
    if spool_sync not in ("normal", "full"):
        raise ConfigError(f"{origin}: spool_sync must be 'normal' or 'full', not {spool_sync!r}")

    known = {"trusted_proxies", "spool_sync", "max_query_bytes", "max_body_bytes",
             "session_timeout_minutes"}
    unknown = sorted(set(raw) - known - EXTRA_KEYS)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known | EXTRA_KEYS), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{origin}: unknown setting {', '.join(hints)}")
    return Settings(
        trusted_proxies=tuple(proxies),
        max_query_bytes=_positive_int(raw, "max_query_bytes", 8192, origin),
        max_body_bytes=_positive_int(raw, "max_body_bytes", 65536, origin),
        session_timeout_minutes=_positive_int(raw, "session_timeout_minutes", 30, origin),
        spool_sync=spool_sync,
        extra={key: value for key, value in raw.items() if key not in known},
    )


def _positive_int(raw: dict[str, object], key: str, default: int, origin: str) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{origin}: {key} must be a positive integer, not {value!r}")
    return value
