"""Privacy export, erasure and retention with ClickHouse as the event store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from clickhouse_fixtures import ClickHouseServer, clickhouse, clickhouse_binary  # noqa: F401
from server import Server, SiteInfo, cli, query, wait_drained

from trackpixel.pipeline.maintenance import DAY_MS, Maintenance
from trackpixel.storage.clickhouse import ClickHouseStore
from trackpixel.storage.sqlite import SqliteStore

UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/131.0.0.0 Safari/537.36")
GRANTED = {"analytics_storage": "granted", "ad_storage": "granted", "ad_user_data": "granted",
           "ad_personalization": "granted"}


def _send_person(server: Server, site: SiteInfo, cookie: str, email: str) -> None:
    body = {"s": site.id, "vid": cookie, "consent": GRANTED,
            "events": [{"e": "page_view", "u": "http://localhost/"},
                       {"e": "Lead Submitted", "u": "http://localhost/apply"}]}
    assert httpx.post(f"{server.base}/e", content=json.dumps(body),
                      headers={"User-Agent": UA}).status_code == 204
    response = httpx.post(
        f"{server.base}/api/v1/events", headers={"Authorization": f"Bearer {site.api_key}"},
        json={"events": [{"name": "Application Settled", "event_id": f"s-{cookie}",
                          "visitor_id": cookie, "consent": GRANTED,
                          "user_data": {"email": email}}]})
    assert response.status_code == 200


def _count(store: ClickHouseStore, where: str = "1 = 1") -> int:
    return int(store.query(f"SELECT COUNT(*) FROM events WHERE {where}", {})[0][0])


def test_export_and_erase_on_clickhouse(clickhouse: ClickHouseServer,  # noqa: F811
                                        data_dir: Path, site: SiteInfo) -> None:
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/privacy_erase"
    server = Server(data_dir, extra=("--store", url)).start()
    try:
        _send_person(server, site, "person-a-cookie", "a@example.org")
        _send_person(server, site, "person-b-cookie", "b@example.org")
        for cookie in ("person-a-cookie", "person-b-cookie"):
            httpx.get(f"{server.base}/p.gif?s={site.id}&u=http%3A%2F%2Flocalhost%2F"
                      f"&vid={cookie}&v=abc", headers={"User-Agent": UA})
        wait_drained(data_dir)
        store = ClickHouseStore(url)
        assert _count(store) == 6

        exported = json.loads(cli(data_dir, "privacy", "export", "a@example.org", "--by",
                                  "email", "--site", site.id, "--store", url).stdout)
        auth = {"Authorization": f"Bearer {site.api_key}"}
        by_api = httpx.post(f"{server.base}/api/v1/privacy/export", headers=auth,
                            json={"email": "a@example.org"}).json()
        erase = httpx.post(f"{server.base}/api/v1/privacy/erase", headers=auth,
                           json={"email": "a@example.org"}).json()
        status: dict[str, object] = {}
        for _ in range(300):
            status = httpx.get(f"{server.base}/api/v1/privacy/requests/{erase['request_id']}",
                               headers=auth).json()
            if status["status"] == "done":
                break
            time.sleep(0.1)
    finally:
        server.stop()

    assert sorted(event["name"] for event in exported["events"]) == [
        "Application Settled", "Lead Submitted", "page_view"]
    assert by_api["events"] == exported["events"]
    assert status["status"] == "done"
    assert status["events_erased"] == 3
    assert _count(store) == 3
    assert _count(store, "user_data IS NOT NULL") == 1
    assert query(data_dir, "SELECT selector_hashes FROM privacy_requests") == [(None,)]
    remaining = store.query("SELECT DISTINCT visitor_id FROM events", {})
    assert len(remaining) == 1
    rejected = store.query("SELECT raw FROM rejected_hits", {})
    assert len(rejected) == 1
    assert "vid=person-b-cookie" in str(rejected[0][0])


def test_retention_on_clickhouse(clickhouse: ClickHouseServer,  # noqa: F811
                                 data_dir: Path, site: SiteInfo) -> None:
    url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/privacy_retention"
    server = Server(data_dir, extra=("--store", url)).start()
    try:
        _send_person(server, site, "person-c-cookie", "c@example.org")
        wait_drained(data_dir)
    finally:
        server.stop()
    cli(data_dir, "sites", "privacy", site.id, "--retention-days", "1")
    state = SqliteStore(data_dir / "trackpixel.db")
    store = ClickHouseStore(url)
    now_ms = int(time.time() * 1000)
    # Rejected hits whose site is unknown: one past the 30 days they are kept, one not.
    store.execute("INSERT INTO rejected_hits (hit_uid, received_ts, source, site_id, reason, "
                  "detail, raw, user_agent) VALUES",
                  [("orphan-old", now_ms - 40 * DAY_MS, "pixel", None, "unknown_site", "", None,
                    None),
                   ("orphan-new", now_ms, "pixel", None, "unknown_site", "", None, None)])

    deleted = Maintenance(state.conn, lambda: [], store).apply_retention(now_ms + 3 * DAY_MS)
    state.close()

    assert deleted == (3, 1)
    assert _count(store) == 0
    assert store.execute("SELECT hit_uid FROM rejected_hits WHERE site_id IS NULL") == [
        ("orphan-new",)]
    rollups = query(data_dir, "SELECT name, events FROM daily_rollups ORDER BY name")
    assert rollups == [("Application Settled", 1), ("Lead Submitted", 1), ("page_view", 1)]
