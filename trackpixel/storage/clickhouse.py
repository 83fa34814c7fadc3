"""The ClickHouse event store: events and rejected hits on one server or a sharded cluster.

Sites, salts, spool cursors and sessions stay in the local SQLite ``trackpixel.db``; this store
holds only ``events`` and ``rejected_hits``, and the aggregates of ``events`` that
``clickhouse_schema`` describes. The processor inserts a batch here first and then
advances its SQLite cursor, so a crash between the two replays the batch. ``write_batch``
makes that replay harmless: after a failure, and for the first batches of each spool in a new
process, it queries ClickHouse for the batch's ids that are already stored and skips them. The
checks stop for a spool once one of its batches is found entirely new.

Store URL: ``clickhouse://[user[:password]@]host[:port]/database[?cluster=NAME&final=1]``.
With ``cluster`` the migrations create local tables on every shard listed in that cluster's
``remote_servers`` entry and ``Distributed`` tables on every server. With ``final=1`` report
queries read ``events`` with ``FINAL``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from trackpixel.storage import clickhouse_schema as schema
from trackpixel.storage.dialect import (
    CLICKHOUSE,
    clickhouse_placeholders,
    normalize_row,
    translate,
)
from trackpixel.storage.records import (
    EVENT_COLUMNS,
    REJECTED_COLUMNS,
    EventRow,
    ProcessedBatch,
    RejectedRow,
    StoreUnavailable,
    WriteResult,
    duplicate_rejection,
    event_values,
    rejected_values,
)
from trackpixel.storage.rollups import property_items

log = logging.getLogger("trackpixel.storage.clickhouse")

DEFAULT_PORT = 9000
CONNECT_TIMEOUT_S = 5
SEND_RECEIVE_TIMEOUT_S = 120
# Ids sent in one ``IN (...)`` lookup.
LOOKUP_CHUNK = 5000
# Visitor days whose ``visitor_days`` items a store remembers, about 1 KB each.
KNOWN_DAYS_LIMIT = 20_000

_LOCAL_DAY_INDEX = EVENT_COLUMNS.index("local_day")
# The columns of an inserted event: the EventRow fields, then the property arrays.
INSERT_COLUMNS = (*EVENT_COLUMNS, "prop_keys", "prop_values")
# Events read per chunk when filling property arrays, and the maximum bytes of event ids and
# encoded arrays sent in one mutation.
FILL_CHUNK_ROWS = 50_000
FILL_CHUNK_BYTES = 16_000_000


# Longest wait for a deletion mutation to be applied on one server.
MUTATION_TIMEOUT_S = 120.0
# Maximum wait for one property fill mutation, which rewrites the parts of the events table.
# The fill of 10 million events (12 mutations) took 161 s on ClickHouse 18.16 with 2 cores.
FILL_MUTATION_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class ClickHouseUrl:
    """The parts of a ``clickhouse://`` store URL."""

    host: str
    port: int
    database: str
    user: str = "default"
    password: str = ""
    cluster: str | None = None
    final: bool = False

    @classmethod
    def parse(cls, url: str) -> ClickHouseUrl:
        parts = urlsplit(url)
        if parts.scheme != "clickhouse":
            raise ValueError(f"invalid ClickHouse store URL {url!r}: expected "
                             "clickhouse://HOST:PORT/DATABASE")
        database = parts.path.strip("/") or "default"
        if not database.replace("_", "").isalnum():
            raise ValueError(f"invalid database name {database!r} in {url!r}: use letters, "
                             "digits and underscores")
        query = parse_qs(parts.query)
        cluster = query.get("cluster", [None])[0]
        if cluster is not None and not cluster.replace("_", "").isalnum():
            raise ValueError(f"invalid cluster name {cluster!r} in {url!r}")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"invalid port in ClickHouse store URL {url!r}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            database=database,
            user=unquote(parts.username) if parts.username else "default",
            password=unquote(parts.password) if parts.password else "",
            cluster=cluster,
            final=query.get("final", ["0"])[0] in ("1", "true", "yes"),
        )


def _driver_errors() -> tuple[type[BaseException], ...]:
    from clickhouse_driver import errors

    return (errors.Error, OSError, EOFError)


class ClickHouseStore:
    """Events and rejected hits in ClickHouse; see the module docstring for the URL."""

    dialect = CLICKHOUSE
    stores_progress = False

    def __init__(self, url: str, *, apply_migrations: bool = True) -> None:
        from clickhouse_driver import Client

        self.url = ClickHouseUrl.parse(url)
        self._client_class = Client
        self.client = self._connect(self.url.host, self.url.port, self.url.database)
        # Spools whose next batch is known to be new. A spool is missing from the set when the
        # process starts, after a failed insert and after a batch that was partly stored.
        self._verified_spools: set[str] = set()
        self._last_version = 0
        # The (dimension, item) pairs known to have a live ``visitor_days`` row, per site,
        # visitor id and day: written or read by this store since the last deletion.
        self._known_days: OrderedDict[tuple[str, str, date], set[tuple[str, str]]] = (
            OrderedDict())
        self._deletions: Any = None
        if apply_migrations:
            self.migrate()

    def _connect(self, host: str, port: int, database: str):  # type: ignore[no-untyped-def]
        return self._client_class(
            host=host, port=port, database=database, user=self.url.user,
            password=self.url.password, connect_timeout=CONNECT_TIMEOUT_S,
            send_receive_timeout=SEND_RECEIVE_TIMEOUT_S,
            settings={"insert_distributed_sync": 1} if self.url.cluster else {},
        )

    # schema

    def migrate(self) -> list[str]:
        """Apply pending migrations on every server of the store; return the names applied."""
        try:
            return self._migrate()
        except _driver_errors() as exc:
            raise StoreUnavailable(f"ClickHouse migration on {self.url.host}:{self.url.port} "
                                   f"failed: {exc}") from exc

    def _migrate(self) -> list[str]:
        database = self.url.database
        bootstrap = self._connect(self.url.host, self.url.port, "default")
        servers = [(self.url.host, self.url.port)]
        if self.url.cluster:
            servers = self._cluster_servers(bootstrap)

        applied: list[str] = []
        clients = []
        for host, port in servers:
            admin = self._connect(host, port, "default")
            admin.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
            admin.execute(schema.SCHEMA_MIGRATIONS_DDL.format(db=database))
            clients.append(admin)

        names = schema.table_names(database, self.url.cluster)
        events = names["events"]
        for migration in schema.MIGRATIONS:
            pending = [client for client in clients
                       if not self._is_applied(client, migration.name)]
            for client in pending:
                settings = _ddl_settings(client)
                for statement in migration.local:
                    _apply(client, statement.format(**names), settings)
                if migration.fill_properties:
                    fill_properties(client, database, events)
            if self.url.cluster:
                # Every shard has its local tables before any Distributed table exists.
                for client in pending:
                    settings = _ddl_settings(client)
                    for statement in migration.distributed:
                        _apply(client, statement.format(**names), settings)
            if pending and migration.fill_session_totals:
                started = time.monotonic()
                bootstrap.execute(schema.fill_session_totals(database))
                log.info("filled %s.session_totals in %.1f s", database,
                         time.monotonic() - started)
            if pending and migration.fill_visitor_days:
                started = time.monotonic()
                # Rows of an interrupted fill go first, so the fill counts no event twice.
                for client in pending:
                    client.execute(f"TRUNCATE TABLE {database}.{names['days']}")
                for statement in schema.fill_visitor_days(database):
                    bootstrap.execute(statement)
                log.info("filled %s.visitor_days in %.1f s", database,
                         time.monotonic() - started)
            for client in pending:
                self._record(client, migration.name)
                applied.append(migration.name)

        for client in [bootstrap, *clients]:
            client.disconnect()
        for name in applied:
            log.info("applied ClickHouse migration %s", name)
        return applied

    def _cluster_servers(self, client: Any) -> list[tuple[str, int]]:
        rows = client.execute(
            "SELECT host_address, port FROM system.clusters WHERE cluster = %(cluster)s "
            "ORDER BY shard_num, replica_num", {"cluster": self.url.cluster})
        if not rows:
            raise ValueError(f"cluster {self.url.cluster!r} is not in the remote_servers "
                             f"configuration of {self.url.host}:{self.url.port}")
        return [(str(host), int(port)) for host, port in rows]

    def _is_applied(self, client: Any, name: str) -> bool:
        rows = client.execute(
            f"SELECT count() FROM {self.url.database}.schema_migrations WHERE name = %(name)s",
            {"name": name})
        return bool(rows[0][0])

    def _record(self, client: Any, name: str) -> None:
        client.execute(f"INSERT INTO {self.url.database}.schema_migrations (name, applied_ts) "
                       "VALUES", [(name, datetime.now())], types_check=False)

    # writes

    def write_batch(self, batch: ProcessedBatch) -> WriteResult:
        """Insert a batch's events and rejected hits; a replayed batch stores nothing twice.

        A later event with a stored (site, name, client event id) is recorded in
        ``rejected_hits`` as ``duplicate_event_id``, as the SQLite store does.
        Raises ``StoreUnavailable`` when ClickHouse cannot be reached or the insert fails.
        """
        try:
            return self._write_batch(batch)
        except _driver_errors() as exc:
            self._verified_spools.discard(batch.spool)
            self._known_days.clear()
            raise StoreUnavailable(f"ClickHouse insert into {self.url.host}:{self.url.port} "
                                   f"failed: {exc}") from exc

    def _write_batch(self, batch: ProcessedBatch) -> WriteResult:
        events = batch.events
        rejected = list(batch.rejected)
        verified = batch.spool in self._verified_spools
        stored_events: set[str] = set()
        stored_hits: set[str] = set()
        if not verified:
            stored_events = self._stored_event_uids(events)
            stored_hits = self._stored_hit_uids([row.hit_uid for row in rejected]
                                                + [event.event_uid for event in events])
            events = [event for event in events if event.event_uid not in stored_events]
            rejected = [row for row in rejected if row.hit_uid not in stored_hits]
            # Once a batch turns out to be entirely new, the ones after it are new as well.
            verified = not stored_events and not stored_hits

        new_events, duplicates = self._split_duplicates(events)
        rejected.extend(row for row in duplicates if row.hit_uid not in stored_hits)
        if new_events:
            self.client.execute(
                f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) VALUES",
                [_event_values(event) for event in new_events], types_check=False)
        if rejected:
            self.client.execute(
                f"INSERT INTO rejected_hits ({', '.join(REJECTED_COLUMNS)}) VALUES",
                [rejected_values(row) for row in rejected], types_check=False)
        # A batch that may be a replay refreshes all its sessions: its events may be stored
        # while the refresh after them failed.
        self._refresh_sessions(batch.events if batch.spool not in self._verified_spools
                               else new_events)
        # The same holds for the visitor rows, which a stored event may lack; events refused
        # as duplicates were never stored and add none.
        self.link_visitor_days([event for event in batch.events
                                if event.event_uid in stored_events] + new_events)
        if verified:
            self._verified_spools.add(batch.spool)
        return WriteResult(stored=len(new_events), duplicates=len(duplicates),
                           rejected=len(rejected))

    def _refresh_sessions(self, events: list[EventRow]) -> None:
        """Replace the ``session_totals`` rows of the sessions of ``events`` with rows computed
        from their ``session_events`` rows."""
        touched: dict[str, tuple[set[str], set[date]]] = {}
        for event in events:
            # Only people's events reach ``session_events``.
            if event.is_bot or event.machine_open:
                continue
            ids, days = touched.setdefault(event.site_id, (set(), set()))
            ids.add(event.session_id)
            days.add(date.fromisoformat(event.local_day))
        for site_id, (ids, days) in touched.items():
            ordered = sorted(ids)
            for start in range(0, len(ordered), LOOKUP_CHUNK):
                self.refresh_session_totals(site_id, ordered[start:start + LOOKUP_CHUNK],
                                            min(days), max(days))

    def refresh_session_totals(self, site_id: str, session_ids: list[str], first_day: date,
                               last_day: date) -> None:
        """Cancel the live ``session_totals`` rows of ``session_ids`` and insert their rows
        computed from ``session_events`` again.

        ``first_day`` and ``last_day`` bound the days of the sessions' events written since
        their rows were computed; the days of the rows bound the rest. A session without
        ``session_events`` rows is left without a live row. Each session must have one
        writer: two refreshes of one session at the same time can leave two live rows."""
        keys = "SELECT cityHash64(arrayJoin(%(ids)s))"
        params: dict[str, Any] = {"site": site_id, "ids": session_ids}
        # NOTE: this lookup reads the ``session_key`` column of every row of the site,
        # because a session's earlier rows can start on any earlier day. PREWHERE reads the
        # other columns only where a key matches: 0.02 s for 1,000 sessions among 2.2
        # million rows on 2 busy cores (ClickHouse 18.16).
        rows = self.client.execute(
            f"SELECT session_key, version, first_day, last_day, sign FROM session_totals "
            f"PREWHERE session_key IN ({keys}) WHERE site_id = %(site)s", params,
            settings=_long_query(len(session_ids)))
        cancelled = {(key, version) for key, version, _, _, sign in rows if sign < 0}
        live = [(key, version, first, last) for key, version, first, last, sign in rows
                if sign > 0 and (key, version) not in cancelled]
        cancels = ""
        if live:
            # The cancel rows and the new rows go in one INSERT, which writes a part per
            # block and partition. A failure part-way can leave a session with two live rows
            # or none until the batch is replayed, and the replay cancels every live row.
            cancels = " UNION ALL " + schema.CANCEL_SELECT
            params.update(cancel_keys=[row[0] for row in live],
                          cancel_versions=[row[1] for row in live])
            first_day = min(first_day, *(row[2] for row in live))
            last_day = max(last_day, *(row[3] for row in live))
        params.update(low=first_day, high=last_day)
        self.client.execute(
            "INSERT INTO session_totals " + schema.totals_select(
                "session_events", self._next_version(),
                f" AND site_id = %(site)s AND local_day >= %(low)s AND local_day <= %(high)s "
                f"AND session_key IN ({keys})") + cancels, params,
            settings=_long_query(len(session_ids) + 4 * len(live)))

    def link_visitor_days(self, events: list[EventRow]) -> None:
        """Add the ``visitor_days`` rows that the people's ``events`` need and that are
        missing, and give the rows after an added day their new ``prev_day``.

        Each visitor's rows are read and compared with the rows that their days need, so a
        replayed batch adds nothing twice and completes rows that a failed write left out.
        Each visitor must have one writer at a time, as for sessions."""
        needed: dict[str, dict[str, set[tuple[str, str, date]]]] = {}
        for event in events:
            if event.is_bot or event.machine_open:
                continue
            day = date.fromisoformat(event.local_day)
            items = needed.setdefault(event.site_id, {}).setdefault(event.visitor_id, set())
            items.update((dimension, item, day)
                         for dimension, item in schema.visitor_items(event))
        if needed:
            self._forget_known_days_after_deletions()
        for site_id, visitors in needed.items():
            # Most events repeat a visitor's items of the day, whose rows exist already.
            ids = sorted(visitor_id for visitor_id, items in visitors.items()
                         if not self._known(site_id, visitor_id, items))
            for start in range(0, len(ids), LOOKUP_CHUNK):
                chunk = ids[start:start + LOOKUP_CHUNK]
                by_key: dict[int, set[tuple[str, str, date]]] = {}
                for visitor_id, key in self._visitor_keys(chunk).items():
                    by_key.setdefault(key, set()).update(visitors[visitor_id])
                self._link_days(site_id, by_key)
                for visitor_id in chunk:
                    self._remember(site_id, visitor_id, visitors[visitor_id])

    def _known(self, site_id: str, visitor_id: str, items: set[tuple[str, str, date]]) -> bool:
        for dimension, item, day in items:
            known = self._known_days.get((site_id, visitor_id, day))
            if known is None or (dimension, item) not in known:
                return False
        return True

    def _remember(self, site_id: str, visitor_id: str,
                  items: set[tuple[str, str, date]]) -> None:
        for dimension, item, day in items:
            key = (site_id, visitor_id, day)
            self._known_days.setdefault(key, set()).add((dimension, item))
            self._known_days.move_to_end(key)
        while len(self._known_days) > KNOWN_DAYS_LIMIT:
            self._known_days.popitem(last=False)

    def _forget_known_days_after_deletions(self) -> None:
        """Forget the known rows when ``visitor_days`` had a deletion since the last check,
        from this process or another (erasure, retention)."""
        deletions = self.client.execute(
            "SELECT cityHash64(arrayStringConcat(arraySort(groupArray(mutation_id)), ',')) "
            "FROM system.mutations WHERE database = %(db)s AND table LIKE 'visitor_days%%'",
            {"db": self.url.database})[0][0]
        if deletions != self._deletions:
            self._known_days.clear()
            self._deletions = deletions

    def _visitor_keys(self, visitor_ids: list[str]) -> dict[str, int]:
        """Return the ``visitor_key`` of each visitor id, hashed by ClickHouse itself."""
        rows = self.client.execute(
            "SELECT visitor, cityHash64(visitor) FROM system.one "
            "ARRAY JOIN %(ids)s AS visitor", {"ids": visitor_ids},
            settings=_long_query(len(visitor_ids)))
        return {str(visitor): int(key) for visitor, key in rows}

    def _link_days(self, site_id: str, needed: dict[int, set[tuple[str, str, date]]]) -> None:
        # The sorting key starts with the dimension and the visitor, so this reads the
        # granules of these visitors in each dimension.
        rows = self.client.execute(
            "SELECT visitor_key, dimension, item, local_day, prev_day, sum(sign) AS live "
            "FROM visitor_days WHERE site_id = %(site)s AND visitor_key IN %(keys)s "
            "GROUP BY visitor_key, dimension, item, local_day, prev_day HAVING live != 0",
            {"site": site_id, "keys": tuple(needed)}, settings=_long_query(len(needed)))
        stored: dict[tuple[int, str, str], list[tuple[date, date, int]]] = {}
        for key, dimension, item, day, prev_day, live in rows:
            stored.setdefault((int(key), str(dimension), str(item)), []).append(
                (day, prev_day, int(live)))
        chains: dict[tuple[int, str, str], set[date]] = {}
        for key, items in needed.items():
            for dimension, item, day in items:
                chains.setdefault((key, dimension, item), set()).add(day)
        inserts: list[tuple[Any, ...]] = []
        for chain, days in chains.items():
            have = stored.get(chain, [])
            days.update(day for day, _, _ in have)
            for day, prev_day, sign in chain_changes(sorted(days), have):
                key, dimension, item = chain
                inserts.append((site_id, dimension, item, day, key, prev_day, sign))
        if inserts:
            # A row and its cancel row share a month, so they go into one part.
            self.client.execute(
                "INSERT INTO visitor_days (site_id, dimension, item, local_day, visitor_key, "
                "prev_day, sign) VALUES", inserts, types_check=False)

    def _next_version(self) -> int:
        """Return a ``session_totals`` version larger than any this process returned."""
        self._last_version = max(time.time_ns(), self._last_version + 1)
        return self._last_version

    def expect_replay(self, spool: str) -> None:
        """Check the next batches of ``spool`` against stored ids, as after a failed insert."""
        self._verified_spools.discard(spool)
        self._known_days.clear()

    def _split_duplicates(
            self, events: list[EventRow]) -> tuple[list[EventRow], list[RejectedRow]]:
        """Separate events whose client event id is already stored (or earlier in the batch)."""
        with_ids = [event for event in events if event.client_event_id is not None]
        if not with_ids:
            return events, []
        owners = self._stored_client_ids(with_ids)
        new_events: list[EventRow] = []
        duplicates: list[RejectedRow] = []
        for event in events:
            if event.client_event_id is None:
                new_events.append(event)
                continue
            key = (event.site_id, event.name, event.client_event_id)
            owner = owners.get(key)
            if owner is not None and owner != event.event_uid:
                duplicates.append(duplicate_rejection(event))
                continue
            owners[key] = event.event_uid
            new_events.append(event)
        return new_events, duplicates

    def _stored_client_ids(self, events: list[EventRow]) -> dict[tuple[str, str, str], str]:
        # NOTE: this lookup and the insert are not one transaction, so two processors writing
        # the same client event id at the same moment can both store it.
        owners: dict[tuple[str, str, str], str] = {}
        by_site: dict[tuple[str, str], list[str]] = {}
        for event in events:
            assert event.client_event_id is not None
            by_site.setdefault((event.site_id, event.name), []).append(event.client_event_id)
        for (site_id, name), ids in by_site.items():
            for start in range(0, len(ids), LOOKUP_CHUNK):
                rows = self.client.execute(
                    "SELECT client_event_id, min(event_uid) FROM events "
                    "WHERE site_id = %(site)s AND name = %(name)s "
                    "AND client_event_id IN %(ids)s GROUP BY client_event_id",
                    {"site": site_id, "name": name, "ids": tuple(ids[start:start + LOOKUP_CHUNK])})
                for client_id, uid in rows:
                    owners[(site_id, name, client_id)] = uid
        return owners

    def _stored_event_uids(self, events: list[EventRow]) -> set[str]:
        if not events:
            return set()
        found: set[str] = set()
        sites = tuple(sorted({event.site_id for event in events}))
        days = tuple(sorted({date.fromisoformat(event.local_day) for event in events}))
        uids = [event.event_uid for event in events]
        for start in range(0, len(uids), LOOKUP_CHUNK):
            rows = self.client.execute(
                "SELECT event_uid FROM events WHERE site_id IN %(sites)s "
                "AND local_day IN %(days)s AND event_uid IN %(uids)s",
                {"sites": sites, "days": days, "uids": tuple(uids[start:start + LOOKUP_CHUNK])})
            found.update(row[0] for row in rows)
        return found

    def _stored_hit_uids(self, uids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(uids), LOOKUP_CHUNK):
            rows = self.client.execute(
                "SELECT hit_uid FROM rejected_hits WHERE hit_uid IN %(uids)s",
                {"uids": tuple(uids[start:start + LOOKUP_CHUNK])})
            found.update(row[0] for row in rows)
        return found

    # reads

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run a report query written with ``:name`` placeholders; values come back as SQLite
        would return them (days as 'YYYY-MM-DD' strings, nan as None)."""
        text = translate(sql, CLICKHOUSE, final=self.url.final)
        try:
            rows = self.client.execute(text, params)
        except _driver_errors() as exc:
            if _is_query_error(exc):
                raise
            raise StoreUnavailable(f"ClickHouse query on {self.url.host}:{self.url.port} "
                                   f"failed: {exc}") from exc
        return [normalize_row(row) for row in rows]

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run ClickHouse SQL as it is: ``%(name)s`` placeholders, or rows for an INSERT."""
        result = self.client.execute(sql, params or {}, types_check=False)
        return list(result) if isinstance(result, list) else []

    def delete_rows(self, table: str, where: str, params: dict[str, Any]) -> None:
        """Delete the rows of ``events`` or ``rejected_hits`` matching ``where`` (``:name``
        placeholders) on every server of the store, and wait until the deletion is applied.

        Deleting events also updates ``session_events``, ``page_events`` and
        ``day_figures``. When ``where`` names only ``site_id`` and ``local_day``, their rows
        of the same days are deleted. Otherwise the rows of every session, of every path and
        day, and of every day that had a deleted event are deleted and aggregated again from
        the events that remain. The ``visitor_days`` rows of the visitors with deleted events
        are computed again in the same way. Every
        ``session_totals`` row of a session that had a deleted event is deleted, and the
        session gets a row computed from its remaining events.
        ClickHouse deletes through a mutation, which rewrites the affected parts in the
        background, and this waits until every mutation is done. Reads then no longer see
        the rows.

        NOTE: the parts from before a mutation stay on disk, inactive, until the server's
        cleanup removes them: ``old_parts_lifetime`` (480 s by default on ClickHouse 18.16)
        plus up to ``cleanup_delay_period`` (30 s). A deleted visitor's rows are on disk
        for that long after this returns, unless the server's ``merge_tree`` settings
        shorten it."""
        if table not in ("events", "rejected_hits"):
            raise ValueError(f"cannot delete from {table!r}")
        local = f"{table}_local" if self.url.cluster else table
        servers = [(self.url.host, self.url.port)]
        if self.url.cluster:
            servers = self._cluster_servers(self.client)
        condition = clickhouse_placeholders(where)
        by_day = _names_only_days(where)
        touched: dict[str, tuple[list[int], date, date]] = {}
        visitors: dict[str, list[int]] = {}
        if table == "events":
            touched = self._sessions_with_events(condition, params)
            if not by_day:
                for site_id, key in self.client.execute(
                        f"SELECT DISTINCT site_id, visitor_key FROM events WHERE {condition}",
                        params):
                    visitors.setdefault(str(site_id), []).append(int(key))
        for host, port in servers:
            client = self._connect(host, port, self.url.database)
            try:
                if table == "events":
                    self._delete_events(client, local, condition, params, by_day=by_day)
                else:
                    self._mutate(client, local, f"DELETE WHERE {condition}", params)
            finally:
                client.disconnect()
        if touched:
            self._rebuild_session_totals(servers, touched)
        if visitors:
            self._rebuild_visitor_days(servers, visitors)

    def _rebuild_visitor_days(self, servers: list[tuple[str, int]],
                              visitors: dict[str, list[int]]) -> None:
        """Delete every ``visitor_days`` row of the ``visitors`` on every server, then insert
        their rows computed from the events that remain."""
        days = "visitor_days_local" if self.url.cluster else "visitor_days"
        match = " AND site_id = %(site)s AND visitor_key IN (SELECT arrayJoin(%(keys)s))"
        for host, port in servers:
            client = self._connect(host, port, self.url.database)
            try:
                for site_id, keys in visitors.items():
                    client.execute(f"ALTER TABLE {days} DELETE WHERE 1 = 1{match}",
                                   {"site": site_id, "keys": keys},
                                   settings=_long_query(len(keys)))
                    self._wait_for_mutations(client, days)
            finally:
                client.disconnect()
        # NOTE: when these INSERTs fail, the visitors' remaining events count in no visitor
        # figure until a later event of theirs is written.
        for site_id, keys in visitors.items():
            for statement in schema.fill_visitor_days(self.url.database, match):
                self.client.execute(statement, {"site": site_id, "keys": keys},
                                    settings=_long_query(len(keys)))

    def _sessions_with_events(self, condition: str, params: dict[str, Any],
                              ) -> dict[str, tuple[list[int], date, date]]:
        """Return, per site, the keys of the sessions with events matching ``condition``
        and the first and last day of their ``session_totals`` rows."""
        # NOTE: the keys travel in one array literal per site, so a deletion that touches
        # millions of sessions, such as a first retention run over years of events, sends
        # queries and a mutation of tens of megabytes.
        keys: dict[str, list[int]] = {}
        for site_id, session_key in self.client.execute(
                f"SELECT DISTINCT site_id, session_key FROM events WHERE {condition}", params):
            keys.setdefault(str(site_id), []).append(int(session_key))
        touched: dict[str, tuple[list[int], date, date]] = {}
        for site_id, site_keys in keys.items():
            found, first, last = self.client.execute(
                "SELECT count(), min(first_day), max(last_day) FROM session_totals "
                "WHERE site_id = %(site)s AND session_key IN (SELECT arrayJoin(%(keys)s))",
                {"site": site_id, "keys": site_keys}, settings=_long_query(len(site_keys)))[0]
            # Sessions of bots only have no rows, and need no mutation.
            if found:
                touched[site_id] = (site_keys, first, last)
        return touched

    def _rebuild_session_totals(self, servers: list[tuple[str, int]],
                                touched: dict[str, tuple[list[int], date, date]]) -> None:
        """Delete every ``session_totals`` row of the ``touched`` sessions on every server,
        then insert their rows computed from the remaining ``session_events`` rows."""
        totals = "session_totals_local" if self.url.cluster else "session_totals"
        match = "site_id = %(site)s AND session_key IN (SELECT arrayJoin(%(keys)s))"
        # ``session_spans`` takes back what the rows to delete added, as a cancel row would.
        # Only the live rows count: a row and its cancel row add nothing together, and a
        # pair written before ``session_spans`` existed was never added, because its cancel
        # row carries no figures and the migration's fill skipped the pair.
        # NOTE: when the deletion below fails after this INSERT, the sessions' sums stay
        # taken back until the deletion is retried, which finds no events to delete.
        live = (f" AND {match} AND sign = 1 AND (session_key, version) GLOBAL NOT IN ("
                f"SELECT session_key, version FROM session_totals WHERE {match} AND sign = -1)")
        for site_id, (keys, _, _) in touched.items():
            self.client.execute(
                "INSERT INTO session_spans SELECT site_id, first_day, last_day, "
                "-started, -bounces, -duration_ms FROM ("
                + schema.span_select("session_totals", live) + ")",
                {"site": site_id, "keys": keys}, settings=_long_query(2 * len(keys)))
        for host, port in servers:
            client = self._connect(host, port, self.url.database)
            try:
                for site_id, (keys, _, _) in touched.items():
                    client.execute(f"ALTER TABLE {totals} DELETE WHERE {match}",
                                   {"site": site_id, "keys": keys}, settings=_long_query(len(keys)))
                    self._wait_for_mutations(client, totals)
            finally:
                client.disconnect()
        # NOTE: when this INSERT fails, a retry of the deletion finds no matching events, so
        # the sessions stay without a row until the store writes one of their events.
        version = self._next_version()
        for site_id, (keys, first, last) in touched.items():
            self.client.execute(
                "INSERT INTO session_totals " + schema.totals_select(
                    "session_events", version, " AND local_day >= %(low)s "
                    f"AND local_day <= %(high)s AND {match}"),
                {"site": site_id, "keys": keys, "low": first, "high": last},
                settings=_long_query(len(keys)))

    def _delete_events(self, client: Any, events: str, condition: str, params: dict[str, Any],
                       *, by_day: bool) -> None:
        """Delete matching events of one server and bring its ``session_events``,
        ``page_events``, ``day_figures`` and, for whole days, ``visitor_days`` in line."""
        sessions, pages = f"session_{events}", f"page_{events}"
        figures = events.replace("events", "day_figures")
        if by_day:
            # Whole days go, so the day rows of the aggregates go with them. The events go
            # last: retention runs again only while expired events remain, so a run that
            # fails part-way is completed by the next one.
            visitor_days = events.replace("events", "visitor_days")
            # The rows whose previous day goes get 1970-01-01 instead: each is cancelled and
            # copied with the new day, and the two rows share a part, as they share a
            # partition and a block. Running this twice changes no sum. Retention deletes the
            # days before a day, so no earlier day remains.
            deleted_prev = _LOCAL_DAY_WORD.sub("prev_day", condition)
            client.execute(
                f"INSERT INTO {visitor_days} SELECT site_id, dimension, item, local_day, "
                f"visitor_key, moved.1, moved.2 FROM {visitor_days} "
                f"ARRAY JOIN [(prev_day, -sign), (toDate(0), sign)] AS moved "
                f"WHERE ({deleted_prev}) AND prev_day > toDate(0)", params)
            for table in (visitor_days, sessions, pages, figures, events):
                self._mutate(client, table, f"DELETE WHERE {condition}", params)
            return
        touched_sessions: dict[str, list[str]] = {}
        for site_id, session_id in client.execute(
                f"SELECT DISTINCT site_id, session_id FROM {events} WHERE {condition}", params):
            touched_sessions.setdefault(str(site_id), []).append(str(session_id))
        touched_days: dict[str, list[date]] = {}
        for site_id, day in client.execute(
                f"SELECT DISTINCT site_id, local_day FROM {events} WHERE {condition}", params):
            touched_days.setdefault(str(site_id), []).append(day)
        touched_pages: dict[str, tuple[set[date], set[str]]] = {}
        for site_id, day, path in client.execute(
                f"SELECT DISTINCT site_id, local_day, ifNull(path, '') FROM {events} "
                f"WHERE ({condition}) AND kind = 'page_view'", params):
            days, paths = touched_pages.setdefault(str(site_id), (set(), set()))
            days.add(day)
            paths.add(str(path))
        self._mutate(client, events, f"DELETE WHERE {condition}", params)
        # The aggregate rows that held a deleted event are deleted and aggregated again from
        # the events that remain.
        # NOTE: an event of these rows inserted between a deletion and the INSERT after it
        # reaches the table twice, through the view and through the INSERT.
        for site_id, session_ids in touched_sessions.items():
            for start in range(0, len(session_ids), LOOKUP_CHUNK):
                ids: dict[str, Any] = {"site": site_id,
                                       "ids": tuple(session_ids[start:start + LOOKUP_CHUNK])}
                match = "site_id = %(site)s AND session_id IN %(ids)s"
                self._mutate(client, sessions, f"DELETE WHERE {match}", ids)
                client.execute(f"INSERT INTO {sessions} "
                               + schema.session_select(events, f" AND {match}"), ids)
        for site_id, (days, paths) in touched_pages.items():
            keys: dict[str, Any] = {"site": site_id, "days": tuple(sorted(days)),
                                    "paths": tuple(sorted(paths))}
            self._mutate(client, pages, "DELETE WHERE site_id = %(site)s AND local_day IN "
                         "%(days)s AND page_path IN %(paths)s", keys)
            client.execute(f"INSERT INTO {pages} " + schema.page_select(
                events, " AND site_id = %(site)s AND local_day IN %(days)s "
                "AND ifNull(path, '') IN %(paths)s"), keys)
        # The sums of every day that had a deleted event are computed again.
        for site_id, site_days in touched_days.items():
            day_keys: dict[str, Any] = {"site": site_id, "days": tuple(sorted(site_days))}
            match = "site_id = %(site)s AND local_day IN %(days)s"
            self._mutate(client, figures, f"DELETE WHERE {match}", day_keys)
            client.execute(f"INSERT INTO {figures} "
                           + schema.day_figures_select(events, f" AND {match}"), day_keys)

    def _mutate(self, client: Any, table: str, mutation: str, params: dict[str, Any]) -> None:
        client.execute(f"ALTER TABLE {table} {mutation}", params)
        self._wait_for_mutations(client, table)

    def _wait_for_mutations(self, client: Any, table: str) -> None:
        wait_for_mutations(client, self.url.database, table)

    def close(self) -> None:
        self.client.disconnect()


def _event_values(event: EventRow) -> tuple[Any, ...]:
    """Return the values of ``INSERT_COLUMNS`` for one event."""
    values = list(event_values(event))
    values[_LOCAL_DAY_INDEX] = date.fromisoformat(event.local_day)
    items = property_items(event.props) if event.props is not None else []
    values.append([key for key, _ in items])
    values.append([text for _, text in items])
    return tuple(values)


def wait_for_mutations(client: Any, database: str, table: str,
                       timeout_s: float = MUTATION_TIMEOUT_S) -> None:
    """Return when no mutation of ``database.table`` on the client's server is pending.

    Raises ``StoreUnavailable`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = client.execute(
            "SELECT count() FROM system.mutations WHERE database = %(db)s AND "
            "table = %(table)s AND is_done = 0", {"db": database, "table": table})[0][0]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise StoreUnavailable(f"ClickHouse mutation on {table} not applied after "
                                   f"{timeout_s} s")
        time.sleep(0.1)


# ``transform`` maps each event id of a mutation to its encoded array: every element is 'x'
# and the hex digits of its UTF-8 bytes, joined by commas, so that any text, the empty string
# included, survives the round trip. A mutation sends only events with at least one pair, so
# an id maps to a non-empty text exactly when it belongs to the mutation. The ids are array
# literals, which count as one element each against max_ast_elements (50,000 by default),
# where ``event_uid IN (...)`` would count one per id.
_ENCODED = "transform(event_uid, %(uids)s, %({array})s, '')"
_DECODE = ("arrayMap(x -> unhex(substring(x, 2)), arrayFilter(x -> x != '', "
           f"splitByChar(',', {_ENCODED})))")


def _encode(texts: list[str]) -> str:
    return ",".join("x" + text.encode().hex() for text in texts)


def fill_properties(client: Any, database: str, table: str) -> int:
    """Compute ``prop_keys`` and ``prop_values`` of the events in ``database.table`` on the
    client's server that have properties and empty arrays; return the number of events read.

    Events are read in ``event_uid`` order, a chunk at a time, and each chunk is written by
    one ``ALTER TABLE ... UPDATE`` mutation keyed by ``event_uid``. Each mutation is waited
    for before the next is sent: in a trial on ClickHouse 18.16, five mutations sent without
    waiting left about a tenth of their events unchanged. Events whose properties have no
    pairs keep empty arrays, which is their value.
    """
    events = f"{database}.{table}"
    after = ""
    read = 0
    while True:
        rows = client.execute(
            f"SELECT event_uid, props FROM {events} WHERE props IS NOT NULL "
            "AND empty(prop_keys) AND event_uid > %(after)s ORDER BY event_uid "
            "LIMIT %(limit)s", {"after": after, "limit": FILL_CHUNK_ROWS})
        if not rows:
            return read
        read += len(rows)
        after = str(rows[-1][0])
        uids: list[str] = []
        keys: list[str] = []
        texts: list[str] = []
        size = 0
        for uid, props in rows:
            items = property_items(str(props))
            if not items or (uids and uid == uids[-1]):
                continue
            uids.append(str(uid))
            keys.append(_encode([key for key, _ in items]))
            texts.append(_encode([text for _, text in items]))
            size += len(uid) * 2 + len(keys[-1]) + len(texts[-1])
            if size >= FILL_CHUNK_BYTES:
                _update_properties(client, database, table, uids, keys, texts)
                uids, keys, texts, size = [], [], [], 0
        if uids:
            _update_properties(client, database, table, uids, keys, texts)
        log.info("filled property arrays of %s up to event %s (%d events read)", events,
                 after, read)
        if len(rows) < FILL_CHUNK_ROWS:
            return read


def _update_properties(client: Any, database: str, table: str, uids: list[str],
                       keys: list[str], texts: list[str]) -> None:
    client.execute(
        f"ALTER TABLE {database}.{table} UPDATE "
        f"prop_keys = {_DECODE.replace('{array}', 'keys')}, "
        f"prop_values = {_DECODE.replace('{array}', 'texts')} "
        f"WHERE {_ENCODED.replace('{array}', 'keys')} != ''",
        {"uids": uids, "keys": keys, "texts": texts},
        settings={"max_query_size": 4 * FILL_CHUNK_BYTES})
    wait_for_mutations(client, database, table, FILL_MUTATION_TIMEOUT_S)


NO_DAY = date(1970, 1, 1)
_LOCAL_DAY_WORD = re.compile(r"\blocal_day\b")


def chain_changes(days: list[date], stored: list[tuple[date, date, int]],
                  ) -> list[tuple[date, date, int]]:
    """Return the (day, prev_day, sign) rows to insert for one visitor, dimension and item.

    ``stored`` lists the stored rows as (day, prev_day, live count). After the insert, each
    of the sorted ``days`` has one live row, whose ``prev_day`` is the day before it in the
    list, and no other row is live."""
    needed = dict(zip(days, [NO_DAY, *days[:-1]], strict=True))
    changes: list[tuple[date, date, int]] = []
    for day, prev_day, live in stored:
        keep = 1 if needed.get(day) == prev_day else 0
        if keep:
            del needed[day]
        sign = 1 if keep > live else -1
        changes.extend([(day, prev_day, sign)] * abs(keep - live))
    changes.extend((day, prev_day, 1) for day, prev_day in needed.items())
    return changes


def _long_query(values: int) -> dict[str, int]:
    """Return settings that admit a query text with ``values`` ids, keys, versions or days
    in array literals, each under 64 characters."""
    return {"max_query_size": max(262_144, 64 * values)}


def _apply(client: Any, statement: str, settings: dict[str, int]) -> None:
    """Run one migration statement; an ADD COLUMN of a column that exists is skipped."""
    from clickhouse_driver import errors

    try:
        client.execute(statement, settings=settings)
    except errors.ServerException as exc:
        # 18.16 reports an existing column as ILLEGAL_COLUMN, current releases as
        # DUPLICATE_COLUMN.
        existing = exc.code in (errors.ErrorCodes.ILLEGAL_COLUMN,
                                errors.ErrorCodes.DUPLICATE_COLUMN)
        if not existing or "ADD COLUMN" not in statement:
            raise


_WORD = re.compile(r"(?<![:\w])[A-Za-z_]\w*")
_CONDITION_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL", "BETWEEN"}


def _names_only_days(where: str) -> bool:
    """Return True when the columns that ``where`` names are only ``site_id`` and
    ``local_day``, so it selects whole days of a site's events."""
    words = {word for word in _WORD.findall(where) if word.upper() not in _CONDITION_KEYWORDS}
    return words <= {"site_id", "local_day"}


def _ddl_settings(client: Any) -> dict[str, int]:
    """Return the settings that let this server create LowCardinality columns."""
    major = int(client.execute("SELECT toUInt32(splitByChar('.', version())[1])")[0][0])
    # LowCardinality is experimental in 18.x; 19.x and later reject the setting's name.
    return {"allow_experimental_low_cardinality_type": 1} if major < 19 else {}


def _is_query_error(exc: BaseException) -> bool:
    """Return True for a server error about the query itself, which a retry cannot fix."""
    from clickhouse_driver import errors

    return isinstance(exc, errors.ServerException) and exc.code in (
        errors.ErrorCodes.SYNTAX_ERROR, errors.ErrorCodes.UNKNOWN_IDENTIFIER,
        errors.ErrorCodes.ILLEGAL_TYPE_OF_ARGUMENT, errors.ErrorCodes.UNKNOWN_FUNCTION,
        errors.ErrorCodes.UNKNOWN_TABLE, errors.ErrorCodes.NO_SUCH_COLUMN_IN_TABLE)
