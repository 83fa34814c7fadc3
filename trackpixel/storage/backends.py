"""Choosing the event backend: ``--store``, then ``store`` in ``config.toml``, then SQLite."""

from __future__ import annotations

from trackpixel.config import ConfigError, DataDir
from trackpixel.storage.records import EventStore
from trackpixel.storage.sqlite import SqliteStore

SQLITE_URL = "sqlite"
STORE_ENV = "TRACKPIXEL_STORE"


def resolve_store_url(data_dir: DataDir, option: str | None) -> str:
    """Return the event store URL from the option, ``config.toml`` or the SQLite default."""
    if option:
        return _check_url(option, "--store")
    value = data_dir.settings().extra.get("store")
    if value is None:
        return SQLITE_URL
    if not isinstance(value, str):
        raise ConfigError(f"{data_dir.config_path}: store must be a string such as "
                          f"'clickhouse://127.0.0.1:9000/trackpixel', not {value!r}")
    return _check_url(value, f"{data_dir.config_path}: store")


def _check_url(url: str, origin: str) -> str:
    if url == SQLITE_URL or url.startswith("clickhouse://"):
        return url
    raise ConfigError(f"{origin}: invalid store {url!r}; use 'sqlite' or "
                      "'clickhouse://HOST:PORT/DATABASE'")


def open_event_store(url: str, state: SqliteStore) -> EventStore:
    """Open the event store named by ``url``; for SQLite that is the state store itself."""
    if url == SQLITE_URL:
        return state
    from trackpixel.storage.clickhouse import ClickHouseStore

    return ClickHouseStore(url)


def max_spool_rows(data_dir: DataDir) -> int | None:
    """Return ``max_spool_rows`` from ``config.toml``: the most unprocessed rows a collector's
    spool may hold before further hits are recorded as ``spool_full`` rejections."""
    value = data_dir.settings().extra.get("max_spool_rows")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{data_dir.config_path}: max_spool_rows must be a positive integer, "
                          f"not {value!r}")
    return value
