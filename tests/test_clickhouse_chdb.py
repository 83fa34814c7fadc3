"""The ClickHouse DDL and every report query on a current ClickHouse engine, run in-process
through chdb, return what SQLite returns for the same events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_fixtures import DASHBOARD_NAMES, SITE_ZONE, dashboard_reports, generated_batches

from trackpixel.reports.queries import ReportQuery
from trackpixel.sites import Site, add_site
from trackpixel.storage import clickhouse_schema as schema
from trackpixel.storage.dialect import CLICKHOUSE, normalize_row, translate
from trackpixel.storage.records import EVENT_COLUMNS, REJECTED_COLUMNS
from trackpixel.storage.sqlite import SqliteStore

chdb_session = pytest.importorskip(
    "chdb.session", reason="chdb is not installed; install it with 'pip install chdb' "
                           "(it pulls the 181 MB chdb-core wheel)")
escape = pytest.importorskip("clickhouse_driver.util.escape")


class ChdbStore:
    """An event store over an in-process chdb session, for report queries only."""

    dialect = CLICKHOUSE
    stores_progress = False

    def __init__(self, final: bool = False) -> None:
        self.session = chdb_session.Session()
        self.final = final

    def run(self, sql: str) -> Any:
        return self.session.query(sql, "JSONCompact")

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        text = translate(sql, CLICKHOUSE, final=self.final) % escape.escape_params(params, None)
        result = self.run(text + "\nSETTINGS output_format_json_quote_64bit_integers = 0")
        return [normalize_row(tuple(row)) for row in json.loads(result.bytes())["data"]]

    def close(self) -> None:
        self.session.close()


def insert_json_rows(store: ChdbStore, table: str, columns: tuple[str, ...],
                     rows: list[tuple[Any, ...]]) -> None:
    lines = []
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        if "raw" in record and record["raw"] is not None:
            record["raw"] = record["raw"].decode("latin-1")
        lines.append(json.dumps(record))
    store.run(f"INSERT INTO trackpixel.{table} FORMAT JSONEachRow\n" + "\n".join(lines))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, SqliteStore,
                                                                        ChdbStore]]:
    root: Path = tmp_path_factory.mktemp("chdb")
    sqlite_store = SqliteStore(root / "trackpixel.db")
    site, _ = add_site(sqlite_store.conn, "example.com", timezone=SITE_ZONE)
    for batch in generated_batches(site.id):
        sqlite_store.write_batch(batch)
    engine = ChdbStore()
    engine.run("CREATE DATABASE IF NOT EXISTS trackpixel")
    names = schema.table_names("trackpixel", None)
    for migration in schema.MIGRATIONS:
        for statement in migration.local:
            engine.run(statement.format(**names))
    # Use the session's current database so report SQL finds ``events`` unqualified.
    engine.run("USE trackpixel")
    events = sqlite_store.conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events")
    insert_json_rows(engine, "events", EVENT_COLUMNS, events.fetchall())
    rejected = sqlite_store.conn.execute(f"SELECT {', '.join(REJECTED_COLUMNS)} "
                                         "FROM rejected_hits")
    insert_json_rows(engine, "rejected_hits", REJECTED_COLUMNS, rejected.fetchall())
    # The store computes the session rows after each write; here the events arrive in bulk.
    for statement in schema.fill_written_tables("trackpixel"):
        engine.run(statement)
    yield site, sqlite_store, engine
    sqlite_store.close()
    engine.close()


@pytest.mark.parametrize("final", [False, True])
@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_report_equal_on_current_engine(stores, name: str,  # type: ignore[no-untyped-def]
                                        final: bool) -> None:
    site, sqlite_store, engine = stores
    engine.final = final
    for from_day, to_day in [("2026-03-01", "2026-04-01"), ("2026-03-31", "2026-03-31")]:
        for filters in [{}, {"channel": "email"}]:
            query = ReportQuery(site.id, from_day, to_day, limit=7, filters=filters)
            try:
                expected = dashboard_reports(sqlite_store, site, query)[name]()
            except ValueError:
                continue  # an hourly series over too many days, rejected on every backend
            actual = dashboard_reports(engine, site, query)[name]()
            assert actual.rows == expected.rows, (from_day, to_day, filters)


def test_current_engine_column_types(stores) -> None:  # type: ignore[no-untyped-def]
    _, _, engine = stores
    types = dict(engine.query("SELECT name, type FROM system.columns "
                              "WHERE database = 'trackpixel' AND table = 'events'", {}))
    assert types["name"] == "LowCardinality(String)"
    assert types["local_day"] == "Date"
