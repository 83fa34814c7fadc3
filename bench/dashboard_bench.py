"""Time every dashboard report on a generated SQLite database.

Generates ``--events`` events for one site over ``--days`` local days (default: 10 million
over 60 days, so a 30-day view and its 30-day comparison period both hold data), then runs
each report of the dashboard's views for the last 30 days, cold and warm, and prints the
times as a Markdown table.

    .venv/bin/python bench/dashboard_bench.py --events 10000000 --db /tmp/bench.db

A database that exists already is reused, so a second run measures without regenerating.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from trackpixel.reports import run
from trackpixel.reports.queries import ReportQuery
from trackpixel.sites import get_site
from trackpixel.storage.records import EVENT_COLUMNS
from trackpixel.storage.sqlite import connect, migrate

SITE_ID = "s_bench"
ZONE = "Europe/Berlin"
PATHS = [f"/docs/page-{index}" for index in range(200)] + ["/", "/pricing", "/signup", "/blog"]
CHANNELS = ["direct", "organic_search", "referral", "social", "email", "paid_search"]
REFERRERS = [None, "www.google.com", "news.ycombinator.com", "t.co", "duckduckgo.com"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge"]
SYSTEMS = ["Windows", "macOS", "Linux", "iOS", "Android"]
DEVICES = ["desktop", "mobile", "tablet"]
COUNTRIES = ["DE", "US", "FR", "GB", "NZ", "JP", "BR", "IN"]
CAMPAIGNS = [None, None, None, "spring", "launch", "retarget"]


def generate_rows(count: int, days: int, end_day: date, seed: int) -> Iterator[tuple[Any, ...]]:
    """Yield ``count`` event rows in ``EVENT_COLUMNS`` order, sessions of 1 to 8 events."""
    rng = random.Random(seed)
    zone = ZoneInfo(ZONE)
    start_day = end_day - timedelta(days=days - 1)
    visitors = max(1000, count // 25)
    produced = 0
    session_number = 0
    while produced < count:
        session_number += 1
        visitor = f"v{rng.randrange(visitors)}"
        day = start_day + timedelta(days=rng.randrange(days))
        moment = datetime(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60),
                          tzinfo=zone)
        ts = int(moment.timestamp() * 1000)
        channel = rng.choice(CHANNELS)
        referrer = rng.choice(REFERRERS)
        campaign = rng.choice(CAMPAIGNS)
        browser, os_name = rng.choice(BROWSERS), rng.choice(SYSTEMS)
        device, country = rng.choice(DEVICES), rng.choice(COUNTRIES)
        is_bot = 1 if rng.random() < 0.03 else 0
        length = min(count - produced, rng.randint(1, 8))
        for position in range(length):
            local = datetime.fromtimestamp(ts / 1000, zone)
            custom = position > 0 and rng.random() < 0.15
            name = rng.choice(["Signup", "Purchase", "Download"]) if custom else "page_view"
            props = orjson.dumps({"plan": rng.choice(["free", "pro"])}).decode() \
                if custom else None
            values = {
                "event_uid": f"e{produced}", "site_id": SITE_ID, "ts": ts,
                "local_day": local.date().isoformat(), "local_hour": local.hour,
                "source": "beacon" if custom else "pixel",
                "kind": "custom" if custom else "page_view", "name": name,
                "path": rng.choice(PATHS), "host": "bench.example", "channel": channel,
                "referrer_host": referrer if position == 0 else None,
                "utm_source": "newsletter" if campaign else None,
                "utm_medium": "email" if campaign else None, "utm_campaign": campaign,
                "campaign": campaign, "value": 20.0 if name == "Purchase" else None,
                "props": props, "visitor_id": visitor, "session_id": f"s{session_number}",
                "session_start": 1 if position == 0 else 0, "browser": browser, "os": os_name,
                "device_type": device, "is_bot": is_bot, "bot_reason": "ua" if is_bot else None,
                "machine_open": 0, "country": country, "gpc": 0, "dnt": 0, "cookieless": 0,
            }
            yield tuple(values.get(column) for column in EVENT_COLUMNS)
            produced += 1
            ts += rng.randint(5_000, 300_000)


def build_database(path: Path, count: int, days: int, end_day: date) -> None:
    conn = connect(path)
    migrate(conn)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(
        "INSERT OR IGNORE INTO sites (id, domain, allowed_domains, timezone, api_key_hash, "
        "cookies, created_ts) VALUES (?, 'bench.example', '[\"bench.example\"]', ?, '', 1, 0)",
        (SITE_ID, ZONE))
    insert = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
              f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})")
    rows = generate_rows(count, days, end_day, seed=7)
    started = time.perf_counter()
    done = 0
    while True:
        chunk = [row for _, row in zip(range(100_000), rows, strict=False)]
        if not chunk:
            break
        conn.execute("BEGIN")
        conn.executemany(insert, chunk)
        conn.execute("COMMIT")
        done += len(chunk)
        if done % 1_000_000 == 0:
            print(f"  {done} events, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    conn.execute("ANALYZE")
    conn.close()


class ReadStore:
    """A read-only store, as the dashboard uses."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.conn = connect(path, readonly=True)

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()


def views(query: ReportQuery) -> dict[str, list[tuple[str, Callable[..., Any], dict[str, Any]]]]:
    steps = [run.FunnelStep("page", "/pricing"), run.FunnelStep("event", "Signup"),
             run.FunnelStep("event", "Purchase")]
    return {
        "overview": [("overview", run.dashboard_overview, {}),
                     ("timeseries day", run.timeseries, {"interval": "day"}),
                     ("channels", run.channels, {}), ("top pages", run.top_pages, {})],
        "pages": [("top pages", run.top_pages, {}), ("entry pages", run.entry_pages, {}),
                  ("exit pages", run.exit_pages, {})],
        "sources": [("channels", run.channels, {}), ("referrers", run.referrers, {}),
                    ("utm campaigns", run.utm_campaigns, {})],
        "technology": [(name, run.breakdown, {"dimension": name})
                       for name in ("devices", "browsers", "os")],
        "countries": [("countries", run.breakdown, {"dimension": "countries"})],
        "events": [("events", run.custom_events, {}),
                   ("event properties", run.event_properties, {})],
        "email": [("email", run.email_campaigns, {})],
        "ads": [("ads", run.ad_campaigns, {})],
        "funnel": [("funnel", run.funnel_steps, {"steps": steps})],
        "quality": [("rejected", run.rejected_hits, {}), ("bots", run.bot_traffic, {}),
                    ("machine opens", run.machine_opens, {})],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--range-days", type=int, default=30)
    parser.add_argument("--db", type=Path, default=Path("/tmp/trackpixel-dashboard-bench.db"))
    parser.add_argument("--repeat", type=int, default=2, help="Timed runs after the first.")
    args = parser.parse_args()

    end_day = date(2025, 3, 31)
    if not args.db.exists():
        print(f"generating {args.events} events into {args.db}", file=sys.stderr)
        started = time.perf_counter()
        build_database(args.db, args.events, args.days, end_day)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    store = ReadStore(args.db)
    site = get_site(store.conn, SITE_ID)
    (stored,) = store.conn.execute("SELECT COUNT(*) FROM events").fetchone()
    from_day = (end_day - timedelta(days=args.range_days - 1)).isoformat()
    query = ReportQuery(SITE_ID, from_day, end_day.isoformat(), limit=50)
    filtered = ReportQuery(SITE_ID, from_day, end_day.isoformat(), limit=50,
                           filters={"country": "DE", "device_type": "mobile"})

    print(f"{stored} events, range {query.from_day} to {query.to_day}\n")
    print("| view | report | first run (s) | median of next runs (s) | with 2 filters (s) |")
    print("| --- | --- | --- | --- | --- |")
    for view, reports in views(query).items():
        view_total = 0.0
        for label, runner, options in reports:
            timings = []
            for _ in range(1 + args.repeat):
                started = time.perf_counter()
                runner(store, site, query, **options)
                timings.append(time.perf_counter() - started)
            started = time.perf_counter()
            runner(store, site, filtered, **options)
            with_filters = time.perf_counter() - started
            warm = statistics.median(timings[1:]) if args.repeat else timings[0]
            view_total += warm
            print(f"| {view} | {label} | {timings[0]:.3f} | {warm:.3f} | {with_filters:.3f} |")
        print(f"| **{view}** | **whole view** | | **{view_total:.3f}** | |")


if __name__ == "__main__":
    main()
