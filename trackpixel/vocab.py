"""Closed vocabularies shared by the collector, the pipeline, storage and reports.

Every value here is stored in the database as its string form, so renaming a member
is a schema change.
"""

from __future__ import annotations

from enum import StrEnum


class Source(StrEnum):
    """The endpoint that received a hit."""

    PIXEL = "pixel"
    BEACON = "beacon"
    API = "api"
    OPEN = "open"
    CLICK = "click"


class EventKind(StrEnum):
    """What a stored event represents."""

    PAGE_VIEW = "page_view"
    CUSTOM = "custom"
    EMAIL_OPEN = "email_open"
    CLICK = "click"
    IMPRESSION = "impression"


class RejectReason(StrEnum):
    """Why a hit was recorded in ``rejected_hits`` instead of ``events``."""

    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    INVALID_FIELD = "invalid_field"
    MISSING_SITE = "missing_site"
    UNKNOWN_SITE = "unknown_site"
    DOMAIN_NOT_ALLOWED = "domain_not_allowed"
    BAD_SIGNATURE = "bad_signature"
    UNAUTHORIZED = "unauthorized"
    DUPLICATE_EVENT_ID = "duplicate_event_id"
    SPOOL_FULL = "spool_full"
    CONSENT_DENIED = "consent_denied"
    METHOD_NOT_ALLOWED = "method_not_allowed"


class Channel(StrEnum):
    """Marketing channel that brought a visit, derived from UTM tags, click ids and referrer."""

    PAID_SEARCH = "paid_search"
    PAID_SOCIAL = "paid_social"
    ORGANIC_SEARCH = "organic_search"
    SOCIAL = "social"
    EMAIL = "email"
    REFERRAL = "referral"
    DISPLAY = "display"
    AFFILIATE = "affiliate"
    DIRECT = "direct"


class DeviceType(StrEnum):
    DESKTOP = "desktop"
    MOBILE = "mobile"
    TABLET = "tablet"
    BOT = "bot"
    OTHER = "other"


# The automatic event names the snippet and the endpoints produce.
PAGE_VIEW = "page_view"
EMAIL_OPEN = "email_open"
CLICK = "click"
IMPRESSION = "impression"
FORM_STARTED = "form_started"
FORM_SUBMITTED = "form_submitted"

# The visitor id of a server API event that links to no person: one without analytics
# consent and without ``user_data``, or one with consent but without ``visitor_id``, a user id,
# email or phone digest, or a click id. All such events of a site share it, so together they
# add at most one to a distinct count of visitors.
# NOTE: report and audience queries still count it as one visitor; excluding it takes
# ``visitor_id <> ANONYMOUS_VISITOR`` in those queries.
ANONYMOUS_VISITOR = ""
