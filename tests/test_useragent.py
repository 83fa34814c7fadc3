"""User-agent parsing, bot verdicts and machine email opens."""

from __future__ import annotations

import pytest

from trackpixel.pipeline.mail import machine_open_reason
from trackpixel.pipeline.useragent import analyse

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1")
WINDOWS_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/131.0.0.0 Safari/537.36")
ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Mobile Safari/537.36")


@pytest.mark.parametrize(("agent", "browser", "os", "device"), [
    (IPHONE, "Mobile Safari", "iOS", "mobile"),
    (IPAD, "Mobile Safari", "iOS", "tablet"),
    (WINDOWS_CHROME, "Chrome", "Windows", "desktop"),
    (ANDROID, "Chrome Mobile", "Android", "mobile"),
])
def test_browser_os_device(agent: str, browser: str, os: str, device: str) -> None:
    result = analyse(agent)

    assert result.browser == browser
    assert result.os == os
    assert result.device_type == device
    assert result.bot_reason is None


@pytest.mark.parametrize(("agent", "reason_prefix"), [
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawlerdetect"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/131.0.0.0 Safari/537.36", "automation"),
    ("curl/8.5.0", "automation"),
    ("python-requests/2.32", "automation"),
    ("", "empty_user_agent"),
])
def test_bots_flagged(agent: str, reason_prefix: str) -> None:
    result = analyse(agent)

    assert result.is_bot
    assert result.device_type == "bot"
    assert result.bot_reason is not None and result.bot_reason.startswith(reason_prefix)


@pytest.mark.parametrize(("agent", "ip", "expected"), [
    ("Mozilla/5.0", "203.0.113.0", "apple_mail_privacy"),
    (IPHONE, "17.58.1.0", "apple_mail_privacy"),
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
     "66.249.1.0", "gmail_image_proxy"),
    ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", "98.136.1.0",
     "yahoo_mail_proxy"),
    ("Mozilla/5.0 Mimecast URL protect", "203.0.113.0", "security_scanner"),
    (IPHONE, "203.0.113.0", None),
    (WINDOWS_CHROME, "198.51.100.0", None),
])
def test_machine_open(agent: str, ip: str, expected: str | None) -> None:
    assert machine_open_reason(agent, ip, analyse(agent).bot_reason) == expected
