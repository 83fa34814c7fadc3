"""Report figures read from the SQLite rollups (``trackpixel.storage.rollups``).

Each function returns the rows that the raw SQL of the same name in
``trackpixel.reports.queries`` returns for a query without filters, in the same order, so
the runners in ``trackpixel.reports.run`` shape both the same way. Sums of ``value`` may
differ from the raw SQL in the last bits, because the additions happen in another order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from pyroaring import BitMap

from trackpixel.reports.queries import ReportQuery
from trackpixel.storage import rollups
from trackpixel.storage.rollups import SEP

# Positions in a ``rollups.day_rows`` row.
DAY, VALUE, EVENTS, PAGE_VIEWS, CUSTOM, SESSIONS, TOTAL_VALUE, CUSTOM_VALUE, SECONDARY, \
    MEMBERS, STARTED = range(11)


class _Sums:
    """Per-key sums of ``rollup_days`` counters, and the member and started-session sets.

    The sets stay serialized until a report reads a key's count, and are then unioned in one
    call, so a report that ranks keys by an additive counter deserializes only the sets of
    the keys it shows."""

    def __init__(self) -> None:
        self.counts: dict[Any, list[float]] = {}
        self._members: dict[Any, list[bytes]] = {}
        self._started: dict[Any, list[bytes]] = {}

    def add(self, key: Any, row: tuple[Any, ...]) -> None:
        counts = self.counts.get(key)
        if counts is None:
            self.counts[key] = list(row[EVENTS:MEMBERS])
            self._members[key] = []
            self._started[key] = []
        else:
            for index, amount in enumerate(row[EVENTS:MEMBERS]):
                counts[index] += amount
        if row[MEMBERS]:
            self._members[key].append(row[MEMBERS])
        if row[STARTED]:
            self._started[key].append(row[STARTED])

    def get(self, key: Any, column: int) -> float:
        return self.counts[key][column - EVENTS]

    def unique(self, key: Any) -> int:
        return union_size(self._members[key])

    def sessions(self, key: Any) -> int:
        return union_size(self._started[key])


def union_size(blobs: list[bytes]) -> int:
    """Return the number of distinct integers in the union of serialized bitmaps."""
    if not blobs:
        return 0
    if len(blobs) == 1:
        return len(BitMap.deserialize(blobs[0]))
    return len(BitMap.union(*(BitMap.deserialize(blob) for blob in blobs)))


def _sums(conn: sqlite3.Connection, query: ReportQuery, dimension: str,
          key: Callable[[tuple[Any, ...]], Any] = lambda row: row[VALUE],
          keep: Callable[[tuple[Any, ...]], bool] = lambda row: True) -> _Sums:
    sums = _Sums()
    for row in rollups.day_rows(conn, query.site_id, dimension, query.from_day, query.to_day):
        if keep(row):
            sums.add(key(row), row)
    return sums


def _money(total: float) -> float | int:
    # SQLite returns the integer 0 for a sum of COALESCE(value, 0) over NULL values only.
    return 0 if total == 0 else total


def totals(conn: sqlite3.Connection, query: ReportQuery,
           goal: str | None) -> tuple[Any, ...]:
    """The row of ``queries.totals``: visitors, sessions, page views, events, conversions,
    conversion value."""
    sums = _sums(conn, query, "", key=lambda row: "")
    if "" not in sums.counts:
        return (0, 0, None, 0, None, None)
    if goal:
        goals = _sums(conn, query, "kind_name", key=lambda row: "",
                      keep=lambda row: row[VALUE] == f"custom{SEP}{goal}")
        conversions = goals.get("", EVENTS) if goals.counts else 0
        value = goals.get("", TOTAL_VALUE) if goals.counts else 0
    else:
        conversions, value = sums.get("", CUSTOM), sums.get("", CUSTOM_VALUE)
    return (sums.unique(""), sums.sessions(""), sums.get("", PAGE_VIEWS),
            sums.get("", EVENTS), conversions, _money(value))


def session_stats(conn: sqlite3.Connection, query: ReportQuery) -> tuple[Any, ...]:
    """The row of ``queries.session_stats``: sessions, bounces, mean duration in seconds."""
    group = rollups.session_groups(conn, query.site_id, "stats", query.from_day,
                                   query.to_day).get("")
    if group is None or not group.counts[0]:
        return (0, None, None)
    sessions, bounces, duration_ms = group.counts[:3]
    return (sessions, bounces, duration_ms / 1000.0 / sessions)


def series(conn: sqlite3.Connection, query: ReportQuery, unit: str,
           mondays: list[str] | None, goal: str | None) -> list[tuple[Any, ...]]:
    """The rows of ``queries.series`` for hour, day or week; hour with a goal is not kept."""
    if unit == "hour":
        if goal:
            raise ValueError("hourly conversions of one goal are not in the rollups")
        sums = _sums(conn, query, "hour", key=lambda row: (row[DAY], int(row[VALUE])))
        goal_sums = None
    else:
        labels = mondays or []

        def bucket(row: tuple[Any, ...]) -> tuple[str, int]:
            if unit == "day":
                return (row[DAY], 0)
            label = labels[-1]
            for index, monday in enumerate(labels[1:], start=1):
                if row[DAY] < monday:
                    label = labels[index - 1]
                    break
            return (label, 0)

        sums = _sums(conn, query, "", key=bucket)
        goal_sums = _sums(conn, query, "kind_name", key=bucket,
                          keep=lambda row: row[VALUE] == f"custom{SEP}{goal}") if goal else None
    rows = []
    for key in sorted(sums.counts):
        if goal_sums is None:
            conversions = sums.get(key, CUSTOM)
        else:
            conversions = goal_sums.get(key, EVENTS) if key in goal_sums.counts else 0
        rows.append((*key, sums.unique(key), sums.sessions(key),
                     sums.get(key, PAGE_VIEWS), conversions))
    return rows


def top_pages(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    sums = _sums(conn, query, "path")
    shown = sorted(sums.counts, key=lambda path: (-sums.get(path, PAGE_VIEWS), path))
    return [(path, sums.get(path, PAGE_VIEWS), sums.unique(path), sums.get(path, SESSIONS))
            for path in shown[:query.limit]]


def breakdown(conn: sqlite3.Connection, query: ReportQuery,
              column: str) -> list[tuple[Any, ...]]:
    sums = _sums(conn, query, column)
    rows = [(value, sums.unique(value), sums.sessions(value), sums.get(value, PAGE_VIEWS))
            for value in sums.counts]
    rows.sort(key=lambda row: (-row[1], row[0]))
    return rows[:query.limit]


def custom_events(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    sums = _sums(conn, query, "kind_name", key=lambda row: row[VALUE].split(SEP, 1)[1],
                 keep=lambda row: row[VALUE].startswith(f"custom{SEP}"))
    return _named_events(sums, query.limit)


def _named_events(sums: _Sums, limit: int) -> list[tuple[Any, ...]]:
    """Return rows of name, events, visitors and value, most events first. Only the visitor
    sets of the names shown are unioned."""
    shown = sorted(sums.counts, key=lambda name: (-sums.get(name, EVENTS), name))
    return [(name, sums.get(name, EVENTS), sums.unique(name),
             _money(sums.get(name, TOTAL_VALUE))) for name in shown[:limit]]


def email_campaigns(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    opens = _sums(conn, query, "email_open")
    clicks = _sums(conn, query, "email_click")
    rows = []
    for campaign in opens.counts.keys() | clicks.counts.keys():
        opened = campaign in opens.counts
        clicked = campaign in clicks.counts
        rows.append((campaign,
                     opens.get(campaign, EVENTS) if opened else 0,
                     opens.unique(campaign) if opened else 0,
                     opens.get(campaign, SECONDARY) if opened else 0,
                     clicks.get(campaign, EVENTS) if clicked else 0,
                     clicks.unique(campaign) if clicked else 0))
    rows.sort(key=lambda row: (-row[1], row[0]))
    return rows[:query.limit]


def ad_delivery(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    sums = _sums(conn, query, "ad")
    rows = [(*value.split(SEP), sums.get(value, EVENTS), sums.get(value, SECONDARY))
            for value in sums.counts]
    rows.sort(key=lambda row: (-row[3], -row[4], row[0], row[1], row[2]))
    return rows[:query.limit]


def bot_traffic(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    sums = _sums(conn, query, "bot_reason")
    rows = [(reason, sums.get(reason, EVENTS), sums.unique(reason)) for reason in sums.counts]
    rows.sort(key=lambda row: (-row[1], row[0]))
    return rows


def machine_opens(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    sums = _sums(conn, query, "machine_open")
    rows = [(campaign, sums.get(campaign, EVENTS), sums.unique(campaign))
            for campaign in sums.counts]
    rows.sort(key=lambda row: (-row[1], row[0]))
    return rows


def _groups(conn: sqlite3.Connection, query: ReportQuery,
            report: str) -> dict[str, rollups.Group]:
    return rollups.session_groups(conn, query.site_id, report, query.from_day, query.to_day)


def _ranked(groups: dict[str, rollups.Group],
            limit: int) -> list[tuple[str, rollups.Group]]:
    """Return the first ``limit`` groups with sessions, most sessions first, then by value."""
    kept = [(value, group) for value, group in groups.items() if group.counts[0]]
    kept.sort(key=lambda item: (-item[1].counts[0], item[0]))
    return kept[:limit]


def entry_pages(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    groups = _ranked(_groups(conn, query, "entry"), query.limit)
    return [(path, group.counts[0], group.visitors(), group.counts[1]) for path, group in groups]


def exit_pages(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    groups = _ranked(_groups(conn, query, "exit"), query.limit)
    return [(path, group.counts[0], group.visitors()) for path, group in groups]


# Acquisition groupings kept in the rollups: the columns of ``queries.acquisition`` and the
# session-report name holding them.
ACQUISITION_REPORTS = {("channel",): "channel", ("referrer_host",): "referrer",
                       ("utm_source", "utm_medium", "utm_campaign", "utm_term",
                        "utm_content"): "utm"}


def acquisition(conn: sqlite3.Connection, query: ReportQuery, columns: tuple[str, ...],
                require: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """The rows of ``queries.acquisition`` without a goal, for ``ACQUISITION_REPORTS``."""
    report = ACQUISITION_REPORTS[columns]
    rows: list[tuple[tuple[str, ...], rollups.Group]] = []
    for value, group in _groups(conn, query, report).items():
        parts = tuple(value.split(SEP))
        named = dict(zip(columns, parts, strict=True))
        if require and not any(named[column] for column in require):
            continue
        if not group.counts[0]:
            continue
        rows.append((parts, group))
    rows.sort(key=lambda item: (-item[1].counts[0], item[0]))
    return [(*parts, group.counts[0], group.visitors(), group.counts[3],
             _money(group.counts[4])) for parts, group in rows[:query.limit]]


def ad_conversions(conn: sqlite3.Connection, query: ReportQuery) -> list[tuple[Any, ...]]:
    """The rows of ``queries.ad_conversions`` without a goal."""
    rows = []
    for value, group in _groups(conn, query, "ad").items():
        campaign, creative, placement = value.split(SEP)
        if campaign and group.counts[0]:
            rows.append((campaign, creative, placement, group.counts[3],
                         _money(group.counts[4])))
    return rows


def event_properties(conn: sqlite3.Connection, query: ReportQuery,
                     event: str | None) -> list[tuple[Any, ...]]:
    """Return the rows of ``run.event_properties``: event name, property, value, events and
    visitors. Every custom event counts, with no bound on their number."""
    sums = _sums(conn, query, "property", key=lambda row: tuple(orjson.loads(row[VALUE])))
    groups = [group for group in sums.counts if not event or group[0] == event]
    groups.sort(key=lambda group: (-sums.get(group, EVENTS), group))
    return [(*group, sums.get(group, EVENTS), sums.unique(group))
            for group in groups[:query.limit]]


def funnel(conn: sqlite3.Connection, query: ReportQuery, steps: list[tuple[str, str]],
           window_ms: int) -> tuple[list[int], list[int]] | None:
    """Visitors reaching each step and the summed milliseconds from the previous step, as
    ``run.funnel_steps`` counts them, from the step times in ``rollup_steps``.

    ``steps`` are (kind, value) pairs without property conditions; see ``count_funnel``.
    Returns None when the visitor and time ranges do not fit the 64-bit keys used there, so
    the caller reads raw events.
    """
    loaded: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for kind, value in steps:
        if (kind, value) in loaded:
            continue
        blobs = rollups.step_chunks(conn, query.site_id, rollups.step_key(kind, value),
                                    query.from_day, query.to_day)
        visitors = np.concatenate([np.frombuffer(v, dtype=np.uint32) for v, _ in blobs]
                                  or [np.empty(0, np.uint32)]).astype(np.int64)
        times = np.concatenate([np.frombuffer(t, dtype=np.int64) for _, t in blobs]
                               or [np.empty(0, np.int64)])
        loaded[(kind, value)] = (visitors, times)
    return count_funnel(loaded, list(steps), window_ms)


def count_funnel(events: dict[Any, tuple[np.ndarray, np.ndarray]], steps: list[Any],
                 window_ms: int) -> tuple[list[int], list[int]] | None:
    """Count a funnel from the (visitor integer, time) pairs of each distinct step definition.

    A visitor's first step is their earliest matching event. Each later step is their
    earliest matching event at or after the previous step's time (the same millisecond
    counts) that no earlier step of the funnel used, no later than ``window_ms`` after the
    first. Both the rollup and the raw path count through here, so they agree by
    construction, whatever order events of the same millisecond come in.
    """
    names = list(events)
    all_visitors = np.concatenate([events[name][0] for name in names]
                                  or [np.empty(0, np.int64)])
    # Dense visitor numbers keep the keys small whatever the id counter has reached.
    _, dense = np.unique(all_visitors, return_inverse=True)
    dense = dense.reshape(-1).astype(np.int64)
    pairs: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    offset = 0
    for name in names:
        size = events[name][0].size
        pairs[name] = (dense[offset:offset + size], events[name][1].astype(np.int64))
        offset += size
    base = min((int(times.min()) for _, times in pairs.values() if times.size), default=0)
    span = max((int(times.max()) - base for _, times in pairs.values() if times.size),
               default=0) + 1
    top = int(dense.max()) if dense.size else 0
    if (top + 1) * span >= 2 ** 62:
        return None
    window_ms = max(min(window_ms, span), -1)  # any longer window admits every event
    keys = {name: np.sort(visitors * span + (times - base))
            for name, (visitors, times) in pairs.items()}
    reached = [0] * len(steps)
    gaps = [0] * len(steps)
    first = keys[steps[0]]
    if not first.size:
        return reached, gaps
    owner = first // span
    starts = np.flatnonzero(np.concatenate(([True], owner[1:] != owner[:-1])))
    current_visitor, current_time = owner[starts], first[starts] % span
    first_time = current_time
    # The last position each visitor used in the keys of each step definition.
    used: dict[Any, np.ndarray] = {steps[0]: starts}
    reached[0] = int(current_visitor.size)
    for index in range(1, len(steps)):
        candidates = keys[steps[index]]
        position = np.searchsorted(candidates, current_visitor * span + current_time,
                                   side="left")
        if steps[index] in used:
            position = np.maximum(position, used[steps[index]] + 1)
        inside = position < candidates.size
        found = candidates[np.minimum(position, max(candidates.size - 1, 0))] \
            if candidates.size else np.zeros_like(current_visitor)
        found_time = found % span
        ok = inside & (found // span == current_visitor) & \
            (found_time <= first_time + window_ms)
        reached[index] = int(ok.sum())
        gaps[index] = int((found_time[ok] - current_time[ok]).sum())
        used = {name: at[ok] for name, at in used.items()}
        used[steps[index]] = position[ok]
        current_visitor, current_time, first_time = \
            current_visitor[ok], found_time[ok], first_time[ok]
    return reached, gaps
