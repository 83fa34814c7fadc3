"""Dashboard reports computed with numpy from the columnar copy of the events
(``trackpixel.storage.columns``), for queries with filters or a goal.

Each function returns the rows of the raw SQL of the same name in ``queries``, in the same
order. Filters compare each event's own values, and session figures group a session's
matching events in the range, as the raw SQL does.
"""

from __future__ import annotations

import copy
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from trackpixel.reports import queries
from trackpixel.reports.queries import ReportQuery
from trackpixel.storage import columns as store
from trackpixel.storage.columns import FLAG_BOT, FLAG_MACHINE_OPEN, FLAG_START

BROWSER_SOURCES = ("pixel", "beacon")
# Columns gathered as 64-bit values; the others are gathered as 32-bit integers.
WIDE_COLUMNS: dict[str, type] = {"ts": np.int64, "value": np.float64, "visitor": np.int64,
                                 "session": np.int64, "recipient": np.int64}


class Selection:
    """The events of one site and day range that match a query's filters, column by column.

    Columns are gathered on first use and kept, so the reports of one dashboard view that
    share a query read each column once.
    """

    def __init__(self, conn: sqlite3.Connection, token: str, query: ReportQuery,
                 chunks: list[store.Chunk]) -> None:
        self.conn = conn
        self.token = token
        self.site_id = query.site_id
        self.chunks = chunks
        self.days = sorted({chunk.day for chunk in chunks})
        self._gathered: dict[str, np.ndarray] = {}
        self._codes: dict[tuple[str, str], int | None] = {}
        self._lock = threading.Lock()
        filters = [(key, value, self._filter_codes(key, value))
                   for key, value in sorted(query.filters.items())]
        self.picks = [self._match(chunk, filters) for chunk in chunks]
        self.size = sum(chunk.rows if pick is None else pick.size
                        for chunk, pick in zip(chunks, self.picks, strict=True))

    @property
    def nbytes(self) -> int:
        """Return the bytes of the columns gathered so far."""
        with self._lock:
            return sum(values.nbytes for values in self._gathered.values())

    def bound_to(self, conn: sqlite3.Connection) -> Selection:
        """Return a copy that reads dictionaries through ``conn`` and shares the gathered
        columns and codes. A kept selection outlives the request whose connection made it."""
        view = copy.copy(self)
        view.conn = conn
        return view

    def dictionary(self, column: str) -> store.Dictionary:
        return store.dictionary(self.conn, self.token, self.site_id, column)

    def code(self, column: str, value: str) -> int | None:
        """Return the code of a text value, or None when no stored event has it."""
        if (column, value) in self._codes:
            return self._codes[(column, value)]
        found = self.dictionary(column).codes.get(value)
        if found is None:
            # A value stored after the dictionary was read.
            found = store.dictionary(self.conn, self.token, self.site_id, column,
                                     needed=self.dictionary(column).top + 1).codes.get(value)
        self._codes[(column, value)] = found
        return found

    def _filter_codes(self, key: str, value: str) -> tuple[int, int] | None:
        """Return the codes a filter compares (column value, or property key and value),
        or None when no stored event can match."""
        if key.startswith(queries.PROPERTY_FILTER_PREFIX):
            key_code = self.code(store.PROPERTY_KEY, key[len(queries.PROPERTY_FILTER_PREFIX):])
            text_code = self.code(store.PROPERTY_TEXT, value)
            if key_code is None or text_code is None:
                return None
            return key_code, text_code
        code = self.code(key, value)
        return None if code is None else (code, code)

    def _match(self, chunk: store.Chunk, filters: list[tuple[str, str, tuple[int, int] | None]]
               ) -> np.ndarray | None:
        """Return the rows of a chunk that every filter matches, or None for all rows."""
        mask: np.ndarray | bool = True
        for key, _, codes in filters:
            if codes is None:
                mask = False
            elif key.startswith(queries.PROPERTY_FILTER_PREFIX):
                mask = mask & self._property_mask(chunk, *codes)
            else:
                mask = mask & chunk.columns[key].equals(codes[0])
            if not isinstance(mask, np.ndarray):
                mask = bool(mask)
            if mask is False or (isinstance(mask, np.ndarray) and not mask.any()):
                return np.zeros(0, dtype=np.int64)
        if mask is True:
            return None
        return np.flatnonzero(mask)

    @staticmethod
    def _property_mask(chunk: store.Chunk, key_code: int, text_code: int) -> np.ndarray:
        props = chunk.props
        hits = props["prop_row"][(props["prop_key"] == key_code)
                                 & (props["prop_filter"] == text_code)]
        mask = np.zeros(chunk.rows, dtype=bool)
        mask[hits] = True
        return mask

    def column(self, name: str) -> np.ndarray:
        """Return a column's values of the selected events, in selection order."""
        with self._lock:
            found = self._gathered.get(name)
            if found is not None:
                return found
        # Codes, hours, flags and day numbers fit 32 bits, which halves a selection's memory.
        # Times, sums and ids of the site's whole id range need 64 bits.
        dtype = WIDE_COLUMNS.get(name, np.int32)
        if name == "day":
            parts: list[np.ndarray] = [np.full(chunk.rows if pick is None else pick.size,
                             self.days.index(chunk.day), dtype=dtype)
                     for chunk, pick in zip(self.chunks, self.picks, strict=True)]
        else:
            parts = [chunk.columns[name].take(pick, dtype)
                     for chunk, pick in zip(self.chunks, self.picks, strict=True)]
        found = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        if name in ("session", "visitor") and found.size:
            # Renumber sessions and visitors densely, so per-session arrays and distinct
            # counts take one entry per selected one rather than one per id of the site.
            present = np.zeros(int(found.max()) + 1, dtype=bool)
            present[found] = True
            found = (np.cumsum(present, dtype=np.int32) - 1)[found]
        with self._lock:
            self._gathered[name] = found
        return found

    def flag(self, bit: int) -> np.ndarray:
        return np.asarray((self.column("flags") & bit) != 0)

    def people(self) -> np.ndarray:
        return np.asarray((self.column("flags") & (FLAG_BOT | FLAG_MACHINE_OPEN)) == 0)

    def is_text(self, column: str, value: str) -> np.ndarray:
        code = self.code(column, value)
        if code is None:
            return np.zeros(self.size, dtype=bool)
        return np.asarray(self.column(column) == code)

    def ranks(self, column: str) -> tuple[np.ndarray, list[str]]:
        """Return each selected event's rank of ``COALESCE(column, '')`` in text order, and
        the texts by rank."""
        codes = self.column(column)
        found = self.dictionary(column)
        if codes.size and int(codes.max()) > found.top:
            found = store.dictionary(self.conn, self.token, self.site_id, column,
                                     needed=int(codes.max()))
        return found.ranks[codes], found.texts

    def properties(self) -> dict[str, np.ndarray]:
        """Return the property triples of the selected events, with rows renumbered in
        selection order."""
        rows, keys, texts = [], [], []
        offset = 0
        for chunk, pick in zip(self.chunks, self.picks, strict=True):
            props = chunk.props
            size = chunk.rows if pick is None else pick.size
            if props["prop_row"].size:
                if pick is None:
                    position = props["prop_row"].astype(np.int64)
                    kept = np.ones(position.size, dtype=bool)
                else:
                    index = np.searchsorted(pick, props["prop_row"])
                    index = np.minimum(index, max(pick.size - 1, 0))
                    kept = (pick[index] == props["prop_row"]) if pick.size else \
                        np.zeros(props["prop_row"].size, dtype=bool)
                    position = index
                kept &= props["prop_report"] != 0
                rows.append(position[kept] + offset)
                keys.append(props["prop_key"][kept].astype(np.int64))
                texts.append(props["prop_report"][kept].astype(np.int64))
            offset += size
        empty = np.zeros(0, dtype=np.int64)
        return {"row": np.concatenate(rows) if rows else empty,
                "key": np.concatenate(keys) if keys else empty,
                "text": np.concatenate(texts) if texts else empty}


# Selections of recent queries, keyed by database, query and the chunk ids read. Chunks are
# immutable, so an entry is valid for exactly as long as the range has the same chunks.
_SELECTIONS: OrderedDict[tuple[Any, ...], Selection] = OrderedDict()
# Selections kept at most. Their gathered columns (36 bytes per matching event for the
# overview, 116 for every view) are bounded apart from the chunk cache: older selections
# go once all of them exceed a quarter of its bound, though the newest always stays.
_SELECTIONS_KEPT = 4
_selections_lock = threading.Lock()


def select(conn: sqlite3.Connection, query: ReportQuery) -> Selection | None:
    """Return the selection of a query, or None when the database has no column copy."""
    queries.dashboard_where(query)  # rejects unknown filter columns and invalid names
    token = store.database_token(conn)
    if token is None:
        return None
    try:
        chunks = store.load_chunks(conn, token, query.site_id, query.from_day, query.to_day)
    except store.StaleToken as error:
        # A rebuild committed between the two reads: read the range again under its token.
        token = str(error)
        chunks = store.load_chunks(conn, token, query.site_id, query.from_day, query.to_day)
    key = (token, query.site_id, query.from_day, query.to_day,
           tuple(sorted(query.filters.items())), tuple(chunk.chunk_id for chunk in chunks))
    with _selections_lock:
        found = _SELECTIONS.get(key)
        if found is not None:
            _SELECTIONS.move_to_end(key)
            return found.bound_to(conn)
    found = Selection(conn, token, query, chunks)
    with _selections_lock:
        _SELECTIONS[key] = found
        limit = store.cache_limit_bytes() // 4
        while len(_SELECTIONS) > 1 and (
                len(_SELECTIONS) > _SELECTIONS_KEPT
                or sum(kept.nbytes for kept in _SELECTIONS.values()) > limit):
            _SELECTIONS.popitem(last=False)
    return found


# ---------------------------------------------------------------------------------------
# Counting helpers


def _distinct(ids: np.ndarray, *, skip_zero: bool = False) -> int:
    if skip_zero:
        ids = ids[ids != 0]
    if not ids.size:
        return 0
    seen = np.zeros(int(ids.max()) + 1, dtype=bool)
    seen[ids] = True
    return int(np.count_nonzero(seen))


# Cells of the largest (group, id) table that ``_distinct_by`` fills; above it, it sorts.
MAX_DISTINCT_TABLE = 1 << 26


def _distinct_by(groups: np.ndarray, ids: np.ndarray, count: int, *,
                 skip_zero: bool = False) -> np.ndarray:
    """Return the number of distinct ``ids`` in each of ``count`` groups."""
    if skip_zero:
        keep = ids != 0
        groups, ids = groups[keep], ids[keep]
    if not ids.size:
        return np.zeros(count, dtype=np.int64)
    width = int(ids.max()) + 1
    if count * width <= MAX_DISTINCT_TABLE:
        seen = np.zeros(count * width, dtype=bool)
        seen[groups.astype(np.int64) * width + ids] = True
        return np.asarray(np.count_nonzero(seen.reshape(count, width), axis=1))
    keys = np.sort(groups.astype(np.int64) * width + ids)
    first = np.ones(keys.size, dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return np.bincount(keys[first] // width, minlength=count)


def _combine(ranks: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """Return one integer per row for a tuple of ranks (mixed radix, first rank highest)."""
    key = np.zeros(ranks[0].size if ranks else 0, dtype=np.int64)
    for rank, size in zip(ranks, sizes, strict=True):
        key = key * size + rank
    return key


def _groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the distinct values of ``key`` in order and each row's index among them."""
    if not key.size:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    top = int(key.max())
    if top < 8 * key.size + 1_000_000:
        groups = np.flatnonzero(np.bincount(key, minlength=top + 1))
    else:
        groups = np.unique(key)
    return groups, np.searchsorted(groups, key)


def _split(key: int, sizes: list[int]) -> list[int]:
    parts = []
    for size in reversed(sizes):
        parts.append(key % size)
        key //= size
    return list(reversed(parts))


def _ordered(groups: np.ndarray, sort_key: Callable[[int], Any],
             limit: int | None) -> list[int]:
    ordered = sorted((int(group) for group in groups), key=sort_key)
    return ordered if limit is None else ordered[:limit]


class _Sessions:
    """Per-session aggregates of a subset of selected events, indexed by session number."""

    def __init__(self, sessions: np.ndarray) -> None:
        self.ids = sessions
        self.size = int(sessions.max()) + 1 if sessions.size else 0
        self.count = np.bincount(sessions, minlength=self.size)
        self.present = np.flatnonzero(self.count)

    def total(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.ids, weights=values, minlength=self.size)

    def maximum(self, values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Return each session's maximum of ``values`` over rows of ``where``, -1 if none."""
        # ufunc.at is fast only when the values already have the result's type.
        values = values.astype(np.int64, copy=False)
        result = np.full(self.size, -1, dtype=np.int64)
        if where is None:
            np.maximum.at(result, self.ids, values)
        else:
            np.maximum.at(result, self.ids[where], values[where])
        return result

    def minimum(self, values: np.ndarray) -> np.ndarray:
        values = values.astype(np.int64, copy=False)
        result = np.full(self.size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(result, self.ids, values)
        return result


# ---------------------------------------------------------------------------------------
# Reports


def totals(selection: Selection, goal: str | None) -> tuple[Any, ...]:
    people = selection.people()
    visitors = selection.column("visitor")[people]
    started = people & selection.flag(FLAG_START)
    page_views = people & selection.is_text("kind", "page_view")
    conversions = _conversions(selection, goal) & people
    return (_distinct(visitors), _distinct(selection.column("session")[started]),
            int(page_views.sum()), int(people.sum()), int(conversions.sum()),
            float(selection.column("value")[conversions].sum()))


def _conversions(selection: Selection, goal: str | None) -> np.ndarray:
    custom = selection.is_text("kind", "custom")
    if goal:
        custom &= selection.is_text("name", goal)
    return custom


def _browser_rows(selection: Selection) -> np.ndarray:
    found = np.zeros(selection.size, dtype=bool)
    for source in BROWSER_SOURCES:
        found |= selection.is_text("source", source)
    return found


def session_stats(selection: Selection) -> tuple[Any, ...]:
    rows = selection.people() & _browser_rows(selection)
    sessions = _Sessions(selection.column("session")[rows])
    ts = selection.column("ts")[rows]
    started = sessions.maximum(selection.flag(FLAG_START)[rows].astype(np.int64))
    counted = sessions.present[started[sessions.present] == 1]
    if not counted.size:
        return (0, None, None)
    first, last = sessions.minimum(ts)[counted], sessions.maximum(ts)[counted]
    bounces = int((sessions.count[counted] == 1).sum())
    return (int(counted.size), bounces, float(np.mean((last - first) / 1000.0)))


def series(selection: Selection, interval: str, mondays: list[str] | None,
           goal: str | None) -> list[tuple[Any, ...]]:
    people = selection.people()
    day = selection.column("day")[people]
    if interval == "hour":
        bucket = day * 24 + selection.column("hour")[people]
        labels = [(selection.days[index // 24], index % 24)
                  for index in range(len(selection.days) * 24)]
    elif interval == "day":
        bucket = day
        labels = [(text, 0) for text in selection.days]
    elif interval == "week":
        weeks = mondays or []
        if not weeks:
            raise ValueError("a weekly series needs at least one week")
        week_of_day = np.array([max(index for index, monday in enumerate(weeks)
                                    if monday <= text or index == 0)
                                for text in selection.days], dtype=np.int64)
        bucket = week_of_day[day] if day.size else day
        labels = [(monday, 0) for monday in weeks]
    else:
        raise ValueError(f"invalid interval {interval!r}: expected hour, day or week")
    count = len(labels)
    visitors = _distinct_by(bucket, selection.column("visitor")[people], count)
    started = selection.flag(FLAG_START)[people]
    sessions = _distinct_by(bucket[started], selection.column("session")[people][started], count)
    page_views = np.bincount(bucket, weights=selection.is_text("kind", "page_view")[people],
                             minlength=count)
    conversions = np.bincount(bucket, weights=_conversions(selection, goal)[people],
                              minlength=count)
    present = np.bincount(bucket, minlength=count)
    return [(*labels[index], int(visitors[index]), int(sessions[index]),
             int(page_views[index]), int(conversions[index]))
            for index in np.flatnonzero(present)]


def _grouped(selection: Selection, rows: np.ndarray, column: str
             ) -> tuple[np.ndarray, list[str]]:
    ranks, texts = selection.ranks(column)
    return ranks[rows], texts


def top_pages(selection: Selection, limit: int) -> list[tuple[Any, ...]]:
    rows = selection.people() & selection.is_text("kind", "page_view")
    path, texts = _grouped(selection, rows, "path")
    count = len(texts)
    views = np.bincount(path, minlength=count)
    entries = np.bincount(path, weights=selection.flag(FLAG_START)[rows], minlength=count)
    shown = _ordered(np.flatnonzero(views), lambda group: (-views[group], texts[group]), limit)
    visitors = _distinct_by(path, selection.column("visitor")[rows], count)
    return [(texts[group], int(views[group]), int(visitors[group]), int(entries[group]))
            for group in shown]


def _session_visitors(sessions: _Sessions, visitors: np.ndarray) -> np.ndarray:
    # NOTE: the raw SQL takes the least visitor id text of a session, this the least visitor
    # integer. They differ only for a session with events of several visitors, which the
    # pipeline never stores: it keeps one session per visitor.
    return sessions.minimum(visitors)


def entry_pages(selection: Selection, limit: int) -> list[tuple[Any, ...]]:
    rows = selection.people() & selection.is_text("kind", "page_view")
    sessions = _Sessions(selection.column("session")[rows])
    path, texts = _grouped(selection, rows, "path")
    entry = sessions.maximum(path, selection.flag(FLAG_START)[rows])
    counted = sessions.present[entry[sessions.present] >= 0]
    groups = entry[counted]
    count = len(texts)
    entries = np.bincount(groups, minlength=count)
    bounces = np.bincount(groups, weights=sessions.count[counted] == 1, minlength=count)
    shown = _ordered(np.flatnonzero(entries), lambda group: (-entries[group], texts[group]),
                     limit)
    owners = _session_visitors(sessions, selection.column("visitor")[rows])[counted]
    visitors = _distinct_by(groups, owners, count)
    return [(texts[group], int(entries[group]), int(visitors[group]), int(bounces[group]))
            for group in shown]


def exit_pages(selection: Selection, limit: int) -> list[tuple[Any, ...]]:
    rows = selection.people() & selection.is_text("kind", "page_view")
    sessions = _Sessions(selection.column("session")[rows])
    path, texts = _grouped(selection, rows, "path")
    ts = selection.column("ts")[rows]
    count = len(texts)
    # The raw SQL takes the largest time, then path, of each session's page views.
    base = int(ts.min()) if ts.size else 0
    last = sessions.maximum((ts - base) * count + path)
    counted = sessions.present
    groups = last[counted] % count if count else last[counted]
    exits = np.bincount(groups, minlength=count)
    shown = _ordered(np.flatnonzero(exits), lambda group: (-exits[group], texts[group]), limit)
    owners = _session_visitors(sessions, selection.column("visitor")[rows])[counted]
    visitors = _distinct_by(groups, owners, count)
    return [(texts[group], int(exits[group]), int(visitors[group])) for group in shown]


def _first_fields(selection: Selection, fields: tuple[str, ...], goal: str | None
                  ) -> tuple[_Sessions, np.ndarray, list[np.ndarray], list[list[str]],
                             np.ndarray, np.ndarray, np.ndarray]:
    """Return per-session aggregates as ``queries._per_session`` computes them: the
    sessions, those that started, each field's rank of their first event, the fields' texts,
    conversions, conversion value and visitor."""
    rows = selection.people()
    sessions = _Sessions(selection.column("session")[rows])
    start = selection.flag(FLAG_START)[rows]
    started = sessions.present[sessions.maximum(start.astype(np.int64))[sessions.present] == 1]
    firsts, texts = [], []
    for field_name in fields:
        ranks, field_texts = _grouped(selection, rows, field_name)
        firsts.append(sessions.maximum(ranks, start)[started])
        texts.append(field_texts)
    converting = _conversions(selection, goal)[rows]
    conversions = sessions.total(converting.astype(np.float64))[started]
    value = sessions.total(np.where(converting, selection.column("value")[rows], 0.0))[started]
    owners = _session_visitors(sessions, selection.column("visitor")[rows])[started]
    return sessions, started, firsts, texts, conversions, value, owners


def acquisition(selection: Selection, fields: tuple[str, ...], limit: int, goal: str | None,
                require: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    needed = tuple(dict.fromkeys((*fields, *require)))
    _, started, firsts, texts, conversions, value, owners = _first_fields(
        selection, needed, goal)
    keep = np.ones(started.size, dtype=bool)
    if require:
        keep = np.zeros(started.size, dtype=bool)
        for name in require:
            index = needed.index(name)
            empty_rank = texts[index].index("")
            keep |= firsts[index] != empty_rank
    picked = [firsts[needed.index(name)][keep] for name in fields]
    picked_texts = [texts[needed.index(name)] for name in fields]
    sizes = [len(field_texts) for field_texts in picked_texts]
    key = _combine(picked, sizes)
    groups, inverse = _groups(key)
    count = groups.size
    sessions = np.bincount(inverse, minlength=count)
    labels = [tuple(picked_texts[position][part] for position, part in
                    enumerate(_split(int(group), sizes))) for group in groups]
    shown = _ordered(np.arange(count), lambda group: (-sessions[group], labels[group]), limit)
    visitors = _distinct_by(inverse, owners[keep], count)
    totals = np.bincount(inverse, weights=conversions[keep], minlength=count)
    values = np.bincount(inverse, weights=value[keep], minlength=count)
    return [(*labels[group], int(sessions[group]), int(visitors[group]), int(totals[group]),
             float(values[group])) for group in shown]


def ad_conversions(selection: Selection, goal: str | None) -> list[tuple[Any, ...]]:
    fields = ("campaign", "creative", "placement")
    _, _started, firsts, texts, conversions, value, _ = _first_fields(selection, fields, goal)
    keep = firsts[0] != texts[0].index("")
    sizes = [len(field_texts) for field_texts in texts]
    key = _combine([first[keep] for first in firsts], sizes)
    if not key.size:
        return []
    groups, inverse = _groups(key)
    totals = np.bincount(inverse, weights=conversions[keep], minlength=groups.size)
    values = np.bincount(inverse, weights=value[keep], minlength=groups.size)
    rows = []
    for index, group in enumerate(groups):
        parts = _split(int(group), sizes)
        rows.append((*(texts[position][part] for position, part in enumerate(parts)),
                     int(totals[index]), float(values[index])))
    return rows


def breakdown(selection: Selection, column: str, limit: int) -> list[tuple[Any, ...]]:
    rows = selection.people()
    groups, texts = _grouped(selection, rows, column)
    count = len(texts)
    visitors = _distinct_by(groups, selection.column("visitor")[rows], count)
    present = np.bincount(groups, minlength=count)
    shown = _ordered(np.flatnonzero(present), lambda group: (-visitors[group], texts[group]),
                     limit)
    started = selection.flag(FLAG_START)[rows]
    sessions = _distinct_by(groups[started], selection.column("session")[rows][started], count)
    page_views = np.bincount(groups, weights=selection.is_text("kind", "page_view")[rows],
                             minlength=count)
    return [(texts[group], int(visitors[group]), int(sessions[group]), int(page_views[group]))
            for group in shown]


def custom_events(selection: Selection, limit: int) -> list[tuple[Any, ...]]:
    rows = selection.people() & selection.is_text("kind", "custom")
    groups, texts = _grouped(selection, rows, "name")
    count = len(texts)
    events = np.bincount(groups, minlength=count)
    values = np.bincount(groups, weights=selection.column("value")[rows], minlength=count)
    shown = _ordered(np.flatnonzero(events), lambda group: (-events[group], texts[group]), limit)
    visitors = _distinct_by(groups, selection.column("visitor")[rows], count)
    return [(texts[group], int(events[group]), int(visitors[group]), float(values[group]))
            for group in shown]


def event_properties(selection: Selection, limit: int,
                     event: str | None) -> list[tuple[Any, ...]]:
    rows = selection.people() & selection.is_text("kind", "custom")
    if event:
        rows &= selection.is_text("name", event)
    props = selection.properties()
    kept = rows[props["row"]]
    row, key, text = props["row"][kept], props["key"][kept], props["text"][kept]
    name_ranks, names = selection.ranks("name")
    key_ranks = selection.dictionary(store.PROPERTY_KEY)
    text_ranks = selection.dictionary(store.PROPERTY_TEXT)
    if key.size and int(key.max()) > key_ranks.top:
        key_ranks = store.dictionary(selection.conn, selection.token, selection.site_id,
                                     store.PROPERTY_KEY, needed=int(key.max()))
    if text.size and int(text.max()) > text_ranks.top:
        text_ranks = store.dictionary(selection.conn, selection.token, selection.site_id,
                                      store.PROPERTY_TEXT, needed=int(text.max()))
    sizes = [len(names), len(key_ranks.texts), len(text_ranks.texts)]
    combined = _combine([name_ranks[row], key_ranks.ranks[key], text_ranks.ranks[text]], sizes)
    if not combined.size:
        return []
    groups, inverse = _groups(combined)
    events = np.bincount(inverse, minlength=groups.size)
    labels = []
    for group in groups:
        name_rank, key_rank, text_rank = _split(int(group), sizes)
        labels.append((names[name_rank], key_ranks.texts[key_rank], text_ranks.texts[text_rank]))
    shown = _ordered(np.arange(groups.size), lambda group: (-events[group], labels[group]),
                     limit)
    visitors = _distinct_by(inverse, selection.column("visitor")[row], groups.size)
    return [(*labels[group], int(events[group]), int(visitors[group])) for group in shown]


def email_campaigns(selection: Selection, limit: int) -> list[tuple[Any, ...]]:
    opens = selection.is_text("kind", "email_open")
    clicks = selection.is_text("kind", "click")
    rows = (opens | clicks) & (selection.column("campaign") != 0)
    groups, texts = _grouped(selection, rows, "campaign")
    count = len(texts)
    opens, clicks = opens[rows], clicks[rows]
    bot = selection.flag(FLAG_BOT)[rows]
    machine = selection.flag(FLAG_MACHINE_OPEN)[rows]
    # Unique opens and clicks count visitor ids, which follow the recipient where consent
    # allows it.
    visitors = selection.column("visitor")[rows]
    open_count = np.bincount(groups, weights=opens, minlength=count)
    present = np.bincount(groups, minlength=count)
    shown = _ordered(np.flatnonzero(present), lambda group: (-open_count[group], texts[group]),
                     limit)
    human = opens & ~machine & ~bot
    unique_opens = _distinct_by(groups[human], visitors[human], count)
    machine_opens = np.bincount(groups, weights=opens & machine, minlength=count)
    human_clicks = clicks & ~bot
    click_count = np.bincount(groups, weights=human_clicks, minlength=count)
    unique_clicks = _distinct_by(groups[human_clicks], visitors[human_clicks], count)
    return [(texts[group], int(open_count[group]), int(unique_opens[group]),
             int(machine_opens[group]), int(click_count[group]), int(unique_clicks[group]))
            for group in shown]


def ad_delivery(selection: Selection, limit: int) -> list[tuple[Any, ...]]:
    impressions = selection.is_text("kind", "impression")
    clicks = selection.is_text("kind", "click")
    rows = selection.people() & (impressions | clicks) & (selection.column("campaign") != 0)
    fields = ("campaign", "creative", "placement")
    ranked = [_grouped(selection, rows, name) for name in fields]
    sizes = [len(texts) for _, texts in ranked]
    key = _combine([ranks for ranks, _ in ranked], sizes)
    if not key.size:
        return []
    groups, inverse = _groups(key)
    shown_impressions = np.bincount(inverse, weights=impressions[rows], minlength=groups.size)
    shown_clicks = np.bincount(inverse, weights=clicks[rows], minlength=groups.size)
    labels = [tuple(ranked[position][1][part] for position, part in
                    enumerate(_split(int(group), sizes))) for group in groups]
    shown = _ordered(np.arange(groups.size),
                     lambda group: (-shown_impressions[group], -shown_clicks[group],
                                    labels[group]), limit)
    return [(*labels[group], int(shown_impressions[group]), int(shown_clicks[group]))
            for group in shown]


def bot_traffic(selection: Selection) -> list[tuple[Any, ...]]:
    rows = selection.flag(FLAG_BOT)
    groups, texts = _grouped(selection, rows, "bot_reason")
    count = len(texts)
    events = np.bincount(groups, minlength=count)
    visitors = _distinct_by(groups, selection.column("visitor")[rows], count)
    shown = _ordered(np.flatnonzero(events), lambda group: (-events[group], texts[group]), None)
    return [(texts[group], int(events[group]), int(visitors[group])) for group in shown]


def machine_opens(selection: Selection) -> list[tuple[Any, ...]]:
    rows = selection.is_text("kind", "email_open") & selection.flag(FLAG_MACHINE_OPEN)
    groups, texts = _grouped(selection, rows, "campaign")
    count = len(texts)
    opens = np.bincount(groups, minlength=count)
    recipients = _distinct_by(groups, selection.column("recipient")[rows], count,
                              skip_zero=True)
    shown = _ordered(np.flatnonzero(opens), lambda group: (-opens[group], texts[group]), None)
    return [(texts[group], int(opens[group]), int(recipients[group])) for group in shown]


def funnel_events(selection: Selection, conditions: list[tuple[str, str, str | None,
                                                                 str | None]]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the (visitor, time) pairs of people's selected events matching each funnel
    condition, as ``queries.funnel_matches`` flags them."""
    people = selection.people()
    found = []
    for kind, value, prop, prop_value in conditions:
        if kind == "event":
            rows = people & selection.is_text("name", value)
        elif kind == "page":
            rows = people & selection.is_text("kind", "page_view") & \
                selection.is_text("path", value)
        else:
            raise ValueError(f"invalid funnel step kind {kind!r}: expected event or page")
        if prop is not None:
            queries.property_key_param("sqlite", prop)
            rows &= _property_rows(selection, prop, prop_value or "")
        found.append((selection.column("visitor")[rows], selection.column("ts")[rows]))
    return found


def _property_rows(selection: Selection, key: str, value: str) -> np.ndarray:
    """Return a mask of the selected events whose property ``key`` compares equal to
    ``value`` in SQLite."""
    mask = np.zeros(selection.size, dtype=bool)
    key_code = selection.code(store.PROPERTY_KEY, key)
    text_code = selection.code(store.PROPERTY_TEXT, value)
    if key_code is None or text_code is None:
        return mask
    offset = 0
    for chunk, pick in zip(selection.chunks, selection.picks, strict=True):
        props = chunk.props
        hits = props["prop_row"][(props["prop_key"] == key_code)
                                 & (props["prop_filter"] == text_code)].astype(np.int64)
        if pick is None:
            mask[hits + offset] = True
            offset += chunk.rows
            continue
        if pick.size and hits.size:
            index = np.minimum(np.searchsorted(pick, hits), pick.size - 1)
            mask[index[pick[index] == hits] + offset] = True
        offset += pick.size
    return mask
