"""The embedded SQLite store: connections, schema migrations and the event writer."""

from __future__ import annotations

import logging
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

from trackpixel.storage import rollups
from trackpixel.storage.records import (
    EVENT_COLUMNS,
    REJECTED_COLUMNS,
    EventRow,
    ProcessedBatch,
    SessionState,
    WriteResult,
    duplicate_rejection,
    event_values,
    rejected_values,
    session_values,
)

log = logging.getLogger("trackpixel.storage")

BUSY_TIMEOUT_MS = 30_000
# SQLite's largest INTEGER. A larger Python int cannot be bound as a parameter (OverflowError),
# and no row id exceeds it.
MAX_INTEGER = 2**63 - 1


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a WAL-mode connection; a read-only one never takes the write lock."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses nothing committed when the process dies; only an OS crash
        # or power loss can undo the last commits before a checkpoint.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations that ``schema_migrations`` does not list, each in its transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_ts INTEGER)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    folder = resources.files("trackpixel.storage").joinpath("migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    applied = []
    for name in names:
        if name in done:
            continue
        script = folder.joinpath(name).read_text()
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while this one waited for the lock.
            if conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("ROLLBACK")
                continue
            # executescript would commit first, so run the statements one by one.
            for statement in _split_sql(script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, CAST(strftime('%s','now') AS INTEGER))",
                (name,),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


def _split_sql(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


_INSERT_EVENT = (
    f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
_INSERT_REJECTED = (
    f"INSERT OR IGNORE INTO rejected_hits ({', '.join(REJECTED_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in REJECTED_COLUMNS)})"
)


class SqliteStore:
    """Events in the data directory's ``trackpixel.db``.

    One processor writes; any number of report readers use their own connections.
    """

    dialect = "sqlite"
    stores_progress = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        # Erased and expired rows are overwritten with zeros, not left in free pages.
        self.conn.execute("PRAGMA secure_delete=ON")
        migrate(self.conn)

    def write_batch(self, batch: ProcessedBatch) -> WriteResult:
        """Insert events, rejected hits, session state and the cursor in one transaction.

        A row whose ``event_uid`` is already stored is a replay after a crash and is skipped.
        A row whose (site, name, client event id) is already stored is a duplicate: the first
        copy wins and the later one goes to ``rejected_hits`` as ``duplicate_event_id``.
        The report rollups take in exactly the events inserted here.
        """
        conn = self.conn
        stored = duplicates = 0
        inserted: list[EventRow] = []
        rejected = [rejected_values(row) for row in batch.rejected]
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Events inserted by other means leave the rollups behind until a rebuild.
            rollups_in_sync = rollups.in_sync(conn)
            for event in batch.events:
                if conn.execute(_INSERT_EVENT, event_values(event)).rowcount:
                    stored += 1
                    inserted.append(event)
                elif self._is_duplicate(event):
                    duplicates += 1
                    rejected.append(rejected_values(duplicate_rejection(event)))
            conn.executemany(_INSERT_REJECTED, rejected)
            rollups.apply_events(conn, inserted)
            if rollups_in_sync:
                rollups.advance_watermark(conn)
            self._store_progress(batch)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return WriteResult(stored=stored, duplicates=duplicates, rejected=len(rejected))

    def expect_replay(self, spool: str) -> None:
        """Do nothing: unique indexes already make a replayed batch a no-op here."""

    def save_progress(self, batch: ProcessedBatch) -> None:
        """Store a batch's session state and spool cursor (its events are stored elsewhere)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._store_progress(batch)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _store_progress(self, batch: ProcessedBatch) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO visitor_sessions VALUES (?, ?, ?, ?)",
            [session_values(state) for state in batch.sessions],
        )
        self.conn.execute(
            "INSERT INTO spool_cursors VALUES (?, ?) ON CONFLICT (spool) "
            "DO UPDATE SET last_rowid = excluded.last_rowid",
            (batch.spool, batch.last_rowid),
        )

    def _is_duplicate(self, event: EventRow) -> bool:
        replay = self.conn.execute(
            "SELECT 1 FROM events WHERE event_uid = ?", (event.event_uid,)
        ).fetchone()
        return replay is None and event.client_event_id is not None

    def spool_cursor(self, spool: str) -> int:
        row = self.conn.execute(
            "SELECT last_rowid FROM spool_cursors WHERE spool = ?", (spool,)
        ).fetchone()
        return int(row[0]) if row else 0

    def forget_spool(self, spool: str) -> None:
        self.conn.execute("DELETE FROM spool_cursors WHERE spool = ?", (spool,))

    def load_sessions(self, site_id: str, visitor_ids: list[str]) -> dict[str, SessionState]:
        """Return the open sessions of the given visitors of one site."""
        found: dict[str, SessionState] = {}
        for start in range(0, len(visitor_ids), 500):
            chunk = visitor_ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = self.conn.execute(
                "SELECT site_id, visitor_id, session_id, last_ts FROM visitor_sessions "
                f"WHERE site_id = ? AND visitor_id IN ({marks})",
                (site_id, *chunk),
            )
            for row in rows:
                found[row[1]] = SessionState(*row)
        return found

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()

