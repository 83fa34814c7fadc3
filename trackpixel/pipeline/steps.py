"""Enrichment: the ordered, named steps that turn a parsed hit into a stored event.

Each step reads the hit and fills fields of the event draft, or raises ``InvalidHit`` with a
reason from ``RejectReason``. ``STEPS`` is the order they run in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import orjson

from trackpixel import privacy
from trackpixel.pipeline import channel, geo, mail, scrub, useragent
from trackpixel.pipeline.hit import Hit, InvalidHit
from trackpixel.sites import Site, SiteCache
from trackpixel.storage.records import EventRow, SessionState
from trackpixel.vocab import ANONYMOUS_VISITOR, EventKind, RejectReason, Source

# Sources whose hits come from a browser on the site's pages, so the page URL must be on one
# of the site's allowed domains.
_BROWSER_SOURCES = (Source.PIXEL, Source.BEACON)


class SessionTracker:
    """Open sessions by (site, visitor); a gap longer than the timeout starts a new session."""

    # The maximum number of open sessions kept in memory. Past it they are cleared, and the
    # next hits read their sessions from ``changed`` or from the store again.
    open_limit = 200_000

    def __init__(self, load: Callable[[str, list[str]], dict[str, SessionState]],
                 timeout_ms: int) -> None:
        self._load = load
        self.timeout_ms = timeout_ms
        self._open: dict[tuple[str, str], SessionState] = {}
        self.changed: dict[tuple[str, str], SessionState] = {}

    def assign(self, site_id: str, visitor_id: str, ts: int) -> tuple[str, bool]:
        """Return the session id for an event at ``ts`` and whether it starts the session."""
        key = (site_id, visitor_id)
        state = self._open.get(key)
        if state is None:
            # A session changed since ``take_changes`` is not in the store yet.
            state = self.changed.get(key)
        if state is None:
            state = self._load(site_id, [visitor_id]).get(visitor_id)
        if state is not None and ts - state.last_ts <= self.timeout_ms:
            if ts > state.last_ts:
                state.last_ts = ts
                self.changed[key] = state
            return state.session_id, False
        session_id = _short_hash(f"{site_id}|{visitor_id}|{ts}")
        state = SessionState(site_id, visitor_id, session_id, ts)
        self._open[key] = state
        self.changed[key] = state
        if len(self._open) > self.open_limit:
            self._open.clear()
        return session_id, True

    def take_changes(self) -> list[SessionState]:
        changes = list(self.changed.values())
        self.changed.clear()
        return changes


@dataclass
class Context:
    sites: SiteCache
    sessions: SessionTracker
    site: Site | None = None
    zones: dict[str, ZoneInfo] = field(default_factory=dict)
    # Lower-cased parameter names scrubbed from URLs, by the site's own additions.
    scrub_params: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict)


Draft = dict[str, Any]
Step = Callable[[Hit, Draft, Context], None]


def check_site(hit: Hit, draft: Draft, ctx: Context) -> None:
    site = ctx.sites.get(hit.site_id)
    if site is None:
        raise InvalidHit(RejectReason.UNKNOWN_SITE, f"no site has the id {hit.site_id!r}",
                         hit.site_id)
    # An ad impression loads on a publisher's page, whose address the Referer gives, so only
    # the other browser hits must come from the site's own domains.
    if hit.source in _BROWSER_SOURCES and hit.url and hit.kind is not EventKind.IMPRESSION:
        host = urlsplit(hit.url).hostname or ""
        if not site.allows_host(host):
            raise InvalidHit(RejectReason.DOMAIN_NOT_ALLOWED,
                             f"page host {host!r} is not an allowed domain of site {site.id}",
                             site.id)
    ctx.site = site
    draft["site_id"] = site.id


def page(hit: Hit, draft: Draft, ctx: Context) -> None:
    """Store page URL and referrer without personal data: configured and well-known secret
    parameters are dropped and email addresses masked. Attribution reads the unscrubbed URL."""
    assert ctx.site is not None
    extra = ctx.site.privacy.scrub_params
    banned = ctx.scrub_params.get(extra)
    if banned is None:
        banned = frozenset(name.lower() for name in (*privacy.DEFAULT_SCRUB_PARAMS, *extra))
        ctx.scrub_params[extra] = banned
    draft["url"] = scrub.scrub_url(hit.url, banned)
    draft["referrer"] = scrub.scrub_url(hit.referrer, banned)
    draft["title"] = scrub.EMAIL_RE.sub(scrub.REDACTED, hit.title) if hit.title else None
    if draft["url"]:
        parts = urlsplit(draft["url"])
        draft["host"] = (parts.hostname or "").lower() or None
        draft["path"] = parts.path or "/"


def user_agent(hit: Hit, draft: Draft, ctx: Context) -> None:
    """Parse the user agent and give the bot verdict. A server API event is sent by the
    site's own back office, authenticated by its key, so its client is no visitor's browser
    and never a bot."""
    if hit.source is Source.API:
        draft.update(browser=None, browser_version=None, os=None, os_version=None,
                     device_type=None, is_bot=0, bot_reason=None)
        return
    agent = useragent.analyse(hit.user_agent)
    draft.update(browser=agent.browser, browser_version=agent.browser_version, os=agent.os,
                 os_version=agent.os_version, device_type=agent.device_type)
    draft["is_bot"] = int(agent.is_bot)
    draft["bot_reason"] = agent.bot_reason


def machine_open(hit: Hit, draft: Draft, ctx: Context) -> None:
    if hit.kind is not EventKind.EMAIL_OPEN:
        return
    reason = mail.machine_open_reason(hit.user_agent, hit.ip_anon, draft["bot_reason"])
    if reason is not None:
        draft["machine_open"] = 1
        draft["bot_reason"] = reason
        # A proxy fetch is not a crawler visit: it stays out of bot counts and out of opens.
        draft["is_bot"] = 0


def country(hit: Hit, draft: Draft, ctx: Context) -> None:
    # A server event comes from the site's back office, whose address tells nothing about
    # where the person is.
    draft["country"] = None if hit.source is Source.API else geo.country_of(hit.ip_anon)


def consent(hit: Hit, draft: Draft, ctx: Context) -> None:
    """Record the consent state and enforce strict mode; later steps read the state."""
    assert ctx.site is not None
    settings = ctx.site.privacy
    state = privacy.resolve(hit.consent, draft["country"], hit.gpc, hit.dnt, settings)
    if state["analytics_storage"] == privacy.DENIED and settings.consent_mode == "strict":
        raise InvalidHit(RejectReason.CONSENT_DENIED,
                         "analytics_storage denied and the site collects nothing without it",
                         ctx.site.id, keep_raw=False)
    draft["consent_analytics"] = state["analytics_storage"]
    draft["consent_ad_storage"] = state["ad_storage"]
    draft["consent_ad_user_data"] = state["ad_user_data"]
    draft["consent_ad_personalization"] = state["ad_personalization"]
    draft["gpc"] = int(hit.gpc)
    draft["dnt"] = int(hit.dnt)


def user_data(hit: Hit, draft: Draft, ctx: Context) -> None:
    """Keep hashed contact details, which the collector hashed before spooling; anything that
    is not a SHA-256 hex digest is dropped rather than stored."""
    if not hit.user_data:
        draft["user_data"] = None
        return
    digests = {key: value for key, value in hit.user_data.items()
               if isinstance(value, str) and len(value) == 64
               and all(char in "0123456789abcdef" for char in value)}
    draft["user_data"] = orjson.dumps(digests, option=orjson.OPT_SORT_KEYS).decode() \
        if digests else None


def attribution(hit: Hit, draft: Draft, ctx: Context) -> None:
    assert ctx.site is not None
    result = channel.attribute(hit.url, hit.referrer, hit.params, ctx.site.allows_host,
                               hit.channel_hint)
    draft["channel"] = result.channel.value
    draft["referrer_host"] = result.referrer_host
    for key in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"):
        draft[key] = result.utm.get(key)
    draft["click_id_type"] = result.click_id_type
    draft["click_id"] = result.click_id
    draft["campaign"] = hit.params.get("cmp") or result.utm.get("utm_campaign")
    draft["creative"] = hit.params.get("crv") or result.utm.get("utm_content")
    draft["placement"] = hit.params.get("plc")


def visitor(hit: Hit, draft: Draft, ctx: Context) -> None:
    """Pick the visitor id: recipient for email, cookie where allowed, else the device key.
    A server API event has no device key, so ``_server_visitor`` picks its id."""
    assert ctx.site is not None
    site_id = ctx.site.id
    # Without analytics consent no persistent identifier is used: no cookie, no recipient.
    persistent = draft["consent_analytics"] == privacy.GRANTED
    recipient = hit.recipient if persistent else None
    draft["cookieless"] = 0
    draft["recipient"] = _short_hash(f"{site_id}|{recipient}") if recipient else None
    if hit.source is Source.API:
        draft["visitor_id"] = _server_visitor(hit, draft, site_id, persistent)
        return
    basis: str
    if recipient:
        basis = f"r|{recipient}"
    elif persistent and hit.visitor_cookie and ctx.site.cookies:
        basis = f"c|{hit.visitor_cookie}"
    else:
        basis = f"d|{hit.device_key}"
        draft["cookieless"] = 1
    draft["visitor_id"] = _short_hash(f"{site_id}|{basis}")


# Digests in ``user_data`` that name one person, in the order they are tried.
_PERSON_DIGESTS = ("external_id", "em", "ph")


def _server_visitor(hit: Hit, draft: Draft, site_id: str, persistent: bool) -> str:
    """Return the visitor id of a server API event.

    With analytics consent the first identity the event carries decides: ``visitor_id``
    (the ``_tp_vid`` cookie value, so the event joins that browser visitor), a user id,
    email or phone digest in ``user_data``, then a click id. An event that carries contact
    details without consent gets a visitor of its own, so erasing that person never
    reaches other people's events. Any other event gets ``ANONYMOUS_VISITOR``, so server
    events without identity together count as at most one visitor."""
    # The user_data step kept only well-formed SHA-256 digests.
    digests = orjson.loads(draft["user_data"]) if draft["user_data"] else {}
    if persistent:
        if hit.visitor_cookie:
            return _short_hash(f"{site_id}|c|{hit.visitor_cookie}")
        for key in _PERSON_DIGESTS:
            digest = digests.get(key)
            if digest:
                return _short_hash(f"{site_id}|u|{key}|{digest}")
        if draft["click_id"]:
            return _short_hash(f"{site_id}|k|{draft['click_id_type']}|{draft['click_id']}")
    if draft["user_data"]:
        return _short_hash(f"{site_id}|api|{hit.client_event_id or hit.uid}")
    return ANONYMOUS_VISITOR


def session(hit: Hit, draft: Draft, ctx: Context) -> None:
    """Assign the session. Server API events, email opens, clicks and ad impressions are not
    visits to the site, so each gets a session of its own and never starts or extends a
    browsing session."""
    if hit.source not in _BROWSER_SOURCES or hit.kind is EventKind.IMPRESSION:
        draft["session_id"] = _short_hash(f"{hit.source.value}|{hit.uid}")
        draft["session_start"] = 0
        return
    session_id, started = ctx.sessions.assign(draft["site_id"], draft["visitor_id"], hit.ts)
    draft["session_id"] = session_id
    draft["session_start"] = int(started)


def local_time(hit: Hit, draft: Draft, ctx: Context) -> None:
    assert ctx.site is not None
    zone = ctx.zones.get(ctx.site.timezone)
    if zone is None:
        zone = ctx.zones[ctx.site.timezone] = ZoneInfo(ctx.site.timezone)
    moment = datetime.fromtimestamp(hit.ts / 1000, zone)
    draft["local_day"] = moment.strftime("%Y-%m-%d")
    draft["local_hour"] = moment.hour


STEPS: tuple[tuple[str, Step], ...] = (
    ("site", check_site),
    ("page", page),
    ("user_agent", user_agent),
    ("machine_open", machine_open),
    ("country", country),
    ("consent", consent),
    ("user_data", user_data),
    ("attribution", attribution),
    ("visitor", visitor),
    ("session", session),
    ("local_time", local_time),
)


def enrich(hit: Hit, ctx: Context) -> EventRow:
    """Run every step over ``hit``; raise ``InvalidHit`` if a step rejects it."""
    draft: Draft = {
        "event_uid": hit.uid, "ts": hit.ts, "source": hit.source.value, "kind": hit.kind.value,
        "name": hit.name, "client_event_id": hit.client_event_id, "value": hit.value,
        "currency": hit.currency, "props": orjson.dumps(hit.props).decode() if hit.props else None,
        "ip_anon": hit.ip_anon, "machine_open": 0, "url": None, "host": None, "path": None,
        "title": None, "referrer": None,
    }
    ctx.site = None
    for _name, step in STEPS:
        step(hit, draft, ctx)
    return EventRow(**draft)


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
