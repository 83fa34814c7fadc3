"""Report values from the JSON API on a generated dataset, checked against values computed
in plain Python from the same rows. The site is in Europe/Berlin and the range contains
2025-03-30, when clocks there jump from 02:00 to 03:00."""

from __future__ import annotations

import html
import json
import random
import re
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from browser import DESKTOP_UA
from server import Server, SiteInfo, add_site, cli, free_port, wait_drained
from web_fixtures import (
    PASSWORD,
    add_user,
    client,
    event,
    insert_events,
    make_site,
    open_data_dir,
)

from trackpixel.storage.records import EventRow
from trackpixel.web import auth

ZONE = ZoneInfo("Europe/Berlin")
FROM, TO = "2025-03-28", "2025-04-02"
PATHS = ["/", "/pricing", "/signup", "/blog/<b>x</b>"]
CHANNELS = ["direct", "organic_search", "email"]


def generate(site: object, seed: int = 11) -> list[EventRow]:
    """Sessions of 1 to 5 events from 40 visitors who return on several days."""
    rng = random.Random(seed)
    start = datetime(2025, 3, 27, 12, tzinfo=ZONE)
    rows = []
    for session in range(400):
        visitor = f"v{rng.randrange(40)}"
        ts = int((start + timedelta(minutes=rng.randrange(7 * 24 * 60))).timestamp() * 1000)
        channel = rng.choice(CHANNELS)
        country = rng.choice(["DE", "NZ", "US"])
        device = rng.choice(["desktop", "mobile"])
        bot = 1 if rng.random() < 0.05 else 0
        for position in range(rng.randint(1, 5)):
            custom = position > 0 and rng.random() < 0.3
            name = rng.choice(["Signup", "Purchase"]) if custom else "page_view"
            rows.append(event(
                site, ts, kind="custom" if custom else "page_view", name=name,
                source="beacon" if custom else "pixel", path=rng.choice(PATHS),
                channel=channel, visitor_id=visitor, session_id=f"s{session}",
                session_start=1 if position == 0 else 0, country=country, device_type=device,
                is_bot=bot, bot_reason="ua" if bot else None,
                value=10.0 if name == "Purchase" else None,
                props='{"plan":"pro"}' if name == "Signup" and rng.random() < 0.5 else
                ('{"plan":"free"}' if name == "Signup" else None)))
            ts += rng.randint(10_000, 900_000)
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, list[EventRow]]:
    directory, conn = open_data_dir(tmp_path_factory.mktemp("reports"))
    site = make_site(conn, "reports.example", "Europe/Berlin")
    rows = generate(site)
    insert_events(conn, rows)
    user = add_user(conn, "admin@example.com")
    token = auth.create_token(conn, user)
    test_client = client(directory)
    test_client.headers["Authorization"] = f"Bearer {token}"
    return test_client, site, rows


def people(rows: list[EventRow], from_day: str = FROM, to_day: str = TO) -> list[EventRow]:
    return [row for row in rows if from_day <= row.local_day <= to_day and not row.is_bot]


def fetch(test_client: object, report: str, **params: object) -> dict[str, object]:
    response = test_client.get(f"/api/v1/reports/{report}",  # type: ignore[attr-defined]
                               params={"from": FROM, "to": TO, **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def as_dicts(body: dict[str, object]) -> list[dict[str, object]]:
    columns = body["columns"]
    return [dict(zip(columns, row, strict=True)) for row in body["rows"]]  # type: ignore


def test_overview_totals_match_python(dataset: tuple) -> None:
    test_client, site, rows = dataset
    body = fetch(test_client, "overview", site=site.id)
    values = {row["metric"]: row for row in as_dicts(body)}
    expected = people(rows)
    assert values["visitors"]["value"] == len({row.visitor_id for row in expected})
    assert values["page_views"]["value"] == sum(row.kind == "page_view" for row in expected)
    assert values["events"]["value"] == len(expected)
    assert values["conversions"]["value"] == sum(row.kind == "custom" for row in expected)
    assert values["sessions"]["value"] == len({row.session_id for row in expected
                                               if row.session_start})
    previous = people(rows, "2025-03-22", "2025-03-27")
    assert values["visitors"]["previous"] == len({row.visitor_id for row in previous})


def test_multi_day_visitors_not_summed(dataset: tuple) -> None:
    test_client, _site, rows = dataset
    expected = people(rows)
    daily = defaultdict(set)
    for row in expected:
        daily[row.local_day].add(row.visitor_id)
    total = {row["metric"]: row["value"] for row in as_dicts(fetch(test_client, "overview"))}
    assert total["visitors"] == len({row.visitor_id for row in expected})
    assert total["visitors"] < sum(len(visitors) for visitors in daily.values())


def test_daily_series_includes_dst_day(dataset: tuple) -> None:
    test_client, _site, rows = dataset
    series = {row["bucket"]: row for row in as_dicts(fetch(test_client, "timeseries"))}
    expected = people(rows)
    assert list(series) == ["2025-03-28", "2025-03-29", "2025-03-30", "2025-03-31",
                            "2025-04-01", "2025-04-02"]
    for day, row in series.items():
        on_day = [event for event in expected if event.local_day == day]
        assert row["visitors"] == len({event.visitor_id for event in on_day}), day
        assert row["page_views"] == sum(event.kind == "page_view" for event in on_day), day


def test_hourly_series_on_dst_day(dataset: tuple) -> None:
    test_client, _site, rows = dataset
    body = fetch(test_client, "timeseries", interval="hour", **{"from": "2025-03-30",
                                                                 "to": "2025-03-30"})
    hours = {row["bucket"]: row["page_views"] for row in as_dicts(body)}
    expected = Counter()
    for row in people(rows, "2025-03-30", "2025-03-30"):
        if row.kind == "page_view":
            local = datetime.fromtimestamp(row.ts / 1000, ZONE)
            expected[f"{local.date()} {local.hour:02d}:00"] += 1
    assert hours["2025-03-30 02:00"] == 0  # this local hour does not exist in Berlin
    for bucket, count in hours.items():
        assert count == expected.get(bucket, 0), bucket


def test_weekly_series_counts_distinct_visitors(dataset: tuple) -> None:
    test_client, _site, rows = dataset
    body = fetch(test_client, "timeseries", interval="week")
    weeks = {row["bucket"]: row["visitors"] for row in as_dicts(body)}
    expected = defaultdict(set)
    for row in people(rows):
        day = datetime.strptime(row.local_day, "%Y-%m-%d").date()
        expected[(day - timedelta(days=day.weekday())).isoformat()].add(row.visitor_id)
    assert weeks == {week: len(visitors) for week, visitors in expected.items()}


def test_pages_and_channels_match_python(dataset: tuple) -> None:
    test_client, _site, rows = dataset
    expected = people(rows)
    pages = {row["path"]: row["page_views"] for row in as_dicts(fetch(test_client, "pages"))}
    assert pages == Counter(row.path for row in expected if row.kind == "page_view")
    channels = {row["channel"]: row["sessions"]
                for row in as_dicts(fetch(test_client, "channels"))}
    assert channels == Counter(row.channel for row in expected if row.session_start)


def test_filters_restrict_every_count(dataset: tuple) -> None:
    test_client, _site, rows = dataset
    body = fetch(test_client, "countries", device="mobile", channel="email")
    countries = {row["country"]: row["visitors"] for row in as_dicts(body)}
    expected = defaultdict(set)
    for row in people(rows):
        if row.device_type == "mobile" and row.channel == "email":
            expected[row.country].add(row.visitor_id)
    assert countries == {key: len(value) for key, value in expected.items()}
    assert body["filters"] == {"channel": "email", "device": "mobile"}


def test_property_filter_and_breakdown(dataset: tuple) -> None:
    test_client, _site, rows = dataset
    body = fetch(test_client, "events", prop="plan=pro")
    events = {row["name"]: row["events"] for row in as_dicts(body)}
    assert events == {"Signup": sum(row.props == '{"plan":"pro"}' for row in people(rows))}
    props = as_dicts(fetch(test_client, "event_properties"))
    counted = {(row["name"], row["property"], row["value"]): row["events"] for row in props}
    assert counted[("Signup", "plan", "free")] == sum(row.props == '{"plan":"free"}'
                                                      for row in people(rows))


def test_funnel_matches_python(dataset: tuple) -> None:
    test_client, _site, rows = dataset
    body = fetch(test_client, "funnel", step=["page:/pricing", "event:Signup"],
                 window_hours=1)
    by_visitor = defaultdict(list)
    for row in sorted(people(rows), key=lambda row: (row.visitor_id, row.ts)):
        by_visitor[row.visitor_id].append(row)
    first = second = 0
    for events in by_visitor.values():
        starts = [row for row in events if row.kind == "page_view" and row.path == "/pricing"]
        if not starts:
            continue
        first += 1
        t0 = starts[0].ts
        if any(row.name == "Signup" and t0 < row.ts <= t0 + 3_600_000 for row in events):
            second += 1
    steps = as_dicts(body)
    assert [step["visitors"] for step in steps] == [first, second]
    assert steps[1]["drop_off"] == first - second


def test_csv_export_of_pages(dataset: tuple) -> None:
    test_client, _site, _rows = dataset
    response = test_client.get("/api/v1/reports/pages",
                               params={"from": FROM, "to": TO, "format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == "path,page_views,visitors,entries"
    assert len(lines) == 1 + len(PATHS)


def test_rejected_hits_by_scope(tmp_path) -> None:  # type: ignore[no-untyped-def]
    directory, conn = open_data_dir(tmp_path)
    site = make_site(conn, "quality.example", "Europe/Berlin")
    other = make_site(conn, "other.example", "Europe/Berlin")
    noon = int(datetime(2025, 3, 30, 12, tzinfo=ZONE).timestamp() * 1000)
    hits = [(site.id, "invalid_field"), (site.id, "invalid_field"), (None, "unknown_site"),
            (None, "invalid_field"), (other.id, "invalid_field")]
    conn.executemany(
        "INSERT INTO rejected_hits (hit_uid, received_ts, source, site_id, reason, detail, raw,"
        " user_agent) VALUES (?, ?, 'pixel', ?, ?, 'detail', ?, 'agent')",
        [(f"r{number}", noon + number, site_id, reason, f"raw-{number}".encode())
         for number, (site_id, reason) in enumerate(hits)])
    admin = add_user(conn, "admin@example.com")
    viewer = add_user(conn, "viewer@example.com", "viewer", sites=(site.id,))
    expected_rows = {
        admin: [["invalid_field", "site", 2], ["invalid_field", "unattributed", 1],
                ["unknown_site", "unattributed", 1]],
        # A viewer sees only the hits of the site, never those whose site is unknown.
        viewer: [["invalid_field", "site", 2]],
    }
    for user, expected in expected_rows.items():
        test_client = client(directory)
        test_client.headers["Authorization"] = f"Bearer {auth.create_token(conn, user)}"
        response = test_client.get("/api/v1/reports/rejected",
                                   params={"site": site.id, "from": FROM, "to": TO})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["columns"] == ["reason", "scope", "hits", "last_seen_utc", "samples"]
        assert [row[:3] for row in body["rows"]] == expected, user.email
    conn.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    """A running server with one site and an admin: (server, site id, API token)."""
    data = tmp_path_factory.mktemp("served")
    site = add_site(data, "localhost")
    subprocess.run([sys.executable, "-m", "trackpixel", "users", "add", "admin@example.com",
                    "--role", "admin", "--password-stdin", "--data-dir", str(data)],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    token = cli(data, "users", "token", "admin@example.com").stdout.strip()
    server = Server(data).start()
    yield server, site.id, token
    server.stop()


def _api(served: tuple[Server, str, str], report: str, query: str) -> httpx.Response:
    server, site_id, token = served
    return httpx.get(f"{server.base}/api/v1/reports/{report}?site={site_id}&{query}",
                     headers={"Authorization": f"Bearer {token}"})


def _dashboard(served: tuple[Server, str, str]) -> httpx.Client:
    server, _, _ = served
    browser = httpx.Client(base_url=server.base)
    page = browser.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = browser.post("/dashboard/login", data={
        "email": "admin@example.com", "password": PASSWORD, "csrf_token": token.group(1)})
    assert response.status_code == 303
    return browser


OUT_OF_RANGE = [
    ("overview", "from=0001-01-05&to=0001-01-06", "to"),
    ("pages", "from=0001-01-05&to=0001-01-06", "to"),
    ("timeseries", "from=0001-01-05&to=0001-01-06&interval=week", "to"),
    ("funnel", "from=0001-01-05&to=0001-01-06&step=page:/&step=event:Signup", "to"),
    ("rejected", "from=9999-12-31&to=9999-12-31", "to"),
    ("overview", "to=0001-01-05", "to"),
    ("overview", "from=1999-12-31&to=2000-01-05", "from"),
]


@pytest.mark.parametrize(("report", "query", "param"), OUT_OF_RANGE)
def test_api_rejects_unsupported_dates(served: tuple[Server, str, str], report: str,
                                       query: str, param: str) -> None:
    response = _api(served, report, query)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["details"] == {"param": param}
    assert "outside the supported range 2000-01-01 to 9998-12-31" in error["message"]


def test_api_accepts_range_edges(served: tuple[Server, str, str]) -> None:
    for query in ("from=2000-01-01&to=2000-01-31", "from=9998-12-01&to=9998-12-31"):
        for report in ("overview", "timeseries", "rejected"):
            response = _api(served, report, query)
            assert response.status_code == 200, (report, query, response.text)


def test_dashboard_rejects_unsupported_dates(served: tuple[Server, str, str]) -> None:
    browser = _dashboard(served)
    for view in ("overview", "pages", "quality", "funnel"):
        page = browser.get(f"/dashboard/{view}?from=0001-01-05&to=0001-01-06")
        assert page.status_code == 400, view
        assert "outside the supported range 2000-01-01 to 9998-12-31" in page.text


def test_cli_rejects_unsupported_dates(served: tuple[Server, str, str]) -> None:
    server, site_id, _ = served
    result = cli(server.data_dir, "report", "rejected", "--site", site_id, "--to", "9999-12-31",
                 check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: --to=9999-12-31 is outside the supported range 2000-01-01 to 9998-12-31"]


def test_api_rejects_unknown_filter(served: tuple[Server, str, str]) -> None:
    response = _api(served, "pages", "colour=red")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_parameter"
    assert error["details"]["param"] == "colour"
    assert "country" in error["details"]["allowed_filters"]
    assert "prop" in error["details"]["allowed_filters"]
    assert "limit" in error["details"]["allowed_parameters"]
    assert "unknown parameter 'colour'" in error["message"]


def test_api_rejects_repeated_filter(served: tuple[Server, str, str]) -> None:
    cases = [("country=DE&country=NZ", "country"), ("prop=plan%3Dpro&prop=plan%3Dfree", "prop"),
             ("limit=5&limit=6", "limit")]
    for query, param in cases:
        response = _api(served, "pages", query)
        assert response.status_code == 400, query
        error = response.json()["error"]
        assert error["code"] == "invalid_parameter"
        assert error["details"]["param"] == param
        assert error["message"] == f"{param} is given more than once; give each parameter once"


def test_api_known_parameters_accepted(served: tuple[Server, str, str]) -> None:
    queries = ["format=csv&limit=5", "interval=hour&goal=Signup", "country=DE&prop=plan%3Dpro",
               "prop_event=Signup", "step=page:/&step=event:Signup&window_hours=2"]
    for query in queries:
        report = "funnel" if "step=" in query else "timeseries"
        response = _api(served, report, query)
        assert response.status_code == 200, (query, response.text)


def test_dashboard_rejects_unknown_filter(served: tuple[Server, str, str]) -> None:
    browser = _dashboard(served)
    page = browser.get("/dashboard/pages?colour=red")
    assert page.status_code == 400
    assert "unknown parameter &#39;colour&#39;" in page.text
    assert browser.get("/dashboard/pages?country=DE&interval=day").status_code == 200


def test_dashboard_funnel_form_with_max_steps(served: tuple[Server, str, str]) -> None:
    # The funnel form submits one empty step input after the filled ones.
    steps = [f"page:/step-{number}" for number in range(10)]
    browser = _dashboard(served)
    page = browser.get("/dashboard/funnel", params={"step": [*steps, ""]})
    assert page.status_code == 200, page.text
    assert page.text.count('<input name="step"') == 11
    assert "page:/step-9" in page.text
    too_many = browser.get("/dashboard/funnel", params={"step": [*steps, "event:Signup"]})
    assert too_many.status_code == 400
    assert "a funnel has at most 10 steps" in too_many.text
    api = _api(served, "funnel", "&".join(f"step={step}" for step in [*steps, ""]))
    assert api.status_code == 200, api.text
    assert len(api.json()["rows"]) == 10


def test_openapi_lists_every_api_status(served: tuple[Server, str, str]) -> None:
    server, _, token = served
    document = httpx.get(f"{server.base}/api/v1/openapi.json").json()
    operation = document["paths"]["/api/v1/reports/{report}"]["get"]
    assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "500", "503"}
    listing = document["paths"]["/api/v1/reports"]["get"]
    assert listing["security"] == []
    assert httpx.get(f"{server.base}/api/v1/reports").status_code == 200
    names = [report["name"] for report in httpx.get(f"{server.base}/api/v1/reports").json()[
        "reports"]]
    assert names == operation["parameters"][0]["schema"]["enum"]

    # A server whose ClickHouse store cannot be reached returns 503 in the documented shape.
    unreachable = Server(server.data_dir, extra=(
        "--no-processor", "--store", f"clickhouse://127.0.0.1:{free_port()}/trackpixel")).start()
    try:
        response = httpx.get(f"{unreachable.base}/api/v1/reports/pages",
                             headers={"Authorization": f"Bearer {token}"})
    finally:
        unreachable.stop()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"


def test_api_wrong_method_json_error(served: tuple[Server, str, str]) -> None:
    server, _, token = served
    response = httpx.post(f"{server.base}/api/v1/reports/pages",
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 405
    assert sorted(response.headers["allow"].split(", ")) == ["GET", "HEAD"]
    assert response.json()["error"] == {
        "code": "method_not_allowed",
        "message": "method POST is not allowed on /api/v1/reports/pages: use GET, HEAD"}


@pytest.mark.parametrize(("param", "value"), [
    ("from", "20250101"), ("to", "2025W011"), ("to", "2025-W01-1"), ("limit", "\uff11\uff10"),
    ("limit", "1_0"), ("window_hours", " 5")])
def test_api_rejects_nonstandard_values(served: tuple[Server, str, str], param: str,
                                       value: str) -> None:
    response = httpx.get(f"{served[0].base}/api/v1/reports/pages",
                         params={"site": served[1], param: value},
                         headers={"Authorization": f"Bearer {served[2]}"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == {"param": param}


def test_cli_rejects_compact_date(served: tuple[Server, str, str]) -> None:
    server, site_id, _ = served
    result = cli(server.data_dir, "report", "pages", "--site", site_id, "--from", "20250101",
                 check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: --from '20250101' is not a valid date; use YYYY-MM-DD, e.g. 2026-11-30"]


def test_invalid_property_name_rejected(served: tuple[Server, str, str]) -> None:
    for name in ('a"b', "a\\b", "k" * 65):
        response = _api(served, "pages", f"prop={name}=1")
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_parameter"
        assert error["details"] == {"param": "prop"}
        assert "invalid property name" in error["message"]
        step = _api(served, "funnel", f"step=page:/&step=event:Signup%7C{name}=1")
        assert step.status_code == 400, (name, step.text)
        assert step.json()["error"]["details"] == {"param": "step"}


def test_dashboard_csv_links_pin_range(served: tuple[Server, str, str]) -> None:
    browser = _dashboard(served)
    page = browser.get("/dashboard/pages?country=DE")
    assert page.status_code == 200
    from_day = re.search(r'name="from" id="from" value="([^"]+)"', page.text)
    to_day = re.search(r'name="to" id="to" value="([^"]+)"', page.text)
    assert from_day is not None
    assert to_day is not None
    links = re.findall(r'class="csv" href="([^"]+)"', page.text)
    assert len(links) == 3
    for link in links:
        query = parse_qs(urlsplit(link.replace("&amp;", "&")).query)
        assert query["from"] == [from_day.group(1)], link
        assert query["to"] == [to_day.group(1)], link
        assert query["country"] == ["DE"], link
        assert query["format"] == ["csv"], link
        response = browser.get(link.replace("&amp;", "&"))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")


def test_login_keeps_shared_view_query(served: tuple[Server, str, str]) -> None:
    server, site_id, _ = served
    shared = f"/dashboard/pages?site={site_id}&referrer=a%2F%2Fb&page=/x//y"
    browser = httpx.Client(base_url=server.base)
    redirect = browser.get(shared)
    assert redirect.status_code == 303
    login_page = browser.get(redirect.headers["location"])
    token = re.search(r'name="csrf_token" value="([^"]+)"', login_page.text)
    next_field = re.search(r'name="next" value="([^"]+)"', login_page.text)
    assert token is not None
    assert next_field is not None
    response = browser.post("/dashboard/login", data={
        "email": "admin@example.com", "password": PASSWORD, "csrf_token": token.group(1),
        "next": html.unescape(next_field.group(1))})
    assert response.status_code == 303
    assert urlsplit(response.headers["location"]).path == "/dashboard/pages"
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query == {"site": [site_id], "referrer": ["a//b"], "page": ["/x//y"]}


@pytest.mark.parametrize("target", ["//evil.example/dashboard", "/dashboard//evil.example",
                                    "/dashboard\\evil", "https://evil.example/dashboard",
                                    "/other?x=/dashboard"])
def test_login_rejects_foreign_next(served: tuple[Server, str, str], target: str) -> None:
    server, _, _ = served
    browser = httpx.Client(base_url=server.base)
    page = browser.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = browser.post("/dashboard/login", data={
        "email": "admin@example.com", "password": PASSWORD, "csrf_token": token.group(1),
        "next": target})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/overview"


def test_rejected_report_filters_and_limit(served: tuple[Server, str, str]) -> None:
    server, site_id, _ = served
    now = int(datetime.now().timestamp() * 1000)
    hits = ["invalid_field"] * 3 + ["bad_signature"] * 2 + ["too_large"]
    conn = sqlite3.connect(server.data_dir / "trackpixel.db", timeout=30)
    with conn:
        conn.executemany(
            "INSERT INTO rejected_hits (hit_uid, received_ts, source, site_id, reason, detail,"
            " raw, user_agent) VALUES (?, ?, 'pixel', ?, ?, 'detail', ?, 'agent')",
            [(f"limit-{number}", now - number, site_id, reason, b"raw")
             for number, reason in enumerate(hits)])
    conn.close()

    unfiltered = _api(served, "rejected", "").json()
    assert unfiltered["title"] == "Rejected hits"
    assert [row[:3] for row in unfiltered["rows"]] == [
        ["invalid_field", "site", 3], ["bad_signature", "site", 2], ["too_large", "site", 1]]

    limited = _api(served, "rejected", "limit=2").json()
    assert [row[0] for row in limited["rows"]] == ["invalid_field", "bad_signature"]

    filtered = _api(served, "rejected", "country=DE").json()
    assert filtered["title"] == "Rejected hits (filters do not apply to rejected hits)"
    assert filtered["rows"] == unfiltered["rows"]


def test_cached_selection_after_request_ends(served: tuple[Server, str, str]) -> None:
    # Each request closes its database connection, while the filtered-column selection of a
    # range is cached for later requests that look up other values.
    range_query = "from=2024-01-01&to=2024-01-31&step=page:/"
    for value in ("pro", "team", "enterprise"):
        response = _api(served, "funnel", f"{range_query}&step=event:Signup%7Cplan={value}")
        assert response.status_code == 200, (value, response.text)
        assert [row[2] for row in response.json()["rows"]] == [0, 0]
    for country in ("DE", "NZ"):
        response = _api(served, "pages", f"from=2024-01-01&to=2024-01-31&country={country}")
        assert response.status_code == 200, (country, response.text)


def test_dashboard_without_sites(tmp_path: Path) -> None:
    # serve creates the data directory, and users add then finds no site.
    server = Server(tmp_path).start()
    try:
        subprocess.run([sys.executable, "-m", "trackpixel", "users", "add", "admin@example.com",
                        "--role", "admin", "--password-stdin", "--data-dir", str(tmp_path)],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)
        browser = _dashboard((server, "", ""))
        page = browser.get("/dashboard/overview")
    finally:
        server.stop()
    assert page.status_code == 403
    assert "No site exists yet: add one with &#39;trackpixel sites add DOMAIN&#39;." in page.text


def test_limit_applies_to_quality_reports(tmp_path: Path) -> None:
    directory, conn = open_data_dir(tmp_path)
    site = make_site(conn, "quality.example", "Europe/Berlin")
    noon = int(datetime(2025, 3, 30, 12, tzinfo=ZONE).timestamp() * 1000)
    rows = []
    for index, label in enumerate(["a", "a", "a", "b", "b", "c"]):
        rows.append(event(site, noon + index, is_bot=1, bot_reason=f"reason-{label}",
                          visitor_id=f"bot{index}", session_id=f"bs{index}"))
        rows.append(event(site, noon + index, kind="email_open", source="email",
                          name="email_open", machine_open=1, campaign=f"campaign-{label}",
                          recipient=f"r{index}", visitor_id=f"m{index}",
                          session_id=f"ms{index}"))
    insert_events(conn, rows)
    token = auth.create_token(conn, add_user(conn, "admin@example.com"))
    conn.close()
    # Without the processor, whose retention would delete these 2025 events.
    server = Server(directory.root, extra=("--no-processor",)).start()
    try:
        bodies = {report: httpx.get(
            f"{server.base}/api/v1/reports/{report}",
            params={"site": site.id, "from": FROM, "to": TO, "limit": 2},
            headers={"Authorization": f"Bearer {token}"}).json()
            for report in ("bots", "machine_opens")}
    finally:
        server.stop()
    assert [row[:2] for row in bodies["bots"]["rows"]] == [["reason-a", 3], ["reason-b", 2]]
    assert [row[:2] for row in bodies["machine_opens"]["rows"]] == [
        ["campaign-a", 3], ["campaign-b", 2]]
def test_filtered_reports_share_selection(server: Server, site: SiteInfo,
                                          data_dir: Path) -> None:
    """A filtered report reuses the selection of an earlier request with the same filters,
    whose database connection is closed by then."""
    page = "http%3A%2F%2Flocalhost%2Fpricing"
    for number in range(3):
        httpx.get(f"{server.base}/p.gif?s={site.id}&u={page}&id=v{number}",
                  headers={"User-Agent": DESKTOP_UA})
    httpx.get(f"{server.base}/p.gif?s={site.id}&e=Signup&u={page}",
              headers={"User-Agent": DESKTOP_UA})
    wait_drained(data_dir)
    subprocess.run([sys.executable, "-m", "trackpixel", "users", "add", "admin@example.com",
                    "--role", "admin", "--password-stdin", "--data-dir", str(data_dir)],
                   input=PASSWORD + "\n", text=True, capture_output=True, check=True)
    token = cli(data_dir, "users", "token", "admin@example.com").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{server.base}/api/v1/reports"

    pages = httpx.get(f"{base}/pages?site={site.id}&device=desktop", headers=headers)
    events = httpx.get(f"{base}/events?site={site.id}&device=desktop", headers=headers)
    browsers = httpx.get(f"{base}/browsers?site={site.id}&device=desktop", headers=headers)

    assert pages.status_code == 200
    assert pages.json()["rows"] == [["/pricing", 3, 1, 1]]
    assert events.status_code == 200
    assert events.json()["rows"] == [["Signup", 1, 1, 0.0]]
    assert browsers.status_code == 200
    assert browsers.json()["rows"] == [["Chrome", 1, 1, 3]]


def test_overview_chart_has_previous_period(tmp_path: Path) -> None:
    directory, conn = open_data_dir(tmp_path)
    site = make_site(conn, "reports.example", "Europe/Berlin")
    rows = generate(site)
    insert_events(conn, rows)
    add_user(conn, "admin@example.com")
    conn.close()
    # The events went in without the rollups that the processor keeps beside them.
    cli(directory.root, "rollups", "rebuild")
    server = Server(directory.root).start()
    try:
        browser = _dashboard((server, site.id, ""))
        page = browser.get(f"/dashboard/overview?site={site.id}&from={FROM}&to={TO}")
    finally:
        server.stop()
    assert page.status_code == 200
    found = re.search(r'<script type="application/json" id="series-data">(.*?)</script>',
                      page.text, re.DOTALL)
    assert found is not None
    series = json.loads(found.group(1))
    # The six days before the range, day by day, beside the range's own six days.
    earlier = [(datetime(2025, 3, 22) + timedelta(days=index)).date().isoformat()
               for index in range(6)]
    assert series["labels"] == ["2025-03-28", "2025-03-29", "2025-03-30", "2025-03-31",
                                "2025-04-01", "2025-04-02"]
    assert series["previous_labels"] == earlier
    expected = [len({row.visitor_id for row in people(rows, day, day)}) for day in earlier]
    assert series["previous_visitors"] == expected
    assert sum(expected) > 0
    assert series["visitors"][0] == len({row.visitor_id
                                         for row in people(rows, "2025-03-28", "2025-03-28")})
