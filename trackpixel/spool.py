"""The collector's durable spool: acknowledged raw hits waiting for the processor.

Each collector process owns one spool file, ``spool/<host>-<pid>-<random>.db``, and holds an
exclusive ``flock`` on ``<name>.lock`` while it runs. Request handlers hand rows to one writer
thread, which inserts everything queued so far in a single transaction (group commit) and only
then lets the handlers answer. The processor reads the spool with its own connection, and the
writer deletes rows that the processor's cursor has passed.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trackpixel.storage.sqlite import connect

log = logging.getLogger("trackpixel.spool")

SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused after a trim
    received_ts INTEGER NOT NULL,          -- UTC milliseconds
    source TEXT NOT NULL,
    payload BLOB,                          -- query string or request body as received
    user_agent TEXT,
    ip_anon TEXT,                          -- already anonymised: the raw IP never reaches disk
    device_key TEXT,                       -- daily-salted hash of IP and user agent
    meta TEXT                              -- JSON: request headers of interest, reject reason
)
"""

INSERT_HIT = (
    "INSERT INTO hits (received_ts, source, payload, user_agent, ip_anon, device_key, meta) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

MAX_GROUP = 4096
TRIM_INTERVAL_S = 2.0
# The meta of a hit recorded in place of one that did not fit under ``max_spool_rows``.
_SPOOL_FULL_META = ('{{"reject": "spool_full", "detail": "spool held {limit} unprocessed rows '
                    '(max_spool_rows); the hit was not kept"}}')


class SpoolError(Exception):
    """A hit could not be committed to the spool."""


@dataclass(slots=True)
class SpoolHit:
    """One row of a spool, as the processor reads it."""

    rowid: int
    received_ts: int
    source: str
    payload: bytes
    user_agent: str | None
    ip_anon: str | None
    device_key: str | None
    meta: str | None


HitRow = tuple[int, str, bytes, str | None, str | None, str | None, str | None]
_Pending = tuple[HitRow, asyncio.Future[None], asyncio.AbstractEventLoop]
_STOP = object()


def _settle(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(SpoolError(str(error)))


class SpoolWriter:
    """Group-commits hits to this process's spool file from one background thread."""

    def __init__(self, spool_dir: Path, *, cursor_db: Path, sync: str = "normal",
                 max_rows: int | None = None) -> None:
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.path = spool_dir / f"{self.name}.db"
        self._cursor_db = cursor_db
        self._sync = sync
        self._lock_file: IO[str] = open(spool_dir / f"{self.name}.lock", "w")  # noqa: SIM115
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn = connect(self.path)
        self._conn.execute(f"PRAGMA synchronous={sync.upper()}")
        # Trimmed rows contain raw requests, so SQLite overwrites their content with zeros
        # on delete, whatever the default of the SQLite build.
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.execute(SPOOL_SCHEMA)
        self.committed = 0
        self.failed = 0
        # Past ``max_rows`` unprocessed rows, hits are stored as small spool_full rejections.
        self.max_rows = max_rows
        self.overflowed = 0
        self._last_id = 0
        self._stored_through = 0
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()
        log.info("spool %s opened (synchronous=%s)", self.path, sync)

    def submit(self, row: HitRow) -> asyncio.Future[None]:
        """Queue a hit; the returned future completes once the hit is committed."""
        # get_running_loop() also checks the process id on every call; one worker process
        # runs one loop, so it is looked up once.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((row, future, loop))
        return future

    def close(self) -> None:
        """Commit what is queued, stop the thread and release the spool."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        self._conn.close()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
        log.info("spool %s closed: %d hits committed, %d failed",
                 self.path, self.committed, self.failed)

    def _run(self) -> None:
        last_trim = time.monotonic()
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=TRIM_INTERVAL_S)
            except queue.Empty:
                first = None
            batch: list[_Pending] = []
            if first is _STOP:
                stopping = True
            elif first is not None:
                batch.append(first)
            while len(batch) < MAX_GROUP and not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                self._commit(batch)
            if time.monotonic() - last_trim >= TRIM_INTERVAL_S:
                self._trim()
                last_trim = time.monotonic()

    def _commit(self, batch: list[_Pending]) -> None:
        error: Exception | None = None
        try:
            rows = [pending[0] for pending in batch]
            if self.max_rows is not None:
                rows = self._limit(rows)
            self._conn.execute("BEGIN")
            self._conn.executemany(INSERT_HIT, rows)
            self._conn.execute("COMMIT")
            self.committed += len(batch)
            self._last_id += len(batch)
        except sqlite3.Error as exc:
            error = exc
            self.failed += len(batch)
            log.error("spool %s: commit of %d hits failed: %s", self.name, len(batch), exc)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _row, future, loop in batch:
            by_loop.setdefault(loop, []).append(future)
        for loop, futures in by_loop.items():
            loop.call_soon_threadsafe(_settle, futures, error)

    def _limit(self, rows: list[HitRow]) -> list[HitRow]:
        """Replace the rows past ``max_rows`` unprocessed ones by spool_full rejections."""
        assert self.max_rows is not None
        room = max(0, self.max_rows - (self._last_id - self._stored_through))
        if room >= len(rows):
            return rows
        if self.overflowed == 0:
            log.warning("spool %s is full (%d unprocessed rows): recording further hits as "
                        "spool_full rejections until the processor catches up",
                        self.name, self.max_rows)
        self.overflowed += len(rows) - room
        meta = _SPOOL_FULL_META.format(limit=self.max_rows)
        return rows[:room] + [(row[0], row[1], b"", None, None, None, meta)
                              for row in rows[room:]]

    def _trim(self) -> None:
        """Delete rows that the processor has already stored."""
        try:
            cursor_conn = connect(self._cursor_db, readonly=True)
            try:
                row = cursor_conn.execute(
                    "SELECT last_rowid FROM spool_cursors WHERE spool = ?", (self.name,)
                ).fetchone()
            finally:
                cursor_conn.close()
            if row:
                self._conn.execute("DELETE FROM hits WHERE id <= ?", (row[0],))
                self._stored_through = int(row[0])
                unprocessed = self._last_id - self._stored_through
                if self.overflowed and unprocessed < (self.max_rows or 0):
                    log.info("spool %s has room again after %d spool_full rejections",
                             self.name, self.overflowed)
                    self.overflowed = 0
        except sqlite3.Error as exc:
            log.warning("spool %s: trim failed: %s", self.name, exc)


def read_hits(conn: sqlite3.Connection, after: int, limit: int) -> list[SpoolHit]:
    rows = conn.execute(
        "SELECT id, received_ts, source, payload, user_agent, ip_anon, device_key, meta "
        "FROM hits WHERE id > ? ORDER BY id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [SpoolHit(*row) for row in rows]


def spool_files(spool_dir: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(spool_dir.glob("*.db")):
        yield path.stem, path


def owner_alive(spool_dir: Path, name: str) -> bool:
    """Return True while the collector that owns spool ``name`` still holds its lock."""
    lock_path = spool_dir / f"{name}.lock"
    if not lock_path.exists():
        return False
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
