"""The reports the dashboard and the API serve: names, URL parameters and how to run them.

The dashboard and the API read the same query parameters, so a dashboard URL and an API URL
with the same query string describe the same data.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackpixel.reports import run
from trackpixel.reports.queries import PROPERTY_FILTER_PREFIX, ReportQuery, property_key_param
from trackpixel.reports.run import FunnelStep, Table
from trackpixel.sites import Site
from trackpixel.storage.backends import SQLITE_URL
from trackpixel.storage.records import StoreUnavailable
from trackpixel.storage.sqlite import connect

if TYPE_CHECKING:
    from trackpixel.storage.clickhouse import ClickHouseStore

# URL parameter -> events column, for the filters every report accepts.
FILTER_PARAMS = {
    "channel": "channel",
    "campaign": "campaign",
    "device": "device_type",
    "country": "country",
    "page": "path",
    "browser": "browser",
    "os": "os",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "referrer": "referrer_host",
    "event": "name",
}
INTERVALS = ("hour", "day", "week")
DEFAULT_DAYS = 30
MAX_RANGE_DAYS = 731
MAX_LIMIT = 1000
MAX_PARAM_CHARS = 500
MAX_FUNNEL_STEPS = 10
# Days a report range may cover. Reports compare with the previous period of equal length
# (up to MAX_RANGE_DAYS earlier) and look one day past the end, so both bounds keep that
# date arithmetic inside Python's years 1 to 9999.
FIRST_REPORT_DAY = date(2000, 1, 1)
LAST_REPORT_DAY = date(9998, 12, 31)


# Query parameters other than filters. Any other name is rejected, so a misspelt filter does
# not return unfiltered data as if it had been applied.
OPTION_PARAMS = ("site", "format", "from", "to", "limit", "interval", "goal", "prop_event",
                 "step", "window_hours")
FILTERS = (*FILTER_PARAMS, "prop")


class ParamError(ValueError):
    """A query parameter is invalid; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class UnknownParam(ParamError):
    """A query parameter is neither a filter nor an option of the reports."""

    def __init__(self, param: str) -> None:
        super().__init__(param, f"unknown parameter {param!r}: filters are "
                                f"{', '.join(FILTERS)}; other parameters are "
                                f"{', '.join(OPTION_PARAMS)}")


@dataclass(frozen=True)
class ReportRequest:
    """A parsed report request: the query plus the options some reports take."""

    query: ReportQuery
    interval: str = "day"
    goal: str | None = None
    prop_event: str | None = None
    steps: tuple[FunnelStep, ...] = ()
    window_hours: int = 24
    filters: dict[str, str] = field(default_factory=dict)  # URL parameter -> value
    # Whether the rejected hits report lists hits whose site is unknown; set for admins.
    unattributed: bool = False


@dataclass(frozen=True)
class ReportSpec:
    name: str
    description: str
    run: Callable[[Any, Site, ReportRequest], Table]
    options: tuple[str, ...] = ()


def _breakdown(dimension: str) -> Callable[[Any, Site, ReportRequest], Table]:
    return lambda store, site, request: run.breakdown(store, site, request.query,
                                                      dimension=dimension)


def _funnel(store: Any, site: Site, request: ReportRequest) -> Table:
    if len(request.steps) < 2:
        raise ParamError("step", "a funnel needs at least two step parameters, e.g. "
                                 "step=page:/pricing&step=event:Signup")
    return run.funnel_steps(store, site, request.query, steps=list(request.steps),
                            window_seconds=request.window_hours * 3600)


REPORTS: dict[str, ReportSpec] = {spec.name: spec for spec in [
    ReportSpec("overview", "Visitors, sessions, page views, events, conversions, bounce rate "
               "and mean session length, with the previous period of equal length.",
               lambda s, site, r: run.dashboard_overview(s, site, r.query, goal=r.goal),
               ("goal",)),
    ReportSpec("timeseries", "Visitors, sessions, page views and conversions per local hour, "
               "day or week.",
               lambda s, site, r: run.timeseries(s, site, r.query, interval=r.interval,
                                                 goal=r.goal), ("interval", "goal")),
    ReportSpec("pages", "Top pages by page views.",
               lambda s, site, r: run.top_pages(s, site, r.query)),
    ReportSpec("entry_pages", "Pages that started sessions, with bounces.",
               lambda s, site, r: run.entry_pages(s, site, r.query)),
    ReportSpec("exit_pages", "The last page view of each session, per path.",
               lambda s, site, r: run.exit_pages(s, site, r.query)),
    ReportSpec("channels", "Sessions and conversions by channel.",
               lambda s, site, r: run.channels(s, site, r.query, goal=r.goal), ("goal",)),
    ReportSpec("referrers", "Sessions and conversions by referring host.",
               lambda s, site, r: run.referrers(s, site, r.query, goal=r.goal), ("goal",)),
    ReportSpec("utm", "Sessions and conversions by UTM source, medium, campaign, term and "
               "content.",
               lambda s, site, r: run.utm_campaigns(s, site, r.query, goal=r.goal), ("goal",)),
    ReportSpec("devices", "Visitors by device type.", _breakdown("devices")),
    ReportSpec("browsers", "Visitors by browser.", _breakdown("browsers")),
    ReportSpec("os", "Visitors by operating system.", _breakdown("os")),
    ReportSpec("countries", "Visitors by country (ISO 3166-1 alpha-2).",
               _breakdown("countries")),
    ReportSpec("events", "Custom events by name.",
               lambda s, site, r: run.custom_events(s, site, r.query)),
    ReportSpec("event_properties", "Custom-event property values by event name.",
               lambda s, site, r: run.event_properties(s, site, r.query, event=r.prop_event),
               ("prop_event",)),
    ReportSpec("email", "Email campaigns: opens, unique human opens, machine opens, clicks "
               "and click-to-open rate.",
               lambda s, site, r: run.email_campaigns(s, site, r.query)),
    ReportSpec("ads", "Ad campaigns: impressions, clicks, click-through rate and conversions "
               "per campaign, creative and placement.",
               lambda s, site, r: run.ad_campaigns(s, site, r.query, goal=r.goal), ("goal",)),
    ReportSpec("funnel", "Visitors completing ordered steps within a time window.", _funnel,
               ("step", "window_hours")),
    ReportSpec("rejected", "Rejected hits by reason, with recent samples.",
               lambda s, site, r: run.rejected_hits(s, site, r.query,
                                                    unattributed=r.unattributed)),
    ReportSpec("bots", "Bot traffic by detector.",
               lambda s, site, r: run.bot_traffic(s, site, r.query)),
    ReportSpec("machine_opens", "Machine email opens by campaign.",
               lambda s, site, r: run.machine_opens(s, site, r.query)),
]}


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_PARAM_CHARS:
        raise ParamError(name, f"{name} is longer than {MAX_PARAM_CHARS} characters")
    return value


_DAY_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INTEGER_PATTERN = re.compile(r"-?[0-9]+")


def parse_day(value: str) -> date:
    """Parse a YYYY-MM-DD day; raise ``ValueError`` for any other form.

    ``date.fromisoformat`` alone also accepts 20250101 and ISO week dates such as 2025-W01-1.
    """
    if not _DAY_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a date in YYYY-MM-DD form")
    return date.fromisoformat(value)


def _day(params: Mapping[str, str], name: str, default: date) -> date:
    value = _text(params, name)
    if value is None:
        return default
    try:
        return parse_day(value)
    except ValueError:
        raise ParamError(name, f"{name}={value!r} is not a date in YYYY-MM-DD form") from None


def _supported(day: date, name: str) -> date:
    try:
        check_report_day(day, name)
    except ValueError as exc:
        raise ParamError(name, str(exc)) from None
    return day


def check_report_day(day: date, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``day`` is outside the supported range."""
    if not FIRST_REPORT_DAY <= day <= LAST_REPORT_DAY:
        raise ValueError(f"{name}={day.isoformat()} is outside the supported range "
                         f"{FIRST_REPORT_DAY.isoformat()} to {LAST_REPORT_DAY.isoformat()}")


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _text(params, name)
    if value is None:
        return default
    if not _INTEGER_PATTERN.fullmatch(value):
        raise ParamError(name, f"{name}={value!r} is not an integer")
    number = int(value)
    if not low <= number <= high:
        raise ParamError(name, f"{name}={number} is outside {low} to {high}")
    return number


def parse_request(site: Site, params: Mapping[str, str], steps: list[str]) -> ReportRequest:
    """Build a ``ReportRequest`` from URL parameters; ``steps`` are the repeated ``step``."""
    # A query string can repeat a parameter, and a mapping keeps only one of the values.
    getlist = getattr(params, "getlist", None)
    for name in params:
        if name not in FILTERS and name not in OPTION_PARAMS:
            raise UnknownParam(name)
        if name != "step" and getlist is not None and len(getlist(name)) > 1:
            raise ParamError(name, f"{name} is given more than once; give each parameter "
                                   "once")
    today = datetime.now(site.zone).date()
    to_day = _supported(_day(params, "to", today), "to")
    from_day = _day(params, "from", max(FIRST_REPORT_DAY,
                                        to_day - timedelta(days=DEFAULT_DAYS - 1)))
    from_day = _supported(from_day, "from")
    if from_day > to_day:
        raise ParamError("from", f"from={from_day} is after to={to_day}")
    if (to_day - from_day).days + 1 > MAX_RANGE_DAYS:
        raise ParamError("from", f"the range is longer than {MAX_RANGE_DAYS} days")
    filters: dict[str, str] = {}
    columns: dict[str, str] = {}
    for param, column in FILTER_PARAMS.items():
        value = _text(params, param)
        if value is not None:
            filters[param] = value
            columns[column] = value
    prop = _text(params, "prop")
    if prop is not None:
        key, sep, value = prop.partition("=")
        if not sep or not key:
            raise ParamError("prop", f"prop={prop!r} must look like KEY=VALUE, e.g. plan=pro")
        # Checked here, before any query is built, so that the error names the parameter.
        try:
            property_key_param("sqlite", key)
        except ValueError as exc:
            raise ParamError("prop", str(exc)) from None
        filters["prop"] = prop
        columns[PROPERTY_FILTER_PREFIX + key] = value
    interval = _text(params, "interval") or "day"
    if interval not in INTERVALS:
        raise ParamError("interval", f"interval={interval!r} must be hour, day or week")
    # The dashboard's funnel form always has one more step input than steps, left empty.
    given_steps = [step for step in steps if step.strip()]
    if len(given_steps) > MAX_FUNNEL_STEPS:
        raise ParamError("step", f"a funnel has at most {MAX_FUNNEL_STEPS} steps")
    try:
        parsed_steps = tuple(FunnelStep.parse(step) for step in given_steps)
        for parsed_step in parsed_steps:
            if parsed_step.prop is not None:
                property_key_param("sqlite", parsed_step.prop)
    except ValueError as exc:
        raise ParamError("step", str(exc)) from None
    query = ReportQuery(site.id, from_day.isoformat(), to_day.isoformat(),
                        limit=_int(params, "limit", 50, 1, MAX_LIMIT), filters=columns)
    return ReportRequest(query=query, interval=interval, goal=_text(params, "goal"),
                         prop_event=_text(params, "prop_event"), steps=parsed_steps,
                         window_hours=_int(params, "window_hours", 24, 1, 24 * 90),
                         filters=filters)


class ReportUnavailable(RuntimeError):
    """The event store could not be reached; retrying later may succeed."""


class ReadStore:
    """A read-only view of the data directory's SQLite database for report queries."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.conn = connect(path, readonly=True)

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()


# One ClickHouse connection per request thread and store URL: the driver's client is not
# safe to share between threads, and the dashboard runs its handlers in a thread pool.
_clickhouse_clients = threading.local()


def _clickhouse_store(url: str) -> ClickHouseStore:
    from trackpixel.storage.clickhouse import ClickHouseStore

    stores: dict[str, ClickHouseStore] = getattr(_clickhouse_clients, "stores", None) or {}
    _clickhouse_clients.stores = stores
    if url not in stores:
        # The processor applies the migrations; the dashboard only reads.
        stores[url] = ClickHouseStore(url, apply_migrations=False)
    return stores[url]


def run_report(db_path: Path, name: str, site: Site, request: ReportRequest,
               store_url: str = SQLITE_URL) -> Table:
    """Run report ``name`` on the event store at ``store_url``: the data directory's SQLite
    database at ``db_path``, or ClickHouse.

    Raises ``ReportUnavailable`` when ClickHouse cannot be reached and ``RuntimeError`` when
    a query fails.
    """
    spec = REPORTS[name]
    if store_url != SQLITE_URL:
        return _run_on_clickhouse(store_url, spec, site, request)
    try:
        store = ReadStore(db_path)
    except sqlite3.Error as exc:
        raise RuntimeError(f"report {name} failed: cannot open {db_path}: {exc}") from exc
    try:
        return spec.run(store, site, request)
    except sqlite3.Error as exc:
        raise RuntimeError(f"report {name} failed: {exc}") from exc
    finally:
        store.close()


def _run_on_clickhouse(url: str, spec: ReportSpec, site: Site,
                       request: ReportRequest) -> Table:
    from clickhouse_driver import errors

    try:
        return spec.run(_clickhouse_store(url), site, request)
    except (StoreUnavailable, errors.NetworkError, EOFError, OSError) as exc:
        _clickhouse_clients.stores.pop(url, None)
        raise ReportUnavailable(f"ClickHouse is unavailable: {exc}") from exc
    except errors.Error as exc:
        _clickhouse_clients.stores.pop(url, None)
        raise RuntimeError(f"report {spec.name} failed: {exc}") from exc
