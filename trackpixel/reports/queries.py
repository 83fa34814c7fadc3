"""Report SQL, built by pure functions: a ``ReportQuery`` in, SQL text and parameters out.

Placeholders are ``:name``; each store translates them for its driver
(``trackpixel.storage.dialect``). The text stays within the SQL that SQLite and ClickHouse
share: an output alias never reuses a column name, because ClickHouse would substitute the
alias for the column everywhere in the query, and every ORDER BY ends on a unique key so that
LIMIT keeps the same rows on both backends. Days are the site's
local days, stored on each event at ingest, so every backend buckets the same way without
time-zone functions. Bots are excluded from every count of people; machine email opens are
excluded from everything except the email and data-quality figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReportQuery:
    site_id: str
    from_day: str  # inclusive, YYYY-MM-DD in the site's time zone
    to_day: str  # inclusive
    limit: int = 50
    filters: dict[str, str] = field(default_factory=dict)


# Columns a filter may name, so filter keys never reach SQL as text.
FILTERABLE = ("channel", "utm_source", "utm_medium", "utm_campaign", "campaign", "device_type",
              "browser", "os", "path", "name", "source")


@dataclass(frozen=True)
class Sql:
    text: str
    params: dict[str, Any]


def _where(query: ReportQuery, *, people: bool = True, alias: str = "") -> tuple[str, dict[str, Any]]:
    prefix = f"{alias}." if alias else ""
    clauses = [f"{prefix}site_id = :site_id", f"{prefix}local_day >= :from_day",
               f"{prefix}local_day <= :to_day"]
    params: dict[str, Any] = {"site_id": query.site_id, "from_day": query.from_day,
                              "to_day": query.to_day}
    if people:
        clauses.append(f"{prefix}is_bot = 0")
        clauses.append(f"{prefix}machine_open = 0")
    for index, (column, value) in enumerate(sorted(query.filters.items())):
        if column not in FILTERABLE:
            raise ValueError(f"cannot filter on {column!r}; filterable: {', '.join(FILTERABLE)}")
        clauses.append(f"{prefix}{column} = :filter_{index}")
        params[f"filter_{index}"] = value
    return " AND ".join(clauses), params


def overview(query: ReportQuery) -> Sql:
    where, params = _where(query)
    text = f"""
SELECT
    COUNT(DISTINCT visitor_id) AS visitors,
    COUNT(DISTINCT CASE WHEN session_start = 1 THEN session_id END) AS sessions,
    SUM(CASE WHEN kind = 'page_view' THEN 1 ELSE 0 END) AS page_views,
    SUM(CASE WHEN kind = 'custom' THEN 1 ELSE 0 END) AS custom_events,
    COUNT(*) AS events,
    SUM(CASE WHEN value IS NOT NULL THEN value ELSE 0 END) AS total_value
FROM events
WHERE {where}
"""
    return Sql(text, params)


def sessions_summary(query: ReportQuery) -> Sql:
    """Bounce rate and mean session length over sessions that started in the range."""
    where, params = _where(query)
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


def quality(query: ReportQuery) -> Sql:
    where, params = _where(query, people=False)
    text = f"""
SELECT
    SUM(CASE WHEN is_bot = 1 THEN 1 ELSE 0 END) AS bot_events,
    SUM(CASE WHEN machine_open = 1 THEN 1 ELSE 0 END) AS machine_opens
FROM events
WHERE {where}
"""
    return Sql(text, params)


def rejected_by_reason(site_id: str, from_ts: int, to_ts: int) -> Sql:
    text = """
SELECT reason, COUNT(*) AS hits
FROM rejected_hits
WHERE (site_id = :site_id OR site_id IS NULL) AND received_ts >= :from_ts AND received_ts < :to_ts
GROUP BY reason
ORDER BY hits DESC, reason
"""
    return Sql(text, {"site_id": site_id, "from_ts": from_ts, "to_ts": to_ts})


def by_day(query: ReportQuery) -> Sql:
    where, params = _where(query)
    text = f"""
SELECT local_day AS day,
       COUNT(DISTINCT visitor_id) AS visitors,
       SUM(CASE WHEN kind = 'page_view' THEN 1 ELSE 0 END) AS page_views,
       COUNT(*) AS events
FROM events
WHERE {where}
GROUP BY local_day
ORDER BY local_day
"""
    return Sql(text, params)


def events(query: ReportQuery) -> Sql:
    where, params = _where(query)
    params["limit"] = query.limit
    text = f"""
SELECT name, COUNT(*) AS events, COUNT(DISTINCT visitor_id) AS visitors,
       SUM(CASE WHEN value IS NOT NULL THEN value ELSE 0 END) AS total_value
FROM events
WHERE {where}
GROUP BY name
ORDER BY events DESC, name
LIMIT :limit
"""
    return Sql(text, params)


def pages(query: ReportQuery) -> Sql:
    where, params = _where(query)
    params["limit"] = query.limit
    text = f"""
SELECT path, COUNT(*) AS page_views, COUNT(DISTINCT visitor_id) AS visitors,
       SUM(session_start) AS entries
FROM events
WHERE {where} AND kind = 'page_view'
GROUP BY path
ORDER BY page_views DESC, path NULLS FIRST
LIMIT :limit
"""
    return Sql(text, params)


def sources(query: ReportQuery) -> Sql:
    """Sessions by channel and referring host, credited at the session's first event."""
    where, params = _where(query)
    params["limit"] = query.limit
    text = f"""
SELECT channel, COALESCE(referrer_host, '') AS referrer_key, COUNT(*) AS sessions,
       COUNT(DISTINCT visitor_id) AS visitors
FROM events
WHERE {where} AND session_start = 1
GROUP BY channel, COALESCE(referrer_host, '')
ORDER BY sessions DESC, channel, referrer_key
LIMIT :limit
"""
    return Sql(text, params)


def campaigns(query: ReportQuery) -> Sql:
    where, params = _where(query)
    params["limit"] = query.limit
    text = f"""
SELECT COALESCE(campaign, '') AS campaign_key, COALESCE(utm_source, '') AS source_key,
       COALESCE(utm_medium, '') AS medium_key, channel,
       SUM(session_start) AS sessions,
       COUNT(DISTINCT visitor_id) AS visitors,
       SUM(CASE WHEN kind = 'impression' THEN 1 ELSE 0 END) AS impressions,
       SUM(CASE WHEN kind = 'click' THEN 1 ELSE 0 END) AS clicks,
       SUM(CASE WHEN kind = 'email_open' THEN 1 ELSE 0 END) AS human_opens,
       SUM(CASE WHEN kind = 'custom' THEN 1 ELSE 0 END) AS custom_events,
       SUM(CASE WHEN value IS NOT NULL THEN value ELSE 0 END) AS total_value
FROM events
WHERE {where} AND campaign IS NOT NULL
GROUP BY COALESCE(campaign, ''), COALESCE(utm_source, ''), COALESCE(utm_medium, ''), channel
ORDER BY sessions DESC, clicks DESC, campaign_key, source_key, medium_key, channel
LIMIT :limit
"""
    return Sql(text, params)


def email(query: ReportQuery) -> Sql:
    """Opens per email campaign, human and machine apart, and clicks from the same campaign.

    Unique counts use the visitor id: the recipient where analytics consent allows it,
    otherwise the daily device hash."""
    where, params = _where(query, people=False)
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
"""
    return Sql(text, params)


def funnel(query: ReportQuery, steps: list[str], window_ms: int, dialect: str) -> Sql:
    """Return the funnel query for ``dialect``; both variants return the same row."""
    if dialect == "clickhouse":
        return funnel_clickhouse(query, steps, window_ms)
    return funnel_sqlite(query, steps, window_ms)


def funnel_clickhouse(query: ReportQuery, steps: list[str], window_ms: int) -> Sql:
    """The ``funnel_sqlite`` result computed from each visitor's step timestamps.

    ClickHouse 18.16 has no table-valued CTEs and joins only on equality, so each visitor's
    step-k times are gathered into an array, and step k's time is the earliest element at or
    after step k-1's time and within ``window_ms`` of step 1. The row has the same columns as
    ``funnel_sqlite``: step_1, then step_k and gap_k for each later step.
    """
    where, params = _where(query)
    params["window_ms"] = window_ms
    arrays = []
    for index, step in enumerate(steps, start=1):
        params[f"step_{index}"] = step
        arrays.append(f"groupArrayIf(ts, name = :step_{index}) AS times_{index}")
    names = ", ".join(f":step_{index}" for index in range(1, len(steps) + 1))
    reached = ["notEmpty(times_1) AS reached_1", "arrayReduce('min', times_1) AS t_1"]
    for index in range(2, len(steps) + 1):
        reached.append(
            f"arrayFilter(x -> x >= t_{index - 1} AND x <= t_1 + :window_ms, times_{index}) "
            f"AS candidates_{index}")
        reached.append(f"reached_{index - 1} AND notEmpty(candidates_{index}) AS reached_{index}")
        reached.append(f"arrayReduce('min', candidates_{index}) AS t_{index}")
    totals = ["countIf(reached_1) AS step_1"]
    for index in range(2, len(steps) + 1):
        totals.append(f"countIf(reached_{index}) AS step_{index}")
        totals.append(f"avgIf(toInt64(t_{index}) - toInt64(t_{index - 1}), reached_{index}) "
                      f"AS gap_{index}")
    text = f"""
SELECT {', '.join(totals)}
FROM (
    SELECT {', '.join(reached)}
    FROM (
        SELECT visitor_id, {', '.join(arrays)}
        FROM events
        WHERE {where} AND name IN ({names})
        GROUP BY visitor_id
    ) AS per_visitor
) AS steps
"""
    return Sql(text, params)


def funnel_sqlite(query: ReportQuery, steps: list[str], window_ms: int) -> Sql:
    """Visitors reaching each step in order, each within ``window_ms`` of the first step.

    Step 1 counts visitors with a step-1 event in the range; step k counts those of step k-1
    with a step-k event at or after their step k-1 time and inside the window.
    """
    where, params = _where(query, alias="e")
    params["window_ms"] = window_ms
    ctes = []
    for index, step in enumerate(steps, start=1):
        params[f"step_{index}"] = step
        if index == 1:
            ctes.append(f"s1 AS (SELECT e.visitor_id, MIN(e.ts) AS t, MIN(e.ts) AS t0 "
                        f"FROM events AS e WHERE {where} AND e.name = :step_1 "
                        f"GROUP BY e.visitor_id)")
            continue
        ctes.append(
            f"s{index} AS (SELECT e.visitor_id, MIN(e.ts) AS t, MIN(p.t0) AS t0 "
            f"FROM events AS e JOIN s{index - 1} AS p ON e.visitor_id = p.visitor_id "
            f"WHERE {where} AND e.name = :step_{index} AND e.ts >= p.t "
            f"AND e.ts <= p.t0 + :window_ms GROUP BY e.visitor_id)"
        )
    counts = ", ".join(
        f"(SELECT COUNT(*) FROM s{i}) AS step_{i}, "
        f"(SELECT AVG(s{i}.t - s{i - 1}.t) FROM s{i} JOIN s{i - 1} "
        f"ON s{i}.visitor_id = s{i - 1}.visitor_id) AS gap_{i}"
        if i > 1 else "(SELECT COUNT(*) FROM s1) AS step_1"
        for i in range(1, len(steps) + 1)
    )
    text = "WITH " + ",\n".join(ctes) + f"\nSELECT {counts}"
    return Sql(text, params)
