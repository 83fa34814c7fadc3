"""A real Chromium loads a page with the snippet and an HTML email with the open pixel; the
stored events and the CLI reports are checked field by field."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from browser import DESKTOP_UA, chromium, page_server
from server import Server, SiteInfo, cli, query, wait_drained

PAGES = Path(__file__).parent / "snippet_pages"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"

COLUMNS = ("name", "kind", "source", "path", "title", "value", "currency", "client_event_id",
           "props", "channel", "browser", "os", "device_type", "is_bot", "machine_open",
           "visitor_id", "session_id", "session_start", "local_day", "campaign", "ip_anon",
           "consent_analytics", "consent_ad_user_data", "cookieless", "recipient")

pytestmark = pytest.mark.browser


def _events(data_dir: Path) -> list[dict[str, object]]:
    rows = query(data_dir, f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY ts, id")
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def test_snippet_and_email_in_chromium(server: Server, site: SiteInfo, data_dir: Path) -> None:
    open_tag = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "spring-rates",
                   "--recipient", "sub-1001", "--collector", server.base).stdout
    open_url = open_tag.split('src="')[1].split('"')[0]

    def pages(path: str) -> bytes | None:
        if path == "/site.html":
            html = (PAGES / "site.html").read_text()
            return html.replace("{{COLLECTOR}}", server.base).replace("{{SITE}}", site.id).encode()
        if path == "/email.html":
            return (PAGES / "email.html").read_text().replace("{{OPEN_PIXEL}}", open_url).encode()
        if path == "/thanks":
            return b"<!doctype html><title>Thanks</title><p>Thanks"
        return None

    ARTIFACTS.mkdir(exist_ok=True)
    with page_server(pages) as port, chromium() as browser:
        context = browser.new_context(user_agent=DESKTOP_UA)
        page = context.new_page()
        page.goto(f"http://localhost:{port}/site.html", wait_until="networkidle")
        page.click("#go-pricing")
        page.fill("#email", "someone@example.com")
        page.click("#track-lead")
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "snippet-page.png"))
        with page.expect_navigation():
            page.click("#lead-submit")
        page.goto(f"http://localhost:{port}/email.html", wait_until="networkidle")
        context.close()

    wait_drained(data_dir)
    events = _events(data_dir)
    names = [event["name"] for event in events]
    assert names == ["page_view", "Queued Before Load", "page_view", "Lead Form Started",
                     "Lead Submitted", "Lead Form Submitted", "email_open"]

    first_view, queued, pricing, started, lead, submitted, opened = events
    assert first_view["path"] == "/site.html"
    assert first_view["title"] == "Snippet Test Home"
    assert first_view["session_start"] == 1
    assert pricing["path"] == "/pricing"
    assert pricing["session_start"] == 0
    assert queued["props"] == '{"plan":"pro"}'
    assert lead["value"] == 250.0
    assert lead["currency"] == "NZD"
    assert lead["client_event_id"] == "lead-123"
    assert lead["kind"] == "custom"
    assert "someone@example.com" not in json.dumps(events)

    browsing = [first_view, queued, pricing, started, lead, submitted]
    assert {event["visitor_id"] for event in browsing} == {first_view["visitor_id"]}
    assert {event["session_id"] for event in browsing} == {first_view["session_id"]}
    for event in browsing:
        assert event["source"] == "beacon"
        assert event["browser"] == "Chrome"
        assert event["os"] == "Linux"
        assert event["device_type"] == "desktop"
        assert event["is_bot"] == 0
        assert event["channel"] == "direct"
        assert event["ip_anon"] == "127.0.0.0"

    assert opened["kind"] == "email_open"
    assert opened["source"] == "open"
    assert opened["campaign"] == "spring-rates"
    assert opened["machine_open"] == 0
    assert opened["channel"] == "email"
    assert opened["visitor_id"] != first_view["visitor_id"]
    # An email carries no consent banner and 127.0.0.1 has no country, so the strictest
    # regional default applies: no recipient id is kept.
    assert opened["consent_analytics"] == "denied"
    assert opened["recipient"] is None
    assert first_view["consent_analytics"] == "granted"
    assert first_view["consent_ad_user_data"] == "denied"
    assert first_view["cookieless"] == 0

    today = datetime.now(ZoneInfo("Pacific/Auckland")).date().isoformat()
    assert {event["local_day"] for event in events} == {today}

    funnel = json.loads(cli(data_dir, "report", "funnel", "--site", site.id,
                            "--step", "event:Lead Form Started", "--step", "event:Lead Submitted",
                            "--step", "event:Lead Form Submitted", "--format", "json").stdout)
    assert [step["visitors"] for step in funnel] == [1, 1, 1]
    assert [step["conversion_pct"] for step in funnel] == [100.0, 100.0, 100.0]

    email = json.loads(cli(data_dir, "report", "email", "--site", site.id, "--format",
                           "json").stdout)
    assert email == [{"campaign": "spring-rates", "opens": 1, "unique_human_opens": 1,
                      "machine_opens": 0, "clicks": 0, "unique_clicks": 0,
                      "click_to_open_pct": 0.0}]

    overview = {row["metric"]: row["value"] for row in json.loads(
        cli(data_dir, "report", "overview", "--site", site.id, "--format", "json").stdout)}
    assert overview["visitors"] == 2
    assert overview["sessions"] == 1
    assert overview["page_views"] == 2
    assert overview["conversions"] == 4
    rejected = json.loads(cli(data_dir, "report", "rejected", "--site", site.id, "--format",
                              "json").stdout)
    assert [row for row in rejected if row["scope"] == "site"] == []


def test_snippet_long_url_keeps_whole_parameters(server: Server, site: SiteInfo,
                                                 data_dir: Path) -> None:
    """A page URL over 2,048 characters loses whole query parameters in the snippet, as in the
    processor, so a UTM tag across the limit is dropped, not stored cut."""
    html = (f'<!doctype html><title>Landing</title><script async src="{server.base}/t.js" '
            f'data-site="{site.id}"></script>').encode()
    campaign = "utm_campaign=spring-rates-2026"

    with page_server(lambda path: html if path == "/landing" else None) as port, \
            chromium() as browser:
        prefix = f"http://localhost:{port}/landing?fbclid="
        # The campaign tag starts 16 characters before the limit, so a plain cut at the limit
        # keeps "utm_campaign=spr".
        click_id = "F" * (2048 - 16 - len(prefix) - 1)
        url = f"{prefix}{click_id}&{campaign}&utm_source=facebook"
        context = browser.new_context(user_agent=DESKTOP_UA)
        page = context.new_page()
        page.goto(url, wait_until="networkidle")
        context.close()

    wait_drained(data_dir)
    stored = query(data_dir, "SELECT url, utm_campaign, utm_source, campaign FROM events")
    assert stored == [(f"{prefix}{click_id}", None, None, None)]
