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
_HASHED_IDS = re.compile(r"\b(visitor|session)_id\b")
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
    text = _use_hashed_ids(clickhouse_placeholders(sql))
    if final:
        text = _FROM_EVENTS.sub(lambda match: f"FROM events{match.group(1) or ''} FINAL", text)
    return text


def _use_hashed_ids(sql: str) -> str:
    """Count and group visitors and sessions by their 64-bit hash columns.

    ``COUNT(DISTINCT ...)`` arguments are always rewritten. ``GROUP BY visitor_id`` (or
    ``session_id``) is rewritten only when the query uses that id nowhere else, so a query that
    selects the ids still gets the strings.
    NOTE: two different ids with the same 64-bit hash count as one. For n ids the chance of
    any such pair is about n**2 / 2**65, which is 3e-8 for a million ids.
    """
    parts = []
    position = 0
    for match in re.finditer(r"COUNT\(DISTINCT\b", sql, re.IGNORECASE):
        end = _closing_parenthesis(sql, match.end() - len("DISTINCT") - 1)
        parts.append(sql[position:match.start()])
        parts.append(_count_distinct(_HASHED_IDS.sub(r"\1_key", sql[match.start():end])))
        position = end
    parts.append(sql[position:])
    text = "".join(parts)
    for prefix in ("visitor", "session"):
        grouped = len(re.findall(rf"\bGROUP BY {prefix}_id\b", text))
        if grouped and grouped == len(re.findall(rf"\b{prefix}_id\b", text)):
            text = re.sub(rf"\bGROUP BY {prefix}_id\b", f"GROUP BY {prefix}_key", text)
    return text


_COUNT_DISTINCT_CASE = re.compile(
    r"COUNT\(DISTINCT\s+CASE\s+WHEN\s+(.*)\s+THEN\s+(\w+)\s+END\s*\)", re.DOTALL | re.IGNORECASE)


def _count_distinct(call: str) -> str:
    """Rewrite ``COUNT(DISTINCT CASE WHEN c THEN x END)`` as ``uniqExactIf(x, c)``, and any
    other distinct count as ``ifNull(COUNT(DISTINCT x), 0)``.

    The ``If`` form skips the Nullable column that CASE builds, and it returns 0, not NULL,
    when no row matches (ClickHouse 18.16 returns NULL for the CASE form). A distinct count
    of a Nullable column whose values are all NULL is NULL on ClickHouse and 0 on SQLite.
    """
    match = _COUNT_DISTINCT_CASE.fullmatch(call)
    if match is None:
        return f"ifNull({call}, 0)"
    return f"uniqExactIf({match.group(2)}, {match.group(1)})"


def _closing_parenthesis(sql: str, opening: int) -> int:
    """Return the index just after the parenthesis that closes the one at ``opening``."""
    depth = 0
    for index in range(opening, len(sql)):
        if sql[index] == "(":
            depth += 1
        elif sql[index] == ")":
            depth -= 1
            if depth == 0:
                return index + 1
    raise ValueError(f"unbalanced parentheses in SQL: {sql!r}")


# Driver values that SQLite returns as they are; checked first, as most values are these.
_PLAIN_TYPES = frozenset((int, str, type(None)))


def normalize_value(value: Any) -> Any:
    """Convert one driver value to what SQLite would return for the same column."""
    if type(value) in _PLAIN_TYPES:
        return value
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
    plain = _PLAIN_TYPES
    return tuple(value if type(value) in plain else normalize_value(value) for value in row)
