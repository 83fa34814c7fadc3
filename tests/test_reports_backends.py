"""Every report returns the same table on SQLite and on ClickHouse for the same events."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_fixtures import (  # noqa: F401 - pytest fixtures
    DASHBOARD_NAMES,
    SITE_ZONE,
    ClickHouseServer,
    clickhouse,
    clickhouse_binary,
    dashboard_reports,
    generated_batches,
)

from trackpixel.reports.queries import ReportQuery
from trackpixel.sites import Site, add_site
from trackpixel.storage.clickhouse import ClickHouseStore
from trackpixel.storage.sqlite import SqliteStore

RANGES = [("2026-03-01", "2026-04-01"), ("2026-03-02", "2026-03-30"), ("2026-03-31",
                                                                        "2026-03-31")]
FILTERS = [{}, {"channel": "email"}, {"device_type": "mobile", "browser": "Chrome"}]


@pytest.fixture(scope="module")
def stores(clickhouse: ClickHouseServer, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
           ) -> Iterator[tuple[Site, SqliteStore, ClickHouseStore]]:
    root: Path = tmp_path_factory.mktemp("backends")
    sqlite_store = SqliteStore(root / "trackpixel.db")
    site, _ = add_site(sqlite_store.conn, "example.com", timezone=SITE_ZONE)
    clickhouse_store = ClickHouseStore(clickhouse.url)
    for batch in generated_batches(site.id):
        sqlite_store.write_batch(batch)
        clickhouse_store.write_batch(batch)
    yield site, sqlite_store, clickhouse_store
    sqlite_store.close()
    clickhouse_store.close()


def test_generated_data_covers_reports(stores) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, _ = stores
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01", limit=50)
    runners = dashboard_reports(sqlite_store, site, query)
    funnel = runners["funnel_steps"]()
    assert funnel.rows[1][2] > 0, "no visitor reached funnel step 2"
    assert runners["rejected_hits"]().rows
    assert runners["bot_traffic"]().rows
    assert runners["machine_opens"]().rows


def test_duplicate_client_ids_rejected_alike(stores) -> None:  # type: ignore[no-untyped-def]
    _, sqlite_store, clickhouse_store = stores
    sql = ("SELECT reason, COUNT(*) FROM rejected_hits GROUP BY reason ORDER BY reason")
    expected = sqlite_store.query(sql, {})
    assert ("duplicate_event_id",) in [(row[0],) for row in expected]
    assert clickhouse_store.query(sql, {}) == expected


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_dashboard_report_equal_on_both_backends(stores, name: str) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, clickhouse_store = stores
    for from_day, to_day in RANGES:
        for filters in FILTERS:
            query = ReportQuery(site.id, from_day, to_day, limit=7, filters=filters)
            try:
                expected = dashboard_reports(sqlite_store, site, query)[name]()
            except ValueError as error:
                # A rejected request (an hourly series over too many days) is rejected
                # alike on ClickHouse.
                with pytest.raises(ValueError, match=re.escape(str(error))):
                    dashboard_reports(clickhouse_store, site, query)[name]()
                continue
            actual = dashboard_reports(clickhouse_store, site, query)[name]()
            assert actual.columns == expected.columns
            assert actual.rows == expected.rows, (from_day, to_day, filters)
