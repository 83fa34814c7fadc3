"""The SQL dialect layer: one report query text, translated for each backend.

Report queries are written once in the subset of SQL that SQLite and ClickHouse share, with
``:name`` placeholders and the tables ``events`` and ``rejected_hits``. ``translate`` turns
that text into what a backend's driver accepts, and ``normalize_row`` turns driver values into
the plain Python values that SQLite returns, so both backends produce identical report tables.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

SQLITE = "sqlite"
CLICKHOUSE = "clickhouse"

_PLACEHOLDER = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_FROM_EVENTS = re.compile(r"\bFROM\s+events\b(?!_)(\s+AS\s+\w+)?", re.IGNORECASE)


def clickhouse_placeholders(sql: str) -> str:
    """Rewrite ``:name`` placeholders into the ``%(name)s`` form of clickhouse-driver."""
    # clickhouse-driver formats the query with the ``%`` operator, so literal percent
    # signs must be doubled before the placeholders are added.
    return _PLACEHOLDER.sub(r"%(\1)s", sql.replace("%", "%%"))


def translate(sql: str, dialect: str, *, final: bool = False) -> str:
    """Return ``sql`` as the backend ``dialect`` runs it.

    For ClickHouse with ``final`` set, every read of ``events`` gets the ``FINAL`` modifier,
    which merges rows with the same sorting key (a replayed insert) at query time.
    """
    if dialect == SQLITE:
        return sql
    if dialect != CLICKHOUSE:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected sqlite or clickhouse")
    text = clickhouse_placeholders(sql)
    if final:
        text = _FROM_EVENTS.sub(lambda match: f"FROM events{match.group(1) or ''} FINAL", text)
    return text


def normalize_value(value: Any) -> Any:
    """Convert one driver value to what SQLite would return for the same column."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        # ClickHouse returns nan for avg() over no rows where SQLite returns NULL.
        return None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bool):
        return int(value)
    return value


def normalize_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(normalize_value(value) for value in row)
