"""Every report returns the same table on SQLite and on ClickHouse for the same events."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_fixtures import (  # noqa: F401 - pytest fixtures
    FUNNEL_STEPS,
    SITE_ZONE,
    ClickHouseServer,
    clickhouse,
    clickhouse_binary,
    generated_batches,
)

from trackpixel.reports import queries
from trackpixel.reports import run as reports
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


def run_report(name: str, store, site: Site, query: ReportQuery):  # type: ignore[no-untyped-def]
    if name == "funnel":
        return reports.funnel(store, site, query, FUNNEL_STEPS, window_days=2)
    return getattr(reports, name)(store, site, query)


@pytest.mark.parametrize("name", reports.REPORT_NAMES)
def test_report_equal_on_both_backends(stores, name: str) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, clickhouse_store = stores
    for from_day, to_day in RANGES:
        for filters in FILTERS:
            query = ReportQuery(site.id, from_day, to_day, limit=7, filters=filters)
            expected = run_report(name, sqlite_store, site, query)
            actual = run_report(name, clickhouse_store, site, query)
            assert actual.columns == expected.columns
            assert actual.rows == expected.rows, (from_day, to_day, filters)


def test_generated_data_covers_reports(stores) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, _ = stores
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01", limit=50)
    funnel = run_report("funnel", sqlite_store, site, query)
    assert funnel.rows[1][2] > 0, "no visitor reached funnel step 2"
    overview = dict(run_report("overview", sqlite_store, site, query).rows)
    assert overview["rejected_hits"] > 0
    assert overview["bot_events"] > 0
    assert overview["machine_opens"] > 0


def test_duplicate_client_ids_rejected_alike(stores) -> None:  # type: ignore[no-untyped-def]
    _, sqlite_store, clickhouse_store = stores
    sql = ("SELECT reason, COUNT(*) FROM rejected_hits GROUP BY reason ORDER BY reason")
    expected = sqlite_store.query(sql, {})
    assert ("duplicate_event_id",) in [(row[0],) for row in expected]
    assert clickhouse_store.query(sql, {}) == expected


def _dashboard_reports(store, site: Site, query: ReportQuery):  # type: ignore[no-untyped-def]
    """Every runner behind the dashboard views and the report API, by name."""
    funnel = [reports.FunnelStep("event", step) for step in FUNNEL_STEPS]
    goal = FUNNEL_STEPS[-1]
    runners = {
        "dashboard_overview": lambda: reports.dashboard_overview(store, site, query),
        "dashboard_overview_goal": lambda: reports.dashboard_overview(store, site, query,
                                                                      goal=goal),
        "hourly": lambda: reports.timeseries(store, site, query, interval="hour"),
        "daily": lambda: reports.timeseries(store, site, query, interval="day"),
        "weekly": lambda: reports.timeseries(store, site, query, interval="week", goal=goal),
        "top_pages": lambda: reports.top_pages(store, site, query),
        "entry_pages": lambda: reports.entry_pages(store, site, query),
        "exit_pages": lambda: reports.exit_pages(store, site, query),
        "channels": lambda: reports.channels(store, site, query, goal=goal),
        "referrers": lambda: reports.referrers(store, site, query),
        "utm_campaigns": lambda: reports.utm_campaigns(store, site, query),
        "custom_events": lambda: reports.custom_events(store, site, query),
        "event_properties": lambda: reports.event_properties(store, site, query),
        "email_campaigns": lambda: reports.email_campaigns(store, site, query),
        "ad_campaigns": lambda: reports.ad_campaigns(store, site, query, goal=goal),
        "funnel_steps": lambda: reports.funnel_steps(store, site, query, steps=funnel,
                                                     window_seconds=2 * 86_400),
        "rejected_hits": lambda: reports.rejected_hits(store, site, query),
        "bot_traffic": lambda: reports.bot_traffic(store, site, query),
        "machine_opens": lambda: reports.machine_opens(store, site, query),
    }
    for dimension in queries.BREAKDOWN_COLUMNS:
        runners[f"breakdown_{dimension}"] = (
            lambda dimension=dimension: reports.breakdown(store, site, query,
                                                          dimension=dimension))
    return runners


DASHBOARD_NAMES = sorted(_dashboard_reports(None, None, None))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", DASHBOARD_NAMES)
def test_dashboard_report_equal_on_both_backends(stores, name: str) -> None:  # type: ignore[no-untyped-def]
    site, sqlite_store, clickhouse_store = stores
    for from_day, to_day in RANGES:
        for filters in FILTERS:
            query = ReportQuery(site.id, from_day, to_day, limit=7, filters=filters)
            try:
                expected = _dashboard_reports(sqlite_store, site, query)[name]()
            except ValueError as error:
                # A rejected request (an hourly series over too many days) is rejected
                # alike on ClickHouse.
                with pytest.raises(ValueError, match=re.escape(str(error))):
                    _dashboard_reports(clickhouse_store, site, query)[name]()
                continue
            actual = _dashboard_reports(clickhouse_store, site, query)[name]()
            assert actual.columns == expected.columns
            assert actual.rows == expected.rows, (from_day, to_day, filters)
