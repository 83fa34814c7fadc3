"""The dashboard in headless Chromium against the real server: log in, switch site and
range, filter, build a funnel, export CSV, and render hostile tracked values inert."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import pytest
from browser import chromium
from server import Server, SiteInfo, add_site
from web_fixtures import PASSWORD, add_user, event, insert_events

from trackpixel.sites import get_site
from trackpixel.storage.sqlite import connect

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
XSS_TITLE = '<img src=x onerror="window.__xss=1">'
XSS_PATH = '/<script>window.__xss=2</script>'
XSS_URL = "javascript:window.__xss=3"

pytestmark = pytest.mark.browser


def seed(data_dir: Path, site_info: SiteInfo, other_info: SiteInfo) -> None:
    conn = connect(data_dir / "trackpixel.db")
    site = get_site(conn, site_info.id)
    other = get_site(conn, other_info.id)
    now = int(time.time() * 1000) - 3_600_000
    rows = []
    for index in range(6):
        visitor, session = f"v{index}", f"s{index}"
        channel = "email" if index % 2 else "organic_search"
        rows.append(event(site, now + index, path="/pricing", channel=channel,
                          visitor_id=visitor, session_id=session, session_start=1,
                          title=XSS_TITLE, referrer_host="evil.example",
                          device_type="mobile"))
        if index < 3:
            rows.append(event(site, now + index + 60_000, kind="custom", name="Signup",
                              source="beacon", channel=channel, visitor_id=visitor,
                              session_id=session, props='{"plan":"<b>pro</b>"}'))
    rows.append(event(site, now + 10, path=XSS_PATH, channel="referral", visitor_id="vx",
                      session_id="sx", session_start=1, referrer_host=XSS_URL,
                      utm_source=XSS_URL, utm_campaign="<svg onload=alert(1)>"))
    rows.append(event(site, now + 20, kind="custom", name='"><script>window.__xss=4</script>',
                      source="beacon", visitor_id="vx", session_id="sx",
                      props='{"<img src=x onerror=alert(5)>":"javascript:alert(6)"}'))
    rows.append(event(other, now, path="/other-only", visitor_id="o1", session_id="o1",
                      session_start=1))
    insert_events(conn, rows)
    add_user(conn, "admin@example.com")
    conn.close()


def test_dashboard_in_chromium(data_dir: Path, site: SiteInfo) -> None:
    other = add_site(data_dir, "other.example")
    seed(data_dir, site, other)
    server = Server(data_dir).start()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with chromium() as browser:
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message),
                                              dialog.dismiss()))
            script_errors: list[str] = []
            page.on("pageerror", lambda error: script_errors.append(str(error)))

            page.goto(f"{server.base}/dashboard")
            assert "/dashboard/login" in page.url
            page.fill("input[name=email]", "admin@example.com")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/dashboard/overview**")

            page.select_option("#site-select", site.id)
            page.click("#apply")
            page.wait_for_load_state()
            assert "/pricing" in page.inner_text("#report-pages")
            page.wait_for_selector("#chart canvas")
            # The chart draws this period's visitors and page views and the previous
            # period's visitors.
            legend = page.inner_text("#chart")
            assert "Visitors, previous period" in legend
            assert "Page views" in legend
            assert script_errors == []
            page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

            # Switch the site: the other site's only page shows up, this site's do not.
            page.select_option("#site-select", other.id)
            page.click("#apply")
            page.wait_for_load_state()
            assert "/other-only" in page.inner_text("#report-pages")
            assert "/pricing" not in page.inner_text("#report-pages")

            # A date range with no data.
            page.select_option("#site-select", site.id)
            page.fill("#from", "2020-01-01")
            page.fill("#to", "2020-01-31")
            page.click("#apply")
            page.wait_for_load_state()
            assert "from=2020-01-01" in page.url
            assert "No data in this range." in page.inner_text("#report-pages")

            # Filter by clicking a channel cell on the sources view.
            page.goto(f"{server.base}/dashboard/sources?site={site.id}")
            page.click("#report-channels a.filter:text-is('email')")
            page.wait_for_load_state()
            assert "channel=email" in page.url
            channels = page.inner_text("#report-channels")
            assert "email" in channels
            assert "organic_search" not in channels
            shared_url = page.url

            # Export the filtered table as CSV.
            with page.expect_download() as download_info:
                page.click("#report-channels a.csv")
            content = Path(download_info.value.path()).read_text()
            rows = list(csv.reader(io.StringIO(content)))
            assert rows[0][:3] == ["channel", "sessions", "visitors"]
            assert rows[1][:3] == ["email", "3", "3"]

            # Build a funnel from the form.
            page.goto(f"{server.base}/dashboard/funnel?site={site.id}")
            steps = page.locator("input.step")
            steps.nth(0).fill("page:/pricing")
            steps.nth(1).fill("event:Signup")
            page.click("#apply")
            page.wait_for_load_state()
            funnel = page.inner_text("#report-funnel")
            assert "page:/pricing" in funnel
            page.screenshot(path=str(ARTIFACTS / "dashboard-funnel.png"), full_page=True)

            # Hostile tracked values stay text on every view.
            for view in ("overview", "pages", "sources", "events"):
                page.goto(f"{server.base}/dashboard/{view}?site={site.id}")
                page.wait_for_timeout(200)
                assert page.evaluate("window.__xss") is None, view
                assert page.locator("main script:not(#series-data)").count() == 0, view
                assert page.locator("main img, main svg").count() == 0, view
                hrefs = page.eval_on_selector_all(
                    "main a", "links => links.map(link => link.getAttribute('href'))")
                assert not [href for href in hrefs if href.lower().startswith("javascript:")]
            assert "<script>window.__xss=4</script>" in page.inner_text("#report-events")
            assert dialogs == []

            # The shared URL opens the same filtered view; a phone-sized screenshot.
            phone = browser.new_context(viewport={"width": 390, "height": 844},
                                        storage_state=context.storage_state())
            mobile = phone.new_page()
            mobile.goto(shared_url)
            assert "organic_search" not in mobile.inner_text("#report-channels")
            mobile.goto(f"{server.base}/dashboard/overview?site={site.id}")
            mobile.wait_for_selector("#chart canvas")
            width = mobile.evaluate("document.documentElement.scrollWidth")
            assert width <= 390
            mobile.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            phone.close()
            context.close()
    finally:
        server.stop()


def test_tokens_page_on_phone(data_dir: Path, site: SiteInfo) -> None:
    conn = connect(data_dir / "trackpixel.db")
    add_user(conn, "admin@example.com")
    conn.close()
    server = Server(data_dir).start()
    try:
        with chromium() as browser:
            context = browser.new_context(viewport={"width": 390, "height": 844})
            page = context.new_page()
            page.goto(f"{server.base}/dashboard/login")
            page.fill("input[name=email]", "admin@example.com")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/dashboard/overview**")
            page.goto(f"{server.base}/dashboard/tokens")
            page.click("text=Create token")
            page.wait_for_selector("#new-token")

            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            revoke = page.locator("button", has_text="Revoke").first.bounding_box()
            create = page.locator("button", has_text="Create token").bounding_box()
            assert revoke is not None
            assert create is not None
            # The button label stays on one line, as on the other buttons.
            assert revoke["height"] <= create["height"] * 1.2
            created = page.locator("tbody td").nth(1).inner_text()
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", created), created
            context.close()
    finally:
        server.stop()
