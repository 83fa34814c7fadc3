"""Report SQL, built by pure functions: a ``ReportQuery`` in, SQL text and parameters out.

Placeholders are ``:name``; each store translates them for its driver
(``trackpixel.storage.dialect``). The text stays within the SQL that SQLite and ClickHouse
share: an output alias never reuses a column name, because ClickHouse would substitute the
alias for the column everywhere in the query. Every ORDER BY ends on a unique key, so that
LIMIT keeps the same rows on both backends, and names its columns, because ClickHouse 18.16
reads ``ORDER BY 1`` as a constant. Days are the site's local days, stored on each event at
ingest, so every backend buckets the same way without time-zone functions. Bots are excluded
from every count of people; machine email opens are excluded from everything except the email
and data-quality figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trackpixel.storage.clickhouse_schema import utm_item_sql


@dataclass(frozen=True)
class ReportQuery:
    site_id: str
    from_day: str  # inclusive, YYYY-MM-DD in the site's time zone
    to_day: str  # inclusive
    limit: int = 50
    filters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sql:
    text: str
    params: dict[str, Any]


# Dashboard and report API builders.
#
# These accept the dashboard filters in ``ReportQuery.filters``: any column of
# ``DASHBOARD_FILTERABLE`` and ``prop:KEY`` for a custom-event property. The SQL stays within
# what SQLite and ClickHouse share, except for the property lookup, which ``property_value``
# writes per dialect.

# Columns a filter may name, so filter keys never reach SQL as text.
DASHBOARD_FILTERABLE = ("channel", "utm_source", "utm_medium", "utm_campaign", "campaign",
                        "device_type", "browser", "os", "path", "name", "source", "country",
                        "utm_term", "utm_content", "referrer_host")
PROPERTY_FILTER_PREFIX = "prop:"
MAX_PROPERTY_KEY_CHARS = 64
# Dimensions a breakdown report may group by, mapped to their column.
BREAKDOWN_COLUMNS = {"devices": "device_type", "browsers": "browser", "os": "os",
                     "countries": "country"}


def property_value(dialect: str, key_param: str, alias: str = "") -> str:
    """Return SQL for the text value of the custom property named by ``:key_param``, NULL
    when the event has no such property."""
    prefix = f"{alias}." if alias else ""
    if dialect == "clickhouse":
        # The property arrays hold the value texts of ``rollups.property_items``; ClickHouse
        # 18.16 has no function that reads a JSON value as text.
        return (f"if(has({prefix}prop_keys, :{key_param}), "
                f"{prefix}prop_values[indexOf({prefix}prop_keys, :{key_param})], NULL)")
    # A string value compares as it is and any other value as its JSON text ('true', 'null',
    # '1.5'), as ``property_items`` writes it. Property text that is not JSON matches nothing.
    # NOTE: json_extract cuts a string at its first NUL character, so such a value never matches.
    # json_extract returns true and false as 1 and 0, and null as NULL, so those take their
    # JSON text from json_type. Numbers, arrays and objects cast to the same text.
    props = f"{prefix}props"
    kind = f"json_type({props}, :{key_param})"
    return (f"CASE WHEN NOT json_valid({props}) THEN NULL "
            f"WHEN {kind} IN ('true', 'false', 'null') THEN {kind} "
            f"ELSE CAST(json_extract({props}, :{key_param}) AS TEXT) END")


def property_key_param(dialect: str, key: str) -> str:
    """Return the bound value naming ``key`` for ``property_value`` in ``dialect``."""
    if not key or len(key) > MAX_PROPERTY_KEY_CHARS or '"' in key or "\\" in key:
        raise ValueError(f"invalid property name {key!r}: use 1 to {MAX_PROPERTY_KEY_CHARS} "
                         "characters without quotes or backslashes")
    return key if dialect == "clickhouse" else f'$."{key}"'


def dashboard_where(query: ReportQuery, *, dialect: str = "sqlite", people: bool = True,
                    alias: str = "") -> tuple[str, dict[str, Any]]:
    """Return the WHERE text and parameters for site, day range, people and every filter."""
    prefix = f"{alias}." if alias else ""
    clauses = [f"{prefix}site_id = :site_id", f"{prefix}local_day >= :from_day",
               f"{prefix}local_day <= :to_day"]
    params: dict[str, Any] = {"site_id": query.site_id, "from_day": query.from_day,
                              "to_day": query.to_day}
    if people:
        clauses.append(f"{prefix}is_bot = 0")
        clauses.append(f"{prefix}machine_open = 0")
    for index, (key, value) in enumerate(sorted(query.filters.items())):
        if key.startswith(PROPERTY_FILTER_PREFIX):
            name = key[len(PROPERTY_FILTER_PREFIX):]
            params[f"fkey_{index}"] = property_key_param(dialect, name)
            clauses.append(f"{property_value(dialect, f'fkey_{index}', alias)} = :filter_{index}")
        elif key in DASHBOARD_FILTERABLE:
            clauses.append(f"{prefix}{key} = :filter_{index}")
        else:
            raise ValueError(f"cannot filter on {key!r}; filterable: "
                             f"{', '.join(DASHBOARD_FILTERABLE)} or prop:NAME")
        params[f"filter_{index}"] = value
    return " AND ".join(clauses), params


def totals(query: ReportQuery, *, dialect: str = "sqlite", goal: str | None = None) -> Sql:
    """Visitors, sessions, page views, events and conversions over the whole range.

    Visitors and sessions are distinct counts over the range, never sums of daily counts. A
    conversion is a custom event, or only the custom event named ``goal`` when given.
    """
    if dialect == "clickhouse" and not query.filters and not goal:
        return totals_clickhouse(query)
    where, params = dashboard_where(query, dialect=dialect)
    goal_clause = ""
    if goal:
        goal_clause = " AND name = :goal"
        params["goal"] = goal
    text = f"""
SELECT
    COUNT(DISTINCT visitor_id) AS visitors,
    COUNT(DISTINCT CASE WHEN session_start = 1 THEN session_id END) AS sessions,
    SUM(CASE WHEN kind = 'page_view' THEN 1 ELSE 0 END) AS page_views,
    COUNT(*) AS events,
    SUM(CASE WHEN kind = 'custom'{goal_clause} THEN 1 ELSE 0 END) AS conversions,
    SUM(CASE WHEN kind = 'custom'{goal_clause} THEN COALESCE(value, 0) ELSE 0 END)
        AS conversion_value
FROM events
WHERE {where}
"""
    return Sql(text, params)


def session_stats(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    """Sessions that started in the range: how many, how many bounced, their mean length.

    A bounce is a session with one page view or beacon event. Length is the time from its
    first to its last event inside the range, in seconds.
    """
    if dialect == "clickhouse" and not query.filters:
        return session_stats_clickhouse(query)
    where, params = dashboard_where(query, dialect=dialect)
    text = f"""
SELECT
    COUNT(*) AS sessions,
    SUM(CASE WHEN hits = 1 THEN 1 ELSE 0 END) AS bounces,
    AVG((last_ts - first_ts) / 1000.0) AS mean_duration_s
FROM (
    SELECT session_id, COUNT(*) AS hits, MIN(ts) AS first_ts, MAX(ts) AS last_ts,
           MAX(session_start) AS started
    FROM events
    WHERE {where} AND source IN ('pixel', 'beacon')
    GROUP BY session_id
) AS per_session
WHERE started = 1
"""
    return Sql(text, params)


def week_bucket(days: list[str]) -> tuple[str, dict[str, Any]]:
    """Return a CASE expression mapping ``local_day`` to the Monday of its week.

    ``days`` are the Mondays that start each week of the range, in order. Weeks are cut on
    stored local days, so no backend needs date functions.
    """
    if not days:
        raise ValueError("a weekly series needs at least one week")
    params: dict[str, Any] = {}
    branches = []
    for index, monday in enumerate(days[1:], start=1):
        params[f"week_{index}"] = monday
        params[f"week_label_{index - 1}"] = days[index - 1]
        branches.append(f"WHEN local_day < :week_{index} THEN :week_label_{index - 1}")
    params["week_label_last"] = days[-1]
    text = "CASE " + " ".join(branches) + " ELSE :week_label_last END" if branches \
        else ":week_label_last"
    return text, params


def series(query: ReportQuery, unit: str, *, dialect: str = "sqlite",
           mondays: list[str] | None = None, goal: str | None = None) -> Sql:
    """Visitors, sessions, page views and conversions per hour, day or week bucket."""
    if dialect == "clickhouse" and not query.filters and not goal and unit in ("day", "week"):
        return series_clickhouse(query, unit, mondays)
    where, params = dashboard_where(query, dialect=dialect)
    if unit == "hour":
        bucket, group = "local_day AS day, local_hour AS hour", "local_day, local_hour"
    elif unit == "day":
        bucket, group = "local_day AS day, 0 AS hour", "local_day"
    elif unit == "week":
        case, week_params = week_bucket(mondays or [])
        params.update(week_params)
        bucket, group = f"{case} AS day, 0 AS hour", case
    else:
        raise ValueError(f"invalid interval {unit!r}: expected hour, day or week")
    goal_clause = ""
    if goal:
        goal_clause = " AND name = :goal"
        params["goal"] = goal
    text = f"""
SELECT {bucket},
       COUNT(DISTINCT visitor_id) AS visitors,
       COUNT(DISTINCT CASE WHEN session_start = 1 THEN session_id END) AS sessions,
       SUM(CASE WHEN kind = 'page_view' THEN 1 ELSE 0 END) AS page_views,
       SUM(CASE WHEN kind = 'custom'{goal_clause} THEN 1 ELSE 0 END) AS conversions
FROM events
WHERE {where}
GROUP BY {group}
ORDER BY day, hour
"""
    return Sql(text, params)


def top_pages(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    if dialect == "clickhouse" and not query.filters:
        return top_pages_clickhouse(query)
    where, params = dashboard_where(query, dialect=dialect)
    params["limit"] = query.limit
    text = f"""
SELECT COALESCE(path, '') AS path_key, COUNT(*) AS page_views,
       COUNT(DISTINCT visitor_id) AS visitors, SUM(session_start) AS entries
FROM events
WHERE {where} AND kind = 'page_view'
GROUP BY COALESCE(path, '')
ORDER BY page_views DESC, path_key
LIMIT :limit
"""
    return Sql(text, params)


def entry_pages(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    """Pages that started sessions, and how many of those sessions had one page view only.

    One pass groups page views by session; the entry is the session-start page view.
    """
    if dialect == "clickhouse" and not query.filters:
        return entry_pages_clickhouse(query)
    where, params = dashboard_where(query, dialect=dialect)
    params["limit"] = query.limit
    text = f"""
SELECT entry_path, COUNT(*) AS entries, COUNT(DISTINCT session_visitor) AS visitors,
       SUM(CASE WHEN page_views = 1 THEN 1 ELSE 0 END) AS bounces
FROM (
    SELECT session_id, MIN(visitor_id) AS session_visitor, COUNT(*) AS page_views,
           MAX(CASE WHEN session_start = 1 THEN COALESCE(path, '') END) AS entry_path
    FROM events
    WHERE {where} AND kind = 'page_view'
    GROUP BY session_id
) AS per_session
WHERE entry_path IS NOT NULL
GROUP BY entry_path
ORDER BY entries DESC, entry_path
LIMIT :limit
"""
    return Sql(text, params)


def exit_pages(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    """The last page view of each session in the range, counted per path.

    The last view is found without window functions: the maximum of the 13-digit
    millisecond time followed by the path, which holds for times from 2001 to 2286.
    """
    if dialect == "clickhouse" and not query.filters:
        return exit_pages_clickhouse(query)
    where, params = dashboard_where(query, dialect=dialect)
    params["limit"] = query.limit
    text = f"""
SELECT substr(last_view, 15) AS exit_path, COUNT(*) AS exits,
       COUNT(DISTINCT session_visitor) AS visitors
FROM (
    SELECT session_id, MIN(visitor_id) AS session_visitor,
           MAX(CAST(ts AS TEXT) || ' ' || COALESCE(path, '')) AS last_view
    FROM events
    WHERE {where} AND kind = 'page_view'
    GROUP BY session_id
) AS per_session
GROUP BY substr(last_view, 15)
ORDER BY exits DESC, exit_path
LIMIT :limit
"""
    return Sql(text, params)


def _per_session(query: ReportQuery, columns: tuple[str, ...], dialect: str,
                 goal: str | None, require: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """Return a subquery with one row per session: its first event's ``columns`` as
    ``first_<column>``, its visitor as ``session_visitor``, a ``started`` flag, and its
    conversions (custom events, or only ``goal``) and their value as ``session_conversions``
    and ``session_value``. No alias equals a column of ``events``, since ClickHouse would put
    the aliased expression in place of the column. The caller keeps only started sessions
    with a non-empty ``first_<column>`` for one of ``require``, so the subquery may leave
    out the other sessions."""
    if dialect == "clickhouse" and not query.filters and not goal:
        return _per_session_clickhouse(query, columns, require)
    where, params = dashboard_where(query, dialect=dialect)
    goal_clause = ""
    if goal:
        goal_clause = " AND name = :goal"
        params["goal"] = goal
    firsts = ", ".join(f"MAX(CASE WHEN session_start = 1 THEN COALESCE({column}, '') END) "
                       f"AS first_{column}" for column in columns)
    text = (f"(SELECT session_id, MIN(visitor_id) AS session_visitor, "
            f"MAX(session_start) AS started, "
            f"{firsts}, "
            f"SUM(CASE WHEN kind = 'custom'{goal_clause} THEN 1 ELSE 0 END) "
            f"AS session_conversions, "
            f"SUM(CASE WHEN kind = 'custom'{goal_clause} THEN COALESCE(value, 0) ELSE 0 END) "
            f"AS session_value "
            f"FROM events WHERE {where} GROUP BY session_id)")
    return text, params


ACQUISITION_COLUMNS = ("channel", "referrer_host", "utm_source", "utm_medium", "utm_campaign",
                       "utm_term", "utm_content", "campaign", "creative", "placement")


def acquisition(query: ReportQuery, columns: tuple[str, ...], *, dialect: str = "sqlite",
                goal: str | None = None, require: tuple[str, ...] = ()) -> Sql:
    """Sessions, visitors and conversions grouped by the columns of each session's first event.

    Only sessions that started in the range count. ``require`` lists columns of which at
    least one must be non-empty. Conversions are the custom events of the same session.
    """
    if not columns or not set(columns) | set(require) <= set(ACQUISITION_COLUMNS):
        raise ValueError(f"invalid grouping {columns!r}; allowed: "
                         f"{', '.join(ACQUISITION_COLUMNS)}")
    needed = tuple(dict.fromkeys((*columns, *require)))
    sessions, params = _per_session(query, needed, dialect, goal, require)
    params["limit"] = query.limit
    required = "".join(f" OR first_{column} <> ''" for column in require)
    required = f" AND ({required[4:]})" if required else ""
    firsts = ", ".join(f"first_{column}" for column in columns)
    dimension = _ACQUISITION_DIMENSIONS.get((columns, require))
    if dialect == "clickhouse" and not query.filters and not goal and dimension:
        sessions, params = _per_session_clickhouse(query, needed, require, weighted=True)
        params["limit"] = query.limit
        return _acquisition_clickhouse(query, columns, sessions, params, required, dimension)
    text = f"""
SELECT {firsts},
       COUNT(*) AS sessions, COUNT(DISTINCT session_visitor) AS visitors,
       SUM(session_conversions) AS conversions, SUM(session_value) AS conversion_value
FROM {sessions} AS per_session
WHERE started = 1{required}
GROUP BY {firsts}
ORDER BY sessions DESC, {firsts}
LIMIT :limit
"""
    return Sql(text, params)


def breakdown(query: ReportQuery, dimension: str, *, dialect: str = "sqlite") -> Sql:
    """Visitors, sessions and page views per device type, browser, OS or country."""
    column = BREAKDOWN_COLUMNS.get(dimension)
    if column is None:
        raise ValueError(f"invalid breakdown {dimension!r}; expected "
                         f"{', '.join(BREAKDOWN_COLUMNS)}")
    if dialect == "clickhouse" and not query.filters:
        return breakdown_clickhouse(query, column)
    where, params = dashboard_where(query, dialect=dialect)
    params["limit"] = query.limit
    text = f"""
SELECT COALESCE({column}, '') AS dimension_key,
       COUNT(DISTINCT visitor_id) AS visitors,
       COUNT(DISTINCT CASE WHEN session_start = 1 THEN session_id END) AS sessions,
       SUM(CASE WHEN kind = 'page_view' THEN 1 ELSE 0 END) AS page_views
FROM events
WHERE {where}
GROUP BY COALESCE({column}, '')
ORDER BY visitors DESC, dimension_key
LIMIT :limit
"""
    return Sql(text, params)


def custom_events(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    where, params = dashboard_where(query, dialect=dialect)
    params["limit"] = query.limit
    text = f"""
SELECT name, COUNT(*) AS events, COUNT(DISTINCT visitor_id) AS visitors,
       SUM(COALESCE(value, 0)) AS total_value
FROM events
WHERE {where} AND kind = 'custom'
GROUP BY name
ORDER BY events DESC, name
LIMIT :limit
"""
    return Sql(text, params)


def event_props_sample(query: ReportQuery, max_rows: int, *, dialect: str = "sqlite",
                       event: str | None = None) -> Sql:
    """Names and property JSON of up to ``max_rows`` custom events, for counting in Python."""
    where, params = dashboard_where(query, dialect=dialect)
    params["max_rows"] = max_rows
    event_clause = ""
    if event:
        event_clause = " AND name = :event"
        params["event"] = event
    text = f"""
SELECT name, props, visitor_id
FROM events
WHERE {where} AND kind = 'custom' AND props IS NOT NULL{event_clause}
LIMIT :max_rows
"""
    return Sql(text, params)


def event_properties_clickhouse(query: ReportQuery, *, event: str | None = None) -> Sql:
    """Custom events per event name, property name and value text, with events and distinct
    visitors, over every matching event, from the property arrays of ClickHouse ``events``.

    The rows are those that ``run.event_properties`` counts in Python from the property JSON,
    in the same order."""
    where, params = dashboard_where(query, dialect="clickhouse")
    params["limit"] = query.limit
    event_clause = ""
    if event:
        event_clause = " AND name = :event"
        params["event"] = event
    text = f"""
SELECT name, prop_key, prop_text, COUNT(*) AS events, COUNT(DISTINCT visitor_id) AS visitors
FROM events
ARRAY JOIN prop_keys AS prop_key, prop_values AS prop_text
WHERE {where} AND kind = 'custom' AND props IS NOT NULL{event_clause}
GROUP BY name, prop_key, prop_text
ORDER BY events DESC, name, prop_key, prop_text
LIMIT :limit
"""
    return Sql(text, params)


def email_campaigns(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    """Per email campaign: opens, unique human opens, machine opens, human clicks.

    Unique counts use the visitor id: the recipient's where analytics consent allows it,
    otherwise the daily device hash, so opens without consent still count as people."""
    where, params = dashboard_where(query, dialect=dialect, people=False)
    params["limit"] = query.limit
    text = f"""
SELECT campaign,
       SUM(CASE WHEN kind = 'email_open' THEN 1 ELSE 0 END) AS opens,
       COUNT(DISTINCT CASE WHEN kind = 'email_open' AND machine_open = 0 AND is_bot = 0
                           THEN visitor_id END) AS unique_human_opens,
       SUM(CASE WHEN kind = 'email_open' AND machine_open = 1 THEN 1 ELSE 0 END)
           AS machine_opens,
       SUM(CASE WHEN kind = 'click' AND is_bot = 0 THEN 1 ELSE 0 END) AS clicks,
       COUNT(DISTINCT CASE WHEN kind = 'click' AND is_bot = 0 THEN visitor_id END)
           AS unique_clicks
FROM events
WHERE {where} AND kind IN ('email_open', 'click') AND campaign IS NOT NULL
GROUP BY campaign
ORDER BY opens DESC, campaign
LIMIT :limit
"""
    return Sql(text, params)


def ad_delivery(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    """Impressions and clicks per campaign, creative and placement."""
    where, params = dashboard_where(query, dialect=dialect)
    params["limit"] = query.limit
    text = f"""
SELECT COALESCE(campaign, '') AS campaign_key, COALESCE(creative, '') AS creative_key,
       COALESCE(placement, '') AS placement_key,
       SUM(CASE WHEN kind = 'impression' THEN 1 ELSE 0 END) AS impressions,
       SUM(CASE WHEN kind = 'click' THEN 1 ELSE 0 END) AS clicks
FROM events
WHERE {where} AND kind IN ('impression', 'click') AND campaign IS NOT NULL
GROUP BY COALESCE(campaign, ''), COALESCE(creative, ''), COALESCE(placement, '')
ORDER BY impressions DESC, clicks DESC, campaign_key, creative_key, placement_key
LIMIT :limit
"""
    return Sql(text, params)


def ad_conversions(query: ReportQuery, *, dialect: str = "sqlite",
                   goal: str | None = None) -> Sql:
    """Conversions in sessions whose first event carries a campaign, per creative and placement."""
    sessions, params = _per_session(query, ("campaign", "creative", "placement"), dialect, goal,
                                    require=("campaign",))
    text = f"""
SELECT first_campaign, first_creative, first_placement,
       SUM(session_conversions) AS conversions, SUM(session_value) AS conversion_value
FROM {sessions} AS per_session
WHERE started = 1 AND first_campaign <> ''
GROUP BY first_campaign, first_creative, first_placement
"""
    return Sql(text, params)


def _funnel_step_tests(conditions: list[tuple[str, str, str | None, str | None]],
                       dialect: str, params: dict[str, Any]) -> tuple[list[str], str]:
    """Return each funnel step's condition in SQL and the select list of their 0/1 flag
    columns ``m0``, ``m1`` and so on; add the steps' values to ``params``."""
    tests = []
    for index, (kind, value, prop, prop_value) in enumerate(conditions):
        params[f"step_{index}"] = value
        if kind == "event":
            test = f"name = :step_{index}"
        elif kind == "page":
            test = f"kind = 'page_view' AND path = :step_{index}"
        else:
            raise ValueError(f"invalid funnel step kind {kind!r}: expected event or page")
        if prop is not None:
            params[f"step_key_{index}"] = property_key_param(dialect, prop)
            params[f"step_prop_{index}"] = prop_value or ""
            test += f" AND {property_value(dialect, f'step_key_{index}')} = :step_prop_{index}"
        tests.append(f"({test})")
    flags = ", ".join(f"CASE WHEN {test} THEN 1 ELSE 0 END AS m{index}"
                      for index, test in enumerate(tests))
    return tests, flags


def funnel_matches(query: ReportQuery, conditions: list[tuple[str, str, str | None, str | None]],
                   max_rows: int, *, dialect: str = "sqlite") -> Sql:
    """Events matching any funnel step, with one 0/1 column per step, by visitor and time.

    Each condition is (kind, value, property, property value): kind ``event`` matches the
    event name, kind ``page`` a page view's path; the property pair is optional.
    """
    if dialect == "clickhouse":
        return funnel_matches_clickhouse(query, conditions, max_rows)
    where, params = dashboard_where(query, dialect=dialect)
    params["max_rows"] = max_rows
    tests, flags = _funnel_step_tests(conditions, dialect, params)
    text = f"""
SELECT visitor_id, ts, {flags}
FROM events
WHERE {where} AND ({" OR ".join(tests)})
ORDER BY visitor_id, ts
LIMIT :max_rows
"""
    return Sql(text, params)


def _rejected_where(site_id: str, from_ts: int, to_ts: int,
                    unattributed: bool) -> tuple[str, dict[str, Any]]:
    """Return the WHERE text of a site's rejected hits received in [from_ts, to_ts), with
    the hits whose site is unknown when ``unattributed`` is true."""
    site = "(site_id = :site_id OR site_id IS NULL)" if unattributed else "site_id = :site_id"
    return (f"{site} AND received_ts >= :from_ts AND received_ts < :to_ts",
            {"site_id": site_id, "from_ts": from_ts, "to_ts": to_ts})


def rejected_summary(site_id: str, from_ts: int, to_ts: int, *,
                     unattributed: bool = False) -> Sql:
    """Rejected hits by reason, and by whether their site is known, with the latest time."""
    where, params = _rejected_where(site_id, from_ts, to_ts, unattributed)
    text = f"""
SELECT reason, CASE WHEN site_id IS NULL THEN 'unattributed' ELSE 'site' END AS scope,
       COUNT(*) AS hits, MAX(received_ts) AS last_ts
FROM rejected_hits
WHERE {where}
GROUP BY reason, CASE WHEN site_id IS NULL THEN 'unattributed' ELSE 'site' END
ORDER BY hits DESC, reason, scope
"""
    return Sql(text, params)


def rejected_samples(site_id: str, from_ts: int, to_ts: int, max_rows: int, *,
                     unattributed: bool = False) -> Sql:
    """Return the SQL of the latest rejected hits, newest first, with ``scope`` as in
    ``rejected_summary``."""
    where, params = _rejected_where(site_id, from_ts, to_ts, unattributed)
    params["max_rows"] = max_rows
    text = f"""
SELECT reason, CASE WHEN site_id IS NULL THEN 'unattributed' ELSE 'site' END AS scope,
       received_ts, source, detail, raw, user_agent
FROM rejected_hits
WHERE {where}
ORDER BY received_ts DESC
LIMIT :max_rows
"""
    return Sql(text, params)


def bot_traffic(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    where, params = dashboard_where(query, dialect=dialect, people=False)
    text = f"""
SELECT COALESCE(bot_reason, '') AS bot_reason_key, COUNT(*) AS events,
       COUNT(DISTINCT visitor_id) AS visitors
FROM events
WHERE {where} AND is_bot = 1
GROUP BY COALESCE(bot_reason, '')
ORDER BY events DESC, bot_reason_key
"""
    return Sql(text, params)


def machine_opens(query: ReportQuery, *, dialect: str = "sqlite") -> Sql:
    where, params = dashboard_where(query, dialect=dialect, people=False)
    text = f"""
SELECT COALESCE(campaign, '') AS campaign_key, COUNT(*) AS machine_opens,
       COUNT(DISTINCT recipient) AS recipients
FROM events
WHERE {where} AND kind = 'email_open' AND machine_open = 1
GROUP BY COALESCE(campaign, '')
ORDER BY machine_opens DESC, campaign_key
"""
    return Sql(text, params)


# ClickHouse reports without filters read tables that the store keeps beside ``events``
# (trackpixel.storage.clickhouse_schema), and return the rows of the raw queries above:
# - ``day_figures``: sums per site, dimension, item and local day, such as page views and
#   sessions started. The pipeline marks one event of each session as its start, so summing
#   the starts counts the sessions that started.
# - ``visitor_days``: one row per visitor, dimension item and day, which counts distinct
#   visitors without a distinct count.
# - ``session_totals`` and ``session_events``: one row per session, and the aggregate states
#   per session and day, for the reports that group sessions.
# The builders above keep the raw SQL for queries with filters or a goal.


def _session_where(query: ReportQuery) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"site_id": query.site_id, "from_day": query.from_day,
                              "to_day": query.to_day}
    return ("site_id = :site_id AND local_day >= :from_day AND local_day <= :to_day", params)


# ``visitor_days`` rows count each visitor once per dimension item and range: a row of a
# range's day counts when its ``prev_day``, the visitor's previous day with that item, lies
# before the range's first day (trackpixel.storage.clickhouse_schema). Rows and their cancel
# rows add up through ``sign``.
def _figures_where(dimension: str) -> str:
    """Return the condition for the ``day_figures`` or ``visitor_days`` rows of
    ``dimension`` in the range."""
    return (f"site_id = :site_id AND dimension = '{dimension}' AND local_day >= :from_day "
            f"AND local_day <= :to_day")


def _first_days(dimension: str, start: str = ":from_day") -> str:
    """Return the condition for the ``visitor_days`` rows of ``dimension`` that count their
    visitor in the range, or in the bucket of the range that begins on ``start``."""
    return f"{_figures_where(dimension)} AND prev_day < {start}"


def totals_clickhouse(query: ReportQuery) -> Sql:
    """Return the SQL of ``totals`` without filters or goal, from ``day_figures`` and
    ``visitor_days``."""
    _, params = _session_where(query)
    text = f"""
SELECT
    (SELECT sum(sign) FROM visitor_days WHERE {_first_days('all')}) AS visitors,
    sum(session_count) AS sessions,
    sum(page_view_count) AS page_views,
    sum(event_count) AS event_total,
    sum(conversion_count) AS conversions,
    sum(conversion_sum) AS conversion_value
FROM day_figures
WHERE {_figures_where('all')}
"""
    return Sql(text, params)


def series_clickhouse(query: ReportQuery, unit: str, mondays: list[str] | None) -> Sql:
    """Return the SQL of ``series`` by day or week without filters or goal, from
    ``day_figures`` and ``visitor_days``."""
    _, params = _session_where(query)
    if unit == "day":
        bucket = "local_day"
        # Every row of a day is a visitor of that day.
        first_days = _figures_where("all")
    elif unit == "week":
        bucket, week_params = week_bucket(mondays or [])
        params.update(week_params)
        first_days = _first_days("all", f"greatest(toDate({bucket}), toDate(:from_day))")
    else:
        raise ValueError(f"invalid interval {unit!r}: expected day or week")
    text = f"""
SELECT day, 0 AS hour, visitors, sessions, page_views, conversions
FROM (
    SELECT {bucket} AS day,
           sum(session_count) AS sessions,
           sum(page_view_count) AS page_views,
           sum(conversion_count) AS conversions
    FROM day_figures
    WHERE {_figures_where('all')}
    GROUP BY {bucket}
) AS figures ANY LEFT JOIN (
    SELECT {bucket} AS day, sum(sign) AS visitors
    FROM visitor_days
    WHERE {first_days}
    GROUP BY {bucket}
) AS visitor_counts USING day
ORDER BY day, hour
"""
    return Sql(text, params)


def breakdown_clickhouse(query: ReportQuery, column: str) -> Sql:
    """Return the SQL of ``breakdown`` by ``column`` without filters, from ``day_figures``
    and ``visitor_days``."""
    _, params = _session_where(query)
    params["limit"] = query.limit
    text = f"""
SELECT dimension_key, visitors, sessions, page_views
FROM (
    SELECT item AS dimension_key,
           sum(session_count) AS sessions,
           sum(page_view_count) AS page_views
    FROM day_figures
    WHERE {_figures_where(column)}
    GROUP BY item
) AS figures ANY LEFT JOIN (
    SELECT item AS dimension_key, sum(sign) AS visitors
    FROM visitor_days
    WHERE {_first_days(column)}
    GROUP BY item
) AS visitor_counts USING dimension_key
ORDER BY visitors DESC, dimension_key
LIMIT :limit
"""
    return Sql(text, params)


def top_pages_clickhouse(query: ReportQuery) -> Sql:
    """Return the SQL of ``top_pages`` without filters, from ``day_figures`` and
    ``visitor_days``."""
    _, params = _session_where(query)
    params["limit"] = query.limit
    text = f"""
SELECT path_key, page_views, visitors, entries
FROM (
    SELECT item AS path_key, sum(page_view_count) AS page_views,
           sum(entry_count) AS entries
    FROM day_figures
    WHERE {_figures_where('page')}
    GROUP BY item
    ORDER BY page_views DESC, path_key
    LIMIT :limit
) AS figures ANY LEFT JOIN (
    SELECT item AS path_key, sum(sign) AS visitors
    FROM visitor_days
    WHERE {_first_days('page')}
    GROUP BY item
) AS visitor_counts USING path_key
ORDER BY page_views DESC, path_key
"""
    return Sql(text, params)


# The acquisition groupings whose visitors ``visitor_days`` counts: (columns, require) and
# the dimension whose items are the first event's values of those columns.
_ACQUISITION_DIMENSIONS = {
    (("channel",), ()): "channel",
    (("referrer_host",), ("referrer_host",)): "referrer_host",
    (("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"),
     ("utm_source", "utm_campaign")): "utm",
}


def _acquisition_clickhouse(query: ReportQuery, columns: tuple[str, ...], sessions: str,
                            params: dict[str, Any], required: str, dimension: str) -> Sql:
    """Return the SQL of ``acquisition`` without filters or goal: sessions and conversions
    from the per-session subquery with weights, visitors from ``visitor_days``."""
    firsts = ", ".join(f"first_{column}" for column in columns)
    if len(columns) == 1:
        key = f"first_{columns[0]}"
    else:
        key = utm_item_sql(tuple(f"first_{column}" for column in columns))
    text = f"""
SELECT {firsts}, sessions, visitors, conversions, conversion_value
FROM (
    SELECT {firsts}, {key} AS group_key,
           sum(weight) AS sessions,
           sum(weight * session_conversions) AS conversions,
           sum(weight * session_value) AS conversion_value
    FROM {sessions} AS per_session
    WHERE started = 1{required}
    GROUP BY {firsts}
    HAVING sessions != 0
) AS figures ANY LEFT JOIN (
    SELECT item AS group_key, sum(sign) AS visitors
    FROM visitor_days
    WHERE {_first_days(dimension)}
    GROUP BY item
) AS visitor_counts USING group_key
ORDER BY sessions DESC, {firsts}
LIMIT :limit
"""
    return Sql(text, params)


# Session reports read ``session_totals``: one row per session with the figures of all its
# events (trackpixel.storage.clickhouse_schema). A session whose events all lie in the range
# takes its row. A session with events in the range and before or after it is computed from
# its ``session_events`` rows of the range, as the reports above did for every session. Rows
# that a cancel row of the same (session_key, version) replaced are skipped, whether or not a
# merge has removed the pair. GLOBAL runs each subquery once, where a sharded table rejects
# a plain IN.
# (output column, ``session_totals`` column, expression over ``session_events``)
SessionFigure = tuple[str, str, str]

# The session's visitor as the raw queries take it: the least visitor id among the rows with
# page views. It is hashed to 64 bits, so the outer distinct count hashes numbers, as the
# raw queries' visitor counts on ClickHouse do (``dialect.translate``).
_PAGE_VISITOR: SessionFigure = (
    "session_visitor", "min_page_visitor_key",
    "cityHash64(minIf(visitor_id, finalizeAggregation(page_view_count) > 0))")
# The minimum visitor id of all the session's events, hashed in the same way.
_SESSION_VISITOR: SessionFigure = ("session_visitor", "min_visitor_key",
                                   "cityHash64(min(visitor_id))")

# The sessions whose events all lie in the range, those with events in the range and
# before it, and those with events in the range and after it but none before. The last two
# are separate conditions, because each selects few rows through the sorting key or the
# partitions, while their disjunction reads every row of the range.
_INSIDE = "site_id = :site_id AND first_day >= :from_day AND last_day <= :to_day"
_CROSSING_START = "site_id = :site_id AND first_day < :from_day AND last_day >= :from_day"
_CROSSING_END = ("site_id = :site_id AND first_day >= :from_day AND first_day <= :to_day "
                 "AND last_day > :to_day")


# The days of the range on which crossing sessions can have events: up to the last day of
# those that began before the range, and from the first day of those that end after it.
# ClickHouse runs the scalar subqueries first, so the primary key on ``local_day`` skips the
# other days, which hold almost all of the range's rows. A crossing row that a cancel row
# replaced only widens the days.
_CROSSING_DAYS = (
    f"(local_day <= (SELECT max(last_day) FROM session_totals WHERE {_CROSSING_START}) "
    f"OR local_day >= (SELECT if(count() = 0, toDate(:to_day) + 1, min(first_day)) "
    f"FROM session_totals WHERE {_CROSSING_END}))")


def _live(rows: str) -> str:
    """Return the condition for the rows matching ``rows`` that no cancel row replaced."""
    return (f"{rows} AND sign = 1 AND (session_key, version) GLOBAL NOT IN ("
            f"SELECT session_key, version FROM session_totals WHERE {rows} AND sign = -1)")


def _crossing_sessions(query: ReportQuery, figures: list[SessionFigure]) -> str:
    """Return a SELECT with one row per session that has events in the range and before or
    after it, and the ``figures`` of its events in the range as columns."""
    where, _ = _session_where(query)
    merged = ", ".join(f"{expression} AS {name}" for name, _, expression in figures)
    return f"""SELECT {merged}
    FROM session_events
    WHERE {where} AND session_key GLOBAL IN (
        SELECT session_key FROM session_totals WHERE {_live(_CROSSING_START)}
        UNION ALL
        SELECT session_key FROM session_totals WHERE {_live(_CROSSING_END)})
      AND {_CROSSING_DAYS}
    GROUP BY session_key"""


def _sessions_clickhouse(query: ReportQuery, figures: list[SessionFigure],
                         outer_condition: str, *,
                         weighted: bool = False) -> tuple[str, dict[str, Any]]:
    """Return a subquery with one row per session that has events in the range, and the
    ``figures`` of its events in the range as columns.

    Every session has one live row, so each session is in one of the two parts.
    ``outer_condition`` is a condition on ``session_totals`` columns that every session the
    caller keeps meets.
    Rows of the sessions inside the range that fail it are left out early, because
    ClickHouse 18.16 does not move the caller's condition into a UNION ALL.
    With ``weighted`` the subquery has a ``weight`` column, and the sessions inside the
    range come with their replaced rows and the cancel rows, weighted by ``sign``: the
    caller sums weights and weighted figures, which skips looking up the cancel rows."""
    _, params = _session_where(query)
    stored = ", ".join(f"{column} AS {name}" for name, column, _ in figures)
    if weighted:
        inside = f"SELECT sign AS weight, {stored} FROM session_totals WHERE {_INSIDE}"
        crossing = _crossing_sessions(query, [("weight", "sign", "toInt8(1)"), *figures])
    else:
        inside = f"SELECT {stored} FROM session_totals WHERE {_live(_INSIDE)}"
        crossing = _crossing_sessions(query, figures)
    text = f"""(
    {inside} AND {outer_condition}
    UNION ALL
    {crossing}
)"""
    return text, params


def session_stats_clickhouse(query: ReportQuery) -> Sql:
    """Return the SQL of ``session_stats`` without filters: the sessions inside the range
    from ``session_spans``, those crossing its first or last day from ``session_events``.

    The mean length is the total length over the sessions, in milliseconds, divided by
    their number, which equals the mean of the lengths but for rounding of the last
    digits."""
    _, params = _session_where(query)
    crossing = _crossing_sessions(query, [
        ("hits", "browser_hits", "countIfMerge(browser_hits)"),
        ("first_ts", "browser_first_ts", "minIfMerge(browser_first_ts)"),
        ("last_ts", "browser_last_ts", "maxIfMerge(browser_last_ts)"),
        ("started", "browser_started", "maxIfMerge(browser_started)"),
    ])
    text = f"""
SELECT sessions, bounces,
       if(sessions = 0, NULL, duration_ms / 1000.0 / sessions) AS mean_duration_s
FROM (
    SELECT sum(part_started) AS sessions, sum(part_bounces) AS bounces,
           sum(part_duration) AS duration_ms
    FROM (
        SELECT toInt64(sum(started)) AS part_started, toInt64(sum(bounces)) AS part_bounces,
               toInt64(sum(duration_ms)) AS part_duration
        FROM session_spans
        WHERE {_INSIDE}
        UNION ALL
        SELECT toInt64(count()) AS part_started, toInt64(countIf(hits = 1)) AS part_bounces,
               toInt64(sum(toInt64(last_ts) - toInt64(first_ts))) AS part_duration
        FROM ({crossing}) AS per_session
        WHERE started = 1
    ) AS parts
) AS figures
"""
    return Sql(text, params)


def entry_pages_clickhouse(query: ReportQuery) -> Sql:
    """Return the SQL of ``entry_pages`` without filters, from ``session_totals`` and
    ``visitor_days``."""
    sessions, params = _sessions_clickhouse(query, [
        ("page_views", "page_view_count", "countIfMerge(page_view_count)"),
        ("has_entry", "page_entry_started", "maxIfMerge(page_entry_started)"),
        ("entry_path", "page_entry_path", "maxIfMerge(page_entry_path)"),
    ], "page_entry_started = 1", weighted=True)
    params["limit"] = query.limit
    text = f"""
SELECT entry_path, entries, visitors, bounces
FROM (
    SELECT entry_path, sum(weight) AS entries, sum(weight * (page_views = 1)) AS bounces
    FROM {sessions} AS per_session
    WHERE has_entry = 1
    GROUP BY entry_path
    HAVING entries != 0
) AS figures ANY LEFT JOIN (
    SELECT item AS entry_path, sum(sign) AS visitors
    FROM visitor_days
    WHERE {_first_days('entry')}
    GROUP BY item
) AS visitor_counts USING entry_path
ORDER BY entries DESC, entry_path
LIMIT :limit
"""
    return Sql(text, params)


def exit_pages_clickhouse(query: ReportQuery) -> Sql:
    """Return the SQL of ``exit_pages`` without filters, from ``session_totals``."""
    sessions, params = _sessions_clickhouse(query, [
        _PAGE_VISITOR,
        ("page_views", "page_view_count", "countIfMerge(page_view_count)"),
        ("last_view", "page_exit_view", "maxIfMerge(page_exit_view)"),
    ], "page_view_count > 0")
    params["limit"] = query.limit
    text = f"""
SELECT substr(last_view, 15) AS exit_path, COUNT(*) AS exits,
       COUNT(DISTINCT session_visitor) AS visitors
FROM {sessions} AS per_session
WHERE page_views > 0
GROUP BY substr(last_view, 15)
ORDER BY exits DESC, exit_path
LIMIT :limit
"""
    return Sql(text, params)


def _per_session_clickhouse(query: ReportQuery, columns: tuple[str, ...],
                            require: tuple[str, ...], *,
                            weighted: bool = False) -> tuple[str, dict[str, Any]]:
    """Return the subquery of ``_per_session``, with the same columns, without filters or
    goal, from ``session_totals``."""
    outer_condition = "any_started = 1"
    if require:
        outer_condition += (" AND (" + " OR ".join(f"opening_{column} <> ''" for column in require)
                            + ")")
    return _sessions_clickhouse(query, [
        _SESSION_VISITOR,
        ("started", "any_started", "maxMerge(any_started)"),
        *((f"first_{column}", f"opening_{column}", f"maxIfMerge(opening_{column})")
          for column in columns),
        ("session_conversions", "conversion_count", "countIfMerge(conversion_count)"),
        ("session_value", "conversion_sum", "sumIfMerge(conversion_sum)"),
    ], outer_condition, weighted=weighted)


def funnel_matches_clickhouse(query: ReportQuery,
                              conditions: list[tuple[str, str, str | None, str | None]],
                              max_rows: int) -> Sql:
    """Return the SQL of ``funnel_matches`` on ClickHouse, without the rows of visitors who
    never match step 1.

    Such a visitor never starts the funnel, so leaving out their rows changes no count, and
    far fewer rows reach Python. When ``max_rows`` or more events match, every visitor's rows
    are returned, so the limit cuts off the rows that it cuts off in ``funnel_matches``.
    """
    where, params = dashboard_where(query, dialect="clickhouse")
    params["max_rows"] = max_rows
    tests, flags = _funnel_step_tests(conditions, "clickhouse", params)
    # The step tests select few of the range's events, so PREWHERE applies them first and
    # reads the other columns only where they match.
    matching = f"PREWHERE {' OR '.join(tests)} WHERE {where}"
    text = f"""
SELECT visitor_id, ts, {flags}
FROM events
{matching}
  AND ((SELECT count() FROM events {matching}) >= :max_rows
       OR visitor_key GLOBAL IN (SELECT visitor_key FROM events PREWHERE {tests[0]}
                                 WHERE {where}))
ORDER BY visitor_id, ts
LIMIT :max_rows
"""
    return Sql(text, params)
