"""Channel attribution from UTM tags, click ids and referrers."""

from __future__ import annotations

import pytest

from trackpixel.pipeline.channel import attribute

SITE = "example.com"


def _internal(host: str) -> bool:
    return host == SITE or host.endswith("." + SITE)


@pytest.mark.parametrize(("url", "referrer", "expected"), [
    ("https://example.com/?gclid=abc", None, "paid_search"),
    ("https://example.com/?wbraid=abc", None, "paid_search"),
    ("https://example.com/?msclkid=abc", None, "paid_search"),
    ("https://example.com/?li_fat_id=abc", None, "paid_social"),
    ("https://example.com/?ttclid=abc", None, "paid_social"),
    ("https://example.com/?fbclid=abc", "https://l.facebook.com/", "social"),
    ("https://example.com/?fbclid=abc&utm_source=facebook&utm_medium=cpc", None, "paid_social"),
    ("https://example.com/?utm_source=google&utm_medium=cpc", None, "paid_search"),
    ("https://example.com/?utm_source=linkedin&utm_medium=paid_social", None, "paid_social"),
    ("https://example.com/?utm_medium=email&utm_source=newsletter", None, "email"),
    ("https://example.com/?utm_medium=display", None, "display"),
    ("https://example.com/?utm_medium=affiliate", None, "affiliate"),
    ("https://example.com/?utm_source=google", None, "organic_search"),
    ("https://example.com/", "https://www.google.co.nz/", "organic_search"),
    ("https://example.com/", "https://duckduckgo.com/", "organic_search"),
    ("https://example.com/", "https://mail.google.com/mail/u/0/", "email"),
    ("https://example.com/", "https://t.co/xyz", "social"),
    ("https://example.com/", "https://blog.partner.org/post", "referral"),
    ("https://example.com/", "https://shop.example.com/cart", "direct"),
    ("https://example.com/", None, "direct"),
])
def test_channel_table(url: str, referrer: str | None, expected: str) -> None:
    assert attribute(url, referrer, {}, _internal).channel.value == expected


def test_explicit_params_override_url() -> None:
    result = attribute("https://example.com/?utm_campaign=old", None,
                       {"utm_campaign": "new", "utm_medium": "email"}, _internal)

    assert result.utm["utm_campaign"] == "new"
    assert result.channel.value == "email"


def test_click_id_kept_unchanged() -> None:
    result = attribute("https://example.com/?gclid=CjwKCA-AbC_123", None, {}, _internal)

    assert result.click_id_type == "gclid"
    assert result.click_id == "CjwKCA-AbC_123"


def test_internal_referrer_host_dropped() -> None:
    result = attribute("https://example.com/b", "https://example.com/a", {}, _internal)

    assert result.referrer_host is None


def test_hint_wins() -> None:
    assert attribute(None, None, {}, _internal, hint="email").channel.value == "email"
