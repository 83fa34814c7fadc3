"""Report rollups kept in SQLite next to the raw events, so dashboard reports read a few rows
per day instead of every event of the range.

``SqliteStore.write_batch`` calls ``apply_events`` with the events it actually inserted, in
the same transaction, so the rollups hold each stored event exactly once. Counts match the
raw report SQL in ``trackpixel.reports.queries`` exactly:

* ``rollup_days`` holds additive counts per (site, local day, dimension, value) and the set
  of visitor (or recipient) integers as a roaring bitmap, so the unique visitors of a range
  are the size of the union of its days' sets, never a sum of daily counts.
* ``rollup_sessions`` holds each session's state per local day. Session reports (bounces,
  duration, entry and exit pages, acquisition) count a session over its events inside the
  range, so ``rollup_session_groups`` keys each session's contribution by the first and last
  day of its events: a range takes the groups that lie wholly inside it, and the few sessions
  that cross a range boundary are recomputed from their per-day state at query time.

Only people's events (not bots, not machine email opens) count in session reports.

``apply_events`` also appends the events to the column copy (``trackpixel.storage.columns``)
that filtered reports read.
"""

from __future__ import annotations

import sqlite3
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pyroaring import BitMap

from trackpixel.storage import columns

# Separates the parts of a composite dimension value, e.g. campaign, creative, placement.
SEP = "\x1f"
BROWSER_SOURCES = ("pixel", "beacon")
PERSON_DIMENSIONS = ("device_type", "browser", "os", "country")
ACQUISITION_FIELDS = ("channel", "referrer_host", "utm_source", "utm_medium", "utm_campaign",
                      "utm_term", "utm_content", "campaign", "creative", "placement")
SESSION_REPORTS = ("stats", "entry", "exit", "channel", "referrer", "utm", "ad")
# Columns of ``rollup_days`` that hold additive counts, in the order the delta lists use.
DAY_COUNTERS = ("events", "page_views", "custom_events", "sessions", "total_value",
                "custom_value", "secondary")
GROUP_COUNTERS = ("sessions", "bounces", "duration_ms", "conversions", "conversion_value")
# Columns an ``EventLike`` needs, for reading raw events back (rebuild and erasure).
FACT_COLUMNS = ("site_id", "ts", "local_day", "local_hour", "source", "kind", "name", "path",
                "channel", "referrer_host", "utm_source", "utm_medium", "utm_campaign",
                "utm_term", "utm_content", "campaign", "creative", "placement", "recipient",
                "value", "visitor_id", "session_id", "session_start", "browser", "os",
                "device_type", "country", "is_bot", "bot_reason", "machine_open", "props")


class EventLike(Protocol):
    """The event fields the rollups read; ``EventRow`` and ``Fact`` both provide them."""

    site_id: str
    ts: int
    local_day: str
    local_hour: int
    source: str
    kind: str
    name: str
    path: str | None
    channel: str
    referrer_host: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_term: str | None
    utm_content: str | None
    campaign: str | None
    creative: str | None
    placement: str | None
    recipient: str | None
    value: float | None
    visitor_id: str
    session_id: str
    session_start: int
    browser: str | None
    os: str | None
    device_type: str | None
    country: str | None
    is_bot: int
    bot_reason: str | None
    machine_open: int
    props: str | None


@dataclass(slots=True)
class Fact:
    """An event read back from the ``events`` table, with the ``FACT_COLUMNS`` fields."""

    site_id: str
    ts: int
    local_day: str
    local_hour: int
    source: str
    kind: str
    name: str
    path: str | None
    channel: str
    referrer_host: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_term: str | None
    utm_content: str | None
    campaign: str | None
    creative: str | None
    placement: str | None
    recipient: str | None
    value: float | None
    visitor_id: str
    session_id: str
    session_start: int
    browser: str | None
    os: str | None
    device_type: str | None
    country: str | None
    is_bot: int
    bot_reason: str | None
    machine_open: int
    props: str | None


# ---------------------------------------------------------------------------------------
# Integer ids for visitor, session and recipient strings


def _assign_ids(conn: sqlite3.Connection, site_id: str, kind: str,
                keys: Iterable[str]) -> dict[str, int]:
    """Return the dense integer of each key, creating integers for keys not seen before."""
    wanted = sorted(set(keys))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for key, number in conn.execute(
                f"SELECT key, id FROM rollup_ids WHERE site_id = ? AND kind = ? "
                f"AND key IN ({marks})", (site_id, kind, *chunk)):
            found[key] = number
    missing = [key for key in wanted if key not in found]
    if missing:
        row = conn.execute("SELECT last_id FROM rollup_id_counters WHERE site_id = ?",
                           (site_id,)).fetchone()
        last = int(row[0]) if row else 0
        for key in missing:
            last += 1
            found[key] = last
        conn.executemany("INSERT INTO rollup_ids VALUES (?, ?, ?, ?)",
                         [(site_id, kind, key, found[key]) for key in missing])
        conn.execute("INSERT INTO rollup_id_counters VALUES (?, ?) ON CONFLICT (site_id) "
                     "DO UPDATE SET last_id = excluded.last_id", (site_id, last))
    return found


def _bitmap(blob: bytes | None) -> BitMap:
    return BitMap.deserialize(blob) if blob else BitMap()


# ---------------------------------------------------------------------------------------
# Day-level counts


@dataclass
class _DayDelta:
    counts: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)
    members: dict[tuple[str, str, str, str], set[int]] = field(default_factory=dict)
    started: dict[tuple[str, str, str, str], set[int]] = field(default_factory=dict)

    def add(self, key: tuple[str, str, str, str], counts: Sequence[float],
            member: int | None, started: int | None = None) -> None:
        current = self.counts.get(key)
        if current is None:
            self.counts[key] = list(counts)
            self.members[key] = set()
            self.started[key] = set()
        else:
            for index, amount in enumerate(counts):
                current[index] += amount
        if member is not None:
            self.members[key].add(member)
        if started is not None:
            self.started[key].add(started)


def _day_facts(event: EventLike, visitor: int, session: int, recipient: int | None,
               delta: _DayDelta) -> None:
    """Add one event to the day-level delta under every dimension it counts in."""
    site, day = event.site_id, event.local_day
    kind = event.kind
    if not event.is_bot and not event.machine_open:
        page_view = 1 if kind == "page_view" else 0
        custom = 1 if kind == "custom" else 0
        value = event.value if event.value is not None else 0.0
        counts = (1, page_view, custom, event.session_start, value,
                  value if custom else 0.0, 0)
        # Sessions are counted as distinct session ids with a start event, as the raw SQL
        # does, so a session id that starts twice counts once.
        started = session if event.session_start == 1 else None
        delta.add((site, "", day, ""), counts, visitor, started)
        delta.add((site, "hour", day, str(event.local_hour)), counts, visitor, started)
        if page_view:
            delta.add((site, "path", day, event.path or ""), counts, visitor)
        for dimension in PERSON_DIMENSIONS:
            delta.add((site, dimension, day, getattr(event, dimension) or ""), counts, visitor,
                      started)
        delta.add((site, "kind_name", day, f"{kind}{SEP}{event.name}"), counts, visitor)
        if custom and event.props is not None:
            for described in property_values(event.name, event.props):
                delta.add((site, "property", day, described), (1, 0, 1, 0, 0.0, 0.0, 0),
                          visitor)
        if kind in ("impression", "click") and event.campaign is not None:
            ad = SEP.join((event.campaign, event.creative or "", event.placement or ""))
            delta.add((site, "ad", day, ad),
                      (1 if kind == "impression" else 0, 0, 0, 0, 0.0, 0.0,
                       1 if kind == "click" else 0), None)
    # Email and data-quality figures include bots and machine opens. Unique opens and
    # clicks count people's visitor ids, which follow the recipient where consent allows.
    if kind == "email_open" and event.campaign is not None:
        human = not event.machine_open and not event.is_bot
        delta.add((site, "email_open", day, event.campaign),
                  (1, 0, 0, 0, 0.0, 0.0, event.machine_open), visitor if human else None)
    if kind == "click" and event.campaign is not None:
        delta.add((site, "email_click", day, event.campaign),
                  (0 if event.is_bot else 1, 0, 0, 0, 0.0, 0.0, 0),
                  None if event.is_bot else visitor)
    if event.is_bot:
        delta.add((site, "bot_reason", day, event.bot_reason or ""),
                  (1, 0, 0, 0, 0.0, 0.0, 0), visitor)
    if kind == "email_open" and event.machine_open:
        delta.add((site, "machine_open", day, event.campaign or ""),
                  (1, 0, 0, 0, 0.0, 0.0, 0), recipient)


def property_items(props: str) -> list[tuple[str, str]]:
    """Return the (property name, value text) pairs of a property JSON object, in its order:
    a string value as it is, any other value as its JSON text. Text that does not parse, or is
    not an object, has no pairs.

    The SQLite rollups, the raw report and the ClickHouse property arrays all use this."""
    try:
        parsed = orjson.loads(props)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(parsed, dict):
        return []
    return [(str(key), value if isinstance(value, str) else orjson.dumps(value).decode())
            for key, value in parsed.items()]


def property_values(name: str, props: str) -> list[str]:
    """Return the ``property`` dimension values of a custom event: one JSON array of event
    name, property name and value text per property (``property_items``)."""
    return [orjson.dumps([name, key, text]).decode() for key, text in property_items(props)]


def _flush_days(conn: sqlite3.Connection, delta: _DayDelta) -> None:
    assignments = ", ".join(f"{name} = ?" for name in DAY_COUNTERS)
    for key, counts in delta.counts.items():
        row = conn.execute(
            f"SELECT {', '.join(DAY_COUNTERS)}, members, started FROM rollup_days "
            "WHERE site_id = ? AND dimension = ? AND local_day = ? AND value = ?",
            key).fetchone()
        added, started = delta.members[key], delta.started[key]
        if row is None:
            conn.execute(
                f"INSERT INTO rollup_days (site_id, dimension, local_day, value, "
                f"{', '.join(DAY_COUNTERS)}, members, started) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, *counts, BitMap(added).serialize(),
                 BitMap(started).serialize() if started else None))
            continue
        totals = [old + new for old, new in zip(row[:-2], counts, strict=True)]
        members_blob, started_blob = row[-2], row[-1]
        if added:
            members_blob = (_bitmap(members_blob) | BitMap(added)).serialize()
        if started:
            started_blob = (_bitmap(started_blob) | BitMap(started)).serialize()
        conn.execute(
            f"UPDATE rollup_days SET {assignments}, members = ?, started = ? WHERE site_id = ? "
            "AND dimension = ? AND local_day = ? AND value = ?",
            (*totals, members_blob, started_blob, *key))


# ---------------------------------------------------------------------------------------
# Session-level state
#
# A session's state is a JSON object: local day -> list indexed by the constants below,
# covering its people's events of that day.

N_EVENTS, STARTED, START_FIELDS, CONVERSIONS, CONVERSION_VALUE = 0, 1, 2, 3, 4
BROWSER_HITS, BROWSER_STARTED, FIRST_TS, LAST_TS = 5, 6, 7, 8
PAGE_VIEWS, ENTRY_PATH, EXIT_KEY = 9, 10, 11


def _new_part() -> list[Any]:
    return [0, 0, None, 0, 0.0, 0, 0, None, None, 0, None, None]


def _max(old: Any, new: Any) -> Any:
    return new if old is None or new > old else old


def _add_to_part(part: list[Any], event: EventLike) -> None:
    """Fold one event into its day's part, as the raw per-session SQL aggregates it."""
    start = event.session_start == 1
    part[N_EVENTS] += 1
    if start:
        part[STARTED] = 1
        fields = [getattr(event, name) or "" for name in ACQUISITION_FIELDS]
        old = part[START_FIELDS]
        part[START_FIELDS] = fields if old is None else [
            _max(a, b) for a, b in zip(old, fields, strict=True)]
    if event.kind == "custom":
        part[CONVERSIONS] += 1
        part[CONVERSION_VALUE] += event.value if event.value is not None else 0.0
    if event.source in BROWSER_SOURCES:
        part[BROWSER_HITS] += 1
        if start:
            part[BROWSER_STARTED] = 1
        part[FIRST_TS] = event.ts if part[FIRST_TS] is None else min(part[FIRST_TS], event.ts)
        part[LAST_TS] = event.ts if part[LAST_TS] is None else max(part[LAST_TS], event.ts)
    if event.kind == "page_view":
        part[PAGE_VIEWS] += 1
        path = event.path or ""
        if start:
            part[ENTRY_PATH] = _max(part[ENTRY_PATH], path)
        # The raw exit query orders page views by this text: the time, a space, the path.
        part[EXIT_KEY] = _max(part[EXIT_KEY], f"{event.ts} {path}")


def _merge(parts: Iterable[list[Any]]) -> list[Any]:
    total = _new_part()
    for part in parts:
        total[N_EVENTS] += part[N_EVENTS]
        total[STARTED] |= part[STARTED]
        if part[START_FIELDS] is not None:
            old = total[START_FIELDS]
            total[START_FIELDS] = list(part[START_FIELDS]) if old is None else [
                _max(a, b) for a, b in zip(old, part[START_FIELDS], strict=True)]
        total[CONVERSIONS] += part[CONVERSIONS]
        total[CONVERSION_VALUE] += part[CONVERSION_VALUE]
        total[BROWSER_HITS] += part[BROWSER_HITS]
        total[BROWSER_STARTED] |= part[BROWSER_STARTED]
        for index, pick in ((FIRST_TS, min), (LAST_TS, max)):
            if part[index] is not None:
                total[index] = part[index] if total[index] is None else pick(total[index],
                                                                               part[index])
        total[PAGE_VIEWS] += part[PAGE_VIEWS]
        total[ENTRY_PATH] = _max(total[ENTRY_PATH], part[ENTRY_PATH]) \
            if part[ENTRY_PATH] is not None else total[ENTRY_PATH]
        total[EXIT_KEY] = _max(total[EXIT_KEY], part[EXIT_KEY]) \
            if part[EXIT_KEY] is not None else total[EXIT_KEY]
    return total


@dataclass(frozen=True)
class Contribution:
    """The counts one session adds to one session-report group."""

    report: str
    first_day: str
    last_day: str
    value: str
    counts: tuple[float, ...]  # in ``GROUP_COUNTERS`` order
    counts_visitor: bool

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.report, self.first_day, self.last_day, self.value)


def contributions(days: dict[str, list[Any]]) -> list[Contribution]:
    """Return the session-report groups a session with these per-day parts counts in.

    Each report's first and last day are those of the events that report looks at: browser
    events for session stats, page views for entry and exit pages, all events otherwise.
    """
    found: list[Contribution] = []
    if not days:
        return found
    total = _merge(days.values())
    every_day = sorted(days)
    browser_days = [day for day in every_day if days[day][BROWSER_HITS]]
    view_days = [day for day in every_day if days[day][PAGE_VIEWS]]
    if total[BROWSER_HITS] and total[BROWSER_STARTED]:
        found.append(Contribution(
            "stats", browser_days[0], browser_days[-1], "",
            (1, int(total[BROWSER_HITS] == 1), total[LAST_TS] - total[FIRST_TS], 0, 0.0),
            False))
    if total[PAGE_VIEWS]:
        if total[ENTRY_PATH] is not None:
            found.append(Contribution("entry", view_days[0], view_days[-1], total[ENTRY_PATH],
                                      (1, int(total[PAGE_VIEWS] == 1), 0, 0, 0.0), True))
        # substr(last_view, 15) in the raw query: the path after the 13-digit time.
        found.append(Contribution("exit", view_days[0], view_days[-1], total[EXIT_KEY][14:],
                                  (1, 0, 0, 0, 0.0), True))
    if total[STARTED]:
        fields = total[START_FIELDS]
        counts = (1, 0, 0, total[CONVERSIONS], total[CONVERSION_VALUE])
        first, last = every_day[0], every_day[-1]
        found.append(Contribution("channel", first, last, fields[0], counts, True))
        found.append(Contribution("referrer", first, last, fields[1], counts, True))
        found.append(Contribution("utm", first, last, SEP.join(fields[2:7]), counts, True))
        found.append(Contribution("ad", first, last, SEP.join(fields[7:10]), counts, False))
    return found


def tracks_session(event: EventLike) -> bool:
    """Whether the event counts in session reports: people's events only.

    NOTE: the pipeline gives server, email and ad events a session of their own that never
    starts, so their state rows never count. They are kept anyway, so that any mix of
    events counts exactly as the raw SQL counts it.
    """
    return not event.is_bot and not event.machine_open


@dataclass
class _GroupDelta:
    counts: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    added: dict[tuple[str, ...], set[int]] = field(default_factory=lambda: defaultdict(set))
    removed: dict[tuple[str, ...], set[int]] = field(default_factory=lambda: defaultdict(set))

    def change(self, site_id: str, item: Contribution, sign: int) -> None:
        key = (site_id, *item.key)
        current = self.counts.setdefault(key, [0, 0, 0, 0, 0.0])
        for index, amount in enumerate(item.counts):
            current[index] += sign * amount


# Without ANALYZE statistics, SQLite plans a lookup by site and visitor as a scan of the
# site's primary-key range, which reads every session of the site for each visitor. The
# index ends on the last day, so a lookup of recent sessions skips a long history.
BY_VISITOR = "INDEXED BY rollup_sessions_visitor"


def _load_session(conn: sqlite3.Connection, site_id: str,
                  session_id: str) -> tuple[int | None, dict[str, list[Any]]]:
    row = conn.execute("SELECT visitor, days FROM rollup_sessions WHERE site_id = ? AND "
                       "session_id = ?", (site_id, session_id)).fetchone()
    if row is None:
        return None, {}
    return int(row[0]), orjson.loads(row[1])


def _save_session(conn: sqlite3.Connection, site_id: str, session_id: str, visitor: int,
                  days: dict[str, list[Any]]) -> None:
    if not days:
        conn.execute("DELETE FROM rollup_sessions WHERE site_id = ? AND session_id = ?",
                     (site_id, session_id))
        return
    ordered = sorted(days)
    conn.execute(
        "INSERT INTO rollup_sessions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, session_id) "
        "DO UPDATE SET visitor = excluded.visitor, first_day = excluded.first_day, "
        "last_day = excluded.last_day, days = excluded.days",
        (site_id, session_id, visitor, ordered[0], ordered[-1], orjson.dumps(days)))


def _update_sessions(conn: sqlite3.Connection, site_id: str,
                     events: dict[str, list[EventLike]], visitors: dict[str, int],
                     delta: _GroupDelta) -> None:
    """Fold new events into their sessions and record each session's change of groups."""
    candidates: dict[int, set[tuple[str, ...]]] = defaultdict(set)
    for session_id, session_events in events.items():
        _, days = _load_session(conn, site_id, session_id)
        before = contributions(days)
        for event in session_events:
            _add_to_part(days.setdefault(event.local_day, _new_part()), event)
        after = contributions(days)
        visitor = visitors[session_events[0].visitor_id]
        _save_session(conn, site_id, session_id, visitor, days)
        _record_change(site_id, visitor, before, after, delta, candidates)
    _resolve_removals(conn, site_id, candidates, delta)


def _record_change(site_id: str, visitor: int, before: list[Contribution],
                   after: list[Contribution], delta: _GroupDelta,
                   candidates: dict[int, set[tuple[str, ...]]]) -> None:
    for item in before:
        delta.change(site_id, item, -1)
    for item in after:
        delta.change(site_id, item, 1)
        if item.counts_visitor:
            delta.added[(site_id, *item.key)].add(visitor)
    kept = {item.key for item in after}
    for item in before:
        if item.counts_visitor and item.key not in kept:
            candidates[visitor].add((site_id, *item.key))


def _resolve_removals(conn: sqlite3.Connection, site_id: str,
                      candidates: dict[int, set[tuple[str, ...]]], delta: _GroupDelta) -> None:
    """Drop a visitor from a group's set unless another of their sessions still counts there.

    Runs after every changed session state is saved, so the check reads the new states.
    """
    for visitor, keys in candidates.items():
        still: set[tuple[str, ...]] = set()
        # A session counts in a group keyed by first day F and last day L only if its own
        # days cover F..L, so the visitor's sessions outside the keys' days are not read.
        latest_first = max(key[2] for key in keys)
        earliest_last = min(key[3] for key in keys)
        for (raw_days,) in conn.execute(
                f"SELECT days FROM rollup_sessions {BY_VISITOR} WHERE site_id = ? "
                "AND visitor = ? AND last_day >= ? AND first_day <= ?",
                (site_id, visitor, earliest_last, latest_first)):
            still.update((site_id, *item.key) for item in contributions(orjson.loads(raw_days))
                         if item.counts_visitor)
        for key in keys - still:
            delta.removed[key].add(visitor)


def _flush_groups(conn: sqlite3.Connection, delta: _GroupDelta) -> None:
    keys = set(delta.counts) | set(delta.added) | set(delta.removed)
    assignments = ", ".join(f"{name} = ?" for name in GROUP_COUNTERS)
    where = "site_id = ? AND report = ? AND first_day = ? AND last_day = ? AND value = ?"
    for key in keys:
        counts = delta.counts.get(key, [0, 0, 0, 0, 0.0])
        added, removed = delta.added.get(key, set()), delta.removed.get(key, set())
        row = conn.execute(f"SELECT {', '.join(GROUP_COUNTERS)}, members "
                           f"FROM rollup_session_groups WHERE {where}", key).fetchone()
        old_counts = row[:-1] if row else (0, 0, 0, 0, 0.0)
        members = _bitmap(row[-1] if row else None)
        members |= BitMap(added)
        members -= BitMap(removed)
        totals = [old + new for old, new in zip(old_counts, counts, strict=True)]
        if totals[0] == 0 and not members:
            # No session counts here any more (the value sums are then zero too).
            conn.execute(f"DELETE FROM rollup_session_groups WHERE {where}", key)
        elif row is None:
            conn.execute(
                f"INSERT INTO rollup_session_groups (site_id, report, first_day, last_day, "
                f"value, {', '.join(GROUP_COUNTERS)}, members) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, *totals, members.serialize()))
        else:
            conn.execute(f"UPDATE rollup_session_groups SET {assignments}, members = ? "
                         f"WHERE {where}", (*totals, members.serialize(), *key))


# ---------------------------------------------------------------------------------------
# Funnel step times
#
# Funnels are defined when a report is asked for, so no count can be kept in advance. What is
# kept is the (visitor, time) pair of each person's event under the step keys that can name
# it, so that a funnel reads only the events of its steps, as arrays.

# Pairs per chunk. A batch rewrites the last chunk of each step key and day it touches, so
# small chunks keep that write short, at the cost of more rows for a funnel to read.
STEP_CHUNK = 256
PAGE_VIEW_NAME = "page_view"


def step_key(kind: str, value: str) -> str:
    """Return the ``rollup_steps`` key of a funnel step: ``event`` and an event name, or
    ``page`` and a path."""
    return f"{'p' if kind == 'page' else 'n'}{SEP}{value}"


def has_step_key(kind: str, value: str) -> bool:
    """Return whether the rollups keep the events of this step. Page views are kept by path
    only, so an event step naming page views reads raw events."""
    return kind == "page" or value != PAGE_VIEW_NAME


@dataclass
class _StepDelta:
    pairs: dict[tuple[str, str, str], tuple[array[int], array[int]]] = field(
        default_factory=dict)

    def add(self, site_id: str, key: str, day: str, visitor: int, ts: int) -> None:
        found = self.pairs.get((site_id, key, day))
        if found is None:
            # Unsigned: the site's id counter runs to 2**32, as in the roaring bitmaps.
            found = self.pairs[(site_id, key, day)] = (array("I"), array("q"))
        found[0].append(visitor)
        found[1].append(ts)


def _step_facts(event: EventLike, visitor: int, delta: _StepDelta) -> None:
    if event.is_bot or event.machine_open:
        return
    if event.kind == "page_view":
        if event.path is not None:
            delta.add(event.site_id, step_key("page", event.path), event.local_day, visitor,
                      event.ts)
    elif event.name != PAGE_VIEW_NAME:
        delta.add(event.site_id, step_key("event", event.name), event.local_day, visitor,
                  event.ts)


def _flush_steps(conn: sqlite3.Connection, delta: _StepDelta) -> None:
    for (site_id, key, day), (visitors, times) in delta.pairs.items():
        row = conn.execute(
            "SELECT chunk, n, visitors, times FROM rollup_steps WHERE site_id = ? AND step = ? "
            "AND local_day = ? ORDER BY chunk DESC LIMIT 1", (site_id, key, day)).fetchone()
        start = 0
        chunk = -1
        if row is not None:
            chunk, count, old_visitors, old_times = row
            room = STEP_CHUNK - count
            if room > 0:
                start = min(room, len(visitors))
                conn.execute(
                    "UPDATE rollup_steps SET n = ?, visitors = ?, times = ? WHERE site_id = ? "
                    "AND step = ? AND local_day = ? AND chunk = ?",
                    (count + start, old_visitors + visitors[:start].tobytes(),
                     old_times + times[:start].tobytes(), site_id, key, day, chunk))
        for offset in range(start, len(visitors), STEP_CHUNK):
            chunk += 1
            part_visitors = visitors[offset:offset + STEP_CHUNK]
            conn.execute("INSERT INTO rollup_steps VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (site_id, key, day, chunk, len(part_visitors),
                          part_visitors.tobytes(),
                          times[offset:offset + STEP_CHUNK].tobytes()))


def step_chunks(conn: sqlite3.Connection, site_id: str, key: str, from_day: str,
                to_day: str) -> list[tuple[bytes, bytes]]:
    """Return the (visitors, times) blobs of one step key over a range of local days."""
    return conn.execute(
        "SELECT visitors, times FROM rollup_steps WHERE site_id = ? AND step = ? "
        "AND local_day >= ? AND local_day <= ?", (site_id, key, from_day, to_day)).fetchall()


def part_ready(conn: sqlite3.Connection, part: str) -> bool:
    """Return whether a rollup part added by a later migration covers the events stored
    before it."""
    try:
        row = conn.execute("SELECT ready FROM rollup_parts WHERE part = ?", (part,)).fetchone()
    except sqlite3.OperationalError:
        return False  # a database opened read-only before the migration adding the part
    return bool(row and row[0])


# ---------------------------------------------------------------------------------------
# Entry points for writers


def apply_events(conn: sqlite3.Connection, events: Sequence[EventLike]) -> None:
    """Add newly stored events to every rollup; call inside the transaction that stored them.

    Every event must be new: an event passed twice is counted twice.
    """
    by_site: dict[str, list[EventLike]] = defaultdict(list)
    for event in events:
        by_site[event.site_id].append(event)
    for site_id, site_events in by_site.items():
        visitors = _assign_ids(conn, site_id, "v", (event.visitor_id for event in site_events))
        session_ids = _assign_ids(conn, site_id, "s", (event.session_id for event in site_events))
        recipients = _assign_ids(conn, site_id, "r", (
            event.recipient for event in site_events if event.recipient is not None))
        day_delta = _DayDelta()
        step_delta = _StepDelta()
        sessions: dict[str, list[EventLike]] = defaultdict(list)
        for event in site_events:
            recipient = recipients[event.recipient] if event.recipient is not None else None
            visitor = visitors[event.visitor_id]
            _day_facts(event, visitor, session_ids[event.session_id], recipient, day_delta)
            _step_facts(event, visitor, step_delta)
            if tracks_session(event):
                sessions[event.session_id].append(event)
        _flush_days(conn, day_delta)
        _flush_steps(conn, step_delta)
        columns.append_events(conn, site_id, site_events, visitors, session_ids, recipients)
        group_delta = _GroupDelta()
        _update_sessions(conn, site_id, sessions, visitors, group_delta)
        _flush_groups(conn, group_delta)


def read_facts(conn: sqlite3.Connection, where: str, params: Sequence[Any],
               batch_rows: int = 50_000) -> Iterator[list[Fact]]:
    """Yield stored events matching ``where`` in id order, ``batch_rows`` at a time."""
    cursor = conn.execute(f"SELECT {', '.join(FACT_COLUMNS)} FROM events WHERE {where} "
                          "ORDER BY id", tuple(params))
    while rows := cursor.fetchmany(batch_rows):
        yield [Fact(*row) for row in rows]


def clear_site(conn: sqlite3.Connection, site_id: str) -> None:
    """Delete every rollup row of a site, its id map included."""
    for table in ("rollup_days", "rollup_sessions", "rollup_session_groups", "rollup_steps",
                  "rollup_ids", "rollup_id_counters"):
        conn.execute(f"DELETE FROM {table} WHERE site_id = ?", (site_id,))
    columns.clear_site(conn, site_id)


def in_sync(conn: sqlite3.Connection) -> bool:
    """Whether the rollups cover every stored event: no event id is above the watermark."""
    try:
        row = conn.execute("SELECT (SELECT MAX(id) FROM events) <= last_event_id "
                           "OR (SELECT MAX(id) FROM events) IS NULL FROM rollup_watermark"
                           ).fetchone()
    except sqlite3.OperationalError:
        return False  # a database opened read-only before its migration to rollups
    return bool(row and row[0])


def advance_watermark(conn: sqlite3.Connection) -> None:
    """Record that the rollups cover every stored event; call only when that is true."""
    conn.execute("UPDATE rollup_watermark SET last_event_id = "
                 "COALESCE((SELECT MAX(id) FROM events), 0)")


def rebuild_site(conn: sqlite3.Connection, site_id: str, progress: Any = None,
                 batch_rows: int = 50_000, *, covers_all: bool = False,
                 fills_parts: bool = False) -> int:
    """Recompute a site's rollups from its raw events in one transaction; return the count.

    ``progress``, when given, is called with the number of events done after each batch.
    Pass ``covers_all`` when every other site's rollups are known to be complete, so that
    reports may use them afterwards. Pass ``fills_parts`` too only when every other site was
    rebuilt since the migration that added the ``rollup_parts`` still not ready, because the
    watermark does not cover those parts.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        clear_site(conn, site_id)
        done = 0
        for facts in read_facts(conn, "site_id = ?", (site_id,), batch_rows):
            apply_events(conn, facts)
            done += len(facts)
            if progress is not None:
                progress(done)
        if covers_all:
            advance_watermark(conn)
            if fills_parts:
                conn.execute("UPDATE rollup_parts SET ready = 1")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return done


def fill_columns(conn: sqlite3.Connection, progress: Any = None,
                 batch_rows: int = columns.CHUNK_ROWS) -> int:
    """Rebuild every site's column copy from the raw events in one transaction, mark it
    ready, and return the number of events copied.

    Only the copy is rebuilt, so this is quicker than ``rebuild_site`` on a database whose
    other rollups are complete. ``progress``, when given, is called with the number of
    events done after each batch.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = 0
        site_ids = [row[0] for row in conn.execute(
            "SELECT id FROM sites UNION SELECT DISTINCT site_id FROM column_chunks")]
        for site_id in site_ids:
            columns.clear_site(conn, site_id)
            days = [row[0] for row in conn.execute(
                "SELECT DISTINCT local_day FROM events WHERE site_id = ?", (site_id,))]
            for day in days:
                for facts in read_facts(conn, "site_id = ? AND local_day = ?", (site_id, day),
                                        batch_rows):
                    visitors = _assign_ids(conn, site_id, "v", (fact.visitor_id for fact in facts))
                    sessions = _assign_ids(conn, site_id, "s", (fact.session_id for fact in facts))
                    recipients = _assign_ids(conn, site_id, "r", (
                        fact.recipient for fact in facts if fact.recipient is not None))
                    columns.append_events(conn, site_id, facts, visitors, sessions, recipients)
                    done += len(facts)
                    if progress is not None:
                        progress(done)
        conn.execute("UPDATE rollup_parts SET ready = 1 WHERE part = 'columns'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return done


def expiring_ids(conn: sqlite3.Connection, site_id: str,
                 first_kept_day: str) -> dict[str, set[str]]:
    """Return the visitor ('v'), session ('s') and recipient ('r') ids of a site's events and
    sessions before ``first_kept_day``; call before retention deletes those events."""
    found: dict[str, set[str]] = {"v": set(), "s": set(), "r": set()}
    for visitor_id, session_id, recipient in conn.execute(
            "SELECT DISTINCT visitor_id, session_id, recipient FROM events WHERE site_id = ? "
            "AND local_day < ?", (site_id, first_kept_day)):
        found["v"].add(visitor_id)
        found["s"].add(session_id)
        if recipient is not None:
            found["r"].add(recipient)
    found["s"].update(row[0] for row in conn.execute(
        "SELECT session_id FROM rollup_sessions WHERE site_id = ? AND last_day < ?",
        (site_id, first_kept_day)))
    return found


def expire(conn: sqlite3.Connection, site_id: str, first_kept_day: str,
           candidates: dict[str, set[str]]) -> None:
    """Delete the per-visitor parts of a site's rollups before ``first_kept_day``; call after
    retention has deleted the raw events of those days, in the same transaction.

    Funnel step times, column chunks and session states of expired days go, and so do the
    id mappings of ``candidates`` (from ``expiring_ids``) that no stored event or session
    refers to any more. The day counts and the session groups stay, with visitor sets of
    bare integers. A visitor who returns after their mapping went gets a new integer, so a
    range that spans the expired days and later ones may count them twice.
    """
    conn.execute("DELETE FROM rollup_steps WHERE site_id = ? AND local_day < ?",
                 (site_id, first_kept_day))
    conn.execute("DELETE FROM rollup_sessions WHERE site_id = ? AND last_day < ?",
                 (site_id, first_kept_day))
    columns.expire(conn, site_id, first_kept_day)
    still_used = {
        "v": "SELECT 1 FROM events WHERE site_id = ? AND visitor_id = ? LIMIT 1",
        "s": "SELECT 1 FROM rollup_sessions WHERE site_id = ? AND session_id = ?",
        # Recipients have no index of their own; the expiring ones are few and rare.
        "r": "SELECT 1 FROM events WHERE site_id = ? AND recipient = ? LIMIT 1",
    }
    for kind, keys in candidates.items():
        unused = [(site_id, kind, key) for key in keys
                  if conn.execute(still_used[kind], (site_id, key)).fetchone() is None]
        conn.executemany("DELETE FROM rollup_ids WHERE site_id = ? AND kind = ? AND key = ?",
                         unused)


def erase_visitors(conn: sqlite3.Connection, site_id: str, visitor_ids: Sequence[str],
                   affected_days: Sequence[str], erased_recipients: Iterable[str] = ()) -> None:
    """Take erased visitors out of every rollup; call after deleting their raw events, in
    the same transaction.

    Day-level rows of ``affected_days`` (the days the erased events were on) are recomputed
    from the remaining raw events. The visitors' sessions are taken out of the session
    groups, and their integer ids are deleted, as are those of ``erased_recipients`` (the
    erased events' recipients) that no remaining event names.
    """
    marks = ", ".join("?" for _ in visitor_ids) or "NULL"
    erased = [int(row[0]) for row in conn.execute(
        f"SELECT id FROM rollup_ids WHERE site_id = ? AND kind = 'v' AND key IN ({marks})",
        (site_id, *visitor_ids))]
    columns.erase(conn, site_id, erased, affected_days)
    delta = _GroupDelta()
    erased_sessions = []
    for visitor in erased:
        for session_id, raw_days in conn.execute(
                f"SELECT session_id, days FROM rollup_sessions {BY_VISITOR} "
                "WHERE site_id = ? AND visitor = ?",
                (site_id, visitor)).fetchall():
            for item in contributions(orjson.loads(raw_days)):
                delta.change(site_id, item, -1)
                if item.counts_visitor:
                    delta.removed[(site_id, *item.key)].add(visitor)
            conn.execute("DELETE FROM rollup_sessions WHERE site_id = ? AND session_id = ?",
                         (site_id, session_id))
            erased_sessions.append(session_id)
    _flush_groups(conn, delta)
    days = sorted(set(affected_days))
    for day in days:
        conn.execute("DELETE FROM rollup_days WHERE site_id = ? AND local_day = ?",
                     (site_id, day))
        conn.execute("DELETE FROM rollup_steps WHERE site_id = ? AND local_day = ?",
                     (site_id, day))
    day_marks = ", ".join("?" for _ in days) or "NULL"
    for facts in read_facts(conn, f"site_id = ? AND local_day IN ({day_marks})",
                            (site_id, *days)):
        numbers = _assign_ids(conn, site_id, "v", (fact.visitor_id for fact in facts))
        session_ids = _assign_ids(conn, site_id, "s", (fact.session_id for fact in facts))
        recipients = _assign_ids(conn, site_id, "r", (
            fact.recipient for fact in facts if fact.recipient is not None))
        day_delta = _DayDelta()
        step_delta = _StepDelta()
        for fact in facts:
            recipient = recipients[fact.recipient] if fact.recipient is not None else None
            _day_facts(fact, numbers[fact.visitor_id], session_ids[fact.session_id], recipient,
                       day_delta)
            _step_facts(fact, numbers[fact.visitor_id], step_delta)
        _flush_days(conn, day_delta)
        _flush_steps(conn, step_delta)
    conn.executemany("DELETE FROM rollup_ids WHERE site_id = ? AND kind = 'v' AND key = ?",
                     [(site_id, visitor) for visitor in visitor_ids])
    conn.executemany("DELETE FROM rollup_ids WHERE site_id = ? AND kind = 's' AND key = ?",
                     [(site_id, session_id) for session_id in erased_sessions])
    conn.executemany(
        "DELETE FROM rollup_ids WHERE site_id = ? AND kind = 'r' AND key = ? AND NOT EXISTS "
        "(SELECT 1 FROM events WHERE site_id = rollup_ids.site_id AND recipient = rollup_ids.key)",
        [(site_id, recipient) for recipient in erased_recipients])


# ---------------------------------------------------------------------------------------
# Reading


def day_rows(conn: sqlite3.Connection, site_id: str, dimension: str, from_day: str,
             to_day: str) -> list[tuple[Any, ...]]:
    """Return (day, value, *DAY_COUNTERS, members, started) rows of one dimension in a
    range; the last two are serialized bitmaps."""
    return conn.execute(
        f"SELECT local_day, value, {', '.join(DAY_COUNTERS)}, members, started FROM rollup_days "
        "WHERE site_id = ? AND dimension = ? AND local_day >= ? AND local_day <= ?",
        (site_id, dimension, from_day, to_day)).fetchall()


@dataclass
class Group:
    """Session-report totals of one group value over a range.

    The visitor sets stay serialized until ``visitors`` is asked for, so a report that ranks
    groups by sessions unions the sets of the groups it shows only."""

    counts: list[float] = field(default_factory=lambda: [0, 0, 0, 0, 0.0])
    blobs: list[bytes] = field(default_factory=list)
    extra: set[int] = field(default_factory=set)

    def visitors(self) -> int:
        """Return the number of distinct visitors of the group's sessions."""
        members = BitMap.union(BitMap(self.extra),
                               *(BitMap.deserialize(blob) for blob in self.blobs))
        return len(members)


def session_groups(conn: sqlite3.Connection, site_id: str, report: str, from_day: str,
                   to_day: str) -> dict[str, Group]:
    """Return each group value's totals over sessions counted in the range.

    Sessions whose events lie wholly inside the range come from ``rollup_session_groups``.
    Sessions with events both inside and outside it are recomputed from their parts of the
    days inside the range.
    """
    groups: dict[str, Group] = {}
    for value, *counts, blob in conn.execute(
            f"SELECT value, {', '.join(GROUP_COUNTERS)}, members FROM rollup_session_groups "
            "WHERE site_id = ? AND report = ? AND first_day >= ? AND first_day <= ? "
            "AND last_day <= ?", (site_id, report, from_day, to_day, to_day)):
        group = groups.setdefault(value, Group())
        for index, amount in enumerate(counts):
            group.counts[index] += amount
        if blob:
            group.blobs.append(blob)
    for visitor, raw_days in conn.execute(
            "SELECT visitor, days FROM rollup_sessions WHERE site_id = ? AND first_day < last_day "
            "AND last_day >= ? AND first_day <= ? AND (first_day < ? OR last_day > ?)",
            (site_id, from_day, to_day, from_day, to_day)):
        days = orjson.loads(raw_days)
        whole = {item.report: item for item in contributions(days)}
        inside = {day: part for day, part in days.items() if from_day <= day <= to_day}
        for item in contributions(inside):
            if item.report != report:
                continue
            full = whole.get(report)
            if full is not None and from_day <= full.first_day and full.last_day <= to_day:
                continue  # already in the stored groups
            group = groups.setdefault(item.value, Group())
            for index, amount in enumerate(item.counts):
                group.counts[index] += amount
            if item.counts_visitor:
                group.extra.add(int(visitor))
    return groups
