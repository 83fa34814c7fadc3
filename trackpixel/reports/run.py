"""Report runners: execute the built SQL on a store and shape the rows into tables.

The CLI, and later the JSON API and dashboard, call these; none of them writes SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np

from trackpixel.reports import from_columns, from_rollups, queries
from trackpixel.reports.queries import ReportQuery, Sql
from trackpixel.sites import Site
from trackpixel.storage import rollups
from trackpixel.storage.records import EventStore


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


def _rollups(store: EventStore, query: ReportQuery) -> sqlite3.Connection | None:
    """Return the connection to read the rollups through, or None to run the raw SQL.

    Rollups exist only in SQLite and hold no per-filter figures, so a filtered query, a
    ClickHouse store or a database whose rollups miss events reads the column copy
    (``_columns``) or the raw events.
    """
    conn = getattr(store, "conn", None)
    if query.filters or _dialect(store) != "sqlite" or not isinstance(conn, sqlite3.Connection):
        return None
    return conn if rollups.in_sync(conn) else None


def _columns(store: EventStore, query: ReportQuery) -> from_columns.Selection | None:
    """Return the query's events in the column copy, or None to run the raw SQL.

    The copy exists only in SQLite. It is read only while it covers every stored event, so
    the rollups' watermark must be current, because the copy is kept with them. The
    migration adding it must also have found no events, or a rebuild must have filled it.
    """
    conn = getattr(store, "conn", None)
    if _dialect(store) != "sqlite" or not isinstance(conn, sqlite3.Connection):
        return None
    if not rollups.in_sync(conn) or not rollups.part_ready(conn, "columns"):
        return None
    return from_columns.select(conn, query)


ColumnRows = Callable[[from_columns.Selection], list[tuple[Any, ...]]]


def _rows(store: EventStore, query: ReportQuery, sql: Callable[[], Sql],
          fast: Callable[[sqlite3.Connection], list[tuple[Any, ...]]] | None,
          columns: ColumnRows | None = None) -> list[list[Any]]:
    """Return a report's rows from the rollups when ``fast`` is given and they apply, else
    from the column copy when ``columns`` is given and it applies, else from the raw SQL."""
    conn = _rollups(store, query) if fast is not None else None
    if conn is not None and fast is not None:
        return [list(row) for row in fast(conn)]
    selection = _columns(store, query) if columns is not None else None
    if selection is not None and columns is not None:
        return [list(row) for row in columns(selection)]
    return [list(row) for row in _run(store, sql())]


def _round_column(table: Table, column: str, digits: int = 2) -> Table:
    """Round a column of sums of floats, which backends add up in different orders."""
    index = table.columns.index(column)
    for row in table.rows:
        if row[index] is not None:
            row[index] = round(float(row[index]), digits)
    return table


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


# Dashboard and report API runners. Each returns one ``Table``; options beyond the
# ``ReportQuery`` are keyword arguments.

# Bounds on rows read into Python by the reports that finish their counting there.
MAX_PROPERTY_ROWS = 200_000
MAX_FUNNEL_ROWS = 2_000_000
MAX_HOURLY_DAYS = 31
REJECTED_SAMPLES_PER_REASON = 3


def _dialect(store: EventStore) -> str:
    return getattr(store, "dialect", "sqlite")


def _day(value: str) -> date:
    return datetime.strptime(value, "%Y-%m-%d").date()


def previous_period(query: ReportQuery) -> ReportQuery:
    """Return the same query over the equally long range that ends the day before it starts."""
    start, end = _day(query.from_day), _day(query.to_day)
    length = end - start
    previous_end = start - timedelta(days=1)
    return replace(query, from_day=(previous_end - length).isoformat(),
                   to_day=previous_end.isoformat())


def _overview_values(store: EventStore, query: ReportQuery, goal: str | None) -> list[Any]:
    dialect = _dialect(store)
    conn = _rollups(store, query)
    selection = _columns(store, query) if conn is None else None
    if conn is not None:
        totals = from_rollups.totals(conn, query, goal)
        stats = from_rollups.session_stats(conn, query)
    elif selection is not None:
        totals = from_columns.totals(selection, goal)
        stats = from_columns.session_stats(selection)
    else:
        totals = _run(store, queries.totals(query, dialect=dialect, goal=goal))[0]
        stats = _run(store, queries.session_stats(query, dialect=dialect))[0]
    visitors, sessions, page_views, events, conversions, value = totals
    started, bounces, mean_duration = stats
    return [visitors or 0, sessions or 0, page_views or 0, events or 0, conversions or 0,
            round(value or 0, 2), percent(bounces or 0, started or 0),
            round(mean_duration or 0, 1)]


OVERVIEW_METRICS = ("visitors", "sessions", "page_views", "events", "conversions",
                    "conversion_value", "bounce_rate_pct", "mean_session_seconds")


def dashboard_overview(store: EventStore, site: Site, query: ReportQuery, *,
                       goal: str | None = None) -> Table:
    """Headline metrics for the range and for the previous range of equal length."""
    current = _overview_values(store, query, goal)
    earlier_query = previous_period(query)
    earlier = _overview_values(store, earlier_query, goal)
    rows = []
    for metric, now_value, then_value in zip(OVERVIEW_METRICS, current, earlier, strict=True):
        change = round(100.0 * (now_value - then_value) / then_value, 1) if then_value else None
        rows.append([metric, now_value, then_value, change])
    return Table(f"Overview {query.from_day} to {query.to_day}, compared with "
                 f"{earlier_query.from_day} to {earlier_query.to_day}",
                 ["metric", "value", "previous", "change_pct"], rows)


def _mondays(from_day: str, to_day: str) -> list[str]:
    start, end = _day(from_day), _day(to_day)
    monday = start - timedelta(days=start.weekday())
    weeks = []
    while monday <= end:
        weeks.append(monday.isoformat())
        monday += timedelta(days=7)
    return weeks


def timeseries(store: EventStore, site: Site, query: ReportQuery, *, interval: str = "day",
               goal: str | None = None) -> Table:
    """Visitors, sessions, page views and conversions per local hour, day or week.

    Every bucket of the range is listed, empty ones with zeros. Weeks start on Monday and are
    labelled by that day. An hour repeated when clocks go back is one bucket.
    """
    start, end = _day(query.from_day), _day(query.to_day)
    if interval == "hour" and (end - start).days + 1 > MAX_HOURLY_DAYS:
        raise ValueError(f"hourly series cover at most {MAX_HOURLY_DAYS} days; "
                         "choose interval=day or a shorter range")
    mondays = _mondays(query.from_day, query.to_day) if interval == "week" else None
    found = {(str(row[0]), int(row[1])): list(row[2:]) for row in _rows(
        store, query,
        lambda: queries.series(query, interval, dialect=_dialect(store), mondays=mondays,
                               goal=goal),
        None if interval == "hour" and goal else
        lambda conn: from_rollups.series(conn, query, interval, mondays, goal),
        lambda selection: from_columns.series(selection, interval, mondays, goal))}
    if interval == "week":
        keys = [(monday, 0) for monday in mondays or []]
    else:
        days = [(start + timedelta(days=offset)).isoformat()
                for offset in range((end - start).days + 1)]
        hours = range(24) if interval == "hour" else range(1)
        keys = [(day, hour) for day in days for hour in hours]
    rows = []
    for day, hour in keys:
        label = f"{day} {hour:02d}:00" if interval == "hour" else day
        rows.append([label, *found.get((day, hour), [0, 0, 0, 0])])
    return Table(f"By {interval}", ["bucket", "visitors", "sessions", "page_views",
                                    "conversions"], rows)


def top_pages(store: EventStore, site: Site, query: ReportQuery) -> Table:
    rows = _rows(store, query, lambda: queries.top_pages(query, dialect=_dialect(store)),
                 lambda conn: from_rollups.top_pages(conn, query),
                 lambda selection: from_columns.top_pages(selection, query.limit))
    return Table("Top pages", ["path", "page_views", "visitors", "entries"], rows)


def entry_pages(store: EventStore, site: Site, query: ReportQuery) -> Table:
    rows = _rows(store, query, lambda: queries.entry_pages(query, dialect=_dialect(store)),
                 lambda conn: from_rollups.entry_pages(conn, query),
                 lambda selection: from_columns.entry_pages(selection, query.limit))
    table = Table("Entry pages", ["path", "entries", "visitors", "bounces"], rows)
    table.columns.append("bounce_rate_pct")
    for row in table.rows:
        row.append(percent(row[3] or 0, row[1] or 0))
    return table


def exit_pages(store: EventStore, site: Site, query: ReportQuery) -> Table:
    rows = _rows(store, query, lambda: queries.exit_pages(query, dialect=_dialect(store)),
                 lambda conn: from_rollups.exit_pages(conn, query),
                 lambda selection: from_columns.exit_pages(selection, query.limit))
    return Table("Exit pages", ["path", "exits", "visitors"], rows)


_ACQUISITION_TOTALS = ["sessions", "visitors", "conversions", "conversion_value"]


def _acquisition(store: EventStore, query: ReportQuery, columns: tuple[str, ...],
                 goal: str | None, require: tuple[str, ...] = ()) -> list[list[Any]]:
    # The rollups keep conversions of every custom event, not of one goal.
    return _rows(store, query,
                 lambda: queries.acquisition(query, columns, dialect=_dialect(store), goal=goal,
                                             require=require),
                 None if goal else
                 lambda conn: from_rollups.acquisition(conn, query, columns, require),
                 lambda selection: from_columns.acquisition(selection, columns, query.limit,
                                                            goal, require))


def channels(store: EventStore, site: Site, query: ReportQuery, *,
             goal: str | None = None) -> Table:
    rows = _acquisition(store, query, ("channel",), goal)
    return _round_column(Table("Channels", ["channel", *_ACQUISITION_TOTALS], rows),
                         "conversion_value")


def referrers(store: EventStore, site: Site, query: ReportQuery, *,
              goal: str | None = None) -> Table:
    rows = _acquisition(store, query, ("referrer_host",), goal, require=("referrer_host",))
    return _round_column(Table("Referrers", ["referrer_host", *_ACQUISITION_TOTALS], rows),
                         "conversion_value")


UTM_COLUMNS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def utm_campaigns(store: EventStore, site: Site, query: ReportQuery, *,
                  goal: str | None = None) -> Table:
    """Sessions by UTM source, medium, campaign, term and content of their first event."""
    rows = _acquisition(store, query, UTM_COLUMNS, goal, require=("utm_source", "utm_campaign"))
    return _round_column(Table("Campaigns (UTM)", [*UTM_COLUMNS, *_ACQUISITION_TOTALS], rows),
                         "conversion_value")


def breakdown(store: EventStore, site: Site, query: ReportQuery, *, dimension: str) -> Table:
    column = queries.BREAKDOWN_COLUMNS.get(dimension, dimension)
    rows = _rows(store, query, lambda: queries.breakdown(query, dimension, dialect=_dialect(store)),
                 lambda conn: from_rollups.breakdown(conn, query, column),
                 lambda selection: from_columns.breakdown(selection, column, query.limit))
    return Table(dimension.capitalize(), [column, "visitors", "sessions", "page_views"], rows)


def custom_events(store: EventStore, site: Site, query: ReportQuery) -> Table:
    rows = _rows(store, query, lambda: queries.custom_events(query, dialect=_dialect(store)),
                 lambda conn: from_rollups.custom_events(conn, query),
                 lambda selection: from_columns.custom_events(selection, query.limit))
    return _round_column(Table("Events", ["name", "events", "visitors", "total_value"], rows),
                         "total_value")


def event_properties(store: EventStore, site: Site, query: ReportQuery, *,
                     event: str | None = None) -> Table:
    """Custom-event properties: each name, property and value with its events and visitors.

    Unfiltered SQLite queries read every event's counts from the rollups, filtered ones
    count every matching event in the column copy, and ClickHouse counts every event from
    its property arrays. Otherwise (a SQLite database whose column copy is not filled yet)
    properties are counted in Python over at most ``MAX_PROPERTY_ROWS`` events, and the
    title notes when that bound cut the count short.
    """
    columns = ["name", "property", "value", "events", "visitors"]
    conn = _rollups(store, query)
    if conn is not None and rollups.part_ready(conn, "properties"):
        return Table("Event properties", columns,
                     [list(row) for row in from_rollups.event_properties(conn, query, event)])
    selection = _columns(store, query)
    if selection is not None:
        return Table("Event properties", columns,
                     [list(row) for row in from_columns.event_properties(selection, query.limit,
                                                                         event)])
    if _dialect(store) == "clickhouse":
        return _table(store, "Event properties",
                      queries.event_properties_clickhouse(query, event=event), columns)
    sql = queries.event_props_sample(query, MAX_PROPERTY_ROWS, dialect=_dialect(store),
                                     event=event)
    rows = _run(store, sql)
    events: dict[tuple[str, str, str], int] = {}
    visitors: dict[tuple[str, str, str], set[str]] = {}
    for name, props, visitor_id in rows:
        for key, text in rollups.property_items(props):
            group = (str(name), key, text)
            events[group] = events.get(group, 0) + 1
            visitors.setdefault(group, set()).add(str(visitor_id))
    ordered = sorted(events, key=lambda group: (-events[group], group))[:query.limit]
    title = "Event properties"
    if len(rows) >= MAX_PROPERTY_ROWS:
        title += f" (first {MAX_PROPERTY_ROWS} events only)"
    return Table(title, columns,
                 [[*group, events[group], len(visitors[group])] for group in ordered])


def email_campaigns(store: EventStore, site: Site, query: ReportQuery) -> Table:
    """Email opens and clicks per campaign; click-to-open is unique clicks over unique opens."""
    conn = _rollups(store, query)
    if conn is not None and rollups.part_ready(conn, "email_visitors"):
        rows = [list(row) for row in from_rollups.email_campaigns(conn, query)]
    else:
        rows = _rows(store, query,
                     lambda: queries.email_campaigns(query, dialect=_dialect(store)), None,
                     lambda selection: from_columns.email_campaigns(selection, query.limit))
    table = Table("Email campaigns", ["campaign", "opens", "unique_human_opens",
                                      "machine_opens", "clicks", "unique_clicks"], rows)
    table.columns.append("click_to_open_pct")
    for row in table.rows:
        # ClickHouse returns NULL, not 0, for a distinct count of a Nullable column when no
        # row matches.
        row[2] = row[2] or 0
        row[5] = row[5] or 0
        row.append(percent(row[5], row[2]))
    return table


def ad_campaigns(store: EventStore, site: Site, query: ReportQuery, *,
                 goal: str | None = None) -> Table:
    """Impressions, clicks, click-through rate and conversions per campaign, creative and
    placement. Conversions are the custom events of sessions whose first event carries the
    same campaign, creative and placement."""
    dialect = _dialect(store)
    delivered = {tuple(row[:3]): [row[3] or 0, row[4] or 0]
                 for row in _rows(store, query, lambda: queries.ad_delivery(query, dialect=dialect),
                                  lambda conn: from_rollups.ad_delivery(conn, query),
                                  lambda selection: from_columns.ad_delivery(selection,
                                                                             query.limit))}
    converted = {tuple(row[:3]): [row[3] or 0, round(row[4] or 0, 2)]
                 for row in _rows(store, query,
                                  lambda: queries.ad_conversions(query, dialect=dialect, goal=goal),
                                  None if goal else
                                  lambda conn: from_rollups.ad_conversions(conn, query),
                                  lambda selection: from_columns.ad_conversions(selection,
                                                                                goal))}
    rows = []
    for key in sorted(delivered.keys() | converted.keys()):
        impressions, clicks = delivered.get(key, [0, 0])
        conversions, value = converted.get(key, [0, 0.0])
        rows.append([*key, impressions, clicks, percent(clicks, impressions), conversions,
                     value])
    rows.sort(key=lambda row: (-row[3], -row[4], -row[6], row[:3]))
    return Table("Ad campaigns", ["campaign", "creative", "placement", "impressions", "clicks",
                                  "ctr_pct", "conversions", "conversion_value"],
                 rows[:query.limit])


@dataclass(frozen=True)
class FunnelStep:
    """One funnel step: an event name or page path, optionally with one property value."""

    kind: str  # "event" or "page"
    value: str
    prop: str | None = None
    prop_value: str | None = None

    @classmethod
    def parse(cls, text: str) -> FunnelStep:
        """Parse ``event:NAME`` or ``page:/PATH``, optionally followed by ``|KEY=VALUE``."""
        kind, sep, rest = text.partition(":")
        if not sep or kind not in ("event", "page") or not rest:
            raise ValueError(f"invalid funnel step {text!r}: expected event:NAME or page:/PATH, "
                             "optionally followed by |KEY=VALUE")
        prop = prop_value = None
        head, bar, condition = rest.rpartition("|")
        if bar and "=" in condition:
            rest = head
            prop, _, prop_value = condition.partition("=")
        return cls(kind, rest, prop or None, prop_value if prop else None)

    def label(self) -> str:
        text = f"{self.kind}:{self.value}"
        return f"{text}|{self.prop}={self.prop_value}" if self.prop else text


def funnel_steps(store: EventStore, site: Site, query: ReportQuery, *,
                 steps: list[FunnelStep], window_seconds: int = 86_400) -> Table:
    """Visitors completing each step in order, within ``window_seconds`` of their first step.

    A visitor's step 1 is their first matching event in the range; each later step is the
    first matching event after the previous step that falls inside the window.
    """
    if len(steps) < 2:
        raise ValueError("a funnel needs at least two steps")
    window_ms = window_seconds * 1000
    title = "Funnel"
    counted = _funnel_from_rollups(store, query, steps, window_ms)
    if counted is None:
        counted = _funnel_from_columns(store, query, steps, window_ms)
    if counted is not None:
        reached, gap_totals = counted
    else:
        reached, gap_totals, complete = _funnel_from_events(store, query, steps, window_ms)
        if not complete:
            title += f" (first {MAX_FUNNEL_ROWS} matching events only)"
    table_rows = []
    for index, step_def in enumerate(steps):
        count = reached[index]
        previous = reached[index - 1] if index else count
        mean_gap = round(gap_totals[index] / count / 1000, 1) if index and count else None
        table_rows.append([index + 1, step_def.label(), count,
                           percent(count, previous) if index else (100.0 if count else 0.0),
                           percent(count, reached[0]), previous - count, mean_gap])
    return Table(title, ["step", "definition", "visitors", "conversion_pct", "overall_pct",
                         "drop_off", "mean_seconds_from_previous"], table_rows)


def _funnel_from_rollups(store: EventStore, query: ReportQuery,
                         steps: list[FunnelStep],
                         window_ms: int) -> tuple[list[int], list[int]] | None:
    """Count a funnel from the step times in the rollups, or return None when they do not
    hold its steps: property conditions, an event step naming page views, or filters."""
    conn = _rollups(store, query)
    if conn is None or not rollups.part_ready(conn, "steps"):
        return None
    if any(step.prop is not None or not rollups.has_step_key(step.kind, step.value)
           for step in steps):
        return None
    return from_rollups.funnel(conn, query, [(step.kind, step.value) for step in steps],
                               window_ms)


def _funnel_from_columns(store: EventStore, query: ReportQuery, steps: list[FunnelStep],
                         window_ms: int) -> tuple[list[int], list[int]] | None:
    """Count a funnel over every matching event in the column copy, or return None when the
    copy does not apply."""
    selection = _columns(store, query)
    if selection is None:
        return None
    distinct = list(dict.fromkeys(steps))
    pairs = from_columns.funnel_events(
        selection, [(step.kind, step.value, step.prop, step.prop_value) for step in distinct])
    counted = from_rollups.count_funnel(dict(zip(distinct, pairs, strict=True)), list(steps),
                                        window_ms)
    if counted is None:
        raise ValueError("funnel range too long to count: choose a shorter date range")
    return counted


def _funnel_from_events(store: EventStore, query: ReportQuery, steps: list[FunnelStep],
                        window_ms: int) -> tuple[list[int], list[int], bool]:
    """Count a funnel over its matching raw events with ``from_rollups.count_funnel``, as
    the rollups count it. The flag is true when every matching event was read."""
    conditions = [(step.kind, step.value, step.prop, step.prop_value) for step in steps]
    rows = _run(store, queries.funnel_matches(query, conditions, MAX_FUNNEL_ROWS,
                                              dialect=_dialect(store)))
    # The first step index of each distinct step definition: its flag column.
    columns = {step: steps.index(step) for step in steps}
    numbers: dict[object, int] = {}
    found: dict[FunnelStep, tuple[list[int], list[int]]] = {step: ([], []) for step in columns}
    for row in rows:
        visitor = numbers.setdefault(row[0], len(numbers))
        ts = int(row[1])
        for step, column in columns.items():
            if row[2 + column]:
                found[step][0].append(visitor)
                found[step][1].append(ts)
    arrays = {step: (np.array(visitors, dtype=np.int64), np.array(times, dtype=np.int64))
              for step, (visitors, times) in found.items()}
    counted = from_rollups.count_funnel(arrays, list(steps), window_ms)
    if counted is None:
        raise ValueError("funnel range too long to count: choose a shorter date range")
    reached, gap_totals = counted
    return reached, gap_totals, len(rows) < MAX_FUNNEL_ROWS


def _sample_text(detail: Any, raw: Any, user_agent: Any) -> str:
    raw_text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    parts = [str(detail or ""), raw_text[:200], str(user_agent or "")[:120]]
    return " | ".join(part for part in parts if part)


def rejected_hits(store: EventStore, site: Site, query: ReportQuery, *,
                  unattributed: bool = False) -> Table:
    """Rejected hits of the site by reason, with recent samples.

    With ``unattributed``, hits whose site could not be determined (an unknown or unreadable
    site id, or an unauthenticated API request) are listed too, in rows of their own scope.
    Only people who may see every site should get them.

    A rejected hit has no channel, page, device or other event column, so the filters of
    ``query`` do not apply; the title says so when filters are given. At most
    ``query.limit`` rows are returned, those with the most hits first.
    """
    from_ts, to_ts = day_range_ms(site, query.from_day, query.to_day)
    summary = _run(store, queries.rejected_summary(site.id, from_ts, to_ts,
                                                   unattributed=unattributed))
    samples: dict[tuple[str, str], list[str]] = {}
    for reason, scope, _, _, detail, raw, user_agent in _run(
            store, queries.rejected_samples(site.id, from_ts, to_ts, 500,
                                            unattributed=unattributed)):
        bucket = samples.setdefault((str(reason), str(scope)), [])
        if len(bucket) < REJECTED_SAMPLES_PER_REASON:
            bucket.append(_sample_text(detail, raw, user_agent))
    rows = []
    for reason, scope, hits, last_ts in summary:
        last_seen = datetime.fromtimestamp(last_ts / 1000, UTC).isoformat(timespec="seconds")
        rows.append([reason, scope, hits, last_seen,
                     "\n".join(samples.get((str(reason), str(scope)), []))])
    title = "Rejected hits"
    if query.filters:
        title += " (filters do not apply to rejected hits)"
    return Table(title, ["reason", "scope", "hits", "last_seen_utc", "samples"],
                 rows[:query.limit])


def bot_traffic(store: EventStore, site: Site, query: ReportQuery) -> Table:
    rows = _rows(store, query, lambda: queries.bot_traffic(query, dialect=_dialect(store)),
                 lambda conn: from_rollups.bot_traffic(conn, query),
                 lambda selection: from_columns.bot_traffic(selection))
    return Table("Bot traffic by detector", ["bot_reason", "events", "visitors"],
                 rows[:query.limit])


def machine_opens(store: EventStore, site: Site, query: ReportQuery) -> Table:
    rows = _rows(store, query, lambda: queries.machine_opens(query, dialect=_dialect(store)),
                 lambda conn: from_rollups.machine_opens(conn, query),
                 lambda selection: from_columns.machine_opens(selection))
    return Table("Machine email opens", ["campaign", "machine_opens", "recipients"],
                 rows[:query.limit])
