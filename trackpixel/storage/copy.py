"""``trackpixel migrate``: copy events and rejected hits from a SQLite store into ClickHouse.

The copy reads rows in ``id`` order and records the last copied id per table in the
ClickHouse table ``copy_checkpoints`` after each insert. Run again after an interruption, it
continues after the checkpoint. The batch that was in flight when it stopped may already be
in ClickHouse, so ``ClickHouseStore.write_batch`` checks for its ids and skips those it finds.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from trackpixel.storage.clickhouse import ClickHouseStore
from trackpixel.storage.records import (
    EVENT_COLUMNS,
    REJECTED_COLUMNS,
    EventRow,
    ProcessedBatch,
    RejectedRow,
)
from trackpixel.storage.sqlite import connect


def parse_sqlite_source(source: str) -> Path:
    """Return the database path of a ``sqlite:PATH`` store name."""
    if not source.startswith("sqlite:"):
        raise ValueError(f"invalid source store {source!r}: expected sqlite:PATH")
    path = Path(source.removeprefix("sqlite:")).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"source database {path} not found")
    return path


def copy_store(source: str, target: str, *, batch_rows: int = 50_000,
               console: Console | None = None) -> dict[str, int]:
    """Copy what the checkpoint has not yet covered; return the rows copied per table."""
    path = parse_sqlite_source(source)
    if not target.startswith("clickhouse://"):
        raise ValueError(f"invalid target store {target!r}: expected clickhouse://HOST:PORT/DB")
    reader = connect(path, readonly=True)
    store = ClickHouseStore(target)
    copied = {}
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console or Console(stderr=True)) as bar:
            copied["events"] = _copy_table(reader, store, str(path), "events", batch_rows, bar)
            copied["rejected_hits"] = _copy_table(reader, store, str(path), "rejected_hits",
                                                  batch_rows, bar)
    finally:
        reader.close()
        store.close()
    return copied


def _copy_table(reader: sqlite3.Connection, store: ClickHouseStore, source: str, table: str,
                batch_rows: int, bar: Progress) -> int:
    columns = EVENT_COLUMNS if table == "events" else REJECTED_COLUMNS
    last_id = checkpoint(store, source, table)
    remaining = reader.execute(f"SELECT COUNT(*) FROM {table} WHERE id > ?",
                               (last_id,)).fetchone()[0]
    task = bar.add_task(f"{table} after id {last_id}", total=remaining)
    copied = 0
    while True:
        rows = reader.execute(
            f"SELECT id, {', '.join(columns)} FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
            (last_id, batch_rows)).fetchall()
        if not rows:
            return copied
        if table == "events":
            batch = ProcessedBatch(spool=f"copy:{source}", last_rowid=rows[-1][0],
                                   events=[EventRow(*row[1:]) for row in rows], rejected=[],
                                   sessions=[])
        else:
            batch = ProcessedBatch(spool=f"copy:{source}", last_rowid=rows[-1][0], events=[],
                                   rejected=[RejectedRow(*row[1:]) for row in rows],
                                   sessions=[])
        store.write_batch(batch)
        last_id = rows[-1][0]
        store.execute("INSERT INTO copy_checkpoints (source, table_name, last_id, updated) "
                      "VALUES", [(source, table, last_id, datetime.now())])
        copied += len(rows)
        bar.advance(task, len(rows))


def checkpoint(store: ClickHouseStore, source: str, table: str) -> int:
    """Return the last ``id`` of ``table`` copied from ``source`` (0 before the first copy)."""
    rows = store.execute("SELECT max(last_id) FROM copy_checkpoints "
                         "WHERE source = %(source)s AND table_name = %(table)s",
                         {"source": source, "table": table})
    return int(rows[0][0] or 0)
