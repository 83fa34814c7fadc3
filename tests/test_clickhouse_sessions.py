"""ClickHouse reports read from the tables kept beside ``events`` (``session_events``,
``session_totals``, ``day_figures``, ``visitor_days``) return what the raw events give, on
ClickHouse and on SQLite.

The events include sessions across midnight and across a range's first and last day. The
checks run after an erasure, after a retention delete, after migrating a database of the
previous schema, on two shards and on a current engine."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from clickhouse_fixtures import (  # noqa: F401 - pytest fixtures
    SITE_ZONE,
    ClickHouseServer,
    clickhouse,
    clickhouse_binary,
    clickhouse_shards,
    generated_batches,
)

from trackpixel import rights
from trackpixel.reports import queries
from trackpixel.reports import run as reports
from trackpixel.reports.queries import ReportQuery, Sql
from trackpixel.sites import Site, add_site
from trackpixel.storage import clickhouse as clickhouse_store
from trackpixel.storage import clickhouse_schema as schema
from trackpixel.storage.clickhouse import ClickHouseStore
from trackpixel.storage.records import (
    EVENT_COLUMNS,
    EventRow,
    ProcessedBatch,
    StoreUnavailable,
)
from trackpixel.storage.sqlite import SqliteStore

RANGES = [("2026-03-01", "2026-04-01"), ("2026-03-02", "2026-03-30"),
          ("2026-03-02", "2026-03-31"), ("2026-03-03", "2026-03-03"),
          ("2026-03-31", "2026-03-31"), ("2026-04-01", "2026-04-01"),
          ("2026-05-01", "2026-05-03")]
ERASED = "0000000000000a04"
ROTATED = "0000000000000a05"


def _mondays(from_day: str, to_day: str) -> list[str]:
    start, end = date.fromisoformat(from_day), date.fromisoformat(to_day)
    monday = start - timedelta(days=start.weekday())
    weeks = []
    while monday <= end:
        weeks.append(monday.isoformat())
        monday += timedelta(days=7)
    return weeks


# Every query that reads the aggregate tables on ClickHouse when unfiltered, by name.
AGGREGATE_QUERIES: dict[str, Callable[[ReportQuery, str], Sql]] = {
    "totals": lambda q, d: queries.totals(q, dialect=d),
    "session_stats": lambda q, d: queries.session_stats(q, dialect=d),
    "series_day": lambda q, d: queries.series(q, "day", dialect=d),
    "series_week": lambda q, d: queries.series(q, "week", dialect=d,
                                               mondays=_mondays(q.from_day, q.to_day)),
    "top_pages": lambda q, d: queries.top_pages(q, dialect=d),
    "entry_pages": lambda q, d: queries.entry_pages(q, dialect=d),
    "exit_pages": lambda q, d: queries.exit_pages(q, dialect=d),
    "channels": lambda q, d: queries.acquisition(q, ("channel",), dialect=d),
    "referrers": lambda q, d: queries.acquisition(q, ("referrer_host",), dialect=d,
                                                  require=("referrer_host",)),
    "utm": lambda q, d: queries.acquisition(q, reports.UTM_COLUMNS, dialect=d,
                                            require=("utm_source", "utm_campaign")),
    "all_acquisition_columns": lambda q, d: queries.acquisition(
        q, queries.ACQUISITION_COLUMNS, dialect=d),
    "ad_conversions": lambda q, d: queries.ad_conversions(q, dialect=d),
    **{f"breakdown_{name}": (lambda q, d, name=name: queries.breakdown(q, name, dialect=d))
       for name in queries.BREAKDOWN_COLUMNS},
}


def event(site_id: str, uid: str, moment: datetime, **values: Any) -> EventRow:
    """Return a page view at ``moment`` (a local time of the site), changed by ``values``."""
    local = moment.astimezone(ZoneInfo(SITE_ZONE))
    row: dict[str, Any] = {
        "event_uid": f"crafted:{uid}", "site_id": site_id,
        "ts": int(moment.timestamp() * 1000), "local_day": local.date().isoformat(),
        "local_hour": local.hour, "source": "pixel", "kind": "page_view", "name": "page_view",
        "host": "example.com", "path": "/", "channel": "direct", "session_start": 0,
        "is_bot": 0, "machine_open": 0, "gpc": 0, "dnt": 0, "cookieless": 0,
        "browser": "Firefox", "os": "Linux", "device_type": "desktop", "country": "NZ",
    }
    row.update(values)
    return EventRow(*(row.get(column) for column in EVENT_COLUMNS))


def crafted_events(site_id: str) -> list[EventRow]:
    """Return sessions at the edges that the aggregates must get right."""
    zone = ZoneInfo(SITE_ZONE)

    def at(day: str, hour: int, minute: int) -> datetime:
        year, month, mday = (int(part) for part in day.split("-"))
        return datetime(year, month, mday, hour, minute, tzinfo=zone)

    def ev(uid: str, moment: datetime, **values: Any) -> EventRow:
        return event(site_id, uid, moment, **values)

    night = {"visitor_id": "0000000000000a01", "session_id": "night"}
    late = {"visitor_id": "0000000000000a02", "session_id": "late"}
    early = {"visitor_id": "0000000000000a03", "session_id": "early"}
    bot = {"visitor_id": "0000000000000b01", "session_id": "bot", "is_bot": 1}
    return [
        # A session across midnight, with a beacon conversion and a server-API event.
        ev("n1", at("2026-03-02", 23, 50), **night, session_start=1,
           channel="organic_search", referrer_host="google.com", utm_source="google",
           utm_medium="cpc", utm_campaign="spring", utm_term="shoes", utm_content="ad-1",
           campaign="spring", creative="c-1", placement="top", path="/landing"),
        ev("n2", at("2026-03-02", 23, 58), **night, path="/pricing"),
        ev("n3", at("2026-03-03", 0, 7), **night, path="/blog/a"),
        ev("n4", at("2026-03-03", 0, 9), **night, source="beacon", kind="custom",
           name="purchase", value=12.5, path="/checkout"),
        ev("n5", at("2026-03-03", 0, 12), **night, source="api", kind="custom",
           name="signup_done", value=4.25, path=None),
        # A session that runs past the last day of a range.
        ev("l1", at("2026-03-31", 23, 55), **late, session_start=1, channel="paid_search",
           campaign="retarget", creative="c-2", placement="side", path="/offer"),
        ev("l2", at("2026-04-01", 0, 5), **late, path="/pricing"),
        ev("l3", at("2026-04-01", 0, 6), **late, source="beacon", kind="custom",
           name="purchase", value=3.0),
        # A session that began the day before a range, with a page view without a path.
        ev("e1", at("2026-03-01", 23, 59), **early, session_start=1, channel="email"),
        ev("e2", at("2026-03-02", 0, 1), **early, path=None),
        # A session whose visitor id changes at midnight, as daily device hashes do.
        ev("r1", at("2026-03-30", 23, 40), visitor_id=ERASED, session_id="rotate",
           session_start=1, channel="social", device_type="mobile", country="DE"),
        ev("r2", at("2026-03-30", 23, 45), visitor_id=ERASED, session_id="rotate",
           path="/pricing", device_type="mobile", country="DE"),
        ev("r3", at("2026-03-31", 0, 20), visitor_id=ROTATED, session_id="rotate",
           path="/blog/b", device_type="mobile", browser=None, country=None),
        # Bots and machine opens count nowhere in these reports.
        ev("b1", at("2026-03-02", 10, 0), **bot, session_start=1),
        ev("b2", at("2026-03-02", 10, 1), **bot, path="/pricing"),
        ev("m1", at("2026-03-02", 11, 0), visitor_id="0000000000000a06", session_id="mail",
           session_start=1, source="open", kind="email_open", name="email_open",
           machine_open=1, campaign="newsletter-3", path=None),
        ev("m2", at("2026-03-02", 11, 5), visitor_id="0000000000000a06", session_id="mail",
           source="click", kind="click", name="click", campaign="newsletter-3", path=None),
        # Sessions of server-API events only, and of one beacon event only.
        ev("a1", at("2026-03-31", 9, 0), visitor_id="0000000000000a07", session_id="api",
           session_start=1, source="api", kind="custom", name="purchase", value=99.0,
           path=None),
        ev("a2", at("2026-03-31", 9, 30), visitor_id="0000000000000a08", session_id="beacon",
           session_start=1, source="beacon", kind="custom", name="newsletter"),
    ]


def all_batches(site_id: str) -> list[ProcessedBatch]:
    return [*generated_batches(site_id, spool="sessions"),
            ProcessedBatch(spool="crafted", last_rowid=1, events=crafted_events(site_id),
                           rejected=[], sessions=[])]


def normalized(name: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Return ``rows`` with floats rounded and a NULL sum as 0, as the report runners treat
    them. Ad conversions are sorted, since that query has no ORDER BY. Series buckets without
    events are left out, since the runner lists every bucket, and ClickHouse returns a row for
    a constant bucket of an empty range."""
    result = [tuple(0 if value is None else round(value, 6) if isinstance(value, float)
                    else value for value in row) for row in rows]
    if name.startswith("series_"):
        result = [row for row in result if any(row[2:])]
    return sorted(result) if name == "ad_conversions" else result


def assert_aggregates_match(store: Any, site_id: str, expected: Any = None) -> None:
    """Assert every aggregate query on ``store`` equals the raw query on ``store`` and, when
    given, on the SQLite store ``expected``."""
    for from_day, to_day in RANGES:
        query = ReportQuery(site_id, from_day, to_day, limit=7)
        for name, build in AGGREGATE_QUERIES.items():
            fast = build(query, "clickhouse")
            assert any(table in fast.text for table in (
                "session_events", "page_events", "day_figures", "visitor_days")), name
            # The SQLite text is the raw query, which ClickHouse runs as well.
            raw = build(query, "sqlite")
            actual = normalized(name, store.query(fast.text, fast.params))
            assert actual == normalized(name, store.query(raw.text, raw.params)), (
                name, from_day, to_day)
            if expected is not None:
                assert actual == normalized(name, expected.query(raw.text, raw.params)), (
                    name, from_day, to_day)


def dashboard_tables(store: Any, site: Site, query: ReportQuery) -> dict[str, Any]:
    """Return the tables of the runners that read the aggregate tables when unfiltered."""
    tables = {
        "overview": reports.dashboard_overview(store, site, query),
        "overview_goal": reports.dashboard_overview(store, site, query, goal="purchase"),
        "day": reports.timeseries(store, site, query, interval="day"),
        "week": reports.timeseries(store, site, query, interval="week"),
        "top_pages": reports.top_pages(store, site, query),
        "entry_pages": reports.entry_pages(store, site, query),
        "exit_pages": reports.exit_pages(store, site, query),
        "channels": reports.channels(store, site, query),
        "channels_goal": reports.channels(store, site, query, goal="purchase"),
        "referrers": reports.referrers(store, site, query),
        "utm_campaigns": reports.utm_campaigns(store, site, query),
        "ad_campaigns": reports.ad_campaigns(store, site, query),
    }
    for dimension in queries.BREAKDOWN_COLUMNS:
        tables[dimension] = reports.breakdown(store, site, query, dimension=dimension)
    return tables


def assert_dashboard_matches(store: Any, expected: Any, site: Site) -> None:
    for from_day, to_day in RANGES:
        for filters in ({}, {"channel": "email"}):
            query = ReportQuery(site.id, from_day, to_day, limit=7, filters=filters)
            actual = dashboard_tables(store, site, query)
            wanted = dashboard_tables(expected, site, query)
            for name, table in actual.items():
                assert table.columns == wanted[name].columns
                assert table.rows == wanted[name].rows, (name, from_day, to_day, filters)


class RawSqlite:
    """A SQLite event store without its connection in view, so every runner reads the raw
    events, whatever the state of the rollups after a deletion."""

    dialect = "sqlite"

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.store.query(sql, params)


def sqlite_copy(path: Path, site_id: str, delete: str = "0 = 1",
                params: dict[str, Any] | None = None) -> SqliteStore:
    """Return a SQLite store with the events of ``all_batches``, less those that the WHERE
    text ``delete`` matches."""
    store = SqliteStore(path)
    for batch in all_batches(site_id):
        store.write_batch(batch)
    with store.conn:
        store.conn.execute(f"DELETE FROM events WHERE {delete}", params or {})
    return store


@pytest.fixture(scope="module")
def loaded(clickhouse: ClickHouseServer,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[Site, SqliteStore, ClickHouseStore]]:
    root: Path = tmp_path_factory.mktemp("sessions")
    sqlite_store = SqliteStore(root / "trackpixel.db")
    site, _ = add_site(sqlite_store.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/session_reports")
    for batch in all_batches(site.id):
        sqlite_store.write_batch(batch)
        store.write_batch(batch)
    yield site, sqlite_store, store
    sqlite_store.close()
    store.close()


def test_aggregate_columns_match_reports() -> None:
    assert schema.SESSION_ACQUISITION_COLUMNS == queries.ACQUISITION_COLUMNS
    assert tuple(queries.BREAKDOWN_COLUMNS.values()) == schema.SESSION_DIMENSIONS


def test_aggregates_equal_raw_events(loaded) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, store = loaded
    whole = ReportQuery(site.id, "2026-03-01", "2026-04-01", limit=50)
    for name in ("session_stats", "entry_pages", "exit_pages", "channels", "ad_conversions",
                 "top_pages", "breakdown_devices"):
        sql = AGGREGATE_QUERIES[name](whole, "clickhouse")
        assert store.query(sql.text, sql.params), f"{name} has no rows to compare"
    assert_aggregates_match(store, site.id, sqlite_store)


def test_crafted_sessions_counted_across_days(loaded) -> None:  # type: ignore[no-untyped-def]
    site, _, store = loaded
    # The night session's entry is on 2 March; on 3 March alone it has no entry page.
    both_days = ReportQuery(site.id, "2026-03-02", "2026-03-03", limit=500)
    second_day = ReportQuery(site.id, "2026-03-03", "2026-03-03", limit=500)
    assert "/landing" in [row[0] for row in reports.entry_pages(store, site, both_days).rows]
    assert "/landing" not in [row[0]
                              for row in reports.entry_pages(store, site, second_day).rows]
    # Its exit page is the page viewed after midnight.
    sql = queries.exit_pages_clickhouse(both_days)
    exits = dict((row[0], row[1]) for row in store.query(sql.text, sql.params))
    assert exits.get("/blog/a", 0) >= 1
    creatives = [row[1] for row in reports.ad_campaigns(store, site, both_days).rows
                 if row[0] == "spring"]
    assert "c-1" in creatives


def test_dashboard_equal_to_sqlite(loaded) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, store = loaded
    assert_dashboard_matches(store, sqlite_store, site)


def test_filters_goal_hours_read_events() -> None:
    plain = ReportQuery("s", "2026-03-01", "2026-03-31")
    filtered = ReportQuery("s", "2026-03-01", "2026-03-31", filters={"channel": "email"})
    for name, build in AGGREGATE_QUERIES.items():
        assert "FROM events" in build(filtered, "clickhouse").text, name
        assert "FROM events" in build(plain, "sqlite").text, name
    for sql in (queries.totals(plain, dialect="clickhouse", goal="purchase"),
                queries.series(plain, "day", dialect="clickhouse", goal="purchase"),
                queries.series(plain, "hour", dialect="clickhouse"),
                queries.acquisition(plain, ("channel",), dialect="clickhouse", goal="purchase"),
                queries.ad_conversions(plain, dialect="clickhouse", goal="purchase")):
        assert "session_events" not in sql.text
        assert "FROM events" in sql.text


FUNNEL = [reports.FunnelStep("page", "/pricing"), reports.FunnelStep("event", "signup_done"),
          reports.FunnelStep("event", "purchase")]


def test_funnel_skips_visitors_without_start(loaded) -> None:  # type: ignore[no-untyped-def]
    site, _, store = loaded
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01")
    conditions = [(step.kind, step.value, step.prop, step.prop_value) for step in FUNNEL]
    fast = queries.funnel_matches(query, conditions, 10_000, dialect="clickhouse")
    raw = queries.funnel_matches(query, conditions, 10_000, dialect="sqlite")
    fast_rows = store.query(fast.text, fast.params)
    raw_rows = store.query(raw.text, raw.params)
    starters = {row[0] for row in raw_rows if row[2] == 1}
    assert len(fast_rows) < len(raw_rows)
    assert sorted(fast_rows) == sorted(row for row in raw_rows if row[0] in starters)


@pytest.mark.parametrize("max_rows", [reports.MAX_FUNNEL_ROWS, 40])
def test_funnel_equal_to_sqlite(loaded, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                max_rows: int) -> None:
    site, sqlite_store, store = loaded
    monkeypatch.setattr(reports, "MAX_FUNNEL_ROWS", max_rows)
    # The raw SQLite events, since the SQLite rollups count a funnel without the row limit.
    raw_sqlite = RawSqlite(sqlite_store)
    for from_day, to_day in RANGES:
        query = ReportQuery(site.id, from_day, to_day)
        expected = reports.funnel_steps(raw_sqlite, site, query, steps=FUNNEL,
                                        window_seconds=2 * 86_400)
        actual = reports.funnel_steps(store, site, query, steps=FUNNEL,
                                      window_seconds=2 * 86_400)
        assert actual.title == expected.title
        assert actual.rows == expected.rows, (from_day, to_day)


def test_erasure_removes_visitor_from_aggregates(clickhouse: ClickHouseServer,  # noqa: F811
                                                 tmp_path: Path) -> None:
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/session_erase")
    for batch in all_batches(site.id):
        store.write_batch(batch)
    visitors_sql = "SELECT DISTINCT visitor_id FROM session_events WHERE session_id = 'rotate'"
    assert {row[0] for row in store.query(visitors_sql, {})} == {ERASED, ROTATED}

    request = rights.request_erasure(state.conn, rights.selector(site.id, "visitor", ERASED))
    erased, _ = rights.carry_out(state.conn, request, events=store)

    assert erased == 2
    assert {row[0] for row in store.query(visitors_sql, {})} == {ROTATED}
    erased_rows = store.query(
        "SELECT count() FROM session_totals WHERE min_visitor_key = cityHash64(:erased) "
        "OR min_page_visitor_key = cityHash64(:erased)", {"erased": ERASED})
    assert erased_rows == [(0,)]
    assert store.query("SELECT count() FROM visitor_days WHERE visitor_key = cityHash64(:erased)",
                       {"erased": ERASED}) == [(0,)]
    assert_visitor_days_exact(store, site.id)
    # The rest of the session stays: its page view after midnight is still an exit page.
    exits = reports.exit_pages(store, site, ReportQuery(site.id, "2026-03-31", "2026-03-31"))
    assert "/blog/b" in [row[0] for row in exits.rows]
    expected = sqlite_copy(tmp_path / "expected.db", site.id, "visitor_id = :erased",
                           {"erased": ERASED})
    assert_aggregates_match(store, site.id, expected)
    assert_dashboard_matches(store, RawSqlite(expected), site)
    for opened in (expected, state, store):
        opened.close()


def test_retention_deletes_aggregate_days(clickhouse: ClickHouseServer,  # noqa: F811
                                          tmp_path: Path) -> None:
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/session_retention")
    for batch in all_batches(site.id):
        store.write_batch(batch)
    params = {"site_id": site.id, "day": "2026-03-03"}
    store.delete_rows("events", "site_id = :site_id AND local_day < :day", params)
    for table in ("events", "session_events", "page_events"):
        left = store.query(f"SELECT COUNT(*) FROM {table} WHERE local_day < :day", params)
        assert left == [(0,)], table
    left = store.query("SELECT COUNT(*) FROM session_totals WHERE first_day < :day", params)
    assert left == [(0,)]
    # The rows whose previous day was deleted now have none.
    assert store.query("SELECT sum(sign) FROM visitor_days WHERE prev_day < :day "
                       "AND prev_day > toDate(0)", params) == [(0,)]
    assert_visitor_days_exact(store, site.id)
    expected = sqlite_copy(tmp_path / "expected.db", site.id, "local_day < :day", params)
    assert_aggregates_match(store, site.id, expected)
    # A second run deletes nothing more and leaves every figure as it was.
    store.delete_rows("events", "site_id = :site_id AND local_day < :day", params)
    assert_visitor_days_exact(store, site.id)
    assert_aggregates_match(store, site.id, expected)
    for opened in (expected, state, store):
        opened.close()


def test_retention_failed_half_way_retried(clickhouse: ClickHouseServer,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/retention_retry")
    for batch in all_batches(site.id):
        store.write_batch(batch)
    params = {"site_id": site.id, "day": "2026-03-03"}
    where = "site_id = :site_id AND local_day < :day"
    original = ClickHouseStore._mutate

    def fail_visitor_days(self: ClickHouseStore, client: Any, table: str, mutation: str,
                          values: dict[str, Any]) -> None:
        if table == "visitor_days":
            raise OSError("connection reset")
        original(self, client, table, mutation, values)

    monkeypatch.setattr(ClickHouseStore, "_mutate", fail_visitor_days)
    with pytest.raises(OSError):
        store.delete_rows("events", where, params)
    monkeypatch.undo()

    # Retention calls delete_rows again only while expired events remain
    # (Maintenance._retain_external_site), so a failed run must leave them.
    expired = store.query(f"SELECT COUNT(*) FROM events WHERE {where}", params)[0][0]
    assert expired > 0
    store.delete_rows("events", where, params)
    assert_visitor_days_exact(store, site.id)
    expected = sqlite_copy(tmp_path / "expected.db", site.id, "local_day < :day", params)
    assert_aggregates_match(store, site.id, expected)
    for opened in (expected, state, store):
        opened.close()


def test_previous_schema_back_filled(clickhouse: ClickHouseServer,  # noqa: F811
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/session_migrate"
    later = tuple(m.name for m in schema.MIGRATIONS
                  if m.name not in ("0001_initial", "0002_copy_checkpoints",
                                    "0004_event_properties"))
    previous = tuple(m for m in schema.MIGRATIONS if m.name not in later)
    monkeypatch.setattr(schema, "MIGRATIONS", previous)
    # The earlier version wrote no session or visitor rows.
    monkeypatch.setattr(ClickHouseStore, "_refresh_sessions", lambda self, events: None)
    monkeypatch.setattr(ClickHouseStore, "link_visitor_days", lambda self, events: None)
    store = ClickHouseStore(url)
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    batches = all_batches(site.id)
    for batch in batches[:-1]:
        store.write_batch(batch)
    tables = "SELECT name FROM system.tables WHERE database = 'session_migrate'"
    assert not {"session_events", "session_totals"} & {row[0] for row in store.execute(tables)}
    monkeypatch.undo()

    assert store.migrate() == list(later)
    assert {"session_events", "page_events", "session_totals", "visitor_days", "day_figures",
            "session_spans"} <= {row[0] for row in store.execute(tables)}
    # Events written after the migration reach the tables through the views.
    store.write_batch(batches[-1])
    expected = sqlite_copy(tmp_path / "expected.db", site.id)
    assert_aggregates_match(store, site.id, expected)
    for opened in (expected, state, store):
        opened.close()


def test_erasure_after_spans_migration(clickhouse: ClickHouseServer,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/spans_migrate"
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(
        m for m in schema.MIGRATIONS if m.name != "0008_session_spans"))
    store = ClickHouseStore(url)
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    # Shuffled batches refresh most sessions several times, which writes cancel rows.
    # Which of two events with one client event id is stored depends on the order, so
    # the SQLite store gets the same batches.
    expected = SqliteStore(tmp_path / "expected.db")
    for batch in pieces(site.id, size=250, seed=3):
        store.write_batch(batch)
        expected.write_batch(batch)
    # Cancel rows written before session_spans existed carried no figures: every figure
    # column had its type's default.
    defaults = {"UInt8": "0", "UInt64": "0", "Float64": "0", "String": "''"}
    store.execute("ALTER TABLE session_totals UPDATE " + ", ".join(
        f"{column} = {defaults[kind]}" for column, kind, _ in schema.TOTALS_FIGURES)
        + " WHERE sign = -1")
    clickhouse_store.wait_for_mutations(store.client, "spans_migrate", "session_totals")
    rows = store.execute(
        "SELECT visitor_id FROM events WHERE session_key IN (SELECT session_key "
        "FROM session_totals WHERE sign = -1) AND is_bot = 0 AND machine_open = 0 "
        "AND source = 'pixel' ORDER BY visitor_id LIMIT 1")
    assert rows, "no cancelled session_totals row to check"
    monkeypatch.undo()
    assert store.migrate() == ["0008_session_spans"]
    assert_aggregates_match(store, site.id, expected)

    params = {"site_id": site.id, "visitor": rows[0][0]}
    store.delete_rows("events", "site_id = :site_id AND visitor_id = :visitor", params)
    with expected.conn:
        expected.conn.execute("DELETE FROM events WHERE visitor_id = :visitor", params)
    assert_aggregates_match(store, site.id, expected)
    for opened in (expected, state, store):
        opened.close()


@pytest.mark.parametrize("first", ["0007_day_figures", "0008_session_spans"])
def test_fill_migration_run_twice(clickhouse: ClickHouseServer,  # noqa: F811
                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  first: str) -> None:
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/twice_{first[:4]}"
    later = [m.name for m in schema.MIGRATIONS if m.name >= first]
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(
        m for m in schema.MIGRATIONS if m.name not in later))
    store = ClickHouseStore(url)
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    for batch in all_batches(site.id):
        store.write_batch(batch)
    monkeypatch.undo()

    # The first run stops after its statements, before it records the migration.
    def fail_record(self: ClickHouseStore, client: Any, name: str) -> None:
        raise OSError("connection reset")

    monkeypatch.setattr(ClickHouseStore, "_record", fail_record)
    with pytest.raises(StoreUnavailable):
        store.migrate()
    monkeypatch.undo()
    assert store.migrate() == later
    assert_aggregates_match(store, site.id, sqlite_copy(tmp_path / "expected.db", site.id))
    for opened in (state, store):
        opened.close()


def pieces(site_id: str, size: int, seed: int) -> list[ProcessedBatch]:
    """Return the events of ``all_batches`` shuffled into batches of ``size`` events, so
    that most sessions are written in several batches and out of time order."""
    events = [event for batch in all_batches(site_id) for event in batch.events]
    random.Random(seed).shuffle(events)
    return [ProcessedBatch(spool="pieces", last_rowid=index + 1,
                           events=events[start:start + size], rejected=[], sessions=[])
            for index, start in enumerate(range(0, len(events), size))]


def count_rows(store: ClickHouseStore, where: str) -> int:
    return int(store.query(f"SELECT count() FROM session_totals WHERE {where}", {})[0][0])


def assert_visitor_days_exact(store: ClickHouseStore, site_id: str,
                              every_dimension: bool = True) -> None:
    """Assert that ``visitor_days`` has, net of cancel rows, the rows that a fill from the
    site's stored events computes.

    That is one row per visitor, dimension, item and day of the people's events, whose
    ``prev_day`` is the previous such day, or 1970-01-01."""
    live = store.execute(
        "SELECT dimension, item, local_day, visitor_key, prev_day, sum(sign) AS live "
        "FROM visitor_days WHERE site_id = %(site)s "
        "GROUP BY dimension, item, local_day, visitor_key, prev_day HAVING live != 0",
        {"site": site_id})
    assert {row[5] for row in live} <= {1}
    expected = []
    for dimension in schema.VISITOR_DIMENSIONS:
        expected += store.execute(schema.visitor_days_select(
            "events", dimension, " AND site_id = %(site)s"), {"site": site_id})
    assert sorted(row[1:6] for row in expected) == sorted(row[:5] for row in live)
    if every_dimension:
        assert {row[0] for row in live} == {
            dimension.name for dimension in schema.VISITOR_DIMENSIONS}


def test_chain_changes_relink_and_repair() -> None:
    day = [date(2026, 3, number) for number in range(1, 8)]
    no_day = clickhouse_store.NO_DAY
    # A new day between two stored ones: the later row is cancelled and written again.
    assert sorted(clickhouse_store.chain_changes([day[1], day[3], day[5]], [
        (day[1], no_day, 1), (day[5], day[1], 1)])) == sorted([
        (day[5], day[1], -1), (day[5], day[3], 1), (day[3], day[1], 1)])
    # Nothing to do when the stored rows are already right.
    assert sorted(clickhouse_store.chain_changes([day[1], day[2]], [
        (day[1], no_day, 1), (day[2], day[1], 1)])) == []
    # Two live copies of a row lose one, and a row cancelled twice gets a row back. A row of
    # a day that is no longer needed is cancelled.
    assert sorted(clickhouse_store.chain_changes([day[1], day[2]], [
        (day[1], no_day, 2), (day[2], day[1], -1), (day[6], day[2], 1)])) == sorted([
        (day[1], no_day, -1), (day[2], day[1], 1), (day[2], day[1], 1), (day[6], day[2], -1)])


def test_sessions_in_many_batches(clickhouse: ClickHouseServer,  # noqa: F811
                                  tmp_path: Path) -> None:
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/session_pieces")
    expected = SqliteStore(tmp_path / "expected.db")
    # Without merges every replaced row and its cancel row stay until OPTIMIZE below.
    store.execute("SYSTEM STOP MERGES session_totals")
    store.execute("SYSTEM STOP MERGES visitor_days")
    for index, batch in enumerate(pieces(site.id, size=97, seed=3)):
        expected.write_batch(batch)
        store.write_batch(batch)
        if index % 5 == 0:
            # A replay of a stored batch changes nothing.
            store.expect_replay(batch.spool)
            assert store.write_batch(batch).stored == 0
    assert count_rows(store, "sign = -1") > 0
    # Events of a visitor's earlier days arrived after later ones and moved rows.
    assert store.execute("SELECT count() FROM visitor_days WHERE sign = -1")[0][0] > 0
    assert_visitor_days_exact(store, site.id)
    assert_aggregates_match(store, site.id, expected)
    store.execute("SYSTEM START MERGES visitor_days")

    # Merges collapse each row with its cancel row and leave every report as it was.
    store.execute("SYSTEM START MERGES session_totals")
    for _ in range(50):
        # OPTIMIZE does nothing while a background merge of the partition runs.
        store.execute("OPTIMIZE TABLE session_totals FINAL")
        if count_rows(store, "sign = -1") == 0:
            break
        time.sleep(0.2)
    assert count_rows(store, "sign = -1") == 0
    live = store.query("SELECT count(), uniqExact(session_key) FROM session_totals", {})
    assert live[0][0] == live[0][1]
    assert_aggregates_match(store, site.id, expected)
    for opened in (expected, state, store):
        opened.close()


def test_failed_refresh_healed_by_replay(clickhouse: ClickHouseServer,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/session_heal")
    batches = all_batches(site.id)
    store.write_batch(batches[0])

    def fail(*args: Any) -> None:
        raise OSError("connection reset")

    # The events of the second batch are stored, then the session rows fail.
    monkeypatch.setattr(ClickHouseStore, "refresh_session_totals", fail)
    with pytest.raises(StoreUnavailable):
        store.write_batch(batches[1])
    monkeypatch.undo()
    uids = tuple(event.event_uid for event in batches[1].events)
    stored = store.query("SELECT count() FROM events WHERE event_uid IN :uids", {"uids": uids})
    # Events with a repeated client event id are rejected hits.
    duplicates = store.query("SELECT count() FROM rejected_hits WHERE hit_uid IN :uids",
                             {"uids": uids})
    assert stored[0][0] + duplicates[0][0] == len(uids)
    whole = ReportQuery(site.id, "2026-03-01", "2026-04-01")
    fast, raw = queries.session_stats_clickhouse(whole), queries.session_stats(whole)
    assert store.query(fast.text, fast.params) != store.query(raw.text, raw.params)

    # The processor writes the batch again, which finds its events stored.
    assert store.write_batch(batches[1]).stored == 0
    for batch in batches[2:]:
        store.write_batch(batch)
    assert_aggregates_match(store, site.id, sqlite_copy(tmp_path / "expected.db", site.id))
    for opened in (state, store):
        opened.close()


def test_failed_visitor_rows_healed_by_replay(clickhouse: ClickHouseServer,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/visitor_heal")
    expected = SqliteStore(tmp_path / "expected.db")
    batches = pieces(site.id, size=250, seed=5)
    for batch in batches:
        expected.write_batch(batch)
    for batch in batches[:3]:
        store.write_batch(batch)
    original = ClickHouseStore._link_days
    calls = {"n": 0}

    def fail_second(self: ClickHouseStore, site_id: str, needed: Any) -> None:
        # The first write of rows goes through, the second fails, as when the connection
        # drops in the middle of a batch with two sites or chunks.
        calls["n"] += 1
        if calls["n"] == 1:
            original(self, site_id, dict(list(needed.items())[: len(needed) // 2]))
        raise OSError("connection reset")

    monkeypatch.setattr(ClickHouseStore, "_link_days", fail_second)
    with pytest.raises(StoreUnavailable):
        store.write_batch(batches[3])
    monkeypatch.undo()
    with pytest.raises(AssertionError):
        assert_visitor_days_exact(store, site.id)

    # The processor writes the batch again, which finds its events stored.
    assert store.write_batch(batches[3]).stored == 0
    assert_visitor_days_exact(store, site.id)
    for batch in batches[4:]:
        store.write_batch(batch)
    assert_visitor_days_exact(store, site.id)
    assert_aggregates_match(store, site.id, expected)
    for opened in (expected, state, store):
        opened.close()


def test_visitor_rows_written_again_after_erasure_elsewhere(
        clickhouse: ClickHouseServer, tmp_path: Path) -> None:  # noqa: F811
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/visitor_known"
    writer, other = ClickHouseStore(url), ClickHouseStore(url)
    zone = ZoneInfo(SITE_ZONE)
    person = {"visitor_id": "0000000000000d01", "session_id": "known", "path": "/a"}

    def write(uid: str, minute: int) -> None:
        moment = datetime(2026, 3, 10, 12, minute, tzinfo=zone)
        writer.write_batch(ProcessedBatch(spool="known", last_rowid=minute, events=[
            event(site.id, uid, moment, **person, session_start=int(minute == 0))],
            rejected=[], sessions=[]))

    write("k1", 0)
    write("k2", 1)
    assert_visitor_days_exact(writer, site.id, every_dimension=False)
    # Another process erases the visitor; the writer's next event of the same day and page
    # must bring the visitor's rows back.
    other.delete_rows("events", "site_id = :site_id AND visitor_id = :visitor",
                      {"site_id": site.id, "visitor": person["visitor_id"]})
    assert other.query("SELECT count() FROM visitor_days", {}) == [(0,)]
    write("k3", 2)
    assert_visitor_days_exact(writer, site.id, every_dimension=False)
    assert writer.query("SELECT sum(sign) FROM visitor_days WHERE dimension = 'page'",
                        {}) == [(1,)]
    for opened in (state, writer, other):
        opened.close()


def test_earlier_event_changes_entry_page(clickhouse: ClickHouseServer,  # noqa: F811
                                          tmp_path: Path) -> None:
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/session_order")
    zone = ZoneInfo(SITE_ZONE)
    person = {"visitor_id": "0000000000000c01", "session_id": "order"}
    second = event(site.id, "o2", datetime(2026, 3, 10, 0, 5, tzinfo=zone), **person,
                   path="/second")
    first = event(site.id, "o1", datetime(2026, 3, 9, 23, 58, tzinfo=zone), **person,
                  session_start=1, path="/first")
    both_days = ReportQuery(site.id, "2026-03-09", "2026-03-10")
    second_day = ReportQuery(site.id, "2026-03-10", "2026-03-10")

    def pages(query: ReportQuery) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        found = []
        for build in (queries.entry_pages, queries.exit_pages):
            fast, raw = build(query, dialect="clickhouse"), build(query)
            rows = store.query(fast.text, fast.params)
            assert rows == store.query(raw.text, raw.params), (build.__name__, query)
            found.append(rows)
        return found[0], found[1]

    store.write_batch(ProcessedBatch(spool="order", last_rowid=1, events=[second],
                                     rejected=[], sessions=[]))
    assert pages(both_days) == ([], [("/second", 1, 1)])
    # The session's start arrives later but happened earlier, on the day before.
    store.write_batch(ProcessedBatch(spool="order", last_rowid=2, events=[first],
                                     rejected=[], sessions=[]))
    assert pages(both_days) == ([("/first", 1, 1, 0)], [("/second", 1, 1)])
    assert pages(second_day) == ([], [("/second", 1, 1)])
    # One live row, whether or not a merge has collapsed the replaced row and its cancel row.
    live = count_rows(store, "sign = 1 AND (session_key, version) NOT IN "
                             "(SELECT session_key, version FROM session_totals WHERE sign = -1)")
    assert live == 1
    assert store.query("SELECT sum(sign) FROM session_totals", {}) == [(1,)]
    for opened in (state, store):
        opened.close()


@pytest.mark.slow
def test_two_shards_aggregate_per_shard(clickhouse_shards: list[ClickHouseServer],  # noqa: F811
                                        tmp_path: Path) -> None:
    first = clickhouse_shards[0]
    url = (f"clickhouse://127.0.0.1:{first.tcp_port}/session_cluster"
           "?cluster=trackpixel_cluster")
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(url)
    for batch in all_batches(site.id):
        store.write_batch(batch)
    for shard in clickhouse_shards:
        for table in ("session_events_local", "session_totals_local"):
            rows = shard.client("session_cluster").execute(f"SELECT count() FROM {table}")[0][0]
            assert rows > 0, table
    expected = sqlite_copy(tmp_path / "expected.db", site.id)
    assert_aggregates_match(store, site.id, expected)
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01")
    funnel = reports.funnel_steps(store, site, query, steps=FUNNEL)
    assert funnel.rows == reports.funnel_steps(expected, site, query, steps=FUNNEL).rows

    store.delete_rows("events", "site_id = :site_id AND visitor_id IN (:person_0)",
                      {"site_id": site.id, "person_0": ERASED})
    without = sqlite_copy(tmp_path / "without.db", site.id, "visitor_id = :erased",
                          {"erased": ERASED})
    assert_aggregates_match(store, site.id, without)
    for opened in (expected, without, state, store):
        opened.close()


def test_current_engine_aggregates_equal_sqlite(loaded) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("chdb.session", reason="chdb is not installed")
    from test_clickhouse_chdb import ChdbStore, insert_json_rows

    site, sqlite_store, _ = loaded
    engine = ChdbStore()
    try:
        engine.run("CREATE DATABASE IF NOT EXISTS trackpixel")
        names = schema.table_names("trackpixel", None)
        for migration in schema.MIGRATIONS:
            for statement in migration.local:
                engine.run(statement.format(**names))
        engine.run("USE trackpixel")
        rows = sqlite_store.conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events")
        insert_json_rows(engine, "events", EVENT_COLUMNS, rows.fetchall())
        for statement in schema.fill_written_tables("trackpixel"):
            engine.run(statement)
        for table in ("session_events", "session_totals"):
            counted = json.loads(engine.run(f"SELECT count() FROM {table}").bytes())
            assert int(counted["data"][0][0]) > 0, table
        assert_aggregates_match(engine, site.id, sqlite_store)
        query = ReportQuery(site.id, "2026-03-01", "2026-04-01")
        conditions = [(step.kind, step.value, step.prop, step.prop_value) for step in FUNNEL]
        fast = queries.funnel_matches(query, conditions, 10_000, dialect="clickhouse")
        raw = queries.funnel_matches(query, conditions, 10_000, dialect="sqlite")
        raw_rows = sqlite_store.query(raw.text, raw.params)
        starters = {row[0] for row in raw_rows if row[2] == 1}
        assert sorted(engine.query(fast.text, fast.params)) == sorted(
            tuple(row) for row in raw_rows if row[0] in starters)
    finally:
        engine.close()
