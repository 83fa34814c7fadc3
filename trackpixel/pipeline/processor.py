"""The processor: reads collector spools in batches, enriches hits and writes them to the store.

It runs as its own process beside the collector workers (``trackpixel serve`` starts it) or
alone (``trackpixel process``). For each spool it reads rows after the store's cursor, so a
processor killed mid-batch redoes that batch on restart, and the store's unique event ids keep
the redo from storing anything twice. A spool whose collector has exited is drained, then
deleted.

Events go to the event store (SQLite or ClickHouse); the spool cursors and sessions always go
to the SQLite state store. With ClickHouse, a batch is inserted there first and the cursor
advances afterwards, so delivery is at least once and ``ClickHouseStore.write_batch`` skips
what a replay would store twice. While the event store is unavailable the processor retries
with exponential backoff and the spools keep growing.

Erasure requests and retention (``Maintenance``) delete from whichever store contains the
events; session state and the request log are always in SQLite.
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
from trackpixel.pipeline.scrub import scrub_bytes, scrub_text
from trackpixel.pipeline.steps import Context, SessionTracker, enrich
from trackpixel.pipeline.userdata import redact_json_body
from trackpixel.sites import SiteCache
from trackpixel.spool import SpoolHit, owner_alive, read_hits, spool_files
from trackpixel.storage.records import (
    EventRow,
    EventStore,
    ProcessedBatch,
    RejectedRow,
    StoreUnavailable,
)
from trackpixel.storage.sqlite import SqliteStore, connect
from trackpixel.vocab import Source

log = logging.getLogger("trackpixel.processor")

BATCH_ROWS = 2000
IDLE_SLEEP_S = 0.05
MAX_RAW_BYTES = 65536
# Delays between attempts while the event store is unavailable, in seconds.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# Sources whose payload is a JSON body that may carry contact details.
_JSON_SOURCES = (Source.BEACON.value, Source.API.value)


@dataclass
class Totals:
    events: int = 0
    rejected: int = 0
    duplicates: int = 0


class Processor:
    """Turns spooled hits into events; ``state`` keeps cursors and sessions, ``events`` the
    events and rejected hits (the state store itself when none is given)."""

    def __init__(self, data_dir: DataDir, state: SqliteStore,
                 events: EventStore | None = None) -> None:
        self.data_dir = data_dir
        self.state = state
        self.events: EventStore = events if events is not None else state
        self.secret = data_dir.secret()
        settings = data_dir.settings()
        self._session_timeout_ms = settings.session_timeout_minutes * 60_000
        self.context = Context(sites=SiteCache(state.conn),
                               sessions=self._new_session_tracker())
        self.totals = Totals()
        self.retries = 0
        self._readers: dict[str, sqlite3.Connection] = {}
        self._retry_delay = 0.0
        self._retry_at = 0.0
        self.maintenance = Maintenance(state.conn, self._open_spools, self.events)

    def _new_session_tracker(self) -> SessionTracker:
        return SessionTracker(self.state.load_sessions, self._session_timeout_ms)

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
        if time.monotonic() < self._retry_at:
            return 0
        handled = 0
        for name, path in list(spool_files(self.data_dir.spool_dir)):
            try:
                handled += self._drain_spool(name, path)
            except sqlite3.Error as exc:
                log.error("spool %s: processing failed, will retry: %s", name, exc)
                self._drop_reader(name)
                # The failed batch may have advanced the in-memory sessions, and the retry
                # must assign the same sessions and session starts as a first attempt.
                self.context.sessions = self._new_session_tracker()
            except StoreUnavailable as exc:
                self._schedule_retry(name, exc)
                return 0
        if self._retry_delay:
            log.info("event store available again after %d retries", self.retries)
            self._retry_delay = 0.0
            self.retries = 0
        return handled

    def _schedule_retry(self, spool: str, error: StoreUnavailable) -> None:
        """Wait before the next attempt, doubling the wait up to ``RETRY_MAX_S``."""
        self._retry_delay = min(RETRY_MAX_S, self._retry_delay * 2 or RETRY_FIRST_S)
        self._retry_at = time.monotonic() + self._retry_delay
        self.retries += 1
        # The failed batch advanced the in-memory sessions; start again from the stored ones
        # so the retry assigns the same sessions as the first attempt.
        self.context.sessions = self._new_session_tracker()
        log.warning("spool %s: event store unavailable (retry %d in %.1f s): %s",
                    spool, self.retries, self._retry_delay, error)

    def _drain_spool(self, name: str, path: Path) -> int:
        reader = self._readers.get(name)
        if reader is None:
            reader = self._readers[name] = connect(path, readonly=True)
        cursor = self.state.spool_cursor(name)
        rows = read_hits(reader, cursor, BATCH_ROWS)
        if rows:
            batch = self.process(name, rows)
            result = self.events.write_batch(batch)
            if not self.events.stores_progress:
                try:
                    self.state.save_progress(batch)
                except BaseException:
                    # The batch is in the event store but the cursor did not move, so the
                    # next read of this spool replays it and the store must check for that.
                    self.events.expect_replay(name)
                    raise
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
            # A site id read from a request is kept only when that site exists, so a request
            # cannot file rejections under ids of its choosing.
            if item.site_id is not None and self.context.sites.get(item.site_id) is None:
                item.site_id = None
            rejected.append(_rejection(row, spool, index, item))
        return ProcessedBatch(spool=spool, last_rowid=rows[-1].rowid, events=events,
                              rejected=rejected, sessions=self.context.sessions.take_changes())

    def _open_spools(self) -> list[tuple[sqlite3.Connection, int]]:
        return [(reader, self.state.spool_cursor(name)) for name, reader in self._readers.items()]

    def _retire(self, name: str, path: Path) -> None:
        """Delete a fully processed spool whose collector has exited."""
        self._drop_reader(name)
        for suffix in (".db", ".db-wal", ".db-shm", ".lock"):
            path.with_suffix(suffix).unlink(missing_ok=True)
        self.state.forget_spool(name)
        log.info("spool %s drained and removed", name)

    def _drop_reader(self, name: str) -> None:
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        for name in list(self._readers):
            self._drop_reader(name)


def _rejection(row: SpoolHit, spool: str, index: int, error: InvalidHit) -> RejectedRow:
    raw = None
    if error.keep_raw:
        raw = row.payload or b""
        # The collector hashed contact details before the spool write; this repeats it for
        # rows spooled by an older version. The cut comes after, so it cannot leave part of
        # an address behind.
        raw = redact_json_body(raw) if row.source in _JSON_SOURCES and raw else scrub_bytes(raw)
        raw = raw[:MAX_RAW_BYTES]
    return RejectedRow(
        hit_uid=f"{spool}:{row.rowid}:r{index}",
        received_ts=row.received_ts,
        source=row.source,
        site_id=error.site_id,
        reason=error.reason.value,
        # A validation message may quote a field name or value the hit carried.
        detail=scrub_text(error.detail)[:1000],
        raw=raw,
        user_agent=row.user_agent if error.keep_raw else None,
    )


def run_processor(data_dir: DataDir, stop: threading.Event | None = None,
                  parent_pid: int | None = None, store_url: str = "sqlite") -> None:
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
    state = SqliteStore(data_dir.db_path)
    events = _open_with_retry(store_url, state, stop)
    if events is None:
        state.close()
        return
    Processor(data_dir, state, events).run(stop)
    if events is not state:
        events.close()
    state.close()


def _open_with_retry(store_url: str, state: SqliteStore,
                     stop: threading.Event) -> EventStore | None:
    """Open the event store, retrying with backoff while it is unavailable; None if stopped.

    The first attempt is made even when ``stop`` is already set, as for a final drain."""
    from trackpixel.storage.backends import open_event_store

    delay = RETRY_FIRST_S
    attempt = 0
    while True:
        try:
            return open_event_store(store_url, state)
        except StoreUnavailable as exc:
            if stop.is_set():
                log.warning("event store unavailable while stopping: %s", exc)
                return None
            attempt += 1
            log.warning("event store unavailable at start (retry %d in %.1f s): %s",
                        attempt, delay, exc)
            stop.wait(delay)
            delay = min(RETRY_MAX_S, delay * 2)
