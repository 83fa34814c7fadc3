"""Channel and campaign: where a visit came from, from UTM tags, click ids and the referrer.

Precedence: an explicit channel (email opens, tracked links), then ad click ids, then
``utm_medium`` (with ``utm_source`` to tell paid social from paid search), then the referrer's
host. A referrer on the site's own domains is internal navigation and counts as direct.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from trackpixel.pipeline.fields import CLICK_ID_PARAMS, UTM_PARAMS
from trackpixel.vocab import Channel

# Click ids that only ad clicks carry, with the channel of the network that sets them.
_AD_CLICK_IDS: dict[str, Channel] = {
    "gclid": Channel.PAID_SEARCH,
    "gbraid": Channel.PAID_SEARCH,
    "wbraid": Channel.PAID_SEARCH,
    "msclkid": Channel.PAID_SEARCH,
    "ttclid": Channel.PAID_SOCIAL,
    "twclid": Channel.PAID_SOCIAL,
    "li_fat_id": Channel.PAID_SOCIAL,
}
# Meta adds fbclid to organic outbound links as well as to ad clicks, so alone it means social.
_ORGANIC_CLICK_IDS: dict[str, Channel] = {"fbclid": Channel.SOCIAL}

_SEARCH_HOSTS = re.compile(
    r"(^|\.)(google\.[a-z.]+|bing\.com|duckduckgo\.com|search\.yahoo\.com|yahoo\.co\.jp|"
    r"baidu\.com|yandex\.[a-z.]+|ecosia\.org|search\.brave\.com|naver\.com|seznam\.cz|"
    r"qwant\.com|startpage\.com|kagi\.com)$")
_SOCIAL_HOSTS = re.compile(
    r"(^|\.)(facebook\.com|fb\.me|instagram\.com|t\.co|twitter\.com|x\.com|linkedin\.com|"
    r"lnkd\.in|reddit\.com|pinterest\.[a-z.]+|youtube\.com|youtu\.be|tiktok\.com|threads\.net|"
    r"bsky\.app|mastodon\.social|quora\.com|vk\.com|weibo\.com|snapchat\.com|whatsapp\.com)$")
_MAIL_HOSTS = re.compile(
    r"(^|\.)(mail\.google\.com|outlook\.live\.com|outlook\.office\.com|outlook\.office365\.com|"
    r"mail\.yahoo\.com|mail\.proton\.me|mail\.aol\.com|fastmail\.com)$")
_SOCIAL_SOURCES = re.compile(
    r"^(facebook|fb|meta|instagram|ig|twitter|x|linkedin|reddit|pinterest|youtube|tiktok|"
    r"snapchat|threads|bluesky)$", re.I)
_SEARCH_SOURCES = re.compile(r"^(google|bing|yahoo|duckduckgo|baidu|yandex|ecosia|brave)$", re.I)

_MEDIUM_RULES: tuple[tuple[re.Pattern[str], Callable[[str], Channel]], ...] = (
    (re.compile(r"^(cpc|ppc|paid[-_ ]?search|sem|paidsearch)$", re.I),
     lambda source: Channel.PAID_SOCIAL if _SOCIAL_SOURCES.match(source) else Channel.PAID_SEARCH),
    (re.compile(r"^(paid[-_ ]?social|social[-_ ]?paid|paidsocial|cpv|paid)$", re.I),
     lambda source: Channel.PAID_SOCIAL),
    (re.compile(r"^(display|banner|cpm|programmatic|video|interstitial|native)$", re.I),
     lambda source: Channel.DISPLAY),
    (re.compile(r"^(e-?mail|newsletter)$", re.I), lambda source: Channel.EMAIL),
    (re.compile(r"^(affiliate|affiliates|partner)$", re.I), lambda source: Channel.AFFILIATE),
    (re.compile(r"^(social|social[-_ ]?network|social[-_ ]?media|sm|organic[-_ ]?social)$",
                re.I), lambda source: Channel.SOCIAL),
    (re.compile(r"^(organic)$", re.I), lambda source: Channel.ORGANIC_SEARCH),
    (re.compile(r"^(referral|link)$", re.I), lambda source: Channel.REFERRAL),
)


@dataclass(slots=True)
class Attribution:
    channel: Channel
    utm: dict[str, str]
    click_id_type: str | None
    click_id: str | None
    referrer_host: str | None


def url_params(url: str | None) -> dict[str, str]:
    """Return the UTM and click-id parameters of a URL (first occurrence of each)."""
    if not url or "?" not in url:
        return {}
    wanted = {*UTM_PARAMS, *CLICK_ID_PARAMS}
    found: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(url).query, errors="replace"):
        if key in wanted and value and key not in found:
            found[key] = value[:300]
    return found


def host_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().removeprefix("www.") if host else None


def attribute(page_url: str | None, referrer: str | None, explicit: Mapping[str, str],
              is_internal: Callable[[str], bool], hint: str | None = None) -> Attribution:
    """Derive channel, UTM values and click id. ``explicit`` parameters override the URL's."""
    params = {**url_params(page_url), **explicit}
    utm = {key: params[key] for key in UTM_PARAMS if params.get(key)}
    click_id_type = next((key for key in CLICK_ID_PARAMS if params.get(key)), None)
    click_id = params.get(click_id_type) if click_id_type else None
    referrer_host = host_of(referrer)
    if referrer_host and is_internal(referrer_host):
        referrer_host = None
    channel = _channel(utm, click_id_type, referrer_host, hint)
    return Attribution(channel, utm, click_id_type, click_id, referrer_host)


def _channel(utm: Mapping[str, str], click_id_type: str | None, referrer_host: str | None,
             hint: str | None) -> Channel:
    if hint:
        try:
            return Channel(hint)
        except ValueError:
            pass
    medium = utm.get("utm_medium", "")
    source = utm.get("utm_source", "")
    if click_id_type in _AD_CLICK_IDS:
        by_click = _AD_CLICK_IDS[click_id_type]
        if by_click is Channel.PAID_SEARCH and _SOCIAL_SOURCES.match(source):
            return Channel.PAID_SOCIAL
        return by_click
    if medium:
        for pattern, decide in _MEDIUM_RULES:
            if pattern.match(medium):
                return decide(source)
    if click_id_type in _ORGANIC_CLICK_IDS:
        return _ORGANIC_CLICK_IDS[click_id_type]
    if source:
        if _SEARCH_SOURCES.match(source):
            return Channel.ORGANIC_SEARCH
        if _SOCIAL_SOURCES.match(source):
            return Channel.SOCIAL
        return Channel.REFERRAL
    if referrer_host:
        return _channel_of_host(referrer_host)
    return Channel.DIRECT


def _channel_of_host(host: str) -> Channel:
    # Webmail first: mail.google.com would otherwise match the search engines.
    if _MAIL_HOSTS.search(host):
        return Channel.EMAIL
    if _SEARCH_HOSTS.search(host):
        return Channel.ORGANIC_SEARCH
    if _SOCIAL_HOSTS.search(host):
        return Channel.SOCIAL
    return Channel.REFERRAL
