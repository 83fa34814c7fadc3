"""Time every dashboard report on a generated SQLite database.

Generates ``--events`` events for one site over ``--days`` local days (default: 10 million
over 60 days, so a 30-day view and its 30-day comparison period both hold data), then runs
each report of the dashboard's views for the last 30 days, cold and warm, and prints the
times as a Markdown table.

    .venv/bin/python bench/dashboard_bench.py --events 10000000 --db /tmp/bench.db

Events are inserted with executemany, then the report rollups are built from them with
``rollups.rebuild_site`` (the path of ``trackpixel rollups rebuild``). Each report is timed
through the rollups, through the raw SQL (``--skip-raw`` leaves that out) and with filters
(``--filter``, default country=DE and device_type=mobile), which read the column copy. A
database that exists already is reused, so a second run measures without regenerating; it is
migrated first, and its column copy is filled with ``rollups.fill_columns`` (the path of
``trackpixel rollups rebuild --columns-only``) when a migration added it.
"""

from __future__ import annotations

import argparse
import random
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
from trackpixel.storage import columns, rollups
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
    print(f"  events stored, {time.perf_counter() - started:.0f} s; building rollups",
          file=sys.stderr)
    rolled = time.perf_counter()

    def report_progress(done: int) -> None:
        if done % 1_000_000 == 0:
            print(f"  {done} events rolled up, {time.perf_counter() - rolled:.0f} s",
                  file=sys.stderr)

    rollups.rebuild_site(conn, SITE_ID, progress=report_progress, covers_all=True)
    print(f"  rollups built in {time.perf_counter() - rolled:.0f} s", file=sys.stderr)
    conn.execute("ANALYZE")
    conn.close()


class ReadStore:
    """A read-only store, as the dashboard uses."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.conn = connect(path, readonly=True)

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()


class RawReadStore:
    """The same database without a ``conn`` attribute, so every report runs its raw SQL."""

    dialect = "sqlite"

    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._store.query(sql, params)


def _time(runner: Callable[..., Any], store: Any, site: Any, query: ReportQuery,
          options: dict[str, Any], repeat: int) -> tuple[float, float]:
    """Return the first run's time and the median of ``repeat`` further runs, in seconds."""
    timings = []
    for _ in range(1 + repeat):
        started = time.perf_counter()
        runner(store, site, query, **options)
        timings.append(time.perf_counter() - started)
    return timings[0], statistics.median(timings[1:]) if repeat else timings[0]


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
    parser.add_argument("--skip-raw", action="store_true",
                        help="Time only the rollups, not the raw SQL nor the filtered runs.")
    parser.add_argument("--filtered", action="store_true",
                        help="With --skip-raw, still time the filtered runs.")
    parser.add_argument("--views", default="",
                        help="Comma-separated views to time, e.g. funnel,events; default all.")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="A filter of the filtered runs; repeat for several. Default: "
                        "country=DE and device_type=mobile.")
    parser.add_argument("--warm-cache", action="store_true",
                        help="Read the recent column chunks first, as the dashboard does when "
                        "it starts, and print how long that took.")
    args = parser.parse_args()
    chosen_filters = dict(text.split("=", 1) for text in args.filter) or \
        {"country": "DE", "device_type": "mobile"}

    end_day = date(2025, 3, 31)
    if not args.db.exists():
        print(f"generating {args.events} events into {args.db}", file=sys.stderr)
        started = time.perf_counter()
        build_database(args.db, args.events, args.days, end_day)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    writer = connect(args.db)
    migrate(writer)
    if not rollups.part_ready(writer, "columns"):
        print("filling the column copy", file=sys.stderr)
        started = time.perf_counter()
        copied = rollups.fill_columns(writer)
        print(f"copied {copied} events into the column copy in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    writer.close()
    store = ReadStore(args.db)
    site = get_site(store.conn, SITE_ID)
    (stored,) = store.conn.execute("SELECT COUNT(*) FROM events").fetchone()
    from_day = (end_day - timedelta(days=args.range_days - 1)).isoformat()
    query = ReportQuery(SITE_ID, from_day, end_day.isoformat(), limit=50)
    filtered = ReportQuery(SITE_ID, from_day, end_day.isoformat(), limit=50,
                           filters=chosen_filters)

    if args.warm_cache:
        started = time.perf_counter()
        warmed = columns.warm_cache(store.conn, lambda site_id: end_day.isoformat())
        print(f"column cache warmed: {warmed} chunks, {columns.CACHE.nbytes / 2 ** 20:.0f} MiB "
              f"in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    print(f"{stored} events, range {query.from_day} to {query.to_day}, filters "
          f"{chosen_filters}\n")
    print("| view | report | rollups, first run (s) | rollups, median (s) | raw, median (s) "
          "| filtered, first run (s) | filtered, median (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    raw_store = RawReadStore(store)
    chosen = {name for name in args.views.split(",") if name}
    for view, reports in views(query).items():
        if chosen and view not in chosen:
            continue
        view_total = raw_total = filtered_first_total = filtered_total = 0.0
        for label, runner, options in reports:
            first, warm = _time(runner, store, site, query, options, args.repeat)
            view_total += warm
            raw_text = filtered_first_text = filtered_text = "-"
            if not args.skip_raw:
                _, raw = _time(runner, raw_store, site, query, options, min(args.repeat, 1))
                raw_total += raw
                raw_text = f"{raw:.3f}"
            if not args.skip_raw or args.filtered:
                filtered_first, filtered_time = _time(runner, store, site, filtered, options,
                                                      args.repeat)
                filtered_first_total += filtered_first
                filtered_total += filtered_time
                filtered_first_text = f"{filtered_first:.3f}"
                filtered_text = f"{filtered_time:.3f}"
            print(f"| {view} | {label} | {first:.3f} | {warm:.3f} | {raw_text} | "
                  f"{filtered_first_text} | {filtered_text} |", flush=True)
        raw_view = "-" if args.skip_raw else f"**{raw_total:.3f}**"
        filtered_view = ("-", "-") if args.skip_raw and not args.filtered else (
            f"**{filtered_first_total:.3f}**", f"**{filtered_total:.3f}**")
        print(f"| **{view}** | **whole view** | | **{view_total:.3f}** | {raw_view} | "
              f"{filtered_view[0]} | {filtered_view[1]} |", flush=True)
    print(f"\ndecoded column chunks cached: {columns.CACHE.nbytes / 2 ** 20:.0f} MiB "
          f"in {len(columns.CACHE.chunks)} chunks")


if __name__ == "__main__":
    main()
