"""Time the SQLite store's write path: events stored in processor-sized batches, with the
report rollups maintained in the same transactions, in microseconds per event.

Events come from ``generate_rows`` of bench/dashboard_bench.py and are sorted by time, so
each batch mixes the events of many open sessions, as live traffic does. ``--no-rollups``
measures the same writes without the rollups, as the reference.

    .venv/bin/python bench/store_write_bench.py --events 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dashboard_bench import SITE_ID, ZONE, generate_rows

from trackpixel.storage import rollups
from trackpixel.storage.records import EVENT_COLUMNS, EventRow, ProcessedBatch
from trackpixel.storage.sqlite import SqliteStore


def time_writes(events: list[EventRow], batch: int) -> tuple[float, list[tuple[int, float]]]:
    """Store ``events`` in batches into a new database; return the total seconds and the
    (events stored, seconds) marks at each quarter."""
    marks = []
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "trackpixel.db")
        store.conn.execute(
            "INSERT INTO sites (id, domain, allowed_domains, timezone, api_key_hash, cookies, "
            "created_ts) VALUES (?, 'bench.example', '[]', ?, '', 1, 0)", (SITE_ID, ZONE))
        quarter = max(1, len(events) // batch // 4)
        started = time.perf_counter()
        for start in range(0, len(events), batch):
            store.write_batch(ProcessedBatch("spool", start, events[start:start + batch], [], []))
            if (start // batch + 1) % quarter == 0:
                marks.append((start + batch, time.perf_counter() - started))
        elapsed = time.perf_counter() - started
        store.close()
    return elapsed, marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500, help="Events per stored batch.")
    parser.add_argument("--no-rollups", action="store_true",
                        help="Store the events without maintaining the rollups.")
    args = parser.parse_args()
    if args.no_rollups:
        rollups.apply_events = lambda conn, events: None

    events = [EventRow(**dict(zip(EVENT_COLUMNS, row, strict=True)))
              for row in generate_rows(args.events, args.days, date(2025, 3, 31), seed=1)]
    events.sort(key=lambda event: event.ts)
    elapsed, marks = time_writes(events, args.batch)

    label = "without rollups" if args.no_rollups else "with rollups"
    print(f"{len(events)} events in batches of {args.batch}, {label}: {elapsed:.1f} s, "
          f"{elapsed / len(events) * 1e6:.0f} µs per event")
    previous_count, previous_time = 0, 0.0
    for count, seconds in marks:
        rate = (seconds - previous_time) / (count - previous_count) * 1e6
        print(f"  events {previous_count}-{count}: {rate:.0f} µs per event")
        previous_count, previous_time = count, seconds

if __name__ == "__main__":
    main()
