"""The processor: reads collector spools in batches, enriches hits and writes them to the store.

It runs as its own process beside the collector workers (``trackpixel serve`` starts it) or
alone (``trackpixel process``). For each spool it reads rows after the store's cursor, so a
processor killed mid-batch redoes that batch on restart, and the store's unique event ids keep
the redo from storing anything twice. A spool whose collector has exited is drained, then
deleted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from trackpixel.config import DataDir
from trackpixel.pipeline.hit import Hit, InvalidHit, parse_spool_hit
from trackpixel.pipeline.maintenance import Maintenance
from trackpixel.pipeline.scrub import scrub_bytes
from trackpixel.pipeline.steps import Context, SessionTracker, enrich
from trackpixel.sites import SiteCache
from trackpixel.spool import SpoolHit, owner_alive, read_hits, spool_files
from trackpixel.storage.records import EventRow, ProcessedBatch, RejectedRow
from trackpixel.storage.sqlite import SqliteStore, connect

log = logging.getLogger("trackpixel.processor")

BATCH_ROWS = 2000
IDLE_SLEEP_S = 0.05
MAX_RAW_BYTES = 65536


@dataclass
class Totals:
    events: int = 0
    rejected: int = 0
    duplicates: int = 0


class Processor:
    def __init__(self, data_dir: DataDir, store: SqliteStore) -> None:
        self.data_dir = data_dir
        self.store = store
        self.secret = data_dir.secret()
        settings = data_dir.settings()
        self.context = Context(
            sites=SiteCache(store.conn),
            sessions=SessionTracker(store.load_sessions,
                                    settings.session_timeout_minutes * 60_000),
        )
        self.totals = Totals()
        self._readers: dict[str, sqlite3.Connection] = {}
        self.maintenance = Maintenance(store.conn, self._open_spools)

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set, then drain what is already spooled."""
        log.info("processor started on %s", self.data_dir.root)
        while not stop.is_set():
            handled = self.drain_once()
            self.maintenance.run_due()
            if handled == 0:
                stop.wait(IDLE_SLEEP_S)
        while self.drain_once():
            pass
        self.maintenance.apply_erasures()
        self.close()
        log.info("processor stopped: %d events, %d rejected, %d duplicates",
                 self.totals.events, self.totals.rejected, self.totals.duplicates)

    def drain_once(self) -> int:
        """Process at most one batch from every spool; return the number of rows read."""
        handled = 0
        for name, path in list(spool_files(self.data_dir.spool_dir)):
            try:
                handled += self._drain_spool(name, path)
            except sqlite3.Error as exc:
                log.error("spool %s: processing failed, will retry: %s", name, exc)
                self._drop_reader(name)
        return handled

    def _drain_spool(self, name: str, path: Path) -> int:
        reader = self._readers.get(name)
        if reader is None:
            reader = self._readers[name] = connect(path, readonly=True)
        cursor = self.store.spool_cursor(name)
        rows = read_hits(reader, cursor, BATCH_ROWS)
        if rows:
            batch = self.process(name, rows)
            result = self.store.write_batch(batch)
            self.totals.events += result.stored
            self.totals.rejected += result.rejected
            self.totals.duplicates += result.duplicates
            return len(rows)
        if not owner_alive(self.data_dir.spool_dir, name):
            self._retire(name, path)
        return 0

    def process(self, spool: str, rows: list[SpoolHit]) -> ProcessedBatch:
        """Parse and enrich consecutive spool rows into one batch for the store."""
        parsed: list[tuple[SpoolHit, Hit | InvalidHit]] = []
        for row in rows:
            for item in parse_spool_hit(row, spool, self.secret):
                parsed.append((row, item))

        events: list[EventRow] = []
        rejected: list[RejectedRow] = []
        for index, (row, item) in enumerate(parsed):
            if isinstance(item, Hit):
                try:
                    events.append(enrich(item, self.context))
                    continue
                except InvalidHit as exc:
                    item = exc
            rejected.append(_rejection(row, spool, index, item))
        return ProcessedBatch(spool=spool, last_rowid=rows[-1].rowid, events=events,
                              rejected=rejected, sessions=self.context.sessions.take_changes())

    def _open_spools(self) -> list[tuple[sqlite3.Connection, int]]:
        return [(reader, self.store.spool_cursor(name)) for name, reader in self._readers.items()]

    def _retire(self, name: str, path: Path) -> None:
        """Delete a fully processed spool whose collector has exited."""
        self._drop_reader(name)
        for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
            path.with_suffix(suffix).unlink(missing_ok=True)
        self.store.forget_spool(name)
        log.info("spool %s drained and removed", name)

    def _drop_reader(self, name: str) -> None:
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        for name in list(self._readers):
            self._drop_reader(name)


def _rejection(row: SpoolHit, spool: str, index: int, error: InvalidHit) -> RejectedRow:
    return RejectedRow(
        hit_uid=f"{spool}:{row.rowid}:r{index}",
        received_ts=row.received_ts,
        source=row.source,
        site_id=error.site_id,
        reason=error.reason.value,
        detail=error.detail[:1000],
        raw=scrub_bytes((row.payload or b"")[:MAX_RAW_BYTES]) if error.keep_raw else None,
        user_agent=row.user_agent if error.keep_raw else None,
    )


def run_processor(data_dir: DataDir, stop: threading.Event | None = None,
                  parent_pid: int | None = None) -> None:
    """Entry point for the processor process; exits when ``parent_pid`` is gone."""
    import os

    stop = stop or threading.Event()
    if parent_pid is not None:
        def watch_parent() -> None:
            while not stop.is_set():
                if os.getppid() != parent_pid:
                    log.warning("parent process %d exited; processor stopping", parent_pid)
                    stop.set()
                time.sleep(0.5)
        threading.Thread(target=watch_parent, daemon=True, name="parent-watch").start()
    store = SqliteStore(data_dir.db_path)
    Processor(data_dir, store).run(stop)
    store.close()
