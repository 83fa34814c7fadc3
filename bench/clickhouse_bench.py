"""Benchmark the ClickHouse event store against SQLite: ingest rate, report times, disk size.

Ingest: ``trackpixel serve --workers 2`` (two collector processes plus the processor) is
driven by wrk with bench/pixel_hits.lua for ``--ingest-seconds``, once with the SQLite store
and once with ``--store clickhouse://...``. The rate is the events stored divided by the time
from the first request until every spool is drained.

Reports: ``--events`` events over 30 days are generated inside ClickHouse with
``INSERT ... SELECT ... FROM numbers(N)`` and ``--sqlite-events`` events with the same
formulas inside SQLite (a recursive CTE into the real schema, indexes built afterwards). The
overview, pages and funnel report runners and three single queries (events by day, unique
visitors by day, top pages) are timed. Each figure is the best of ``--repeat`` runs. Disk
use is ``bytes_on_disk`` of the active parts in ``system.parts`` and the SQLite file size.

The ClickHouse server is Debian's 18.16 ``clickhouse-server`` started on free 127.0.0.1
ports with the test fixture's configuration. Run from the repository root:
``.venv/bin/python bench/clickhouse_bench.py [--events 10000000] [--sqlite-events 10000000]``.
It prints a Markdown summary for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from clickhouse_fixtures import ClickHouseServer, find_server_binary, free_port  # noqa: E402

from trackpixel.reports import run as reports  # noqa: E402
from trackpixel.reports.queries import ReportQuery  # noqa: E402
from trackpixel.sites import add_site, get_site  # noqa: E402
from trackpixel.storage.clickhouse import ClickHouseStore  # noqa: E402
from trackpixel.storage.records import EVENT_COLUMNS  # noqa: E402
from trackpixel.storage.sqlite import SqliteStore  # noqa: E402

WRK = "/usr/bin/wrk"
LUA_SCRIPT = BENCH_DIR / "pixel_hits.lua"
FIRST_DAY = "2026-01-01"
DAYS = 30
FUNNEL_STEPS = ["signup_started", "signup_done", "purchase"]
SITE_DOMAIN = "bench.example"

# The same formulas in both engines' SQL, so the two stores hold the same kind of data: ``n``
# is the row number, and visitors, paths, referrers and browsers repeat. The ClickHouse text
# goes through clickhouse-driver's ``%`` formatting, hence ``%%`` for the modulo operator.
CLICKHOUSE_EVENTS_SELECT = """
SELECT
    concat('bench-', toString(intDiv(n, 2000)), ':', toString(n %% 2000), ':0') AS event_uid,
    %(site)s AS site_id,
    toUInt64(%(start_ms)s + intDiv(n * %(span_ms)s, %(total)s)) AS ts,
    toDate(toDateTime(intDiv(ts, 1000))) AS local_day,
    toUInt8(toHour(toDateTime(intDiv(ts, 1000)))) AS local_hour,
    'pixel' AS source,
    multiIf(n %% 10 < 7, 'page_view', n %% 10 = 7, 'custom', n %% 10 = 8, 'click', 'impression')
        AS kind,
    multiIf(kind = 'custom', ['signup_started', 'signup_done', 'purchase'][intDiv(n %% 30, 10) + 1],
            kind) AS name,
    CAST(NULL AS Nullable(String)) AS client_event_id,
    concat('https://bench.example', path) AS url,
    'bench.example' AS host,
    concat('/page/', toString(sipHash64(n) %% 400)) AS path,
    concat('Page ', toString(sipHash64(n) %% 400)) AS title,
    CAST(NULL AS Nullable(String)) AS referrer,
    [NULL, 'google.com', 'news.ycombinator.com', 't.co'][n %% 4 + 1] AS referrer_host,
    ['direct', 'organic_search', 'referral', 'social'][n %% 4 + 1] AS channel,
    CAST(NULL AS Nullable(String)) AS utm_source,
    CAST(NULL AS Nullable(String)) AS utm_medium,
    CAST(NULL AS Nullable(String)) AS utm_campaign,
    CAST(NULL AS Nullable(String)) AS utm_term,
    CAST(NULL AS Nullable(String)) AS utm_content,
    CAST(NULL AS Nullable(String)) AS click_id_type,
    CAST(NULL AS Nullable(String)) AS click_id,
    CAST(NULL AS Nullable(String)) AS campaign,
    CAST(NULL AS Nullable(String)) AS creative,
    CAST(NULL AS Nullable(String)) AS placement,
    CAST(NULL AS Nullable(String)) AS recipient,
    if(name = 'purchase', toFloat64(n %% 100), NULL) AS value,
    if(name = 'purchase', 'EUR', NULL) AS currency,
    CAST(NULL AS Nullable(String)) AS props,
    lower(hex(sipHash64(intDiv(n, 7) %% %(visitors)s))) AS visitor_id,
    concat(visitor_id, '-', toString(intDiv(n, 21))) AS session_id,
    toUInt8(n %% 3 = 0) AS session_start,
    ['Chrome', 'Firefox', 'Safari', 'Edge'][n %% 4 + 1] AS browser,
    '124.0' AS browser_version,
    ['Windows', 'macOS', 'Linux', 'iOS', 'Android'][n %% 5 + 1] AS os,
    '10' AS os_version,
    ['desktop', 'mobile', 'tablet'][n %% 3 + 1] AS device_type,
    toUInt8(n %% 50 = 0) AS is_bot,
    CAST(NULL AS Nullable(String)) AS bot_reason,
    toUInt8(0) AS machine_open,
    concat('10.', toString(n %% 256), '.0.0') AS ip_anon,
    ['NZ', 'DE', 'US', 'FR'][n %% 4 + 1] AS country,
    'granted' AS consent_analytics,
    CAST(NULL AS Nullable(String)) AS consent_ad_storage,
    CAST(NULL AS Nullable(String)) AS consent_ad_user_data,
    CAST(NULL AS Nullable(String)) AS consent_ad_personalization,
    toUInt8(0) AS gpc, toUInt8(0) AS dnt, toUInt8(0) AS cookieless,
    CAST(NULL AS Nullable(String)) AS user_data
FROM (SELECT number + %(offset)s AS n FROM system.numbers LIMIT %(size)s)
"""

SQLITE_EVENTS_INSERT = """
WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < :total - 1)
INSERT INTO events (event_uid, site_id, ts, local_day, local_hour, source, kind, name, url,
    host, path, title, referrer_host, channel, value, currency, visitor_id, session_id,
    session_start, browser, browser_version, os, os_version, device_type, is_bot,
    machine_open, ip_anon, country, consent_analytics)
SELECT 'bench-' || (n / 2000) || ':' || (n % 2000) || ':0', :site, ts,
       date(ts / 1000, 'unixepoch'), CAST(strftime('%H', ts / 1000, 'unixepoch') AS INTEGER),
       'pixel', kind, CASE WHEN kind = 'custom' THEN
           CASE (n % 30) / 10 WHEN 0 THEN 'signup_started' WHEN 1 THEN 'signup_done'
           ELSE 'purchase' END ELSE kind END,
       'https://bench.example/page/' || (n * 2654435761 % 400),
       'bench.example', '/page/' || (n * 2654435761 % 400), 'Page ' || (n * 2654435761 % 400),
       CASE n % 4 WHEN 0 THEN NULL WHEN 1 THEN 'google.com' WHEN 2 THEN 'news.ycombinator.com'
           ELSE 't.co' END,
       CASE n % 4 WHEN 0 THEN 'direct' WHEN 1 THEN 'organic_search' WHEN 2 THEN 'referral'
           ELSE 'social' END,
       CASE WHEN kind = 'custom' AND (n % 30) / 10 = 2 THEN n % 100 END,
       CASE WHEN kind = 'custom' AND (n % 30) / 10 = 2 THEN 'EUR' END,
       printf('%016x', ((n / 7) % :visitors) * 2654435761 % 4294967311),
       printf('%016x', ((n / 7) % :visitors) * 2654435761 % 4294967311) || '-' || (n / 21),
       n % 3 = 0,
       CASE n % 4 WHEN 0 THEN 'Chrome' WHEN 1 THEN 'Firefox' WHEN 2 THEN 'Safari'
           ELSE 'Edge' END, '124.0',
       CASE n % 5 WHEN 0 THEN 'Windows' WHEN 1 THEN 'macOS' WHEN 2 THEN 'Linux'
           WHEN 3 THEN 'iOS' ELSE 'Android' END, '10',
       CASE n % 3 WHEN 0 THEN 'desktop' WHEN 1 THEN 'mobile' ELSE 'tablet' END,
       n % 50 = 0, 0, '10.' || (n % 256) || '.0.0',
       CASE n % 4 WHEN 0 THEN 'NZ' WHEN 1 THEN 'DE' WHEN 2 THEN 'US' ELSE 'FR' END, 'granted'
FROM (SELECT n, :start_ms + n * :span_ms / :total AS ts,
             CASE WHEN n % 10 < 7 THEN 'page_view' WHEN n % 10 = 7 THEN 'custom'
                  WHEN n % 10 = 8 THEN 'click' ELSE 'impression' END AS kind
      FROM seq)
"""

SINGLE_QUERIES = {
    "events by day": "SELECT local_day, COUNT(*) FROM events WHERE site_id = :site_id "
                     "AND local_day >= :from_day AND local_day <= :to_day GROUP BY local_day",
    "unique visitors by day": "SELECT local_day, COUNT(DISTINCT visitor_id) FROM events "
                              "WHERE site_id = :site_id AND local_day >= :from_day "
                              "AND local_day <= :to_day GROUP BY local_day",
    "top pages": "SELECT path, COUNT(*) AS views FROM events WHERE site_id = :site_id "
                 "AND local_day >= :from_day AND local_day <= :to_day AND kind = 'page_view' "
                 "GROUP BY path ORDER BY views DESC, path LIMIT 50",
}


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def trackpixel(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRACKPIXEL_DATA_DIR": str(data_dir)}
    return run([sys.executable, "-m", "trackpixel", *args], env=env)


def best_time(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


# ingest


def pending_rows(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "trackpixel.db", timeout=30)
    cursors = dict(conn.execute("SELECT spool, last_rowid FROM spool_cursors").fetchall())
    conn.close()
    pending = 0
    for path in (data_dir / "spool").glob("*.db"):
        spool = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            row = spool.execute("SELECT seq FROM sqlite_sequence WHERE name = 'hits'").fetchone()
        except sqlite3.OperationalError:
            row = None
        spool.close()
        pending += max(0, (row[0] if row else 0) - cursors.get(path.stem, 0))
    return pending


def ingest(workdir: Path, label: str, store_args: tuple[str, ...], seconds: int,
           count_events: Callable[[str], int]) -> dict[str, float]:
    data_dir = workdir / f"ingest-{label}"
    data_dir.mkdir()
    site = json.loads(trackpixel(data_dir, "sites", "add", "localhost", "--also", "127.0.0.1",
                                 "--format", "json").stdout)["id"]
    port = free_port()
    env = {**os.environ, "TRACKPIXEL_DATA_DIR": str(data_dir)}
    log = open(data_dir / "serve.log", "ab")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "trackpixel", "serve", "--port", str(port),
                               "--workers", "2", *store_args], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        started = time.monotonic()
        result = run([WRK, "--threads", "2", "--connections", "64", "--duration", f"{seconds}s",
                      "--script", str(LUA_SCRIPT), f"http://127.0.0.1:{port}", "--", site, "1"])
        load_s = time.monotonic() - started
        while pending_rows(data_dir) > 0:
            time.sleep(0.2)
        drained_s = time.monotonic() - started
        stored = count_events(site)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=120)
        log.close()
    requests_line = next(line for line in result.stdout.splitlines() if "requests in" in line)
    return {"stored": stored, "load_s": load_s, "drained_s": drained_s,
            "rate": stored / drained_s, "wrk": requests_line.strip()}


# reports


def generate_clickhouse(store: ClickHouseStore, site_id: str, total: int,
                        visitors: int) -> float:
    start_ms = int(datetime.fromisoformat(FIRST_DAY).replace(tzinfo=UTC).timestamp() * 1000)
    params = {"site": site_id, "start_ms": start_ms, "span_ms": DAYS * 86_400_000,
              "total": total, "visitors": visitors}
    started = time.perf_counter()
    chunk = 10_000_000
    for offset in range(0, total, chunk):
        params.update(offset=offset, size=min(chunk, total - offset))
        store.client.execute(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
                             + CLICKHOUSE_EVENTS_SELECT, params,
                             settings={"max_insert_block_size": 1_048_576,
                                       "max_block_size": 65_536})
    return time.perf_counter() - started


def generate_sqlite(path: Path, site_id: str, total: int, visitors: int) -> float:
    start_ms = int(datetime.fromisoformat(FIRST_DAY).replace(tzinfo=UTC).timestamp() * 1000)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                           "AND tbl_name = 'events' AND sql IS NOT NULL").fetchall()
    started = time.perf_counter()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.execute("BEGIN")
    conn.execute(SQLITE_EVENTS_INSERT, {"total": total, "site": site_id, "start_ms": start_ms,
                                        "span_ms": DAYS * 86_400_000, "visitors": visitors})
    conn.execute("COMMIT")
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started


def time_reports(store: Any, site: Any, repeat: int) -> dict[str, float]:
    last_day = (date.fromisoformat(FIRST_DAY) + timedelta(days=DAYS - 1)).isoformat()
    query = ReportQuery(site.id, FIRST_DAY, last_day)
    params = {"site_id": site.id, "from_day": FIRST_DAY, "to_day": last_day}
    steps = [reports.FunnelStep("event", name) for name in FUNNEL_STEPS]
    # The dashboard's overview (with its comparison period), top pages and funnel runners.
    timings = {
        "overview report": best_time(
            lambda: reports.dashboard_overview(store, site, query), repeat),
        "pages report": best_time(lambda: reports.top_pages(store, site, query), repeat),
        "funnel report": best_time(
            lambda: reports.funnel_steps(store, site, query, steps=steps,
                                         window_seconds=30 * 86_400), repeat),
    }
    for name, sql in SINGLE_QUERIES.items():
        timings[name] = best_time(lambda sql=sql: store.query(sql, params), repeat)
    return timings


def clickhouse_disk(store: ClickHouseStore) -> tuple[int, int]:
    rows = store.client.execute(
        "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts WHERE active "
        "AND database = %(db)s AND table = 'events'", {"db": store.url.database})
    return int(rows[0][0]), int(rows[0][1])


class Summary(list[str]):
    """Markdown lines of the result, each also printed as soon as it is measured."""

    def append(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        super().append(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000,
                        help="Events generated in ClickHouse for the report timings.")
    parser.add_argument("--sqlite-events", type=int, default=10_000_000,
                        help="Events generated in SQLite for the report timings (0: skip).")
    parser.add_argument("--visitors", type=int, default=400_000,
                        help="Distinct visitors in the generated events.")
    parser.add_argument("--ingest-seconds", type=int, default=15,
                        help="Seconds of wrk load per backend for the ingest rate (0: skip).")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per timing; best is kept.")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Directory for data [default: a new temporary directory].")
    args = parser.parse_args()

    binary = find_server_binary()
    if binary is None:
        sys.exit("Error: clickhouse-server is not installed; apt-get install clickhouse-server")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="trackpixel-chbench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = ClickHouseServer(workdir / "clickhouse", binary)
    server.start()
    lines = Summary()
    try:
        lines.append(f"- Machine: {platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
                     f"ClickHouse {server.client(None).execute('SELECT version()')[0][0]} "
                     "(Debian package)")
        if args.ingest_seconds:
            url = f"{server.url.rsplit('/', 1)[0]}/ingest"

            def count_clickhouse(site_id: str) -> int:
                store = ClickHouseStore(url, apply_migrations=False)
                count = store.client.execute("SELECT count() FROM events WHERE site_id = "
                                             "%(s)s", {"s": site_id})[0][0]
                store.close()
                return int(count)

            def count_sqlite(site_id: str) -> int:
                conn = sqlite3.connect(workdir / "ingest-sqlite" / "trackpixel.db")
                count = conn.execute("SELECT COUNT(*) FROM events WHERE site_id = ?",
                                     (site_id,)).fetchone()[0]
                conn.close()
                return int(count)

            for label, store_args, counter in (
                    ("sqlite", (), count_sqlite),
                    ("clickhouse", ("--store", url), count_clickhouse)):
                result = ingest(workdir, label, store_args, args.ingest_seconds, counter)
                lines.append(f"- Ingest into {label}, 2 collector processes + processor, "
                             f"{args.ingest_seconds} s of wrk ({result['wrk']}): "
                             f"{result['stored']:,} events stored, drained "
                             f"{result['drained_s']:.1f} s after the load began: "
                             f"**{result['rate']:,.0f} events/s**")

        store = ClickHouseStore(f"{server.url.rsplit('/', 1)[0]}/reports")
        state = SqliteStore(workdir / "sites.db")
        site, _ = add_site(state.conn, SITE_DOMAIN)
        site = get_site(state.conn, site.id)
        generated_s = generate_clickhouse(store, site.id, args.events, args.visitors)
        store.client.execute("OPTIMIZE TABLE events FINAL")
        size, rows = clickhouse_disk(store)
        lines.append(f"- ClickHouse: {rows:,} events generated in {generated_s:.0f} s; "
                     f"{size / 1e9:.2f} GB on disk, **{size / rows:.0f} bytes/event**")
        clickhouse_times = time_reports(store, site, args.repeat)
        sqlite_times: dict[str, float] = {}
        if args.sqlite_events:
            sqlite_path = workdir / "reports.db"
            shutil.copy(workdir / "sites.db", sqlite_path)
            sqlite_store = SqliteStore(sqlite_path)
            sqlite_store.close()
            generated_s = generate_sqlite(sqlite_path, site.id, args.sqlite_events,
                                          args.visitors)
            sqlite_store = SqliteStore(sqlite_path)
            sqlite_size = sqlite_path.stat().st_size
            lines.append(f"- SQLite: {args.sqlite_events:,} events generated and indexed in "
                         f"{generated_s:.0f} s; {sqlite_size / 1e9:.2f} GB, "
                         f"{sqlite_size / args.sqlite_events:.0f} bytes/event")
            sqlite_times = time_reports(sqlite_store, site, args.repeat)
            sqlite_store.close()
        lines.append("")
        lines.append(f"| Query, 30 days | ClickHouse, {args.events:,} events | "
                     f"SQLite, {args.sqlite_events:,} events |")
        lines.append("|---|---:|---:|")
        for name, seconds in clickhouse_times.items():
            other = f"{sqlite_times[name]:.3f} s" if name in sqlite_times else "not run"
            lines.append(f"| {name} | {seconds:.3f} s | {other} |")
        store.close()
        state.close()
    finally:
        server.stop()
    print("\n".join(lines), flush=True)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
