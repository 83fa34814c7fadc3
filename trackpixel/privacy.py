"""Privacy rules: consent signals, per-site privacy settings, and what each state allows.

Four consent signals, named as in Google's Consent Mode v2, are each 'granted' or 'denied':

- ``analytics_storage`` denied: no cookie and no persistent identifier. The event is counted
  under the daily-rotating device hash (cookieless), or not collected at all in strict mode.
- ``ad_user_data`` denied: the event is never forwarded to an ad platform with identifiers.
- ``ad_personalization`` denied: the person never enters an audience export.
- ``ad_storage`` denied: no advertising cookies or click-id cookies may be set.

``Sec-GPC: 1`` (Global Privacy Control) is an opt-out of sale and sharing, so when the site
honours it (the default) it denies ``ad_storage``, ``ad_user_data`` and ``ad_personalization``.
``DNT: 1``, when the site honours it (off by default), denies all four.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

SIGNALS = ("analytics_storage", "ad_storage", "ad_user_data", "ad_personalization")
GRANTED = "granted"
DENIED = "denied"

# EU member states plus Iceland, Liechtenstein and Norway.
EEA = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
})
REGION_GROUPS = {"EEA": EEA}

# Query parameters removed from every stored URL and referrer, whatever the site adds.
DEFAULT_SCRUB_PARAMS = (
    "token", "access_token", "id_token", "refresh_token", "auth", "authorization", "password",
    "pass", "passwd", "pwd", "secret", "api_key", "apikey", "key", "session", "sessionid",
    "session_id", "sid", "phpsessid", "jsessionid", "code", "otp", "email", "e-mail", "mail",
    "phone", "tel", "mobile", "ssn",
)

CONSENT_MODES = ("cookieless", "strict")
_ALL_DENIED = dict.fromkeys(SIGNALS, DENIED)
_ALL_GRANTED = dict.fromkeys(SIGNALS, GRANTED)


class PrivacySettingsError(ValueError):
    """A privacy setting has an invalid value; the message names it."""


# Maximum retention period a site may set, in days (100 years). The processor subtracts it
# from the current time, and periods of about 740,000 days leave the range of Python dates.
MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True)
class PrivacySettings:
    """A site's privacy settings, stored as JSON in ``sites.privacy``."""

    consent_mode: str = "cookieless"
    defaults: dict[str, str] = field(default_factory=lambda: dict(_ALL_GRANTED))
    # Region code (ISO country, or "EEA") to the signals that differ from ``defaults`` there.
    region_defaults: dict[str, dict[str, str]] = field(default_factory=lambda: {
        "EEA": dict(_ALL_DENIED), "GB": dict(_ALL_DENIED), "CH": dict(_ALL_DENIED)})
    honor_gpc: bool = True
    honor_dnt: bool = False
    scrub_params: tuple[str, ...] = ()
    retention_days: int = 395
    rejected_retention_days: int = 30

    def default_for(self, country: str | None) -> dict[str, str]:
        """Return the default consent for a visitor's country.

        An unknown country gets the strictest state any region default sets, so a visitor
        whose location is unknown is treated as if in the strictest region."""
        state = dict(self.defaults)
        if country is None:
            for region_state in self.region_defaults.values():
                for signal, value in region_state.items():
                    if value == DENIED:
                        state[signal] = DENIED
            return state
        for region, region_state in self.region_defaults.items():
            members = REGION_GROUPS.get(region, frozenset({region}))
            if country in members:
                state.update(region_state)
        return state

    def to_json(self) -> str:
        return orjson.dumps({
            "consent_mode": self.consent_mode, "defaults": self.defaults,
            "region_defaults": self.region_defaults, "honor_gpc": self.honor_gpc,
            "honor_dnt": self.honor_dnt, "scrub_params": list(self.scrub_params),
            "retention_days": self.retention_days,
            "rejected_retention_days": self.rejected_retention_days,
        }).decode()


def parse_settings(raw: str | dict[str, Any] | None) -> PrivacySettings:
    """Validate stored or user-given settings; missing keys keep their defaults.

    Stored settings (a JSON string) may hold retention periods saved before
    ``MAX_RETENTION_DAYS`` existed. Those are lowered to the maximum, not rejected, so the
    site still loads."""
    data = orjson.loads(raw) if isinstance(raw, str) else (raw or {})
    if isinstance(raw, str):
        for key in ("retention_days", "rejected_retention_days"):
            value = data.get(key)
            if isinstance(value, int) and value > MAX_RETENTION_DAYS:
                data[key] = MAX_RETENTION_DAYS
    base = PrivacySettings()
    mode = data.get("consent_mode", base.consent_mode)
    if mode not in CONSENT_MODES:
        raise PrivacySettingsError(f"consent_mode must be one of {', '.join(CONSENT_MODES)}, "
                                   f"not {mode!r}")
    defaults = {**base.defaults, **_signals(data.get("defaults", {}), "defaults")}
    regions_raw = data.get("region_defaults", base.region_defaults)
    if not isinstance(regions_raw, dict):
        raise PrivacySettingsError("region_defaults must map region codes to consent states")
    regions = {}
    for region, state in regions_raw.items():
        code = str(region).upper()
        if code not in REGION_GROUPS and not re.fullmatch(r"[A-Z]{2}", code):
            raise PrivacySettingsError(f"region {region!r} must be EEA or an ISO country code")
        regions[code] = _signals(state, f"region_defaults.{code}")
    scrub = data.get("scrub_params", [])
    if not isinstance(scrub, list) or not all(isinstance(item, str) for item in scrub):
        raise PrivacySettingsError("scrub_params must be a list of parameter names")
    return PrivacySettings(
        consent_mode=mode,
        defaults=defaults,
        region_defaults=regions,
        honor_gpc=_flag(data, "honor_gpc", base.honor_gpc),
        honor_dnt=_flag(data, "honor_dnt", base.honor_dnt),
        scrub_params=tuple(item.lower() for item in scrub),
        retention_days=_days(data, "retention_days", base.retention_days),
        rejected_retention_days=_days(data, "rejected_retention_days",
                                      base.rejected_retention_days),
    )


def _signals(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PrivacySettingsError(f"{where} must be an object of consent signals")
    checked = {}
    for signal, state in value.items():
        if signal not in SIGNALS:
            raise PrivacySettingsError(f"{where}: unknown signal {signal!r}; known: "
                                       f"{', '.join(SIGNALS)}")
        if state not in (GRANTED, DENIED):
            raise PrivacySettingsError(f"{where}.{signal} must be 'granted' or 'denied'")
        checked[signal] = state
    return checked


def _flag(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise PrivacySettingsError(f"{key} must be true or false")
    return value


def _days(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PrivacySettingsError(f"{key} must be a whole number of days, at least 1")
    if value > MAX_RETENTION_DAYS:
        raise PrivacySettingsError(f"{key}={value} is too long: the maximum is "
                                   f"{MAX_RETENTION_DAYS} days (100 years)")
    return value


def parse_signals(value: Any) -> dict[str, str]:
    """Read consent from a hit: an object of signals, ignoring unknown keys and values."""
    if not isinstance(value, dict):
        return {}
    return {signal: value[signal] for signal in SIGNALS
            if value.get(signal) in (GRANTED, DENIED)}


_COMPACT = {"g": GRANTED, "d": DENIED}


def parse_compact(value: str | None) -> dict[str, str]:
    """Read the pixel's ``cs`` parameter: one letter per signal in ``SIGNALS`` order,
    ``g`` granted, ``d`` denied, ``-`` not given; e.g. ``gddd``."""
    if not value or len(value) != len(SIGNALS):
        return {}
    return {signal: _COMPACT[letter] for signal, letter in zip(SIGNALS, value.lower(),
                                                                 strict=True)
            if letter in _COMPACT}


def resolve(explicit: dict[str, str], country: str | None, gpc: bool, dnt: bool,
            settings: PrivacySettings) -> dict[str, str]:
    """Return the consent state an event is collected under."""
    state = settings.default_for(country)
    state.update(explicit)
    if gpc and settings.honor_gpc:
        state.update(ad_storage=DENIED, ad_user_data=DENIED, ad_personalization=DENIED)
    if dnt and settings.honor_dnt:
        state.update(_ALL_DENIED)
    return state
