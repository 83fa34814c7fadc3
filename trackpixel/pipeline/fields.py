"""Validation of the fields every hit can carry, shared by the pixel, beacon and server API."""

from __future__ import annotations

import math
import re
from typing import Any

MAX_NAME = 200
MAX_URL = 2048
MAX_TITLE = 500
MAX_EVENT_ID = 128
MAX_PROPS = 50
MAX_PROP_KEY = 64
MAX_PROP_VALUE = 500
MAX_PARAM = 300
# Values near the float maximum (1.8e308) add up to infinity in report sums, and JSON cannot
# carry infinity. This bound keeps every sum finite and still fits any price.
MAX_VALUE = 1e15

_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_VISITOR_RE = re.compile(r"^[A-Za-z0-9_.\-]{8,64}$")

UTM_PARAMS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
CLICK_ID_PARAMS = ("gclid", "gbraid", "wbraid", "fbclid", "msclkid", "li_fat_id", "ttclid",
                   "twclid")
AD_PARAMS = ("cmp", "crv", "plc")


class InvalidField(ValueError):
    """A field has the wrong type, length or format; the message names the field."""


def text(value: Any, field: str, limit: int, *, required: bool = False,
         clip: bool = False) -> str | None:
    """Check a text field; with ``clip`` an over-long value is cut to ``limit`` characters
    instead of rejected."""
    if value is None or value == "":
        if required:
            raise InvalidField(f"{field} is missing")
        return None
    if not isinstance(value, str):
        raise InvalidField(f"{field} must be a string")
    checked: str = value
    if len(checked) > limit:
        if not clip:
            raise InvalidField(f"{field} is longer than {limit} characters")
        checked = checked[:limit]
    if "\x00" in checked:
        raise InvalidField(f"{field} contains a NUL character")
    return checked


def event_name(value: Any, default: str | None = None) -> str:
    name = text(value, "event name", MAX_NAME)
    if name is None:
        if default is None:
            raise InvalidField("event name is missing")
        return default
    name = name.strip()
    if not name:
        raise InvalidField("event name is blank")
    return name


def url(value: Any, field: str, *, fit: bool = False) -> str | None:
    """Check an absolute http or https URL; with ``fit`` an over-long one is shortened by
    ``fit_url`` instead of rejected."""
    if fit and isinstance(value, str):
        value = fit_url(value, MAX_URL)
    checked = text(value, field, MAX_URL)
    if checked is not None and not checked.startswith(("http://", "https://")):
        raise InvalidField(f"{field} must be an absolute http or https URL")
    return checked


def fit_url(value: str, limit: int) -> str:
    """Shorten a URL to at most ``limit`` characters without cutting a query parameter.

    The fragment goes first, then every query parameter that would pass the limit, whole,
    so the parameters kept (UTM tags among them) keep their full values. Only when scheme,
    host and path alone pass the limit is the URL cut at the limit, and its path with it."""
    if len(value) <= limit:
        return value
    value = value.partition("#")[0]
    if len(value) <= limit:
        return value
    base, _, query = value.partition("?")
    if len(base) >= limit:
        return base[:limit]
    shortened = base + "?"
    for pair in query.split("&"):
        candidate = shortened + pair if shortened.endswith("?") else f"{shortened}&{pair}"
        if pair and len(candidate) <= limit:
            shortened = candidate
    return shortened.removesuffix("?")


def referrer(value: Any, field: str) -> str | None:
    """Return a referrer URL of any scheme (``android-app://`` is common), shortened by
    ``fit_url``, or None when the value is not a URL at all. A bad referrer never rejects the
    event."""
    if not isinstance(value, str) or "://" not in value or "\x00" in value:
        return None
    return fit_url(value, MAX_URL)


def money_value(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidField("value must be a number")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as exc:
            raise InvalidField("value must be a number") from exc
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidField("value must be a finite number")
    if abs(value) > MAX_VALUE:
        raise InvalidField(f"value {value!r} is out of range: at most {MAX_VALUE:g} "
                           "in magnitude")
    return float(value)


def currency(value: Any) -> str | None:
    checked = text(value, "currency", 3)
    if checked is None:
        return None
    checked = checked.upper()
    if not _CURRENCY_RE.match(checked):
        raise InvalidField("currency must be a three-letter ISO 4217 code such as NZD")
    return checked


def properties(value: Any) -> dict[str, str | int | float | bool]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidField("properties must be a JSON object")
    if len(value) > MAX_PROPS:
        raise InvalidField(f"more than {MAX_PROPS} properties")
    checked: dict[str, str | int | float | bool] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_PROP_KEY:
            raise InvalidField(f"property name {key!r} must be 1 to {MAX_PROP_KEY} characters")
        if isinstance(item, str):
            if len(item) > MAX_PROP_VALUE:
                raise InvalidField(f"property {key!r} is longer than {MAX_PROP_VALUE} characters")
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidField(f"property {key!r} must be a finite number")
        elif not isinstance(item, bool | int | float) and item is not None:
            raise InvalidField(f"property {key!r} must be a string, number or boolean")
        if item is not None:
            checked[key] = item
    return checked


def visitor_cookie(value: Any) -> str | None:
    """Return a visitor id from the snippet's cookie, or None when it is absent or malformed."""
    if isinstance(value, str) and _VISITOR_RE.match(value):
        return value
    return None
