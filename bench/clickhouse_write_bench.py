"""Time the ClickHouse store's write path: events stored in processor-sized batches, in
microseconds per event, without the rows the store writes after each batch, with the
``session_totals`` refresh, and with that refresh and the ``visitor_days`` rows.

Events come from ``generate_rows`` of bench/dashboard_bench.py and are sorted by time, so
each batch mixes the events of many open sessions, as live traffic does. Each run writes
into a new database on the server (``--url``, or Debian's ``clickhouse-server`` started on
free 127.0.0.1 ports under a temporary directory and stopped at the end).

    .venv/bin/python bench/clickhouse_write_bench.py --events 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

from clickhouse_fixtures import ClickHouseServer, find_server_binary  # noqa: E402
from dashboard_bench import generate_rows  # noqa: E402

from trackpixel.storage.clickhouse import ClickHouseStore  # noqa: E402
from trackpixel.storage.records import EVENT_COLUMNS, EventRow, ProcessedBatch  # noqa: E402


def time_writes(url: str, events: list[EventRow], batch: int,
                parts: tuple[str, ...]) -> tuple[float, dict[str, float]]:
    """Store ``events`` in batches into the empty database of ``url``, running only the
    after-batch steps named in ``parts`` (``_refresh_sessions``, ``link_visitor_days``);
    return the total seconds and the seconds spent in each step."""
    store = ClickHouseStore(url)
    spent = dict.fromkeys(STEPS, 0.0)

    def timed(name: str) -> Any:
        step = getattr(store, name)

        def run(touched: list[EventRow]) -> None:
            started = time.perf_counter()
            if name in parts:
                step(touched)
            spent[name] += time.perf_counter() - started
        return run

    for name in STEPS:
        setattr(store, name, timed(name))
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        store.write_batch(ProcessedBatch("spool", start, events[start:start + batch], [], []))
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed, spent


STEPS = ("_refresh_sessions", "link_visitor_days")
RUNS = (("no rows after batches", ()), ("session rows", STEPS[:1]),
        ("session and visitor rows", STEPS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2000,
                        help="Events per stored batch (the processor reads 2000 hits).")
    parser.add_argument("--url", default=None,
                        help="A running server, clickhouse://HOST:PORT; each run creates its "
                             "own database there.")
    args = parser.parse_args()

    events = [EventRow(**dict(zip(EVENT_COLUMNS, row, strict=True)))
              for row in generate_rows(args.events, args.days, date(2025, 3, 31), seed=1)]
    events.sort(key=lambda event: event.ts)
    server = None
    base = args.url
    with tempfile.TemporaryDirectory() as directory:
        if base is None:
            binary = find_server_binary()
            if binary is None:
                sys.exit("Error: clickhouse-server is not installed; "
                         "apt-get install clickhouse-server")
            server = ClickHouseServer(Path(directory), binary)
            server.start()
            base = f"clickhouse://127.0.0.1:{server.tcp_port}"
        try:
            stamp = time.time_ns()
            for index, (label, parts) in enumerate(RUNS):
                url = f"{base.rstrip('/')}/write_bench_{index}_{stamp}"
                elapsed, spent = time_writes(url, events, args.batch, parts)
                steps = ", ".join(f"{spent[name] / len(events) * 1e6:.0f} µs in {name}"
                                  for name in parts)
                print(f"{len(events)} events in batches of {args.batch}, {label}: "
                      f"{elapsed:.1f} s, {elapsed / len(events) * 1e6:.0f} µs per event"
                      + (f" ({steps})" if steps else ""))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
