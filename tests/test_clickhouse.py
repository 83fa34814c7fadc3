"""The ClickHouse event store on a real server: schema, idempotent writes, serving, copying
and faults (ClickHouse stopped under load, a collector killed with SIGKILL)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from clickhouse_fixtures import (  # noqa: F401 - pytest fixtures
    DASHBOARD_NAMES,
    FUNNEL_STEPS,
    SITE_ZONE,
    ClickHouseServer,
    clickhouse,
    clickhouse_binary,
    dashboard_reports,
    generated_batches,
)
from server import Server, SiteInfo, cli, free_port, wait_drained

from trackpixel.reports.queries import ReportQuery
from trackpixel.sites import add_site
from trackpixel.storage.clickhouse import ClickHouseStore
from trackpixel.storage.copy import copy_store
from trackpixel.storage.sqlite import SqliteStore, connect
from trackpixel.web import auth

PAGE = quote("http://localhost/load", safe="")
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/131.0.0.0 Safari/537.36")


def database_url(server: ClickHouseServer, database: str) -> str:
    return f"clickhouse://127.0.0.1:{server.tcp_port}/{database}"


def test_migrations_apply_once(clickhouse: ClickHouseServer) -> None:  # noqa: F811
    url = database_url(clickhouse, "schema_check")
    first = ClickHouseStore(url, apply_migrations=False)
    assert first.migrate() == ["0001_initial", "0002_copy_checkpoints", "0003_session_events",
                               "0004_event_properties", "0005_session_totals",
                               "0006_visitor_days", "0007_day_figures",
                               "0008_session_spans"]
    assert first.migrate() == []
    types = dict(first.execute(
        "SELECT name, type FROM system.columns WHERE database = 'schema_check' "
        "AND table = 'events'"))
    assert types["local_day"] == "Date"
    assert types["ts"] == "UInt64"
    assert types["name"] == "LowCardinality(String)"
    engine = first.execute("SELECT engine, partition_key FROM system.tables "
                           "WHERE database = 'schema_check' AND name = 'events'")
    assert engine[0][0] == "ReplacingMergeTree"
    assert "toYYYYMM(local_day)" in engine[0][1]
    first.close()


def test_replayed_batch_counts_once(clickhouse: ClickHouseServer,  # noqa: F811
                                    tmp_path: Path) -> None:
    url = database_url(clickhouse, "replay_check")
    batches = generated_batches("s_replay", count=1200, spool="replay")
    store = ClickHouseStore(url)
    for batch in batches:
        store.write_batch(batch)
    store.close()
    # A new process (as after a crash before the cursor advanced) sends the batches again.
    again = ClickHouseStore(url)
    for batch in batches:
        result = again.write_batch(batch)
        assert result.stored == 0
    expected = SqliteStore(tmp_path / "trackpixel.db")
    for batch in batches:
        expected.write_batch(batch)
    count_sql = "SELECT COUNT(*), COUNT(DISTINCT event_uid) FROM events"
    assert again.query(count_sql, {}) == expected.query(count_sql, {})
    rejected_sql = "SELECT reason, COUNT(*) FROM rejected_hits GROUP BY reason ORDER BY reason"
    assert again.query(rejected_sql, {}) == expected.query(rejected_sql, {})
    again.close()


def test_copy_resumes_after_failure(clickhouse: ClickHouseServer, tmp_path: Path,  # noqa: F811
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    source = SqliteStore(tmp_path / "trackpixel.db")
    site, _ = add_site(source.conn, "example.com", timezone=SITE_ZONE)
    for batch in generated_batches(site.id, count=2500):
        source.write_batch(batch)
    url = database_url(clickhouse, "copy_check")

    original = ClickHouseStore.write_batch
    calls = {"n": 0}

    def fail_after_third_insert(self, batch):  # type: ignore[no-untyped-def]
        result = original(self, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash after an insert, before its checkpoint")
        return result

    monkeypatch.setattr(ClickHouseStore, "write_batch", fail_after_third_insert)
    with pytest.raises(RuntimeError, match="simulated crash"):
        copy_store(f"sqlite:{tmp_path / 'trackpixel.db'}", url, batch_rows=400)
    monkeypatch.undo()

    copy_store(f"sqlite:{tmp_path / 'trackpixel.db'}", url, batch_rows=400)
    target = ClickHouseStore(url)
    count_sql = "SELECT COUNT(*), COUNT(DISTINCT event_uid) FROM events"
    assert target.query(count_sql, {}) == source.query(count_sql, {})
    assert target.query("SELECT COUNT(*) FROM rejected_hits", {}) == source.query(
        "SELECT COUNT(*) FROM rejected_hits", {})
    query = ReportQuery(site.id, "2026-03-01", "2026-04-01")
    for name in DASHBOARD_NAMES:
        try:
            expected = dashboard_reports(source, site, query)[name]()
        except ValueError:
            continue  # an hourly series over too many days, rejected on every backend
        actual = dashboard_reports(target, site, query)[name]()
        assert actual.rows == expected.rows, name
    target.close()
    source.close()


def test_cli_migrate_and_report(clickhouse: ClickHouseServer, data_dir: Path,  # noqa: F811
                                site: SiteInfo) -> None:
    state = SqliteStore(data_dir / "trackpixel.db")
    for batch in generated_batches(site.id, count=800, spool="cli"):
        state.write_batch(batch)
    state.close()
    url = database_url(clickhouse, "cli_check")
    cli(data_dir, "migrate", "--from", f"sqlite:{data_dir / 'trackpixel.db'}", "--to", url)
    rerun = cli(data_dir, "migrate", "--from", f"sqlite:{data_dir / 'trackpixel.db'}",
                "--to", url)
    assert "0/0" in rerun.stderr
    for report in ("overview", "pages", "utm", "ads", "email", "rejected"):
        args = ("report", report, "--site", site.id, "--from", "2026-03-01", "--to",
                "2026-04-01", "--format", "json")
        from_sqlite = json.loads(cli(data_dir, *args).stdout)
        from_clickhouse = json.loads(cli(data_dir, *args, "--store", url).stdout)
        assert from_clickhouse == from_sqlite, report
    steps = [argument for name in FUNNEL_STEPS for argument in ("--step", f"event:{name}")]
    funnel = ("report", "funnel", "--site", site.id, *steps, "--window-hours", "48",
              "--from", "2026-03-01", "--to", "2026-04-01", "--format", "json")
    assert json.loads(cli(data_dir, *funnel, "--store", url).stdout) == json.loads(
        cli(data_dir, *funnel).stdout)
    (data_dir / "config.toml").write_text(f'store = "{url}"\n')
    from_config = json.loads(cli(data_dir, *funnel).stdout)
    assert from_config == json.loads(cli(data_dir, *funnel, "--store", "sqlite").stdout)


# Serving and faults


def send_hits(base: str, site_id: str, prefix: str, acked: list[str],
              stop: threading.Event, browsers: int = 1) -> None:
    """Send pixel hits with unique event ids; keep the ids the server acknowledged.

    The User-Agent cycles through ``browsers`` versions, so the hits come from that many
    visitors (the visitor id derives from address and User-Agent).
    """
    with httpx.Client(timeout=5) as client:
        number = 0
        while not stop.is_set():
            number += 1
            event_id = f"{prefix}-{number}"
            agent = UA.replace("Chrome/131.0.0.0", f"Chrome/131.0.{number % browsers}.0")
            try:
                response = client.get(f"{base}/p.gif?s={site_id}&u={PAGE}&e=Load&id={event_id}",
                                      headers={"User-Agent": agent})
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                acked.append(event_id)


def stored_ids(url: str, site_id: str) -> dict[str, int]:
    store = ClickHouseStore(url, apply_migrations=False)
    try:
        rows = store.execute("SELECT client_event_id, count() FROM events "
                             "WHERE site_id = %(site)s AND name = 'Load' "
                             "GROUP BY client_event_id", {"site": site_id})
    finally:
        store.close()
    return {str(key): int(count) for key, count in rows}


def wait_stored(url: str, site_id: str, expected: int, timeout: float = 90.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    found: dict[str, int] = {}
    while time.monotonic() < deadline:
        found = stored_ids(url, site_id)
        if len(found) >= expected:
            return found
        time.sleep(0.3)
    return found


def start_senders(base: str, site_id: str, acked: list[str], stop: threading.Event,
                  count: int = 4) -> list[threading.Thread]:
    senders = [threading.Thread(target=send_hits, args=(base, site_id, f"c{n}", acked, stop))
               for n in range(count)]
    for sender in senders:
        sender.start()
    return senders


@pytest.mark.slow
def test_outage_loses_nothing(clickhouse: ClickHouseServer, data_dir: Path,  # noqa: F811
                              site: SiteInfo) -> None:
    url = database_url(clickhouse, "outage_check")
    server = Server(data_dir, workers=2, extra=("--store", url)).start()
    acked: list[str] = []
    stop = threading.Event()
    senders = start_senders(server.base, site.id, acked, stop)
    try:
        time.sleep(1.5)
        clickhouse.stop()
        during_outage = len(acked)
        time.sleep(3.0)
        assert len(acked) > during_outage + 50, "collector stopped answering during outage"
        clickhouse.start()
        time.sleep(1.5)
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    wait_drained(data_dir, timeout=90)
    stored = wait_stored(url, site.id, len(acked))
    server.stop()
    assert len(acked) > 200
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events missing"
    twice = {key: count for key, count in stored.items() if count != 1}
    assert not twice, f"stored more than once: {list(twice)[:5]}"
    assert "event store unavailable (retry 1 in 0.5 s)" in server.log()


@pytest.mark.slow
def test_kill9_collector_stores_once(clickhouse: ClickHouseServer, data_dir: Path,  # noqa: F811
                                     site: SiteInfo) -> None:
    url = database_url(clickhouse, "kill_check")
    server = Server(data_dir, workers=2, extra=("--store", url)).start()
    acked: list[str] = []
    stop = threading.Event()
    senders = start_senders(server.base, site.id, acked, stop)
    time.sleep(2.0)
    server.kill9()
    stop.set()
    for sender in senders:
        sender.join()
    restarted = Server(data_dir, workers=1, extra=("--store", url)).start()
    wait_drained(data_dir, timeout=90)
    stored = wait_stored(url, site.id, len(acked))
    restarted.stop()
    assert len(acked) > 100
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events missing"
    twice = {key: count for key, count in stored.items() if count != 1}
    assert not twice, f"stored more than once: {list(twice)[:5]}"


def spooled_pixel_hits(tmp_path: Path, count: int) -> tuple[Any, SqliteStore, Any]:
    """Return a data directory whose spool contains ``count`` pixel hits of a new site, its
    state store and the site."""
    from trackpixel.config import DataDir
    from trackpixel.spool import INSERT_HIT, SPOOL_SCHEMA

    data_dir = DataDir(tmp_path / "data")
    data_dir.ensure()
    state = SqliteStore(data_dir.db_path)
    site, _ = add_site(state.conn, "example.com")
    spool = sqlite3.connect(data_dir.spool_dir / "host-1-abcdef.db")
    spool.execute(SPOOL_SCHEMA)
    now = int(time.time() * 1000)
    spool.executemany(INSERT_HIT, [
        (now + n, "pixel", f"s={site.id}&u=https%3A%2F%2Fexample.com%2Fp{n}".encode(), UA,
         "10.0.0.0", f"device{n % 7}", None) for n in range(count)])
    spool.commit()
    spool.close()
    return data_dir, state, site


def test_cursor_failure_replays_once(clickhouse: ClickHouseServer, tmp_path: Path,  # noqa: F811
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from trackpixel.pipeline.processor import Processor

    data_dir, state, site = spooled_pixel_hits(tmp_path, 30)

    url = database_url(clickhouse, "cursor_check")
    events = ClickHouseStore(url)
    processor = Processor(data_dir, state, events)
    original = SqliteStore.save_progress
    calls = {"n": 0}

    def fail_first_save(self, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database is locked")
        return original(self, batch)

    monkeypatch.setattr(SqliteStore, "save_progress", fail_first_save)
    assert processor.drain_once() == 0
    while processor.drain_once():
        pass
    processor.close()
    stored = events.execute("SELECT count(), uniqExact(event_uid) FROM events "
                            "WHERE site_id = %(site)s", {"site": site.id})
    assert stored == [(30, 30)]
    events.close()
    state.close()


def test_enrich_failure_keeps_session_starts(clickhouse: ClickHouseServer,  # noqa: F811
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from trackpixel.pipeline import processor as processor_module
    from trackpixel.pipeline.processor import Processor

    data_dir, state, site = spooled_pixel_hits(tmp_path, 30)

    events = ClickHouseStore(database_url(clickhouse, "enrich_failure"))
    processor = Processor(data_dir, state, events)
    original = processor_module.enrich
    calls = {"n": 0}

    def fail_tenth(hit, ctx):  # type: ignore[no-untyped-def]
        # A lookup in the SQLite state fails part-way through the first attempt, after
        # the first hit of every device started a session.
        calls["n"] += 1
        if calls["n"] == 10:
            raise sqlite3.OperationalError("database is locked")
        return original(hit, ctx)

    monkeypatch.setattr(processor_module, "enrich", fail_tenth)
    assert processor.drain_once() == 0
    while processor.drain_once():
        pass
    processor.close()
    stored = events.execute(
        "SELECT count(), uniqExact(session_id), sum(session_start) FROM events "
        "WHERE site_id = %(site)s", {"site": site.id})
    assert stored == [(30, 7, 7)]
    events.close()
    state.close()


def api_token(data_dir: Path) -> str:
    """Return an API token of a new admin user of ``data_dir``."""
    conn = connect(data_dir / "trackpixel.db")
    try:
        user = auth.add_user(conn, "owner@example.com", "admin", "correct horse battery", [])
        return auth.create_token(conn, user)
    finally:
        conn.close()


def test_report_api_reads_clickhouse(clickhouse: ClickHouseServer, data_dir: Path,  # noqa: F811
                                     site: SiteInfo) -> None:
    url = database_url(clickhouse, "web_reports")
    token = api_token(data_dir)
    server = Server(data_dir, extra=("--store", url)).start()
    try:
        for browser in range(3):
            agent = UA.replace("Chrome/131.0.0.0", f"Chrome/131.0.{browser}.0")
            for number in range(2):
                response = httpx.get(f"{server.base}/p.gif?s={site.id}&u={PAGE}&e=Load"
                                     f"&id=web-{browser}-{number}",
                                     headers={"User-Agent": agent})
                assert response.status_code == 200
        wait_drained(data_dir)
        assert len(wait_stored(url, site.id, 6)) == 6
        headers = {"Authorization": f"Bearer {token}"}
        events = httpx.get(f"{server.base}/api/v1/reports/events?site={site.id}",
                           headers=headers).json()
    finally:
        server.stop()
    # The server's SQLite database contains no events, so the figures come from ClickHouse.
    conn = sqlite3.connect(data_dir / "trackpixel.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    finally:
        conn.close()
    assert "rows" in events, events
    assert events["columns"] == ["name", "events", "visitors", "total_value"]
    assert events["rows"] == [["Load", 6, 3, 0.0]]


def test_report_api_store_down(clickhouse: ClickHouseServer, data_dir: Path,  # noqa: F811
                               site: SiteInfo) -> None:
    token = api_token(data_dir)
    unused = f"clickhouse://127.0.0.1:{free_port()}/nowhere"
    server = Server(data_dir, extra=("--store", unused)).start()
    try:
        response = httpx.get(f"{server.base}/api/v1/reports/overview?site={site.id}",
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
    finally:
        server.stop()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
