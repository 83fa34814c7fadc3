"""Consent in the browser: withdrawing analytics consent deletes the visitor cookie, and
the server stores later events without a persistent identifier."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import DESKTOP_UA, chromium, page_server
from server import Server, SiteInfo, query, wait_drained

pytestmark = pytest.mark.browser

PAGE = """<!doctype html><title>Consent</title>
<script>window.trackpixel=window.trackpixel||function(){(trackpixel.q=trackpixel.q||[]).push(arguments)};
trackpixel('consent', 'default', {analytics_storage: 'granted', ad_storage: 'granted',
  ad_user_data: 'granted', ad_personalization: 'granted'});</script>
<script async src="COLLECTOR/t.js" data-site="SITE"></script>
<button id="withdraw" onclick="trackpixel('consent', 'update', {analytics_storage: 'denied'});
  trackpixel('track', 'After Withdrawal')">withdraw</button>
"""


def test_withdrawal_drops_identifiers(server: Server, site: SiteInfo, data_dir: Path) -> None:
    html = PAGE.replace("COLLECTOR", server.base).replace("SITE", site.id).encode()
    with page_server(lambda path: html if path == "/consent.html" else None) as port, \
            chromium() as browser:
        context = browser.new_context(user_agent=DESKTOP_UA)
        page = context.new_page()
        page.goto(f"http://localhost:{port}/consent.html", wait_until="networkidle")
        cookie_before = [c["name"] for c in context.cookies()]
        page.click("#withdraw")
        page.wait_for_timeout(500)
        cookie_after = [c["name"] for c in context.cookies()]
        context.close()

    wait_drained(data_dir)
    rows = query(data_dir, "SELECT name, consent_analytics, cookieless FROM events ORDER BY ts")
    assert "_tp_vid" in cookie_before
    assert "_tp_vid" not in cookie_after
    assert rows == [("page_view", "granted", 0), ("After Withdrawal", "denied", 1)]
