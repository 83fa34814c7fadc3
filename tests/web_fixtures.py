"""Shared helpers for the dashboard tests: an in-process app, users and generated events."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from starlette.testclient import TestClient

from trackpixel.config import DataDir
from trackpixel.sites import Site, add_site
from trackpixel.storage.records import EVENT_COLUMNS, EventRow
from trackpixel.storage.sqlite import connect, migrate
from trackpixel.web import auth
from trackpixel.web.app import create_web_app

PASSWORD = "correct horse battery staple"


def open_data_dir(root: Path) -> tuple[DataDir, sqlite3.Connection]:
    directory = DataDir(root)
    directory.ensure()
    conn = connect(directory.db_path)
    migrate(conn)
    return directory, conn


def make_site(conn: sqlite3.Connection, domain: str, zone: str = "UTC") -> Site:
    site, _ = add_site(conn, domain, timezone=zone)
    return site


def client(directory: DataDir) -> TestClient:
    return TestClient(create_web_app(directory), base_url="http://127.0.0.1")


def login_token(test_client: TestClient) -> str:
    page = test_client.get("/dashboard/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def log_in(test_client: TestClient, email: str, password: str = PASSWORD) -> Any:
    return test_client.post("/dashboard/login", data={
        "email": email, "password": password, "csrf_token": login_token(test_client)},
        follow_redirects=False)


def add_user(conn: sqlite3.Connection, email: str, role: str = "admin",
             sites: tuple[str, ...] = ()) -> auth.User:
    return auth.add_user(conn, email, role, PASSWORD, sites)


_DEFAULTS: dict[str, Any] = {
    "source": "pixel", "kind": "page_view", "name": "page_view", "channel": "direct",
    "session_start": 0, "is_bot": 0, "machine_open": 0, "gpc": 0, "dnt": 0, "cookieless": 0,
}


def event(site: Site, ts: int, **values: Any) -> EventRow:
    """Build an event row; local day and hour come from ``ts`` in the site's zone."""
    local = datetime.fromtimestamp(ts / 1000, ZoneInfo(site.timezone))
    row = {name: None for name in EVENT_COLUMNS} | _DEFAULTS | {
        "site_id": site.id, "ts": ts, "local_day": local.date().isoformat(),
        "local_hour": local.hour} | values
    row.setdefault("event_uid", None)
    return EventRow(**{f.name: row[f.name] for f in fields(EventRow)})


def insert_events(conn: sqlite3.Connection, rows: list[EventRow]) -> None:
    marks = ", ".join("?" for _ in EVENT_COLUMNS)
    conn.execute("BEGIN")
    for index, row in enumerate(rows):
        if row.event_uid is None:
            row.event_uid = f"test-{index}-{row.ts}"
        conn.execute(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})",
                     tuple(getattr(row, name) for name in EVENT_COLUMNS))
    conn.execute("COMMIT")
