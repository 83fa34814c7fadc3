"""Reports read from the SQLite rollups equal the same reports over the raw events.

Events are generated for two sites (one in Europe/Berlin across the 2025-03-30 change to
summer time), stored through ``SqliteStore.write_batch`` in shuffled batches so that late
events reach days already rolled up, and every rollup-backed runner is compared with the raw
SQL path over several ranges, after an erasure and after retention.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from trackpixel import rights
from trackpixel.pipeline.maintenance import Maintenance
from trackpixel.reports import run
from trackpixel.reports.queries import ReportQuery
from trackpixel.sites import get_site
from trackpixel.storage import rollups
from trackpixel.storage.records import EVENT_COLUMNS, EventRow, ProcessedBatch
from trackpixel.storage.sqlite import SqliteStore

SITES = {"s_berlin": "Europe/Berlin", "s_auckland": "Pacific/Auckland"}
FIRST_DAY = datetime(2025, 3, 24)
DAYS = 12
PATHS = ["/", "/pricing", "/signup", "/docs", None]
CHANNELS = ["direct", "organic_search", "referral", "email"]
REFERRERS = [None, "www.google.com", "t.co"]
CAMPAIGNS = [None, None, "spring", "launch"]


class RawStore:
    """The same database without a ``conn`` attribute, so runners take the raw SQL path."""

    dialect = "sqlite"

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._store.query(sql, params)


def _event(counter: list[int], site_id: str, zone: ZoneInfo, ts: int,
           **fields: Any) -> EventRow:
    counter[0] += 1
    local = datetime.fromtimestamp(ts / 1000, zone)
    values: dict[str, Any] = {column: None for column in EVENT_COLUMNS}
    values.update(event_uid=f"u{counter[0]}", site_id=site_id, ts=ts,
                  local_day=local.date().isoformat(), local_hour=local.hour, source="pixel",
                  kind="page_view", name="page_view", channel="direct", session_start=0,
                  is_bot=0, machine_open=0, gpc=0, dnt=0, cookieless=0)
    values.update(fields)
    return EventRow(**values)


def generate(seed: int = 3) -> list[EventRow]:
    """Sessions of one to six events, some across local midnight, plus bots, email opens
    (human and machine), ad impressions and server events with sessions of their own."""
    rng = random.Random(seed)
    counter = [0]
    events: list[EventRow] = []
    for site_id, zone_name in SITES.items():
        zone = ZoneInfo(zone_name)
        for number in range(700):
            visitor = f"{site_id}-v{rng.randrange(120)}"
            day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
            # Every tenth session starts shortly before local midnight.
            hour, minute = (23, rng.randrange(40, 60)) if number % 10 == 0 else \
                (rng.randrange(24), rng.randrange(60))
            start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
            ts = int(start.timestamp() * 1000)
            is_bot = 1 if rng.random() < 0.08 else 0
            common = {
                "visitor_id": visitor, "session_id": f"{site_id}-s{number}",
                "channel": rng.choice(CHANNELS), "browser": rng.choice(["Chrome", "Firefox"]),
                "os": rng.choice(["Linux", None]), "device_type": rng.choice(["desktop", "mobile"]),
                "country": rng.choice(["DE", "NZ", None]), "is_bot": is_bot,
                "bot_reason": "ua" if is_bot else None,
            }
            campaign = rng.choice(CAMPAIGNS)
            for position in range(rng.randint(1, 6)):
                custom = position > 0 and rng.random() < 0.3
                first = position == 0
                events.append(_event(
                    counter, site_id, zone, ts, **common,
                    source="beacon" if custom else "pixel",
                    kind="custom" if custom else "page_view",
                    name=rng.choice(["Signup", "Purchase"]) if custom else "page_view",
                    path=rng.choice(PATHS),
                    value=rng.choice([None, 10.0, 2.5]) if custom else None,
                    props=orjson.dumps({"plan": rng.choice(["free", "pro", "<b>x\x1fy</b>"]),
                                        "seats": rng.choice([1, 2.5, True, None])}).decode()
                    if custom and rng.random() < 0.8 else None,
                    session_start=1 if first else 0,
                    referrer_host=rng.choice(REFERRERS) if first else None,
                    utm_source="news" if campaign and first else None,
                    utm_campaign=campaign if first else None,
                    campaign=campaign if first else None,
                    creative=rng.choice(["a", "b"]) if campaign and first else None,
                    placement="top" if campaign and first else None))
                ts += rng.randint(20_000, 600_000)
        for number in range(150):
            day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
            ts = int(datetime(day.year, day.month, day.day, rng.randrange(24),
                              tzinfo=zone).timestamp() * 1000)
            kind = rng.choice(["email_open", "click", "impression", "custom"])
            machine = 1 if kind == "email_open" and rng.random() < 0.4 else 0
            events.append(_event(
                counter, site_id, zone, ts, source="server" if kind == "custom" else "email",
                kind=kind, name=kind, visitor_id=f"{site_id}-v{rng.randrange(120)}",
                session_id=f"{site_id}-own{number}", machine_open=machine,
                is_bot=1 if rng.random() < 0.05 else 0,
                recipient=rng.choice([None, "r1", "r2", "r3"]),
                campaign=rng.choice(["spring", "launch", None]), creative=rng.choice([None, "a"]),
                value=rng.choice([None, 5.0])))
    rng.shuffle(events)
    return events


def store_events(store: SqliteStore, events: list[EventRow], batch: int = 97) -> None:
    for start in range(0, len(events), batch):
        store.write_batch(ProcessedBatch("spool", start, events[start:start + batch], [], []))


@pytest.fixture()
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "trackpixel.db")
    for site_id, zone in SITES.items():
        store.conn.execute(
            "INSERT INTO sites (id, domain, allowed_domains, timezone, api_key_hash, cookies, "
            "created_ts) VALUES (?, ?, '[]', ?, '', 1, 0)", (site_id, f"{site_id}.example", zone))
    return store


RANGES = [("2025-03-24", "2025-04-04"), ("2025-03-28", "2025-03-31"),
          ("2025-03-30", "2025-03-30"), ("2025-03-25", "2025-04-01"),
          ("2025-04-03", "2025-04-10")]


def _runners() -> list[tuple[str, Any, dict[str, Any]]]:
    return [
        ("dashboard overview", run.dashboard_overview, {}),
        ("dashboard overview goal", run.dashboard_overview, {"goal": "Purchase"}),
        ("timeseries day", run.timeseries, {"interval": "day"}),
        ("timeseries week", run.timeseries, {"interval": "week"}),
        ("timeseries week goal", run.timeseries, {"interval": "week", "goal": "Signup"}),
        ("timeseries hour", run.timeseries, {"interval": "hour"}),
        ("top pages", run.top_pages, {}),
        ("entry pages", run.entry_pages, {}),
        ("exit pages", run.exit_pages, {}),
        ("channels", run.channels, {}),
        ("referrers", run.referrers, {}),
        ("utm", run.utm_campaigns, {}),
        *[(name, run.breakdown, {"dimension": name})
          for name in ("devices", "browsers", "os", "countries")],
        ("custom events", run.custom_events, {}),
        ("email", run.email_campaigns, {}),
        ("ads", run.ad_campaigns, {}),
        ("bots", run.bot_traffic, {}),
        ("machine opens", run.machine_opens, {}),
        ("event properties", run.event_properties, {}),
        ("event properties of one event", run.event_properties, {"event": "Signup"}),
        *[(f"funnel {' > '.join(steps)}", run.funnel_steps,
           {"steps": [run.FunnelStep.parse(step) for step in steps], "window_seconds": window})
          for steps, window in FUNNELS],
    ]


# Funnels over page and event steps, a repeated step, a step that never happens, a short
# window, and steps the rollups do not keep (a property condition, page views by name).
FUNNELS = [
    (["page:/pricing", "event:Signup", "event:Purchase"], 86_400),
    (["page:/", "page:/signup", "event:Signup"], 3_600),
    (["event:Signup", "event:Signup"], 86_400),
    (["page:/", "event:Purchase", "page:/"], 900),
    (["page:/docs", "event:Refund"], 86_400),
    (["event:click", "event:Purchase"], 7 * 86_400),
    (["page:/pricing", "event:Signup|plan=pro"], 86_400),
    (["event:page_view", "event:Purchase"], 86_400),
]


def _normalised(rows: list[list[Any]]) -> list[list[Any]]:
    # Value sums may differ in the last bits because they are added in another order.
    return [[round(cell, 6) if isinstance(cell, float) else cell for cell in row]
            for row in rows]


def reports(store: Any, site_id: str, from_day: str, to_day: str,
            limit: int = 50) -> dict[str, list[list[Any]]]:
    site = get_site(store._store.conn if isinstance(store, RawStore) else store.conn, site_id)
    query = ReportQuery(site_id, from_day, to_day, limit=limit)
    return {name: _normalised(runner(store, site, query, **options).rows)
            for name, runner, options in _runners()}


def assert_same_as_raw(store: SqliteStore, site_id: str, from_day: str, to_day: str,
                       limit: int = 50) -> None:
    fast = reports(store, site_id, from_day, to_day, limit)
    raw = reports(RawStore(store), site_id, from_day, to_day, limit)
    for name in raw:
        assert fast[name] == raw[name], f"{name} {site_id} {from_day}..{to_day}"


def test_rollup_reports_equal_raw(store: SqliteStore) -> None:
    store_events(store, generate())
    assert rollups.in_sync(store.conn)
    assert rollups.part_ready(store.conn, "steps")
    assert rollups.part_ready(store.conn, "properties")
    assert rollups.part_ready(store.conn, "email_visitors")
    # The comparisons below are not vacuous: funnels advance and properties are counted.
    counted = reports(store, "s_berlin", *RANGES[0])
    funnel = counted["funnel page:/pricing > event:Signup > event:Purchase"]
    assert funnel[0][2] > funnel[1][2] > funnel[2][2] > 0
    assert len(counted["event properties"]) > 5
    for site_id in SITES:
        for from_day, to_day in RANGES:
            assert_same_as_raw(store, site_id, from_day, to_day)
    assert_same_as_raw(store, "s_berlin", "2025-03-24", "2025-04-04", limit=2)


def test_rollups_cover_sessions_across_midnight(store: SqliteStore) -> None:
    store_events(store, generate())
    crossing = store.conn.execute(
        "SELECT COUNT(*) FROM rollup_sessions WHERE first_day < last_day").fetchone()[0]
    assert crossing > 20


def test_rollups_skip_replayed_batch(store: SqliteStore) -> None:
    events = generate()
    store_events(store, events)
    tables = ("rollup_days", "rollup_sessions", "rollup_session_groups", "rollup_ids")
    before = {table: store.conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4")
              .fetchall() for table in tables}
    store_events(store, events[:500], batch=50)
    after = {table: store.conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4")
             .fetchall() for table in tables}
    assert after == before


def test_rollups_rebuild_matches_incremental(store: SqliteStore) -> None:
    store_events(store, generate())
    incremental = reports(store, "s_berlin", "2025-03-24", "2025-04-04")
    stored = rollups.rebuild_site(store.conn, "s_berlin", batch_rows=333)
    assert stored == store.conn.execute(
        "SELECT COUNT(*) FROM events WHERE site_id = 's_berlin'").fetchone()[0]
    assert reports(store, "s_berlin", "2025-03-24", "2025-04-04") == incremental


def test_rollups_after_erasure(store: SqliteStore) -> None:
    store_events(store, generate())
    for visitor in ("s_berlin-v7", "s_berlin-v8", "s_auckland-v3"):
        site_id = visitor.split("-")[0]
        selector = rights.Selector("visitor", site_id, visitor_ids=(visitor,))
        rights.carry_out(store.conn, rights.request_erasure(store.conn, selector))
    remaining = store.conn.execute(
        "SELECT COUNT(*) FROM rollup_ids WHERE key IN ('s_berlin-v7', 's_berlin-v8')"
    ).fetchone()[0]
    assert remaining == 0
    for site_id in SITES:
        for from_day, to_day in RANGES:
            assert_same_as_raw(store, site_id, from_day, to_day)


def test_rollups_keep_days_after_retention(store: SqliteStore) -> None:
    store_events(store, generate())
    old_range = ("2025-03-24", "2025-03-29")
    before = reports(store, "s_berlin", *old_range)
    site = get_site(store.conn, "s_berlin")
    # Retention keeps the last 395 days: expire everything before 2025-03-30 in Berlin.
    now = datetime(2025, 3, 30, 12, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)
    now_ms = int(now.timestamp() * 1000) + site.privacy.retention_days * 86_400_000
    Maintenance(store.conn, lambda: []).apply_retention(now_ms)
    left = store.conn.execute("SELECT MIN(local_day) FROM events WHERE site_id = 's_berlin'"
                              ).fetchone()[0]
    assert left == "2025-03-30"
    after = reports(store, "s_berlin", *old_range)
    raw_after = reports(RawStore(store), "s_berlin", *old_range)
    for name in before:
        if name.startswith("funnel"):
            # Funnels need each visitor's event times, which expire with the raw events.
            assert after[name] == raw_after[name], name
            assert all(row[2] == 0 for row in after[name]), name
        else:
            assert after[name] == before[name], name
    assert store.conn.execute("SELECT COUNT(*) FROM rollup_steps WHERE site_id = 's_berlin' "
                              "AND local_day < '2025-03-30'").fetchone()[0] == 0
    assert store.conn.execute("SELECT COUNT(*) FROM rollup_sessions WHERE site_id = 's_berlin' "
                              "AND last_day < '2025-03-30'").fetchone()[0] == 0
    # No visitor, session or recipient id outlives the events and sessions that name it.
    orphans = store.conn.execute(
        "SELECT kind, key FROM rollup_ids AS i WHERE site_id = 's_berlin' AND CASE kind "
        "WHEN 'v' THEN NOT EXISTS (SELECT 1 FROM events WHERE site_id = i.site_id "
        "AND visitor_id = i.key) "
        "WHEN 's' THEN NOT EXISTS (SELECT 1 FROM rollup_sessions WHERE site_id = i.site_id "
        "AND session_id = i.key) AND NOT EXISTS (SELECT 1 FROM events "
        "WHERE site_id = i.site_id AND session_id = i.key) "
        "ELSE NOT EXISTS (SELECT 1 FROM events WHERE site_id = i.site_id "
        "AND recipient = i.key) END").fetchall()
    assert orphans == []
    assert store.conn.execute("SELECT COUNT(*) FROM rollup_ids WHERE site_id = 's_berlin' "
                              "AND kind = 'v'").fetchone()[0] > 0
    # A range whose comparison period still has raw events keeps matching the raw path.
    assert_same_as_raw(store, "s_berlin", "2025-04-02", "2025-04-04")


def test_rollups_unused_with_filters(store: SqliteStore) -> None:
    store_events(store, generate())
    site = get_site(store.conn, "s_berlin")
    query = replace(ReportQuery("s_berlin", "2025-03-24", "2025-04-04"),
                    filters={"country": "DE"})
    fast = run.top_pages(store, site, query).rows
    raw = run.top_pages(RawStore(store), site, query).rows
    assert fast == raw


def test_rollups_unused_after_direct_insert(store: SqliteStore) -> None:
    events = generate()
    store_events(store, events[:1000])
    direct = replace(events[1000], event_uid="direct-1")
    marks = ", ".join("?" for _ in EVENT_COLUMNS)
    store.conn.execute(f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})",
                       [getattr(direct, column) for column in EVENT_COLUMNS])
    assert not rollups.in_sync(store.conn)
    store_events(store, events[1001:1200])
    assert not rollups.in_sync(store.conn)
    for site_id in SITES:
        rollups.rebuild_site(store.conn, site_id, covers_all=True, fills_parts=True)
    assert rollups.in_sync(store.conn)
    assert_same_as_raw(store, "s_berlin", "2025-03-24", "2025-04-04")


def test_rollup_parts_wait_for_rebuild(store: SqliteStore) -> None:
    """A database upgraded with events already stored reads funnels, properties and email
    campaigns from raw events until a rebuild fills the new rollup parts."""
    store_events(store, generate())
    store.conn.execute("UPDATE rollup_parts SET ready = 0")
    store.conn.execute("DELETE FROM rollup_steps")
    # Email rows written before unique opens counted visitors held other ids.
    store.conn.execute("DELETE FROM rollup_days WHERE dimension IN ('email_open', 'email_click')")
    assert not rollups.part_ready(store.conn, "steps")
    assert not rollups.part_ready(store.conn, "email_visitors")
    assert_same_as_raw(store, "s_berlin", *RANGES[0])
    # Rebuilding one site leaves the parts unready: the other sites' parts are still empty.
    rollups.rebuild_site(store.conn, "s_berlin", covers_all=True)
    assert not rollups.part_ready(store.conn, "steps")
    for site_id in SITES:
        rollups.rebuild_site(store.conn, site_id, covers_all=True, fills_parts=True)
    assert rollups.part_ready(store.conn, "steps")
    assert rollups.part_ready(store.conn, "email_visitors")
    assert store.conn.execute("SELECT COUNT(*) FROM rollup_steps").fetchone()[0] > 0
    assert_same_as_raw(store, "s_berlin", *RANGES[0])


def test_visitor_lookups_use_visitor_index(store: SqliteStore) -> None:
    """Every read of a visitor's sessions seeks the visitor index. Without ANALYZE, SQLite
    otherwise scans the site's whole primary-key range for each visitor, and each batch
    gets slower as sessions accumulate."""
    statements: set[str] = set()
    store.conn.set_trace_callback(statements.add)
    store_events(store, generate()[:3000])
    store.conn.set_trace_callback(None)
    by_visitor = {text for text in statements
                  if "FROM rollup_sessions" in text and "visitor = " in text}
    assert by_visitor
    for text in by_visitor:
        # The traced text has its parameters bound; re-plan it as it ran.
        plan = " ".join(str(row[-1]) for row in
                        store.conn.execute(f"EXPLAIN QUERY PLAN {text}").fetchall())
        assert "rollup_sessions_visitor" in plan, (text, plan)


# (events as (ms offset, kind, name or path), steps, visitors reaching each step). A later
# step may come in the same millisecond as the previous one, but one event serves one step.
SAME_MILLISECOND_FUNNELS = [
    ([(0, "custom", "A"), (0, "custom", "A")], ["event:A", "event:A"], [1, 1]),
    ([(0, "custom", "Purchase"), (0, "custom", "Signup")],
     ["event:Signup", "event:Purchase"], [1, 1]),
    ([(0, "page_view", "/checkout"), (0, "custom", "Purchase")],
     ["page:/checkout", "event:Purchase"], [1, 1]),
    ([(0, "custom", "A"), (0, "custom", "B")], ["event:A", "event:B", "event:A"], [1, 1, 0]),
    ([(0, "custom", "A"), (1, "custom", "B"), (1, "custom", "A")],
     ["event:A", "event:B", "event:A"], [1, 1, 1]),
    ([(0, "custom", "A"), (0, "custom", "A"), (5, "custom", "A")],
     ["event:A", "event:A", "event:A"], [1, 1, 1]),
    ([(0, "custom", "A"), (60_000, "custom", "B")], ["event:A", "event:B"], [1, 1]),
    ([(0, "custom", "A"), (60_001, "custom", "B")], ["event:A", "event:B"], [1, 0]),
    ([(0, "custom", "B"), (5, "custom", "A")], ["event:A", "event:B"], [1, 0]),
]


@pytest.mark.parametrize(("events", "steps", "expected"), SAME_MILLISECOND_FUNNELS)
def test_funnel_ties_and_repeats(store: SqliteStore, events: list[tuple[int, str, str]],
                                 steps: list[str], expected: list[int]) -> None:
    zone = ZoneInfo(SITES["s_berlin"])
    start = int(datetime(2025, 3, 26, 12, tzinfo=zone).timestamp() * 1000)
    counter = [0]
    rows = [_event(counter, "s_berlin", zone, start + offset, visitor_id="v1",
                   session_id="s1", session_start=int(index == 0), kind=kind,
                   name="page_view" if kind == "page_view" else value,
                   path=value if kind == "page_view" else "/",
                   source="pixel" if kind == "page_view" else "beacon")
            for index, (offset, kind, value) in enumerate(events)]
    store_events(store, rows)
    site = get_site(store.conn, "s_berlin")
    query = ReportQuery("s_berlin", "2025-03-26", "2025-03-26")
    parsed = [run.FunnelStep.parse(step) for step in steps]
    fast = run.funnel_steps(store, site, query, steps=parsed, window_seconds=60).rows
    raw = run.funnel_steps(RawStore(store), site, query, steps=parsed,
                           window_seconds=60).rows
    assert [row[2] for row in fast] == expected
    assert fast == raw


def test_erasure_drops_unused_recipient_ids(store: SqliteStore) -> None:
    zone = ZoneInfo(SITES["s_berlin"])
    start = int(datetime(2025, 3, 26, 12, tzinfo=zone).timestamp() * 1000)
    counter = [0]
    opens = [_event(counter, "s_berlin", zone, start + index, visitor_id=visitor,
                    session_id=f"own-{index}", kind="email_open", name="email_open",
                    source="email", campaign="spring", recipient=recipient)
             for index, (visitor, recipient) in enumerate(
                 [("solo", "r-solo"), ("solo", "r-shared"), ("other", "r-shared")])]
    store_events(store, opens)
    selector = rights.Selector("visitor", "s_berlin", visitor_ids=("solo",))
    rights.carry_out(store.conn, rights.request_erasure(store.conn, selector))
    kept = {row[0] for row in store.conn.execute(
        "SELECT key FROM rollup_ids WHERE site_id = 's_berlin' AND kind = 'r'")}
    assert "r-solo" not in kept
    assert "r-shared" in kept
