"""Rights of the people tracked: export and erasure of everything stored about one person.

A person is named by a visitor id (the ``_tp_vid`` cookie value, or the stored visitor id),
a user id (``user_data.external_id`` sent with server events) or an email address (matched
through its SHA-256 digest in ``user_data``). Their events are those with a matching visitor
id or digest, plus every other event of the visitors found that way; derived records are the
session state of those visitors. Their rejected hits are those whose raw request names one of
those visitors by cookie value or contains the selector's digest.

Erasure is a request that the processor carries out once every hit received before the
request has been stored, so an event still in a spool cannot slip in after the erasure. Each
request leaves an audit row with the kind of selector and the counts; the selector's digests
are cleared when it is done, so the audit holds no personal data.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from trackpixel.pipeline.fields import InvalidField
from trackpixel.pipeline.userdata import normalise_email, sha256
from trackpixel.storage import rollups
from trackpixel.storage.records import EVENT_COLUMNS, EventStore
from trackpixel.storage.sqlite import MAX_INTEGER

log = logging.getLogger("trackpixel.rights")

SELECTOR_KINDS = ("visitor", "user_id", "email")
# Keys and query parameters that carry a visitor's cookie value in a raw request: the pixel
# and beacon ``vid``, the server API's ``visitor_id``.
_COOKIE_FIELDS = ("vid", "visitor_id")
_DELETE_CHUNK = 500
_SCAN_PAGE = 2000
_STORED_VISITOR_RE = re.compile(r"^[0-9a-f]{16}$")


class RightsError(ValueError):
    """A privacy request is invalid; the message names the value."""


@dataclass(frozen=True)
class Selector:
    """The person a request is about, as stored identifiers: visitor ids and digests."""

    kind: str
    site_id: str
    visitor_ids: tuple[str, ...] = ()
    user_data_key: str | None = None
    digest: str | None = None


def selector(site_id: str, kind: str, value: str) -> Selector:
    """Turn what a person gives (cookie, user id, email) into stored identifiers."""
    value = value.strip()
    if not value:
        raise RightsError(f"the {kind} value is empty")
    if kind == "visitor":
        cookie_based = _visitor_hash(site_id, f"c|{value}")
        ids = (value, cookie_based) if _STORED_VISITOR_RE.match(value) else (cookie_based,)
        return Selector(kind, site_id, visitor_ids=ids)
    if kind == "user_id":
        return Selector(kind, site_id, user_data_key="external_id", digest=sha256(value))
    if kind == "email":
        try:
            normalised = normalise_email(value)
        except InvalidField as exc:
            raise RightsError(str(exc)) from exc
        return Selector(kind, site_id, user_data_key="em", digest=sha256(normalised))
    raise RightsError(f"unknown selector {kind!r}; use one of {', '.join(SELECTOR_KINDS)}")


def _visitor_hash(site_id: str, basis: str) -> str:
    # The same derivation as the pipeline's visitor step.
    return hashlib.blake2b(f"{site_id}|{basis}".encode(), digest_size=8).hexdigest()


def _match_clause(sel: Selector) -> tuple[str, dict[str, Any]]:
    clauses = []
    params: dict[str, Any] = {"site_id": sel.site_id}
    for index, visitor in enumerate(sel.visitor_ids):
        clauses.append(f"visitor_id = :visitor_{index}")
        params[f"visitor_{index}"] = visitor
    if sel.digest:
        clauses.append("user_data LIKE :digest_pattern")
        params["digest_pattern"] = f'%"{sel.user_data_key}":"{sel.digest}"%'
    return "(" + " OR ".join(clauses) + ")", params


EventSource = sqlite3.Connection | EventStore


def _select(source: EventSource, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run a ``:name`` query on the SQLite connection or on an event store of any backend."""
    if isinstance(source, sqlite3.Connection):
        return source.execute(sql, params).fetchall()
    return source.query(sql, params)


def _visitor_list(site_id: str, visitors: list[str]) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"site_id": site_id}
    names = []
    for index, visitor in enumerate(visitors):
        params[f"person_{index}"] = visitor
        names.append(f":person_{index}")
    return f"site_id = :site_id AND visitor_id IN ({', '.join(names) or 'NULL'})", params


def person_visitors(source: EventSource, sel: Selector) -> list[str]:
    """Return every visitor id linked to the selector."""
    where, params = _match_clause(sel)
    rows = _select(source,
                   f"SELECT DISTINCT visitor_id FROM events WHERE site_id = :site_id AND {where}",
                   params)
    return sorted({*sel.visitor_ids, *(row[0] for row in rows)})


def export(conn: sqlite3.Connection, sel: Selector,
           events: EventStore | None = None) -> dict[str, Any]:
    """Return every stored event and session record of the person, as plain JSON values.

    Events come from ``events`` when given (a ClickHouse store), else from ``conn``."""
    source: EventSource = events if events is not None else conn
    visitors = person_visitors(source, sel)
    where, params = _visitor_list(sel.site_id, visitors)
    rows = _select(source, f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {where} "
                           "ORDER BY ts, event_uid", params)
    marks = ", ".join("?" for _ in visitors) or "NULL"
    sessions = conn.execute(
        f"SELECT session_id, last_ts FROM visitor_sessions WHERE site_id = ? AND "
        f"visitor_id IN ({marks})",
        (sel.site_id, *visitors),
    ).fetchall()
    return {
        "site_id": sel.site_id,
        "visitor_ids": visitors,
        "events": [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in rows],
        "open_sessions": [{"session_id": row[0], "last_ts": row[1]} for row in sessions],
    }


def request_erasure(conn: sqlite3.Connection, sel: Selector) -> int:
    """Queue an erasure for the processor; return the request id."""
    hashes = {"visitor_ids": list(sel.visitor_ids), "key": sel.user_data_key,
              "digest": sel.digest}
    cursor = conn.execute(
        "INSERT INTO privacy_requests (action, site_id, selector_kind, selector_hashes, "
        "requested_ts) VALUES ('erase', ?, ?, ?, ?)",
        (sel.site_id, sel.kind, orjson.dumps(hashes).decode(), int(time.time() * 1000)),
    )
    request_id = int(cursor.lastrowid or 0)
    log.info("erasure request %d queued for site %s by %s", request_id, sel.site_id, sel.kind)
    return request_id


def pending_erasures(conn: sqlite3.Connection) -> list[tuple[int, int]]:
    """Return (request id, requested_ts) of erasures not yet carried out, oldest first."""
    rows = conn.execute(
        "SELECT id, requested_ts FROM privacy_requests WHERE done_ts IS NULL ORDER BY id"
    ).fetchall()
    return [(int(row[0]), int(row[1])) for row in rows]


def carry_out(conn: sqlite3.Connection, request_id: int,
              events: EventStore | None = None) -> tuple[int, int]:
    """Delete the person's events, session state and rollup entries in one transaction; clear
    the selector.

    Returns the number of events and sessions erased."""
    row = conn.execute(
        "SELECT site_id, selector_kind, selector_hashes FROM privacy_requests WHERE id = ?",
        (request_id,),
    ).fetchone()
    site_id, kind, raw = row
    hashes = orjson.loads(raw)
    sel = Selector(kind, site_id, tuple(hashes["visitor_ids"]), hashes["key"], hashes["digest"])
    if events is not None and events.dialect != "sqlite":
        return _carry_out_external(conn, request_id, sel, events)
    conn.execute("BEGIN IMMEDIATE")
    try:
        visitors = person_visitors(conn, sel)
        marks = ", ".join("?" for _ in visitors) or "NULL"
        days: set[str] = set()
        recipients: set[str] = set()
        for day, recipient in conn.execute(
                f"SELECT DISTINCT local_day, recipient FROM events WHERE site_id = ? "
                f"AND visitor_id IN ({marks})", (site_id, *visitors)):
            days.add(day)
            if recipient is not None:
                recipients.add(recipient)
        erased = conn.execute(
            f"DELETE FROM events WHERE site_id = ? AND visitor_id IN ({marks})",
            (site_id, *visitors)).rowcount
        rollups.erase_visitors(conn, site_id, visitors, sorted(days), recipients)
        rejected = rejected_hits_of(conn, sel, visitors)
        for start in range(0, len(rejected), _DELETE_CHUNK):
            chunk = rejected[start:start + _DELETE_CHUNK]
            conn.execute(f"DELETE FROM rejected_hits WHERE hit_uid IN "
                         f"({', '.join('?' for _ in chunk)})", chunk)
        sessions = _finish_request(conn, request_id, site_id, visitors, erased)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    # The write-ahead log still contains the erased pages until a checkpoint empties it.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.info("erasure request %d done: %d events, %d rejected hits, %d sessions", request_id,
             erased, len(rejected), sessions)
    return erased, sessions


def _carry_out_external(conn: sqlite3.Connection, request_id: int, sel: Selector,
                        events: EventStore) -> tuple[int, int]:
    """Erase from an event store outside the SQLite file (ClickHouse), then the session state.

    The events go first: if the deletion fails, the request stays pending and is retried."""
    visitors = person_visitors(events, sel)
    where, params = _visitor_list(sel.site_id, visitors)
    erased = int(_select(events, f"SELECT COUNT(*) FROM events WHERE {where}", params)[0][0])
    delete_rows = getattr(events, "delete_rows", None)
    if delete_rows is None:
        raise RightsError(f"the {events.dialect} event store cannot delete events")
    delete_rows("events", where, params)
    rejected = rejected_hits_of(events, sel, visitors)
    for start in range(0, len(rejected), _DELETE_CHUNK):
        chunk = rejected[start:start + _DELETE_CHUNK]
        uids = {f"uid_{index}": uid for index, uid in enumerate(chunk)}
        delete_rows("rejected_hits",
                    f"hit_uid IN ({', '.join(':' + name for name in uids)})", uids)
    conn.execute("BEGIN IMMEDIATE")
    try:
        sessions = _finish_request(conn, request_id, sel.site_id, visitors, erased)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("erasure request %d done in %s: %d events, %d rejected hits, %d sessions",
             request_id, events.dialect, erased, len(rejected), sessions)
    return erased, sessions


def rejected_hits_of(source: EventSource, sel: Selector, visitors: list[str]) -> list[str]:
    """Return the ``hit_uid`` of every rejected hit of the site whose raw request names one of
    ``visitors`` by cookie value, or contains the selector's digest.

    A cookie value is compared through the visitor id the pipeline derives from it, so the
    privacy request never needs the cookie value itself. Hits rejected before their site was
    known (``missing_site``) are searched too."""
    visitor_ids = set(visitors)
    found = []
    after = ""
    while True:
        # Paged by hit_uid, so memory stays bounded whatever the number of rejected hits.
        rows = _select(source,
                       "SELECT hit_uid, raw FROM rejected_hits WHERE (site_id = :site_id OR "
                       "site_id IS NULL) AND raw IS NOT NULL AND hit_uid > :after "
                       f"ORDER BY hit_uid LIMIT {_SCAN_PAGE}",
                       {"site_id": sel.site_id, "after": after})
        for hit_uid, raw in rows:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if _names_person(text, sel, visitor_ids):
                found.append(str(hit_uid))
        if len(rows) < _SCAN_PAGE:
            return found
        after = str(rows[-1][0])


def _names_person(raw: str, sel: Selector, visitors: set[str]) -> bool:
    if sel.digest and sel.digest in raw:
        return True
    return any(cookie in visitors or _visitor_hash(sel.site_id, f"c|{cookie}") in visitors
               for cookie in _raw_cookie_values(raw))


def _raw_cookie_values(raw: str) -> list[str]:
    """Return the cookie values in a raw request: a JSON body at any depth, or a query
    string."""
    if raw.lstrip().startswith(("{", "[")):
        try:
            return _json_cookie_values(orjson.loads(raw))
        except orjson.JSONDecodeError:
            return []
    return [value for key, value in parse_qsl(raw, keep_blank_values=False)
            if key in _COOKIE_FIELDS]


def _json_cookie_values(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, list):
        for item in value:
            found.extend(_json_cookie_values(item))
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in _COOKIE_FIELDS and isinstance(item, str):
                found.append(item)
            else:
                found.extend(_json_cookie_values(item))
    return found


def _finish_request(conn: sqlite3.Connection, request_id: int, site_id: str,
                    visitors: list[str], erased: int) -> int:
    """Delete the visitors' session state and mark the request done without its selector,
    inside the caller's transaction; return the number of sessions deleted."""
    marks = ", ".join("?" for _ in visitors) or "NULL"
    sessions = conn.execute(
        f"DELETE FROM visitor_sessions WHERE site_id = ? AND visitor_id IN ({marks})",
        (site_id, *visitors)).rowcount
    conn.execute(
        "UPDATE privacy_requests SET done_ts = ?, events_erased = ?, sessions_erased = ?, "
        "selector_hashes = NULL WHERE id = ?",
        (int(time.time() * 1000), erased, sessions, request_id))
    return int(sessions)


def request_status(conn: sqlite3.Connection, request_id: int) -> dict[str, Any] | None:
    if not 0 < request_id <= MAX_INTEGER:
        return None
    row = conn.execute(
        "SELECT id, action, site_id, selector_kind, requested_ts, done_ts, events_erased, "
        "sessions_erased FROM privacy_requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        return None
    keys = ("id", "action", "site_id", "selector_kind", "requested_ts", "done_ts",
            "events_erased", "sessions_erased")
    record = dict(zip(keys, row, strict=True))
    record["status"] = "done" if record["done_ts"] else "pending"
    return record
