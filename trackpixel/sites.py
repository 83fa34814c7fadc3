"""Sites: the tracked properties, their allowed domains, time zone and server API key."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from trackpixel.privacy import PrivacySettings, parse_settings

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class SiteError(Exception):
    """A site could not be created or changed; the message names the invalid value."""


class UnknownSite(SiteError):
    """No site has the given id."""


@dataclass(frozen=True)
class Site:
    id: str
    domain: str
    allowed_domains: tuple[str, ...]
    timezone: str
    api_key_hash: str
    cookies: bool
    privacy: PrivacySettings = field(default_factory=PrivacySettings)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def allows_host(self, host: str) -> bool:
        """Return True when ``host`` is an allowed domain or a subdomain of one."""
        host = host.lower().rstrip(".")
        return any(host == allowed or host.endswith("." + allowed)
                   for allowed in self.allowed_domains)

    def check_api_key(self, key: str) -> bool:
        return hmac.compare_digest(hash_api_key(key), self.api_key_hash)


def hash_api_key(key: str) -> str:
    # API keys are 32 random bytes, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def normalize_domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    if domain.startswith(("http://", "https://")):
        raise SiteError(f"invalid domain {value!r}: give the host name only, e.g. example.com")
    if not _DOMAIN_RE.match(domain) and domain != "localhost":
        raise SiteError(f"invalid domain {value!r}: expected a host name such as example.com")
    return domain


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SiteError(f"unknown time zone {name!r}: use an IANA name such as "
                        "Pacific/Auckland or UTC") from exc
    return name


def add_site(conn: sqlite3.Connection, domain: str, *, timezone: str = "UTC",
             extra_domains: tuple[str, ...] = (), cookies: bool = True) -> tuple[Site, str]:
    """Create a site; return it with its server API key, which is shown only this once."""
    domain = normalize_domain(domain)
    allowed = tuple(dict.fromkeys([domain, *(normalize_domain(d) for d in extra_domains)]))
    validate_timezone(timezone)
    site_id = "s_" + secrets.token_hex(6)
    api_key = "tpk_" + secrets.token_urlsafe(32)
    site = Site(site_id, domain, allowed, timezone, hash_api_key(api_key), cookies)
    try:
        conn.execute(
            "INSERT INTO sites (id, domain, allowed_domains, timezone, api_key_hash, cookies,"
            " created_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (site.id, site.domain, orjson.dumps(list(allowed)).decode(), timezone,
             site.api_key_hash, int(cookies), int(time.time() * 1000)),
        )
    except sqlite3.IntegrityError as exc:
        raise SiteError(f"a site for {domain!r} already exists") from exc
    return site, api_key


def list_sites(conn: sqlite3.Connection) -> list[Site]:
    rows = conn.execute(
        "SELECT id, domain, allowed_domains, timezone, api_key_hash, cookies, privacy "
        "FROM sites ORDER BY created_ts, id"
    ).fetchall()
    return [_site_from_row(row) for row in rows]


def get_site(conn: sqlite3.Connection, site_id: str) -> Site:
    """Find a site by id, main domain, allowed domain or a URL on one of them."""
    wanted = site_id.strip()
    if "://" in wanted:
        wanted = wanted.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
    wanted_host = wanted.lower().rstrip(".")
    for site in list_sites(conn):
        if site.id == wanted or site.domain == wanted_host or wanted_host in site.allowed_domains:
            return site
    row = conn.execute(
        "SELECT id, domain, allowed_domains, timezone, api_key_hash, cookies, privacy "
        "FROM sites WHERE id = ? OR domain = ?",
        (site_id, site_id),
    ).fetchone()
    if row is None:
        raise UnknownSite(f"site {site_id!r} not found: run 'trackpixel sites list' to see ids")
    return _site_from_row(row)


def _site_from_row(row: tuple[object, ...]) -> Site:
    site_id, domain, allowed, timezone, key_hash, cookies, privacy = row
    return Site(str(site_id), str(domain), tuple(orjson.loads(str(allowed))), str(timezone),
                str(key_hash), bool(cookies), parse_settings(str(privacy)))


def update_privacy(conn: sqlite3.Connection, site_id: str, changes: dict[str, object]) -> Site:
    """Merge ``changes`` into a site's privacy settings, validate, store and return the site."""
    site = get_site(conn, site_id)
    current = orjson.loads(site.privacy.to_json())
    current.update(changes)
    settings = parse_settings(current)
    conn.execute("UPDATE sites SET privacy = ? WHERE id = ?", (settings.to_json(), site.id))
    return get_site(conn, site.id)


class SiteCache:
    """Sites by id, reloaded from the database at most every ``ttl`` seconds."""

    def __init__(self, conn: sqlite3.Connection, ttl: float = 5.0) -> None:
        self._conn = conn
        self._ttl = ttl
        self._loaded_at = -1e9
        self._sites: dict[str, Site] = {}
        self._by_key_hash: dict[str, Site] = {}

    def get(self, site_id: str) -> Site | None:
        self._refresh(missing=site_id not in self._sites)
        return self._sites.get(site_id)

    def by_api_key(self, key: str) -> Site | None:
        key_hash = hash_api_key(key)
        self._refresh(missing=key_hash not in self._by_key_hash)
        return self._by_key_hash.get(key_hash)

    def _refresh(self, *, missing: bool) -> None:
        # A miss reloads sooner, so a site added a moment ago is found, but at most twice a
        # second, so a flood of unknown ids cannot turn into a flood of queries.
        age = time.monotonic() - self._loaded_at
        if age > self._ttl or (missing and age > 0.5):
            sites = list_sites(self._conn)
            self._sites = {site.id: site for site in sites}
            self._by_key_hash = {site.api_key_hash: site for site in sites}
            self._loaded_at = time.monotonic()
