"""The event properties report on ClickHouse counts every event from the property arrays.

It returns what SQLite returns from its rollups and from its raw events: on one server, after
migrating a database of the previous schema, after a copy from SQLite, on two shards and on a
current engine."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime
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
)

from trackpixel.reports import run as reports
from trackpixel.reports.queries import ReportQuery
from trackpixel.sites import Site, add_site
from trackpixel.storage import clickhouse as clickhouse_store
from trackpixel.storage import clickhouse_schema as schema
from trackpixel.storage.clickhouse import ClickHouseStore, fill_properties
from trackpixel.storage.copy import copy_store
from trackpixel.storage.records import EVENT_COLUMNS, EventRow, ProcessedBatch
from trackpixel.storage.rollups import property_items
from trackpixel.storage.sqlite import SqliteStore

DAYS = ("2026-03-01", "2026-03-02", "2026-03-31", "2026-04-01")
RANGES = [("2026-03-01", "2026-04-01"), ("2026-03-02", "2026-03-31"),
          ("2026-04-01", "2026-04-01"), ("2026-05-01", "2026-05-02")]
FILTERS: list[dict[str, str]] = [{}, {"device_type": "mobile"}, {"prop:plan": "pro"},
                                 {"channel": "email", "prop:plan": "team"}]
NAMES = ("signup", "purchase", "newsletter")
# Property texts of the custom events: objects with every kind of JSON value, then texts
# that have no pairs (not JSON, not an object, an empty object).
PROPS = (
    '{"plan": "pro", "seats": 3}',
    '{"plan": "free", "seats": 1, "trial": true}',
    '{"plan": "pro", "trial": false, "coupon": null}',
    '{"plan": "team", "price": 12.5, "meta": {"a": 1, "b": [1, 2]}}',
    '{"plan": "pro", "tags": ["x", "y"], "note": "a,b \\"quoted\\" \\u00e9"}',
    '{"coupon": "", "": "no name", "plan": "team"}',
    '{"plan":"free","seats":10}',
    '{"note": "nul \\u0000 end", "emoji": "\\ud83d\\ude42", "plan": "pro"}',
    "not json",
    "[1, 2]",
    '"pro"',
    "{}",
)
BOT_ONLY_KEY = "crawler_depth"
PAGE_ONLY_KEY = "scroll"


def make_events(site_id: str, count: int, seed: int, spool: str) -> list[EventRow]:
    """Return ``count`` events: mostly custom events with the texts of ``PROPS``, some by
    bots with a property no person sends, and page views with properties of their own."""
    rng = random.Random(seed)
    zone = ZoneInfo(SITE_ZONE)
    events = []
    for index in range(count):
        day = rng.choice(DAYS)
        base = datetime.combine(date.fromisoformat(day), datetime.min.time(), zone)
        ts = int(base.timestamp() * 1000) + rng.randrange(86_400_000)
        local = datetime.fromtimestamp(ts / 1000, zone)
        is_bot = int(rng.random() < 0.1)
        kind = "page_view" if rng.random() < 0.2 else "custom"
        if kind == "page_view":
            name, props = "page_view", json.dumps({PAGE_ONLY_KEY: rng.randrange(5)})
        elif is_bot:
            name, props = rng.choice(NAMES), json.dumps({BOT_ONLY_KEY: rng.randrange(3)})
        else:
            name = rng.choice(NAMES)
            props = rng.choice([*PROPS, None])
        visitor = f"v{rng.randrange(60):03d}"
        events.append(EventRow(
            event_uid=f"{spool}:{index}", site_id=site_id, ts=ts,
            local_day=local.date().isoformat(), local_hour=local.hour, source="api",
            kind=kind, name=name, client_event_id=None, url=None, host=None, path=None,
            title=None, referrer=None, referrer_host=None,
            channel=rng.choice(["direct", "email"]), utm_source=None, utm_medium=None,
            utm_campaign=None, utm_term=None, utm_content=None, click_id_type=None,
            click_id=None, campaign=None, creative=None, placement=None, recipient=None,
            value=None, currency=None, props=props, visitor_id=visitor,
            session_id=f"{visitor}-s{rng.randrange(2)}", session_start=int(rng.random() < 0.3),
            browser=None, browser_version=None, os=None, os_version=None,
            device_type=rng.choice(["desktop", "mobile", None]), is_bot=is_bot,
            bot_reason="crawler" if is_bot else None, machine_open=0, ip_anon=None,
            country=None, consent_analytics=None, consent_ad_storage=None,
            consent_ad_user_data=None, consent_ad_personalization=None, gpc=0, dnt=0,
            cookieless=0, user_data=None))
    return events


def batches(site_id: str, count: int = 1500, seed: int = 11,
            spool: str = "props") -> list[ProcessedBatch]:
    events = make_events(site_id, count, seed, spool)
    return [ProcessedBatch(spool=spool, last_rowid=start + 1, events=events[start:start + 400],
                           rejected=[], sessions=[]) for start in range(0, count, 400)]


class RawSqlite:
    """A SQLite event store without its connection in view, so that the report counts the
    raw events in Python."""

    dialect = "sqlite"

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.store.query(sql, params)


def parsable_copy(store: SqliteStore) -> SqliteStore:
    """Return a SQLite store with the events of ``store`` whose property text is JSON."""
    parsable = SqliteStore(Path(str(store.path) + ".parsable"))
    parsable.conn.execute("ATTACH DATABASE ? AS source", (str(store.path),))
    with parsable.conn:
        parsable.conn.execute("DELETE FROM events")
        parsable.conn.execute("INSERT INTO events SELECT * FROM source.events "
                              "WHERE props IS NULL OR json_valid(props)")
    parsable.conn.execute("DETACH DATABASE source")
    return parsable


def assert_same_properties(store: Any, expected: SqliteStore, site: Site) -> None:
    """Assert that ``store`` gives the rows of the SQLite rollups and of the raw SQLite path
    for every range, filter, limit and event option, and that no title is cut short.

    SQLite cannot apply a ``prop:`` filter to a range with property text that is not JSON,
    so those filters are compared with a copy of ``expected`` without such events, which
    cannot match the filter anyway."""
    parsable = parsable_copy(expected)
    for from_day, to_day in RANGES:
        for filters in FILTERS:
            source_store = parsable if any(key.startswith("prop:") for key in filters) \
                else expected
            raw = RawSqlite(source_store)
            for limit in (500, 6):
                for event in (None, "signup"):
                    query = ReportQuery(site.id, from_day, to_day, limit=limit, filters=filters)
                    actual = reports.event_properties(store, site, query, event=event)
                    for source in (source_store, raw):
                        reference = reports.event_properties(source, site, query, event=event)
                        assert actual.columns == reference.columns
                        assert actual.rows == reference.rows, (from_day, to_day, filters, limit,
                                                            event, type(source).__name__)
                    assert actual.title == "Event properties"
    parsable.close()


def sqlite_with(path: Path, site_id: str, loaded: list[ProcessedBatch]) -> SqliteStore:
    store = SqliteStore(path)
    for batch in loaded:
        store.write_batch(batch)
    return store


@pytest.fixture(scope="module")
def loaded(clickhouse: ClickHouseServer,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[Site, SqliteStore, ClickHouseStore]]:
    root: Path = tmp_path_factory.mktemp("properties")
    sqlite_store = SqliteStore(root / "trackpixel.db")
    site, _ = add_site(sqlite_store.conn, "example.com", timezone=SITE_ZONE)
    store = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/properties")
    for batch in batches(site.id):
        sqlite_store.write_batch(batch)
        store.write_batch(batch)
    yield site, sqlite_store, store
    sqlite_store.close()
    store.close()


def test_arrays_hold_property_items(loaded) -> None:  # type: ignore[no-untyped-def]
    _, _, store = loaded
    rows = store.execute("SELECT props, prop_keys, prop_values FROM events")
    assert any(keys for _, keys, _ in rows)
    for props, keys, values in rows:
        items = property_items(props) if props is not None else []
        assert list(zip(keys, values, strict=True)) == items, props


def test_report_covers_every_value_kind(loaded) -> None:  # type: ignore[no-untyped-def]
    site, _, store = loaded
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01", limit=1000)
    rows = reports.event_properties(store, site, query).rows
    values = {(row[1], row[2]) for row in rows}
    sent = {item for text in PROPS for item in property_items(text)}
    # Every pair that people's custom events carry is counted, and nothing else: not the
    # bots' property, not the page views', and nothing from texts without pairs.
    assert values == sent
    assert {"3", "12.5", "true", "false", "null", '{"a":1,"b":[1,2]}', '["x","y"]', ""} <= {
        value for _, value in values}
    assert not {key for key, _ in values} & {BOT_ONLY_KEY, PAGE_ONLY_KEY}


def test_property_filter_keeps_matching_events(loaded) -> None:  # type: ignore[no-untyped-def]
    site, _, store = loaded
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01", limit=1000,
                        filters={"prop:plan": "pro"})
    rows = reports.event_properties(store, site, query).rows
    assert {row[2] for row in rows if row[1] == "plan"} == {"pro"}
    # A property that only other plans carry is gone.
    assert "price" not in {row[1] for row in rows}
    every = reports.event_properties(store, site, replace(query, filters={})).rows
    assert "price" in {row[1] for row in every}


def test_filter_on_each_listed_value(loaded) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, store = loaded
    # Every value the report lists, including true, false, null, numbers, arrays and objects,
    # selects the events it counted when given back as a prop: filter, on either backend.
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01", limit=1000)
    listed = reports.event_properties(sqlite_store, site, query).rows
    assert len(listed) > 20
    for name, key, value, events, _ in listed:
        if not key:
            continue  # A prop: filter names a property of 1 to 64 characters.
        filtered = replace(query, filters={f"prop:{key}": value})
        # SQLite's json_extract cuts a string at its first NUL character, so such a value
        # matches nothing there.
        sources = (store,) if "\x00" in value else (sqlite_store, store)
        for source in sources:
            counted = {row[0]: row[1]
                       for row in reports.custom_events(source, site, filtered).rows}
            assert counted.get(name) == events, (name, key, value, type(source).__name__)


def test_equal_to_sqlite(loaded, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, store = loaded
    # ClickHouse reads no sample: it counts every event even when the bound on raw rows
    # is far below their number. The raw SQLite path keeps the bound.
    assert_same_properties(store, sqlite_store, site)
    monkeypatch.setattr(reports, "MAX_PROPERTY_ROWS", 50)
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01", limit=500)
    counted = reports.event_properties(store, site, query)
    assert counted.title == "Event properties"
    assert counted.rows == reports.event_properties(sqlite_store, site, query).rows
    sampled = reports.event_properties(RawSqlite(sqlite_store), site, query)
    assert sampled.title == "Event properties (first 50 events only)"


def test_funnel_property_step_equal(loaded) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, store = loaded
    steps = [reports.FunnelStep("event", "signup", "plan", "pro"),
             reports.FunnelStep("event", "purchase", "plan", "team")]
    parsable = parsable_copy(sqlite_store)
    for from_day, to_day in RANGES:
        for filters in ({}, {"prop:seats": "3"}):
            query = ReportQuery(site.id, from_day, to_day, filters=filters)
            expected = reports.funnel_steps(parsable, site, query, steps=steps,
                                            window_seconds=40 * 86_400)
            actual = reports.funnel_steps(store, site, query, steps=steps,
                                          window_seconds=40 * 86_400)
            assert actual.rows == expected.rows, (from_day, to_day, filters)
    whole = ReportQuery(site.id, "2026-03-01", "2026-04-01")
    reached = reports.funnel_steps(store, site, whole, steps=steps, window_seconds=40 * 86_400)
    assert reached.as_dicts()[1]["visitors"] > 0
    parsable.close()


def test_final_reads_equal(loaded, clickhouse: ClickHouseServer) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    site, sqlite_store, _ = loaded
    final = ClickHouseStore(f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/properties?final=1")
    try:
        assert_same_properties(final, sqlite_store, site)
    finally:
        final.close()


def previous_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``ClickHouseStore`` create and write the schema before the property arrays."""
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(
        m for m in schema.MIGRATIONS if m.name != "0004_event_properties"))
    without_arrays = clickhouse_store._event_values
    monkeypatch.setattr(clickhouse_store, "INSERT_COLUMNS", EVENT_COLUMNS)
    monkeypatch.setattr(clickhouse_store, "_event_values",
                        lambda event: without_arrays(event)[:len(EVENT_COLUMNS)])


def test_previous_schema_filled(clickhouse: ClickHouseServer,  # noqa: F811
                                monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/properties_migrate"
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    loaded = batches(site.id, spool="migrate")
    previous_schema(monkeypatch)
    store = ClickHouseStore(url)
    for batch in loaded[:-1]:
        store.write_batch(batch)
    columns = {row[0] for row in store.execute(
        "SELECT name FROM system.columns WHERE database = 'properties_migrate' "
        "AND table = 'events'")}
    assert "prop_keys" not in columns
    monkeypatch.undo()
    # Small chunks, so that the fill takes several reads and several mutations.
    monkeypatch.setattr(clickhouse_store, "FILL_CHUNK_ROWS", 97)
    monkeypatch.setattr(clickhouse_store, "FILL_CHUNK_BYTES", 2000)

    assert store.migrate() == ["0004_event_properties"]
    left = store.execute("SELECT props FROM events WHERE props IS NOT NULL AND empty(prop_keys)")
    assert left
    assert all(not property_items(props) for props, in left)
    store.write_batch(loaded[-1])
    expected = sqlite_with(tmp_path / "expected.db", site.id, loaded)
    assert_same_properties(store, expected, site)
    # A second fill finds only the events whose properties have no pairs.
    assert fill_properties(store.client, "properties_migrate", "events") == len(
        store.execute("SELECT props FROM events WHERE props IS NOT NULL AND empty(prop_keys)"))
    for opened in (expected, state, store):
        opened.close()


@pytest.mark.slow
def test_full_chunk_filled(clickhouse: ClickHouseServer,  # noqa: F811
                           monkeypatch: pytest.MonkeyPatch) -> None:
    # One mutation with the default number of events, more ids than the 50,000 AST elements
    # that ClickHouse allows in a query by default.
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/properties_chunk"
    previous_schema(monkeypatch)
    store = ClickHouseStore(url)
    count = clickhouse_store.FILL_CHUNK_ROWS + 10_000
    events = make_events("s_chunk", count, seed=3, spool="chunk")
    for event in events:
        event.kind, event.props = "custom", '{"plan": "pro", "seats": 2}'
    store.write_batch(ProcessedBatch(spool="chunk", last_rowid=1, events=events, rejected=[],
                                     sessions=[]))
    monkeypatch.undo()

    assert store.migrate() == ["0004_event_properties"]
    counted = store.execute("SELECT countIf(prop_keys = ['plan', 'seats'] AND "
                            "prop_values = ['pro', '2']), count() FROM events")
    assert counted == [(count, count)]
    store.close()


def test_interrupted_migration_runs_again(clickhouse: ClickHouseServer,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/properties_rerun"
    previous_schema(monkeypatch)
    store = ClickHouseStore(url)
    monkeypatch.undo()
    # The columns exist, as when a run stopped after adding them.
    store.execute("ALTER TABLE events " + schema.PROPERTY_COLUMNS)
    assert store.migrate() == ["0004_event_properties"]
    store.close()


def test_copied_events_have_arrays(clickhouse: ClickHouseServer,  # noqa: F811
                                   tmp_path: Path) -> None:
    source = SqliteStore(tmp_path / "source.db")
    site, _ = add_site(source.conn, "example.com", timezone=SITE_ZONE)
    for batch in batches(site.id, count=900, seed=5, spool="copy"):
        source.write_batch(batch)
    source.close()
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/properties_copy"
    copy_store(f"sqlite:{tmp_path / 'source.db'}", url, batch_rows=300)
    store = ClickHouseStore(url)
    expected = SqliteStore(tmp_path / "source.db")
    assert_same_properties(store, expected, site)
    for opened in (expected, store):
        opened.close()


@pytest.mark.slow
def test_two_shards_filled_and_equal(clickhouse_shards: list[ClickHouseServer],  # noqa: F811
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = (f"clickhouse://127.0.0.1:{clickhouse_shards[0].tcp_port}/properties_cluster"
           "?cluster=trackpixel_cluster")
    state = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(state.conn, "example.com", timezone=SITE_ZONE)
    loaded = batches(site.id, spool="cluster")
    previous_schema(monkeypatch)
    store = ClickHouseStore(url)
    for batch in loaded[:-1]:
        store.write_batch(batch)
    monkeypatch.undo()
    assert store.migrate() == ["0004_event_properties"] * len(clickhouse_shards)
    for shard in clickhouse_shards:
        client = shard.client("properties_cluster")
        filled = client.execute("SELECT countIf(notEmpty(prop_keys)) FROM events_local")
        assert filled[0][0] > 0
    store.write_batch(loaded[-1])
    expected = sqlite_with(tmp_path / "expected.db", site.id, loaded)
    assert_same_properties(store, expected, site)
    for opened in (expected, state, store):
        opened.close()


class ChdbClient:
    """The part of the clickhouse-driver client that ``fill_properties`` uses, over a chdb
    session."""

    def __init__(self, engine: Any) -> None:
        from clickhouse_driver.util.escape import escape_params

        self.engine = engine
        self.escape = escape_params
        # Counts come back as numbers, as clickhouse-driver returns them.
        engine.run("SET output_format_json_quote_64bit_integers = 0")

    def execute(self, sql: str, params: dict[str, Any] | None = None,
                settings: dict[str, int] | None = None) -> list[tuple[Any, ...]]:
        for name, value in (settings or {}).items():
            self.engine.run(f"SET {name} = {value}")
        result = self.engine.run(sql % self.escape(params or {}, None))
        text = result.bytes()
        return [tuple(row) for row in json.loads(text)["data"]] if text else []


def test_current_engine_equal_to_sqlite(loaded) -> None:  # type: ignore[no-untyped-def]
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
        rows = sqlite_store.conn.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY id").fetchall()
        half = len(rows) // 2
        # The first half gets its arrays at insert, as the store computes them; the second
        # half is stored without them and filled afterwards.
        with_arrays = []
        for row in rows[:half]:
            items = property_items(row[EVENT_COLUMNS.index("props")]) if row[
                EVENT_COLUMNS.index("props")] is not None else []
            with_arrays.append((*row, [key for key, _ in items], [text for _, text in items]))
        insert_json_rows(engine, "events", (*EVENT_COLUMNS, "prop_keys", "prop_values"),
                         with_arrays)
        insert_json_rows(engine, "events", EVENT_COLUMNS, rows[half:])
        assert fill_properties(ChdbClient(engine), "trackpixel", "events") > 0
        stored = engine.query("SELECT props, prop_keys, prop_values FROM events", {})
        for props, keys, values in stored:
            items = property_items(props) if props is not None else []
            assert list(zip(keys, values, strict=True)) == items, props
        assert_same_properties(engine, sqlite_store, site)
    finally:
        engine.close()

