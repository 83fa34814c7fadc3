"""A columnar copy of the events in SQLite, read with numpy by filtered reports.

``rollups.apply_events`` appends each stored batch here in the transaction that stores it,
so the copy contains each stored event exactly once, as the rollups do. Each chunk in
``column_chunks`` contains one site's events of one local day, column by column:

* text columns as integer codes of a per-site, per-column dictionary (``column_values``,
  code 0 is NULL),
* visitor, session and recipient ids as their ``rollup_ids`` integers (0 is no recipient),
* time, local hour, a flag byte (bot, machine open, session start) and the value
  (NULL as 0, as every report sums it),
* custom properties as sparse (row, key, value) triples: the value text as SQLite's
  ``json_extract`` returns it, for ``prop:`` filters, and as ``rollups.property_items``
  returns it, for the property report.

Each integer column is stored as a constant, as sparse non-zero entries, or densely in the
narrowest unsigned type above its minimum, whichever is smallest. Small chunks of a day are
merged into larger ones as batches arrive. Chunks are immutable and their ids are never
reused, so ``load_chunks`` caches decoded chunks by id, bounded by ``cache_limit_bytes``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    from trackpixel.storage.rollups import EventLike

TEXT_COLUMNS = ("source", "kind", "name", "path", "channel", "referrer_host", "utm_source",
                "utm_medium", "utm_campaign", "utm_term", "utm_content", "campaign", "creative",
                "placement", "browser", "os", "device_type", "country", "bot_reason")
NUMBER_COLUMNS = ("ts", "hour", "flags", "visitor", "session", "recipient")
PROPERTY_COLUMNS = ("prop_row", "prop_key", "prop_filter", "prop_report")
# Dictionaries of the property columns, besides those of ``TEXT_COLUMNS``.
PROPERTY_KEY = "prop:key"
PROPERTY_TEXT = "prop:text"

FLAG_BOT, FLAG_MACHINE_OPEN, FLAG_START = 1, 2, 4
# The maximum length of a property name that a ``prop:`` filter accepts
# (``queries.MAX_PROPERTY_KEY_CHARS``).
MAX_KEY_CHARS = 64

# Rows per chunk: merges stop at this size, and back-fills cut days into chunks of it.
CHUNK_ROWS = 65_536
# A day's chunks below ``CHUNK_ROWS`` rows are merged once this many of them have sizes of
# the same tier (``merge_day``), so each event is rewritten a few times at most.
MERGE_FANIN = 16
CACHE_ENV = "TRACKPIXEL_COLUMN_CACHE_MB"
DEFAULT_CACHE_MB = 512


def cache_limit_bytes() -> int:
    """Return the byte bound of the decoded-chunk cache: ``TRACKPIXEL_COLUMN_CACHE_MB``
    mebibytes, or ``DEFAULT_CACHE_MB``."""
    text = os.environ.get(CACHE_ENV)
    try:
        megabytes = int(text) if text else DEFAULT_CACHE_MB
    except ValueError:
        megabytes = DEFAULT_CACHE_MB
    return max(megabytes, 0) * 1024 * 1024


# ---------------------------------------------------------------------------------------
# Column encoding


@dataclass(frozen=True)
class Column:
    """One decoded column of a chunk: ``base`` plus a constant, sparse or dense array."""

    size: int
    base: Any = 0
    dense: np.ndarray | None = None  # values minus ``base``
    rows: np.ndarray | None = None  # sparse: rows whose value is not 0
    values: np.ndarray | None = None  # sparse: their values

    @property
    def nbytes(self) -> int:
        return sum(part.nbytes for part in (self.dense, self.rows, self.values)
                   if part is not None)

    def full(self, dtype: Any = np.int64) -> np.ndarray:
        """Return every row's value as an array of ``dtype``."""
        if self.dense is not None:
            values = self.dense.astype(dtype)
            if self.base:
                values += self.base
            return values
        result = np.full(self.size, self.base, dtype=dtype)
        if self.rows is not None:
            result[self.rows] = self.values
        return result

    def take(self, rows: np.ndarray | None, dtype: Any = np.int64) -> np.ndarray:
        """Return the values of ``rows`` (all rows when None) as an array of ``dtype``."""
        if rows is None:
            return self.full(dtype)
        if self.dense is not None:
            picked = self.dense[rows].astype(dtype)
            if self.base:
                picked += self.base
            return np.asarray(picked)
        if self.rows is None:
            return np.full(rows.size, self.base, dtype=dtype)
        return np.asarray(self.full(dtype)[rows])

    def equals(self, value: int) -> np.ndarray | bool:
        """Return a row mask of ``value``, or a bool when every row or none matches."""
        if self.dense is not None:
            offset = value - self.base
            if offset < 0 or offset > np.iinfo(self.dense.dtype).max:
                return False
            return np.asarray(self.dense == offset)
        if self.rows is None:
            return bool(self.base == value)
        if value == 0:
            mask = np.ones(self.size, dtype=bool)
            mask[self.rows] = self.values == 0
            return mask
        mask = np.zeros(self.size, dtype=bool)
        mask[self.rows[self.values == value]] = True
        return mask


def _narrowest(span: int) -> type:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if span <= np.iinfo(dtype).max:
            return dtype
    return np.uint64


def _encode_ints(values: np.ndarray, parts: list[bytes], offset: int) -> tuple[dict[str, Any],
                                                                               int]:
    """Append the smallest encoding of an int64 array to ``parts``; return its header."""
    if values.size == 0:
        return {"e": "c", "b": 0}, offset
    low, high = int(values.min()), int(values.max())
    if low == high:
        return {"e": "c", "b": low}, offset
    dtype = _narrowest(high - low)
    width = np.dtype(dtype).itemsize
    nonzero = np.flatnonzero(values)
    if low == 0 and nonzero.size * (4 + width) < values.size * width:
        rows = nonzero.astype(np.uint32).tobytes()
        data = values[nonzero].astype(dtype).tobytes()
        header = {"e": "s", "t": np.dtype(dtype).str, "n": int(nonzero.size), "o": offset}
        parts.extend((rows, data))
        return header, offset + len(rows) + len(data)
    data = (values - low).astype(dtype).tobytes()
    parts.append(data)
    return {"e": "d", "b": low, "t": np.dtype(dtype).str, "o": offset}, offset + len(data)


def _encode_floats(values: np.ndarray, parts: list[bytes],
                   offset: int) -> tuple[dict[str, Any], int]:
    if values.size == 0 or bool(np.all(values == values[0])):
        return {"e": "c", "b": float(values[0]) if values.size else 0.0}, offset
    nonzero = np.flatnonzero(values)
    if nonzero.size * 12 < values.size * 8:
        rows = nonzero.astype(np.uint32).tobytes()
        data = values[nonzero].astype(np.float64).tobytes()
        parts.extend((rows, data))
        return ({"e": "s", "t": "<f8", "n": int(nonzero.size), "o": offset},
                offset + len(rows) + len(data))
    data = values.astype(np.float64).tobytes()
    parts.append(data)
    return {"e": "d", "b": 0.0, "t": "<f8", "o": offset}, offset + len(data)


def encode_chunk(rows: int, ints: dict[str, np.ndarray], floats: dict[str, np.ndarray],
                 props: dict[str, np.ndarray]) -> bytes:
    """Return the blob of a chunk: a 4-byte header length, the JSON header, the arrays."""
    parts: list[bytes] = []
    offset = 0
    header: dict[str, Any] = {"rows": rows, "columns": {}, "props": {}}
    for name, values in ints.items():
        header["columns"][name], offset = _encode_ints(values.astype(np.int64), parts, offset)
    for name, values in floats.items():
        header["columns"][name], offset = _encode_floats(values, parts, offset)
    for name, values in props.items():
        data = values.astype(np.uint32).tobytes()
        header["props"][name] = offset
        parts.append(data)
        offset += len(data)
    header["prop_count"] = int(next(iter(props.values())).size) if props else 0
    head = orjson.dumps(header)
    return len(head).to_bytes(4, "little") + head + b"".join(parts)


@dataclass
class Chunk:
    """A decoded chunk: its day, row count, columns and property triples."""

    chunk_id: int
    day: str
    rows: int
    columns: dict[str, Column]
    props: dict[str, np.ndarray]
    nbytes: int = 0


def decode_chunk(chunk_id: int, day: str, blob: bytes) -> Chunk:
    size = int.from_bytes(blob[:4], "little")
    header = orjson.loads(blob[4:4 + size])
    start = 4 + size
    rows = int(header["rows"])
    columns: dict[str, Column] = {}
    for name, spec in header["columns"].items():
        kind = spec["e"]
        if kind == "c":
            columns[name] = Column(rows, spec["b"])
        elif kind == "d":
            dense = np.frombuffer(blob, dtype=spec["t"], count=rows, offset=start + spec["o"])
            columns[name] = Column(rows, spec["b"], dense=dense)
        else:
            count = int(spec["n"])
            where = start + spec["o"]
            picked = np.frombuffer(blob, dtype=np.uint32, count=count, offset=where)
            values = np.frombuffer(blob, dtype=spec["t"], count=count, offset=where + 4 * count)
            columns[name] = Column(rows, 0, rows=picked, values=values)
    count = int(header["prop_count"])
    props = {name: np.frombuffer(blob, dtype=np.uint32, count=count, offset=start + where)
             for name, where in header["props"].items()}
    chunk = Chunk(chunk_id, day, rows, columns, props)
    chunk.nbytes = len(blob)
    return chunk


def _chunk_arrays(chunk: Chunk) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                         dict[str, np.ndarray]]:
    """Return a decoded chunk's columns as full arrays, for re-encoding."""
    ints = {name: chunk.columns[name].full(np.int64) for name in (*NUMBER_COLUMNS,
                                                                   *TEXT_COLUMNS)}
    floats = {"value": chunk.columns["value"].full(np.float64)}
    props = {name: np.asarray(chunk.props[name], dtype=np.int64) for name in PROPERTY_COLUMNS}
    return ints, floats, props


# ---------------------------------------------------------------------------------------
# Dictionaries


def assign_codes(conn: sqlite3.Connection, site_id: str, column: str,
                 values: Iterable[str]) -> dict[str, int]:
    """Return the code of each text value of a column, adding codes for new values.

    Call inside the writing transaction. Codes come from ``column_value_counters``, so a code
    is never given to another value, even after its value was deleted.
    """
    wanted = sorted(set(values))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        part = wanted[start:start + 500]
        marks = ", ".join("?" for _ in part)
        for value, code in conn.execute(
                f"SELECT value, code FROM column_values WHERE site_id = ? AND column_name = ? "
                f"AND value IN ({marks})", (site_id, column, *part)):
            found[value] = int(code)
    missing = [value for value in wanted if value not in found]
    if missing:
        row = conn.execute("SELECT last_code FROM column_value_counters WHERE site_id = ? "
                           "AND column_name = ?", (site_id, column)).fetchone()
        last = int(row[0]) if row else 0
        for value in missing:
            last += 1
            found[value] = last
        conn.executemany("INSERT INTO column_values VALUES (?, ?, ?, ?)",
                         [(site_id, column, value, found[value]) for value in missing])
        conn.execute("INSERT INTO column_value_counters VALUES (?, ?, ?) "
                     "ON CONFLICT (site_id, column_name) DO UPDATE SET last_code = "
                     "excluded.last_code", (site_id, column, last))
    return found


@dataclass
class Dictionary:
    """A column's values by code, and each code's rank in SQLite's text order of
    ``COALESCE(value, '')``, so that NULL and '' share a rank."""

    texts: list[str]  # rank -> text
    ranks: np.ndarray  # code -> rank
    codes: dict[str, int]  # text -> code
    top: int  # the largest code read


_dictionaries: dict[tuple[str, str, str], Dictionary] = {}
_dictionary_lock = threading.Lock()


def dictionary(conn: sqlite3.Connection, token: str, site_id: str, column: str,
               needed: int = 0) -> Dictionary:
    """Return a column's dictionary, reread when it lacks a code up to ``needed``."""
    key = (token, site_id, column)
    with _dictionary_lock:
        found = _dictionaries.get(key)
    if found is not None and found.top >= needed:
        return found
    pairs = conn.execute("SELECT code, value FROM column_values WHERE site_id = ? "
                         "AND column_name = ?", (site_id, column)).fetchall()
    top = max((int(code) for code, _ in pairs), default=0)
    texts = sorted({value for _, value in pairs} | {""})
    position = {text: index for index, text in enumerate(texts)}
    ranks = np.zeros(top + 1, dtype=np.int64)
    ranks[0] = position[""]
    for code, value in pairs:
        ranks[int(code)] = position[value]
    found = Dictionary(texts, ranks, {value: int(code) for code, value in pairs}, top)
    with _dictionary_lock:
        _dictionaries[key] = found
    return found


# ---------------------------------------------------------------------------------------
# Writing


def _property_pairs(conn: sqlite3.Connection, props: str) -> tuple[dict[str, str],
                                                                    dict[str, str]]:
    """Return a property object's (key -> text) pairs as ``prop:`` filters compare them and
    as the property report counts them."""
    from trackpixel.storage.rollups import property_items

    report = dict(property_items(props))
    compared: dict[str, str] = {}
    # The text ``queries.property_value`` compares, computed by SQLite with the same
    # expression for each key. Keys that a filter cannot name are left out, and so are
    # values that match no filter (NULL).
    for key, text in conn.execute(
            "SELECT key, CASE WHEN type = 'text' THEN json_extract(?1, '$.\"' || key || '\"') "
            "ELSE ?1 -> ('$.\"' || key || '\"') END "
            "FROM json_each(CASE WHEN json_valid(?1) THEN ?1 ELSE '{}' END)", (props,)):
        key = str(key)
        if (text is not None and key not in compared and 0 < len(key) <= MAX_KEY_CHARS
                and '"' not in key and "\\" not in key):
            compared[key] = str(text)
    return compared, report


def append_events(conn: sqlite3.Connection, site_id: str, events: Sequence[EventLike],
                  visitors: dict[str, int], sessions: dict[str, int],
                  recipients: dict[str, int]) -> None:
    """Append one site's newly stored events as chunks, one per local day, and merge a day's
    small chunks once ``MERGE_FANIN`` of them are of one size tier (``merge_day``).

    Call inside the transaction that stored the events.
    """
    if not events:
        return
    codes = {column: assign_codes(conn, site_id, column,
                                  (value for event in events
                                   if (value := getattr(event, column)) is not None))
             for column in TEXT_COLUMNS}
    by_day: dict[str, list[EventLike]] = defaultdict(list)
    for event in events:
        by_day[event.local_day].append(event)
    for day, day_events in by_day.items():
        ints, floats, props = _encode_events(conn, site_id, day_events, codes, visitors,
                                             sessions, recipients)
        _insert_chunks(conn, site_id, day, len(day_events), ints, floats, props)
        merge_day(conn, site_id, day)


def _flags(event: EventLike) -> int:
    flags = 0
    if event.is_bot:
        flags |= FLAG_BOT
    if event.machine_open:
        flags |= FLAG_MACHINE_OPEN
    if event.session_start == 1:
        flags |= FLAG_START
    return flags


def _encode_events(conn: sqlite3.Connection, site_id: str, events: Sequence[EventLike],
                   codes: dict[str, dict[str, int]], visitors: dict[str, int],
                   sessions: dict[str, int], recipients: dict[str, int]
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                              dict[str, np.ndarray]]:
    ints: dict[str, np.ndarray] = {
        "ts": np.fromiter((event.ts for event in events), np.int64, len(events)),
        "hour": np.fromiter((event.local_hour for event in events), np.int64, len(events)),
        "flags": np.fromiter((_flags(event) for event in events), np.int64, len(events)),
        "visitor": np.fromiter((visitors[event.visitor_id] for event in events), np.int64,
                               len(events)),
        "session": np.fromiter((sessions[event.session_id] for event in events), np.int64,
                               len(events)),
        "recipient": np.fromiter((recipients[event.recipient] if event.recipient is not None
                                  else 0 for event in events), np.int64, len(events)),
    }
    for column in TEXT_COLUMNS:
        table = codes[column]
        ints[column] = np.fromiter(
            (table[value] if (value := getattr(event, column)) is not None else 0
             for event in events), np.int64, len(events))
    floats = {"value": np.fromiter(
        (float(event.value) if event.value is not None else 0.0 for event in events),
        np.float64, len(events))}
    triples: list[tuple[int, str, str | None, str | None]] = []
    for row, event in enumerate(events):
        if event.props is None:
            continue
        compared, report = _property_pairs(conn, event.props)
        for key in dict.fromkeys([*compared, *report]):
            triples.append((row, key, compared.get(key), report.get(key)))
    key_codes = assign_codes(conn, site_id, PROPERTY_KEY, (key for _, key, _, _ in triples))
    text_codes = assign_codes(conn, site_id, PROPERTY_TEXT, (
        text for _, _, compared, report in triples for text in (compared, report)
        if text is not None))
    props = {
        "prop_row": np.array([row for row, _, _, _ in triples], dtype=np.int64),
        "prop_key": np.array([key_codes[key] for _, key, _, _ in triples], dtype=np.int64),
        "prop_filter": np.array([text_codes[text] if text is not None else 0
                                 for _, _, text, _ in triples], dtype=np.int64),
        "prop_report": np.array([text_codes[text] if text is not None else 0
                                 for _, _, _, text in triples], dtype=np.int64),
    }
    return ints, floats, props


def _insert_chunks(conn: sqlite3.Connection, site_id: str, day: str, rows: int,
                   ints: dict[str, np.ndarray], floats: dict[str, np.ndarray],
                   props: dict[str, np.ndarray]) -> None:
    """Insert a day's rows as chunks of at most ``CHUNK_ROWS`` rows."""
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, rows)
        inside = (props["prop_row"] >= start) & (props["prop_row"] < stop)
        part_props = {name: values[inside] for name, values in props.items()}
        part_props["prop_row"] = part_props["prop_row"] - start
        blob = encode_chunk(stop - start, {name: values[start:stop]
                                           for name, values in ints.items()},
                            {name: values[start:stop] for name, values in floats.items()},
                            part_props)
        conn.execute("INSERT INTO column_chunks (site_id, local_day, rows, data) "
                     "VALUES (?, ?, ?, ?)", (site_id, day, stop - start, blob))


def _concat(chunks: list[Chunk], keep: list[np.ndarray] | None = None
            ) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Concatenate chunks' rows, only those of ``keep`` (one mask per chunk) when given."""
    ints: dict[str, list[np.ndarray]] = defaultdict(list)
    floats: dict[str, list[np.ndarray]] = defaultdict(list)
    props: dict[str, list[np.ndarray]] = defaultdict(list)
    rows = 0
    for index, chunk in enumerate(chunks):
        chunk_ints, chunk_floats, chunk_props = _chunk_arrays(chunk)
        mask = keep[index] if keep is not None else np.ones(chunk.rows, dtype=bool)
        new_row = np.cumsum(mask) - 1 + rows
        for name, values in chunk_ints.items():
            ints[name].append(values[mask])
        for name, values in chunk_floats.items():
            floats[name].append(values[mask])
        kept = mask[chunk_props["prop_row"]] if chunk_props["prop_row"].size else \
            np.zeros(0, dtype=bool)
        for name, values in chunk_props.items():
            props[name].append(new_row[values[kept]] if name == "prop_row" else values[kept])
        rows += int(mask.sum())

    def joined(parts: dict[str, list[np.ndarray]], dtype: Any) -> dict[str, np.ndarray]:
        return {name: np.concatenate(values) if values else np.zeros(0, dtype)
                for name, values in parts.items()}

    props_joined = joined(props, np.int64)
    for name in PROPERTY_COLUMNS:
        props_joined.setdefault(name, np.zeros(0, np.int64))
    return rows, joined(ints, np.int64), joined(floats, np.float64), props_joined


def _read_chunks(conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> list[Chunk]:
    found = [decode_chunk(int(chunk_id), day, blob) for chunk_id, day, blob in conn.execute(
        f"SELECT chunk_id, local_day, data FROM column_chunks WHERE {where}", tuple(params))]
    return sorted(found, key=lambda chunk: chunk.chunk_id)


def _tier(rows: int, fanin: int) -> int:
    """Return the size tier of a chunk: chunks of one tier differ in size by less than a
    factor of ``fanin``."""
    tier = 0
    while rows >= fanin:
        rows //= fanin
        tier += 1
    return tier


def merge_day(conn: sqlite3.Connection, site_id: str, day: str, *,
              fanin: int = MERGE_FANIN) -> None:
    """Merge a day's chunks below ``CHUNK_ROWS`` rows once ``fanin`` of them have sizes of
    the same tier.

    Merging chunks of similar size only, as size-tiered LSM trees do, rewrites each event
    about once per tier on its way to a full chunk, where merging every small chunk would
    rewrite the growing merged chunk again and again.
    """
    tiers: dict[int, list[int]] = defaultdict(list)
    for chunk_id, rows in conn.execute(
            "SELECT chunk_id, rows FROM column_chunks WHERE site_id = ? AND local_day = ? "
            "AND rows < ?", (site_id, day, CHUNK_ROWS)):
        tiers[_tier(int(rows), fanin)].append(int(chunk_id))
    for chunk_ids in tiers.values():
        if len(chunk_ids) < fanin:
            continue
        marks = ", ".join("?" for _ in chunk_ids)
        chunks = _read_chunks(conn, f"chunk_id IN ({marks})", chunk_ids)
        rows, ints, floats, props = _concat(chunks)
        conn.executemany("DELETE FROM column_chunks WHERE chunk_id = ?",
                         [(chunk.chunk_id,) for chunk in chunks])
        _insert_chunks(conn, site_id, day, rows, ints, floats, props)


# ---------------------------------------------------------------------------------------
# Erasure, retention and rebuilds


def _codes_used(chunk: Chunk, keep: np.ndarray | None = None) -> dict[str, set[int]]:
    """Return the dictionary codes that a chunk's rows (those of ``keep`` when given) use,
    per dictionary."""
    used: dict[str, set[int]] = {}
    for name in TEXT_COLUMNS:
        values = chunk.columns[name].full(np.int64)
        if keep is not None:
            values = values[keep]
        used[name] = set(np.unique(values).tolist()) - {0}
    rows = chunk.props["prop_row"].astype(np.int64)
    kept = keep[rows] if keep is not None else np.ones(rows.size, dtype=bool)
    used[PROPERTY_KEY] = set(np.unique(chunk.props["prop_key"][kept]).tolist())
    texts = np.concatenate((chunk.props["prop_filter"][kept], chunk.props["prop_report"][kept]))
    used[PROPERTY_TEXT] = set(np.unique(texts).tolist()) - {0}
    return used


def _prune_values(conn: sqlite3.Connection, site_id: str,
                  candidates: dict[str, set[int]]) -> None:
    """Delete the dictionary values among ``candidates`` that no remaining chunk uses.

    Values still in use are usually found in the first chunks read; a value that is gone
    makes this read every chunk of the site.
    """
    left = {name: set(codes) for name, codes in candidates.items() if codes}
    cursor = conn.execute("SELECT chunk_id, local_day, data FROM column_chunks "
                          "WHERE site_id = ?", (site_id,))
    while any(left.values()):
        row = cursor.fetchone()
        if row is None:
            break
        used = _codes_used(decode_chunk(int(row[0]), row[1], row[2]))
        for name in left:
            left[name] -= used[name]
    cursor.close()
    conn.executemany("DELETE FROM column_values WHERE site_id = ? AND column_name = ? "
                     "AND code = ?", [(site_id, name, code) for name, codes in left.items()
                                      for code in sorted(codes)])


def erase(conn: sqlite3.Connection, site_id: str, visitors: Iterable[int],
          days: Iterable[str]) -> None:
    """Rewrite the chunks of ``days`` without the rows of the erased visitor integers, and
    delete the dictionary values that only those rows used.

    Call in the erasure's transaction, before the visitors' ``rollup_ids`` are deleted.
    """
    erased = np.array(sorted(set(visitors)), dtype=np.int64)
    candidates: dict[str, set[int]] = defaultdict(set)
    for day in sorted(set(days)):
        chunks = _read_chunks(conn, "site_id = ? AND local_day = ?", (site_id, day))
        keep = [~np.isin(chunk.columns["visitor"].full(np.int64), erased) for chunk in chunks]
        touched = [index for index, mask in enumerate(keep) if not mask.all()]
        if not touched:
            continue
        for index in touched:
            for name, codes in _codes_used(chunks[index], ~keep[index]).items():
                candidates[name] |= codes
        rows, ints, floats, props = _concat([chunks[index] for index in touched],
                                            [keep[index] for index in touched])
        conn.executemany("DELETE FROM column_chunks WHERE chunk_id = ?",
                         [(chunks[index].chunk_id,) for index in touched])
        if rows:
            _insert_chunks(conn, site_id, day, rows, ints, floats, props)
            merge_day(conn, site_id, day)
    _prune_values(conn, site_id, candidates)


def expire(conn: sqlite3.Connection, site_id: str, first_kept_day: str) -> None:
    """Delete a site's chunks of days before ``first_kept_day``, and the dictionary values
    that only those chunks used."""
    candidates: dict[str, set[int]] = defaultdict(set)
    for chunk in _read_chunks(conn, "site_id = ? AND local_day < ?", (site_id, first_kept_day)):
        for name, codes in _codes_used(chunk).items():
            candidates[name] |= codes
    conn.execute("DELETE FROM column_chunks WHERE site_id = ? AND local_day < ?",
                 (site_id, first_kept_day))
    _prune_values(conn, site_id, candidates)


def clear_site(conn: sqlite3.Connection, site_id: str) -> None:
    """Delete a site's chunks and dictionaries; the code counters stay, so no code is reused."""
    conn.execute("DELETE FROM column_chunks WHERE site_id = ?", (site_id,))
    conn.execute("DELETE FROM column_values WHERE site_id = ?", (site_id,))
    conn.execute("UPDATE column_state SET generation = generation + 1")


# ---------------------------------------------------------------------------------------
# Reading


def database_token(conn: sqlite3.Connection) -> str | None:
    """Return the text naming this database and its dictionaries' generation in the caches,
    or None before the migration adding the column copy."""
    try:
        row = conn.execute("SELECT token, generation FROM column_state").fetchone()
    except sqlite3.OperationalError:
        return None
    return f"{row[0]}:{row[1]}" if row else None


class StaleToken(Exception):
    """A rebuild gave the dictionaries new codes after the caller read the token."""


@dataclass
class _Cache:
    chunks: OrderedDict[tuple[str, int], Chunk] = field(default_factory=OrderedDict)
    nbytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[str, int]) -> Chunk | None:
        with self.lock:
            chunk = self.chunks.get(key)
            if chunk is not None:
                self.chunks.move_to_end(key)
            return chunk

    def put(self, key: tuple[str, int], chunk: Chunk, limit: int) -> None:
        with self.lock:
            if key in self.chunks or chunk.nbytes > limit:
                return
            self.chunks[key] = chunk
            self.nbytes += chunk.nbytes
            while self.nbytes > limit and self.chunks:
                _, dropped = self.chunks.popitem(last=False)
                self.nbytes -= dropped.nbytes

    def cached_ids(self, token: str) -> list[int]:
        with self.lock:
            return [chunk_id for (owner, chunk_id) in self.chunks if owner == token]


CACHE = _Cache()

# Days whose chunks ``warm_cache`` reads per site: an overview of 30 days and the 30 days it
# is compared with, plus today.
WARM_DAYS = 61


def warm_cache(conn: sqlite3.Connection, today: Callable[[str], str]) -> int:
    """Read the chunks of every site's last ``WARM_DAYS`` local days into the cache and return
    the number of chunks cached. The first filtered view after a start then reads no blobs.

    ``today`` returns a site's current local day. Sites with the most events in that span are
    read first, until the cache is full."""
    token = database_token(conn)
    if token is None:
        return 0
    limit = cache_limit_bytes()
    spans = {}
    for site_id in [row[0] for row in conn.execute("SELECT id FROM sites")]:
        last = date.fromisoformat(today(site_id))
        spans[site_id] = ((last - timedelta(days=WARM_DAYS - 1)).isoformat(), last.isoformat())
    sizes = {site_id: conn.execute(
        "SELECT COALESCE(SUM(rows), 0) FROM column_chunks WHERE site_id = ? "
        "AND local_day >= ? AND local_day <= ?", (site_id, *span)).fetchone()[0]
        for site_id, span in spans.items()}
    for site_id in sorted(spans, key=lambda site: -sizes[site]):
        if CACHE.nbytes >= limit or not sizes[site_id]:
            break
        load_chunks(conn, token, site_id, *spans[site_id])
    return len(CACHE.cached_ids(token))


def load_chunks(conn: sqlite3.Connection, token: str, site_id: str, from_day: str,
                to_day: str) -> list[Chunk]:
    """Return a site's chunks of a day range, in id order, from the cache where possible.

    One statement lists the range's chunks and reads the blobs of those not cached, so the
    list is one consistent snapshot even while a writer merges chunks.
    """
    limit = cache_limit_bytes()
    cached = CACHE.cached_ids(token)
    while True:
        listed = conn.execute(
            "SELECT chunk_id, local_day, CASE WHEN chunk_id IN (SELECT value FROM json_each(?)) "
            "THEN NULL ELSE data END, (SELECT token || ':' || generation FROM column_state) "
            "FROM column_chunks WHERE site_id = ? AND local_day >= ? AND local_day <= ?",
            (orjson.dumps(cached).decode(), site_id, from_day, to_day)).fetchall()
        # Sorted here: an ORDER BY would copy every blob read into SQLite's sorter.
        listed.sort(key=lambda row: row[0])
        if listed and listed[0][3] != token:
            raise StaleToken(str(listed[0][3]))
        found: list[Chunk] = []
        for chunk_id, day, blob, _ in listed:
            key = (token, int(chunk_id))
            chunk = CACHE.get(key) if blob is None else decode_chunk(int(chunk_id), day, blob)
            if chunk is None:
                break  # evicted after the cached ids were listed: read every blob again
            if blob is not None:
                CACHE.put(key, chunk, limit)
            found.append(chunk)
        else:
            return found
        cached = []
