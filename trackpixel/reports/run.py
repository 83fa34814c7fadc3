"""Report runners: execute the built SQL on a store and shape the rows into tables.

The CLI, and later the JSON API and dashboard, call these; none of them writes SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from trackpixel.reports import queries
from trackpixel.reports.queries import ReportQuery, Sql
from trackpixel.sites import Site
from trackpixel.storage.records import EventStore

REPORT_NAMES = ("overview", "events", "pages", "sources", "campaigns", "email", "funnel")


@dataclass
class Table:
    """A report result: column names and rows of plain values, ready for any format."""

    title: str
    columns: list[str]
    rows: list[list[Any]]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _run(store: EventStore, sql: Sql) -> list[tuple[Any, ...]]:
    return store.query(sql.text, sql.params)


def _table(store: EventStore, title: str, sql: Sql, columns: list[str]) -> Table:
    return Table(title, columns, [list(row) for row in _run(store, sql)])


def overview(store: EventStore, site: Site, query: ReportQuery) -> Table:
    totals = _run(store, queries.overview(query))[0]
    visitors, sessions, page_views, custom_events, events, total_value = totals
    summary = _run(store, queries.sessions_summary(query))[0]
    started, bounces, mean_duration = summary
    quality = _run(store, queries.quality(query))[0]
    from_ts, to_ts = day_range_ms(site, query.from_day, query.to_day)
    rejected = sum(row[1] for row in _run(store, queries.rejected_by_reason(site.id, from_ts,
                                                                            to_ts)))
    rows = [
        ["visitors", visitors or 0],
        ["sessions", sessions or 0],
        ["page_views", page_views or 0],
        ["custom_events", custom_events or 0],
        ["events", events or 0],
        ["total_value", round(total_value or 0, 2)],
        ["bounce_rate_pct", percent(bounces or 0, started or 0)],
        ["mean_session_seconds", round(mean_duration or 0, 1)],
        ["bot_events", quality[0] or 0],
        ["machine_opens", quality[1] or 0],
        ["rejected_hits", rejected],
    ]
    return Table(f"Overview {query.from_day} to {query.to_day}", ["metric", "value"], rows)


def events(store: EventStore, site: Site, query: ReportQuery) -> Table:
    return _round_column(_table(store, "Events", queries.events(query),
                                ["name", "events", "visitors", "total_value"]), "total_value")


def pages(store: EventStore, site: Site, query: ReportQuery) -> Table:
    return _table(store, "Pages", queries.pages(query),
                  ["path", "page_views", "visitors", "entries"])


def sources(store: EventStore, site: Site, query: ReportQuery) -> Table:
    return _table(store, "Sources", queries.sources(query),
                  ["channel", "referrer", "sessions", "visitors"])


def campaigns(store: EventStore, site: Site, query: ReportQuery) -> Table:
    table = _table(store, "Campaigns", queries.campaigns(query),
                   ["campaign", "source", "medium", "channel", "sessions", "visitors",
                    "impressions", "clicks", "human_opens", "custom_events", "total_value"])
    return _round_column(table, "total_value")


def _round_column(table: Table, column: str, digits: int = 2) -> Table:
    """Round a column of sums of floats, which backends add up in different orders."""
    index = table.columns.index(column)
    for row in table.rows:
        if row[index] is not None:
            row[index] = round(float(row[index]), digits)
    return table


def email(store: EventStore, site: Site, query: ReportQuery) -> Table:
    table = _table(store, "Email campaigns", queries.email(query),
                   ["campaign", "opens", "unique_human_opens", "machine_opens", "clicks",
                    "unique_clicks"])
    table.columns.append("click_to_open_pct")
    for row in table.rows:
        # ClickHouse 18.16 returns NULL, not 0, for a COUNT(DISTINCT ...) of only NULLs.
        row[2] = row[2] or 0
        row[5] = row[5] or 0
        row.append(percent(row[5], row[2]))
    return table


def funnel(store: EventStore, site: Site, query: ReportQuery, steps: list[str],
           window_days: int = 30) -> Table:
    """Each step's visitors, conversion from the previous and first step, and mean gap."""
    if len(steps) < 2:
        raise ValueError("a funnel needs at least two steps")
    sql = queries.funnel(query, steps, window_days * 86_400_000,
                         getattr(store, "dialect", "sqlite"))
    row = _run(store, sql)[0]
    counts = [row[0]] + [row[2 * i - 1] for i in range(1, len(steps))]
    gaps = [None] + [row[2 * i] for i in range(1, len(steps))]
    rows = []
    for index, step in enumerate(steps):
        count = counts[index] or 0
        previous = counts[index - 1] or 0 if index else count
        gap = gaps[index]
        rows.append([
            index + 1, step, count,
            percent(count, previous) if index else 100.0,
            percent(count, counts[0] or 0),
            (previous - count) if index else 0,
            round(gap / 1000, 1) if gap is not None else None,
        ])
    return Table("Funnel", ["step", "name", "visitors", "conversion_pct", "overall_pct",
                            "drop_off", "mean_seconds_from_previous"], rows)


def percent(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def day_range_ms(site: Site, from_day: str, to_day: str) -> tuple[int, int]:
    """Return UTC milliseconds of the start of ``from_day`` and of the day after ``to_day``."""
    zone = site.zone
    start = datetime.combine(datetime.strptime(from_day, "%Y-%m-%d").date(), time(), zone)
    end_day = datetime.strptime(to_day, "%Y-%m-%d").date() + timedelta(days=1)
    end = datetime.combine(end_day, time(), zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def default_range(site: Site, days: int = 30) -> tuple[str, str]:
    today = datetime.now(site.zone).date()
    return (today - timedelta(days=days - 1)).isoformat(), today.isoformat()
