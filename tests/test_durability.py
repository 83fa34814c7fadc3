"""Every acknowledged event survives ``kill -9`` of the whole server and is stored once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from server import Server, SiteInfo, query, wait_drained
from test_rollups import RawStore

from trackpixel.config import DataDir
from trackpixel.reports import run
from trackpixel.reports.queries import ReportQuery
from trackpixel.serve import start_processor
from trackpixel.sites import get_site
from trackpixel.storage import rollups
from trackpixel.storage.sqlite import connect

PAGE = quote("http://localhost/load", safe="")
UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/131.0.0.0 Safari/537.36")


def _send_until_failure(base: str, site_id: str, prefix: str, acked: list[str],
                        stop: threading.Event) -> None:
    """Send pixel and beacon hits with unique ids; keep the ids the server acknowledged."""
    with httpx.Client(timeout=5) as client:
        number = 0
        while not stop.is_set():
            number += 1
            event_id = f"{prefix}-{number}"
            try:
                if number % 2:
                    response = client.get(f"{base}/p.gif?s={site_id}&u={PAGE}&e=Load&id={event_id}",
                                          headers={"User-Agent": UA})
                    ok = response.status_code == 200
                else:
                    body = {"s": site_id, "events": [
                        {"e": "Load", "u": "http://localhost/load", "id": event_id}]}
                    response = client.post(f"{base}/e", json=body, headers={"User-Agent": UA})
                    ok = response.status_code == 204
            except httpx.HTTPError:
                return
            if ok:
                acked.append(event_id)


def test_kill9_loses_no_acknowledged_event(data_dir: Path, site: SiteInfo) -> None:
    server = Server(data_dir, workers=2).start()
    acked: list[str] = []
    stop = threading.Event()
    senders = [threading.Thread(target=_send_until_failure,
                                args=(server.base, site.id, f"c{n}", acked, stop))
               for n in range(8)]
    for sender in senders:
        sender.start()
    time.sleep(3)

    server.kill9()
    stop.set()
    for sender in senders:
        sender.join(timeout=30)
    assert len(acked) > 500, "the load was too small to mean anything"

    restarted = Server(data_dir).start()
    try:
        wait_drained(data_dir, timeout=120)
    finally:
        restarted.stop()

    stored = Counter(row[0] for row in query(
        data_dir, "SELECT client_event_id FROM events WHERE name = 'Load'"))
    missing = [event_id for event_id in acked if event_id not in stored]
    doubled = [event_id for event_id, count in stored.items() if count > 1]
    assert missing == []
    assert doubled == []
    assert query(data_dir, "SELECT COUNT(*) FROM rejected_hits") == [(0,)]
    _assert_column_copy_exact(data_dir, site)


def _assert_column_copy_exact(data_dir: Path, site: SiteInfo) -> None:
    """Check that the column copy contains each stored event once and that filtered reports
    from it equal the raw SQL."""
    assert query(data_dir, "SELECT SUM(rows) FROM column_chunks") == \
        query(data_dir, "SELECT COUNT(*) FROM events")
    store = ReadStore(data_dir / "trackpixel.db")
    try:
        assert rollups.in_sync(store.conn)
        assert rollups.part_ready(store.conn, "columns")
        site_row = get_site(store.conn, site.id)
        days = store.conn.execute("SELECT MIN(local_day), MAX(local_day) FROM events").fetchone()
        for filters in ({"name": "Load"}, {"source": "beacon"}, {"path": "/load"}):
            report_query = ReportQuery(site.id, *days, filters=filters)
            for runner in (run.top_pages, run.custom_events, run.dashboard_overview,
                           run.entry_pages):
                from_copy = runner(store, site_row, report_query).rows
                assert from_copy == runner(RawStore(store), site_row, report_query).rows
        counted = run.custom_events(store, site_row, ReportQuery(site.id, *days,
                                                                 filters={"name": "Load"}))
        assert counted.rows[0][1] > 500
    finally:
        store.conn.close()


class ReadStore:
    """A read-only store, as the dashboard opens one."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.conn = connect(path, readonly=True)

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()


def test_graceful_stop_drains_spools(data_dir: Path, site: SiteInfo) -> None:
    server = Server(data_dir).start()
    with httpx.Client() as client:
        for number in range(200):
            client.get(f"{server.base}/p.gif?s={site.id}&u={PAGE}&id=g-{number}",
                       headers={"User-Agent": UA})
    server.stop()

    assert query(data_dir, "SELECT COUNT(DISTINCT client_event_id) FROM events") == [(200,)]
    assert list((data_dir / "spool").glob("*.db")) == []


def test_final_drain_stores_spooled_hits(data_dir: Path, site: SiteInfo) -> None:
    # Hits accepted while no processor ran, as when the processor was ended while starting.
    server = Server(data_dir, extra=("--no-processor",)).start()
    with httpx.Client() as client:
        for number in range(50):
            client.get(f"{server.base}/p.gif?s={site.id}&u={PAGE}&id=d-{number}",
                       headers={"User-Agent": UA})
    server.stop()
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]

    drain = start_processor(DataDir(data_dir), drain_only=True)
    drain.join(timeout=120)

    assert drain.exitcode == 0
    assert query(data_dir, "SELECT COUNT(DISTINCT client_event_id) FROM events") == [(50,)]
    assert list((data_dir / "spool").glob("*.db")) == []
