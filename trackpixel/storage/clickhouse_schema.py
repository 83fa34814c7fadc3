"""ClickHouse DDL, applied by versioned migrations that ``schema_migrations`` records.

The same statements run on ClickHouse 18.16 (Debian's package) and on current releases.
With one server, ``events`` and ``rejected_hits`` are ReplacingMergeTree tables. With a
cluster, every shard gets ``events_local`` and ``rejected_hits_local``, and every server gets
``Distributed`` tables named ``events`` and ``rejected_hits`` over them, so reports always read
``events`` whichever layout is in use.

Sorting keys end with the row's unique id, so two copies of one event share the whole key and
a merge (or a query with ``FINAL``) keeps one of them.

``session_events`` and ``page_events`` (``session_events_local`` and ``page_events_local`` on
each shard of a cluster, with Distributed tables of the short names over them) contain
aggregate states per session and day, and per path and day. Materialized views fill them from
every insert into ``events``, and unfiltered reports read them instead of the events.

``prop_keys`` and ``prop_values`` of ``events`` hold each event's properties as two parallel
arrays of names and value texts (``trackpixel.storage.rollups.property_items``). The store
computes them when it inserts an event, because ClickHouse 18.16 has no function that lists
the keys of a JSON object, and reports count properties over them with ARRAY JOIN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trackpixel.storage.records import EventRow

# ``visitor_key`` and ``session_key`` are 64-bit hashes of the ids, because exact distinct
# counts over them are several times faster than over the strings (``dialect.translate``).
# They are DEFAULT columns, not MATERIALIZED, so inserts through a Distributed table fill them.
# Columns whose vocabulary is small, and ``path``, which reports group by, use LowCardinality.
# ClickHouse 18.16 accepts that type only with allow_experimental_low_cardinality_type = 1,
# which the store sets for 18.x servers.
EVENTS_COLUMNS = """
    event_uid String,
    site_id LowCardinality(String),
    ts UInt64,
    local_day Date,
    local_hour UInt8,
    source LowCardinality(String),
    kind LowCardinality(String),
    name LowCardinality(String),
    client_event_id Nullable(String),
    url Nullable(String),
    host LowCardinality(Nullable(String)),
    path LowCardinality(Nullable(String)),
    title Nullable(String),
    referrer Nullable(String),
    referrer_host LowCardinality(Nullable(String)),
    channel LowCardinality(String),
    utm_source LowCardinality(Nullable(String)),
    utm_medium LowCardinality(Nullable(String)),
    utm_campaign LowCardinality(Nullable(String)),
    utm_term Nullable(String),
    utm_content Nullable(String),
    click_id_type LowCardinality(Nullable(String)),
    click_id Nullable(String),
    campaign LowCardinality(Nullable(String)),
    creative LowCardinality(Nullable(String)),
    placement LowCardinality(Nullable(String)),
    recipient Nullable(String),
    value Nullable(Float64),
    currency LowCardinality(Nullable(String)),
    props Nullable(String),
    visitor_id String,
    session_id String,
    session_start UInt8,
    browser LowCardinality(Nullable(String)),
    browser_version LowCardinality(Nullable(String)),
    os LowCardinality(Nullable(String)),
    os_version LowCardinality(Nullable(String)),
    device_type LowCardinality(Nullable(String)),
    is_bot UInt8,
    bot_reason LowCardinality(Nullable(String)),
    machine_open UInt8,
    ip_anon Nullable(String),
    country LowCardinality(Nullable(String)),
    consent_analytics LowCardinality(Nullable(String)),
    consent_ad_storage LowCardinality(Nullable(String)),
    consent_ad_user_data LowCardinality(Nullable(String)),
    consent_ad_personalization LowCardinality(Nullable(String)),
    gpc UInt8,
    dnt UInt8,
    cookieless UInt8,
    user_data Nullable(String),
    visitor_key UInt64 DEFAULT cityHash64(visitor_id),
    session_key UInt64 DEFAULT cityHash64(session_id)
"""

REJECTED_COLUMNS = """
    hit_uid String,
    received_ts UInt64,
    source LowCardinality(String),
    site_id LowCardinality(Nullable(String)),
    reason LowCardinality(String),
    detail Nullable(String),
    raw Nullable(String),
    user_agent Nullable(String)
"""

EVENTS_ENGINE = """ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(local_day)
ORDER BY (site_id, local_day, name, visitor_id, ts, event_uid)"""

REJECTED_ENGINE = """ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDate(toDateTime(intDiv(received_ts, 1000))))
ORDER BY (reason, received_ts, hit_uid)"""


# One ``session_events`` row contains the aggregate states of the people's events (no bots,
# no machine email opens) of one session, local day, visitor and set of breakdown values
# (``<dimension>_value``). A session report merges the states of its range's days per
# session, which gives the figures of grouping the range's events by session. Totals, day
# series and breakdowns count distinct visitors and sessions over the rows. Each -If state
# has the condition of the report query that reads it, and ``opening_<column>`` keeps an
# acquisition column of trackpixel.reports.queries. Sorting-key columns cannot be Nullable,
# so a NULL dimension is stored as ''.
SESSION_ACQUISITION_COLUMNS = ("channel", "referrer_host", "utm_source", "utm_medium",
                               "utm_campaign", "utm_term", "utm_content", "campaign",
                               "creative", "placement")
SESSION_DIMENSIONS = ("device_type", "browser", "os", "country")
_BROWSER = "source IN ('pixel', 'beacon')"
_PAGE_VIEW = "kind = 'page_view'"
SESSION_STATES: tuple[tuple[str, str, str], ...] = (
    # (column, type, expression over events)
    ("event_count", "AggregateFunction(count)", "countState()"),
    ("any_started", "AggregateFunction(max, UInt8)", "maxState(session_start)"),
    ("browser_hits", "AggregateFunction(countIf, UInt8)", f"countIfState({_BROWSER})"),
    ("browser_first_ts", "AggregateFunction(minIf, UInt64, UInt8)",
     f"minIfState(ts, {_BROWSER})"),
    ("browser_last_ts", "AggregateFunction(maxIf, UInt64, UInt8)",
     f"maxIfState(ts, {_BROWSER})"),
    ("browser_started", "AggregateFunction(maxIf, UInt8, UInt8)",
     f"maxIfState(session_start, {_BROWSER})"),
    ("page_view_count", "AggregateFunction(countIf, UInt8)", f"countIfState({_PAGE_VIEW})"),
    ("page_entry_started", "AggregateFunction(maxIf, UInt8, UInt8)",
     f"maxIfState(session_start, {_PAGE_VIEW})"),
    ("page_entry_path", "AggregateFunction(maxIf, String, UInt8)",
     f"maxIfState(ifNull(path, ''), {_PAGE_VIEW} AND session_start = 1)"),
    # The exit page is the path of the latest page view: the maximum of the 13-digit time
    # followed by the path, as trackpixel.reports.queries.exit_pages computes it.
    ("page_exit_view", "AggregateFunction(maxIf, String, UInt8)",
     f"maxIfState(concat(toString(ts), ' ', ifNull(path, '')), {_PAGE_VIEW})"),
    *((f"opening_{column}", "AggregateFunction(maxIf, String, UInt8)",
       f"maxIfState(ifNull({column}, ''), session_start = 1)")
      for column in SESSION_ACQUISITION_COLUMNS),
    ("conversion_count", "AggregateFunction(countIf, UInt8)", "countIfState(kind = 'custom')"),
    ("conversion_sum", "AggregateFunction(sumIf, Float64, UInt8)",
     "sumIfState(ifNull(value, 0), kind = 'custom')"),
)

SESSION_COLUMNS = ",\n".join(
    ["    site_id LowCardinality(String)", "    local_day Date", "    session_key UInt64",
     "    session_id String", "    visitor_id String"]
    + [f"    {column}_value LowCardinality(String)" for column in SESSION_DIMENSIONS]
    + ["    visitor_key UInt64"]
    + [f"    {column} {kind}" for column, kind, _ in SESSION_STATES])

SESSION_ENGINE = """ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(local_day)
ORDER BY (site_id, local_day, session_key, session_id, visitor_id, device_type_value,
          browser_value, os_value, country_value, visitor_key)"""

_SESSION_GROUP = ("site_id, local_day, session_key, session_id, visitor_id, "
                  + ", ".join(f"{column}_value" for column in SESSION_DIMENSIONS) + ", visitor_key")
# The events the view aggregates; ``{source}`` is the events table of this server.
SESSION_SELECT = (
    "SELECT site_id, local_day, cityHash64(session_id) AS session_key, session_id, visitor_id, "
    + ", ".join(f"ifNull({column}, '') AS {column}_value" for column in SESSION_DIMENSIONS)
    + ", cityHash64(visitor_id) AS visitor_key, "
    + ", ".join(f"{expression} AS {column}" for column, _, expression in SESSION_STATES)
    + " FROM {source} WHERE is_bot = 0 AND machine_open = 0{extra} "
    f"GROUP BY {_SESSION_GROUP}")

# Page views per site, local day and path: counts and the exact set of visitor hashes.
PAGE_COLUMNS = """
    site_id LowCardinality(String),
    local_day Date,
    page_path LowCardinality(String),
    view_count AggregateFunction(count),
    entry_count AggregateFunction(sum, UInt8),
    path_visitors AggregateFunction(uniqExact, UInt64)
"""

PAGE_ENGINE = """ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(local_day)
ORDER BY (site_id, local_day, page_path)"""

PAGE_SELECT = (
    "SELECT site_id, local_day, ifNull(path, '') AS page_path, countState() AS view_count, "
    "sumState(session_start) AS entry_count, "
    "uniqExactState(cityHash64(visitor_id)) AS path_visitors "
    "FROM {source} WHERE is_bot = 0 AND machine_open = 0 AND kind = 'page_view'{extra} "
    "GROUP BY site_id, local_day, page_path")


def session_select(source: str, extra: str = "") -> str:
    """Return the SELECT that aggregates the rows of ``source`` into ``session_events`` rows;
    ``extra`` is more WHERE text, starting with `` AND``."""
    return SESSION_SELECT.replace("{source}", source).replace("{extra}", extra)


def page_select(source: str, extra: str = "") -> str:
    """Return the SELECT that aggregates the rows of ``source`` into ``page_events`` rows;
    ``extra`` is more WHERE text, starting with `` AND``."""
    return PAGE_SELECT.replace("{source}", source).replace("{extra}", extra)


# One ``session_totals`` row contains the figures of one whole session (all its people's
# events, every day), computed from its ``session_events`` rows when the store writes, so a
# session report reads one row per session instead of merging states per query. A session
# gets a new row, with a larger ``version``, whenever it changes. The row that it replaces
# is cancelled by a copy of it with ``sign`` = -1 (``CANCEL_SELECT``). Reports take
# ``sign`` = 1 rows whose (session_key, version) has no cancel row, so their results do not
# depend on whether a merge has collapsed the pair yet. ``first_day`` and ``last_day`` are
# the first and last local days of the session's events. A report computes the sessions that
# cross its range's first or last day from ``session_events`` instead.
TOTALS_FIGURES: tuple[tuple[str, str, str], ...] = (
    # (column, type, expression over the session's ``session_events`` rows)
    # The least visitor id of the session, and of its page views, hashed as the raw reports'
    # distinct visitor counts are (``trackpixel.reports.queries``).
    ("min_visitor_key", "UInt64", "cityHash64(min(visitor_id))"),
    ("min_page_visitor_key", "UInt64",
     "cityHash64(minIf(visitor_id, finalizeAggregation(page_view_count) > 0))"),
    ("any_started", "UInt8", "maxMerge(any_started)"),
    ("browser_hits", "UInt64", "countIfMerge(browser_hits)"),
    ("browser_first_ts", "UInt64", "minIfMerge(browser_first_ts)"),
    ("browser_last_ts", "UInt64", "maxIfMerge(browser_last_ts)"),
    ("browser_started", "UInt8", "maxIfMerge(browser_started)"),
    ("page_view_count", "UInt64", "countIfMerge(page_view_count)"),
    ("page_entry_started", "UInt8", "maxIfMerge(page_entry_started)"),
    ("page_entry_path", "String", "maxIfMerge(page_entry_path)"),
    ("page_exit_view", "String", "maxIfMerge(page_exit_view)"),
    *((f"opening_{column}", "String", f"maxIfMerge(opening_{column})")
      for column in SESSION_ACQUISITION_COLUMNS),
    ("conversion_count", "UInt64", "countIfMerge(conversion_count)"),
    ("conversion_sum", "Float64", "sumIfMerge(conversion_sum)"),
)
TOTALS_COLUMNS = ",\n".join(
    ["    site_id LowCardinality(String)", "    first_day Date", "    last_day Date",
     "    session_key UInt64", "    version UInt64", "    sign Int8"]
    + [f"    {column} {kind}" for column, kind, _ in TOTALS_FIGURES])

# A row and its cancel row share the sorting key, so a merge collapses them. The partition
# is the months of ``first_day`` and ``last_day``, which the cancel row repeats. A part
# records the minimum and maximum of each partition key column, so a report's condition on
# ``last_day`` skips the parts of earlier months without reading them.
TOTALS_ENGINE = """ENGINE = CollapsingMergeTree(sign)
PARTITION BY (toYYYYMM(first_day), toYYYYMM(last_day))
ORDER BY (site_id, first_day, session_key, version)"""


# Cancel rows, in column order: copies with ``sign`` = -1 of the live rows of
# ``session_totals`` whose (session key, version) pairs are in the parallel array parameters
# ``cancel_keys`` and ``cancel_versions``. A cancel row repeats every figure, so sums weighted
# by ``sign`` equal those over the live rows, as ``session_spans`` computes them.
CANCEL_SELECT = (
    "SELECT site_id, first_day, last_day, session_key, version, toInt8(-1), "
    + ", ".join(column for column, _, _ in TOTALS_FIGURES)
    + " FROM session_totals WHERE site_id = %(site)s AND sign = 1 "
    "AND (session_key, version) IN (SELECT cancel_key, cancel_version FROM system.one "
    "ARRAY JOIN %(cancel_keys)s AS cancel_key, %(cancel_versions)s AS cancel_version)")


# ``session_spans`` sums the sessions started in the browser per site, first day and last
# day: how many, how many bounced (one pixel or beacon hit) and their total length in
# milliseconds. A materialized view adds every row written to ``session_totals``, weighted by
# its ``sign``, so a cancel row takes back what its row added. A report over the sessions
# inside its range reads a few rows per day here instead of one row per session.
SPAN_COLUMNS = """
    site_id LowCardinality(String),
    first_day Date,
    last_day Date,
    started Int64,
    bounces Int64,
    duration_ms Int64
"""

SPAN_ENGINE = """ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(first_day)
ORDER BY (site_id, first_day, last_day)"""


def span_select(source: str, extra: str = "") -> str:
    """Return the SELECT that sums the rows of ``source`` (``session_totals`` columns) into
    ``session_spans`` rows, weighted by ``sign``; ``extra`` is more WHERE text, starting
    with `` AND``."""
    started = "sign * browser_started"
    length = "(toInt64(browser_last_ts) - toInt64(browser_first_ts))"
    return (f"SELECT site_id, first_day, last_day, toInt64(sum({started})) AS started, "
            f"toInt64(sum({started} * (browser_hits = 1))) AS bounces, "
            f"toInt64(sum({started} * {length})) AS duration_ms "
            f"FROM {source} WHERE 1 = 1{extra} GROUP BY site_id, first_day, last_day")


def totals_select(source: str, version: int, extra: str = "") -> str:
    """Return the SELECT that computes ``session_totals`` rows, in column order, from the
    ``session_events`` rows of ``source``; ``extra`` is more WHERE text, starting with
    `` AND``. Every row gets ``version`` and ``sign`` = 1."""
    figures = ", ".join(expression for _, _, expression in TOTALS_FIGURES)
    return (f"SELECT site_id, min(local_day), max(local_day), session_key, "
            f"toUInt64({int(version)}), toInt8(1), {figures} "
            f"FROM {source} WHERE 1 = 1{extra} GROUP BY site_id, session_key")


# ``day_figures`` contains sums of people's events per site, dimension, item and local day:
# events, page views, sessions started (a session has one starting event), entries (page
# views that started a session), conversions and their value. Every figure adds up across
# rows, so a SummingMergeTree keeps one row per key after merges, and reports sum the rows
# without caring whether a merge ran. The dimensions are those of ``visitor_days`` that
# apply to every event, and ``page`` for page views. A materialized view fills the table
# from every insert into ``events``. Reports read a few rows per day here instead of one row per
# session and day in ``session_events``.
DAY_FIGURE_COLUMNS = """
    site_id LowCardinality(String),
    dimension LowCardinality(String),
    item LowCardinality(String),
    local_day Date,
    event_count UInt64,
    page_view_count UInt64,
    session_count UInt64,
    entry_count UInt64,
    conversion_count UInt64,
    conversion_sum Float64
"""

DAY_FIGURE_ENGINE = """ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(local_day)
ORDER BY (site_id, dimension, local_day, item)"""

DAY_FIGURE_DIMENSIONS = ("all", "device_type", "browser", "os", "country", "page")


def day_figures_select(source: str, extra: str = "") -> str:
    """Return the SELECT that sums the people's events of ``source`` into ``day_figures``
    rows; ``extra`` is more WHERE text, starting with `` AND``."""
    pairs = ", ".join(
        f"('{dimension.name}', {dimension.item_sql})" for dimension in VISITOR_DIMENSIONS
        if dimension.name in DAY_FIGURE_DIMENSIONS and dimension.condition_sql == "1 = 1")
    page = next(d for d in VISITOR_DIMENSIONS if d.name == "page")
    return (
        "SELECT site_id, toLowCardinality(figure_key.1) AS dimension, "
        "toLowCardinality(figure_key.2) AS item, local_day, "
        "count() AS event_count, countIf(kind = 'page_view') AS page_view_count, "
        "sum(session_start) AS session_count, "
        "sumIf(session_start, kind = 'page_view') AS entry_count, "
        "countIf(kind = 'custom') AS conversion_count, "
        "sumIf(ifNull(value, 0), kind = 'custom') AS conversion_sum "
        f"FROM {source} ARRAY JOIN arrayFilter(pair -> pair.1 != '', [{pairs}, "
        f"(if({page.condition_sql}, 'page', ''), {page.item_sql})]) AS figure_key "
        f"WHERE is_bot = 0 AND machine_open = 0{extra} "
        "GROUP BY site_id, dimension, item, local_day")


# One ``visitor_days`` row records that a visitor had people's events (no bots, no machine
# email opens) on a local day, counted under one ``item`` of a ``dimension``. The items are
# the device type, browser, OS or country of any event, the path of a page view, and the
# entry path, channel, referrer host or UTM parameters of the event that started a session.
# ``prev_day`` is the latest earlier day of the same site, dimension, item and visitor, or
# 1970-01-01 when there is none. The visitors of an item over a range are then the rows of
# the range's days whose ``prev_day`` lies before the range. Reports count rows instead of
# distinct visitor keys, which take the time on millions of events. When
# retention deletes a site's days before a day, the rows whose ``prev_day`` was deleted get
# 1970-01-01 instead (``ClickHouseStore.delete_rows``).
# The store adds the rows when it writes a batch (``ClickHouseStore.link_visitor_days``). An
# event on a day before a visitor's latest one changes the next row's ``prev_day``: that row
# gets a cancel row with ``sign`` = -1 and is written again, so reports sum ``sign``. The
# sorting key starts with the dimension, so a report reads only its dimension's rows, and
# then the visitor, so the store's lookups of a batch's visitors read a few granules per
# dimension. A batch's rows go into one part per month.
VISITOR_DAY_COLUMNS = """
    site_id LowCardinality(String),
    dimension String,
    item LowCardinality(String),
    local_day Date,
    visitor_key UInt64,
    prev_day Date,
    sign Int8
"""

VISITOR_DAY_ENGINE = """ENGINE = CollapsingMergeTree(sign)
PARTITION BY toYYYYMM(local_day)
ORDER BY (site_id, dimension, visitor_key, item, local_day, prev_day)
SETTINGS index_granularity = 1024"""

# The UTM parameters of a session's first event are joined into one item with this
# character, written in SQL string literals as '\x1f'.
UTM_SEPARATOR = "\x1f"
_UTM_COLUMNS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def _text(value: str | None) -> str:
    return value or ""


def _utm_item(event: EventRow) -> str | None:
    if event.session_start != 1 or not (event.utm_source or event.utm_campaign):
        return None
    return UTM_SEPARATOR.join(_text(getattr(event, column)) for column in _UTM_COLUMNS)


def utm_item_sql(columns: tuple[str, ...]) -> str:
    """Return the SQL that joins five non-null UTM columns into a ``visitor_days`` item."""
    return "concat(" + ", '\\x1f', ".join(columns) + ")"


@dataclass(frozen=True)
class VisitorDimension:
    """A dimension of ``visitor_days``: its item and the events that count for it, as SQL
    over ``events`` and as a function of one event (None when the event does not count)."""

    name: str
    item_sql: str
    condition_sql: str
    item: Callable[[EventRow], str | None]


_START = "session_start = 1"
VISITOR_DIMENSIONS: tuple[VisitorDimension, ...] = (
    VisitorDimension("all", "''", "1 = 1", lambda event: ""),
    VisitorDimension("device_type", "ifNull(device_type, '')", "1 = 1",
                     lambda event: _text(event.device_type)),
    VisitorDimension("browser", "ifNull(browser, '')", "1 = 1",
                     lambda event: _text(event.browser)),
    VisitorDimension("os", "ifNull(os, '')", "1 = 1", lambda event: _text(event.os)),
    VisitorDimension("country", "ifNull(country, '')", "1 = 1",
                     lambda event: _text(event.country)),
    VisitorDimension("page", "ifNull(path, '')", _PAGE_VIEW,
                     lambda event: _text(event.path) if event.kind == "page_view" else None),
    VisitorDimension("entry", "ifNull(path, '')", f"{_PAGE_VIEW} AND {_START}",
                     lambda event: _text(event.path)
                     if event.kind == "page_view" and event.session_start == 1 else None),
    VisitorDimension("channel", "channel", _START,
                     lambda event: event.channel if event.session_start == 1 else None),
    VisitorDimension("referrer_host", "ifNull(referrer_host, '')",
                     f"{_START} AND ifNull(referrer_host, '') != ''",
                     lambda event: event.referrer_host
                     if event.session_start == 1 and event.referrer_host else None),
    VisitorDimension("utm", utm_item_sql(tuple(f"ifNull({column}, '')"
                                                for column in _UTM_COLUMNS)),
                     f"{_START} AND (ifNull(utm_source, '') != '' "
                     f"OR ifNull(utm_campaign, '') != '')", _utm_item),
)


def visitor_items(event: EventRow) -> list[tuple[str, str]]:
    """Return the (dimension, item) pairs of ``visitor_days`` that a people's event counts
    for."""
    pairs = []
    for dimension in VISITOR_DIMENSIONS:
        item = dimension.item(event)
        if item is not None:
            pairs.append((dimension.name, item))
    return pairs


def visitor_days_select(source: str, dimension: VisitorDimension, extra: str = "") -> str:
    """Return the SELECT that computes the ``visitor_days`` rows of one dimension, in column
    order, from every people's event of ``source``.

    ``extra`` is more WHERE text, starting with `` AND``."""
    return (
        f"SELECT site_id, '{dimension.name}', item, days[position], visitor_key, "
        f"if(position = 1, toDate(0), days[position - 1]), toInt8(1) "
        f"FROM (SELECT site_id, {dimension.item_sql} AS item, visitor_key, "
        f"arraySort(groupUniqArray(local_day)) AS days FROM {source} "
        f"WHERE is_bot = 0 AND machine_open = 0 AND {dimension.condition_sql}{extra} "
        f"GROUP BY site_id, item, visitor_key) "
        f"ARRAY JOIN arrayEnumerate(days) AS position")


def fill_visitor_days(database: str, extra: str = "") -> list[str]:
    """Return the INSERTs that compute the ``visitor_days`` rows of every people's event of
    ``database.events`` (of those matching ``extra``, WHERE text starting with `` AND``).
    The table must hold no rows of those events' visitors."""
    return [f"INSERT INTO {database}.visitor_days "
            + visitor_days_select(f"{database}.events", dimension, extra)
            for dimension in VISITOR_DIMENSIONS]


# The property arrays of ``events``, in the order of ``rollups.property_items``.
PROPERTY_COLUMNS = "ADD COLUMN prop_keys Array(String), ADD COLUMN prop_values Array(String)"


@dataclass(frozen=True)
class Migration:
    """One schema version: statements for each storage server and, with a cluster, the
    Distributed tables created on every server after all shards have their local tables."""

    name: str
    local: tuple[str, ...]
    distributed: tuple[str, ...] = ()
    # True when the store computes ``prop_keys`` and ``prop_values`` of the events stored
    # before the migration, after the local statements.
    fill_properties: bool = False
    # True when the store fills ``session_totals`` from ``session_events`` once, after the
    # statements of every server (``fill_session_totals``).
    fill_session_totals: bool = False
    # True when the store truncates ``visitor_days`` and fills it from ``events`` once, after
    # the statements of every server (``fill_visitor_days``).
    fill_visitor_days: bool = False


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        name="0001_initial",
        local=(
            f"CREATE TABLE IF NOT EXISTS {{db}}.{{events}} ({EVENTS_COLUMNS}) {EVENTS_ENGINE}",
            f"CREATE TABLE IF NOT EXISTS {{db}}.{{rejected}} ({REJECTED_COLUMNS}) "
            f"{REJECTED_ENGINE}",
        ),
        distributed=(
            # Sharding by visitor keeps each visitor's events on one shard, and a replayed
            # event lands where its first copy is, so the shard's merges collapse the two.
            "CREATE TABLE IF NOT EXISTS {db}.events AS {db}.events_local "
            "ENGINE = Distributed({cluster}, {db}, events_local, sipHash64(visitor_id))",
            "CREATE TABLE IF NOT EXISTS {db}.rejected_hits AS {db}.rejected_hits_local "
            "ENGINE = Distributed({cluster}, {db}, rejected_hits_local, sipHash64(hit_uid))",
        ),
    ),
    Migration(
        name="0002_copy_checkpoints",
        local=(
            # ``trackpixel migrate`` progress: the highest source row id copied per table.
            "CREATE TABLE IF NOT EXISTS {db}.copy_checkpoints (source String, "
            "table_name String, last_id UInt64, updated DateTime) "
            "ENGINE = ReplacingMergeTree ORDER BY (source, table_name, last_id)",
        ),
    ),
    Migration(
        name="0003_session_events",
        local=(
            # ``session_{events}`` is ``session_events`` on one server and
            # ``session_events_local`` on a shard, beside that server's events table; the
            # same holds for ``page_{events}``.
            f"CREATE TABLE IF NOT EXISTS {{db}}.session_{{events}} ({SESSION_COLUMNS}) "
            f"{SESSION_ENGINE}",
            f"CREATE TABLE IF NOT EXISTS {{db}}.page_{{events}} ({PAGE_COLUMNS}) {PAGE_ENGINE}",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.session_{events}_mv "
            "TO {db}.session_{events} AS " + session_select("{db}.{events}"),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.page_{events}_mv "
            "TO {db}.page_{events} AS " + page_select("{db}.{events}"),
            # Events stored before the views existed. An insert that runs between a view's
            # creation and these statements is counted twice, so the migration has to run
            # before events are written, as ``ClickHouseStore`` does when it opens.
            "INSERT INTO {db}.session_{events} " + session_select("{db}.{events}"),
            "INSERT INTO {db}.page_{events} " + page_select("{db}.{events}"),
        ),
        distributed=(
            "CREATE TABLE IF NOT EXISTS {db}.session_events AS {db}.session_events_local "
            "ENGINE = Distributed({cluster}, {db}, session_events_local, "
            "sipHash64(visitor_id))",
            "CREATE TABLE IF NOT EXISTS {db}.page_events AS {db}.page_events_local "
            "ENGINE = Distributed({cluster}, {db}, page_events_local, rand())",
        ),
    ),
    Migration(
        name="0004_event_properties",
        # 18.16 has no ADD COLUMN IF NOT EXISTS: the store skips an ADD COLUMN whose column
        # exists, as after an interrupted run of this migration.
        # NOTE: events that a process of an earlier version inserts after this migration keep
        # empty arrays, and no later step fills them.
        local=(f"ALTER TABLE {{db}}.{{events}} {PROPERTY_COLUMNS}",),
        distributed=(f"ALTER TABLE {{db}}.events {PROPERTY_COLUMNS}",),
        fill_properties=True,
    ),
    Migration(
        name="0005_session_totals",
        # ``{totals}`` is ``session_totals`` on one server and ``session_totals_local`` on a
        # shard. The Distributed table shards by session, so a row, its cancel row and the
        # session's later rows are on one shard, where merges collapse them.
        local=(f"CREATE TABLE IF NOT EXISTS {{db}}.{{totals}} ({TOTALS_COLUMNS}) "
               f"{TOTALS_ENGINE}",),
        distributed=(
            "CREATE TABLE IF NOT EXISTS {db}.session_totals AS {db}.session_totals_local "
            "ENGINE = Distributed({cluster}, {db}, session_totals_local, "
            "sipHash64(session_key))",
        ),
        fill_session_totals=True,
    ),
    Migration(
        name="0006_visitor_days",
        # ``{days}`` is ``visitor_days`` on one server and ``visitor_days_local`` on a shard.
        # The Distributed table shards by visitor, so the rows of a visitor, which the store
        # reads and cancels together, are on one shard.
        # NOTE: events that a process of an earlier version inserts after this migration get
        # no rows here, so visitor counts leave them out until the table is filled again.
        local=(f"CREATE TABLE IF NOT EXISTS {{db}}.{{days}} ({VISITOR_DAY_COLUMNS}) "
               f"{VISITOR_DAY_ENGINE}",),
        distributed=(
            "CREATE TABLE IF NOT EXISTS {db}.visitor_days AS {db}.visitor_days_local "
            "ENGINE = Distributed({cluster}, {db}, visitor_days_local, visitor_key)",
        ),
        fill_visitor_days=True,
    ),
    Migration(
        name="0007_day_figures",
        # ``{figures}`` is ``day_figures`` on one server and ``day_figures_local`` on a
        # shard, filled from that server's events table.
        local=(
            f"CREATE TABLE IF NOT EXISTS {{db}}.{{figures}} ({DAY_FIGURE_COLUMNS}) "
            f"{DAY_FIGURE_ENGINE}",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{figures}_mv "
            "TO {db}.{figures} AS " + "{figures_select}",
            # Events stored before the view existed, as for ``session_events``. Rows of an
            # interrupted run go first, so the fill counts no event twice.
            "TRUNCATE TABLE {db}.{figures}",
            "INSERT INTO {db}.{figures} {figures_select}",
        ),
        distributed=(
            "CREATE TABLE IF NOT EXISTS {db}.day_figures AS {db}.day_figures_local "
            "ENGINE = Distributed({cluster}, {db}, day_figures_local, rand())",
        ),
    ),
    Migration(
        name="0008_session_spans",
        # ``{spans}`` is ``session_spans`` on one server and ``session_spans_local`` on a
        # shard, filled from that server's ``{totals}``. The INSERT adds the live rows stored
        # before the view existed. Cancel rows written before this migration repeat no
        # figures, so the fill skips them and the rows they cancel. Reports that weight the
        # rows of ``session_totals`` by ``sign`` need a cancel row to repeat its row's
        # figures, so OPTIMIZE ... FINAL first merges every partition, which removes each
        # earlier row together with its cancel row.
        # NOTE: OPTIMIZE ... FINAL rewrites the whole table once, which takes time on a
        # large one.
        local=(
            "OPTIMIZE TABLE {db}.{totals} FINAL",
            f"CREATE TABLE IF NOT EXISTS {{db}}.{{spans}} ({SPAN_COLUMNS}) {SPAN_ENGINE}",
            # Rows of an interrupted run go first, so the fill counts no session twice.
            "TRUNCATE TABLE {db}.{spans}",
            "INSERT INTO {db}.{spans} {spans_fill}",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{spans}_mv TO {db}.{spans} AS "
            "{spans_select}",
        ),
        distributed=(
            "CREATE TABLE IF NOT EXISTS {db}.session_spans AS {db}.session_spans_local "
            "ENGINE = Distributed({cluster}, {db}, session_spans_local, rand())",
        ),
    ),
)


def table_names(database: str, cluster: str | None) -> dict[str, str]:
    """Return the names that the migrations' statements use: the database, the cluster, and
    the tables that a shard of a cluster names with a ``_local`` suffix."""
    suffix = "_local" if cluster else ""
    return {"db": database, "cluster": cluster or "", "events": f"events{suffix}",
            "rejected": f"rejected_hits{suffix}", "totals": f"session_totals{suffix}",
            "days": f"visitor_days{suffix}", "figures": f"day_figures{suffix}",
            "figures_select": day_figures_select(f"{database}.events{suffix}"),
            "spans": f"session_spans{suffix}",
            "spans_select": span_select(f"{database}.session_totals{suffix}"),
            "spans_fill": span_select(
                f"{database}.session_totals{suffix}",
                f" AND sign = 1 AND (session_key, version) NOT IN (SELECT session_key, version "
                f"FROM {database}.session_totals{suffix} WHERE sign = -1)")}

# The version of the rows that ``fill_session_totals`` writes; rows written later get the
# time in nanoseconds, which is larger.
FILL_VERSION = 1


def fill_session_totals(database: str) -> str:
    """Return the INSERT that adds a ``session_totals`` row for every session of
    ``database.session_events`` that has no row yet, so that running it again after an
    interruption adds only the missing sessions.

    ``session_events`` and ``session_totals`` are the Distributed tables on a cluster, so
    each session is computed from the rows of every shard."""
    return (f"INSERT INTO {database}.session_totals "
            + totals_select(f"{database}.session_events", FILL_VERSION,
                            f" AND session_key GLOBAL NOT IN "
                            f"(SELECT session_key FROM {database}.session_totals)"))

def fill_written_tables(database: str) -> list[str]:
    """Return the statements that compute the tables the store writes after each batch,
    ``session_totals`` and ``visitor_days``, for events inserted into ``database.events``
    directly, as bulk loads do. ``visitor_days`` must be empty."""
    return [fill_session_totals(database), *fill_visitor_days(database)]


SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
    "(name String, applied_ts DateTime) ENGINE = ReplacingMergeTree ORDER BY name"
)
