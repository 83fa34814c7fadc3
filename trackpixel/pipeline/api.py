"""Validation of server API batches (``POST /api/v1/events``).

The collector validates a batch before it commits anything, so a caller learns at once which
events are wrong; a batch with any invalid event is rejected whole and can be resent fixed.
Valid events are rewritten into the compact keys the beacon uses, so the processor parses
both the same way, and contact details in ``user_data`` are replaced by their SHA-256 digests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from trackpixel import privacy
from trackpixel.pipeline import fields
from trackpixel.pipeline.fields import InvalidField
from trackpixel.pipeline.userdata import hash_user_data

MAX_BATCH = 500
_AD_FIELDS = (("campaign", "cmp"), ("creative", "crv"), ("placement", "plc"))
ACCEPTED_FIELDS = ("name", "event_id", "timestamp", "url", "value", "currency", "properties",
                   "visitor_id", "user_data", "consent", *fields.UTM_PARAMS,
                   *fields.CLICK_ID_PARAMS, *(name for name, _short in _AD_FIELDS))
_ACCEPTED = frozenset(ACCEPTED_FIELDS)
# Server events may describe the past (a loan settled last week) but not the future.
MAX_AGE_MS = 365 * 24 * 3600 * 1000
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000


def validate_api_batch(body: Any, *, now_ms: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Return the normalised events and a list of errors (empty when the batch is valid)."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        return [], ['the body must be a JSON object with an "events" list']
    unknown = sorted(key for key in body if key != "events")
    if unknown:
        return [], [f"unknown field {_names(unknown)} in the body; the body holds only "
                    '"events"']
    raw_events = body["events"]
    if not raw_events:
        return [], ['"events" is empty']
    if len(raw_events) > MAX_BATCH:
        return [], [f"a batch holds at most {MAX_BATCH} events, not {len(raw_events)}"]

    events: list[dict[str, Any]] = []
    errors: list[str] = []
    for index, raw in enumerate(raw_events):
        try:
            events.append(_normalise(raw, now_ms))
        except InvalidField as exc:
            errors.append(f"events[{index}]: {exc}")
    return events, errors


def _normalise(raw: Any, now_ms: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidField("each event must be a JSON object")
    unknown = sorted(key for key in raw if key not in _ACCEPTED)
    if unknown:
        raise InvalidField(f"unknown field {_names(unknown)}; accepted fields: "
                           f"{', '.join(ACCEPTED_FIELDS)}")
    event: dict[str, Any] = {
        "e": fields.event_name(raw.get("name")),
        "id": fields.text(raw.get("event_id"), "event_id", fields.MAX_EVENT_ID, required=True),
        "ts": _timestamp(raw.get("timestamp"), now_ms),
    }
    optional = {
        "u": fields.url(raw.get("url"), "url"),
        "v": fields.money_value(raw.get("value")),
        "cur": fields.currency(raw.get("currency")),
        "p": fields.properties(raw.get("properties")) or None,
        "vid": fields.text(raw.get("visitor_id"), "visitor_id", 64),
        # Hashed here, before the event is spooled, so no plain contact detail reaches disk.
        "ud": hash_user_data(raw.get("user_data")),
        "consent": _consent(raw.get("consent")),
    }
    for key in (*fields.UTM_PARAMS, *fields.CLICK_ID_PARAMS):
        optional[key] = fields.text(raw.get(key), key, fields.MAX_PARAM)
    for long_name, short in _AD_FIELDS:
        optional[short] = fields.text(raw.get(long_name), long_name, fields.MAX_PARAM)
    if optional["v"] is not None and optional["cur"] is None:
        raise InvalidField("currency is required when value is given")
    event.update({key: value for key, value in optional.items() if value is not None})
    return event


def _names(keys: list[str]) -> str:
    return ", ".join(repr(key) for key in keys)


def _consent(value: Any) -> dict[str, str] | None:
    """Check the ``consent`` object: known signals only, each 'granted' or 'denied'."""
    if value is None:
        return None
    allowed = f"'{privacy.GRANTED}' or '{privacy.DENIED}'"
    if not isinstance(value, dict):
        raise InvalidField(f"consent must be an object of signals ({', '.join(privacy.SIGNALS)})"
                           f", each {allowed}")
    for signal, state in value.items():
        if signal not in privacy.SIGNALS:
            raise InvalidField(f"consent: unknown signal {signal!r}; known signals: "
                               f"{', '.join(privacy.SIGNALS)}")
        if state not in (privacy.GRANTED, privacy.DENIED):
            raise InvalidField(f"consent.{signal} must be {allowed}, not {state!r}")
    return dict(value) or None


def _timestamp(value: Any, now_ms: int) -> int:
    """Accept ISO 8601 with an offset, or Unix seconds; return UTC milliseconds."""
    if value is None:
        return now_ms
    if isinstance(value, bool):
        raise InvalidField("timestamp must be an ISO 8601 string or Unix seconds")
    # Checked as a float before the conversion to int, which fails for a product so large
    # that it is infinite (such as 1e308 seconds).
    ts: float
    if isinstance(value, int | float):
        ts = value * 1000
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidField(f"timestamp {value!r} is not ISO 8601") from exc
        if parsed.tzinfo is None:
            raise InvalidField(f"timestamp {value!r} has no UTC offset")
        ts = parsed.timestamp() * 1000
    else:
        raise InvalidField("timestamp must be an ISO 8601 string or Unix seconds")
    if ts > now_ms + MAX_CLOCK_SKEW_MS:
        hint = " (a number is read as Unix seconds)" if not isinstance(value, str) else ""
        raise InvalidField(f"timestamp {value!r} is in the future{hint}")
    if ts < now_ms - MAX_AGE_MS:
        raise InvalidField(f"timestamp {value!r} is more than 365 days old")
    return int(ts)
