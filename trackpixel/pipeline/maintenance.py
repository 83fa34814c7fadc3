"""Work the processor does between batches: erasure requests and retention.

Erasures wait until every hit received before the request is stored. Retention deletes raw
events and rejected hits older than each site's limits, after folding the expiring events
into ``daily_rollups`` so that day-level reports for old periods keep working.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from trackpixel import rights
from trackpixel.sites import Site, list_sites
from trackpixel.storage import rollups
from trackpixel.storage.records import EventStore

log = logging.getLogger("trackpixel.processor")

RETENTION_INTERVAL_S = 3600.0
PRIVACY_INTERVAL_S = 0.5
ERASURE_RETRY_S = 60.0
DAY_MS = 86_400_000


# Days a rejected hit whose site is unknown is kept; no site's retention setting applies.
UNATTRIBUTED_REJECTED_DAYS = 30


class Maintenance:
    def __init__(self, conn: sqlite3.Connection,
                 spool_readers: Callable[[], Iterable[tuple[sqlite3.Connection, int]]],
                 events: EventStore | None = None) -> None:
        """``spool_readers`` yields (read connection, stored cursor) for every open spool;
        ``events`` is the event store when it is not the SQLite file itself (ClickHouse)."""
        self.conn = conn
        self.events = events if events is not None and events.dialect != "sqlite" else None
        self._spool_readers = spool_readers
        self._last_retention = 0.0
        self._last_privacy = 0.0

    def run_due(self, now: float | None = None) -> None:
        """Run the erasures and retention that are due.

        A failure is logged, not raised, so the processor keeps storing hits. Failed erasures
        are retried after ``ERASURE_RETRY_S``, failed retention at the next hourly run."""
        now = time.time() if now is None else now
        if now - self._last_privacy >= PRIVACY_INTERVAL_S:
            self._last_privacy = now
            try:
                self.apply_erasures()
            except Exception:
                log.exception("erasure requests failed; retrying in %.0f s", ERASURE_RETRY_S)
                self._last_privacy = now + ERASURE_RETRY_S
        if now - self._last_retention >= RETENTION_INTERVAL_S:
            self._last_retention = now
            try:
                self.apply_retention(int(now * 1000))
            except Exception:
                log.exception("retention failed; retrying in %.0f s", RETENTION_INTERVAL_S)

    def apply_erasures(self) -> int:
        done = 0
        for request_id, requested_ts in rights.pending_erasures(self.conn):
            if self._unstored_before(requested_ts):
                break
            rights.carry_out(self.conn, request_id, self.events)
            done += 1
        return done

    def _unstored_before(self, ts: int) -> bool:
        for reader, cursor in self._spool_readers():
            row = reader.execute("SELECT 1 FROM hits WHERE id > ? AND received_ts <= ? LIMIT 1",
                                 (cursor, ts)).fetchone()
            if row is not None:
                return True
        return False

    def apply_retention(self, now_ms: int) -> tuple[int, int]:
        """Roll up and delete events past each site's retention; delete old rejected hits."""
        if self.events is not None:
            return self._apply_external_retention(self.events, now_ms)
        events = rejected = 0
        for site in list_sites(self.conn):
            try:
                site_events, site_rejected = self._retain_site(site, now_ms)
            except Exception:
                # One site's failure leaves the other sites' retention and the processor running.
                log.exception("retention failed for site %s", site.id)
                continue
            events += site_events
            rejected += site_rejected
        orphans = self.conn.execute(
            "DELETE FROM rejected_hits WHERE site_id IS NULL AND received_ts < ?",
            (now_ms - UNATTRIBUTED_REJECTED_DAYS * DAY_MS,)).rowcount
        if events or rejected or orphans:
            log.info("retention deleted %d events and %d rejected hits", events,
                     rejected + orphans)
        return events, rejected + orphans

    def _retain_site(self, site: Site, now_ms: int) -> tuple[int, int]:
        """Roll up and delete one site's expired events and rejected hits in one transaction."""
        # Whole local days expire together, so each day is rolled up from all its events.
        first_kept_day = _first_kept_day(site, now_ms)
        rejected_cutoff = now_ms - site.privacy.rejected_retention_days * DAY_MS
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(_ROLLUP_SQL, {"site_id": site.id, "day": first_kept_day})
            candidates = rollups.expiring_ids(self.conn, site.id, first_kept_day)
            expired = self.conn.execute(
                "DELETE FROM events WHERE site_id = ? AND local_day < ?",
                (site.id, first_kept_day)).rowcount
            rollups.expire(self.conn, site.id, first_kept_day, candidates)
            rejected = self.conn.execute(
                "DELETE FROM rejected_hits WHERE site_id = ? AND received_ts < ?",
                (site.id, rejected_cutoff)).rowcount
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return expired, rejected

    def _apply_external_retention(self, store: EventStore, now_ms: int) -> tuple[int, int]:
        """Retention on ClickHouse: the day rollups go to SQLite's ``daily_rollups``, then the
        expired rows are deleted from the event store."""
        events = rejected = 0
        for site in list_sites(self.conn):
            try:
                site_events, site_rejected = self._retain_external_site(store, site, now_ms)
            except Exception:
                log.exception("retention failed for site %s in %s", site.id, store.dialect)
                continue
            events += site_events
            rejected += site_rejected
        try:
            rejected += self._retain_unattributed(store, now_ms)
        except Exception:
            log.exception("retention of rejected hits without a site failed in %s",
                          store.dialect)
        if events or rejected:
            log.info("retention deleted %d events and %d rejected hits from %s", events,
                     rejected, store.dialect)
        return events, rejected

    def _retain_unattributed(self, store: EventStore, now_ms: int) -> int:
        """Delete the rejected hits without a site that are past their retention."""
        cutoff = {"cutoff": now_ms - UNATTRIBUTED_REJECTED_DAYS * DAY_MS}
        old = int(store.query("SELECT COUNT(*) FROM rejected_hits WHERE site_id IS NULL "
                              "AND received_ts < :cutoff", cutoff)[0][0])
        if old:
            store.delete_rows(  # type: ignore[attr-defined]
                "rejected_hits", "site_id IS NULL AND received_ts < :cutoff", cutoff)
        return old

    def _retain_external_site(self, store: EventStore, site: Site,
                              now_ms: int) -> tuple[int, int]:
        """Roll up one site's expired events into SQLite, then delete them and its expired
        rejected hits from ``store``."""
        events = rejected = 0
        delete_rows = store.delete_rows  # type: ignore[attr-defined]
        first_kept_day = _first_kept_day(site, now_ms)
        params = {"site_id": site.id, "day": first_kept_day}
        rows = store.query(_EXTERNAL_ROLLUP_SQL, params)
        if rows:
            # NOTE: when delete_rows fails, the expired events stay and the next run adds
            # their rollups to ``daily_rollups`` a second time.
            with self.conn:
                self.conn.executemany(_UPSERT_ROLLUP_SQL, rows)
            events += sum(int(row[6]) for row in rows)
            delete_rows("events", "site_id = :site_id AND local_day < :day", params)
        cutoff = {"site_id": site.id,
                  "cutoff": now_ms - site.privacy.rejected_retention_days * DAY_MS}
        old = store.query("SELECT COUNT(*) FROM rejected_hits WHERE site_id = :site_id "
                          "AND received_ts < :cutoff", cutoff)[0][0]
        if old:
            delete_rows("rejected_hits", "site_id = :site_id AND received_ts < :cutoff",
                        cutoff)
            rejected += int(old)
        return events, rejected


def _first_kept_day(site: Site, now_ms: int) -> str:
    """Return the first local day, YYYY-MM-DD, whose events ``site``'s retention keeps."""
    return datetime.fromtimestamp(
        (now_ms - site.privacy.retention_days * DAY_MS) / 1000, site.zone
    ).strftime("%Y-%m-%d")


# A late event for a day already rolled up (a backdated server event) is added to its row.
_ROLLUP_SQL = """
INSERT INTO daily_rollups (site_id, local_day, name, kind, channel, is_bot, events,
                           visitors, sessions, total_value)
SELECT site_id, local_day, name, kind, channel, is_bot, COUNT(*), COUNT(DISTINCT visitor_id),
       SUM(session_start), SUM(COALESCE(value, 0))
FROM events
WHERE site_id = :site_id AND local_day < :day
GROUP BY site_id, local_day, name, kind, channel, is_bot
ON CONFLICT (site_id, local_day, name, kind, channel, is_bot) DO UPDATE SET
    events = events + excluded.events,
    visitors = visitors + excluded.visitors,
    sessions = sessions + excluded.sessions,
    total_value = total_value + excluded.total_value
"""

# The same per-day rows computed on the event store, for ``_UPSERT_ROLLUP_SQL``.
_EXTERNAL_ROLLUP_SQL = """
SELECT site_id, local_day, name, kind, channel, is_bot, COUNT(*), COUNT(DISTINCT visitor_id),
       SUM(session_start), SUM(COALESCE(value, 0))
FROM events
WHERE site_id = :site_id AND local_day < :day
GROUP BY site_id, local_day, name, kind, channel, is_bot
"""

_UPSERT_ROLLUP_SQL = """
INSERT INTO daily_rollups (site_id, local_day, name, kind, channel, is_bot, events,
                           visitors, sessions, total_value)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (site_id, local_day, name, kind, channel, is_bot) DO UPDATE SET
    events = events + excluded.events,
    visitors = visitors + excluded.visitors,
    sessions = sessions + excluded.sessions,
    total_value = total_value + excluded.total_value
"""
