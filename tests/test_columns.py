"""Filtered reports read from the column copy equal the same reports over the raw events.

The events of ``test_rollups.generate`` are stored in shuffled batches. They cover two
sites, one across the 2025-03-30 change to summer time in Berlin, with sessions across local
midnight, bots, human and machine email opens, and ad events. Every dashboard runner is
compared with the raw SQL path under many filters, over several ranges, and after erasure,
retention and a rebuild.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from test_rollups import (
    FUNNELS,
    SITES,
    RawStore,
    _event,
    _normalised,
    generate,
    store,  # noqa: F401 - pytest fixture
    store_events,
)

from trackpixel import rights
from trackpixel.pipeline.maintenance import Maintenance
from trackpixel.reports import from_columns, run
from trackpixel.reports.queries import ReportQuery
from trackpixel.sites import get_site
from trackpixel.storage import columns, rollups
from trackpixel.storage.sqlite import SqliteStore

# One filter per filterable column with a value that occurs, property filters (strings,
# numbers, JSON true and null by their JSON text), several filters at once, and filters
# that match nothing.
FILTERS: list[dict[str, str]] = [
    {"channel": "direct"},
    {"channel": "email"},
    {"utm_source": "news"},
    {"utm_campaign": "spring"},
    {"campaign": "launch"},
    {"device_type": "mobile"},
    {"browser": "Chrome"},
    {"os": "Linux"},
    {"path": "/pricing"},
    {"name": "Signup"},
    {"source": "beacon"},
    {"source": "email"},
    {"country": "DE"},
    {"referrer_host": "t.co"},
    {"prop:plan": "pro"},
    {"prop:plan": "<b>x\x1fy</b>"},
    {"prop:seats": "2.5"},
    {"prop:seats": "1"},
    {"prop:seats": "true"},
    {"prop:seats": "null"},
    {"country": "DE", "device_type": "mobile"},
    {"channel": "direct", "browser": "Firefox", "os": "Linux"},
    {"prop:plan": "free", "name": "Purchase"},
    {"utm_medium": "cpc"},
    {"utm_term": "shoes"},
    {"utm_content": "banner"},
    {"country": "FR"},
    {"prop:missing": "x"},
    {"prop:plan": "enterprise"},
    {"country": "DE", "channel": "no-such-channel"},
]
RANGES = [("2025-03-24", "2025-04-04"), ("2025-03-28", "2025-03-31"),
          ("2025-03-30", "2025-03-30"), ("2025-04-03", "2025-04-10")]


def _runners() -> list[tuple[str, Any, dict[str, Any]]]:
    return [
        ("dashboard overview", run.dashboard_overview, {}),
        ("dashboard overview goal", run.dashboard_overview, {"goal": "Purchase"}),
        ("timeseries day", run.timeseries, {"interval": "day"}),
        ("timeseries day goal", run.timeseries, {"interval": "day", "goal": "Signup"}),
        ("timeseries week", run.timeseries, {"interval": "week"}),
        ("timeseries hour", run.timeseries, {"interval": "hour"}),
        ("timeseries hour goal", run.timeseries, {"interval": "hour", "goal": "Purchase"}),
        ("top pages", run.top_pages, {}),
        ("entry pages", run.entry_pages, {}),
        ("exit pages", run.exit_pages, {}),
        ("channels", run.channels, {}),
        ("channels goal", run.channels, {"goal": "Purchase"}),
        ("referrers", run.referrers, {}),
        ("referrers goal", run.referrers, {"goal": "Signup"}),
        ("utm", run.utm_campaigns, {}),
        ("utm goal", run.utm_campaigns, {"goal": "Purchase"}),
        *[(name, run.breakdown, {"dimension": name})
          for name in ("devices", "browsers", "os", "countries")],
        ("custom events", run.custom_events, {}),
        ("event properties", run.event_properties, {}),
        ("event properties of one event", run.event_properties, {"event": "Signup"}),
        ("email", run.email_campaigns, {}),
        ("ads", run.ad_campaigns, {}),
        ("ads goal", run.ad_campaigns, {"goal": "Purchase"}),
        ("bots", run.bot_traffic, {}),
        ("machine opens", run.machine_opens, {}),
        *[(f"funnel {' > '.join(steps)}", run.funnel_steps,
           {"steps": [run.FunnelStep.parse(step) for step in steps], "window_seconds": window})
          for steps, window in FUNNELS],
    ]


def reports(store: Any, site_id: str, from_day: str, to_day: str, filters: dict[str, str],  # noqa: F811 - not the fixture
            limit: int = 50) -> dict[str, list[list[Any]]]:
    conn = store._store.conn if isinstance(store, RawStore) else store.conn
    site = get_site(conn, site_id)
    query = ReportQuery(site_id, from_day, to_day, limit=limit, filters=filters)
    return {name: _normalised(runner(store, site, query, **options).rows)
            for name, runner, options in _runners()}


class NoRawEvents:
    """The store, failing any raw SQL over ``events``, so a report must read the columns."""

    dialect = "sqlite"

    def __init__(self, store: SqliteStore) -> None:  # noqa: F811 - not the fixture
        self.conn = store.conn
        self._store = store

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        assert "FROM events" not in sql, sql
        return self._store.query(sql, params)


def assert_same_as_raw(store: SqliteStore, site_id: str, from_day: str, to_day: str,  # noqa: F811 - not the fixture
                       filters: dict[str, str], limit: int = 50) -> None:
    fast = reports(NoRawEvents(store), site_id, from_day, to_day, filters, limit)
    raw = reports(RawStore(store), site_id, from_day, to_day, filters, limit)
    for name in raw:
        assert fast[name] == raw[name], f"{name} {site_id} {from_day}..{to_day} {filters}"


def _chunk_rows(store: SqliteStore) -> int:  # noqa: F811 - not the fixture
    return store.conn.execute("SELECT COALESCE(SUM(rows), 0) FROM column_chunks").fetchone()[0]


def _event_count(store: SqliteStore) -> int:  # noqa: F811 - not the fixture
    return store.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def test_filtered_reports_equal_raw(store: SqliteStore) -> None:  # noqa: F811
    store_events(store, generate())
    assert rollups.part_ready(store.conn, "columns")
    assert _chunk_rows(store) == _event_count(store)
    # The comparisons are not vacuous: filters select events and reports have rows.
    counted = reports(store, "s_berlin", *RANGES[0], {"channel": "direct"})
    assert counted["top pages"]
    assert counted["entry pages"]
    assert counted["event properties"]
    funnel = counted["funnel page:/pricing > event:Signup > event:Purchase"]
    assert funnel[0][2] > funnel[1][2] > 0
    assert reports(store, "s_berlin", *RANGES[0], {"prop:seats": "1"})["custom events"]
    for filters in FILTERS:
        for site_id in SITES:
            for from_day, to_day in RANGES:
                assert_same_as_raw(store, site_id, from_day, to_day, filters)
    assert_same_as_raw(store, "s_berlin", *RANGES[0], {"country": "DE"}, limit=2)


def test_goal_reports_without_filters_equal_raw(store: SqliteStore) -> None:  # noqa: F811
    store_events(store, generate())
    for site_id in SITES:
        for from_day, to_day in RANGES:
            assert_same_as_raw(store, site_id, from_day, to_day, {})


def test_unknown_filter_rejected(store: SqliteStore) -> None:  # noqa: F811
    store_events(store, generate()[:300])
    site = get_site(store.conn, "s_berlin")
    for filters in ({"ip_anon": "1.2.3.0"}, {'prop:a"b': "x"}):
        query = ReportQuery("s_berlin", *RANGES[0], filters=filters)
        with pytest.raises(ValueError):
            run.top_pages(store, site, query)


def test_small_chunks_merge(store: SqliteStore) -> None:  # noqa: F811
    events = generate()
    store_events(store, events, batch=7)
    tiers: dict[tuple[str, str, int], int] = {}
    for site_id, day, rows in store.conn.execute(
            "SELECT site_id, local_day, rows FROM column_chunks WHERE rows < ?",
            (columns.CHUNK_ROWS,)):
        key = (site_id, day, columns._tier(rows, columns.MERGE_FANIN))
        tiers[key] = tiers.get(key, 0) + 1
    assert max(tiers.values()) < columns.MERGE_FANIN
    # Merges happened: each batch appended one chunk per site and day it touched.
    appended = sum(len({(event.site_id, event.local_day) for event in events[start:start + 7]})
                   for start in range(0, len(events), 7))
    assert store.conn.execute("SELECT COUNT(*) FROM column_chunks").fetchone()[0] < \
        appended // 4
    assert _chunk_rows(store) == _event_count(store)
    assert_same_as_raw(store, "s_berlin", *RANGES[0], {"device_type": "mobile"})


def test_columns_after_erasure(store: SqliteStore) -> None:  # noqa: F811
    store_events(store, generate())
    # Warm the caches, so that stale decoded chunks would show.
    reports(store, "s_berlin", *RANGES[0], {"channel": "direct"})
    for visitor in ("s_berlin-v7", "s_berlin-v8", "s_auckland-v3"):
        site_id = visitor.split("-")[0]
        selector = rights.Selector("visitor", site_id, visitor_ids=(visitor,))
        rights.carry_out(store.conn, rights.request_erasure(store.conn, selector))
    assert _chunk_rows(store) == _event_count(store)
    for filters in ({"channel": "direct"}, {"prop:plan": "pro"}, {"source": "email"}):
        for site_id in SITES:
            for from_day, to_day in RANGES:
                assert_same_as_raw(store, site_id, from_day, to_day, filters)


def test_columns_after_retention(store: SqliteStore) -> None:  # noqa: F811
    store_events(store, generate())
    reports(store, "s_berlin", *RANGES[0], {"channel": "direct"})
    site = get_site(store.conn, "s_berlin")
    now = datetime(2025, 3, 30, 12, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)
    now_ms = int(now.timestamp() * 1000) + site.privacy.retention_days * 86_400_000
    Maintenance(store.conn, lambda: []).apply_retention(now_ms)
    assert store.conn.execute("SELECT COUNT(*) FROM column_chunks WHERE site_id = 's_berlin' "
                              "AND local_day < '2025-03-30'").fetchone()[0] == 0
    assert _chunk_rows(store) == _event_count(store)
    for filters in ({"channel": "direct"}, {"country": "DE", "device_type": "mobile"}):
        for from_day, to_day in RANGES:
            assert_same_as_raw(store, "s_berlin", from_day, to_day, filters)


def test_columns_after_rebuild(store: SqliteStore) -> None:  # noqa: F811
    store_events(store, generate())
    before = reports(store, "s_berlin", *RANGES[0], {"channel": "direct"})
    for site_id in SITES:
        rollups.rebuild_site(store.conn, site_id, batch_rows=333, covers_all=True,
                             fills_parts=True)
    assert _chunk_rows(store) == _event_count(store)
    assert reports(store, "s_berlin", *RANGES[0], {"channel": "direct"}) == before
    assert_same_as_raw(store, "s_auckland", *RANGES[0], {"prop:plan": "free"})


def test_columns_wait_for_rebuild(store: SqliteStore) -> None:  # noqa: F811
    """A database upgraded with events already stored reads raw events for filtered
    reports until a rebuild fills the column copy."""
    store_events(store, generate())
    store.conn.execute("UPDATE rollup_parts SET ready = 0 WHERE part = 'columns'")
    store.conn.execute("DELETE FROM column_chunks")
    site = get_site(store.conn, "s_berlin")
    query = ReportQuery("s_berlin", *RANGES[0], filters={"channel": "direct"})
    with pytest.raises(AssertionError):
        run.top_pages(NoRawEvents(store), site, query)
    assert run.top_pages(store, site, query).rows == run.top_pages(RawStore(store), site,
                                                                   query).rows
    for site_id in SITES:
        rollups.rebuild_site(store.conn, site_id, covers_all=True, fills_parts=True)
    assert rollups.part_ready(store.conn, "columns")
    assert_same_as_raw(store, "s_berlin", *RANGES[0], {"channel": "direct"})


def test_columns_unused_after_direct_insert(store: SqliteStore) -> None:  # noqa: F811
    store_events(store, generate()[:500])
    zone = ZoneInfo(SITES["s_berlin"])
    ts = int(datetime(2025, 3, 26, 12, tzinfo=zone).timestamp() * 1000)
    direct = _event([10_000], "s_berlin", zone, ts, visitor_id="x", session_id="x",
                    session_start=1, path="/pricing")
    from trackpixel.storage.records import EVENT_COLUMNS
    marks = ", ".join("?" for _ in EVENT_COLUMNS)
    store.conn.execute(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})",
                       [getattr(direct, column) for column in EVENT_COLUMNS])
    site = get_site(store.conn, "s_berlin")
    query = ReportQuery("s_berlin", *RANGES[0], filters={"path": "/pricing"})
    assert run.top_pages(store, site, query).rows == run.top_pages(RawStore(store), site,
                                                                   query).rows


def test_chunk_encoding_round_trip() -> None:
    rng = np.random.default_rng(5)
    rows = 1000
    ints = {
        "constant": np.full(rows, 7, dtype=np.int64),
        "sparse": np.where(rng.random(rows) < 0.02, rng.integers(1, 90_000, rows), 0),
        "dense": rng.integers(1_700_000_000_000, 1_700_086_400_000, rows),
        "negative": rng.integers(-5, 5, rows),
        "wide": rng.integers(0, 2 ** 40, rows),
    }
    floats = {"value": np.where(rng.random(rows) < 0.1, rng.random(rows) * 100, 0.0)}
    props = {name: np.arange(3, dtype=np.int64) for name in columns.PROPERTY_COLUMNS}
    chunk = columns.decode_chunk(1, "2025-03-30", columns.encode_chunk(rows, ints, floats, props))
    assert chunk.rows == rows
    for name, values in ints.items():
        assert np.array_equal(chunk.columns[name].full(np.int64), values), name
        picked = np.flatnonzero(rng.random(rows) < 0.3)
        assert np.array_equal(chunk.columns[name].take(picked), values[picked]), name
        target = int(values[17])
        assert np.array_equal(np.broadcast_to(chunk.columns[name].equals(target), (rows,)),
                              values == target), name
    assert np.array_equal(chunk.columns["value"].full(np.float64), floats["value"])
    for name in columns.PROPERTY_COLUMNS:
        assert list(chunk.props[name]) == [0, 1, 2]


def test_selection_reused_until_chunks_change(store: SqliteStore) -> None:  # noqa: F811
    events = generate()
    store_events(store, events[:2000])
    query = ReportQuery("s_berlin", *RANGES[0], filters={"channel": "direct"})
    first = from_columns.select(store.conn, query)
    assert first is not None
    gathered = first.column("ts")
    reused = from_columns.select(store.conn, query)
    assert reused is not None
    assert reused.column("ts") is gathered
    store_events(store, events[2000:])
    changed = from_columns.select(store.conn, query)
    assert changed is not None
    assert changed.column("ts") is not gathered


def _dictionary_texts(store: SqliteStore) -> set[str]:  # noqa: F811 - not the fixture
    return {row[0] for row in store.conn.execute("SELECT value FROM column_values")}


def test_erasure_drops_unused_values(store: SqliteStore) -> None:  # noqa: F811
    zone = ZoneInfo(SITES["s_berlin"])
    ts = int(datetime(2025, 3, 26, 12, tzinfo=zone).timestamp() * 1000)
    counter = [0]
    rows = [_event(counter, "s_berlin", zone, ts, visitor_id="jane", session_id="jane-1",
                   session_start=1, path="/account/jane", utm_content="jane-mail"),
            _event(counter, "s_berlin", zone, ts + 5, visitor_id="jane", session_id="jane-1",
                   kind="custom", name="Signup", source="beacon", path="/",
                   props='{"email": "jane@example.org", "plan": "pro"}'),
            _event(counter, "s_berlin", zone, ts + 9, visitor_id="joe", session_id="joe-1",
                   session_start=1, path="/", props='{"plan": "pro"}')]
    store_events(store, [*generate()[:400], *rows])
    assert {"/account/jane", "jane-mail", "jane@example.org"} <= _dictionary_texts(store)
    selector = rights.Selector("visitor", "s_berlin", visitor_ids=("jane",))
    rights.carry_out(store.conn, rights.request_erasure(store.conn, selector))
    texts = _dictionary_texts(store)
    assert not {"/account/jane", "jane-mail", "jane@example.org"} & texts
    assert {"/", "pro", "plan", "Signup"} <= texts
    assert _chunk_rows(store) == _event_count(store)
    assert_same_as_raw(store, "s_berlin", "2025-03-26", "2025-03-26", {"prop:plan": "pro"})


def test_retention_drops_expired_values(store: SqliteStore) -> None:  # noqa: F811
    zone = ZoneInfo(SITES["s_berlin"])
    counter = [0]
    rows = [_event(counter, "s_berlin", zone,
                   int(datetime(2025, 3, day, 12, tzinfo=zone).timestamp() * 1000),
                   visitor_id=f"v{day}", session_id=f"s{day}", session_start=1,
                   path=f"/only-{day}") for day in (25, 26, 31)]
    store_events(store, rows)
    site = get_site(store.conn, "s_berlin")
    now = datetime(2025, 3, 30, 12, tzinfo=zone).astimezone(UTC)
    now_ms = int(now.timestamp() * 1000) + site.privacy.retention_days * 86_400_000
    Maintenance(store.conn, lambda: []).apply_retention(now_ms)
    texts = _dictionary_texts(store)
    assert "/only-31" in texts
    assert not {"/only-25", "/only-26"} & texts


def test_warm_cache_reads_recent_chunks(store: SqliteStore) -> None:  # noqa: F811 - not the fixture
    store_events(store, generate())
    token = columns.database_token(store.conn)
    assert token is not None
    columns.CACHE.chunks.clear()
    columns.CACHE.nbytes = 0
    last_day = store.conn.execute("SELECT MAX(local_day) FROM column_chunks").fetchone()[0]

    cached = columns.warm_cache(store.conn, lambda site_id: last_day)

    first_day = (datetime.fromisoformat(last_day).date()
                 - timedelta(days=columns.WARM_DAYS - 1)).isoformat()
    expected = {int(row[0]) for row in store.conn.execute(
        "SELECT chunk_id FROM column_chunks WHERE local_day >= ? AND local_day <= ?",
        (first_day, last_day))}
    assert expected
    assert set(columns.CACHE.cached_ids(token)) == expected
    assert cached == len(expected)
