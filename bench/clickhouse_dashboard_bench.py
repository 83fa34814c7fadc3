"""Time every dashboard view on the ClickHouse event store.

Loads the events of bench/dashboard_bench.py (``generate_rows``: by default 10 million over
60 local days, seed 7, last day 2025-03-31) into the trackpixel ClickHouse schema, then runs
each report of the dashboard's views for the last 30 days, once cold and ``--repeat`` times
warm, and prints the times as a Markdown table.

    .venv/bin/python bench/clickhouse_dashboard_bench.py --workdir /tmp/tp-ch-dashboard

Unless ``--url`` names a running server, Debian's ``clickhouse-server`` is started on
127.0.0.1 (``--port``, the two ports after it for HTTP and replication) with its data under
``--workdir``, and stopped at the end. The data stays there: a later run with the same
``--workdir`` finds the events already stored and skips loading. ``--sqlite-db`` names a
database made by bench/dashboard_bench.py with the same events; every view's rows are then
compared with what that database returns. ``--chdb`` then copies the events into chdb, the
current ClickHouse engine run in-process, and times every view there too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO_ROOT))

from clickhouse_fixtures import ClickHouseServer, find_server_binary  # noqa: E402
from dashboard_bench import SITE_ID, ZONE, ReadStore, generate_rows, views  # noqa: E402

from trackpixel.reports.queries import ReportQuery  # noqa: E402
from trackpixel.sites import Site, get_site  # noqa: E402
from trackpixel.storage.clickhouse import INSERT_COLUMNS, ClickHouseStore  # noqa: E402
from trackpixel.storage.clickhouse_schema import (  # noqa: E402
    MIGRATIONS,
    fill_written_tables,
    table_names,
)
from trackpixel.storage.records import EVENT_COLUMNS  # noqa: E402
from trackpixel.storage.rollups import property_items  # noqa: E402
from trackpixel.storage.sqlite import connect, migrate  # noqa: E402

END_DAY = date(2025, 3, 31)
INSERT_CHUNK = 200_000
_LOCAL_DAY = EVENT_COLUMNS.index("local_day")
_PROPS = EVENT_COLUMNS.index("props")


class TimedStore:
    """A ClickHouse store that records how long each query takes, to name the slowest."""

    dialect = "clickhouse"

    def __init__(self, store: Any) -> None:
        self.store = store
        self.timings: list[tuple[float, str]] = []

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        started = time.perf_counter()
        rows = self.store.query(sql, params)
        self.timings.append((time.perf_counter() - started, " ".join(sql.split())))
        return rows


def load_events(store: ClickHouseStore, count: int, days: int) -> None:
    """Insert ``count`` generated events, replacing whatever the site had."""
    store.execute("ALTER TABLE events DELETE WHERE site_id = %(site)s", {"site": SITE_ID})
    store.execute("OPTIMIZE TABLE events FINAL")
    insert = f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) VALUES"
    rows = generate_rows(count, days, END_DAY, seed=7)
    started = time.perf_counter()
    done = 0
    while True:
        chunk = []
        for _, row in zip(range(INSERT_CHUNK), rows, strict=False):
            values = list(row)
            values[_LOCAL_DAY] = date.fromisoformat(values[_LOCAL_DAY])
            # The property arrays, as ClickHouseStore computes them when it inserts an event.
            props = values[_PROPS]
            items = property_items(props) if props is not None else []
            values.append([key for key, _ in items])
            values.append([text for _, text in items])
            chunk.append(values)
        if not chunk:
            break
        store.execute(insert, chunk)
        done += len(chunk)
        if done % 1_000_000 == 0:
            print(f"  {done} events, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    # The store computes session rows after each batch it writes; these events bypass it.
    for statement in fill_written_tables(store.url.database):
        store.execute(statement)
    # Merged parts are what a server that has been running for a while reads.
    for table in store_tables(store):
        store.execute(f"OPTIMIZE TABLE {table} FINAL")
    print(f"  loaded and merged in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def store_tables(store: ClickHouseStore) -> list[str]:
    """Return the MergeTree tables of the store's database."""
    rows = store.execute("SELECT name FROM system.tables WHERE database = %(db)s "
                         "AND engine LIKE '%%MergeTree'", {"db": store.url.database})
    return sorted(str(row[0]) for row in rows)


def bench_site(path: Path) -> Site:
    """Return the benchmark site from a small SQLite file that contains only it."""
    conn = connect(path)
    migrate(conn)
    conn.execute(
        "INSERT OR IGNORE INTO sites (id, domain, allowed_domains, timezone, api_key_hash, "
        "cookies, created_ts) VALUES (?, 'bench.example', '[\"bench.example\"]', ?, '', 1, 0)",
        (SITE_ID, ZONE))
    conn.commit()
    site = get_site(conn, SITE_ID)
    conn.close()
    assert site is not None
    return site


def time_report(runner: Callable[..., Any], store: TimedStore, site: Site, query: ReportQuery,
                options: dict[str, Any], repeat: int) -> tuple[float, float, Any, float, str]:
    """Return the first run's time, the median of ``repeat`` further runs, the last result,
    and the slowest query of the last run with its time."""
    timings = []
    result = None
    for _ in range(1 + repeat):
        store.timings.clear()
        started = time.perf_counter()
        result = runner(store, site, query, **options)
        timings.append(time.perf_counter() - started)
    slowest, text = max(store.timings) if store.timings else (0.0, "")
    warm = statistics.median(timings[1:]) if repeat else timings[0]
    return timings[0], warm, result, slowest, text


def disk_use(store: ClickHouseStore) -> list[tuple[str, int, int]]:
    rows = store.execute(
        "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active "
        "AND database = %(db)s GROUP BY table ORDER BY table", {"db": store.url.database})
    return [(str(table), int(count), int(size)) for table, count, size in rows]


def _filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid filter {text!r}: expected KEY=VALUE")
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--range-days", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/trackpixel-ch-dashboard"))
    parser.add_argument("--port", type=int, default=9401,
                        help="TCP port of the server started here; HTTP and replication use "
                             "the next two.")
    parser.add_argument("--url", default=None,
                        help="Use this running server (clickhouse://HOST:PORT/DATABASE) "
                             "instead of starting one.")
    parser.add_argument("--repeat", type=int, default=3, help="Timed runs after the first.")
    parser.add_argument("--reload", action="store_true",
                        help="Load the events even when the table already contains them.")
    parser.add_argument("--sqlite-db", type=Path, default=None,
                        help="A bench/dashboard_bench.py database of the same events whose "
                             "results every view must equal.")
    parser.add_argument("--queries", action="store_true",
                        help="Also print the slowest query of each report.")
    parser.add_argument("--filter", action="append", default=[], type=_filter,
                        metavar="KEY=VALUE",
                        help="Apply a dashboard filter to every report, e.g. country=DE; "
                             "repeat for more.")
    parser.add_argument("--chdb", action="store_true",
                        help="Also copy the events into chdb and time every view there.")
    args = parser.parse_args()
    if args.chdb and args.url:
        sys.exit("Error: --chdb copies from the server started here, so it cannot be used "
                 "with --url")

    server = None
    url = args.url
    if url is None:
        binary = find_server_binary()
        if binary is None:
            sys.exit("Error: clickhouse-server is not installed; "
                     "apt-get install clickhouse-server")
        server = ClickHouseServer(args.workdir / "clickhouse", binary, tcp_port=args.port,
                                  http_port=args.port + 1, interserver_port=args.port + 2)
        server.start()
        url = server.url
    try:
        run_bench(args, url)
        if args.chdb:
            run_chdb(args, f"http://127.0.0.1:{args.port + 1}/")
    finally:
        if server is not None:
            server.stop()


def print_views(timed: TimedStore, expected_store: ReadStore | None, site: Site,
                query: ReportQuery, args: argparse.Namespace) -> None:
    """Time every report of every view and print them as a Markdown table."""
    compare = " equal to SQLite |" if expected_store else ""
    print(f"| view | report | first run (s) | median (s) | slowest query (s) |{compare}")
    print("| --- | --- | --- | --- | --- |" + (" --- |" if expected_store else ""))
    slow_queries: list[tuple[float, str, str]] = []
    for view, reports in views(query).items():
        view_first = view_total = 0.0
        for label, runner, options in reports:
            first, warm, result, slowest, text = time_report(runner, timed, site, query,
                                                             options, args.repeat)
            view_first += first
            view_total += warm
            slow_queries.append((slowest, f"{view} / {label}", text))
            verdict = ""
            if expected_store is not None:
                expected = runner(expected_store, site, query, **options)
                same = expected.rows == result.rows and expected.columns == result.columns
                verdict = f" {'yes' if same else '**NO**'} |"
            print(f"| {view} | {label} | {first:.3f} | {warm:.3f} | {slowest:.3f} |{verdict}",
                  flush=True)
        print(f"| **{view}** | **whole view** | {view_first:.3f} | **{view_total:.3f}** | |"
              + (" |" if expected_store else ""), flush=True)
    if args.queries:
        print()
        for seconds, where, text in sorted(slow_queries, reverse=True):
            print(f"- {seconds:.3f} s, {where}: `{text[:400]}`")


def run_bench(args: argparse.Namespace, url: str) -> None:
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store = ClickHouseStore(url)
    print(f"schema ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    stored = store.execute("SELECT count() FROM events WHERE site_id = %(site)s",
                           {"site": SITE_ID})[0][0]
    if args.reload or stored != args.events:
        print(f"loading {args.events} events ({stored} stored)", file=sys.stderr)
        load_events(store, args.events, args.days)
    site = bench_site(args.workdir / "sites.db")
    expected_store = ReadStore(args.sqlite_db) if args.sqlite_db else None
    from_day = (END_DAY - timedelta(days=args.range_days - 1)).isoformat()
    query = ReportQuery(SITE_ID, from_day, END_DAY.isoformat(), limit=50,
                        filters=dict(args.filter))
    version = store.execute("SELECT version()")[0][0]
    stored = store.execute("SELECT count() FROM events WHERE site_id = %(site)s",
                           {"site": SITE_ID})[0][0]

    print(f"ClickHouse {version}, {os.cpu_count()} CPUs ({platform.machine()}), "
          f"{stored} events, range {query.from_day} to {query.to_day}, filters {query.filters}")
    for table, rows, size in disk_use(store):
        print(f"- {table}: {rows} rows, {size / 1e6:.0f} MB on disk")
    print()
    print_views(TimedStore(store), expected_store, site, query, args)
    store.close()


def run_chdb(args: argparse.Namespace, http_url: str) -> None:
    """Copy the server's events into an in-process chdb session and time every view there."""
    import chdb
    from test_clickhouse_chdb import ChdbStore

    engine = ChdbStore()
    engine.run("CREATE DATABASE IF NOT EXISTS trackpixel")
    names = table_names("trackpixel", None)
    for migration in MIGRATIONS:
        for statement in migration.local:
            engine.run(statement.format(**names))
    engine.run("USE trackpixel")
    started = time.perf_counter()
    # The old server's native protocol rejects a current client's settings, so the rows go
    # through its HTTP interface as tab-separated text.
    columns = ", ".join(INSERT_COLUMNS)
    for table, selected in (("events", columns), ("rejected_hits", "*")):
        target = args.workdir / f"chdb-{table}.tsv"
        select = f"SELECT {selected} FROM trackpixel.{table} FORMAT TabSeparated"
        with urllib.request.urlopen(http_url + "?" + urllib.parse.urlencode(
                {"query": select})) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out)
        into = f"trackpixel.events ({columns})" if table == "events" else f"trackpixel.{table}"
        engine.run(f"INSERT INTO {into} FROM INFILE '{target}' FORMAT TabSeparated")
        target.unlink()
    for statement in fill_written_tables("trackpixel"):
        engine.run(statement)
    for table in ("events", "session_events", "page_events", "session_totals"):
        engine.run(f"OPTIMIZE TABLE trackpixel.{table} FINAL")
    version = engine.query("SELECT version()", {})[0][0]
    print(f"\nchdb {chdb.__version__}, ClickHouse engine {version}: events copied in "
          f"{time.perf_counter() - started:.0f} s\n")
    site = bench_site(args.workdir / "sites.db")
    from_day = (END_DAY - timedelta(days=args.range_days - 1)).isoformat()
    query = ReportQuery(SITE_ID, from_day, END_DAY.isoformat(), limit=50,
                        filters=dict(args.filter))
    expected_store = ReadStore(args.sqlite_db) if args.sqlite_db else None
    print_views(TimedStore(engine), expected_store, site, query, args)
    engine.close()


if __name__ == "__main__":
    main()
